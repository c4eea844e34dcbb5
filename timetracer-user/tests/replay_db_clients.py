"""Real database clients against the replay mock servers (timetracer-user/tests/replay_db_mocks.rs).

Usage: python replay_db_clients.py SCENARIO PORT
Each scenario connects to 127.0.0.1:PORT as the recorded app did (tests/apps/db_*_app.py), issues
the same calls, plus one with a changed parameter, and prints one JSON object:
{"results": [{"call": ..., "rows"|"reply"|"error": ...}, ...]}. Errors are caught and reported
with their SQLSTATE / MySQL code / message, so the Rust side checks everything.
"""

import asyncio
import json
import sys

PASSWORD = "not-the-recorded-one"  # the mocks accept any credentials


def cell(v):
    return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)


def rows(rs):
    return [[cell(v) for v in r] for r in rs]


async def asyncpg_scenario(port):
    import asyncpg

    out = []
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="ttapp", password=PASSWORD,
                                 database="ttdb")

    async def fetch(label, sql, *args):
        try:
            out.append({"call": label, "rows": rows(await conn.fetch(sql, *args))})
        except asyncpg.PostgresError as e:
            out.append({"call": label, "error": {"sqlstate": e.sqlstate, "message": str(e)}})

    async def execute(label, sql):
        # No arguments: asyncpg sends a simple Query, as the app's BEGIN / COMMIT.
        try:
            await conn.execute(sql)
            out.append({"call": label, "rows": []})
        except asyncpg.PostgresError as e:
            out.append({"call": label, "error": {"sqlstate": e.sqlstate, "message": str(e)}})

    q1 = "SELECT id, name FROM items WHERE id = $1"
    # A changed parameter first: a miss; the connection stays usable.
    await fetch("changed", q1, 7)
    await fetch("select1", q1, 1)
    await fetch("select_range", "SELECT id, name FROM items WHERE id >= $1 AND name <> $2 ORDER BY id", 1, "zzz")
    await execute("begin", "BEGIN")
    await fetch("insert", "INSERT INTO audit (note) VALUES ($1) RETURNING note", "first")
    await execute("commit", "COMMIT")
    await fetch("missing_table", "SELECT * FROM no_such_table WHERE id = $1", 1)
    await fetch("div_zero", "SELECT 1 / $1::int", 0)
    await fetch("mixed_name", "SELECT name FROM items WHERE id = $1", 2)
    await fetch("mixed_count", "SELECT count(*)::int FROM items WHERE id > $1", 0)
    # The statement is cached now: Bind/Execute/Sync, as the recorded second request.
    await fetch("select3", q1, 3)
    await conn.close()
    return out


def psycopg2_scenario(port):
    import psycopg2

    out = []
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="ttapp", password=PASSWORD,
                            dbname="ttdb")
    conn.autocommit = True

    def run(label, sql, params=None):
        with conn.cursor() as cur:
            try:
                cur.execute(sql, params)
                out.append({"call": label, "rows": rows(cur.fetchall()) if cur.description else []})
            except psycopg2.Error as e:
                out.append({"call": label, "error": {"sqlstate": e.pgcode, "message": str(e).strip()}})

    run("changed", "SELECT id, name FROM items WHERE id = %s", (2,))
    run("select1", "SELECT id, name FROM items WHERE id = %s", (1,))
    run("select_in", "SELECT id, name FROM items WHERE name IN (%s, %s) ORDER BY id", ("ada", "bob"))
    run("missing_table", "SELECT * FROM no_such_table")
    run("duplicate", "INSERT INTO items (id, name) VALUES (%s, %s)", (1, "duplicate"))
    conn.close()
    return out


def psycopg3_scenario(port):
    import psycopg

    out = []
    conn = psycopg.connect(host="127.0.0.1", port=port, user="ttapp", password=PASSWORD,
                           dbname="ttdb", autocommit=True)

    def run(label, sql, params=None):
        with conn.cursor() as cur:
            try:
                cur.execute(sql, params)
                out.append({"call": label, "rows": rows(cur.fetchall()) if cur.description else []})
            except psycopg.Error as e:
                out.append({"call": label, "error": {"sqlstate": e.sqlstate, "message": str(e).strip()}})

    run("changed", "SELECT id, name FROM items WHERE id = %s", (5,))
    run("select2", "SELECT id, name FROM items WHERE id = %s", (2,))
    run("begin", "BEGIN")
    run("insert", "INSERT INTO audit (note) VALUES (%s) RETURNING note", ("psycopg3",))
    run("commit", "COMMIT")
    run("div_zero", "SELECT 1 / %s::int", (0,))
    conn.close()
    return out


def pymysql_scenario(port):
    import pymysql

    out = []
    conn = pymysql.connect(host="127.0.0.1", port=port, user="ttapp", password=PASSWORD,
                           database="ttdb", autocommit=True)

    def run(label, sql, params=None):
        with conn.cursor() as cur:
            try:
                cur.execute(sql, params)
                out.append({"call": label, "rows": rows(cur.fetchall()) if cur.description else []})
            except pymysql.MySQLError as e:
                out.append({"call": label, "error": {"code": e.args[0], "message": str(e.args[1]) if len(e.args) > 1 else ""}})

    run("changed", "SELECT id, name FROM items WHERE id = %s", (2,))
    run("select1", "SELECT id, name FROM items WHERE id = %s", (1,))
    run("select_range", "SELECT id, name FROM items WHERE id >= %s ORDER BY id", (1,))
    run("begin", "BEGIN")
    run("insert", "INSERT INTO audit (note) VALUES (%s)", ("pymysql",))
    run("commit", "COMMIT")
    run("missing_table", "SELECT * FROM no_such_table")
    run("duplicate", "INSERT INTO items (id, name) VALUES (%s, %s)", (1, "duplicate"))
    conn.ping(reconnect=False)
    conn.close()
    return out


def reply(v):
    if isinstance(v, (list, tuple)):
        return [reply(x) for x in v]
    if isinstance(v, Exception):
        return {"error": str(v)}
    return v


async def redis_async_scenario(port):
    import redis.asyncio as aioredis

    out = []
    r = aioredis.Redis(host="127.0.0.1", port=port, password=PASSWORD, protocol=2,
                       decode_responses=True)

    async def cmd(label, *args):
        try:
            v = await r.execute_command(*args)
        except Exception as e:  # redis.ResponseError
            v = e
        out.append({"call": label, "reply": reply(v)})

    await cmd("changed", "GET", "fa:zz")
    await cmd("set", "SET", "fa:a", "value-a")
    await cmd("get", "GET", "fa:a")
    await cmd("get_missing", "GET", "fa:missing")
    await cmd("incr", "INCR", "fa:a")
    await cmd("del", "DEL", "fa:a")
    pipe = r.pipeline(transaction=False)
    for c in [("SET", "fp:b", "1"), ("INCR", "fp:b"), ("GET", "fp:b"), ("RPUSH", "fpl:b", "a", "b"),
              ("LRANGE", "fpl:b", "0", "-1"), ("DEL", "fp:b", "fpl:b")]:
        pipe.execute_command(*c)
    out.append({"call": "pipeline", "reply": reply(await pipe.execute(raise_on_error=False))})
    await cmd("ping", "PING")
    await r.aclose()
    return out


def redis_sync_scenario(port):
    import redis

    out = []
    r = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, protocol=2,
                    decode_responses=True)

    def cmd(label, *args):
        try:
            v = r.execute_command(*args)
        except redis.ResponseError as e:
            v = e
        out.append({"call": label, "reply": reply(v)})

    cmd("changed", "SET", "gf:k", "a-number")
    pipe = r.pipeline(transaction=False)
    for c in [("SET", "gp:k", "1"), ("INCR", "gp:k"), ("GET", "gp:k"), ("DEL", "gp:k")]:
        pipe.execute_command(*c)
    out.append({"call": "pipeline", "reply": reply(pipe.execute(raise_on_error=False))})
    pipe = r.pipeline(transaction=True)
    for c in [("SET", "gm:k", "v"), ("GET", "gm:k"), ("INCR", "gm:k"), ("DEL", "gm:k")]:
        pipe.execute_command(*c)
    out.append({"call": "multi", "reply": reply(pipe.execute(raise_on_error=False))})
    cmd("set", "SET", "gf:k", "not-a-number")
    cmd("incr", "INCR", "gf:k")
    cmd("del", "DEL", "gf:k")
    r.close()
    return out


def redis_resp3_scenario(port):
    import redis

    out = []
    r = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, protocol=3,
                    decode_responses=True)
    out.append({"call": "set", "reply": r.set("fa:a", "value-a")})
    out.append({"call": "get", "reply": r.get("fa:a")})
    out.append({"call": "ping", "reply": r.ping()})
    out.append({"call": "hello", "reply": r.execute_command("HELLO", "3")})
    r.close()
    return out


SCENARIOS = {
    "asyncpg": lambda p: asyncio.run(asyncpg_scenario(p)),
    "psycopg2": psycopg2_scenario,
    "psycopg3": psycopg3_scenario,
    "pymysql": pymysql_scenario,
    "redis_async": lambda p: asyncio.run(redis_async_scenario(p)),
    "redis_sync": redis_sync_scenario,
    "redis_resp3": redis_resp3_scenario,
}

if __name__ == "__main__":
    print(json.dumps({"results": SCENARIOS[sys.argv[1]](int(sys.argv[2]))}))
