"""A hand-written asyncio server with its own task scheme (issue #18, "unknown layout").

Usage: python attr_unknown_app.py PORT UPSTREAM_HOST UPSTREAM_PORT

`asyncio.start_server`: one handler task per connection, created when the connection is
accepted (before any request byte), reads the requests of its keep-alive connection and puts
each on a queue; a pool of worker tasks created at startup takes them, makes the dependency
calls and writes the response through the connection's writer. No task belongs to one request,
so the agent must prove nothing here: every call must be right or `ambiguous`, never a wrong
`exact`. Calls carry the rid: `h` (by the connection handler, before queueing), `w1`, `w2` (by
the worker) on fresh upstream connections.
"""

import asyncio
import os
import random
import signal
import sys

PORT, UP_HOST, UP_PORT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
WORKERS = 4


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


async def worker(queue):
    while True:
        rid, writer, done = await queue.get()
        try:
            await dep(rid, "w1")
            await dep(rid, "w2")
            body = f"{rid}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
        finally:
            done.set_result(None)


def handler_for(queue):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                rid = head.split(b" ")[1].decode().split("?")[0].rsplit("/", 1)[-1]
                await dep(rid, "h")
                done = asyncio.get_running_loop().create_future()
                await queue.put((rid, writer, done))
                await done
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def main():
    queue = asyncio.Queue()
    workers = [asyncio.create_task(worker(queue)) for _ in range(WORKERS)]
    server = await asyncio.start_server(handler_for(queue), "127.0.0.1", PORT, backlog=512)
    async with server:
        await server.serve_forever()
    del workers


signal.signal(signal.SIGINT, lambda *_: os._exit(0))
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
random.seed()
asyncio.run(main())
