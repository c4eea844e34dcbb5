"""Quart app for the attribution end-to-end test (issue #18), served by hypercorn.

Quart runs each request's handler in a task of its own, created inside hypercorn's app task.
Per request `/r/<rid>` (the rid rides in every call's query, see attr_app.py): `a` in the handler,
`b`, `c` as `asyncio.gather` children, `t` in an `asyncio.to_thread` worker.
"""

import asyncio
import http.client
import os
import random

import httpx
from quart import Quart, request

UP = os.environ["UPSTREAM_URL"].rstrip("/")
UP_HOST, UP_PORT = UP.split("://", 1)[1].split(":")
app = Quart(__name__)
client = httpx.AsyncClient(
    base_url=UP,
    limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    timeout=30.0,
)


async def dep(rid, tag):
    await asyncio.sleep(random.random() * 0.03)
    r = await client.get(f"/json/dep?rid={rid}&tag={tag}")
    r.raise_for_status()


def blocking_dep(rid, tag):
    c = http.client.HTTPConnection(UP_HOST, int(UP_PORT), timeout=10)
    c.request("GET", f"/json/dep?rid={rid}&tag={tag}")
    c.getresponse().read()
    c.close()


@app.route("/r/<rid>", methods=["GET", "POST"])
async def handle(rid):
    body = await request.get_data()
    await dep(rid, "a")
    await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
    await asyncio.to_thread(blocking_dep, rid, "t")
    return f"{rid} {len(body)}\n"
