"""aiohttp.web app for the attribution end-to-end test (issue #18).

Usage: python attr_aiohttp_app.py PORT      (UPSTREAM_URL, PG_*, MYSQL_*, REDIS_* from the environment)

aiohttp runs one task per connection (`RequestHandler.start`) and creates each request's task
(`_handle_request`) inside it: a layout where the request task is neither the first task of its
connection nor created outside any task. Every dependency call carries the inbound request's
own id (`rid`, from the path), so a cassette can be scored against ground truth:
  a      aiohttp client GET to the upstream, in the request task
  b      aiohttp client GET, an asyncio.gather child
  r      redis.asyncio GET of the key `tt:<rid>:r`, a gather child
  p      asyncpg `SELECT '<rid>:p'`, a gather child (pooled connection)
  m      aiomysql `SELECT '<rid>:m'`, a gather child (pooled connection)
  bg     aiohttp client GET from a task the request creates and that outlives it   (?bg=1)
Handlers sleep a random 0-20 ms between steps to interleave concurrent requests.
"""

import asyncio
import os
import random
import signal
import sys

import aiohttp
import aiomysql
import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

PORT = int(sys.argv[1])
UP = os.environ["UPSTREAM_URL"].rstrip("/")
# Tasks that outlive their request: the loop keeps only weak references.
BACKGROUND = set()


async def dep_http(app, rid, tag):
    await asyncio.sleep(random.random() * 0.02)
    async with app["http"].get(f"{UP}/json/dep?rid={rid}&tag={tag}") as r:
        r.raise_for_status()
        await r.read()


async def dep_redis(app, rid, tag):
    await asyncio.sleep(random.random() * 0.02)
    await app["redis"].get(f"tt:{rid}:{tag}")


async def dep_pg(app, rid, tag):
    await asyncio.sleep(random.random() * 0.02)
    async with app["pg"].acquire() as c:
        # The rid in the SQL text is the ground truth; a text literal needs no parameters.
        await c.fetchval(f"SELECT '{rid}:{tag}'::text")


async def dep_mysql(app, rid, tag):
    await asyncio.sleep(random.random() * 0.02)
    async with app["mysql"].acquire() as c, c.cursor() as cur:
        await cur.execute(f"SELECT '{rid}:{tag}'")
        await cur.fetchall()


async def background(app, rid):
    # Runs after the response was sent.
    await asyncio.sleep(0.05 + random.random() * 0.05)
    await dep_http(app, rid, "bg")


async def handle(request):
    rid = request.match_info["rid"]
    app = request.app
    await request.read()
    await dep_http(app, rid, "a")
    await asyncio.gather(
        dep_http(app, rid, "b"),
        dep_redis(app, rid, "r"),
        dep_pg(app, rid, "p"),
        dep_mysql(app, rid, "m"),
    )
    if request.query.get("bg") == "1":
        t = asyncio.create_task(background(app, rid))
        BACKGROUND.add(t)
        t.add_done_callback(BACKGROUND.discard)
    return web.Response(text=f"{rid}\n")


async def on_startup(app):
    app["http"] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    app["redis"] = aioredis.Redis(
        host="127.0.0.1",
        port=int(os.environ["REDIS_PORT"]),
        password=os.environ["REDIS_PASSWORD"],
        max_connections=200,
    )
    await app["redis"].ping()
    app["pg"] = await asyncpg.create_pool(
        host=os.environ["PG_HOST"],
        port=int(os.environ["PG_PORT"]),
        user=os.environ["PG_USER"],
        password=os.environ["PG_PASSWORD"],
        database=os.environ["PG_DB"],
        min_size=2,
        max_size=60,
        # Unique SQL per call: do not fill the statement cache.
        statement_cache_size=0,
    )
    app["mysql"] = await aiomysql.create_pool(
        host=os.environ["MYSQL_HOST"],
        port=int(os.environ["MYSQL_PORT"]),
        user=os.environ["MYSQL_USER"],
        password=os.environ["MYSQL_PASSWORD"],
        db=os.environ["MYSQL_DB"],
        minsize=2,
        maxsize=60,
        autocommit=True,
    )


def main():
    app = web.Application()
    app.router.add_route("*", "/r/{rid}", handle)
    app.on_startup.append(on_startup)
    # Stop at once on SIGINT/SIGTERM (the agent forwards them); nothing to clean up.
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    web.run_app(
        app,
        host="127.0.0.1",
        port=PORT,
        access_log=None,
        print=None,
        backlog=512,
        handle_signals=False,
    )


main()
