"""TIMETRACER_FREEZE_TIME: the wall clock starts at the recording's instant and advances."""

import calendar
import datetime as real_dt

import pytest
from conftest import has_module, run_json, run_py

FROZEN = "2020-02-29T12:34:56.250Z"
FROZEN_EPOCH = calendar.timegm((2020, 2, 29, 12, 34, 56)) + 0.25

CODE = """
    import json, time, datetime, pickle, subprocess, sys
    real_before = datetime.datetime.fromtimestamp(0)   # made before anything else runs
    t0, m0 = time.time(), time.monotonic()
    time.sleep(0.3)
    t1, m1 = time.time(), time.monotonic()
    now = datetime.datetime.now()
    utc = datetime.datetime.now(datetime.timezone.utc)
    import _datetime
    real_cls = _datetime.datetime

    class Sub(datetime.datetime):
        pass

    class M(type):
        pass

    class Meta2(datetime.date, metaclass=M):  # as pydantic.v1's ConstrainedDate
        pass

    try:
        from pydantic import v1  # imported by FastAPI; defines such a class
        pydantic_v1 = "ok"
    except ImportError:
        pydantic_v1 = "absent"
    out = {
        "t0": t0, "dt": t1 - t0, "dm": m1 - m0,
        "time_ns": time.time_ns() / 1e9,
        "realtime": time.clock_gettime(time.CLOCK_REALTIME),
        "now": now.isoformat(),
        "utcnow": datetime.datetime.utcnow().isoformat(),
        "utc": utc.isoformat(),
        "today": datetime.datetime.today().isoformat(),
        "date_today": datetime.date.today().isoformat(),
        "gmtime": list(time.gmtime())[:6],
        "localtime": list(time.localtime())[:6],
        "strftime": time.strftime("%Y-%m-%d %H:%M"),
        "ctime": time.ctime(),
        "gmtime0": list(time.gmtime(0))[:3],
        "strftime_arg": time.strftime("%Y", time.gmtime(0)),
        "repr": repr(now)[:29],
        "isinstance": [
            isinstance(now, datetime.datetime), isinstance(now, real_cls),
            isinstance(real_cls(2001, 1, 1), datetime.datetime),
            isinstance(real_before, datetime.datetime), isinstance(now, datetime.date),
            isinstance(datetime.date.today(), datetime.date),
            isinstance(datetime.date.today(), datetime.datetime),
            isinstance(_datetime.date(2001, 1, 1), datetime.date),
            issubclass(datetime.datetime, datetime.date),
            issubclass(real_cls, datetime.datetime),
        ],
        "pickle": pickle.loads(pickle.dumps(now)) == now,
        "type_is": [type(now) is datetime.datetime, datetime.datetime is real_cls,
                    type(datetime.date.today()) is datetime.date],
        "subclass_now": [type(Sub.now()).__name__, Sub.now().isoformat()[:10], Sub.today().isoformat()[:10]],
        "metaclass_subclass": Meta2.__name__,
        "pydantic_v1": pydantic_v1,
        "arith": (now + datetime.timedelta(days=1)).isoformat(),
        "diff_real": (now - real_cls(2020, 2, 29)).days,
    }
    if len(sys.argv) > 1:
        # A child interpreter started a second later shares the clock (same anchor).
        time.sleep(1)
        child = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                               capture_output=True, text=True, check=True)
        out["child"] = float(child.stdout)
        out["parent_after"] = time.time()
    print(json.dumps(out))
"""


@pytest.mark.parametrize("spec", [FROZEN, "2020-02-29T13:34:56.250000000+01:00", "2020-02-29t07:04:56.25-05:30"])
def test_clock_starts_at_the_recording_and_advances(spec):
    out, p = run_json(CODE, {"TIMETRACER_REPLAY": "1", "TIMETRACER_FREEZE_TIME": spec})
    assert p.stderr == ""
    assert FROZEN_EPOCH <= out["t0"] < FROZEN_EPOCH + 2
    assert 0.25 < out["dt"] < 2 and 0.25 < out["dm"] < 2  # advances; monotonic untouched
    assert abs(out["dt"] - out["dm"]) < 0.1
    for k in ("time_ns", "realtime"):
        assert FROZEN_EPOCH <= out[k] < FROZEN_EPOCH + 3, k
    assert out["now"].startswith("2020-02-29T12:3")  # TZ=UTC in the child
    assert out["utcnow"].startswith("2020-02-29T12:3")
    assert out["utc"].startswith("2020-02-29T12:3") and out["utc"].endswith("+00:00")
    assert out["today"].startswith("2020-02-29T12:3")
    assert out["date_today"] == "2020-02-29"
    assert out["gmtime"][:4] == [2020, 2, 29, 12]
    assert out["localtime"][:4] == [2020, 2, 29, 12]
    assert out["strftime"].startswith("2020-02-29 12:3")
    assert out["ctime"].startswith("Sat Feb 29 12:3")
    assert out["gmtime0"] == [1970, 1, 1] and out["strftime_arg"] == "1970"
    assert out["repr"] == "datetime.datetime(2020, 2, 29"
    assert out["isinstance"] == [True, True, True, True, True, True, False, True, True, True]
    assert out["pickle"] is True
    assert out["type_is"] == [True, True, True]
    assert out["subclass_now"] == ["Sub", "2020-02-29", "2020-02-29"]
    assert out["metaclass_subclass"] == "Meta2"
    assert out["pydantic_v1"] == ("ok" if has_module("pydantic") else "absent")
    assert out["arith"].startswith("2020-03-01T12:3")
    assert out["diff_real"] == 0


def test_child_interpreters_share_the_clock():
    out, _ = run_json(CODE, {"TIMETRACER_REPLAY": "1", "TIMETRACER_FREEZE_TIME": FROZEN}, args=["child"])
    # The child started >1.3 s after the parent's hook load: it continues, it does not restart.
    assert out["child"] > FROZEN_EPOCH + 1.2
    assert out["child"] <= out["parent_after"]


def test_without_freeze_time_the_clock_is_real():
    out, _ = run_json(CODE, {"TIMETRACER_REPLAY": "1"})
    assert abs(out["t0"] - real_dt.datetime.now().timestamp()) < 60
    assert out["isinstance"] == [True, True, True, True, True, True, False, True, True, True]


def test_bad_timestamp_is_reported_and_time_runs_on():
    p = run_py(
        "import time; print(time.time() > 1.6e9)",
        {"TIMETRACER_REPLAY": "1", "TIMETRACER_FREEZE_TIME": "yesterday"},
    )
    assert p.returncode == 0 and p.stdout == "True\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("timetracer-hook: TIMETRACER_FREEZE_TIME=yesterday: time is not frozen")
    assert "RFC 3339" in lines[0]


def test_without_ctypes_datetime_now_stays_real_and_says_so(tmp_path):
    fake = tmp_path / "no-ctypes"
    (fake / "ctypes").mkdir(parents=True)
    (fake / "ctypes" / "__init__.py").write_text("raise ImportError('no ctypes here')\n")
    from conftest import PYTHON_DIR

    p = run_py(
        "import time, datetime; print(time.time() < 1.6e9, datetime.date.today().year, "
        "datetime.datetime.now().year > 2020)",
        {"TIMETRACER_REPLAY": "1", "TIMETRACER_FREEZE_TIME": FROZEN},
        pythonpath=[str(fake), PYTHON_DIR],
    )
    assert p.returncode == 0 and p.stdout == "True 2020 True\n", p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(
        "timetracer-hook: TIMETRACER_FREEZE_TIME=%s: datetime.datetime.now/utcnow keep the real "
        "clock (ImportError: no ctypes here)" % FROZEN
    )
