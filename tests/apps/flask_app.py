"""Flask app for the timetracer end-to-end tests (same endpoints as fastapi_app).

Run: UPSTREAM_URL=http://127.0.0.1:PORT \
     gunicorn -w 1 -k gthread --threads 4 -b 127.0.0.1:P flask_app:app

One module-level requests.Session (keep-alive pool) talks to the upstream. Every endpoint
that calls the upstream returns {"calls": [{"url", "status", "sha256", "len"}, ...]}.
"""

import hashlib
import os

import tempfile

import requests
from flask import Flask, jsonify, request, send_file

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081").rstrip("/")
SESSION = requests.Session()
# UPSTREAM_CA: the test CA of an HTTPS upstream (certificate verification stays on). Passed
# on every call: this requests version ignores Session.verify for pooled HTTPS connections.
VERIFY = os.environ.get("UPSTREAM_CA") or True

app = Flask(__name__)

# A deterministic 200 KiB file for /download: Flask's send_file goes through gunicorn's
# wsgi.file_wrapper, which uses sendfile(2) (bytes that never pass through user memory).
DOWNLOAD = os.path.join(tempfile.mkdtemp(prefix="tt-flask-"), "download.bin")
with open(DOWNLOAD, "wb") as _f:
    _f.write(bytes((i * 7 + 3) % 251 for i in range(200 * 1024)))


@app.get("/download")
def download():
    return send_file(DOWNLOAD, mimetype="application/octet-stream")


def observed(resp, body):
    return {
        "url": resp.url,
        "status": resp.status_code,
        "sha256": hashlib.sha256(body).hexdigest(),
        "len": len(body),
    }


def get(path):
    resp = SESSION.get(UPSTREAM + path, timeout=30, verify=VERIFY)
    return resp, observed(resp, resp.content)


@app.get("/users/<uid>")
def users(uid):
    _, call = get("/json/%s?src=users" % uid)
    return jsonify(calls=[call])


@app.get("/text")
def text():
    _, call = get("/text")
    return jsonify(calls=[call])


@app.get("/big")
def big():
    _, call = get("/big")
    return jsonify(calls=[call])


@app.get("/chunked")
def chunked():
    with SESSION.get(UPSTREAM + "/chunked", stream=True, timeout=30, verify=VERIFY) as resp:
        body = b"".join(resp.iter_content(chunk_size=None))
    return jsonify(calls=[observed(resp, body)])


@app.get("/fail")
def fail():
    resp, call = get("/fail")
    return jsonify(upstream_status=resp.status_code, calls=[call]), 502


@app.get("/multi")
def multi():
    calls = []
    for path in ("/json/1", "/text", "/json/2"):
        _, call = get(path)
        calls.append(call)
    return jsonify(calls=calls)


@app.get("/plain")
def plain():
    return jsonify(calls=[], hello="world")


# A dependency that is down: nothing listens on this port (the discard port by default).
REFUSED_URL = os.environ.get("REFUSED_URL", "http://127.0.0.1:9/status")


@app.get("/refused")
def refused():
    # No timeout: urllib3 connects a blocking socket, so the refusal is connect's own error.
    try:
        SESSION.get(REFUSED_URL)
    except requests.ConnectionError as e:
        # The socket error sits below requests' and urllib3's wrappers: report its errno.
        seen, todo, errno = set(), [e], None
        while todo and errno is None:
            x = todo.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if isinstance(x, OSError) and x.errno is not None:
                errno = x.errno
            todo += [a for a in (x.__cause__, x.__context__, *x.args) if isinstance(a, BaseException)]
            reason = getattr(x, "reason", None)
            if isinstance(reason, BaseException):
                todo.append(reason)
        return jsonify(calls=[], error=type(e).__name__, errno=errno), 503
    return jsonify(calls=[], error=None), 500


@app.get("/boom")
def boom():
    return jsonify(value=1 / 0)


@app.post("/echo")
def echo():
    body = request.get_data()
    resp = SESSION.post(
        UPSTREAM + "/echo",
        data=body,
        headers={"content-type": "application/json"},
        timeout=30,
        verify=VERIFY,
    )
    return jsonify(calls=[observed(resp, resp.content)])
