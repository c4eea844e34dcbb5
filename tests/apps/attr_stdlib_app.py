"""Stdlib-only asyncio HTTP server for the attribution tests across CPython builds (issue #7).

Usage: python attr_stdlib_app.py PORT UPSTREAM_HOST UPSTREAM_PORT

A `Protocol` server (like uvicorn): `data_received` parses each request head and starts one
task per request with `loop.create_task`. Each `/r/<rid>` makes the calls `a` (in the task),
`b`, `c` (gather children) and `t` (asyncio.to_thread), each carrying the rid in its query, on
fresh connections to the upstream. Runs on CPython 3.9-3.13 without third-party packages, so
the pyenv builds and Debian's stripped /usr/bin/python3.11 can all serve it.
"""

import asyncio
import http.client
import os
import random
import signal
import sys

PORT, UP_HOST, UP_PORT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
TASKS = set()


async def dep(rid, tag):
    await asyncio.sleep(random.random() * 0.02)
    r, w = await asyncio.open_connection(UP_HOST, UP_PORT)
    w.write(
        f"GET /json/dep?rid={rid}&tag={tag} HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n".encode()
    )
    await w.drain()
    while await r.read(65536):
        pass
    w.close()


def blocking_dep(rid, tag):
    c = http.client.HTTPConnection(UP_HOST, UP_PORT, timeout=10)
    c.request("GET", f"/json/dep?rid={rid}&tag={tag}")
    c.getresponse().read()
    c.close()


class Server(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            rid = head.split(b" ")[1].decode().rsplit("/", 1)[-1]
            t = asyncio.get_running_loop().create_task(self.handle(rid))
            # The loop keeps only weak references to tasks.
            TASKS.add(t)
            t.add_done_callback(TASKS.discard)

    async def handle(self, rid):
        await dep(rid, "a")
        await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
        await asyncio.to_thread(blocking_dep, rid, "t")
        body = f"{rid}\n".encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", PORT, backlog=512)
    async with server:
        await server.serve_forever()


# Stop at once on SIGINT/SIGTERM (the agent forwards them); nothing to clean up.
signal.signal(signal.SIGINT, lambda *_: os._exit(0))
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
asyncio.run(main())
