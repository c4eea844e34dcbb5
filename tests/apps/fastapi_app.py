"""FastAPI app for the timetracer end-to-end tests.

Run: UPSTREAM_URL=http://127.0.0.1:PORT uvicorn fastapi_app:app --port P

One shared httpx.AsyncClient (keep-alive pool) talks to the upstream. Every endpoint
that calls the upstream returns {"calls": [{"url", "status", "sha256", "len"}, ...]}
describing exactly the bytes it received (ground truth from the app's side).
"""

import hashlib
import os
import sys
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081").rstrip("/")
state = {}


@asynccontextmanager
async def lifespan(_app):
    # UPSTREAM_CA: the test CA of an HTTPS upstream (certificate verification stays on).
    verify = os.environ.get("UPSTREAM_CA") or True
    state["client"] = httpx.AsyncClient(base_url=UPSTREAM, timeout=30.0, verify=verify)
    try:
        yield
    finally:
        await state["client"].aclose()


app = FastAPI(lifespan=lifespan)

# Replay's crash handling (issue 26 item 3): with CRASH_ON_PATH set, a request to that path
# kills the process before answering, as a segfaulting extension or an OOM kill would.
CRASH_ON_PATH = os.environ.get("CRASH_ON_PATH")
if CRASH_ON_PATH:

    @app.middleware("http")
    async def crash_on_path(request: Request, call_next):
        if request.url.path == CRASH_ON_PATH:
            sys.stderr.write("fatal: simulated crash on %s\n" % request.url.path)
            sys.stderr.flush()
            os._exit(3)
        return await call_next(request)


def observed(resp, body):
    return {
        "url": str(resp.url),
        "status": resp.status_code,
        "sha256": hashlib.sha256(body).hexdigest(),
        "len": len(body),
    }


async def get(path):
    resp = await state["client"].get(path)
    return resp, observed(resp, resp.content)


@app.get("/users/{uid}")
async def users(uid: str):
    # USERS_SRC changes the upstream query (replay tests change the app's behaviour with it).
    src = os.environ.get("USERS_SRC", "users")
    _, call = await get("/json/%s?src=%s" % (uid, src))
    return {"calls": [call]}


@app.get("/text")
async def text():
    _, call = await get("/text")
    return {"calls": [call]}


@app.get("/big")
async def big():
    _, call = await get("/big")
    return {"calls": [call]}


@app.get("/chunked")
async def chunked():
    parts = []
    async with state["client"].stream("GET", "/chunked") as resp:
        async for part in resp.aiter_raw():
            parts.append(part)
    return {"calls": [observed(resp, b"".join(parts))]}


@app.get("/fail")
async def fail():
    resp, call = await get("/fail")
    return JSONResponse(
        status_code=502, content={"upstream_status": resp.status_code, "calls": [call]}
    )


@app.get("/multi")
async def multi():
    calls = []
    for path in ("/json/1", "/text", "/json/2"):
        _, call = await get(path)
        calls.append(call)
    return {"calls": calls}


@app.get("/plain")
async def plain():
    return {"calls": [], "hello": "world"}


@app.get("/boom")
async def boom():
    return {"value": 1 / 0}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    resp = await state["client"].post(
        "/echo", content=body, headers={"content-type": "application/json"}
    )
    return {"calls": [observed(resp, resp.content)]}
