"""pytest-timetracer (python/pytest_timetracer), issue #22 item 2, with pytest's `pytester`.

A real recording (conftest's `recording`: `timetracer-agent record` of the bundled FastAPI app
calling the deterministic upstream, two requests). Then the plugin
replays it in an inner pytest run, in agent mode (root) and in hook mode (no agent): each
cassette is an item named `METHOD target (id)`; as recorded every item passes; with the app
changed (USERS_SRC asks the upstream for something else) the /users item fails with the
verdict's explanation and the other still passes.
"""

import os

import pytest

from conftest import APPS

pytest_plugins = ["pytester"]

def _run(pytester, recording, *args):
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rA",
        "--timetracer-cassettes", recording["dir"],
        "--timetracer-app", recording["app"],
        "--timetracer-cwd", APPS,
        *args,
        timeout=300,
    )


@pytest.fixture
def app_env(monkeypatch, recording):
    # The recording's environment, restored after each test (the inner pytest inherits it).
    monkeypatch.setenv("UPSTREAM_URL", recording["upstream"])
    monkeypatch.setenv("TIMETRACER_USER", "root")
    monkeypatch.setenv("TIMETRACER_AGENT", recording["agent"])
    monkeypatch.delenv("USERS_SRC", raising=False)
    return monkeypatch


def _names(recording):
    # The items are named like the agent's JUnit test cases: METHOD target (cassette id).
    ids = [os.path.basename(f).split(".json")[0].rsplit("__", 1)[1] for f in recording["files"]]
    return ids


def test_agent_mode_each_cassette_is_an_item(pytester, recording, app_env):
    r = _run(pytester, recording, "--timetracer-mode", "agent")
    r.stdout.fnmatch_lines(["timetracer: agent mode (root, *): every dependency mocked*"])
    # The two requests, `app startup`, `connections outside the recording`.
    r.assert_outcomes(passed=4)
    for cid in _names(recording):
        r.stdout.fnmatch_lines(["PASSED *GET /*?req=r* (%s)" % cid])
    r.stdout.fnmatch_lines(["PASSED *::app startup", "PASSED *::connections outside the recording"])


def test_agent_mode_failure_shows_the_verdict(pytester, recording, app_env, tmp_path):
    app_env.setenv("USERS_SRC", "admins")
    reports = tmp_path / "reports"
    r = _run(pytester, recording, "--timetracer-report-dir", str(reports))
    # auto picks the agent as root.
    r.stdout.fnmatch_lines(["timetracer: agent mode*"])
    r.assert_outcomes(passed=3, failed=1)
    # The failure shows the verdict's own lines for the request.
    r.stdout.fnmatch_lines([
        "*timetracer: GET /users/7?req=r0 (*)*",
        "*GET /users/7?req=r0*dependency mismatch*",
        "*differs*query.src*users*admins*",
        "*recorded call #1 was not made in replay*",
    ])
    r.stdout.fnmatch_lines(["FAILED *GET /users/7?req=r0 (*)*"])
    r.stdout.fnmatch_lines(["PASSED *GET /plain?req=r1 (*)"])
    assert (reports / "timetracer-junit.xml").is_file()
    assert (reports / "timetracer-verdict.json").is_file()


def test_hook_mode_without_the_agent(pytester, recording, app_env):
    r = _run(pytester, recording, "--timetracer-mode", "hook")
    r.stdout.fnmatch_lines(["timetracer: hook mode (no agent): outbound HTTP*NOT mocked: databases*"])
    r.assert_outcomes(passed=2)

    app_env.setenv("USERS_SRC", "admins")
    r = _run(pytester, recording, "--timetracer-mode", "hook")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines([
        "FAILED *GET /users/7?req=r0 (*)*",
    ])
    out = r.stdout.str()
    assert "recorded call not made: GET http://127.0.0.1:" in out, out
    # The first difference of the JSON body: the app asked for src=admins.
    assert 'body.calls[0].url: "http://127.0.0.1:' in out and 'src=admins"' in out, out
    r.stdout.fnmatch_lines(["PASSED *GET /plain?req=r1 (*)"])


def test_auto_mode_without_root_is_hook_mode(pytester, recording, app_env):
    app_env.setattr(os, "geteuid", lambda: 1000)
    r = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider",
        "--timetracer-cassettes", recording["dir"],
        "--timetracer-app", recording["app"],
        "--timetracer-cwd", APPS,
    )
    r.stdout.fnmatch_lines(["timetracer: hook mode (no agent)*"])
    r.assert_outcomes(passed=2)
    # Asking for the agent without root names the fix.
    r = pytester.runpytest_inprocess(
        "--timetracer-cassettes", recording["dir"], "--timetracer-app", recording["app"],
        "--timetracer-mode", "agent")
    r.stderr.fnmatch_lines(["*needs root: run `sudo -E pytest *"])


def test_usage_errors_name_the_fix(pytester, tmp_path):
    r = pytester.runpytest_inprocess("--timetracer-cassettes", str(tmp_path))
    r.stderr.fnmatch_lines(["*--timetracer-cassettes needs --timetracer-app*"])
    r = pytester.runpytest_inprocess(
        "--timetracer-cassettes", str(tmp_path / "nope"), "--timetracer-app", "x")
    r.stderr.fnmatch_lines(["*no such directory*"])
    r = pytester.runpytest_inprocess("--timetracer-cassettes", str(tmp_path),
                                     "--timetracer-app", "x", "--timetracer-mode", "hook")
    r.stderr.fnmatch_lines(["*holds no cassette*"])
