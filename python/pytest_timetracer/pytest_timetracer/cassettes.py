"""Reading cassettes: the files of a directory, their request and their recorded calls."""

import base64
import gzip
import json
import os

READABLE = (".json", ".json.gz")
# Written by the agent too, but only the agent and the `timetracer` CLI read them (zstd, age).
AGENT_ONLY = (".json.zst", ".json.age", ".json.gz.age", ".json.zst.age")


class CassetteError(Exception):
    """A cassette that cannot be used; the message names the file and the fix."""


class Cassette:
    """One recorded request: ``path``, ``id`` (the last ``__`` part of the file name),
    ``method``, ``target``, ``data`` (the parsed JSON, or None when only the agent can read it)."""

    def __init__(self, path, data=None, method="?", target="?"):
        self.path = os.path.abspath(path)
        self.data = data
        self.method = method
        self.target = target
        stem = os.path.basename(path).split(".json", 1)[0]
        self.id = stem.rsplit("__", 1)[-1] if "__" in stem else stem

    @property
    def name(self):
        """The test's name, the same as the JUnit test case of `timetracer-agent replay --junit`."""
        return "%s %s (%s)" % (self.method, self.target, self.id)

    @property
    def recorded_at(self):
        return ((self.data or {}).get("session") or {}).get("recorded_at") or ""

    def http_calls(self):
        """The recorded outbound HTTP calls (``http.client`` events), in start order."""
        events = (self.data or {}).get("events") or []
        return [e for e in events if e.get("type") == "http.client"]

    def other_calls(self):
        """Recorded calls that are not HTTP (databases, Redis, failed connects)."""
        events = (self.data or {}).get("events") or []
        return [e for e in events if e.get("type") != "http.client"]


def find(directory):
    """Every cassette file under ``directory`` (recursively), sorted by path."""
    if not os.path.isdir(directory):
        if os.path.isfile(directory):
            return [directory]
        raise CassetteError(
            "--timetracer-cassettes %s: no such directory (give the directory `timetracer-agent "
            "record --out` wrote)" % directory
        )
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(READABLE) or f.endswith(AGENT_ONLY):
                found.append(os.path.join(root, f))
    return found


def load(path):
    """A :class:`Cassette`; an agent-only format (zstd, age) has ``data`` None."""
    if path.endswith(AGENT_ONLY):
        return Cassette(path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CassetteError("%s: not a readable cassette (%s)" % (path, e))
    req = data.get("request") or {}
    return Cassette(path, data, req.get("method") or "?", req.get("target") or req.get("path") or "?")


def body_bytes(body):
    """The stored bytes of a cassette body (docs/cassette-format.md, "Exactness rule")."""
    if not body or not body.get("_captured"):
        return b""
    enc, data = body.get("encoding"), body.get("data")
    if enc == "json":
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if enc in ("text", "utf-8"):
        return str(data).encode("utf-8")
    if enc == "base64":
        return base64.b64decode(data or "")
    return b""
