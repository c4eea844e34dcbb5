"""FastAPI app for the attribution end-to-end test (issue #7).

Every dependency call carries the inbound request's own id (`rid`, from the path) in its query,
so a cassette can be scored against ground truth. Patterns, per request `/r/{rid}`:
  a      pooled httpx.AsyncClient call in the request task (often in a task's first step)
  b, c   asyncio.gather children
  t      asyncio.to_thread worker (blocking http.client)
  bg     BackgroundTasks call after the response        (?bg=1)
  later  task created from a loop.call_later callback   (?later=1)
`/s/{rid}`: sync endpoint (anyio worker thread), one blocking call `s`.
`/pool/{rid}`: a raw ThreadPoolExecutor via run_in_executor (no context copy): `pool` must come
out ambiguous (pool-thread), never attributed.
Handlers sleep a random 0-30 ms between steps to interleave concurrent requests.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import attr_deps
from attr_deps import blocking_dep
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()
client = attr_deps.new_client()
raw_pool = ThreadPoolExecutor(max_workers=2)
# The loop keeps only weak references to tasks: keep the call_later ones alive.
LATER = set()


def start_later(rid):
    t = asyncio.ensure_future(dep(rid, "later"))
    LATER.add(t)
    t.add_done_callback(LATER.discard)


async def dep(rid, tag):
    await attr_deps.dep(client, rid, tag)


@app.api_route("/r/{rid}", methods=["GET", "POST"])
async def handle(rid: str, request: Request, background: BackgroundTasks, bg: int = 0, later: int = 0):
    body = await request.body()
    await dep(rid, "a")
    await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
    await asyncio.to_thread(blocking_dep, rid, "t")
    if bg:
        background.add_task(dep, rid, "bg")
    if later:
        loop = asyncio.get_running_loop()
        loop.call_later(0.005, start_later, rid)
    return PlainTextResponse(f"{rid} {len(body)}\n")


@app.get("/s/{rid}")
def sync_handle(rid: str):
    blocking_dep(rid, "s")
    return PlainTextResponse(f"{rid}\n")


@app.get("/pool/{rid}")
async def pool_handle(rid: str):
    await asyncio.get_running_loop().run_in_executor(raw_pool, blocking_dep, rid, "pool")
    return PlainTextResponse(f"{rid}\n")
