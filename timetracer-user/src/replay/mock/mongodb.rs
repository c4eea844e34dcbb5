//! MongoDB mock server: every message the app sends (`OP_MSG` with its kind 0 body and kind 1
//! document sequences, with or without checksum; the legacy `OP_QUERY` handshake; an
//! `OP_COMPRESSED` wrapping either) is decoded exactly as the recorder decodes it
//! (`protocols::mongodb::decode_message`) and matched against the recorded commands: command
//! name, database, collection, then the command document field by field (key order counts,
//! as it does for `sort`), leaving out the per-run fields
//! ([`PER_RUN_FIELDS`](crate::protocols::mongodb::PER_RUN_FIELDS): `lsid`, `$clusterTime`,
//! `txnNumber`, `maxTimeMS`). The ObjectIds a driver generates for inserted documents
//! without `_id` differ on every run: an `insert`'s `documents[i]._id` matches any ObjectId
//! when the recorded one was an ObjectId too. A recorded `"[REDACTED]"` value matches anything.
//!
//! The answer is the recorded reply *document*, framed anew for the live request: an
//! `OP_MSG` reply (no checksum, no `moreToCome`) to an `OP_MSG`, an `OP_REPLY` to an
//! `OP_QUERY`, with `responseTo` = the live request's `requestID`. Recorded cursor ids are
//! replayed as they are, so the app's `getMore` carries the recorded id and matches the
//! recorded `getMore`. A request with `moreToCome` (`w: 0`) gets no reply.
//!
//! Compression: the mock declines it. The `compression` field is removed from every
//! handshake reply, so drivers send uncompressed messages; a compressed message still arrives
//! (noop, zlib, zstd) is decoded, snappy is a miss naming the reason. Replies are never
//! compressed (drivers accept that).
//!
//! Handshake and monitoring: `hello` / `isMaster` (on any connection, any number of times,
//! never counted as unmatched) are answered with a recorded handshake reply of this
//! destination, else by rule (a standalone server's reply built from the recorded server
//! facts, journaled "answered by rule"). An awaitable `hello` (`topologyVersion` +
//! `maxAwaitTimeMS`, pymongo's streaming monitor) is answered after `maxAwaitTimeMS` (at most
//! [`MAX_HOLD`]), as a server whose topology never changes does, so monitors do not spin;
//! only that monitor connection waits. `ping`, `buildInfo`, `endSessions` and `killCursors`
//! are answered from a matching recording, else by rule. `saslStart` / `saslContinue` are
//! replayed when recorded, except a SCRAM exchange whose server payloads the recording
//! redacted (it cannot be replayed without the password): a miss saying so.
//!
//! A miss is an `ok: 0` reply (`code` 8 `UnknownError`, not retryable) whose `errmsg` is
//! `timetracer replay: no recorded call matches <command>: <field>: expected …, got …`; the
//! connection stays usable. Malformed framing: a miss and close.
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Io;
use crate::protocols::mongodb::{
    Command, MAX_MESSAGE, OP_COMPRESSED, OP_DELETE, OP_GET_MORE, OP_INSERT, OP_KILL_CURSORS,
    OP_MSG, OP_QUERY, OP_REPLY, OP_UPDATE, PER_RUN_FIELDS, bson, decode_message, decompress,
    describe_command,
};
use crate::replay::ledger::{Destination, Diff, Miss, RecordedCall};

/// Longest an awaitable `hello` is held (pymongo asks for its heartbeat frequency, 10 s).
pub const MAX_HOLD: Duration = Duration::from_secs(30);
/// Smallest message framed: header + the smallest body of any opcode.
const MIN_FRAME: usize = 16 + 4;
/// The error code of a miss: `UnknownError`, which no driver retries.
const MISS_CODE: i32 = 8;

/// Serves one accepted connection until the app closes it.
///
/// # Errors
/// I/O errors of the connection.
pub async fn serve(dest: Arc<Destination>, mut io: impl Io) -> anyhow::Result<()> {
    let mut s = Session::new(dest);
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        s.feed(&mut buf);
        let mut more = false;
        if let Some(hold) = s.hold.take() {
            // An awaitable hello: answer when the wait asked for is over, or at once if the
            // app sends something (or closes) meanwhile.
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                n = io.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    more = true;
                }
            }
        }
        if !s.out.is_empty() {
            io.write_all(&s.out).await?;
            io.flush().await?;
            s.out.clear();
        }
        if s.closed {
            let _ = io.shutdown().await;
            return Ok(());
        }
        if more {
            continue;
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The protocol state of one mocked connection.
pub(crate) struct Session {
    dest: Arc<Destination>,
    pub(crate) out: Vec<u8>,
    pub(crate) closed: bool,
    /// `requestID` of the next reply.
    next_id: i32,
    /// The reply in `out` answers an awaitable `hello`: send it after this long.
    pub(crate) hold: Option<Duration>,
}

impl Session {
    pub(crate) fn new(dest: Arc<Destination>) -> Self {
        Self {
            dest,
            out: Vec::new(),
            closed: false,
            next_id: 1,
            hold: None,
        }
    }

    /// Answers every complete message of `buf`, in order (stopping after an awaitable
    /// `hello`, whose reply is held).
    pub(crate) fn feed(&mut self, buf: &mut BytesMut) {
        while !self.closed && self.hold.is_none() && buf.len() >= 16 {
            let len = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let Some(len) = usize::try_from(len)
                .ok()
                .filter(|l| (MIN_FRAME..=MAX_MESSAGE).contains(l))
            else {
                self.dest.miss(
                    &format!("message of {len} bytes"),
                    &format!(
                        "malformed MongoDB message: length {len} outside {MIN_FRAME}..={MAX_MESSAGE}; connection closed"
                    ),
                );
                self.closed = true;
                buf.clear();
                return;
            };
            if buf.len() < len {
                return;
            }
            let raw = buf.split_to(len);
            self.message(&raw);
        }
    }

    fn message(&mut self, raw: &[u8]) {
        let h = |i: usize| i32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let (req_id, opcode) = (h(4), h(12));
        let cmd = match decode_message(raw) {
            Ok(c) => c,
            Err(reason) => {
                let (what, why) = undecodable(opcode, reason);
                let miss = self.dest.miss(&what, &why);
                // Legacy writes expect no reply; anything else gets an error it can read.
                if !matches!(opcode, OP_INSERT | OP_UPDATE | OP_DELETE | OP_KILL_CURSORS) {
                    let inner = if opcode == OP_COMPRESSED && raw.len() >= 20 {
                        h(16)
                    } else {
                        opcode
                    };
                    let op = if matches!(inner, OP_QUERY | OP_GET_MORE) {
                        "OP_QUERY"
                    } else {
                        "OP_MSG"
                    };
                    let doc = error_doc(&miss);
                    self.push_reply(op, req_id, &doc);
                }
                return;
            }
        };
        let what = describe_command(&cmd.doc, cmd.db.as_deref());
        if let Some(p) = cmd.problem {
            let miss = self.dest.miss(
                &what,
                &format!("the app's message could not be decoded whole ({p})"),
            );
            self.error(&cmd, &miss);
            return;
        }
        let lower = cmd.name().to_ascii_lowercase();
        match lower.as_str() {
            "hello" | "ismaster" => self.hello(&cmd),
            "ping" | "buildinfo" | "endsessions" | "killcursors" => {
                match self.dest.try_take(|c| compare(&cmd, c)) {
                    Some(c) => self.answer(&cmd, &what, &c),
                    None => self.by_rule(&cmd, &lower),
                }
            }
            _ => match self.dest.take(&what, |c| compare(&cmd, c)) {
                Ok(c) => self.answer(&cmd, &what, &c),
                Err(miss) => self.error(&cmd, &miss),
            },
        }
    }

    /// Answers `cmd` with the recorded reply of `c`.
    fn answer(&mut self, cmd: &Command, what: &str, c: &RecordedCall) {
        if cmd.more_to_come() {
            return;
        }
        let reason = if c.truncated {
            Some("the recorded reply was truncated at the capture cap and cannot be replayed")
        } else if c.response.is_empty() {
            Some("the recording holds no reply to this command (lost while recording)")
        } else if cmd.name().to_ascii_lowercase().starts_with("sasl")
            && c.event
                .db
                .as_ref()
                .and_then(|d| d.pointer("/reply/payload"))
                .is_some_and(|p| p.as_str() == Some(bson::REDACTED))
        {
            Some(
                "SCRAM authentication cannot be replayed: the recording has the server's nonce \
                 and signature redacted (by design) and the mock cannot prove the password; \
                 replay with a connection string without credentials, or keep MongoDB live \
                 (--live mongodb)",
            )
        } else {
            None
        };
        if let Some(r) = reason {
            let miss = self.dest.miss(what, r);
            self.error(cmd, &miss);
            return;
        }
        match reply_doc(&c.response) {
            Ok(doc) => self.push_reply(cmd.op, cmd.request_id, &doc),
            Err(e) => {
                let miss = self
                    .dest
                    .miss(what, &format!("the recorded reply cannot be read ({e})"));
                self.error(cmd, &miss);
            }
        }
    }

    /// `hello` / `isMaster`: a recorded handshake reply (same command and opcode first), else
    /// a standalone server's by rule; held when awaitable.
    fn hello(&mut self, cmd: &Command) {
        let usable = |c: &RecordedCall| {
            let m = c.event.signature.method.to_ascii_lowercase();
            (m == "hello" || m == "ismaster") && !c.truncated && reply_doc(&c.response).is_ok()
        };
        let op = cmd.op;
        let name = cmd.name().to_owned();
        let same = |c: &RecordedCall| {
            let rec_op = c.event.db.as_ref().and_then(|d| d.get("op"));
            if usable(c)
                && c.event.signature.method == name
                && rec_op.and_then(Value::as_str) == Some(op)
            {
                Ok(())
            } else {
                Err(Diff::new("command", &c.event.signature.method, &name))
            }
        };
        let any = |c: &RecordedCall| {
            if usable(c) {
                Ok(())
            } else {
                Err(Diff::new("command", &c.event.signature.method, &name))
            }
        };
        let recorded = self
            .dest
            .try_take(same)
            .or_else(|| self.dest.try_take(any))
            .and_then(|c| reply_doc(&c.response).ok());
        let doc = match recorded {
            Some(d) => without(&d, "compression"),
            None => {
                self.dest.answered_by_rule(
                    &format!("{name} (handshake)"),
                    "a standalone server's handshake reply with the recorded server facts \
                     (no handshake recorded for this destination)",
                );
                self.rule_hello(cmd)
            }
        };
        if cmd.doc.contains_key("topologyVersion")
            && let Some(ms) = cmd.doc.get("maxAwaitTimeMS").and_then(Value::as_u64)
        {
            self.hold = Some(Duration::from_millis(ms).min(MAX_HOLD));
        }
        self.push_reply(cmd.op, cmd.request_id, &doc);
    }

    /// A standalone server's `hello` / `isMaster` reply, limits from the recorded facts.
    fn rule_hello(&self, cmd: &Command) -> Vec<u8> {
        let facts = self
            .dest
            .facts
            .iter()
            .find_map(|f| f.get("hello").and_then(Value::as_object));
        let int = |k: &str, default: i32| {
            facts
                .and_then(|h| h.get(k))
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(default)
        };
        let mut d = Doc::default();
        if cmd.name() == "hello" {
            d.bool("isWritablePrimary", true);
        } else {
            d.bool("ismaster", true);
        }
        if cmd
            .doc
            .get("helloOk")
            .is_some_and(|v| v != &Value::Bool(false))
        {
            d.bool("helloOk", true);
        }
        d.i32("maxBsonObjectSize", int("maxBsonObjectSize", 16_777_216));
        d.i32(
            "maxMessageSizeBytes",
            int("maxMessageSizeBytes", 48_000_000),
        );
        d.i32("maxWriteBatchSize", int("maxWriteBatchSize", 100_000));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_millis()).unwrap_or(0));
        d.date("localTime", now);
        d.i32(
            "logicalSessionTimeoutMinutes",
            int("logicalSessionTimeoutMinutes", 30),
        );
        d.i32("connectionId", self.next_id);
        d.i32("minWireVersion", int("minWireVersion", 0));
        d.i32("maxWireVersion", int("maxWireVersion", 21));
        d.bool("readOnly", false);
        d.f64("ok", 1.0);
        d.finish()
    }

    /// `ping`, `buildInfo`, `endSessions`, `killCursors` not recorded: answered as a server does.
    fn by_rule(&mut self, cmd: &Command, lower: &str) {
        let mut d = Doc::default();
        let rule = match lower {
            "buildinfo" => {
                let wire = self
                    .dest
                    .facts
                    .iter()
                    .find_map(|f| f.pointer("/hello/maxWireVersion").and_then(Value::as_i64))
                    .unwrap_or(21);
                let (major, minor) = server_version(wire);
                d.str("version", &format!("{major}.{minor}.0"));
                d.arr_i32("versionArray", &[major, minor, 0, 0]);
                d.i32("maxBsonObjectSize", 16_777_216);
                "the server version of the recorded wire version (not recorded)"
            }
            "killcursors" => {
                let ids: Vec<i64> = cmd
                    .doc
                    .get("cursors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .collect();
                d.arr_i64("cursorsKilled", &ids);
                d.arr_i64("cursorsNotFound", &[]);
                d.arr_i64("cursorsAlive", &[]);
                d.arr_i64("cursorsUnknown", &[]);
                "the cursors reported killed (not recorded)"
            }
            _ => "ok: 1 (not recorded)",
        };
        d.f64("ok", 1.0);
        self.dest.answered_by_rule(cmd.name(), rule);
        if !cmd.more_to_come() {
            self.push_reply(cmd.op, cmd.request_id, &d.finish());
        }
    }

    /// An `ok: 0` reply naming the miss (none to a `moreToCome` request).
    fn error(&mut self, cmd: &Command, miss: &Miss) {
        if cmd.more_to_come() {
            return;
        }
        let doc = error_doc(miss);
        self.push_reply(cmd.op, cmd.request_id, &doc);
    }

    /// Frames `doc` as the reply to request `to` sent with opcode `op`.
    fn push_reply(&mut self, op: &str, to: i32, doc: &[u8]) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.out.extend_from_slice(&frame(op, id, to, doc));
    }
}

/// What an undecodable message is, and why it cannot be answered.
fn undecodable(opcode: i32, reason: &str) -> (String, String) {
    let what = match opcode {
        OP_INSERT => "OP_INSERT".to_owned(),
        OP_UPDATE => "OP_UPDATE".to_owned(),
        OP_DELETE => "OP_DELETE".to_owned(),
        OP_GET_MORE => "OP_GET_MORE".to_owned(),
        OP_KILL_CURSORS => "OP_KILL_CURSORS".to_owned(),
        OP_COMPRESSED => "OP_COMPRESSED message".to_owned(),
        other => format!("message with opcode {other}"),
    };
    let why = match reason {
        "mongodb-legacy-opcode" => "a legacy opcode (removed in MongoDB 6.0) is not replayed: \
                                    the recorder does not record it either"
            .to_owned(),
        "mongodb-compressed-unsupported" => "compressed with a compressor the mock does not \
                                             decode (snappy): the mock offers no compression, \
                                             set the client's compressors to zlib or zstd"
            .to_owned(),
        other => format!("the app's message could not be decoded ({other})"),
    };
    (what, why)
}

/// `{ok: 0, errmsg, code, codeName}` for a miss.
fn error_doc(miss: &Miss) -> Vec<u8> {
    let mut d = Doc::default();
    d.f64("ok", 0.0);
    d.str("errmsg", &super::postgres::miss_message(miss));
    d.i32("code", MISS_CODE);
    d.str("codeName", "UnknownError");
    d.finish()
}

/// The first difference between the app's command and a recorded one.
fn compare(cmd: &Command, c: &RecordedCall) -> Result<(), Diff> {
    let name = cmd.name();
    let Some(det) = c.event.db.as_ref() else {
        return Err(Diff::new("command", "(no recorded command)", name));
    };
    let Some(rec) = det.get("command").and_then(Value::as_object) else {
        return Err(Diff::new("command", "(no recorded command)", name));
    };
    let rname = rec.keys().next().map_or("", String::as_str);
    if rname != name {
        return Err(Diff::new("command", rname, name));
    }
    let rdb = det.get("db").and_then(Value::as_str).unwrap_or("(none)");
    let adb = cmd.db.as_deref().unwrap_or("(none)");
    if rdb != adb {
        return Err(Diff::new("db", rdb, adb).at_depth(1));
    }
    let (rt, at) = (&rec[rname], &cmd.doc[name]);
    if (rt.is_string() || at.is_string()) && rt != at {
        return Err(Diff::new("collection", show(Some(rt)), show(Some(at))).at_depth(2));
    }
    let adopted;
    let app = if name == "insert" {
        adopted = adopt_generated_ids(&cmd.doc, rec);
        &adopted
    } else {
        &cmd.doc
    };
    let mut skip: Vec<&str> = PER_RUN_FIELDS.to_vec();
    skip.extend(["$db", name]);
    match diff_map("", rec, app, &skip) {
        Some(d) => Err(d.at_depth(Diff::PARAMS_DEPTH)),
        None => Ok(()),
    }
}

/// The app's `insert` with each `documents[i]._id` that is an ObjectId replaced by the
/// recorded one when that is an ObjectId too: drivers generate a new one on every run.
fn adopt_generated_ids(app: &Map<String, Value>, rec: &Map<String, Value>) -> Map<String, Value> {
    let mut out = app.clone();
    let is_oid = |v: Option<&Value>| {
        v.and_then(Value::as_object)
            .is_some_and(|o| o.len() == 1 && o.contains_key("$oid"))
    };
    if let (Some(Value::Array(docs)), Some(Value::Array(rdocs))) =
        (out.get_mut("documents"), rec.get("documents"))
    {
        for (d, r) in docs.iter_mut().zip(rdocs) {
            if let (Value::Object(d), Value::Object(r)) = (d, r)
                && is_oid(d.get("_id"))
                && is_oid(r.get("_id"))
            {
                d.insert("_id".to_owned(), r["_id"].clone());
            }
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), ToString::to_string)
}

/// The first difference of two documents (recorded, app), keys in `skip` left out; key order
/// counts (`sort: {a: 1, b: 1}` is not `{b: 1, a: 1}`).
fn diff_map(
    path: &str,
    rec: &Map<String, Value>,
    app: &Map<String, Value>,
    skip: &[&str],
) -> Option<Diff> {
    for (k, r) in rec.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let p = join(path, k);
        match app.get(k) {
            Some(a) => {
                if let Some(d) = diff_value(&p, r, a) {
                    return Some(d);
                }
            }
            None => return Some(Diff::new(p, show(Some(r)), "(absent)")),
        }
    }
    for (k, a) in app.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        if !rec.contains_key(k) {
            return Some(Diff::new(join(path, k), "(absent)", show(Some(a))));
        }
    }
    let order = |m: &Map<String, Value>| {
        m.keys()
            .filter(|k| !skip.contains(&k.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (ro, ao) = (order(rec), order(app));
    (ro != ao).then(|| {
        Diff::new(
            if path.is_empty() { "(key order)" } else { path },
            format!("keys {}", ro.join(", ")),
            format!("keys {}", ao.join(", ")),
        )
    })
}

fn diff_value(path: &str, rec: &Value, app: &Value) -> Option<Diff> {
    if rec.as_str() == Some(bson::REDACTED) {
        return None;
    }
    match (rec, app) {
        (Value::Object(r), Value::Object(a)) => diff_map(path, r, a, &[]),
        (Value::Array(r), Value::Array(a)) => {
            for i in 0..r.len().max(a.len()) {
                let p = format!("{path}[{i}]");
                match (r.get(i), a.get(i)) {
                    (Some(x), Some(y)) => {
                        if let Some(d) = diff_value(&p, x, y) {
                            return Some(d);
                        }
                    }
                    (x, y) => return Some(Diff::new(p, show(x), show(y))),
                }
            }
            None
        }
        _ => (rec != app).then(|| Diff::new(path, rec, app)),
    }
}

/// The reply document (raw BSON) of a recorded reply message: the `OP_MSG` body section, or
/// an `OP_REPLY`'s first document; an `OP_COMPRESSED` is decompressed first.
fn reply_doc(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let raw = decompress(raw)?;
    if raw.len() < 21 {
        return Err("reply too short");
    }
    let h = |i: usize| i32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let doc_at = |p: usize| {
        let n = raw
            .get(p..)
            .and_then(bson::doc_len)
            .ok_or("bad reply document")?;
        raw.get(p..p + n)
            .map(<[u8]>::to_vec)
            .ok_or("reply document cut")
    };
    match h(12) {
        OP_MSG => {
            let checksum = h(16) & 1 != 0;
            let end = raw.len() - if checksum { 4 } else { 0 };
            let mut p = 20;
            while p < end {
                let kind = raw[p];
                p += 1;
                match kind {
                    0 => return doc_at(p),
                    1 => {
                        let size = raw
                            .get(p..p + 4)
                            .map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or("bad reply section")?;
                        p += size.max(1);
                    }
                    _ => return Err("bad reply section"),
                }
            }
            Err("reply without a body section")
        }
        OP_REPLY => doc_at(36),
        _ => Err("not a reply opcode"),
    }
}

/// A reply message carrying `doc`: `OP_REPLY` to an `OP_QUERY`, else `OP_MSG`.
fn frame(request_op: &str, id: i32, to: i32, doc: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(doc.len() + 20);
    let opcode = if request_op == "OP_QUERY" {
        // responseFlags (AwaitCapable, as servers set), cursorID, startingFrom, numberReturned.
        body.extend_from_slice(&8i32.to_le_bytes());
        body.extend_from_slice(&0i64.to_le_bytes());
        body.extend_from_slice(&0i32.to_le_bytes());
        body.extend_from_slice(&1i32.to_le_bytes());
        OP_REPLY
    } else {
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(0);
        OP_MSG
    };
    body.extend_from_slice(doc);
    let len = i32::try_from(16 + body.len()).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(16 + body.len());
    for v in [len, id, to, opcode] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&body);
    out
}

/// The server version a wire version stands for (`buildInfo` by rule).
fn server_version(wire: i64) -> (i32, i32) {
    match wire {
        ..=6 => (3, 6),
        7 => (4, 0),
        8 => (4, 2),
        9 => (4, 4),
        10..=13 => (5, 0),
        14..=17 => (6, 0),
        18..=21 => (7, 0),
        _ => (8, 0),
    }
}

/// The top-level elements of a BSON document: key and byte range of each element.
/// `None` when malformed.
fn elements(doc: &[u8]) -> Option<Vec<(String, Range<usize>)>> {
    let end = bson::doc_len(doc)?.checked_sub(1)?;
    if doc.len() <= end {
        return None;
    }
    let i32_at = |p: usize| -> Option<usize> {
        let s = doc.get(p..p + 4)?;
        usize::try_from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok()
    };
    let mut out = Vec::new();
    let mut p = 4;
    while p < end {
        let start = p;
        let ty = doc[p];
        let nul = doc.get(p + 1..end)?.iter().position(|&c| c == 0)?;
        let key = String::from_utf8_lossy(&doc[p + 1..p + 1 + nul]).into_owned();
        let v = p + 2 + nul;
        let size = match ty {
            0x06 | 0x0A | 0x7F | 0xFF => 0,
            0x08 => 1,
            0x10 => 4,
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x07 => 12,
            0x13 => 16,
            0x02 | 0x0D | 0x0E => 4 + i32_at(v)?,
            0x03 | 0x04 | 0x0F => i32_at(v)?,
            0x05 => 5 + i32_at(v)?,
            0x0C => 4 + i32_at(v)? + 12,
            0x0B => {
                let a = doc.get(v..end)?.iter().position(|&c| c == 0)?;
                let b = doc.get(v + a + 1..end)?.iter().position(|&c| c == 0)?;
                a + b + 2
            }
            _ => return None,
        };
        p = v.checked_add(size)?;
        if p > end {
            return None;
        }
        out.push((key, start..p));
    }
    Some(out)
}

/// `doc` without its top-level element `key` (unchanged when absent or malformed).
fn without(doc: &[u8], key: &str) -> Vec<u8> {
    let Some(els) = elements(doc) else {
        return doc.to_vec();
    };
    if !els.iter().any(|(k, _)| k == key) {
        return doc.to_vec();
    }
    let mut out = vec![0; 4];
    for (_, r) in els.iter().filter(|(k, _)| k != key) {
        out.extend_from_slice(&doc[r.clone()]);
    }
    out.push(0);
    let len = i32::try_from(out.len()).unwrap_or(i32::MAX);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// A BSON document written by the mock (rule answers, errors): the few types it needs. The
/// recorder's decoder is hand-written for its own reasons (`protocols/mongodb/bson.rs`); the
/// writer is a dozen lines, not worth a dependency.
#[derive(Default)]
struct Doc(Vec<u8>);

impl Doc {
    fn key(&mut self, ty: u8, k: &str) {
        self.0.push(ty);
        self.0.extend_from_slice(k.as_bytes());
        self.0.push(0);
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(0x02, k);
        let n = i32::try_from(v.len() + 1).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&n.to_le_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
    }
    fn i32(&mut self, k: &str, v: i32) {
        self.key(0x10, k);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, k: &str, v: i64) {
        self.key(0x12, k);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, k: &str, v: f64) {
        self.key(0x01, k);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(0x08, k);
        self.0.push(u8::from(v));
    }
    fn date(&mut self, k: &str, ms: i64) {
        self.key(0x09, k);
        self.0.extend_from_slice(&ms.to_le_bytes());
    }
    fn arr_i32(&mut self, k: &str, v: &[i32]) {
        self.arr(k, v, Doc::i32);
    }
    fn arr_i64(&mut self, k: &str, v: &[i64]) {
        self.arr(k, v, Doc::i64);
    }
    /// An array: a document keyed `0`, `1`, … of values written by `put`.
    fn arr<T: Copy>(&mut self, k: &str, v: &[T], put: fn(&mut Doc, &str, T)) {
        let mut a = Doc::default();
        for (i, x) in v.iter().enumerate() {
            put(&mut a, &i.to_string(), *x);
        }
        self.key(0x04, k);
        self.0.extend_from_slice(&a.finish());
    }
    #[cfg(test)]
    fn sub(&mut self, k: &str, doc: &[u8]) {
        self.key(0x03, k);
        self.0.extend_from_slice(doc);
    }
    /// The document's bytes: length, elements, terminator.
    fn finish(self) -> Vec<u8> {
        let len = i32::try_from(self.0.len() + 5).unwrap_or(i32::MAX);
        let mut out = Vec::with_capacity(self.0.len() + 5);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.0);
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests;
