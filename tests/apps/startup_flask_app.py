"""Flask app that opens every dependency AT IMPORT (issue 26): what most production apps do.

Run: PG_* / MYSQL_* / REDIS_* environment (see db_flask_app.py) gunicorn -w 2 startup_flask_app:app

At import, in each gunicorn worker (no --preload: every worker imports the app after fork):
- an SQLAlchemy engine (postgresql+psycopg2) connects and counts the items: SQLAlchemy's
  first-connect introspection (server version, current schema, isolation level, the `hstore`
  lookup in pg_type, standard_conforming_strings) happens here, before any request;
- a psycopg2 ThreadedConnectionPool opens a connection and reads one row;
- PyMySQL connects and counts the items;
- redis-py sets and reads a flag.
What came back is in BOOT, which every response carries: a replay that answers the startup
calls wrongly (or not at all) changes every response (or kills the worker).

STARTUP_WARM=connect: open every connection at import but read no data (SQLAlchemy's
first-connect introspection, the pool's connection, PyMySQL's handshake, a Redis PING): what a
recording made with `attach` after startup must answer by rule at replay.
"""

import os
import sys

import psycopg2
import psycopg2.pool
import pymysql
import redis
from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text

PG = dict(host=os.environ.get("PG_HOST", "127.0.0.1"), port=int(os.environ["PG_PORT"]),
          user=os.environ["PG_USER"], password=os.environ["PG_PASSWORD"], dbname=os.environ["PG_DB"])

BOOT = {}
DATA = os.environ.get("STARTUP_WARM", "data") == "data"

ENGINE = create_engine(
    "postgresql+psycopg2://{user}:{password}@{host}:{port}/{dbname}".format(**PG),
    pool_size=1, max_overflow=0)
with ENGINE.connect() as c:
    if DATA:
        BOOT["sqla_items"] = c.execute(text("SELECT count(*) FROM items")).scalar()

POOL = psycopg2.pool.ThreadedConnectionPool(1, 1, **PG)
if DATA:
    _conn = POOL.getconn()
    _conn.autocommit = True
    with _conn.cursor() as cur:
        cur.execute("SELECT name FROM items WHERE id = %s", (1,))
        BOOT["pool_first"] = cur.fetchone()[0]
    POOL.putconn(_conn)

MY = pymysql.connect(host=os.environ.get("MYSQL_HOST", "127.0.0.1"), port=int(os.environ["MYSQL_PORT"]),
                     user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"],
                     database=os.environ["MYSQL_DB"], autocommit=True)
if DATA:
    with MY.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM items")
        BOOT["mysql_items"] = cur.fetchone()[0]

R = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]),
                password=os.environ["REDIS_PASSWORD"], protocol=2, decode_responses=True)
if DATA:
    R.set("startup:flag", "on")
    BOOT["redis_flag"] = R.get("startup:flag")
else:
    BOOT["redis_ping"] = R.ping()

app = Flask(__name__)
# The test sends its requests once every worker got here (gunicorn listens before its workers
# have imported the app).
print("timetracer-test: startup complete", file=sys.stderr, flush=True)


@app.get("/item")
def item():
    i = int(request.args.get("id", "1"))
    with ENGINE.connect() as c:
        sqla = c.execute(text("SELECT name FROM items WHERE id = :id"), {"id": i}).scalar()
    conn = POOL.getconn()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM items WHERE id = %s", (i,))
            pool = cur.fetchone()[0]
    finally:
        POOL.putconn(conn)
    with MY.cursor() as cur:
        cur.execute("SELECT name FROM items WHERE id = %s", (i,))
        row = cur.fetchone()
    flag = R.get("startup:flag")
    return jsonify(boot=BOOT, id=i, sqla=sqla, pool=pool, mysql=row[0] if row else None, redis=flag)
