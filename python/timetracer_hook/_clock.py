"""Start the wall clock at the recording's instant; it then advances with the real clock.

``time.time``, ``time.time_ns``, ``time.clock_gettime[_ns](CLOCK_REALTIME)``, and
``time.localtime``/``gmtime``/``ctime``/``asctime``/``strftime`` without a time argument read
``real now + offset``, where ``offset = frozen instant - real now at the first hook load``. The
first interpreter of a replay records that real instant in ``_TIMETRACER_FREEZE_ANCHOR_NS`` so
child interpreters (workers, reloaders) share one clock instead of each restarting at the frozen
instant. ``time.monotonic``, ``perf_counter`` and ``process_time`` are untouched (timeouts and
event loops keep working).

``datetime.datetime.now``/``utcnow`` read the C clock directly, so they are replaced in the
type's own dict (the dict behind its read-only ``__dict__`` proxy, then ``PyType_Modified``):
``datetime.datetime`` stays the original class, so ``isinstance``, ``type(x) is``, pickling,
subclasses with their own metaclass (pydantic's ``ConstrainedDate``) and modules that imported the
class before the hook all keep working. ``date.today``/``datetime.today`` call ``time.time()``
themselves, so they follow. (Replacing the classes by subclasses with an ``isinstance``
metaclass, as freezegun does, makes every ``class X(date, metaclass=M)`` defined later fail with
a metaclass conflict: FastAPI imports pydantic.v1, which defines one.)
"""

import datetime as _dtmod
import os
import re
import sys
import time as _time

ANCHOR_ENV = "_TIMETRACER_FREEZE_ANCHOR_NS"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)

real_date = _dtmod.date
_real = {}
_offset_ns = 0


def parse_rfc3339(text):
    """Nanoseconds since the Unix epoch for an RFC 3339 timestamp (offset required)."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(
            "%r is not an RFC 3339 timestamp like 2026-11-23T18:13:05.250Z or "
            "2026-11-23T19:13:05+01:00" % text
        )
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac = (m.group(7) or "").ljust(9, "0")
    if m.group(8):
        off = 0
    else:
        off = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            off = -off
    if not (0 <= h <= 23 and 0 <= mi <= 59 and 0 <= s <= 60):
        raise ValueError("%r: time of day out of range" % text)
    try:
        days = real_date(y, mo, d).toordinal() - real_date(1970, 1, 1).toordinal()
    except ValueError as e:
        raise ValueError("%r: %s" % (text, e))
    secs = days * 86400 + h * 3600 + mi * 60 + s - off
    return secs * 1000000000 + int(frac)


def _now_ns():
    return _real["time_ns"]() + _offset_ns


def _now():
    return (_real["time_ns"]() + _offset_ns) / 1e9


def _split_now():
    s, rem = divmod(_now_ns(), 1000000000)
    return s, rem // 1000


def _datetime_methods():
    def now(cls, tz=None):
        s, us = _split_now()
        return cls.fromtimestamp(s, tz).replace(microsecond=us)

    def utcnow(cls):
        s, us = _split_now()
        return cls.fromtimestamp(s, _dtmod.timezone.utc).replace(microsecond=us, tzinfo=None)

    return {"now": now, "utcnow": utcnow}


def _patch_builtin_type(cls, methods):
    """Put classmethods into a C type's own dict (its __dict__ is a read-only proxy)."""
    import ctypes
    import gc

    refs = [r for r in gc.get_referents(cls.__dict__) if isinstance(r, dict)]
    if len(refs) != 1 or "now" not in refs[0]:
        raise RuntimeError("the dict of %s is not reachable" % cls.__name__)
    d = refs[0]
    for name, fn in methods.items():
        orig = d[name]
        fn.__name__ = name
        fn.__qualname__ = "%s.%s" % (cls.__name__, name)
        fn.__doc__ = getattr(orig, "__doc__", None)
        fn.__wrapped__ = orig
        d[name] = classmethod(fn)
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
    # Check it took: the patched method must answer from the shifted clock.
    if not hasattr(cls.now, "__wrapped__"):
        raise RuntimeError("%s.now could not be replaced" % cls.__name__)


def _time_functions():
    t = _real

    def time():
        return (t["time_ns"]() + _offset_ns) / 1e9

    def time_ns():
        return t["time_ns"]() + _offset_ns

    def localtime(*args):
        if not args or args[0] is None:
            return t["localtime"](_now())
        return t["localtime"](*args)

    def gmtime(*args):
        if not args or args[0] is None:
            return t["gmtime"](_now())
        return t["gmtime"](*args)

    def ctime(*args):
        if not args or args[0] is None:
            return t["ctime"](_now())
        return t["ctime"](*args)

    def asctime(*args):
        if not args:
            return t["asctime"](t["localtime"](_now()))
        return t["asctime"](*args)

    def strftime(format, *args):
        if not args:
            return t["strftime"](format, t["localtime"](_now()))
        return t["strftime"](format, *args)

    fns = {
        "time": time,
        "time_ns": time_ns,
        "localtime": localtime,
        "gmtime": gmtime,
        "ctime": ctime,
        "asctime": asctime,
        "strftime": strftime,
    }
    if hasattr(_time, "clock_gettime") and hasattr(_time, "CLOCK_REALTIME"):
        realtime = _time.CLOCK_REALTIME

        def clock_gettime(clk_id):
            if clk_id == realtime:
                return _now()
            return t["clock_gettime"](clk_id)

        fns["clock_gettime"] = clock_gettime
        if hasattr(_time, "clock_gettime_ns"):

            def clock_gettime_ns(clk_id):
                if clk_id == realtime:
                    return _now_ns()
                return t["clock_gettime_ns"](clk_id)

            fns["clock_gettime_ns"] = clock_gettime_ns
    return fns


def install(spec, environ):
    """Shift the wall clock so that it reads ``spec`` now (or at the shared anchor)."""
    global _offset_ns
    frozen = parse_rfc3339(spec)
    if _real:
        return
    real_time_ns = _time.time_ns
    anchor = None
    raw = os.environ.get(ANCHOR_ENV, "")
    if raw.startswith(spec + "|"):
        try:
            anchor = int(raw[len(spec) + 1 :])
        except ValueError:
            anchor = None
    if anchor is None:
        anchor = real_time_ns()
        os.environ[ANCHOR_ENV] = "%s|%d" % (spec, anchor)
    _offset_ns = frozen - anchor

    fns = _time_functions()
    for name in fns:
        _real[name] = getattr(_time, name)
    _real["time_ns"] = real_time_ns
    replaced = {}
    for name, fake in fns.items():
        orig = _real[name]
        fake.__name__ = orig.__name__
        fake.__qualname__ = orig.__name__
        fake.__doc__ = orig.__doc__
        fake.__wrapped__ = orig
        setattr(_time, name, fake)
        replaced[id(orig)] = (orig, fake)
    _rebind_loaded_modules(replaced)
    # date.today() and datetime.today() call time.time() (patched above) from C.
    try:
        _patch_builtin_type(_dtmod.datetime, _datetime_methods())
    except Exception as e:
        return "datetime.datetime.now/utcnow keep the real clock (%s: %s); time.time, " \
            "date.today and datetime.today are shifted" % (type(e).__name__, e)
    return None


def _rebind_loaded_modules(replaced):
    """Modules loaded before us that did ``from time import time`` (few or none at sitecustomize
    time) get the replacements too."""
    skip = {"time", __name__, "timetracer_hook"}
    for modname, mod in list(sys.modules.items()):
        if mod is None or modname in skip:
            continue
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for attr, value in list(d.items()):
            hit = replaced.get(id(value))
            if hit is not None and hit[0] is value:
                try:
                    setattr(mod, attr, hit[1])
                except Exception:
                    pass
