//! [`MongoParser`]: MongoDB wire messages on one client connection, requests paired with
//! replies by `requestID` / `responseTo`.
//!
//! - `OP_MSG` (flag bits, kind 0 body + kind 1 document sequences, CRC-32C checksum),
//!   legacy `OP_QUERY` / `OP_REPLY` (the pre-3.6 handshake), `OP_COMPRESSED` with the noop,
//!   zlib and zstd compressors (snappy is counted as unsupported: `Skipped`).
//! - A request with `moreToCome` (unacknowledged write) is a call without a reply. An exhaust
//!   reply with `moreToCome` announces more replies, each answering the previous reply's
//!   `requestID`; those become calls of their own with an empty `raw_request`.
//! - One operation at a time per connection (the drivers never pipeline): when a reply
//!   arrives, older requests still waiting lost their replies (gap) and are emitted without.
//! - Secrets (SASL payloads, `pwd`) are replaced by `"[REDACTED]"` in `detail` and masked
//!   with `*` in the raw bytes (same length; a present checksum is recomputed).
use std::collections::{HashMap, VecDeque};
use std::io::Read as _;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::bson::{self, Ctx};
use crate::protocols::Protocol;
use crate::protocols::cursor::StreamCursor;
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::protocols::http::types::Mark;
use crate::reassembly::Segment;

pub const OP_REPLY: i32 = 1;
pub const OP_UPDATE: i32 = 2001;
pub const OP_INSERT: i32 = 2002;
pub const OP_QUERY: i32 = 2004;
pub const OP_GET_MORE: i32 = 2005;
pub const OP_DELETE: i32 = 2006;
pub const OP_KILL_CURSORS: i32 = 2007;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;
/// Largest message accepted (the server's `maxMessageSizeBytes` is 48 000 000).
pub const MAX_MESSAGE: usize = 48_000_000;
/// Smallest message: header + OP_MSG flags + kind byte + empty document.
pub const MIN_MESSAGE: usize = 16 + 4 + 1 + 5;
const MAX_PENDING: usize = 1024;
const MAX_ORPHANS: usize = 64;

/// Parser limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MongoOptions {
    /// Bytes kept per message (raw bytes and what is decoded); the rest is counted.
    pub max_bytes: usize,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self { max_bytes: 1 << 20 }
    }
}

/// Is this a plausible message header? `egress`: written by the client (requests:
/// `responseTo` 0); else a reply (`responseTo` set). Needs 16 bytes (21 for `OP_MSG`).
#[must_use]
pub fn header_ok(b: &[u8], egress: bool) -> Option<bool> {
    let h = |i: usize| {
        b.get(i..i + 4)
            .map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let (Some(len), Some(_id), Some(resp_to), Some(op)) = (h(0), h(4), h(8), h(12)) else {
        return None;
    };
    let len_ok = usize::try_from(len).is_ok_and(|l| (16 + 5..=MAX_MESSAGE).contains(&l));
    let op_ok = if egress {
        matches!(
            op,
            OP_MSG
                | OP_QUERY
                | OP_COMPRESSED
                | OP_UPDATE
                | OP_INSERT
                | OP_GET_MORE
                | OP_DELETE
                | OP_KILL_CURSORS
        ) && resp_to == 0
    } else {
        matches!(op, OP_MSG | OP_REPLY | OP_COMPRESSED) && resp_to != 0
    };
    if !len_ok || !op_ok {
        return Some(false);
    }
    if op == OP_MSG {
        let flags = h(16)?;
        // Only checksumPresent, moreToCome, exhaustAllowed are defined.
        if flags as u32 & !0x0001_0003 != 0 {
            return Some(false);
        }
        let kind = *b.get(20)?;
        if kind > 1 || len < MIN_MESSAGE as i32 {
            return Some(false);
        }
        if kind == 0 {
            let dl = h(21)?;
            if dl < 5 || dl > len - 21 {
                return Some(false);
            }
        }
    }
    Some(true)
}

#[derive(Debug)]
struct Message {
    req_id: i32,
    resp_to: i32,
    opcode: i32,
    /// Declared length.
    len: usize,
    /// The message as kept (header included), at most `max_bytes`.
    raw: Vec<u8>,
    first: Mark,
    last: Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Start,
    Sync,
    Resync {
        reason: &'static str,
        skipped: u64,
    },
    /// Inside a message: `left` bytes still to come, `keep` of them to keep.
    Body {
        left: usize,
    },
}

/// One direction: framing by the length prefix, resync on garbage and after gaps.
#[derive(Debug)]
struct Dir {
    egress: bool,
    inp: StreamCursor,
    st: St,
    cur: Option<Message>,
    max_bytes: usize,
    mid_stream: bool,
}

enum DirEv {
    Msg(Message),
    Skipped(u64, &'static str),
}

impl Dir {
    fn new(egress: bool, max_bytes: usize) -> Self {
        Self {
            egress,
            inp: StreamCursor::default(),
            st: St::Start,
            cur: None,
            max_bytes: max_bytes.max(64),
            mid_stream: false,
        }
    }

    fn feed(&mut self, seg: Segment, out: &mut Vec<DirEv>) {
        match seg {
            Segment::Data(c) => {
                if c.data.is_empty() {
                    return;
                }
                let pos = c.pos;
                match self.inp.end() {
                    None => {
                        if pos > 0 {
                            self.mid_stream = true;
                            self.st = St::Resync {
                                reason: "mid-stream",
                                skipped: 0,
                            };
                        } else {
                            self.st = St::Sync;
                        }
                    }
                    // Overlap: the cursor keeps the new part; nothing new, nothing to do.
                    Some(e) if pos.saturating_add(c.data.len() as u64) <= e => return,
                    Some(e) if pos > e => self.lose(e, pos - e, out),
                    Some(_) => {}
                }
                self.inp.append(&c);
                self.run(out);
            }
            Segment::Gap { pos, len } => {
                if self.inp.end().is_none() {
                    self.mid_stream = true;
                }
                self.lose(pos, len, out);
            }
        }
    }

    fn lose(&mut self, pos: u64, len: u64, out: &mut Vec<DirEv>) {
        let pending = self.inp.len() as u64
            + self.cur.take().map_or(0, |m| m.raw.len() as u64)
            + match self.st {
                St::Resync { skipped, .. } => skipped,
                _ => 0,
            };
        if pending > 0 {
            out.push(DirEv::Skipped(pending, "gap"));
        }
        self.inp.reset_to(pos.saturating_add(len));
        self.st = St::Resync {
            reason: "gap",
            skipped: 0,
        };
    }

    fn close(&mut self, out: &mut Vec<DirEv>) {
        let pending = self.inp.len() as u64
            + self.cur.take().map_or(0, |m| m.raw.len() as u64)
            + match self.st {
                St::Resync { skipped, .. } => skipped,
                _ => 0,
            };
        if pending > 0 {
            let reason = match self.st {
                St::Resync { reason, .. } => reason,
                _ => "truncated",
            };
            out.push(DirEv::Skipped(pending, reason));
        }
        self.inp.clear();
    }

    fn run(&mut self, out: &mut Vec<DirEv>) {
        loop {
            match self.st {
                St::Start => return,
                St::Sync => match header_ok(self.inp.avail(), self.egress) {
                    None => return,
                    Some(false) => {
                        self.st = St::Resync {
                            reason: "bad-header",
                            skipped: 0,
                        };
                    }
                    Some(true) => {
                        let b = self.inp.avail();
                        let h = |i: usize| i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                        let len = usize::try_from(h(0)).unwrap_or(0);
                        let first = self.inp.mark_at(self.inp.pos());
                        self.cur = Some(Message {
                            req_id: h(4),
                            resp_to: h(8),
                            opcode: h(12),
                            len,
                            raw: Vec::with_capacity(len.min(self.max_bytes)),
                            first,
                            last: first,
                        });
                        self.st = St::Body { left: len };
                    }
                },
                St::Body { left } => {
                    if self.inp.len() == 0 {
                        return;
                    }
                    let take = left.min(self.inp.len());
                    let last = self.inp.mark_at(self.inp.pos() + take as u64 - 1);
                    let Some(m) = self.cur.as_mut() else {
                        self.st = St::Sync;
                        continue;
                    };
                    let room = self.max_bytes.saturating_sub(m.raw.len()).min(take);
                    m.raw.extend_from_slice(&self.inp.avail()[..room]);
                    m.last = last;
                    self.inp.skip(take);
                    if left > take {
                        self.st = St::Body { left: left - take };
                        return;
                    }
                    self.st = St::Sync;
                    if let Some(m) = self.cur.take() {
                        out.push(DirEv::Msg(m));
                    }
                }
                St::Resync { reason, skipped } => {
                    let mut p = 0;
                    let mut found = false;
                    while p < self.inp.len() {
                        match header_ok(&self.inp.avail()[p..], self.egress) {
                            Some(true) => {
                                found = true;
                                break;
                            }
                            None => break,
                            Some(false) => p += 1,
                        }
                    }
                    self.inp.skip(p);
                    let skipped = skipped + p as u64;
                    if found {
                        if skipped > 0 {
                            out.push(DirEv::Skipped(skipped, reason));
                        }
                        self.st = St::Sync;
                        continue;
                    }
                    self.st = St::Resync { reason, skipped };
                    return;
                }
            }
        }
    }
}

/// A decoded message.
#[derive(Debug, Default)]
struct Decoded {
    op: &'static str,
    flags: u32,
    /// The command (OP_MSG body with document sequences merged; OP_QUERY query) or the reply
    /// document (OP_MSG body; OP_REPLY first document, or `{"documents": [...]}`).
    doc: Map<String, Value>,
    /// OP_QUERY: database from the full collection name.
    db: Option<String>,
    sequences: Vec<String>,
    compressor: Option<&'static str>,
    /// Something could not be decoded (cut at the cap, malformed).
    problem: Option<&'static str>,
    /// Secret byte ranges within `raw` (already masked).
    masked: bool,
}

const FLAG_CHECKSUM: u32 = 1;
const FLAG_MORE_TO_COME: u32 = 2;

/// Decodes `m` (masking secrets in `m.raw` in place).
fn decode(m: &mut Message, sasl: bool) -> Result<Decoded, &'static str> {
    let complete = m.raw.len() == m.len;
    if m.opcode == OP_COMPRESSED {
        if !complete {
            return Err("mongodb-compressed-truncated");
        }
        let (name, orig, body) = uncompress(&m.raw)?;
        let mut inner = Message {
            req_id: m.req_id,
            resp_to: m.resp_to,
            opcode: orig,
            len: 16 + body.len(),
            raw: [&m.raw[..16], &body].concat(),
            first: m.first,
            last: m.last,
        };
        let mut d = decode(&mut inner, sasl)?;
        d.compressor = Some(name);
        if d.masked {
            // Secrets inside a compressed message: keep only the header.
            m.raw.truncate(16);
        }
        return Ok(d);
    }
    let body = m.raw.get(16..).unwrap_or_default().to_vec();
    let mut ctx = Ctx {
        sasl,
        secrets: Vec::new(),
    };
    let mut d = Decoded::default();
    match m.opcode {
        OP_MSG => {
            d.op = "OP_MSG";
            let flags = u32::from_le_bytes(
                body.get(..4)
                    .ok_or("mongodb-truncated")?
                    .try_into()
                    .map_err(|_| "mongodb-truncated")?,
            );
            d.flags = flags;
            let end = if flags & FLAG_CHECKSUM != 0 && complete {
                body.len().saturating_sub(4)
            } else {
                body.len()
            };
            let mut p = 4;
            let mut seqs: Vec<(String, Vec<Value>)> = Vec::new();
            let mut have_body = false;
            while p < end {
                let kind = body[p];
                p += 1;
                match kind {
                    0 => match decode_at(&body, p, end, &mut ctx) {
                        Ok((doc, n)) => {
                            d.doc = doc;
                            have_body = true;
                            p += n;
                        }
                        Err(e) => {
                            d.problem = Some(e);
                            break;
                        }
                    },
                    1 => {
                        let Some(size) = body.get(p..p + 4).and_then(|s| {
                            usize::try_from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok()
                        }) else {
                            d.problem = Some("mongodb-truncated");
                            break;
                        };
                        let sec_end = p + size;
                        if size < 5 || sec_end > end {
                            d.problem = Some(if sec_end > body.len() && !complete {
                                "truncated"
                            } else {
                                "mongodb-bad-sequence"
                            });
                            break;
                        }
                        let Some(nul) = body[p + 4..sec_end].iter().position(|&c| c == 0) else {
                            d.problem = Some("mongodb-bad-sequence");
                            break;
                        };
                        let ident = String::from_utf8_lossy(&body[p + 4..p + 4 + nul]).into_owned();
                        let mut q = p + 4 + nul + 1;
                        let mut docs = Vec::new();
                        while q < sec_end {
                            match decode_at(&body, q, sec_end, &mut ctx) {
                                Ok((doc, n)) => {
                                    docs.push(Value::Object(doc));
                                    q += n;
                                }
                                Err(e) => {
                                    d.problem = Some(e);
                                    break;
                                }
                            }
                        }
                        seqs.push((ident, docs));
                        p = sec_end;
                    }
                    _ => {
                        d.problem = Some("mongodb-bad-section");
                        break;
                    }
                }
            }
            if !have_body && d.problem.is_none() {
                d.problem = Some("mongodb-no-body");
            }
            for (ident, docs) in seqs {
                d.sequences.push(ident.clone());
                d.doc.insert(ident, Value::Array(docs));
            }
        }
        OP_QUERY => {
            d.op = "OP_QUERY";
            d.flags = u32::from_le_bytes(
                body.get(..4)
                    .ok_or("mongodb-truncated")?
                    .try_into()
                    .map_err(|_| "mongodb-truncated")?,
            );
            let nul = body
                .get(4..)
                .and_then(|s| s.iter().position(|&c| c == 0))
                .ok_or("mongodb-truncated")?;
            let coll = String::from_utf8_lossy(&body[4..4 + nul]).into_owned();
            d.db = Some(coll.split('.').next().unwrap_or_default().to_owned());
            let q = 4 + nul + 1 + 8;
            match decode_at(&body, q, body.len(), &mut ctx) {
                Ok((doc, _)) => {
                    // `{$query: {...}, $readPreference: ...}` wraps the command.
                    d.doc = match doc.get("$query").or_else(|| doc.get("query")) {
                        Some(Value::Object(inner))
                            if doc
                                .keys()
                                .next()
                                .is_some_and(|k| k.starts_with('$') || k == "query") =>
                        {
                            inner.clone()
                        }
                        _ => doc,
                    };
                }
                Err(e) => d.problem = Some(e),
            }
        }
        OP_REPLY => {
            d.op = "OP_REPLY";
            d.flags = u32::from_le_bytes(
                body.get(..4)
                    .ok_or("mongodb-truncated")?
                    .try_into()
                    .map_err(|_| "mongodb-truncated")?,
            );
            let mut p = 20;
            let mut docs = Vec::new();
            while p < body.len() {
                match decode_at(&body, p, body.len(), &mut ctx) {
                    Ok((doc, n)) => {
                        docs.push(doc);
                        p += n;
                    }
                    Err(e) => {
                        d.problem = Some(e);
                        break;
                    }
                }
            }
            d.doc = if docs.len() == 1 {
                docs.pop().unwrap_or_default()
            } else {
                let mut m = Map::new();
                m.insert(
                    "documents".into(),
                    Value::Array(docs.into_iter().map(Value::Object).collect()),
                );
                m
            };
        }
        _ => return Err("mongodb-legacy-opcode"),
    }
    if !complete && d.problem.is_none() {
        d.problem = Some("truncated");
    }
    if !ctx.secrets.is_empty() {
        for r in &ctx.secrets {
            if let Some(s) = m.raw.get_mut(r.clone()) {
                s.fill(b'*');
            }
        }
        d.masked = true;
        if m.opcode == OP_MSG && d.flags & FLAG_CHECKSUM != 0 && complete && m.raw.len() >= 4 {
            let n = m.raw.len() - 4;
            let crc = crc32c(&m.raw[..n]);
            m.raw[n..].copy_from_slice(&crc.to_le_bytes());
        }
    }
    Ok(d)
}

/// The payload of a complete `OP_COMPRESSED` message (header included): the compressor's
/// name, the original opcode and the decompressed body (what follows the header).
fn uncompress(raw: &[u8]) -> Result<(&'static str, i32, Vec<u8>), &'static str> {
    let b = raw.get(16..).unwrap_or_default();
    if b.len() < 9 {
        return Err("mongodb-compressed-truncated");
    }
    let orig = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let size = usize::try_from(i32::from_le_bytes([b[4], b[5], b[6], b[7]])).unwrap_or(0);
    if size > MAX_MESSAGE {
        return Err("mongodb-compressed-truncated");
    }
    let data = &b[9..];
    let (name, body): (&'static str, Vec<u8>) = match b[8] {
        0 => ("noop", data.to_vec()),
        2 => {
            let mut out = Vec::with_capacity(size.min(1 << 20));
            flate2::read::ZlibDecoder::new(data)
                .take(size as u64)
                .read_to_end(&mut out)
                .map_err(|_| "mongodb-compressed-corrupt")?;
            ("zlib", out)
        }
        3 => (
            "zstd",
            zstd::bulk::decompress(data, size).map_err(|_| "mongodb-compressed-corrupt")?,
        ),
        _ => return Err("mongodb-compressed-unsupported"),
    };
    Ok((name, orig, body))
}

/// A complete `OP_COMPRESSED` message as the message it wraps (header with the original
/// opcode and length, then the decompressed body); any other message unchanged.
///
/// # Errors
/// Cut, corrupt, or compressed with a compressor not decoded here (snappy).
pub fn decompress(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.len() < 16 || i32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]) != OP_COMPRESSED {
        return Ok(raw.to_vec());
    }
    let (_, orig, body) = uncompress(raw)?;
    let len = i32::try_from(16 + body.len()).map_err(|_| "mongodb-compressed-truncated")?;
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&raw[4..12]);
    out.extend_from_slice(&orig.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// One complete message, decoded as the recorder decodes it: replay decodes the app's
/// requests with this so both sides of a comparison are the same relaxed Extended JSON.
#[derive(Debug, Default)]
pub struct Command {
    /// `OP_MSG`, `OP_QUERY` or `OP_REPLY` (of the wrapped message when compressed).
    pub op: &'static str,
    pub request_id: i32,
    pub flags: u32,
    /// The command, document sequences merged (see [`MongoParser`]).
    pub doc: Map<String, Value>,
    /// `$db`, or the database of an `OP_QUERY`'s collection.
    pub db: Option<String>,
    pub compressor: Option<&'static str>,
    /// The message could not be decoded whole.
    pub problem: Option<&'static str>,
}

impl Command {
    /// The command's name (its first key), as sent.
    #[must_use]
    pub fn name(&self) -> &str {
        self.doc.keys().next().map_or("", String::as_str)
    }

    /// `moreToCome`: the client expects no reply.
    #[must_use]
    pub fn more_to_come(&self) -> bool {
        self.op == "OP_MSG" && self.flags & FLAG_MORE_TO_COME != 0
    }
}

/// Decodes one complete message (`raw` holds exactly one, header included).
///
/// # Errors
/// Not a message, a legacy write opcode, or an undecodable compressed payload.
pub fn decode_message(raw: &[u8]) -> Result<Command, &'static str> {
    if raw.len() < 16 {
        return Err("mongodb-truncated");
    }
    let h = |i: usize| i32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let mut m = Message {
        req_id: h(4),
        resp_to: h(8),
        opcode: h(12),
        len: raw.len(),
        raw: raw.to_vec(),
        first: Mark::default(),
        last: Mark::default(),
    };
    let d = decode(&mut m, false)?;
    let db = d
        .doc
        .get("$db")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(d.db);
    Ok(Command {
        op: d.op,
        request_id: m.req_id,
        flags: d.flags,
        doc: d.doc,
        db,
        compressor: d.compressor,
        problem: d.problem,
    })
}

/// Decodes the document at `body[at..end]`; secret ranges become relative to the raw message
/// (the 16-byte header precedes `body`).
fn decode_at(
    body: &[u8],
    at: usize,
    end: usize,
    ctx: &mut Ctx,
) -> Result<(Map<String, Value>, usize), &'static str> {
    let before = ctx.secrets.len();
    let r = bson::decode_doc(body.get(at..end).unwrap_or_default(), ctx);
    for s in ctx.secrets.iter_mut().skip(before) {
        *s = s.start + at + 16..s.end + at + 16;
    }
    r
}

/// CRC-32C (Castagnoli), bitwise.
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[derive(Debug)]
struct Pending {
    index: u64,
    method: String,
    detail: Map<String, Value>,
    session_level: bool,
    sasl: bool,
    raw: Vec<u8>,
    raw_truncated: bool,
    first: Mark,
    last: Mark,
}

/// Client-side MongoDB parser for one connection.
#[derive(Debug)]
pub struct MongoParser {
    dirs: [Dir; 2],
    /// Requests waiting for their reply, by `requestID`.
    pending: HashMap<i32, Pending>,
    /// Replies whose request was not seen (yet).
    orphans: VecDeque<Message>,
    /// Exhaust streams: reply `requestID` -> (method, session-level).
    exhaust: HashMap<i32, (String, bool, u64)>,
    next_index: u64,
    missing_reported: bool,
}

impl Default for MongoParser {
    fn default() -> Self {
        Self::new(MongoOptions::default())
    }
}

const SESSION_COMMANDS: &[&str] = &[
    "hello",
    "ismaster",
    "saslstart",
    "saslcontinue",
    "authenticate",
    "getnonce",
    "buildinfo",
    "endsessions",
];

impl MongoParser {
    #[must_use]
    pub fn new(opts: MongoOptions) -> Self {
        Self {
            dirs: [
                Dir::new(true, opts.max_bytes),
                Dir::new(false, opts.max_bytes),
            ],
            pending: HashMap::new(),
            orphans: VecDeque::new(),
            exhaust: HashMap::new(),
            next_index: 0,
            missing_reported: false,
        }
    }

    fn handle(&mut self, egress: bool, evs: Vec<DirEv>, out: &mut Vec<DbEvent>) {
        if !self.missing_reported && (self.dirs[0].mid_stream || self.dirs[1].mid_stream) {
            self.missing_reported = true;
            out.push(DbEvent::Session {
                protocol: Protocol::Mongodb,
                facts: json!({}),
                missing: vec!["handshake".into(), "auth".into(), "compression".into()],
            });
        }
        for ev in evs {
            match ev {
                DirEv::Skipped(bytes, reason) => out.push(DbEvent::Skipped {
                    egress,
                    bytes,
                    reason,
                }),
                DirEv::Msg(m) if egress => self.request(m, out),
                DirEv::Msg(m) => self.reply(m, out),
            }
        }
    }

    fn request(&mut self, mut m: Message, out: &mut Vec<DbEvent>) {
        let first_key = |d: &Decoded| d.doc.keys().next().cloned().unwrap_or_default();
        let d = match decode(&mut m, false) {
            Ok(d) => d,
            Err(reason) => {
                out.push(DbEvent::Skipped {
                    egress: true,
                    bytes: m.len as u64,
                    reason,
                });
                return;
            }
        };
        let method = first_key(&d);
        let lower = method.to_ascii_lowercase();
        let mut detail = Map::new();
        let db = d
            .doc
            .get("$db")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(d.db.clone());
        detail.insert("op".into(), Value::String(d.op.into()));
        if let Some(db) = db {
            detail.insert("db".into(), Value::String(db));
        }
        let coll = match lower.as_str() {
            "getmore" => d.doc.get("collection").cloned(),
            _ => d.doc.get(&method).filter(|v| v.is_string()).cloned(),
        };
        if let Some(c) = coll {
            detail.insert("collection".into(), c);
        }
        if let Some(c) = d.compressor {
            detail.insert("compressed".into(), Value::String(c.into()));
        }
        if !d.sequences.is_empty() {
            detail.insert("sequences".into(), json!(d.sequences));
        }
        if let Some(p) = d.problem {
            detail.insert("truncated".into(), Value::Bool(true));
            detail.insert("problem".into(), Value::String(p.into()));
        }
        let more_to_come = d.op == "OP_MSG" && d.flags & FLAG_MORE_TO_COME != 0;
        if more_to_come {
            detail.insert("more_to_come".into(), Value::Bool(true));
        }
        detail.insert("command".into(), Value::Object(d.doc));
        let index = self.next_index;
        self.next_index += 1;
        let p = Pending {
            index,
            session_level: SESSION_COMMANDS.contains(&lower.as_str()),
            sasl: lower.starts_with("sasl") || lower == "authenticate",
            method,
            detail,
            raw_truncated: m.raw.len() < m.len || (d.masked && d.compressor.is_some()),
            raw: m.raw,
            first: m.first,
            last: m.last,
        };
        if more_to_come {
            self.emit(p, None, out);
            return;
        }
        if let Some(i) = self.orphans.iter().position(|r| r.resp_to == m.req_id) {
            if let Some(r) = self.orphans.remove(i) {
                self.answer(p, r, out);
            }
            return;
        }
        self.pending.insert(m.req_id, p);
        if self.pending.len() > MAX_PENDING
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.index)
                .map(|(k, _)| *k)
            && let Some(p) = self.pending.remove(&oldest)
        {
            self.emit(p, None, out);
        }
    }

    fn reply(&mut self, m: Message, out: &mut Vec<DbEvent>) {
        if let Some(p) = self.pending.remove(&m.resp_to) {
            // One operation at a time: older requests still waiting lost their replies.
            let mut older: Vec<i32> = self
                .pending
                .iter()
                .filter(|(_, q)| q.index < p.index)
                .map(|(k, _)| *k)
                .collect();
            older.sort_by_key(|k| self.pending.get(k).map_or(0, |q| q.index));
            for k in older {
                if let Some(q) = self.pending.remove(&k) {
                    self.emit(q, None, out);
                }
            }
            self.answer(p, m, out);
            return;
        }
        if let Some((method, session_level, index)) = self.exhaust.remove(&m.resp_to) {
            let mut detail = Map::new();
            detail.insert("op".into(), Value::String("OP_MSG".into()));
            detail.insert("exhaust".into(), Value::Bool(true));
            let p = Pending {
                index,
                method,
                detail,
                session_level,
                sasl: false,
                raw: Vec::new(),
                raw_truncated: false,
                first: m.first,
                last: m.first,
            };
            self.answer(p, m, out);
            return;
        }
        self.orphans.push_back(m);
        while self.orphans.len() > MAX_ORPHANS {
            if let Some(o) = self.orphans.pop_front() {
                out.push(DbEvent::Skipped {
                    egress: false,
                    bytes: o.len as u64,
                    reason: "reply-without-request",
                });
            }
        }
    }

    fn answer(&mut self, p: Pending, mut r: Message, out: &mut Vec<DbEvent>) {
        match decode(&mut r, p.sasl) {
            Ok(d) => {
                if d.op == "OP_MSG" && d.flags & FLAG_MORE_TO_COME != 0 {
                    self.exhaust
                        .insert(r.req_id, (p.method.clone(), p.session_level, p.index));
                }
                self.emit(p, Some((r, d)), out);
            }
            Err(reason) => {
                out.push(DbEvent::Skipped {
                    egress: false,
                    bytes: r.len as u64,
                    reason,
                });
                self.emit(p, None, out);
            }
        }
    }

    fn emit(&mut self, mut p: Pending, r: Option<(Message, Decoded)>, out: &mut Vec<DbEvent>) {
        let mut error = None;
        let (raw_response, resp_trunc, rf, rl) = match r {
            Some((m, d)) => {
                let reply = &d.doc;
                if let Some(ok) = reply.get("ok") {
                    p.detail.insert("ok".into(), ok.clone());
                }
                error = reply_error(reply);
                if p.session_level {
                    self.session_facts(&p, reply, out);
                }
                if let Some(pr) = d.problem {
                    p.detail.insert("reply_truncated".into(), Value::Bool(true));
                    p.detail
                        .insert("reply_problem".into(), Value::String(pr.into()));
                }
                if d.flags & FLAG_MORE_TO_COME != 0 && d.op == "OP_MSG" {
                    p.detail.insert("more_to_come".into(), Value::Bool(true));
                }
                p.detail.insert("reply".into(), Value::Object(d.doc));
                let trunc = m.raw.len() < m.len;
                (m.raw, trunc, Some(m.first), Some(m.last))
            }
            None => (Vec::new(), false, None, None),
        };
        out.push(DbEvent::Call(Box::new(DbCall {
            protocol: Protocol::Mongodb,
            index: p.index,
            method: p.method,
            detail: Value::Object(p.detail),
            error,
            raw_request: Bytes::from(p.raw),
            raw_response: Bytes::from(raw_response),
            raw_truncated: p.raw_truncated || resp_trunc,
            session_level: p.session_level,
            request_first: p.first,
            request_last: p.last,
            response_first: rf,
            response_last: rl,
        })));
    }

    fn session_facts(&self, p: &Pending, reply: &Map<String, Value>, out: &mut Vec<DbEvent>) {
        let lower = p.method.to_ascii_lowercase();
        let mut facts = Map::new();
        if lower == "hello" || lower == "ismaster" {
            let mut hello = Map::new();
            for k in [
                "isWritablePrimary",
                "ismaster",
                "helloOk",
                "maxBsonObjectSize",
                "maxMessageSizeBytes",
                "maxWriteBatchSize",
                "minWireVersion",
                "maxWireVersion",
                "logicalSessionTimeoutMinutes",
                "readOnly",
                "setName",
                "msg",
                "compression",
                "saslSupportedMechs",
                "topologyVersion",
            ] {
                if let Some(v) = reply.get(k) {
                    hello.insert(k.into(), v.clone());
                }
            }
            facts.insert("hello".into(), Value::Object(hello));
            if let Some(s) = reply.get("speculativeAuthenticate") {
                facts.insert(
                    "speculative_auth".into(),
                    Value::String(if s.is_object() { "answered" } else { "none" }.into()),
                );
            }
        }
        if lower.starts_with("sasl") || lower == "authenticate" {
            let ok = reply
                .get("ok")
                .and_then(Value::as_f64)
                .is_some_and(|o| o == 1.0);
            let done = reply
                .get("done")
                .and_then(Value::as_bool)
                .unwrap_or(lower == "authenticate");
            if !ok {
                facts.insert("auth".into(), Value::String("failed".into()));
            } else if done {
                facts.insert("auth".into(), Value::String("ok".into()));
            }
        }
        if !facts.is_empty() {
            out.push(DbEvent::Session {
                protocol: Protocol::Mongodb,
                facts: Value::Object(facts),
                missing: Vec::new(),
            });
        }
    }
}

/// `"<codeName> (<code>): <errmsg>"` for `ok: 0`, else the first write error or write
/// concern error.
fn reply_error(reply: &Map<String, Value>) -> Option<String> {
    let fmt = |d: &Map<String, Value>| {
        let code = d.get("code").map(ToString::to_string).unwrap_or_default();
        let name = d.get("codeName").and_then(Value::as_str).unwrap_or("");
        let msg = d.get("errmsg").and_then(Value::as_str).unwrap_or("");
        match (name.is_empty(), code.is_empty()) {
            (false, _) => format!("{name} ({code}): {msg}"),
            (true, false) => format!("code {code}: {msg}"),
            (true, true) => msg.to_owned(),
        }
    };
    let ok = reply.get("ok").and_then(Value::as_f64);
    if ok == Some(0.0) {
        return Some(fmt(reply));
    }
    if let Some(Value::Array(errs)) = reply.get("writeErrors")
        && let Some(Value::Object(e)) = errs.first()
    {
        return Some(fmt(e));
    }
    if let Some(Value::Object(e)) = reply.get("writeConcernError") {
        return Some(fmt(e));
    }
    None
}

impl DbParser for MongoParser {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<DbEvent>) {
        let mut evs = Vec::new();
        self.dirs[usize::from(!egress)].feed(seg, &mut evs);
        self.handle(egress, evs, out);
    }

    fn close(&mut self, out: &mut Vec<DbEvent>) {
        for egress in [true, false] {
            let mut evs = Vec::new();
            self.dirs[usize::from(!egress)].close(&mut evs);
            self.handle(egress, evs, out);
        }
        let mut rest: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        rest.sort_by_key(|p| p.index);
        for p in rest {
            self.emit(p, None, out);
        }
        while let Some(o) = self.orphans.pop_front() {
            out.push(DbEvent::Skipped {
                egress: false,
                bytes: o.len as u64,
                reason: "reply-without-request",
            });
        }
    }

    fn protocol(&self) -> Protocol {
        Protocol::Mongodb
    }
}
