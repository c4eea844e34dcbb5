"""Flask app for the redaction end-to-end test (issue 19, item 4): it sends a password and a
token to PostgreSQL (psycopg2: parameters interpolated into SQL literals; asyncpg: bound
parameters, binary rows) and MariaDB (PyMySQL: literals), stores them in rows and reads them
back, and keeps a session token in Redis (a plain key and a hash field).

Run: PG_* / MYSQL_* / REDIS_* environment (see db_flask_app.py) plus SECRET_PASSWORD and
     SECRET_TOKEN, gunicorn -k gthread secrets_app:app

The response never contains the secrets: only what a replay can reproduce from redacted
recordings (row counts, names, whether the secret was found), so the replay's verdict can be
"same".
"""

import asyncio
import os
import threading

import asyncpg
import psycopg2
import pymysql
import redis
from flask import Flask, jsonify, request

PG = dict(host=os.environ.get("PG_HOST", "127.0.0.1"), port=int(os.environ["PG_PORT"]),
          user=os.environ["PG_USER"], password=os.environ["PG_PASSWORD"], dbname=os.environ["PG_DB"])
PASSWORD = os.environ["SECRET_PASSWORD"]
TOKEN = os.environ["SECRET_TOKEN"]

LOCK = threading.Lock()
PG2 = psycopg2.connect(**PG)
PG2.autocommit = True
MY = pymysql.connect(host=os.environ.get("MYSQL_HOST", "127.0.0.1"), port=int(os.environ["MYSQL_PORT"]),
                     user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"],
                     database=os.environ["MYSQL_DB"], autocommit=True)
R = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]),
                password=os.environ["REDIS_PASSWORD"], protocol=2, decode_responses=True)

# Schema at worker boot, outside any request.
with PG2.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS accounts (id serial PRIMARY KEY, name text UNIQUE, "
                "password text, token text)")
with MY.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS accounts (id int AUTO_INCREMENT PRIMARY KEY, "
                "name varchar(64) UNIQUE, password varchar(128), token varchar(128))")

app = Flask(__name__)


async def with_asyncpg(name):
    conn = await asyncpg.connect(**{k if k != "dbname" else "database": v for k, v in PG.items()})
    try:
        await conn.execute("UPDATE accounts SET token = $1 WHERE name = $2", TOKEN, name)
        hit = await conn.fetchval("SELECT count(*) FROM accounts WHERE name = $1 AND password = $2",
                                  name, PASSWORD)
        rows = await conn.fetch("SELECT name, password, token FROM accounts WHERE name = $1", name)
        return int(hit), [r["name"] for r in rows]
    finally:
        await conn.close()


@app.get("/signup")
def signup():
    name = request.args["user"]
    out = {"user": name}
    with LOCK:
        with PG2.cursor() as cur:
            cur.execute("DELETE FROM accounts WHERE name = %s", (name,))
            cur.execute("INSERT INTO accounts (name, password, token) VALUES (%s, %s, %s)",
                        (name, PASSWORD, "pending"))
            cur.execute("SELECT name, password FROM accounts WHERE name = %s AND password = %s",
                        (name, PASSWORD))
            out["psycopg2_rows"] = len(cur.fetchall())
        out["asyncpg_hit"], out["asyncpg_names"] = asyncio.run(with_asyncpg(name))
        with MY.cursor() as cur:
            cur.execute("DELETE FROM accounts WHERE name = %s", (name,))
            cur.execute("INSERT INTO accounts (name, password, token) VALUES (%s, %s, %s)",
                        (name, PASSWORD, TOKEN))
            cur.execute("UPDATE accounts SET token = %s WHERE name = %s", (TOKEN, name))
            cur.execute("SELECT name, password, token FROM accounts WHERE password = %s", (PASSWORD,))
            out["mysql_names"] = [r[0] for r in cur.fetchall()]
        R.set("session:" + name, TOKEN, ex=300)
        out["session_found"] = R.get("session:" + name) is not None
        R.hset("user:" + name, mapping={"name": name, "password": PASSWORD})
        out["hash_fields"] = sorted(R.hgetall("user:" + name).keys())
    return jsonify(out)
