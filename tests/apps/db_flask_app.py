"""Flask app for the timetracer database end-to-end tests (issue 5): psycopg2, psycopg 3,
PyMySQL (MariaDB) and sync redis (pipeline, MULTI/EXEC).

Run: PG_* / MYSQL_* / REDIS_* environment (see db_fastapi_app.py, plus MYSQL_HOST, MYSQL_PORT,
     MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB) gunicorn -k gthread db_flask_app:app

Every endpoint returns {"ops": [...]} as db_fastapi_app.py does; "sql" is the text exactly as
sent: psycopg2 and PyMySQL interpolate parameters client-side (cursor.query / mogrify, no
"params"), psycopg 3 binds them server-side ($1 placeholders, "params" listed).
Connections are opened at import (worker boot), outside any request, in autocommit mode so
the drivers send no implicit BEGIN; each is guarded by a lock (gthread workers).
"""

import json
import os
import threading

import psycopg
import psycopg2
import pymysql
import redis
from flask import Flask, jsonify

PG = dict(host=os.environ.get("PG_HOST", "127.0.0.1"), port=int(os.environ["PG_PORT"]),
          user=os.environ["PG_USER"], password=os.environ["PG_PASSWORD"], dbname=os.environ["PG_DB"])

# Over TLS (issue #26): PG_SSLMODE / PG_SSLROOTCERT (libpq's sslmode, sslrootcert) and
# MYSQL_SSL_CA (PyMySQL verifies the server's certificate and name against it).
if os.environ.get("PG_SSLMODE"):
    PG.update(sslmode=os.environ["PG_SSLMODE"], sslrootcert=os.environ["PG_SSLROOTCERT"])
MY_TLS = {}
if os.environ.get("MYSQL_SSL_CA"):
    MY_TLS = dict(ssl_ca=os.environ["MYSQL_SSL_CA"], ssl_verify_cert=True, ssl_verify_identity=True)

LOCK = threading.Lock()
PG2 = psycopg2.connect(**PG)
PG2.autocommit = True
PG3 = psycopg.connect(autocommit=True, **PG)
MY = pymysql.connect(host=os.environ.get("MYSQL_HOST", "127.0.0.1"), port=int(os.environ["MYSQL_PORT"]),
                     user=os.environ["MYSQL_USER"], password=os.environ["MYSQL_PASSWORD"],
                     database=os.environ["MYSQL_DB"], autocommit=True, **MY_TLS)
R = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]),
                password=os.environ["REDIS_PASSWORD"], protocol=2, decode_responses=True)

app = Flask(__name__)


@app.after_request
def report_tls(resp):
    """With TLS configured, every body says which connections are TLS, so a replay whose mock
    did not upgrade (PyMySQL goes on in plaintext when the server offers no TLS) differs."""
    if not (os.environ.get("PG_SSLMODE") or MY_TLS) or not resp.is_json:
        return resp
    import ssl

    body = resp.get_json()
    body["tls"] = {
        "pg2": bool(PG2.info.ssl_in_use),
        "pg3": bool(PG3.pgconn.ssl_in_use),
        "mysql": isinstance(getattr(MY, "_sock", None), ssl.SSLSocket),
    }
    resp.set_data(json.dumps(body))
    return resp


def cell(v):
    return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)


def pg2(ops, text, params=None):
    op = {"kind": "sql", "lib": "postgres", "sql": None, "rows": [], "error": None}
    ops.append(op)
    with PG2.cursor() as cur:
        try:
            cur.execute(text, params)
            if cur.description is not None:
                op["rows"] = [[cell(v) for v in r] for r in cur.fetchall()]
        except psycopg2.Error as e:
            op["error"] = {"sqlstate": e.pgcode, "message": str(e).strip()}
        op["sql"] = cur.query.decode() if cur.query is not None else text


def pg3(ops, text, params=()):
    # psycopg 3 turns each %s into $n and binds the values server-side.
    wire = text
    for i in range(len(params)):
        wire = wire.replace("%s", "$%d" % (i + 1), 1)
    op = {"kind": "sql", "lib": "postgres", "sql": wire, "params": [cell(p) for p in params],
          "rows": [], "error": None}
    ops.append(op)
    with PG3.cursor() as cur:
        try:
            cur.execute(text, params or None)
            if cur.description is not None:
                op["rows"] = [[cell(v) for v in r] for r in cur.fetchall()]
        except psycopg.Error as e:
            op["error"] = {"sqlstate": e.sqlstate, "message": str(e).strip()}


def my(ops, text, params=None):
    with MY.cursor() as cur:
        wire = cur.mogrify(text, params)
        op = {"kind": "sql", "lib": "mysql", "sql": wire, "rows": [], "error": None}
        ops.append(op)
        try:
            cur.execute(text, params)
            if cur.description is not None:
                op["rows"] = [[cell(v) for v in r] for r in cur.fetchall()]
        except pymysql.MySQLError as e:
            op["error"] = {"code": e.args[0], "message": str(e.args[1]) if len(e.args) > 1 else ""}


def reply(v):
    if isinstance(v, (list, tuple)):
        return [reply(x) for x in v]
    if isinstance(v, Exception):
        return {"error": str(v)}
    return v


def rcmd(ops, *args):
    try:
        v = R.execute_command(*args)
    except redis.ResponseError as e:
        v = e
    ops.append({"kind": "redis", "args": list(args), "reply": reply(v)})


@app.get("/pg2/select")
def pg2_select():
    ops = []
    with LOCK:
        pg2(ops, "SELECT id, name FROM items WHERE id = %s", (1,))
        pg2(ops, "SELECT id, name FROM items WHERE name IN (%s, %s) ORDER BY id", ("ada", "bob"))
    return jsonify(ops=ops)


@app.get("/pg2/fail")
def pg2_fail():
    ops = []
    with LOCK:
        pg2(ops, "SELECT * FROM no_such_table")
        pg2(ops, "INSERT INTO items (id, name) VALUES (%s, %s)", (1, "duplicate"))
    return jsonify(ops=ops)


@app.get("/pg3/select")
def pg3_select():
    ops = []
    with LOCK:
        pg3(ops, "SELECT id, name FROM items WHERE id = %s", (2,))
        pg3(ops, "BEGIN")
        pg3(ops, "INSERT INTO audit (note) VALUES (%s) RETURNING note", ("psycopg3",))
        pg3(ops, "COMMIT")
        pg3(ops, "SELECT 1 / %s::int", (0,))
    return jsonify(ops=ops)


@app.get("/mysql/select")
def mysql_select():
    ops = []
    with LOCK:
        # MYSQL_ID changes the parameter the app sends (replay tests use it).
        my(ops, "SELECT id, name FROM items WHERE id = %s", (int(os.environ.get("MYSQL_ID", "1")),))
        my(ops, "SELECT id, name FROM items WHERE id >= %s ORDER BY id", (1,))
    return jsonify(ops=ops)


@app.get("/mysql/insert")
def mysql_insert():
    ops = []
    with LOCK:
        my(ops, "BEGIN")
        my(ops, "INSERT INTO audit (note) VALUES (%s)", ("pymysql",))
        my(ops, "COMMIT")
    return jsonify(ops=ops)


@app.get("/mysql/fail")
def mysql_fail():
    ops = []
    with LOCK:
        my(ops, "SELECT * FROM no_such_table")
        my(ops, "INSERT INTO items (id, name) VALUES (%s, %s)", (1, "duplicate"))
    return jsonify(ops=ops)


def pipelined(ops, cmds):
    """`cmds` in one redis-py pipeline (no transaction: one round trip)."""
    pipe = R.pipeline(transaction=False)
    for c in cmds:
        pipe.execute_command(*c)
    res = pipe.execute(raise_on_error=False)
    for c, v in zip(cmds, res):
        ops.append({"kind": "redis", "args": list(c), "reply": reply(v)})


@app.get("/redis/pipeline")
def redis_pipeline():
    ops = []
    with LOCK:
        pipelined(ops, [("SET", "gp:k", "1"), ("INCR", "gp:k"), ("GET", "gp:k"), ("DEL", "gp:k")])
    return jsonify(ops=ops)


@app.get("/redis/multi")
def redis_multi():
    ops = []
    cmds = [("SET", "gm:k", "v"), ("GET", "gm:k"), ("INCR", "gm:k"), ("DEL", "gm:k")]
    with LOCK:
        pipe = R.pipeline(transaction=True)
        for c in cmds:
            pipe.execute_command(*c)
        res = pipe.execute(raise_on_error=False)
    # On the wire: MULTI, the queued commands, EXEC; each queued command's reply is its
    # element of EXEC's array.
    ops.append({"kind": "redis", "args": ["MULTI"], "reply": "OK"})
    for c, v in zip(cmds, res):
        ops.append({"kind": "redis", "args": list(c), "reply": reply(v)})
    ops.append({"kind": "redis", "args": ["EXEC"], "reply": reply(res)})
    return jsonify(ops=ops)


@app.get("/n1")
def n_plus_one():
    # Issue 22 item 5 (`timetracer stats` N+1 detection on a real recording): a lazy load (one
    # query per item, one after the other, literals inlined by psycopg2), the same lookups as IN
    # lists of two lengths, a session statement repeated, per-item Redis GETs one after the
    # other, and per-item GETs in one pipeline (one round trip).
    ops = []
    with LOCK:
        pg2(ops, "SELECT id FROM items ORDER BY id")
        for i in range(1, 7):
            pg2(ops, "SELECT id, name FROM items WHERE id = %s", (i,))
        pg2(ops, "SELECT id, name FROM items WHERE id IN (%s, %s, %s)", (1, 2, 3))
        pg2(ops, "SELECT id, name FROM items WHERE id IN (%s, %s)", (4, 5))
        for _ in range(6):
            # Recorded as session-level calls, which the tests' event check leaves out: not
            # among the operations the app reports.
            pg2([], "SET application_name = 'n1'")
        for i in range(1, 7):
            rcmd(ops, "GET", "n1:user:%d" % i)
        pipelined(ops, [("GET", "n1:item:%d" % i) for i in range(1, 7)])
    return jsonify(ops=ops)


@app.get("/redis/fail")
def redis_fail():
    ops = []
    with LOCK:
        rcmd(ops, "SET", "gf:k", "not-a-number")
        rcmd(ops, "INCR", "gf:k")
        rcmd(ops, "DEL", "gf:k")
    return jsonify(ops=ops)
