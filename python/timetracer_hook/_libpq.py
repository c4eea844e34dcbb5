"""Make libpq (psycopg2, psycopg 3) trust the mock CA when it verifies a server.

libpq does its own TLS, outside the ``ssl`` module, so the ``SSLContext`` patch of ``_tls`` does
not reach it. It reads its trust anchors from the ``sslrootcert`` connection parameter, else
``PGSSLROOTCERT``, else ``~/.postgresql/root.crt`` (``system``: OpenSSL's default store), and it
verifies the server whenever such a file exists or ``sslmode`` is ``verify-ca``/``verify-full``.
For exactly those connections the hook passes ``sslrootcert=`` a bundle of the certificates that
file holds plus the mock CA, so a live server (hybrid replay) is still trusted as before and a
mock is trusted too. Connections that verify nothing are left untouched (setting a root file
would turn ``sslmode=require`` into ``verify-ca``). asyncpg needs nothing here: it uses the
``ssl`` module.
"""

import os
import ssl

from . import _tls

VERIFYING = ("verify-ca", "verify-full")


def _read(path):
    try:
        with open(path, "r", encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def rootcert_for(params, environ, mock_pem):
    """The ``sslrootcert`` to use for a connection with these libpq parameters, or None.

    ``params``: the connection's parameters (``sslmode``, ``sslrootcert`` as given, if any).
    """
    mode = params.get("sslmode") or environ.get("PGSSLMODE") or "prefer"
    if mode == "disable":
        return None
    root = params.get("sslrootcert") or environ.get("PGSSLROOTCERT")
    if root == "system":
        paths = ssl.get_default_verify_paths()
        source = paths.cafile or paths.openssl_cafile
    elif root:
        source = root
    else:
        home = os.path.join(os.path.expanduser("~"), ".postgresql", "root.crt")
        source = home if os.path.isfile(home) else None
    if source is None and mode not in VERIFYING:
        return None
    original = _read(source) if source else ""
    return _tls.bundle(original, mock_pem, "libpq-mock-ca")


def install(mock_pem, state, warn, post_import):
    warned = []

    def adjust(params, kwargs):
        try:
            root = rootcert_for(params, os.environ, mock_pem)
        except Exception as e:
            if not warned:
                warned.append(True)
                warn(
                    "libpq connections keep their own sslrootcert: the bundle with the mock CA "
                    "could not be written (%s); verify-ca/verify-full connections to mocks will "
                    "fail" % (getattr(e, "strerror", None) or e)
                )
            return
        if root is not None:
            kwargs["sslrootcert"] = root
            state["libpq_bundle"] = root

    def patch_psycopg2(module):
        from psycopg2.extensions import parse_dsn

        orig = module.connect
        if getattr(orig, "_timetracer_patched", False):
            return

        def connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):
            params = dict(parse_dsn(dsn)) if dsn else {}
            params.update({k: v for k, v in kwargs.items() if v is not None})
            adjust(params, kwargs)
            return orig(dsn, connection_factory, cursor_factory, **kwargs)

        connect.__doc__ = orig.__doc__
        connect.__wrapped__ = orig
        connect._timetracer_patched = True
        module.connect = connect

    def patch_psycopg(module):
        from psycopg.conninfo import conninfo_to_dict

        def wrap(cls):
            orig = cls.__dict__.get("connect")
            func = getattr(orig, "__func__", None)
            if func is None or getattr(func, "_timetracer_patched", False):
                return

            def connect(klass, conninfo="", **kwargs):
                params = dict(conninfo_to_dict(conninfo)) if conninfo else {}
                for k in ("sslmode", "sslrootcert"):
                    if kwargs.get(k) is not None:
                        params[k] = kwargs[k]
                adjust(params, kwargs)
                return func(klass, conninfo, **kwargs)

            connect.__doc__ = func.__doc__
            connect.__wrapped__ = func
            connect._timetracer_patched = True
            cls.connect = classmethod(connect)

        for name in ("Connection", "AsyncConnection"):
            cls = getattr(module, name, None)
            if cls is not None:
                wrap(cls)
        # `psycopg.connect` is `Connection.connect` bound at import.
        if getattr(module, "Connection", None) is not None:
            module.connect = module.Connection.connect

    post_import("psycopg2", patch_psycopg2)
    post_import("psycopg", patch_psycopg)
