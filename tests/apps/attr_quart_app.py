"""Quart app for the attribution end-to-end test (issue #18), served by hypercorn.

Quart runs each request's handler in a task of its own, created inside hypercorn's app task.
Per request `/r/<rid>` (the rid rides in every call's query, see attr_app.py): `a` in the handler,
`b`, `c` as `asyncio.gather` children, `t` in an `asyncio.to_thread` worker.
"""

import asyncio

import attr_deps
from attr_deps import blocking_dep
from quart import Quart, request

app = Quart(__name__)
client = attr_deps.new_client()


async def dep(rid, tag):
    await attr_deps.dep(client, rid, tag)


@app.route("/r/<rid>", methods=["GET", "POST"])
async def handle(rid):
    body = await request.get_data()
    await dep(rid, "a")
    await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
    await asyncio.to_thread(blocking_dep, rid, "t")
    return f"{rid} {len(body)}\n"
