#!/usr/bin/env python3
"""Harness self-test double for `timetracer-agent record` (NOT the agent; no eBPF).

It proxies the app's inbound port and its UPSTREAM_URL, and writes contract-shaped cassettes on
exit, so the record/boom/concurrency scenarios can be checked against a known-good recorder:

    TIMETRACER_AGENT=tests/integration/selftest_fake_agent.py TIMETRACER_VENV=... \
        cargo test -p timetracer-integration -- --test-threads=1 record boom concurrency

`attach` is not supported (the attach and sigkill scenarios need the real agent).
"""
import base64, datetime, hashlib, http.client, json, os, signal, socket, subprocess, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

args = sys.argv[1:]
assert args[0] == "record"
out = args[args.index("--out") + 1]
cmd = args[args.index("--") + 1:]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
inner, outp = free(), free()
outer = None
for i, a in enumerate(cmd):
    if a == "--port": outer = int(cmd[i + 1]); cmd[i + 1] = str(inner)
    if a == "-b": outer = int(cmd[i + 1].split(":")[1]); cmd[i + 1] = "127.0.0.1:%d" % inner
up = urlsplit(os.environ["UPSTREAM_URL"])
env = dict(os.environ, UPSTREAM_URL="http://127.0.0.1:%d" % outp)
lock = threading.Lock(); inflight = []; done = []

def body(b):
    d = {"_captured": True, "size_bytes": len(b), "truncated": False, "hash": "sha256:" + hashlib.sha256(b).hexdigest()}
    try:
        v = json.loads(b)
        if json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode() == b:
            d.update(encoding="json", data=v); return d
    except Exception: pass
    try: d.update(encoding="text", data=b.decode()); return d
    except UnicodeDecodeError: d.update(encoding="base64", data=base64.b64encode(b).decode()); return d

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def fwd(self, port):
        n = int(self.headers.get("Content-Length") or 0); rb = self.rfile.read(n) if n else b""
        c = http.client.HTTPConnection("127.0.0.1", port); hd = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        c.request(self.command, self.path, body=rb, headers=hd); r = c.getresponse(); b = r.read(); c.close()
        self.send_response(r.status); 
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"): self.send_header(k, v)
        self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
        return rb, r, b
class In(H):
    def handle_one(self):
        rec = {"events": [], "t": time.time()}
        with lock: inflight.append(rec)
        rb, r, b = self.fwd(inner)
        with lock: inflight.remove(rec)
        p = urlsplit(self.path)
        rec["c"] = {"request": {"method": self.command, "path": p.path, "target": self.path, "query": p.query,
                    "headers": {}, "header_list": [], **({"body": body(rb)} if rb else {})},
                    "response": {"status": r.status, "reason": r.reason, "duration_ms": 1.0, "headers": {}, "header_list": [], "body": body(b)},
                    "stats": {"drops": {"ring": 0}}}
        if r.status >= 500: rec["c"]["error"] = {"status": r.status, "kind": "http"}
        done.append(rec)
    do_GET = do_POST = handle_one
class Out(H):
    def handle_one(self):
        with lock: owners = list(inflight)
        rb, r, b = self.fwd(up.port)
        p = urlsplit(self.path)
        ev = {"type": "http.client", "signature": {"lib": "?", "method": self.command, "url": "http://127.0.0.1:%d%s" % (up.port, p.path), **({"query": p.query} if p.query else {})},
              "request": {**({"body": body(rb)} if rb else {})}, "result": {"status": r.status, "headers": {}, "header_list": [], "body": body(b)},
              "attribution": {"status": "exact" if len(owners) == 1 else "ambiguous"}}
        (owners[0] if owners else {"events": []})["events"].append(ev)
    do_GET = do_POST = handle_one
class S(ThreadingHTTPServer): daemon_threads = True; allow_reuse_address = True
threading.Thread(target=S(("127.0.0.1", outp), Out).serve_forever, daemon=True).start()
p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
while True:
    try: socket.create_connection(("127.0.0.1", inner)).close(); break
    except OSError: time.sleep(0.05)
threading.Thread(target=S(("127.0.0.1", outer), In).serve_forever, daemon=True).start()
tbs = []
def errs():
    cur = None
    for line in p.stderr:
        sys.stderr.write(line); sys.stderr.flush()
        if "Traceback" in line: cur = [line]
        elif cur is not None:
            cur.append(line)
            if line.startswith("ZeroDivisionError"): tbs.append("".join(cur)); cur = None
t = threading.Thread(target=errs); t.start()
for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, lambda n, f: p.send_signal(n))
rc = p.wait(); t.join()
day = os.path.join(out, datetime.date.today().isoformat()); os.makedirs(day, exist_ok=True)
for i, rec in enumerate(done):
    c = rec["c"]; c["events"] = [dict(e, eid=j + 1) for j, e in enumerate(rec["events"])]
    if c["response"]["status"] == 500 and tbs: c["error"]["traceback"] = tbs.pop(0)
    fn = os.path.join(day, "%s__%s__%s.json" % (c["request"]["method"], c["request"]["path"].strip("/").replace("/", "_"), uuid.uuid4().hex[:8]))
    fd = os.open(fn, os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, json.dumps(c).encode()); os.close(fd)
print("fake: %d cassettes" % len(done), file=sys.stderr)
sys.exit(rc)
