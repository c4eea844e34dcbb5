"""FastAPI app whose asyncpg pool is created in the lifespan (issue 26).

Run: PG_* / REDIS_* environment (see db_fastapi_app.py) uvicorn startup_fastapi_app:app

The lifespan, before the first request: an asyncpg pool of two connections, each initialised
with a JSON type codec (`set_type_codec`: asyncpg's type introspection query runs on each),
a warm-up query, and a Redis flag set and read. What came back is in BOOT, which every
response carries.

STARTUP_WARM=connect: the pool and the Redis client only (a PING), no data read at startup: what
a recording made with `attach` after startup must answer by rule at replay.
"""

import json
import os
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI

BOOT = {}
state = {}


async def _init(conn):
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@asynccontextmanager
async def lifespan(_app):
    state["pg"] = await asyncpg.create_pool(
        host=os.environ.get("PG_HOST", "127.0.0.1"),
        port=int(os.environ["PG_PORT"]),
        user=os.environ["PG_USER"],
        password=os.environ["PG_PASSWORD"],
        database=os.environ["PG_DB"],
        min_size=2,
        max_size=2,
        init=_init,
    )
    data = os.environ.get("STARTUP_WARM", "data") == "data"
    if data:
        BOOT["items"] = await state["pg"].fetchval("SELECT count(*) FROM items")
    state["redis"] = aioredis.Redis(
        host="127.0.0.1",
        port=int(os.environ["REDIS_PORT"]),
        password=os.environ["REDIS_PASSWORD"],
        protocol=2,
        decode_responses=True,
    )
    if data:
        await state["redis"].set("startup:aflag", "on")
        BOOT["redis_flag"] = await state["redis"].get("startup:aflag")
    else:
        BOOT["redis_ping"] = await state["redis"].ping()
    try:
        yield
    finally:
        await state["redis"].aclose()
        await state["pg"].close()


app = FastAPI(lifespan=lifespan)


@app.get("/item")
async def item(id: int = 1):
    name = await state["pg"].fetchval("SELECT name FROM items WHERE id = $1", id)
    doc = await state["pg"].fetchval("SELECT $1::json", {"id": id})
    flag = await state["redis"].get("startup:aflag")
    return {"boot": BOOT, "id": id, "name": name, "doc": doc, "redis": flag}
