"""FastAPI app for the redaction end-to-end test (issue 19, item 4), the asyncpg half of
secrets_app.py: it binds a password and a token as PostgreSQL parameters (asyncpg: extended
protocol, binary rows), stores them and reads them back, and keeps a session token in Redis
(redis.asyncio).

Run: PG_* / REDIS_* environment (see db_fastapi_app.py) plus SECRET_PASSWORD and SECRET_TOKEN,
     uvicorn secrets_async_app:app --host 127.0.0.1 --port P

The response never contains the secrets (see secrets_app.py).
"""

import os
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI

PASSWORD = os.environ["SECRET_PASSWORD"]
TOKEN = os.environ["SECRET_TOKEN"]

state = {}


async def _no_reset(_conn):
    return None


@asynccontextmanager
async def lifespan(_app):
    # One pooled connection, no reset query: the same calls in recording and replay.
    state["pool"] = await asyncpg.create_pool(
        host=os.environ.get("PG_HOST", "127.0.0.1"), port=int(os.environ["PG_PORT"]),
        user=os.environ["PG_USER"], password=os.environ["PG_PASSWORD"],
        database=os.environ["PG_DB"], min_size=1, max_size=1, reset=_no_reset)
    state["redis"] = aioredis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]),
                                    password=os.environ["REDIS_PASSWORD"], protocol=2,
                                    decode_responses=True)
    try:
        yield
    finally:
        await state["redis"].aclose()
        await state["pool"].close()


app = FastAPI(lifespan=lifespan)


@app.get("/signup")
async def signup(user: str):
    out = {"user": user}
    async with state["pool"].acquire() as conn:
        # The schema inside the request: replay answers only what a request recorded.
        await conn.execute("CREATE TABLE IF NOT EXISTS accounts_async (id serial PRIMARY KEY, "
                           "name text UNIQUE, password text, token text)")
        await conn.execute("DELETE FROM accounts_async WHERE name = $1", user)
        await conn.execute("INSERT INTO accounts_async (name, password, token) VALUES ($1, $2, $3)",
                           user, PASSWORD, "pending")
        await conn.execute("UPDATE accounts_async SET token = $1 WHERE name = $2", TOKEN, user)
        out["hit"] = await conn.fetchval(
            "SELECT count(*) FROM accounts_async WHERE name = $1 AND password = $2", user, PASSWORD)
        rows = await conn.fetch("SELECT name, password, token FROM accounts_async WHERE name = $1", user)
        out["names"] = [r["name"] for r in rows]
    r = state["redis"]
    await r.set("session:" + user, TOKEN, ex=300)
    out["session_found"] = await r.get("session:" + user) is not None
    return out
