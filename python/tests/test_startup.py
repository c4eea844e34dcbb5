"""sitecustomize: inactive without the replay env, chains to the shadowed sitecustomize, never
breaks interpreter start, and says what went wrong."""

import glob
import os
import shutil
import sys

import pytest
from conftest import PYTHON_DIR, run_json, run_py

PRISTINE = """
    import json, socket, ssl, time, datetime, _datetime, sys
    import timetracer_hook
    print(json.dumps({
        "getaddrinfo": hasattr(socket.getaddrinfo, "__wrapped__"),
        "wrap_socket": hasattr(ssl.SSLContext.wrap_socket, "__wrapped__"),
        "time": hasattr(time.time, "__wrapped__"),
        "datetime": datetime.datetime is _datetime.datetime and datetime.date is _datetime.date,
        "now": hasattr(datetime.datetime.now, "__wrapped__"),
        "meta_path": [type(f).__name__ for f in sys.meta_path if "PostImport" in type(f).__name__],
        "active": timetracer_hook.active(),
        "sitecustomize": sys.modules["sitecustomize"].__file__,
    }))
"""


def test_inactive_without_the_replay_env(certs, hosts_file):
    for env in (
        {},
        # Everything but the switch: still nothing.
        {
            "TIMETRACER_REPLAY_CA": certs["ca"],
            "TIMETRACER_REPLAY_HOSTS": hosts_file({"a.test": ["127.0.0.1"]}),
            "TIMETRACER_FREEZE_TIME": "2020-01-01T00:00:00Z",
            "TIMETRACER_REPLAY_INFO": "1",
        },
        {"TIMETRACER_REPLAY": "0", "TIMETRACER_FREEZE_TIME": "2020-01-01T00:00:00Z"},
    ):
        out, p = run_json(PRISTINE, env)
        assert p.stderr == ""
        assert out["sitecustomize"] == os.path.join(PYTHON_DIR, "sitecustomize.py")
        assert not out["getaddrinfo"] and not out["wrap_socket"] and not out["time"]
        assert out["datetime"] is True and out["now"] is False
        assert out["meta_path"] == []
        assert out["active"] == {
            "replay": False,
            "ca": None,
            "certifi_bundle": None,
            "hosts": {},
            "uvloop": False,
            "freeze_time": None,
            "libpq_bundle": None,
            "redirect": {},
            "errors": [],
        }


def test_active_reports_what_is_enabled(certs, hosts_file):
    env = {
        "TIMETRACER_REPLAY": "1",
        "TIMETRACER_REPLAY_CA": certs["ca"],
        "TIMETRACER_REPLAY_HOSTS": hosts_file({"API.a.test.": ["127.0.0.1"]}),
        "TIMETRACER_FREEZE_TIME": "2020-01-01T00:00:00Z",
        "TIMETRACER_REPLAY_INFO": "1",
    }
    out, p = run_json(PRISTINE, env)
    assert out["getaddrinfo"] and out["wrap_socket"] and out["time"]
    assert out["datetime"] is True and out["now"] is True  # same classes, patched in place
    a = out["active"]
    assert a["replay"] is True and a["ca"] == certs["ca"]
    assert a["hosts"] == {"api.a.test": ["127.0.0.1"]}
    assert a["freeze_time"] == "2020-01-01T00:00:00Z" and a["errors"] == []
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("timetracer-hook: replay hook active (pid ")
    for part in ("mock CA " + certs["ca"], "1 recorded hostname", "2020-01-01T00:00:00Z"):
        assert part in lines[0]


@pytest.fixture
def shadow(tmp_path):
    d = tmp_path / "shadow"
    d.mkdir()
    (d / "sitecustomize.py").write_text(
        "import sys\n"
        "print('shadowed sitecustomize ran as', __name__, sys.modules[__name__].__file__)\n"
        "SHADOW = True\n"
    )
    return str(d)


@pytest.mark.parametrize("replay", [False, True])
def test_chains_to_the_shadowed_sitecustomize(shadow, replay, hosts_file):
    env = {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_HOSTS": hosts_file({})} if replay else {}
    p = run_py(
        "import sitecustomize as s; print(s._timetracer_chained.SHADOW, s.__file__)",
        env,
        pythonpath=[PYTHON_DIR, shadow],
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "shadowed sitecustomize ran as sitecustomize %s/sitecustomize.py" % shadow
    assert lines[1] == "True %s/sitecustomize.py" % PYTHON_DIR


def test_a_shadow_before_our_directory_is_not_run_twice(shadow):
    """Only entries after ours are searched; our own file is never chained to itself."""
    p = run_py(
        "import sitecustomize as s; print(s._timetracer_chained)",
        pythonpath=[PYTHON_DIR, PYTHON_DIR, shadow],
    )
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.count("shadowed sitecustomize ran") == 1


def test_a_failing_shadowed_sitecustomize_does_not_stop_startup(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "sitecustomize.py").write_text("raise RuntimeError('boom')\n")
    p = run_py("print('alive')", pythonpath=[PYTHON_DIR, str(d)])
    assert p.returncode == 0 and p.stdout == "alive\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("timetracer-hook: the shadowed sitecustomize ")
    assert "RuntimeError: boom" in lines[0]


def _system_pythons():
    out = []
    for py in ("/usr/bin/python3",):
        if not os.path.exists(py):
            continue
        sc = glob.glob("/usr/lib/python3*/sitecustomize.py")
        if sc:
            out.append(py)
    return out


@pytest.mark.skipif(not _system_pythons(), reason="no distribution python with a sitecustomize")
def test_chains_to_the_distributions_sitecustomize():
    """Debian's /usr/lib/python3.X/sitecustomize.py (apport hook) still runs under ours."""
    p = run_py(
        "import sitecustomize as s, sys; print(s._timetracer_chained.__file__); "
        "print('/usr/lib/python%d.%d/sitecustomize.py' % sys.version_info[:2])",
        {"TIMETRACER_REPLAY": "1"},
        python=_system_pythons()[0],
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    chained, expected = p.stdout.splitlines()
    assert os.path.realpath(chained) == os.path.realpath(expected)


def test_unreadable_ca_is_said_plainly_and_the_rest_still_applies(tmp_path, hosts_file):
    missing = str(tmp_path / "nope" / "ca.pem")
    p = run_py(
        "import socket; print(socket.gethostbyname('api.recorded.test'))",
        {
            "TIMETRACER_REPLAY": "1",
            "TIMETRACER_REPLAY_CA": missing,
            "TIMETRACER_REPLAY_HOSTS": hosts_file({"api.recorded.test": ["127.0.0.9"]}),
        },
    )
    assert p.returncode == 0 and p.stdout == "127.0.0.9\n"
    assert p.stderr == (
        "timetracer-hook: TIMETRACER_REPLAY_CA=%s: cannot read the mock CA certificate "
        "(No such file or directory); HTTPS to mocked dependencies will fail certificate "
        "verification\n" % missing
    )


def test_ca_path_that_is_a_directory(tmp_path):
    p = run_py("print('alive')", {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_CA": str(tmp_path)})
    assert p.returncode == 0 and p.stdout == "alive\n"
    assert p.stderr == (
        "timetracer-hook: TIMETRACER_REPLAY_CA=%s: cannot read the mock CA certificate "
        "(Is a directory); HTTPS to mocked dependencies will fail certificate verification\n"
        % tmp_path
    )


@pytest.mark.parametrize(
    "content, says",
    [
        ("not a certificate\n", "has no PEM certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "is not a valid PEM certificate",
        ),
    ],
)
def test_bad_ca_content(tmp_path, content, says):
    ca = tmp_path / "ca.pem"
    ca.write_text(content)
    p = run_py("print('alive')", {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_CA": str(ca)})
    assert p.returncode == 0 and p.stdout == "alive\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("timetracer-hook: TIMETRACER_REPLAY_CA=%s: " % ca)
    assert says in lines[0]


def test_missing_package_does_not_stop_startup(tmp_path):
    d = tmp_path / "only-sitecustomize"
    d.mkdir()
    shutil.copy(os.path.join(PYTHON_DIR, "sitecustomize.py"), d / "sitecustomize.py")
    # The venv holds the package (`pip install -e ./python`, for the pytest plugin): the
    # interpreter it was made from does not see the venv's site-packages.
    base = getattr(sys, "_base_executable", sys.executable)
    probe = run_py("import timetracer_hook", pythonpath=[str(d)], python=base)
    assert probe.returncode != 0, "%s can import timetracer_hook: no interpreter lacks it" % base
    p = run_py("print('alive')", {"TIMETRACER_REPLAY": "1"}, pythonpath=[str(d)], python=base)
    assert p.returncode == 0 and p.stdout == "alive\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("timetracer-hook: the replay hook failed to load from %s" % d)
    assert "ModuleNotFoundError" in lines[0] and "replay runs without it" in lines[0]


# This venv's interpreter and the distribution's (no certifi, no third-party packages there),
# plus any listed in TIMETRACER_HOOK_TEST_PYTHONS (colon-separated) to check other versions.
INTERPRETERS = [sys.executable] + [p for p in ["/usr/bin/python3"] if os.path.exists(p)]
INTERPRETERS += [p for p in os.environ.get("TIMETRACER_HOOK_TEST_PYTHONS", "").split(":") if p]


@pytest.mark.parametrize("version", INTERPRETERS)
def test_runs_on_interpreter(version, certs, hosts_file):
    out, p = run_json(
        PRISTINE,
        {
            "TIMETRACER_REPLAY": "1",
            "TIMETRACER_REPLAY_CA": certs["ca"],
            "TIMETRACER_REPLAY_HOSTS": hosts_file({"a.test": ["127.0.0.1"]}),
            "TIMETRACER_FREEZE_TIME": "2020-01-01T00:00:00Z",
        },
        python=version,
    )
    assert p.stderr == "" and out["active"]["errors"] == []
