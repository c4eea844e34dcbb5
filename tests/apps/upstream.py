"""Deterministic HTTP/1.1 upstream for the timetracer end-to-end tests.

Usage: python upstream.py PORT [LOGFILE]   (LOGFILE defaults to $UPSTREAM_LOG)

Every served request appends one JSON line to LOGFILE:
    {"path": ..., "status": ..., "sha256": <hex of body bytes sent>, "len": ...}
which the tests use as ground truth. All bodies are deterministic.
"""

import hashlib
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

LOG_LOCK = threading.Lock()
LOG_PATH = None

BIG_LEN = 300 * 1024
CHUNKS = [
    ("chunk-%02d " % i + "abcdefghijklmnopqrstuvwxyz" * (i + 1) + "\n").encode()
    for i in range(6)
]


def compact(obj):
    # ASCII only and compact: byte-identical to serde_json's compact output.
    return json.dumps(obj, separators=(",", ":")).encode()


def big_body():
    rng = random.Random(0x7117)
    alphabet = bytes(range(0x20, 0x7F)) + b"\n"
    return bytes(rng.choice(alphabet) for _ in range(BIG_LEN))


BIG = big_body()


def log_line(path, status, body):
    rec = {
        "path": path,
        "status": status,
        "sha256": hashlib.sha256(body).hexdigest(),
        "len": len(body),
    }
    line = json.dumps(rec, separators=(",", ":")) + "\n"
    with LOG_LOCK:
        if LOG_PATH:
            with open(LOG_PATH, "a") as f:
                f.write(line)
                f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tt-upstream/1"
    sys_version = ""

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def send_body(self, status, ctype, body, path):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        log_line(path, status, body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        path = urlsplit(self.path).path
        if path.startswith("/json/"):
            ident = path[len("/json/"):]
            obj = {
                "id": ident,
                "name": "user-" + ident,
                "n": len(ident),
                "tags": ["alpha", "beta"],
                "nested": {"ok": True, "none": None, "list": [1, 2, 3]},
            }
            self.send_body(200, "application/json", compact(obj), path)
        elif path == "/text":
            body = b"hello from upstream\nline two\n"
            self.send_body(200, "text/plain; charset=utf-8", body, path)
        elif path == "/big":
            self.send_body(200, "application/octet-stream", BIG, path)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for c in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            log_line(path, 200, b"".join(CHUNKS))
        elif path == "/fail":
            body = compact({"error": "unavailable", "retry": False})
            self.send_body(503, "application/json", body, path)
        else:
            self.send_body(404, "text/plain", b"not found\n", path)

    def do_POST(self):
        path = urlsplit(self.path).path
        body = self.read_body()
        if path == "/echo":
            ctype = self.headers.get("Content-Type") or "application/octet-stream"
            self.send_body(200, ctype, body, path)
        else:
            self.send_body(404, "text/plain", b"not found\n", path)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of new connections from a pooled client
    # (attribution tests: 50 concurrent requests) overflowed it, and requests sent on
    # connections the kernel had not queued waited seconds (httpx ReadTimeout in the app).
    request_queue_size = 128


def main():
    global LOG_PATH
    port = int(sys.argv[1])
    LOG_PATH = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("UPSTREAM_LOG")
    srv = Server(("127.0.0.1", port), Handler)
    cert, key = os.environ.get("UPSTREAM_TLS_CERT"), os.environ.get("UPSTREAM_TLS_KEY")
    if cert and key:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("upstream listening on %d" % port, file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
