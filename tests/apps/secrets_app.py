"""Flask app for the redaction end-to-end test (issue 19, item 4): it sends a password and a
token to PostgreSQL (psycopg2: parameters interpolated into SQL literals) and MariaDB (PyMySQL:
literals), stores them in rows and reads them back, and keeps a session token in Redis (a plain
key and a hash field). The asyncpg half (bound parameters, binary rows) is
secrets_async_app.py.

Run: PG_* / MYSQL_* / REDIS_* environment (see db_flask_app.py) plus SECRET_PASSWORD and
     SECRET_TOKEN, gunicorn -k gthread secrets_app:app

The response never contains the secrets: only what a replay can reproduce from redacted
recordings (row counts, names, whether the secret was found), so the replay's verdict can be
"same".
"""

import os
import threading

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


app = Flask(__name__)


@app.get("/signup")
def signup():
    name = request.args["user"]
    out = {"user": name}
    with LOCK:
        # The schema inside the request: replay answers only what a request recorded.
        with PG2.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS accounts (id serial PRIMARY KEY, "
                        "name text UNIQUE, password text, token text)")
            cur.execute("DELETE FROM accounts WHERE name = %s", (name,))
            cur.execute("INSERT INTO accounts (name, password, token) VALUES (%s, %s, %s)",
                        (name, PASSWORD, "pending"))
            cur.execute("UPDATE accounts SET token = %s WHERE name = %s", (TOKEN, name))
            cur.execute("SELECT name, password, token FROM accounts WHERE name = %s AND password = %s",
                        (name, PASSWORD))
            out["hit"] = len(cur.fetchall())
        with MY.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS accounts (id int AUTO_INCREMENT PRIMARY KEY, "
                        "name varchar(64) UNIQUE, password varchar(128), token varchar(128))")
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
