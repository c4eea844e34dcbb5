"""A minimal MongoDB wire server for the tests (no MongoDB server installs here; issue 26).

Speaks enough of the wire protocol for a real pymongo client: the handshake (`hello` /
`isMaster` as OP_MSG or legacy OP_QUERY, with `topologyVersion`, so pymongo's monitor uses
the awaitable hello, held for `maxAwaitTimeMS` as a server does), `insert` (document
sequences), `find` (filter, projection, sort, skip, limit, batchSize), `getMore`,
`killCursors`, `update` (`$set`, `$inc`, `$unset`, replacement), `delete`, `aggregate`
(`$match`, `$group` with `$sum`/`$avg`/`$min`/`$max`/`$push`, `$sort`, `$skip`, `$limit`,
`$project` inclusion, `$count`), `count`, `ping`, `buildInfo`, `endSessions`. Data is in
memory. OP_MSG checksums are accepted and skipped; compression is not offered. Built on
pymongo's own BSON codec (`bson`); the framing is written here (`generate.py` of
tests/fixtures/mongodb has the same).

Usage: python mongo_wire_server.py PORT
"""

import itertools
import socket
import struct
import sys
import threading
import time

import bson
from bson.codec_options import CodecOptions
from bson.son import SON

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
OPTS = CodecOptions(document_class=SON)
PROCESS_ID = bson.ObjectId()
lock = threading.Lock()
collections = {}  # "db.coll" -> list of documents (insertion order)
cursors = {}  # id -> (ns, remaining documents)
cursor_ids = itertools.count(1000)
conn_ids = itertools.count(1)
request_ids = itertools.count(1)


def log(*a):
    print("mongo_wire_server:", *a, file=sys.stderr, flush=True)


class CommandError(Exception):
    def __init__(self, code, name, msg):
        super().__init__(msg)
        self.code, self.name, self.msg = code, name, msg


def get_path(doc, path):
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def compare_key(v):
    # Numbers before strings before the rest, like MongoDB's type order (enough for tests).
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (4, v)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    return (3, str(v))


def matches(doc, flt):
    for key, cond in (flt or {}).items():
        if key == "$and":
            if not all(matches(doc, c) for c in cond):
                return False
            continue
        if key == "$or":
            if not any(matches(doc, c) for c in cond):
                return False
            continue
        val = get_path(doc, key)
        if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            for op, arg in cond.items():
                if op == "$eq" and val != arg:
                    return False
                if op == "$ne" and val == arg:
                    return False
                if op == "$in" and val not in arg:
                    return False
                if op == "$nin" and val in arg:
                    return False
                if op == "$exists" and (val is not None) != bool(arg):
                    return False
                if op in ("$gt", "$gte", "$lt", "$lte"):
                    if val is None:
                        return False
                    a, b = compare_key(val), compare_key(arg)
                    if a[0] != b[0]:
                        return False
                    if not {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]:
                        return False
                if op not in ("$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte"):
                    raise CommandError(2, "BadValue", "unknown operator: %s" % op)
        elif val != cond:
            return False
    return True


def sort_docs(docs, spec):
    for key, direction in reversed(list((spec or {}).items())):
        docs = sorted(docs, key=lambda d: compare_key(get_path(d, key)), reverse=direction < 0)
    return docs


def project(doc, proj):
    if not proj:
        return doc
    include = [k for k, v in proj.items() if v and k != "_id"]
    out = SON()
    if proj.get("_id", 1):
        out["_id"] = doc.get("_id")
    if include:
        for k in include:
            if k in doc:
                out[k] = doc[k]
    else:
        for k, v in doc.items():
            if k not in proj and k != "_id":
                out[k] = v
    return out


def cursor_reply(ns, docs, batch_size, first=True):
    batch_size = batch_size or 101
    batch, rest = docs[:batch_size], docs[batch_size:]
    cid = 0
    if rest:
        cid = next(cursor_ids)
        cursors[cid] = (ns, rest)
    key = "firstBatch" if first else "nextBatch"
    return SON([("cursor", SON([(key, batch), ("id", bson.Int64(cid)), ("ns", ns)])), ("ok", 1.0)])


def accumulate(op, arg, docs):
    vals = [evaluate(arg, d) for d in docs]
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if op == "$sum":
        return sum(nums)
    if op == "$avg":
        return sum(nums) / len(nums) if nums else None
    if op == "$min":
        return min(vals, key=compare_key) if vals else None
    if op == "$max":
        return max(vals, key=compare_key) if vals else None
    if op == "$push":
        return vals
    raise CommandError(15952, "Location15952", "unknown group operator '%s'" % op)


def evaluate(expr, doc):
    if isinstance(expr, str) and expr.startswith("$"):
        return get_path(doc, expr[1:])
    return expr


def aggregate(docs, pipeline):
    for stage in pipeline:
        (name, spec), = stage.items()
        if name == "$match":
            docs = [d for d in docs if matches(d, spec)]
        elif name == "$sort":
            docs = sort_docs(docs, spec)
        elif name == "$skip":
            docs = docs[spec:]
        elif name == "$limit":
            docs = docs[:spec]
        elif name == "$project":
            docs = [project(d, spec) for d in docs]
        elif name == "$count":
            docs = [SON([(spec, len(docs))])] if docs else []
        elif name == "$group":
            groups = {}
            for d in docs:
                key = evaluate(spec["_id"], d)
                groups.setdefault(repr(key), (key, []))[1].append(d)
            out = []
            for key, members in groups.values():
                g = SON([("_id", key)])
                for field, acc in spec.items():
                    if field != "_id":
                        (op, arg), = acc.items()
                        g[field] = accumulate(op, arg, members)
                out.append(g)
            docs = out
        else:
            raise CommandError(40324, "Location40324", "Unrecognized pipeline stage name: '%s'" % name)
    return docs


def apply_update(doc, upd):
    if not any(k.startswith("$") for k in upd):
        new = SON([("_id", doc["_id"])])
        new.update((k, v) for k, v in upd.items() if k != "_id")
        return new
    new = SON(doc)
    for op, fields in upd.items():
        for k, v in fields.items():
            if op == "$set":
                new[k] = v
            elif op == "$inc":
                new[k] = new.get(k, 0) + v
            elif op == "$unset":
                new.pop(k, None)
            else:
                raise CommandError(9, "FailedToParse", "Unknown modifier: %s" % op)
    return new


def hello_reply(cmd, conn_id):
    legacy = "hello" not in cmd
    r = SON()
    r["isWritablePrimary" if not legacy else "ismaster"] = True
    if cmd.get("helloOk"):
        r["helloOk"] = True
    r["topologyVersion"] = SON([("processId", PROCESS_ID), ("counter", bson.Int64(0))])
    r["maxBsonObjectSize"] = 16777216
    r["maxMessageSizeBytes"] = 48000000
    r["maxWriteBatchSize"] = 100000
    r["localTime"] = bson.datetime.datetime.now(bson.datetime.timezone.utc)
    r["logicalSessionTimeoutMinutes"] = 30
    r["connectionId"] = conn_id
    r["minWireVersion"] = 0
    r["maxWireVersion"] = 21
    r["readOnly"] = False
    r["ok"] = 1.0
    return r


def run_command(cmd, conn_id):
    name = next(iter(cmd))
    lname = name.lower()
    db = cmd.get("$db", "admin")
    if lname in ("hello", "ismaster"):
        if "topologyVersion" in cmd and "maxAwaitTimeMS" in cmd:
            # Awaitable hello: nothing ever changes here, so wait the whole time.
            time.sleep(min(cmd["maxAwaitTimeMS"], 30000) / 1000.0)
        return hello_reply(cmd, conn_id)
    if lname in ("ping", "endsessions"):
        return SON([("ok", 1.0)])
    if lname == "buildinfo":
        return SON([("version", "7.0.0"), ("versionArray", [7, 0, 0, 0]), ("ok", 1.0)])
    with lock:
        if name == "insert":
            coll = collections.setdefault("%s.%s" % (db, cmd["insert"]), [])
            errors = []
            n = 0
            for i, d in enumerate(cmd.get("documents", [])):
                if any(x.get("_id") == d.get("_id") for x in coll):
                    errors.append(SON([("index", i), ("code", 11000),
                                       ("errmsg", "E11000 duplicate key error collection: %s.%s index: _id_ dup key: { _id: %r }" % (db, cmd["insert"], d.get("_id")))]))
                    if cmd.get("ordered", True):
                        break
                    continue
                coll.append(d)
                n += 1
            r = SON([("n", n)])
            if errors:
                r["writeErrors"] = errors
            r["ok"] = 1.0
            return r
        if name == "find":
            ns = "%s.%s" % (db, cmd["find"])
            docs = [d for d in collections.get(ns, []) if matches(d, cmd.get("filter"))]
            docs = sort_docs(docs, cmd.get("sort"))
            docs = docs[cmd.get("skip", 0):]
            limit = abs(cmd.get("limit", 0))
            if limit:
                docs = docs[:limit]
            docs = [project(d, cmd.get("projection")) for d in docs]
            batch = cmd.get("batchSize")
            if cmd.get("singleBatch"):
                batch = len(docs) or 1
            return cursor_reply(ns, docs, batch)
        if name == "getMore":
            cid = int(cmd["getMore"])
            if cid not in cursors:
                raise CommandError(43, "CursorNotFound", "cursor id %d not found" % cid)
            ns, rest = cursors.pop(cid)
            r = cursor_reply(ns, rest, cmd.get("batchSize"), first=False)
            if r["cursor"]["id"]:
                # Keep the id the client holds.
                new = int(r["cursor"]["id"])
                cursors[cid] = cursors.pop(new)
                r["cursor"]["id"] = bson.Int64(cid)
            return r
        if name == "killCursors":
            killed = [c for c in cmd.get("cursors", []) if cursors.pop(int(c), None) is not None]
            return SON([("cursorsKilled", killed), ("cursorsNotFound", []), ("cursorsAlive", []),
                        ("cursorsUnknown", []), ("ok", 1.0)])
        if name == "update":
            coll = collections.setdefault("%s.%s" % (db, cmd["update"]), [])
            n = modified = 0
            for u in cmd.get("updates", []):
                for i, d in enumerate(coll):
                    if matches(d, u.get("q")):
                        new = apply_update(d, u["u"])
                        n += 1
                        modified += int(new != d)
                        coll[i] = new
                        if not u.get("multi"):
                            break
            return SON([("n", n), ("nModified", modified), ("ok", 1.0)])
        if name == "delete":
            coll = collections.setdefault("%s.%s" % (db, cmd["delete"]), [])
            n = 0
            for q in cmd.get("deletes", []):
                keep = []
                removed = 0
                for d in coll:
                    if matches(d, q.get("q")) and (q.get("limit", 0) == 0 or removed < 1):
                        removed += 1
                    else:
                        keep.append(d)
                coll[:] = keep
                n += removed
            return SON([("n", n), ("ok", 1.0)])
        if name == "aggregate":
            ns = "%s.%s" % (db, cmd["aggregate"])
            docs = aggregate(list(collections.get(ns, [])), cmd.get("pipeline", []))
            return cursor_reply(ns, docs, cmd.get("cursor", {}).get("batchSize"))
        if name == "count":
            ns = "%s.%s" % (db, cmd["count"])
            return SON([("n", sum(1 for d in collections.get(ns, []) if matches(d, cmd.get("query")))), ("ok", 1.0)])
    raise CommandError(59, "CommandNotFound", "no such command: '%s'" % name)


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError
        buf += b
    return buf


def decode_op_msg(body):
    flags = struct.unpack("<I", body[:4])[0]
    pos, end = 4, len(body) - (4 if flags & 1 else 0)
    cmd = None
    while pos < end:
        kind = body[pos]
        pos += 1
        if kind == 0:
            n = struct.unpack("<i", body[pos:pos + 4])[0]
            cmd = bson.decode(body[pos:pos + n], OPTS)
            pos += n
        elif kind == 1:
            size = struct.unpack("<i", body[pos:pos + 4])[0]
            ident, rest = body[pos + 4:pos + size].split(b"\x00", 1)
            cmd[ident.decode()] = bson.decode_all(rest, OPTS)
            pos += size
        else:
            raise ValueError("bad section kind %d" % kind)
    return flags, cmd


def serve_conn(s, conn_id):
    try:
        while True:
            header = read_exact(s, 16)
            length, req_id, _resp_to, opcode = struct.unpack("<iiii", header)
            body = read_exact(s, length - 16)
            if opcode == OP_QUERY:
                end = body.index(b"\x00", 4)
                start = end + 1 + 8
                n = struct.unpack("<i", body[start:start + 4])[0]
                cmd = bson.decode(body[start:start + n], OPTS)
                if "$query" in cmd:
                    cmd = cmd["$query"]
                flags = 0
            elif opcode == OP_MSG:
                flags, cmd = decode_op_msg(body)
            else:
                log("connection %d: unsupported opcode %d" % (conn_id, opcode))
                return
            try:
                reply = run_command(cmd, conn_id)
            except CommandError as e:
                reply = SON([("ok", 0.0), ("errmsg", e.msg), ("code", e.code), ("codeName", e.name)])
            if flags & 2:  # moreToCome: no reply
                continue
            doc = bson.encode(reply)
            if opcode == OP_QUERY:
                payload = struct.pack("<iqii", 8, 0, 0, 1) + doc
                s.sendall(struct.pack("<iiii", 16 + len(payload), next(request_ids), req_id, OP_REPLY) + payload)
            else:
                payload = struct.pack("<I", 0) + b"\x00" + doc
                s.sendall(struct.pack("<iiii", 16 + len(payload), next(request_ids), req_id, OP_MSG) + payload)
    except (EOFError, OSError):
        pass
    finally:
        s.close()


def main():
    port = int(sys.argv[1])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    log("listening on 127.0.0.1:%d" % port)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve_conn, args=(c, next(conn_ids)), daemon=True).start()


if __name__ == "__main__":
    main()
