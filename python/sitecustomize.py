"""timetracer replay hook: loaded by `site` because `timetracer-agent replay` puts this file's
directory first on PYTHONPATH.

1. Imports ``timetracer_hook`` and activates it (it does nothing unless TIMETRACER_REPLAY=1).
2. Runs the ``sitecustomize`` this file shadows (Debian's, a venv's, a user's): the next one on
   ``sys.path`` after this directory.

Never stops the interpreter: a failure is one ``timetracer-hook:`` line on stderr.
"""


def _timetracer_boot():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))

    def warn(msg):
        try:
            sys.stderr.write("timetracer-hook: %s\n" % msg)
            sys.stderr.flush()
        except Exception:
            pass

    replay = os.environ.get("TIMETRACER_REPLAY") == "1"
    try:
        import timetracer_hook

        timetracer_hook.activate()
    except Exception as e:
        if replay:
            warn(
                "the replay hook failed to load from %s (%s: %s); replay runs without it "
                "(no mock CA trust, no recorded hostnames, no frozen time)"
                % (here, type(e).__name__, e)
            )
        else:
            warn("the replay hook failed to load from %s (%s: %s)" % (here, type(e).__name__, e))

    # Chain to the sitecustomize we shadow.
    try:
        import importlib.machinery
        import importlib.util

        def same(a, b):
            try:
                return os.path.samefile(a, b)
            except OSError:
                return False

        entries = [p for p in sys.path if isinstance(p, str)]
        start = 0
        for i, p in enumerate(entries):
            if same(p or ".", here):
                start = i + 1
                break
        rest = [p for p in entries[start:] if not same(p or ".", here)]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None:
            return None
        origin = spec.origin
        if origin and os.path.isfile(origin) and same(origin, os.path.abspath(__file__)):
            return None
        module = importlib.util.module_from_spec(spec)
        ours = sys.modules.get("sitecustomize")
        sys.modules["sitecustomize"] = module  # as if `site` had imported it
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            warn("the shadowed sitecustomize %s failed: %s: %s" % (origin, type(e).__name__, e))
        finally:
            if ours is not None:
                sys.modules["sitecustomize"] = ours
        return module
    except Exception as e:
        warn("could not look for a shadowed sitecustomize (%s: %s)" % (type(e).__name__, e))
        return None


# The shadowed sitecustomize module (None if there was none), for diagnostics.
_timetracer_chained = _timetracer_boot()
del _timetracer_boot
