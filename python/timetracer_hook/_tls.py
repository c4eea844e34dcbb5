"""Make every client-side ``ssl.SSLContext`` also trust the mock CA.

Trust is added where every handshake of the ``ssl`` module starts: ``SSLContext.wrap_socket``
(blocking sockets: ``http.client``, ``urllib``, ``requests``/``urllib3``, ``httpx`` sync,
``smtplib``...) and ``SSLContext.wrap_bio`` (asyncio and uvloop transports: ``httpx``/``anyio``
async, ``aiohttp``, ``asyncpg``, ``redis.asyncio``...). Whatever the context loaded before or
loads later (default paths, ``certifi``, a custom bundle, nothing at all), the mock CA is added
to its store once, just before its first client handshake; verification settings are untouched.
Server-side wraps are left alone.

``certifi.where()`` / ``certifi.contents()`` are redirected to a bundle of certifi's roots plus
the mock CA, for code that hands the path to something else (``REQUESTS_CA_BUNDLE``-style).
"""

import hashlib
import os
import ssl
import sys

_MARK = "_timetracer_mock_ca"


def read_ca(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("%s is not a PEM file" % path)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("%s has no PEM certificate" % path)
    # Parse it once now, with a context of our own, so a bad file is reported at startup.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=text)
    except ssl.SSLError as e:
        raise ValueError("%s is not a valid PEM certificate: %s" % (path, e.reason or e))
    return text


def install(path, state, warn, post_import):
    pem = read_ca(path)
    cls = ssl.SSLContext
    if getattr(cls, "_timetracer_patched", False):
        return

    def ensure(ctx):
        try:
            if ctx.__dict__.get(_MARK):
                return
        except AttributeError:
            pass
        ctx.load_verify_locations(cadata=pem)
        try:
            setattr(ctx, _MARK, True)
        except Exception:
            pass

    orig_wrap_socket = cls.wrap_socket
    orig_wrap_bio = cls.wrap_bio

    def wrap_socket(self, sock, server_side=False, *args, **kwargs):
        if not server_side:
            ensure(self)
        return orig_wrap_socket(self, sock, server_side, *args, **kwargs)

    def wrap_bio(self, incoming, outgoing, server_side=False, *args, **kwargs):
        if not server_side:
            ensure(self)
        return orig_wrap_bio(self, incoming, outgoing, server_side, *args, **kwargs)

    for new, old in ((wrap_socket, orig_wrap_socket), (wrap_bio, orig_wrap_bio)):
        new.__name__ = old.__name__
        new.__qualname__ = getattr(old, "__qualname__", old.__name__)
        new.__doc__ = old.__doc__
        new.__wrapped__ = old
    cls.wrap_socket = wrap_socket
    cls.wrap_bio = wrap_bio
    cls._timetracer_patched = True

    def patch_certifi(module):
        _patch_certifi(module, pem, state, warn)

    post_import("certifi", patch_certifi)

    from . import _libpq

    _libpq.install(pem, state, warn, post_import)


def _private_dir():
    """A directory only this user can write: $TMPDIR/timetracer-hook-UID (mode 0700)."""
    import stat
    import tempfile

    base = tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    d = os.path.join(base, "timetracer-hook-%d" % uid)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if (
        not stat.S_ISDIR(st.st_mode)
        or (hasattr(os, "getuid") and st.st_uid != uid)
        or st.st_mode & 0o077
    ):
        # Someone else's or a symlink: use a fresh private directory instead.
        return tempfile.mkdtemp(prefix="timetracer-hook-")
    return d


def combined_bundle(certifi_pem, mock_pem):
    """Write certifi's roots plus the mock CA to a content-addressed file; return its path.

    Every process of the replayed app (workers, reloaders) shares the same file.
    """
    return bundle(certifi_pem, mock_pem, "certifi-mock-ca")


def bundle(roots_pem, mock_pem, prefix):
    """Write ``roots_pem`` plus the mock CA to a content-addressed file named ``prefix-*.pem``
    in a private directory; return its path."""
    if roots_pem and not roots_pem.endswith("\n"):
        roots_pem += "\n"
    content = (
        roots_pem + "\n# timetracer replay: mock CA\n" + mock_pem.strip() + "\n"
    ).encode("ascii", "replace")
    digest = hashlib.sha256(content).hexdigest()[:20]
    d = _private_dir()
    path = os.path.join(d, "%s-%s.pem" % (prefix, digest))
    if os.path.isfile(path):
        return path
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _patch_certifi(certifi, mock_pem, state, warn):
    orig_where = certifi.where
    cache = {}

    def bundle_path():
        if "path" not in cache:
            cache["path"] = None
            try:
                with open(orig_where(), "r", encoding="ascii", errors="replace") as f:
                    roots = f.read()
                cache["path"] = combined_bundle(roots, mock_pem)
                state["certifi_bundle"] = cache["path"]
            except Exception as e:
                warn(
                    "certifi.where() keeps certifi's own bundle: the combined bundle with the "
                    "mock CA could not be written (%s); ssl contexts still trust the mock CA"
                    % (getattr(e, "strerror", None) or e)
                )
        return cache["path"]

    def where():
        return bundle_path() or orig_where()

    def contents():
        p = bundle_path()
        if p is None:
            return orig_contents()
        with open(p, "r", encoding="ascii") as f:
            return f.read()

    orig_contents = getattr(certifi, "contents", None)
    where.__doc__ = orig_where.__doc__
    where.__wrapped__ = orig_where
    certifi.where = where
    core = sys.modules.get("certifi.core")
    if core is not None and getattr(core, "where", None) is orig_where:
        core.where = where
    if orig_contents is not None:
        contents.__wrapped__ = orig_contents
        certifi.contents = contents
        if core is not None and getattr(core, "contents", None) is orig_contents:
            core.contents = contents
    # Computed now so requests' DEFAULT_CA_BUNDLE_PATH and early callers see the combined file.
    bundle_path()
