"""FastAPI app for the timetracer database end-to-end tests (issue 5): asyncpg + redis.asyncio.

Run: PG_HOST=127.0.0.1 PG_PORT=.. PG_USER=.. PG_PASSWORD=.. PG_DB=.. REDIS_PORT=.. \
     REDIS_PASSWORD=.. uvicorn db_fastapi_app:app --host 127.0.0.1 --port P

Every endpoint returns {"ops": [...]}: exactly what it executed, in order, and what came back
(the ground truth the cassette is compared with):
  {"kind": "sql", "lib": "postgres", "sql": TEXT AS SENT, "params": [...], "rows": [[...]],
   "error": {"sqlstate": "42P01"} | null}
  {"kind": "redis", "args": ["SET", "k", "v"], "reply": VALUE | {"error": MESSAGE}}
The asyncpg pool (one connection, opened at startup, no reset query on release) and the Redis
connection pool are shared; connection setup is not part of any request's ops.
"""

import os
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI

state = {}


async def _no_reset(_conn):
    return None


@asynccontextmanager
async def lifespan(_app):
    state["pg"] = await asyncpg.create_pool(
        host=os.environ.get("PG_HOST", "127.0.0.1"),
        port=int(os.environ["PG_PORT"]),
        user=os.environ["PG_USER"],
        password=os.environ["PG_PASSWORD"],
        database=os.environ["PG_DB"],
        min_size=1,
        max_size=1,
        reset=_no_reset,
    )
    state["redis"] = aioredis.Redis(
        host="127.0.0.1",
        port=int(os.environ["REDIS_PORT"]),
        password=os.environ["REDIS_PASSWORD"],
        protocol=2,
        decode_responses=True,
    )
    try:
        yield
    finally:
        await state["redis"].aclose()
        await state["pg"].close()


app = FastAPI(lifespan=lifespan)


def cell(v):
    return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)


async def sql(ops, conn, text, *params, fetch=True):
    op = {"kind": "sql", "lib": "postgres", "sql": text, "params": [cell(p) for p in params],
          "rows": [], "error": None}
    ops.append(op)
    try:
        if fetch:
            rows = await conn.fetch(text, *params)
            op["rows"] = [[cell(v) for v in r.values()] for r in rows]
        else:
            await conn.execute(text, *params)
    except asyncpg.PostgresError as e:
        op["error"] = {"sqlstate": e.sqlstate, "message": str(e)}


def reply(v):
    if isinstance(v, (list, tuple)):
        return [reply(x) for x in v]
    if isinstance(v, Exception):
        return {"error": str(v)}
    return v


@app.get("/pg/select")
async def pg_select(id: int = 1):
    ops = []
    async with state["pg"].acquire() as conn:
        await sql(ops, conn, "SELECT id, name FROM items WHERE id = $1", id)
        # NAME_FILTER / REDIS_KEY_PREFIX change what the app sends (replay tests use them).
        name_filter = os.environ.get("NAME_FILTER", "zzz")
        await sql(ops, conn, "SELECT id, name FROM items WHERE id >= $1 AND name <> $2 ORDER BY id", 1, name_filter)
    return {"ops": ops}


@app.get("/pg/insert")
async def pg_insert(note: str = "hello"):
    ops = []
    async with state["pg"].acquire() as conn:
        # An explicit transaction: asyncpg sends BEGIN/COMMIT as simple queries.
        await sql(ops, conn, "BEGIN", fetch=False)
        await sql(ops, conn, "INSERT INTO audit (note) VALUES ($1) RETURNING note", note)
        await sql(ops, conn, "COMMIT", fetch=False)
    return {"ops": ops}


@app.get("/pg/fail")
async def pg_fail():
    ops = []
    async with state["pg"].acquire() as conn:
        await sql(ops, conn, "SELECT * FROM no_such_table WHERE id = $1", 1)
        await sql(ops, conn, "SELECT 1 / $1::int", 0)
    return {"ops": ops}


async def rcmd(ops, client, *args):
    try:
        v = await client.execute_command(*args)
    except Exception as e:  # redis.ResponseError
        v = e
    ops.append({"kind": "redis", "args": list(args), "reply": reply(v)})


@app.get("/redis/basic")
async def redis_basic(tag: str = "x"):
    ops = []
    r = state["redis"]
    prefix = os.environ.get("REDIS_KEY_PREFIX", "fa:")
    await rcmd(ops, r, "SET", prefix + tag, "value-" + tag)
    await rcmd(ops, r, "GET", "fa:" + tag)
    await rcmd(ops, r, "GET", "fa:missing")
    await rcmd(ops, r, "INCR", "fa:" + tag)
    await rcmd(ops, r, "DEL", "fa:" + tag)
    return {"ops": ops}


@app.get("/big")
async def big(tag: str = "x", size: int = 5000, rows: int = 200):
    """A Redis value and a PostgreSQL row set larger than a small `--max-body` (issue #17)."""
    ops = []
    r = state["redis"]
    value = ("v" * size)[:size]
    await rcmd(ops, r, "SET", "fb:" + tag, value)
    await rcmd(ops, r, "GET", "fb:" + tag)
    await rcmd(ops, r, "DEL", "fb:" + tag)
    async with state["pg"].acquire() as conn:
        await sql(ops, conn, "SELECT g, repeat('r', 100) AS pad FROM generate_series(1, $1::int) g", rows)
    return {"ops": ops}


@app.get("/redis/pipeline")
async def redis_pipeline(tag: str = "x"):
    ops = []
    cmds = [("SET", "fp:" + tag, "1"), ("INCR", "fp:" + tag), ("GET", "fp:" + tag),
            ("RPUSH", "fpl:" + tag, "a", "b"), ("LRANGE", "fpl:" + tag, "0", "-1"),
            ("DEL", "fp:" + tag, "fpl:" + tag)]
    pipe = state["redis"].pipeline(transaction=False)
    for c in cmds:
        pipe.execute_command(*c)
    res = await pipe.execute(raise_on_error=False)
    for c, v in zip(cmds, res):
        ops.append({"kind": "redis", "args": list(c), "reply": reply(v)})
    return {"ops": ops}


@app.get("/mixed")
async def mixed(tag: str = "x"):
    ops = []
    async with state["pg"].acquire() as conn:
        await sql(ops, conn, "SELECT name FROM items WHERE id = $1", 2)
        await rcmd(ops, state["redis"], "SET", "fm:" + tag, "from-pg")
        await sql(ops, conn, "SELECT count(*)::int FROM items WHERE id > $1", 0)
        await rcmd(ops, state["redis"], "DEL", "fm:" + tag)
    return {"ops": ops}


@app.get("/pg_http")
async def pg_http():
    """A database query and an HTTP call to UPSTREAM_URL (hybrid replay: HTTP stays live)."""
    import httpx

    ops = []
    async with state["pg"].acquire() as conn:
        await sql(ops, conn, "SELECT name FROM items WHERE id = $1", 3)
    async with httpx.AsyncClient(timeout=30.0) as client:
        resp = await client.get(os.environ["UPSTREAM_URL"].rstrip("/") + "/json/5")
    ops.append({"kind": "http", "status": resp.status_code, "len": len(resp.content)})
    return {"ops": ops}
