"""Flask app for the attribution end-to-end test (issue #7), served by gunicorn sync/gthread.

`/r/<rid>`: two calls `a`, `b` through a per-thread pooled requests.Session, random delays.
`/pool/<rid>`: one call `pool` from a raw ThreadPoolExecutor thread: must come out ambiguous.
"""

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask, request

UP = os.environ["UPSTREAM_URL"].rstrip("/")
app = Flask(__name__)
local = threading.local()
raw_pool = ThreadPoolExecutor(max_workers=2)


def session():
    s = getattr(local, "s", None)
    if s is None:
        s = local.s = requests.Session()
    return s


def dep(rid, tag, s=None):
    time.sleep(random.random() * 0.02)
    (s or requests).get(f"{UP}/json/dep?rid={rid}&tag={tag}", timeout=10).raise_for_status()


@app.route("/r/<rid>", methods=["GET", "POST"])
def handle(rid):
    body = request.get_data()
    dep(rid, "a", session())
    dep(rid, "b", session())
    return f"{rid} {len(body)}\n"


@app.route("/pool/<rid>")
def pool_handle(rid):
    raw_pool.submit(dep, rid, "pool").result()
    return f"{rid}\n"
