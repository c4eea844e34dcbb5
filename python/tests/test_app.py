"""A real app under the hook: the bundled FastAPI test app (tests/apps) on uvicorn, calling its
upstream through a recorded hostname, with the clock frozen."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import PYTHON_DIR, child_env, free_port, has_module

APPS = os.path.join(os.path.dirname(PYTHON_DIR), "tests", "apps")


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fastapi_app_on_uvicorn(loop, tmp_path, certs):
    for m in ("fastapi", "uvicorn", "httpx") + (("uvloop",) if loop == "uvloop" else ()):
        if not has_module(m):
            pytest.skip("%s is not installed" % m)
    up_port, app_port = free_port(), free_port()
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"upstream.recorded.test": ["127.0.0.1"]}))
    env = {
        "TIMETRACER_REPLAY": "1",
        "TIMETRACER_REPLAY_CA": certs["ca"],
        "TIMETRACER_REPLAY_HOSTS": str(hosts),
        "TIMETRACER_FREEZE_TIME": "2024-01-02T03:04:05Z",
        "UPSTREAM_URL": "http://upstream.recorded.test:%d" % up_port,
    }
    upstream = subprocess.Popen(
        [sys.executable, "upstream.py", str(up_port), str(tmp_path / "up.log")],
        cwd=APPS,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app_log = open(tmp_path / "app.log", "w+")
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(app_port),
         "--loop", loop],
        cwd=APPS,
        env=child_env(env),
        stdout=app_log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert wait_port(up_port, upstream), "upstream did not start"
        assert wait_port(app_port, app), "app did not start:\n" + open(tmp_path / "app.log").read()
        with urllib.request.urlopen("http://127.0.0.1:%d/users/7" % app_port, timeout=20) as r:
            body = json.loads(r.read())
            date = r.headers["date"]
        assert body["calls"][0]["url"] == "http://upstream.recorded.test:%d/json/7?src=users" % up_port
        assert body["calls"][0]["status"] == 200
        assert date.startswith("Tue, 02 Jan 2024 03:0"), date
    finally:
        for p in (app, upstream):
            p.terminate()
            p.wait(timeout=10)
        app_log.close()
    assert "Traceback" not in open(tmp_path / "app.log").read()
