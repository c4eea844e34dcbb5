"""TIMETRACER_REPLAY_REDIRECT: connects to recorded destinations go to the mock (pytest-timetracer
without root). A real server on one port; the child connects to another, recorded, port where
nothing listens, blocking and through asyncio, and reaches the server."""

import json
import socketserver
import threading

import pytest

from conftest import free_port, run_json


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"mock:" + self.request.recv(64))


@pytest.fixture
def echo():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


CHILD = """
import asyncio, json, socket, sys
import timetracer_hook
port = int(sys.argv[1])
out = {"active": timetracer_hook.active()}
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"blocking"); out["blocking"] = s.recv(64).decode(); s.close()
s6 = socket.socket(socket.AF_INET6)
try:
    s6.connect(("::ffff:127.0.0.1", port)); s6.sendall(b"v6"); out["v6"] = s6.recv(64).decode()
finally:
    s6.close()
async def main():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"asyncio"); await w.drain(); data = await r.read(64); w.close()
    return data.decode()
out["asyncio"] = asyncio.run(main())
# Not recorded: untouched (refused, nothing listens there).
other = socket.socket()
out["other"] = other.connect_ex(("127.0.0.1", int(sys.argv[2])))
other.close()
print(json.dumps(out))
"""


def test_recorded_destinations_reach_the_mock(tmp_path, echo):
    recorded, other = free_port(), free_port()
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({"127.0.0.1:%d" % recorded: "127.0.0.1:%d" % echo}))
    out, p = run_json(
        CHILD,
        {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_REDIRECT": str(routes)},
        args=(str(recorded), str(other)),
    )
    assert out["active"]["redirect"] == {"127.0.0.1:%d" % recorded: "127.0.0.1:%d" % echo}
    assert out["blocking"] == "mock:blocking"
    assert out["v6"] == "mock:v6"
    assert out["asyncio"] == "mock:asyncio"
    assert out["other"] != 0, "an unrecorded destination is not redirected"
    assert p.stderr == ""


def test_a_bad_table_is_one_line_and_nothing_else(tmp_path):
    bad = tmp_path / "routes.json"
    bad.write_text("[1, 2]")
    out, p = run_json(
        "import json, timetracer_hook; print(json.dumps(timetracer_hook.active()))",
        {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_REDIRECT": str(bad)},
    )
    assert out["redirect"] == {}
    assert p.stderr.count("timetracer-hook:") == 1, p.stderr
    assert "connects are not redirected" in p.stderr
