"""Connect redirection without the agent: ``TIMETRACER_REPLAY_REDIRECT=/path/routes.json``.

``timetracer-agent replay`` sends the app's connects to its mock servers from the kernel (cgroup
BPF, root only). ``pytest-timetracer`` without root has no such power, so the app's own Python
does it: ``socket.socket.connect`` and ``connect_ex`` look the destination up in a table of
recorded destinations (``{"10.0.0.9:8443": "127.0.0.1:40123", "[::1]:80": ...}``) and connect to
the mock instead. Every client that connects through Python's ``socket`` module is covered:
``http.client``/urllib, urllib3/requests, httpx (sync and asyncio: asyncio's ``sock_connect``
calls ``socket.connect``), aiohttp. uvloop connects in C (libuv), so ``uvloop.Loop
.create_connection`` is wrapped when uvloop is imported: a destination in the table, by address
or by recorded hostname (``"api.internal:443"`` keys), goes to its mock; TLS keeps the hostname
for SNI and verification. Not covered: C libraries that connect for themselves (libpq,
libmysqlclient, libcurl) and ``_socket.socket`` objects made without the ``socket`` module.
"""

import ipaddress
import json
import socket

_V4_MAPPED = "::ffff:"


def _split(text):
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _norm(host), int(port)


def _norm(host):
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped if mapped is not None else ip)


def install(path, state, warn, post_import):
    """Patches ``socket.socket`` (and uvloop once imported); returns the routes as
    ``{"ip:port": "ip:port"}``."""
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError("expected an object of \"ip:port\": \"ip:port\"")
    routes = {}
    for src, dst in table.items():
        routes[_split(src)] = _split(dst)

    def route(sock, address):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return address
        if not (isinstance(address, tuple) and len(address) >= 2):
            return address
        try:
            dst = routes.get((_norm(str(address[0])), int(address[1])))
        except (TypeError, ValueError):
            return address
        if dst is None:
            return address
        host, port = dst
        if sock.family == socket.AF_INET6 and ":" not in host:
            host = _V4_MAPPED + host
        return (host, port) + tuple(address[2:])

    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex

    def redirected_connect(self, address):
        return connect(self, route(self, address))

    def redirected_connect_ex(self, address):
        return connect_ex(self, route(self, address))

    redirected_connect.__wrapped__ = connect
    redirected_connect_ex.__wrapped__ = connect_ex
    socket.socket.connect = redirected_connect
    socket.socket.connect_ex = redirected_connect_ex
    post_import("uvloop", lambda m: _patch_uvloop(m, routes))
    return {"%s:%d" % k: "%s:%d" % v for k, v in routes.items()}


def _patch_uvloop(uvloop, routes):
    Loop = uvloop.Loop
    if getattr(Loop, "_timetracer_redirected", False):
        return
    orig = Loop.create_connection

    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        if kwargs.get("sock") is None and host is not None and port is not None:
            try:
                dst = routes.get((_norm(str(host)), int(port)))
            except (TypeError, ValueError):
                dst = None
            if dst is not None:
                if kwargs.get("ssl") and kwargs.get("server_hostname") is None:
                    kwargs["server_hostname"] = host  # what uvloop would have used
                host, port = dst
        return await orig(self, protocol_factory, host, port, **kwargs)

    create_connection.__name__ = orig.__name__
    create_connection.__qualname__ = "Loop." + orig.__name__
    create_connection.__doc__ = orig.__doc__
    create_connection.__wrapped__ = orig
    Loop.create_connection = create_connection
    Loop._timetracer_redirected = True
