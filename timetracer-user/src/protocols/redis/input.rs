//! One direction of a Redis connection: unconsumed bytes with the chunk boundaries they came
//! from (a [`StreamCursor`]), framing into whole messages (commands or replies) with a streaming reader, resync
//! after gaps and garbage, and raw-byte capture.
use super::resp::{self, Blob, Reader, Resp, Step};
use crate::protocols::cursor::StreamCursor;
use crate::protocols::http::types::Mark;
use crate::reassembly::Segment;

/// Bytes a resync candidate check may look ahead before giving up on a candidate.
const LOOKAHEAD: usize = 128;

/// A framed message of one direction.
#[derive(Debug)]
pub(super) struct Msg {
    pub(super) body: Body,
    pub(super) first: Mark,
    pub(super) last: Mark,
    /// The message as on the wire, cut at the raw cap.
    pub(super) raw: Vec<u8>,
    pub(super) raw_truncated: bool,
}

#[derive(Debug)]
pub(super) enum Body {
    /// A command: its arguments (name first), the declared count, inline form or not.
    Command {
        args: Vec<Blob>,
        total: u64,
        inline: bool,
    },
    /// A reply (or push).
    Reply(Resp),
}

/// What a direction reports to the connection.
#[derive(Debug)]
pub(super) enum DirEvent {
    Msg(Msg),
    /// Bytes were lost or discarded: pairing must not trust this direction's order.
    Lost,
    Skipped(u64, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Nothing seen yet.
    Start,
    Sync,
    Resync {
        reason: &'static str,
        skipped: u64,
    },
}

/// Egress commands (`*N` arrays of bulk strings, or inline lines) or ingress replies.
#[derive(Debug)]
enum Framer {
    Commands {
        reader: Reader,
        inline: Option<Vec<u8>>,
    },
    Replies(Reader),
}

#[derive(Debug)]
pub(super) struct Dir {
    pub(super) egress: bool,
    /// Unconsumed bytes; marks are kept for the message in progress too.
    inp: StreamCursor,
    st: St,
    framer: Framer,
    /// The message in progress: first position, raw bytes (capped), bytes consumed.
    msg_start: u64,
    raw: Vec<u8>,
    raw_size: u64,
    max_raw: usize,
    /// The byte before `off` was `\n` (a line boundary).
    after_nl: bool,
    /// The direction was first seen mid-stream (position > 0 or a loss first).
    pub(super) mid_stream: bool,
}

impl Dir {
    pub(super) fn new(egress: bool, max_bytes: usize) -> Self {
        Self {
            egress,
            inp: StreamCursor::default(),
            st: St::Start,
            framer: if egress {
                Framer::Commands {
                    reader: Reader::new(max_bytes),
                    inline: None,
                }
            } else {
                Framer::Replies(Reader::new(max_bytes))
            },
            msg_start: 0,
            raw: Vec::new(),
            raw_size: 0,
            max_raw: max_bytes,
            after_nl: true,
            mid_stream: false,
        }
    }

    /// A RESP3-only type was read since the last call.
    pub(super) fn take_resp3(&mut self) -> bool {
        match &mut self.framer {
            Framer::Replies(r) => r.take_resp3(),
            Framer::Commands { .. } => false,
        }
    }

    fn reader_idle(&self) -> bool {
        match &self.framer {
            Framer::Commands { reader, inline } => reader.idle() && inline.is_none(),
            Framer::Replies(r) => r.idle(),
        }
    }

    fn reset_reader(&mut self) {
        match &mut self.framer {
            Framer::Commands { reader, inline } => {
                reader.reset();
                *inline = None;
            }
            Framer::Replies(r) => r.reset(),
        }
    }

    /// Feeds one segment; framed messages and losses go to `out`.
    pub(super) fn feed(&mut self, seg: Segment, out: &mut Vec<DirEvent>) {
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
                        }
                        if self.st == St::Start {
                            self.st = if pos == 0 {
                                St::Sync
                            } else {
                                St::Resync {
                                    reason: "mid-stream",
                                    skipped: 0,
                                }
                            };
                        }
                    }
                    // Overlap (should not happen after reassembly): the cursor keeps the new
                    // part; nothing new, nothing to do.
                    Some(e) if pos.saturating_add(c.data.len() as u64) <= e => return,
                    Some(e) if pos > e => self.lose(e, pos - e, out),
                    Some(_) => {}
                }
                // The first mark of the message in progress is asked for when it ends.
                let keep = (!self.reader_idle()).then_some(self.msg_start);
                self.inp.keep_marks_from(keep);
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

    /// `len` bytes at `pos` will never arrive: drop the partial message, resync after them.
    fn lose(&mut self, pos: u64, len: u64, out: &mut Vec<DirEvent>) {
        let pending = self.inp.len() as u64;
        match self.st {
            St::Resync { skipped, reason } => {
                if skipped + pending > 0 {
                    out.push(DirEvent::Skipped(skipped + pending, reason));
                }
            }
            St::Sync | St::Start => {
                let partial = if self.reader_idle() { 0 } else { self.raw_size };
                if partial + pending > 0 {
                    out.push(DirEvent::Skipped(partial + pending, "gap"));
                }
            }
        }
        self.reset_reader();
        self.inp.reset_to(pos.saturating_add(len));
        self.after_nl = false;
        self.st = St::Resync {
            reason: "gap",
            skipped: 0,
        };
        out.push(DirEvent::Lost);
    }

    /// The stream ended: report whatever was left unparsed.
    pub(super) fn close(&mut self, out: &mut Vec<DirEvent>) {
        let pending = self.inp.len() as u64;
        match self.st {
            St::Resync { skipped, reason } if skipped + pending > 0 => {
                out.push(DirEvent::Skipped(skipped + pending, reason));
            }
            St::Sync if !self.reader_idle() || pending > 0 => {
                let partial = if self.reader_idle() { 0 } else { self.raw_size };
                out.push(DirEvent::Skipped(partial + pending, "truncated"));
            }
            _ => {}
        }
        self.reset_reader();
        self.inp.clear();
    }

    fn run(&mut self, out: &mut Vec<DirEvent>) {
        loop {
            match self.st {
                St::Start => return,
                St::Sync => {
                    if self.inp.len() == 0 {
                        return;
                    }
                    if self.reader_idle() {
                        self.msg_start = self.inp.pos();
                        self.raw.clear();
                        self.raw_size = 0;
                    }
                    let avail = self.inp.avail();
                    let (n, step) = feed_framer(&mut self.framer, avail);
                    let consumed = avail.get(..n).unwrap_or_default();
                    let room = self.max_raw.saturating_sub(self.raw.len()).min(n);
                    self.raw
                        .extend_from_slice(consumed.get(..room).unwrap_or_default());
                    self.raw_size += n as u64;
                    self.after_nl = consumed.last().map_or(self.after_nl, |&b| b == b'\n');
                    self.inp.skip(n);
                    match step {
                        FStep::NeedMore => return,
                        FStep::Empty => {}
                        FStep::Msg(body) => {
                            let end = self.inp.pos();
                            out.push(DirEvent::Msg(Msg {
                                body,
                                first: self.inp.mark_at(self.msg_start),
                                last: self.inp.mark_at(end.saturating_sub(1).max(self.msg_start)),
                                raw: std::mem::take(&mut self.raw),
                                raw_truncated: self.raw_size > self.max_raw as u64,
                            }));
                        }
                        FStep::Error(reason) => {
                            out.push(DirEvent::Lost);
                            self.st = St::Resync {
                                reason,
                                skipped: self.raw_size,
                            };
                        }
                    }
                }
                St::Resync { reason, skipped } => {
                    let avail_len = self.inp.len();
                    let mut p = 0;
                    let mut found = false;
                    while p < avail_len {
                        let at = self.inp.pos() + p as u64;
                        let chunk_start = self.inp.is_chunk_start(at);
                        let line_start = if p == 0 {
                            self.after_nl
                        } else {
                            self.inp.avail().get(p - 1) == Some(&b'\n')
                        };
                        if chunk_start || line_start {
                            let bytes = self.inp.avail().get(p..).unwrap_or_default();
                            let strong = chunk_start || reason == "mid-stream" && p == 0;
                            match candidate(self.egress, bytes, strong) {
                                Verdict::Yes => {
                                    found = true;
                                    break;
                                }
                                Verdict::NeedMore
                                    if bytes.len() < LOOKAHEAD.max(maxline(bytes)) =>
                                {
                                    // Keep the bytes from here until more arrive.
                                    break;
                                }
                                _ => {}
                            }
                        }
                        p += 1;
                    }
                    if p > 0 {
                        self.after_nl = self.inp.avail().get(p - 1) == Some(&b'\n');
                    }
                    self.inp.skip(p);
                    let skipped = skipped + p as u64;
                    if found {
                        if skipped > 0 {
                            out.push(DirEvent::Skipped(skipped, reason));
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

/// How far a candidate check may need to look: an inline command line may be long.
fn maxline(bytes: &[u8]) -> usize {
    if bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        resp::MAX_LINE
    } else {
        LOOKAHEAD
    }
}

enum FStep {
    NeedMore,
    /// A blank inline line (ignored by servers).
    Empty,
    Msg(Body),
    Error(&'static str),
}

fn feed_framer(f: &mut Framer, avail: &[u8]) -> (usize, FStep) {
    match f {
        Framer::Replies(r) => match r.feed(avail) {
            (n, Step::NeedMore) => (n, FStep::NeedMore),
            (n, Step::Value(v)) => (n, FStep::Msg(Body::Reply(v))),
            (n, Step::Error(e)) => (n, FStep::Error(e)),
        },
        Framer::Commands { reader, inline } => {
            if inline.is_none() && reader.idle() {
                match avail.first() {
                    None => return (0, FStep::NeedMore),
                    Some(b'*') => {}
                    Some(_) => *inline = Some(Vec::new()),
                }
            }
            if let Some(line) = inline {
                return match avail.iter().position(|&b| b == b'\n') {
                    None => {
                        line.extend_from_slice(avail);
                        if line.len() > resp::MAX_LINE {
                            *inline = None;
                            (avail.len(), FStep::Error("inline-too-long"))
                        } else {
                            (avail.len(), FStep::NeedMore)
                        }
                    }
                    Some(j) => {
                        line.extend_from_slice(avail.get(..j).unwrap_or_default());
                        let mut l = inline.take().unwrap_or_default();
                        if l.last() == Some(&b'\r') {
                            l.pop();
                        }
                        match split_inline(&l) {
                            None => (j + 1, FStep::Error("bad-inline")),
                            Some(args) if args.is_empty() => (j + 1, FStep::Empty),
                            Some(args) => {
                                let total = args.len() as u64;
                                let args = args.iter().map(|a| Blob::full(a)).collect();
                                (
                                    j + 1,
                                    FStep::Msg(Body::Command {
                                        args,
                                        total,
                                        inline: true,
                                    }),
                                )
                            }
                        }
                    }
                };
            }
            match reader.feed(avail) {
                (n, Step::NeedMore) => (n, FStep::NeedMore),
                (n, Step::Error(e)) => (n, FStep::Error(e)),
                (n, Step::Value(Resp::Array(a))) => {
                    if a.total == 0 {
                        return (n, FStep::Empty);
                    }
                    let mut args = Vec::with_capacity(a.items.len());
                    for it in a.items {
                        match it {
                            Resp::Bulk(b) => args.push(b),
                            _ => return (n, FStep::Error("command-not-bulk-strings")),
                        }
                    }
                    (
                        n,
                        FStep::Msg(Body::Command {
                            args,
                            total: a.total,
                            inline: false,
                        }),
                    )
                }
                (n, Step::Value(Resp::Null)) => (n, FStep::Empty),
                (n, Step::Value(_)) => (n, FStep::Error("command-not-array")),
            }
        }
    }
}

/// Splits an inline command like Redis' `sdssplitargs`: blanks separate arguments, `"..."`
/// with `\n \r \t \b \a \\ \" \xHH` escapes and `'...'` with `\'` are single arguments.
/// `None` on unbalanced quotes.
#[must_use]
pub fn split_inline(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let c = *line.get(i)?;
                    if c == b'"' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' {
                        let e = *line.get(i + 1)?;
                        let hex = |b: u8| (b as char).to_digit(16);
                        if e == b'x'
                            && let (Some(h), Some(l)) = (
                                line.get(i + 2).and_then(|&b| hex(b)),
                                line.get(i + 3).and_then(|&b| hex(b)),
                            )
                        {
                            cur.push((h * 16 + l) as u8);
                            i += 4;
                            continue;
                        }
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    cur.push(c);
                    i += 1;
                }
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let c = *line.get(i)?;
                    if c == b'\'' {
                        i += 1;
                        break;
                    }
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        cur.push(b'\'');
                        i += 2;
                        continue;
                    }
                    cur.push(c);
                    i += 1;
                }
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
            }
            _ => {
                while i < n && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(cur);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Yes,
    No,
    NeedMore,
}

/// Commands recognised in inline form when a stream is joined mid-way.
const INLINE_COMMANDS: &[&str] = &[
    "PING",
    "AUTH",
    "HELLO",
    "SELECT",
    "GET",
    "SET",
    "DEL",
    "INCR",
    "DECR",
    "EXISTS",
    "EXPIRE",
    "TTL",
    "KEYS",
    "SCAN",
    "MGET",
    "MSET",
    "HGET",
    "HSET",
    "HGETALL",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "INFO",
    "QUIT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "SUBSCRIBE",
    "PUBLISH",
    "CLIENT",
    "CONFIG",
    "FLUSHDB",
    "FLUSHALL",
    "ECHO",
    "DBSIZE",
    "TYPE",
];

/// Does a message plausibly start at `b`? `strong`: `b` starts where a syscall's bytes start
/// (or the stream was joined there), so weaker evidence is enough.
pub(crate) fn candidate(egress: bool, b: &[u8], strong: bool) -> Verdict {
    if egress {
        command_start(b, strong)
    } else {
        reply_start(b, strong)
    }
}

/// `digits` (optionally `-1` when `neg_one`) then `\r\n`; returns the bytes used.
fn header_number(b: &[u8], max_digits: usize, neg_one: bool) -> Result<usize, Verdict> {
    if neg_one && b.starts_with(b"-1\r\n") {
        return Ok(4);
    }
    if neg_one && (b == b"-" || b == b"-1" || b == b"-1\r") {
        return Err(Verdict::NeedMore);
    }
    let d = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if d > max_digits {
        return Err(Verdict::No);
    }
    match b.get(d..) {
        Some([]) => Err(Verdict::NeedMore),
        _ if d == 0 => Err(Verdict::No),
        Some([b'\r']) => Err(Verdict::NeedMore),
        Some([b'\r', b'\n', ..]) => Ok(d + 2),
        _ => Err(Verdict::No),
    }
}

/// `*N\r\n$M\r\n` (or, when `strong`, a known inline command line).
pub(crate) fn command_start(b: &[u8], strong: bool) -> Verdict {
    match b.first() {
        None => Verdict::NeedMore,
        Some(b'*') => {
            let n = match header_number(&b[1..], 7, false) {
                Ok(n) => n,
                Err(v) => return v,
            };
            if b.get(1) == Some(&b'0') {
                return Verdict::No;
            }
            match b.get(1 + n) {
                None => Verdict::NeedMore,
                Some(b'$') => match header_number(&b[2 + n..], 10, false) {
                    Ok(_) => Verdict::Yes,
                    Err(v) => v,
                },
                _ => Verdict::No,
            }
        }
        Some(c) if strong && c.is_ascii_alphabetic() => {
            let word_len = b
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-')
                .count();
            let word = &b[..word_len];
            match b.get(word_len) {
                None if word_len <= 16 => Verdict::NeedMore,
                Some(b' ' | b'\r' | b'\n') => {
                    let known = INLINE_COMMANDS
                        .iter()
                        .any(|k| k.as_bytes().eq_ignore_ascii_case(word));
                    if !known {
                        return Verdict::No;
                    }
                    match b.iter().position(|&c| c == b'\n') {
                        None if b.len() < resp::MAX_LINE => Verdict::NeedMore,
                        None => Verdict::No,
                        Some(j) => {
                            let line = &b[..j];
                            // Not an HTTP request line (`GET / HTTP/1.1`).
                            if line.windows(5).any(|w| w == b"HTTP/") {
                                Verdict::No
                            } else {
                                Verdict::Yes
                            }
                        }
                    }
                }
                _ => Verdict::No,
            }
        }
        Some(_) => Verdict::No,
    }
}

/// A reply header line. Aggregate and bulk headers are specific enough anywhere; other types
/// (and any status line) need `strong` evidence.
pub(crate) fn reply_start(b: &[u8], strong: bool) -> Verdict {
    let Some(&ty) = b.first() else {
        return Verdict::NeedMore;
    };
    let rest = &b[1..];
    match ty {
        b'$' | b'*' => match header_number(rest, 10, true) {
            Ok(_) => Verdict::Yes,
            Err(v) => v,
        },
        b'%' | b'~' | b'>' | b'|' | b'!' | b'=' => match header_number(rest, 10, false) {
            Ok(_) => Verdict::Yes,
            Err(v) => v,
        },
        b':' => {
            let r = rest.strip_prefix(b"-").unwrap_or(rest);
            match header_number(r, 19, false) {
                Ok(_) => Verdict::Yes,
                Err(v) => v,
            }
        }
        b'+' | b'-' => {
            const WEAK: &[&[u8]] = &[
                b"+OK\r\n",
                b"+QUEUED\r\n",
                b"+PONG\r\n",
                b"-ERR ",
                b"-WRONGTYPE ",
            ];
            if !strong {
                for w in WEAK {
                    if b.len() < w.len() && w.starts_with(b) {
                        return Verdict::NeedMore;
                    }
                    if b.starts_with(w) {
                        return Verdict::Yes;
                    }
                }
                return Verdict::No;
            }
            match rest.iter().position(|&c| c == b'\n') {
                None if rest.len() < LOOKAHEAD => {
                    if rest.iter().all(|c| (0x20..0x7f).contains(c) || *c == b'\r') {
                        Verdict::NeedMore
                    } else {
                        Verdict::No
                    }
                }
                None => Verdict::No,
                Some(j) => {
                    let line = &rest[..j];
                    match line.split_last() {
                        Some((b'\r', text)) if text.iter().all(|c| (0x20..0x7f).contains(c)) => {
                            Verdict::Yes
                        }
                        _ => Verdict::No,
                    }
                }
            }
        }
        b'_' | b'#' | b',' | b'(' if strong => match rest.iter().position(|&c| c == b'\n') {
            None if rest.len() < 64 => Verdict::NeedMore,
            None => Verdict::No,
            Some(_) => {
                let mut r = Reader::new(64);
                match r.feed(b) {
                    (_, Step::Value(_)) => Verdict::Yes,
                    _ => Verdict::No,
                }
            }
        },
        _ => Verdict::No,
    }
}
