"""An HTTP app that imports `ssl` only when its first request arrives.

Run: UPSTREAM_URL=https://localhost:P UPSTREAM_CA=ca.pem python lazy_ssl_app.py PORT

GET /users/<id> fetches UPSTREAM/json/<id>?src=users over HTTPS (certificate verified against
UPSTREAM_CA) and returns {"calls": [{"url", "status", "sha256", "len"}]} like the other test
apps. It is built on `socketserver` alone (`http.server` imports `http.client`, which imports
`ssl`), so nothing loads libssl before the first request: a tracer attached to the running
process must pick the library up when the handler imports it. HTTP/1.1 keep-alive.
"""

import hashlib
import json
import os
import socketserver
import sys

UPSTREAM = os.environ.get("UPSTREAM_URL", "https://localhost:8443").rstrip("/")


def fetch(uid):
    import http.client  # noqa: PLC0415 - the point of this app: ssl is loaded here
    import ssl  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    u = urllib.parse.urlsplit(UPSTREAM)
    ctx = ssl.create_default_context(cafile=os.environ.get("UPSTREAM_CA"))
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    target = "/json/%s?src=users" % uid
    conn.request("GET", target)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return {
        "url": UPSTREAM + target,
        "status": resp.status,
        "sha256": hashlib.sha256(body).hexdigest(),
        "len": len(body),
    }


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            length = 0
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                self.rfile.read(length)
            path = target.split("?")[0]
            if method == "GET" and path.startswith("/users/"):
                status, out = "200 OK", json.dumps({"calls": [fetch(path[7:])]}, separators=(",", ":")).encode()
            else:
                status, out = "404 Not Found", b'{"error":"not found"}'
            head = "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(out))
            self.wfile.write(head.encode() + out)
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    srv = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("lazy_ssl_app listening; ssl loaded: %s" % ("ssl" in sys.modules), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
