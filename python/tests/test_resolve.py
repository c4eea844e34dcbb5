"""Recorded hostnames resolve to their recorded addresses, with getaddrinfo's own semantics."""

import pytest
from conftest import has_module, run_json

HOSTS = {
    "api.recorded.test": ["127.0.0.1", "::1"],
    "V4only.Recorded.Test.": ["127.0.0.2", "127.0.0.3"],
    "v6only.recorded.test": ["::1"],
    "xn--bcher-kva.recorded.test": ["127.0.0.4"],
}


@pytest.fixture
def env(hosts_file):
    return {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_HOSTS": hosts_file(HOSTS)}


# The child compares the hook's answer for a name with the real getaddrinfo's answer for the
# recorded numeric addresses (what DNS returning those addresses would give), for many argument
# combinations, and reports the differences.
SHAPES = """
    import json, socket
    real = socket.getaddrinfo.__wrapped__
    HOSTS = %r

    def expected(addrs, port, family, stype, proto, flags):
        out = []
        for a in addrs:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            if family not in (0, fam):
                continue
            out += real(a, port, fam, stype, proto, (flags | socket.AI_NUMERICHOST) & ~socket.AI_CANONNAME)
        return out

    def outcome(fn, *args):
        try:
            return ["ok", [list(map(lambda x: list(x) if isinstance(x, tuple) else x, t)) for t in fn(*args)]]
        except Exception as e:
            return ["error", type(e).__name__, getattr(e, "errno", None)]

    diffs = []
    count = 0
    for name, spellings in (
        ("api.recorded.test", ["api.recorded.test", "API.Recorded.Test", "api.recorded.test.", b"api.recorded.test"]),
        ("v4only.recorded.test", ["v4only.recorded.test", "V4ONLY.recorded.test."]),
        ("v6only.recorded.test", ["v6only.recorded.test"]),
    ):
        addrs = HOSTS[name] if name in HOSTS else [a for k, v in HOSTS.items() if k.lower().rstrip(".") == name for a in v]
        for host in spellings:
            for port in (None, 0, 443, "443", "https", "http"):
                for family in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
                    for stype in (0, socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        for proto in (0, socket.IPPROTO_TCP):
                            for flags in (0, socket.AI_PASSIVE, socket.AI_ADDRCONFIG):
                                count += 1
                                got = outcome(socket.getaddrinfo, host, port, family, stype, proto, flags)
                                want = outcome(expected, addrs, port, family, stype, proto, flags)
                                if want == ["ok", []]:
                                    want = ["error", "gaierror", socket.EAI_ADDRFAMILY]
                                if got != want:
                                    diffs.append([repr(host), port, family, stype, proto, flags, got, want])
    print(json.dumps({"count": count, "diffs": diffs[:10]}))
"""


def test_getaddrinfo_matches_the_c_library_for_recorded_addresses(env):
    out, _ = run_json(SHAPES % (HOSTS,), env)
    assert out["count"] > 1000
    assert out["diffs"] == []


def test_getaddrinfo_details(env):
    code = """
        import json, socket
        r = {}
        gai = socket.getaddrinfo
        r["kw"] = gai(host="api.recorded.test", port=80, family=socket.AF_INET, type=socket.SOCK_STREAM)
        r["canon"] = [t[3] for t in gai("API.recorded.test.", 80, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)]
        r["v4mapped"] = gai("v4only.recorded.test", 80, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED)
        try:
            gai("v4only.recorded.test", 80, socket.AF_INET6, socket.SOCK_STREAM)
        except socket.gaierror as e:
            r["v6_of_v4only"] = [e.errno == socket.EAI_ADDRFAMILY, str(e)]
        try:
            gai("api.recorded.test", "no-such-service", 0, socket.SOCK_STREAM)
        except socket.gaierror as e:
            r["bad_service"] = e.errno == socket.EAI_SERVICE
        try:
            gai("api.recorded.test", 80, 0, 0, 0, socket.AI_NUMERICHOST)
        except socket.gaierror as e:
            r["numerichost"] = e.errno == socket.EAI_NONAME
        r["localhost"] = gai("localhost", 80) == socket.getaddrinfo.__wrapped__("localhost", 80)
        try:
            gai("not-recorded.recorded.test", 80)
            r["unrecorded"] = "resolved?!"
        except socket.gaierror as e:
            r["unrecorded"] = "gaierror"
        r["idna"] = gai("B\u00fccher.recorded.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        r["byname"] = socket.gethostbyname("V4ONLY.recorded.test.")
        r["byname_ex"] = socket.gethostbyname_ex("api.recorded.test")
        r["byaddr"] = socket.gethostbyaddr("127.0.0.2")
        r["byname_localhost"] = socket.gethostbyname("localhost")
        try:
            socket.gethostbyname("v6only.recorded.test")
        except socket.gaierror as e:
            r["byname_v6only"] = "gaierror"
        # Listening on the second recorded address: the first one is refused, then tried next.
        s = socket.create_server(("127.0.0.3", 0))
        port = s.getsockname()[1]
        c = socket.create_connection(("v4only.recorded.test", port), timeout=5)
        r["create_connection"] = c.getpeername()[0]
        c.close(); s.close()
        print(json.dumps(r))
    """
    r, _ = run_json(code, env)
    assert r["kw"] == [[2, 1, 6, "", ["127.0.0.1", 80]]]
    assert r["canon"] == ["api.recorded.test", ""]
    assert [t[4][0] for t in r["v4mapped"]] == ["::ffff:127.0.0.2", "::ffff:127.0.0.3"]
    assert r["v6_of_v4only"][0] is True
    assert r["bad_service"] is True
    assert r["numerichost"] is True
    assert r["localhost"] is True
    assert r["unrecorded"] == "gaierror"
    assert r["idna"] == "127.0.0.4"
    assert r["byname"] == "127.0.0.2"
    assert r["byname_ex"] == ["api.recorded.test", [], ["127.0.0.1"]]
    assert r["byaddr"] == ["v4only.recorded.test", [], ["127.0.0.2"]]
    assert r["byname_localhost"] == "127.0.0.1"
    assert r["byname_v6only"] == "gaierror"
    assert r["create_connection"] == "127.0.0.3"


ASYNC = """
    import asyncio, json, socket, sys

    async def main():
        loop = asyncio.get_running_loop()
        out = {"loop": type(loop).__module__ + "." + type(loop).__name__}
        out["getaddrinfo"] = [list(t[4][:2]) for t in await loop.getaddrinfo("API.recorded.test.", 443, type=socket.SOCK_STREAM)]
        got = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        out["localhost"] = sorted(got) == sorted(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))

        async def handle(reader, writer):
            writer.write(b"hi " + (await reader.readline())); await writer.drain(); writer.close()

        # On the second recorded address of v4only: the first is refused, the next one is tried.
        server = await asyncio.start_server(handle, "127.0.0.3", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("v4only.recorded.test", port)
        writer.write(b"there\\n"); await writer.drain()
        out["open_connection"] = (await reader.read()).decode()
        out["peer"] = writer.get_extra_info("peername")[0]
        writer.close()

        server1 = await asyncio.start_server(handle, "127.0.0.1", 0)
        port1 = server1.sockets[0].getsockname()[1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("api.recorded.test", port1))
        await loop.sock_sendall(sock, b"sock\\n")
        out["sock_connect"] = (await loop.sock_recv(sock, 100)).decode()
        sock.close()

        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("v4only.recorded.test", 9))
        out["datagram"] = transport.get_extra_info("peername")[0]
        transport.close()
        server.close()
        server1.close()
        return out

    if sys.argv[1] == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
        out = loop.run_until_complete(main())
        import timetracer_hook
        out["state"] = timetracer_hook.active()["uvloop"]
    else:
        out = asyncio.run(main())
    print(json.dumps(out))
"""


@pytest.mark.parametrize("flavour", ["asyncio", "uvloop"])
def test_event_loops(env, flavour):
    if flavour == "uvloop" and not has_module("uvloop"):
        pytest.skip("uvloop is not installed")
    r, _ = run_json(ASYNC, env, args=[flavour])
    if flavour == "uvloop":
        assert r["loop"].startswith("uvloop"), r["loop"]
        assert r["state"] is True
    assert r["getaddrinfo"] == [["127.0.0.1", 443], ["::1", 443]]
    assert r["localhost"] is True
    assert r["open_connection"] == "hi there\n"
    assert r["peer"] == "127.0.0.3"
    assert r["sock_connect"] == "hi sock\n"
    assert r["datagram"] in ("127.0.0.2", "127.0.0.3")


def test_bad_hosts_file_is_reported(hosts_file, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"api.recorded.test": ["not-an-ip"]}')
    from conftest import run_py

    p = run_py("print('alive')", {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_HOSTS": str(bad)})
    assert p.returncode == 0 and p.stdout == "alive\n"
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("timetracer-hook: TIMETRACER_REPLAY_HOSTS=")
    assert "'not-an-ip' is not an IP address" in lines[0]
    assert "resolved through DNS" in lines[0]
