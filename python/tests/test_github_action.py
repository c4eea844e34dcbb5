"""The GitHub Action (action.yml at the repository root), issue #22 item 2.

No GitHub runner emulator is installable here (`act` is a Go program in no package registry the
project may use), so tests/ci/action_runner.py runs the action's steps the way a runner does
(docs/ci.md). Against conftest's real recording of the bundled FastAPI app: with `build: true`
(`cargo xtask build` in the action's own checkout) a faithful replay passes every step; the app
changed (it asks its upstream for something else) makes the replay exit 2, the JUnit report and
the verdict are still uploaded, and the last step fails the job with 2. The release path
downloads a tarball (here `file://`, made from the built binaries) and checks its `.sha256`.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import APPS, REPO

RUNNER = os.path.join(REPO, "tests", "ci", "action_runner.py")
ACTION = os.path.join(REPO, "action.yml")


def _run_action(tmp_path, recording, tag, inputs, env=None):
    work = tmp_path / tag
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True)
    base = {
        "cassettes": recording["dir"],
        "app": recording["app"],
        "working-directory": APPS,
        "junit": "reports/%s-junit.xml" % tag,
        "verdict": "reports/%s-verdict.json" % tag,
        "artifact-name": "replay-%s" % tag,
    }
    base.update(inputs)
    args = [sys.executable, RUNNER, ACTION, "--workspace", str(work), "--artifacts",
            str(artifacts)]
    for k, v in base.items():
        if v is not None:
            args += ["--input", "%s=%s" % (k, v)]
    full_env = dict(os.environ, UPSTREAM_URL=recording["upstream"],
                    # The job runs as root here, as in a root container: the app too (docs/ci.md).
                    TIMETRACER_USER="root",
                    # `cargo xtask build` prepares this venv (already complete: nothing to do).
                    TIMETRACER_VENV=os.path.dirname(os.path.dirname(sys.executable)))
    full_env.pop("USERS_SRC", None)
    full_env.update(env or {})
    p = subprocess.run(args, cwd=str(work), env=full_env, capture_output=True, text=True,
                       timeout=1800)
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = None
    return p, report, artifacts / ("replay-%s" % tag)


def _step(report, prefix):
    return next(s for s in report["steps"] if s["name"].startswith(prefix))


def _explain(p, report):
    return "runner exit %d\nreport: %s\nsteps' output:\n%s" % (
        p.returncode, json.dumps(report, indent=1), p.stderr[-8000:])


def _check_uploaded(uploaded, tag, requests, failures):
    import xml.etree.ElementTree as ET

    import xmlschema

    junit = uploaded / ("%s-junit.xml" % tag)
    verdict = uploaded / ("%s-verdict.json" % tag)
    assert junit.is_file() and verdict.is_file(), sorted(os.listdir(uploaded))
    schema = xmlschema.XMLSchema(os.path.join(REPO, "tests", "schemas", "junit-10.xsd"))
    errors = [str(e) for e in schema.iter_errors(str(junit))]
    assert errors == [], errors
    suite = ET.parse(junit).getroot().find("testsuite")
    # `app startup` and `connections outside the recording` besides the requests.
    assert suite.get("tests") == str(requests + 2)
    assert suite.get("failures") == str(failures)
    v = json.loads(verdict.read_text())
    assert v["verdict"] == ("same" if failures == 0 else "dependency-mismatch"), v
    assert len(v["requests"]) == requests


def test_action_yml_passes_yamllint():
    p = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "yamllint"), "--strict", "-c",
         os.path.join(REPO, "tests", "ci", "yamllint.yaml"), ACTION],
        capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_build_path_passes_then_fails_the_job_on_a_mismatch(tmp_path, recording):
    p, report, uploaded = _run_action(tmp_path, recording, "pass", {"build": "true"})
    assert p.returncode == 0, _explain(p, report)
    for step in ("Install", "Replay", "Upload", "Fail on"):
        assert _step(report, step)["outcome"] == "success", _explain(p, report)
    assert report["outputs"]["exit-code"] == "0"
    assert _step(report, "Install")["outputs"]["agent"] == os.path.join(
        REPO, "target", "release", "timetracer-agent"), "built from the action's own source"
    assert "cargo xtask build" in p.stderr
    _check_uploaded(uploaded, "pass", 2, 0)

    p, report, uploaded = _run_action(tmp_path, recording, "fail", {"build": "true"},
                                      {"USERS_SRC": "admins"})
    assert p.returncode == 2, _explain(p, report)
    replay = _step(report, "Replay")
    assert replay["outcome"] == "success" and replay["outputs"]["exit-code"] == "2"
    assert _step(report, "Upload")["outcome"] == "success"
    last = _step(report, "Fail on")
    assert last["outcome"] == "failure" and last["exit_code"] == 2, _explain(p, report)
    assert "::error::timetracer replay failed (exit 2): " in p.stderr, p.stderr
    _check_uploaded(uploaded, "fail", 2, 1)


def _release(tmp_path, version, corrupt=False):
    """A release as docs/ci.md describes it, from the built binaries."""
    arch = os.uname().machine
    name = "timetracer-%s-%s-linux" % (version, arch)
    rel = tmp_path / "release"
    rel.mkdir(exist_ok=True)
    tarball = rel / (name + ".tar.gz")
    with tarfile.open(tarball, "w:gz") as t:
        for b in ("timetracer-agent", "timetracer"):
            t.add(os.path.join(REPO, "target", "release", b), arcname="%s/%s" % (name, b))
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if corrupt:
        digest = "0" * 64
    (rel / (name + ".tar.gz.sha256")).write_text("%s  %s\n" % (digest, tarball.name))
    return "file://%s/timetracer-{version}-{arch}-linux.tar.gz" % rel


def test_release_path_checks_the_checksum(tmp_path, recording):
    url = _release(tmp_path, "0.1.0")
    p, report, uploaded = _run_action(tmp_path, recording, "release",
                                      {"version": "0.1.0", "release-url": url})
    assert p.returncode == 0, _explain(p, report)
    agent = _step(report, "Install")["outputs"]["agent"]
    assert agent.endswith("/timetracer-0.1.0/timetracer-agent"), agent
    _check_uploaded(uploaded, "release", 2, 0)

    url = _release(tmp_path, "0.1.0", corrupt=True)
    p, report, _ = _run_action(tmp_path, recording, "corrupt",
                               {"version": "0.1.0", "release-url": url})
    assert p.returncode == 1, _explain(p, report)
    assert "does not match its .sha256" in p.stderr
    assert _step(report, "Replay")["outcome"] == "skipped"


def test_neither_version_nor_build_names_both(tmp_path, recording):
    p, report, _ = _run_action(tmp_path, recording, "none", {})
    assert p.returncode == 1, _explain(p, report)
    assert "set the 'version' input (e.g. 0.1.0) or 'build: true'" in p.stderr
    assert _step(report, "Replay")["outcome"] == "skipped"
    # The verdict step still runs (always()) and says the replay did not run.
    assert "the replay did not run" in p.stderr
