"""FastAPI service measured by `cargo xtask bench` (issue #11).

Run: UPSTREAM_URL=http://127.0.0.1:PORT uvicorn bench_app:app --port P --no-access-log

    GET /plain   returns a small JSON object, no dependency call
    GET /dep     makes one httpx call to the upstream (tests/apps/upstream.py, /json/42)

With BENCH_PYTHON_TIMETRACER=1 the Python `timetracer` 1.6.0 middleware records every request
(TIMETRACER_MODE=record, TIMETRACER_DIR=...; its httpx plugin is enabled), exactly as that
tool's documentation sets it up. Otherwise the app is untouched (and is what the kernel agent
attaches to).
"""

import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081").rstrip("/")
PYTHON_TIMETRACER = os.environ.get("BENCH_PYTHON_TIMETRACER") == "1"
state = {}

if PYTHON_TIMETRACER:
    from timetracer.config import TraceConfig
    from timetracer.integrations.fastapi import TimeTracerMiddleware
    from timetracer.plugins.httpx_plugin import enable_httpx

    enable_httpx()


@asynccontextmanager
async def lifespan(_app):
    state["client"] = httpx.AsyncClient(base_url=UPSTREAM, timeout=30.0)
    try:
        yield
    finally:
        await state["client"].aclose()


app = FastAPI(lifespan=lifespan)
if PYTHON_TIMETRACER:
    app.add_middleware(TimeTracerMiddleware, config=TraceConfig.from_env())


@app.get("/plain")
async def plain():
    return {"ok": True}


@app.get("/dep")
async def dep():
    resp = await state["client"].get("/json/42")
    return {"upstream_status": resp.status_code, "len": len(resp.content)}
