"""Replay without root: the Python hook's HTTP and time control only.

What it does (docs/ci.md, "pytest without root"):

* one mock HTTP server per recorded HTTP destination (``connection.remote`` of the
  ``http.client`` events), on 127.0.0.1, answering each recorded call with its recorded response:
  calls are matched by method, URL (scheme, host, port, path) and query, each recorded call used
  once, in recorded order;
* the app runs with the replay hook (``timetracer_hook``) on ``PYTHONPATH``:
  ``TIMETRACER_REPLAY_REDIRECT`` sends its connects to the recorded destinations to the mocks
  (Python's ``socket`` module only), ``TIMETRACER_REPLAY_HOSTS`` resolves the recorded hostnames
  to their recorded addresses, ``TIMETRACER_FREEZE_TIME`` (``--timetracer-freeze-time``) starts
  its clock at the recording's;
* each recorded request is sent to the app and its response compared with the recorded one
  (status, then the body: JSON structurally, anything else byte for byte), and every recorded
  HTTP call must have been made, and no other.

What it does not do: databases, Redis and MongoDB are **not** mocked (the app reaches whatever
its configuration names, or fails to), HTTPS dependencies are not mocked (no mock CA without the
agent: such a call fails, and the test says so), connections outside the recording are not
refused, and clients that connect outside Python's ``socket`` module and uvloop (C libraries)
are not redirected. `sudo pytest …` runs the agent instead.
"""

import http.client
import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from urllib.parse import parse_qsl, urlsplit

import timetracer_hook

from .cassettes import body_bytes

# Response headers a mock never repeats: framing is its own.
_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
# Request headers never sent to the app from the recording (framing; the app's own host).
_SKIP_SEND = {"content-length", "transfer-encoding", "connection", "keep-alive", "host"}


def _addr(remote):
    host, _, port = remote.rpartition(":")
    return host.strip("[]"), int(port)


class _Calls:
    """The recorded HTTP calls of one destination, each answerable once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = []  # (cassette, event)
        self.unexpected = []  # (method, target) nothing recorded answers

    def take(self, method, target):
        path, _, query = target.partition("?")
        want = (method.upper(), path, sorted(parse_qsl(query, keep_blank_values=True)))
        with self.lock:
            for i, (cassette, ev) in enumerate(self.pending):
                sig = ev.get("signature") or {}
                url = urlsplit(sig.get("url") or "")
                rec_query = sorted((sig.get("query") or {}).items())
                got = ((sig.get("method") or "").upper(), url.path or "/", rec_query)
                if _same_call(want, got):
                    del self.pending[i]
                    return cassette, ev
            self.unexpected.append((method, target))
            return None, None


def _same_call(want, got):
    if want[:2] != got[:2]:
        return False
    # A query value the recorder redacted matches any value.
    rec = dict((k, v) for k, v in got[2])
    if sorted(k for k, _ in want[2]) != sorted(rec):
        return False
    return all(rec[k] in (v, "[REDACTED]") for k, v in want[2])


def _handler(calls):
    class Mock(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            cassette, ev = calls.take(self.command, self.path)
            if ev is None:
                body = (
                    "timetracer (pytest, hook mode): no recorded call answers %s %s"
                    % (self.command, self.path)
                ).encode()
                self.send_response(599, "Not Recorded")
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            res = ev.get("result") or {}
            body = body_bytes(res.get("body"))
            self.send_response(int(res.get("status") or 200), res.get("reason") or None)
            for k, v in res.get("header_list") or list((res.get("headers") or {}).items()):
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    return Mock


class HookReplay:
    """Runs the app once for every cassette and judges each request."""

    def __init__(self, cassettes, app, cwd=None, freeze_time=False, startup_timeout=30.0,
                 request_timeout=30.0):
        # Only what Python can read (zstd/age cassettes fail their item with the reason).
        self.cassettes = [c for c in cassettes if c.data is not None]
        self.app = shlex.split(app)
        self.cwd = cwd
        self.freeze_time = freeze_time
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.results = {}  # cassette path -> (ok, explanation)
        self.notes = []
        self.error = None

    # -- setup -------------------------------------------------------------------------------

    def _port(self):
        for c in self.cassettes:
            conn = (c.data or {}).get("connection") or {}
            local = conn.get("local") or ""
            if ":" in local:
                return _addr(local)[1]
            host = ((c.data or {}).get("request") or {}).get("headers", {}).get("host", "")
            if ":" in host:
                return int(host.rsplit(":", 1)[1])
        raise RuntimeError("no cassette says which port the app listened on")

    def _mocks(self, tmp):
        """Starts one mock per recorded destination; writes the hook's routes and hosts."""
        by_dest, hosts, names, self.servers, self.calls = {}, {}, {}, [], []
        for c in self.cassettes:
            for ev in c.http_calls():
                conn = ev.get("connection") or {}
                remote = conn.get("remote")
                if not remote:
                    continue
                if conn.get("tls"):
                    self.notes.append(
                        "%s: HTTPS call to %s is not mocked without the agent" % (c.name, remote)
                    )
                    continue
                calls = by_dest.get(remote)
                if calls is None:
                    calls = by_dest[remote] = _Calls()
                calls.pending.append((c, ev))
                host = urlsplit((ev.get("signature") or {}).get("url") or "").hostname
                ip = _addr(remote)[0]
                if host and host != ip:
                    hosts.setdefault(host, [])
                    if ip not in hosts[host]:
                        hosts[host].append(ip)
                    names.setdefault(remote, set()).add(host)
        routes = {}
        for remote, calls in by_dest.items():
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(calls))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.calls.append(calls)
            mock = "127.0.0.1:%d" % server.server_address[1]
            routes[remote] = mock
            # By recorded hostname too: uvloop's create_connection sees the name.
            port = _addr(remote)[1]
            for name in names.get(remote, ()):
                routes["%s:%d" % (name, port)] = mock
        with open(os.path.join(tmp, "routes.json"), "w") as f:
            json.dump(routes, f)
        with open(os.path.join(tmp, "hosts.json"), "w") as f:
            json.dump(hosts, f)
        return routes

    def _hook_dir(self, tmp):
        """The replay hook as the agent lays it out: the package, and the sitecustomize beside
        it in the source tree (which also runs the sitecustomize it shadows); a two-line one
        when the package was installed without it."""
        pkg = os.path.dirname(os.path.abspath(timetracer_hook.__file__))
        d = os.path.join(tmp, "hook")
        shutil.copytree(pkg, os.path.join(d, "timetracer_hook"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        beside = os.path.join(os.path.dirname(pkg), "sitecustomize.py")
        if os.path.isfile(beside):
            shutil.copy(beside, os.path.join(d, "sitecustomize.py"))
        else:
            with open(os.path.join(d, "sitecustomize.py"), "w") as f:
                f.write("import timetracer_hook\ntimetracer_hook.activate()\n")
        return d

    # -- run ---------------------------------------------------------------------------------

    def run(self):
        tmp = tempfile.mkdtemp(prefix="pytest-timetracer-")
        app = None
        try:
            port = self._port()
            self._mocks(tmp)
            env = dict(os.environ)
            hook = self._hook_dir(tmp)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (hook, env.get("PYTHONPATH")) if p
            )
            env.update(
                TIMETRACER_REPLAY="1",
                TIMETRACER_REPLAY_REDIRECT=os.path.join(tmp, "routes.json"),
                TIMETRACER_REPLAY_HOSTS=os.path.join(tmp, "hosts.json"),
            )
            first = min((c.recorded_at for c in self.cassettes if c.recorded_at), default="")
            if self.freeze_time and first:
                env["TIMETRACER_FREEZE_TIME"] = first
            log = open(os.path.join(tmp, "app.log"), "w+b")
            app = subprocess.Popen(self.app, cwd=self.cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_port(app, port, log)
            for c in sorted(self.cassettes, key=lambda c: c.recorded_at):
                self.results[c.path] = self._judge(c, port)
            # Every recorded call must have been made: whatever is left was not.
            for calls in self.calls:
                for c, ev in calls.pending:
                    ok, why = self.results.get(c.path, (True, ""))
                    sig = ev.get("signature") or {}
                    line = "recorded call not made: %s %s" % (sig.get("method"), sig.get("url"))
                    self.results[c.path] = (False, (why + "\n" if why else "") + line)
        except Exception as e:
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            if app is not None and app.poll() is None:
                try:
                    os.killpg(app.pid, 15)
                    app.wait(timeout=10)
                except Exception:
                    app.kill()
            for s in getattr(self, "servers", []):
                s.shutdown()
                s.server_close()
            shutil.rmtree(tmp, ignore_errors=True)
        return self

    def _wait_port(self, app, port, log):
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if app.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    "the app exited with status %s before listening on port %d; its output:\n%s"
                    % (app.returncode, port, log.read().decode(errors="replace")[-4000:])
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the app did not listen on port %d within %.0f s"
                           % (port, self.startup_timeout))

    def _judge(self, c, port):
        req = c.data.get("request") or {}
        rec = c.data.get("response") or {}
        recorded = req.get("header_list") or list((req.get("headers") or {}).items())
        headers = [(k, v) for k, v in recorded if k.lower() not in _SKIP_SEND]
        body = body_bytes(req.get("body"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.request_timeout)
        try:
            conn.putrequest(c.method, c.target, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            if body or c.method in ("POST", "PUT", "PATCH"):
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            got_body = resp.read()
            status = resp.status
        except OSError as e:
            return False, "the app did not answer %s %s: %s" % (c.method, c.target, e)
        finally:
            conn.close()
        problems = []
        want_status = rec.get("status")
        if status != want_status:
            problems.append("status: %s → %s" % (want_status, status))
        want_body = body_bytes(rec.get("body"))
        if (rec.get("body") or {}).get("truncated"):
            want_body = None  # only a prefix was recorded: the status is all we can compare
        if want_body is not None and got_body != want_body:
            diff = _json_diff(want_body, got_body)
            if diff is not None:
                if diff:
                    problems.append("body%s" % diff)
            else:
                at = next((i for i, (a, b) in enumerate(zip(want_body, got_body)) if a != b),
                          min(len(want_body), len(got_body)))
                problems.append("body differs at byte %d (recorded %d bytes, got %d)"
                                % (at, len(want_body), len(got_body)))
        if not problems:
            return True, ""
        return False, "%s %s → %s (recorded %s)\n    %s" % (
            c.method, c.target, status, want_status, "\n    ".join(problems))


def _json_diff(a, b, path=""):
    """The first difference of two JSON documents (``.items[2].id: 1 → 2``), "" when equal,
    None when either is not JSON."""
    if path == "":
        try:
            a, b = json.loads(a), json.loads(b)
        except ValueError:
            return None
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b or k not in a:
                return "%s.%s: %s → %s" % (path, k, json.dumps(a.get(k)), json.dumps(b.get(k)))
            d = _json_diff(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return ""
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _json_diff(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        if len(a) != len(b):
            return "%s: %d items → %d" % (path, len(a), len(b))
        return ""
    if a != b or type(a) is not type(b) and not (isinstance(a, (int, float))
                                                 and isinstance(b, (int, float))):
        return "%s: %s → %s" % (path, json.dumps(a), json.dumps(b))
    return ""
