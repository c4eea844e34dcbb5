"""Start the wall clock at the recording's instant; it then advances with the real clock.

``time.time``, ``time.time_ns``, ``time.clock_gettime[_ns](CLOCK_REALTIME)``, and
``time.localtime``/``gmtime``/``ctime``/``asctime``/``strftime`` without a time argument read
``real now + offset``, where ``offset = frozen instant - real now at the first hook load``. The
first interpreter of a replay records that real instant in ``_TIMETRACER_FREEZE_ANCHOR_NS`` so
child interpreters (workers, reloaders) share one clock instead of each restarting at the frozen
instant. ``time.monotonic``, ``perf_counter`` and ``process_time`` are untouched (timeouts and
event loops keep working).

``datetime.datetime`` and ``datetime.date`` are replaced in the ``datetime`` module by subclasses
(as freezegun does) whose ``now``/``utcnow``/``today`` read the shifted clock. A metaclass keeps
``isinstance(x, datetime.datetime)`` true for values of the original class, created before or
after, and values of the subclass are instances of the original class. ``type(x) is
datetime.datetime`` is not preserved.
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
real_datetime = _dtmod.datetime
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


class _FakeMeta(type):
    """``isinstance``/``issubclass`` against the fake class answer for the real one."""

    def __instancecheck__(cls, obj):
        real = cls.__dict__.get("_tt_real")
        if real is not None:
            return isinstance(obj, real)
        return type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub):
        real = cls.__dict__.get("_tt_real")
        if real is not None:
            return issubclass(sub, real)
        return type.__subclasscheck__(cls, sub)


def _split_now():
    s, rem = divmod(_now_ns(), 1000000000)
    return s, rem // 1000


def _qualified_repr(value, fake, real):
    r = real.__repr__(value)
    if type(value) is fake and not r.startswith("datetime."):
        r = "datetime." + r  # as the original class prints
    return r


class FakeDate(real_date, metaclass=_FakeMeta):
    _tt_real = real_date

    def __repr__(self):
        return _qualified_repr(self, FakeDate, real_date)

    @classmethod
    def today(cls):
        s, _us = _split_now()
        return cls.fromtimestamp(s)


class FakeDatetime(real_datetime, metaclass=_FakeMeta):
    _tt_real = real_datetime

    def __repr__(self):
        return _qualified_repr(self, FakeDatetime, real_datetime)

    @classmethod
    def now(cls, tz=None):
        s, us = _split_now()
        return cls.fromtimestamp(s, tz).replace(microsecond=us)

    @classmethod
    def utcnow(cls):
        s, us = _split_now()
        return cls.fromtimestamp(s, _dtmod.timezone.utc).replace(microsecond=us, tzinfo=None)

    @classmethod
    def today(cls):
        return cls.now()


for _fake, _name in ((FakeDate, "date"), (FakeDatetime, "datetime")):
    # Same name as the original so pickling finds `datetime.datetime` (this class) by name.
    _fake.__name__ = _name
    _fake.__qualname__ = _name
    _fake.__module__ = "datetime"
    _fake.__doc__ = getattr(_dtmod, _name).__doc__


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
    _dtmod.date = FakeDate
    _dtmod.datetime = FakeDatetime
    replaced[id(real_date)] = (real_date, FakeDate)
    replaced[id(real_datetime)] = (real_datetime, FakeDatetime)
    _rebind_loaded_modules(replaced)


def _rebind_loaded_modules(replaced):
    """Modules loaded before us that did ``from time import time`` / ``from datetime import date``
    (few or none at sitecustomize time) get the replacements too."""
    skip = {"time", "datetime", "_datetime", "_pydatetime", __name__, "timetracer_hook"}
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
