"""Plaintext-to-TLS tunnel for the end-to-end tests of apps that serve HTTPS themselves.

Run: python tls_tunnel.py LISTEN_PORT TARGET_PORT CA_FILE [SERVER_NAME]

Each plaintext connection accepted on 127.0.0.1:LISTEN_PORT becomes one TLS connection to
127.0.0.1:TARGET_PORT (certificate verified against CA_FILE, SNI = SERVER_NAME, default
"localhost"), so a test client's keep-alive connections map one-to-one onto TLS connections
to the app. Bytes are forwarded unchanged in both directions.

One asyncio loop drives every connection: an OpenSSL connection must not be read and written
from two threads at once (a thread per direction, as this tunnel first did, hung now and then
when a TLS 1.3 session ticket arrived while the other thread was writing).
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer, done):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError, ssl.SSLError):
        pass
    finally:
        done.set()


async def handle(client_r, client_w, target_port, ctx, name):
    try:
        app_r, app_w = await asyncio.open_connection(
            "127.0.0.1", target_port, ssl=ctx, server_hostname=name
        )
    except (OSError, ssl.SSLError) as e:
        print("tunnel: connect failed: %s" % e, file=sys.stderr, flush=True)
        client_w.close()
        return
    # Either side closing ends both, as a plain TCP proxy without half-close would.
    done = asyncio.Event()
    tasks = [
        asyncio.create_task(pipe(client_r, app_w, done)),
        asyncio.create_task(pipe(app_r, client_w, done)),
    ]
    await done.wait()
    for t in tasks:
        t.cancel()
    for w in (app_w, client_w):
        w.close()
        try:
            await w.wait_closed()
        except (OSError, ConnectionError, ssl.SSLError):
            pass


async def main():
    listen_port, target_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    name = sys.argv[4] if len(sys.argv) > 4 else "localhost"
    ctx = ssl.create_default_context(cafile=ca)
    srv = await asyncio.start_server(
        lambda r, w: handle(r, w, target_port, ctx, name), "127.0.0.1", listen_port, backlog=64
    )
    print("tunnel listening on %d -> %d" % (listen_port, target_port), file=sys.stderr, flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
