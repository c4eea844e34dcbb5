"""Child program: fetch https://HOST:PORT/ with many TLS clients; print one JSON line.

Usage: python tls_clients.py HOST PORT CLIENT...   (run in a fresh interpreter by the tests)
Each result: {"ok": bool, "body": str|None, "error": str|None}.
"""

import asyncio
import http.client
import json
import ssl
import sys

HOST, PORT = sys.argv[1], int(sys.argv[2])
URL = "https://%s:%d/" % (HOST, PORT)


def http_client_get(ctx):
    c = http.client.HTTPSConnection(HOST, PORT, timeout=10, context=ctx)
    try:
        c.request("GET", "/")
        return c.getresponse().read()
    finally:
        c.close()


def c_urllib():
    import urllib.request

    with urllib.request.urlopen(URL, timeout=10) as r:
        return r.read()


def c_http_client_default_context():
    return http_client_get(ssl.create_default_context())


def c_sslcontext_bare():
    # As urllib3 builds it: nothing loaded at all, verification on.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return http_client_get(ctx)


def c_load_default_certs():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_default_certs()
    return http_client_get(ctx)


def c_set_default_verify_paths():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_default_verify_paths()
    return http_client_get(ctx)


def c_certifi_cafile():
    import certifi

    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=certifi.where())
    return http_client_get(ctx)


def c_certifi_original_cafile():
    # certifi's own file (not the combined one): trust comes from the context hook alone.
    import certifi

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=getattr(certifi.where, "__wrapped__", certifi.where)())
    return http_client_get(ctx)


def c_requests():
    import requests

    r = requests.get(URL, timeout=10)
    r.raise_for_status()
    return r.content


def c_requests_verify_certifi_path():
    import certifi
    import requests

    r = requests.get(URL, timeout=10, verify=certifi.where())
    r.raise_for_status()
    return r.content


def c_httpx_sync():
    import httpx

    r = httpx.get(URL, timeout=10)
    r.raise_for_status()
    return r.content


async def _httpx_async():
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(URL)
        r.raise_for_status()
        return r.content


def c_httpx_async():
    return asyncio.run(_httpx_async())


async def _asyncio_stream():
    reader, writer = await asyncio.open_connection(HOST, PORT, ssl=ssl.create_default_context())
    writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % HOST.encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


def c_asyncio_open_connection():
    return asyncio.run(_asyncio_stream())


def _uvloop_run(coro_fn):
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


def c_uvloop_httpx_async():
    return _uvloop_run(_httpx_async)


def c_uvloop_open_connection():
    return _uvloop_run(_asyncio_stream)


def main():
    out = {}
    for name in sys.argv[3:]:
        try:
            body = globals()["c_" + name]()
            out[name] = {"ok": body == b"hello from mock", "body": body.decode(errors="replace"), "error": None}
        except Exception as e:
            out[name] = {"ok": False, "body": None, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
