"""Sanic app for the attribution end-to-end test (issue #18), run by Sanic's own server.

Sanic's server: one protocol object per connection, a task per request created by the protocol
from the event loop's data callback, the response written from that task. Per request `/r/{rid}`
(the rid rides in every call's query, see attr_app.py): `a` in the request task, `b`, `c` as
`asyncio.gather` children, `t` in an `asyncio.to_thread` worker. Run with `--single-process`
(Sanic's default forks a worker manager; the attribution is the same, the test simpler).
"""

import asyncio

import attr_deps
from attr_deps import blocking_dep
from sanic import Sanic
from sanic.response import text

app = Sanic("attr_sanic")
app.config.REQUEST_MAX_SIZE = 1 << 20
app.config.KEEP_ALIVE_TIMEOUT = 30
client = None


@app.before_server_start
async def open_client(app_, _loop):
    # Made on the server's loop.
    global client
    client = attr_deps.new_client()


async def dep(rid, tag):
    await attr_deps.dep(client, rid, tag)


@app.route("/r/<rid>", methods=["GET", "POST"])
async def handle(request, rid: str):
    body = request.body or b""
    await dep(rid, "a")
    await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
    await asyncio.to_thread(blocking_dep, rid, "t")
    return text(f"{rid} {len(body)}\n")
