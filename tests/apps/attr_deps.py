"""The dependency calls every attribution test app makes (issues #7, #18), in one place.

Every call carries the inbound request's id (`rid`) and a tag in its query, so a cassette can be
scored against ground truth. Used by attr_app.py (FastAPI), attr_quart_app.py,
attr_sanic_app.py and attr_django_app.py.
"""

import asyncio
import http.client
import os
import random

UP = os.environ["UPSTREAM_URL"].rstrip("/")
UP_HOST, UP_PORT = UP.split("://", 1)[1].split(":")


def new_client():
    """A pooled httpx.AsyncClient for the upstream. No connection limit: a call waiting for a
    pooled connection would start late (docs/attribution.md, late_calls); a loaded 2-core
    machine can be slow, and the test is about attribution, not latency."""
    import httpx

    return httpx.AsyncClient(
        base_url=UP,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        timeout=30.0,
    )


async def dep(client, rid, tag):
    """An async call after a random 0-30 ms (concurrent requests interleave)."""
    await asyncio.sleep(random.random() * 0.03)
    r = await client.get(f"/json/dep?rid={rid}&tag={tag}")
    r.raise_for_status()


def blocking_dep(rid, tag):
    """A blocking http.client call on a fresh connection (worker threads)."""
    c = http.client.HTTPConnection(UP_HOST, int(UP_PORT), timeout=10)
    c.request("GET", f"/json/dep?rid={rid}&tag={tag}")
    c.getresponse().read()
    c.close()
