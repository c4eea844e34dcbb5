"""timetracer replay hook.

Loaded into an unmodified Python app by ``timetracer-agent replay`` through ``sitecustomize``.
It does nothing unless ``TIMETRACER_REPLAY=1`` is in the environment. Then, each part enabled by
its own variable:

* ``TIMETRACER_REPLAY_CA=/path/ca.pem``: every client-side ``ssl.SSLContext`` of the process also
  trusts the mock CA (verification stays on); ``certifi.where()`` names a bundle of certifi's
  roots plus the mock CA; libpq connections of psycopg2 / psycopg 3 that verify the server get
  ``sslrootcert=`` a bundle of their own roots plus the mock CA.
* ``TIMETRACER_REPLAY_HOSTS=/path/hosts.json``: the recorded hostnames resolve to their recorded
  addresses without DNS (``socket.getaddrinfo`` and friends, asyncio, uvloop).
* ``TIMETRACER_FREEZE_TIME=<RFC 3339>``: the wall clock starts at that instant and advances.
* ``TIMETRACER_REPLAY_REDIRECT=/path/routes.json``: connects to recorded destinations go to the
  given addresses instead (``pytest-timetracer`` without root; the agent redirects in the kernel).
* ``TIMETRACER_REPLAY_INFO=1``: one line on stderr saying what was enabled.

Pure Python, standard library only, Python >= 3.8. A failure never stops the interpreter: it is
reported as one ``timetracer-hook:`` line on stderr and the rest of the hook still applies.
"""

import os
import sys

__all__ = ["activate", "active"]
__version__ = "0.1.0"

_PREFIX = "timetracer-hook:"

_state = {
    "replay": False,
    "ca": None,
    "certifi_bundle": None,
    "libpq_bundle": None,
    "hosts": {},
    "uvloop": False,
    "freeze_time": None,
    "redirect": {},
    "errors": [],
}
_activated = False


def active():
    """What the hook enabled in this process (a copy; for tests and diagnostics).

    Keys: ``replay`` (bool), ``ca`` (path of the mock CA or None), ``certifi_bundle`` (path of the
    combined bundle once ``certifi`` was imported, else None), ``hosts`` (hostname -> addresses),
    ``uvloop`` (True once ``uvloop.Loop`` was patched), ``freeze_time`` (the frozen instant as
    given, or None), ``redirect`` (recorded ``ip:port`` -> the address connected instead),
    ``errors`` (the messages printed to stderr).
    """
    d = dict(_state)
    d["hosts"] = {k: list(v) for k, v in _state["hosts"].items()}
    d["redirect"] = dict(_state["redirect"])
    d["errors"] = list(_state["errors"])
    return d


def _warn(msg):
    _state["errors"].append(msg)
    try:
        sys.stderr.write("%s %s\n" % (_PREFIX, msg))
        sys.stderr.flush()
    except Exception:
        pass


def activate(environ=None):
    """Apply the replay hook as the environment asks; idempotent. Returns ``active()``."""
    global _activated
    if _activated:
        return active()
    env = os.environ if environ is None else environ
    if env.get("TIMETRACER_REPLAY") != "1":
        return active()
    _activated = True
    _state["replay"] = True

    ca = env.get("TIMETRACER_REPLAY_CA")
    if ca:
        try:
            from . import _tls

            _tls.install(ca, _state, _warn, _post_import)
            _state["ca"] = ca
        except Exception as e:
            what = "cannot read the mock CA certificate" if isinstance(e, OSError) else (
                "the mock CA was not installed"
            )
            _warn(
                "TIMETRACER_REPLAY_CA=%s: %s (%s); HTTPS to mocked dependencies will fail "
                "certificate verification" % (ca, what, _describe(e))
            )

    hosts = env.get("TIMETRACER_REPLAY_HOSTS")
    if hosts:
        try:
            from . import _resolve

            _state["hosts"] = _resolve.install(hosts, _state, _warn, _post_import)
        except Exception as e:
            _warn(
                "TIMETRACER_REPLAY_HOSTS=%s: recorded hostnames are not mapped (%s); they will "
                "be resolved through DNS" % (hosts, _describe(e))
            )

    redirect = env.get("TIMETRACER_REPLAY_REDIRECT")
    if redirect:
        try:
            from . import _redirect

            _state["redirect"] = _redirect.install(redirect, _state, _warn, _post_import)
        except Exception as e:
            _warn(
                "TIMETRACER_REPLAY_REDIRECT=%s: connects are not redirected (%s); the app "
                "reaches the recorded destinations themselves" % (redirect, _describe(e))
            )

    freeze = env.get("TIMETRACER_FREEZE_TIME")
    if freeze:
        try:
            from . import _clock

            partial = _clock.install(freeze, env)
            _state["freeze_time"] = freeze
            if partial:
                _warn("TIMETRACER_FREEZE_TIME=%s: %s" % (freeze, partial))
        except Exception as e:
            _warn(
                "TIMETRACER_FREEZE_TIME=%s: time is not frozen (%s)" % (freeze, _describe(e))
            )

    if env.get("TIMETRACER_REPLAY_INFO") == "1":
        _info()
    return active()


def _describe(e):
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    s = str(e)
    return s if s else type(e).__name__


def _info():
    parts = []
    if _state["ca"]:
        parts.append("ssl trusts the mock CA %s" % _state["ca"])
    if _state["hosts"]:
        parts.append("%d recorded hostname(s) resolve without DNS" % len(_state["hosts"]))
    if _state["freeze_time"]:
        parts.append("clock starts at %s" % _state["freeze_time"])
    if _state["redirect"]:
        parts.append("%d recorded destination(s) redirected" % len(_state["redirect"]))
    if not parts:
        parts.append("nothing enabled")
    try:
        sys.stderr.write("%s replay hook active (pid %d): %s\n" % (_PREFIX, os.getpid(), "; ".join(parts)))
        sys.stderr.flush()
    except Exception:
        pass


class _PostImportFinder:
    """Runs a callback right after a module's code has executed, before its importer sees it.

    Used to patch ``certifi`` and ``uvloop`` only if and when the app imports them. The module's
    own loader is kept (``importlib.resources`` and friends still work); only its bound
    ``exec_module`` is wrapped on that one loader instance.
    """

    def __init__(self):
        self.hooks = {}

    def find_spec(self, name, path=None, target=None):
        if name not in self.hooks:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        orig_exec = getattr(loader, "exec_module", None)
        if orig_exec is None:
            return spec
        hooks = self.hooks

        def exec_module(module):
            orig_exec(module)
            callback = hooks.pop(name, None)
            try:
                del loader.exec_module
            except Exception:
                pass
            if callback is not None:
                _run_callback(name, callback, module)

        try:
            loader.exec_module = exec_module
        except Exception:
            return spec
        return spec


_finder = None


def _run_callback(name, callback, module):
    try:
        callback(module)
    except Exception as e:
        _warn("patching %s failed (%s)" % (name, _describe(e)))


def _post_import(name, callback):
    """Call ``callback(module)`` once ``name`` is imported (now, if it already is)."""
    global _finder
    module = sys.modules.get(name)
    if module is not None:
        _run_callback(name, callback, module)
        return
    if _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    first = _finder.hooks.get(name)
    if first is None:
        _finder.hooks[name] = callback
        return

    # Two parts patch the same module (uvloop: resolving, then redirecting): both, in order.
    def both(module):
        _run_callback(name, first, module)
        _run_callback(name, callback, module)

    _finder.hooks[name] = both
