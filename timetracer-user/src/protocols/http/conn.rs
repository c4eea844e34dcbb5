//! Incremental HTTP/1.x parser for both directions of one connection, and pairing of
//! responses with requests.
//!
//! Each direction has a [`Dir`] state machine fed with reassembled [`Segment`]s. Heads are
//! parsed with `httparse` (also chunk-size lines); the body framing state machine (Content-Length
//! countdown, chunked de-framing, close-delimited) and the resync scanner are hand-written
//! because `httparse` only parses heads and chunk-size lines, and because we must survive gaps
//! and mid-stream starts, which no off-the-shelf parser does.
//!
//! # Pairing
//! Responses pair with requests in order (FIFO), with two safety rules that keep pairs right
//! when requests or responses were never seen (mid-stream attach, gaps):
//! - **Causality**: a response whose first byte was seen (`first.ts_ns`) before a request's
//!   head was complete (`head_done.ts_ns`) cannot answer that request. A response older than
//!   every request waiting for an answer is dropped (`Skipped`, "response-without-request").
//!   When no request is waiting at all, the response direction *pauses* (buffering, bounded)
//!   until the request direction produces a request head, the buffer limit is hit, or the
//!   connection closes — the request direction may simply lag behind (reassembly delay).
//! - **Lost responses**: after the response direction lost sync (gap or garbage between or
//!   inside responses), responses may be missing, so the next final response pairs with the
//!   *newest* waiting request it can causally answer; older waiting requests are emitted with
//!   `response: None`. (Pipelined requests across such a loss may be mispaired; Python
//!   clients do not pipeline.)
//!
//! Example (attach after request 1 was read, before response 1 was written): response 1 is
//! seen first and waits; request 2 arrives with `head_done` later than response 1's first
//! byte, so response 1 is dropped, and response 2 pairs with request 2.
use std::collections::VecDeque;

use bytes::Bytes;

use super::parse::{self, Verdict};
use super::types::{Exchange, Framing, HttpEvent, HttpMessage, Mark, Side, StartLine};
use crate::protocols::cursor::StreamCursor;
use crate::reassembly::Segment;

/// Parser limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Bytes of each body kept; the rest is counted (`body_size`) and flagged (`truncated`).
    pub max_body: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self { max_body: 1 << 20 }
    }
}

/// A head larger than this is invalid (resync).
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Header fields per head.
const MAX_HEADERS: usize = 256;
/// Bytes a paused direction may hold before the pause is forced to an end.
const MAX_QUEUED: usize = 1 << 20;
/// Requests waiting for a response before the oldest is given up.
const MAX_WAITING: usize = 1024;

const REQ: usize = 0;
const RESP: usize = 1;

/// Where a message goes once complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Request with this exchange index.
    Request(u64),
    /// Final response to exchange `index`.
    Final(u64),
    /// Interim (1xx) response to exchange `index`.
    Interim(u64),
    /// Response that answers no known request: parsed to be skipped.
    Orphan,
}

/// A message being assembled.
#[derive(Debug)]
struct Building {
    msg: HttpMessage,
    body: Vec<u8>,
    route: Route,
    /// Position just after the message's last byte so far (lost bytes included).
    end: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Nothing parsed yet: a message start, or the middle of something (mid-stream attach).
    Start,
    /// At a message boundary.
    Idle,
    /// Skipping to the next plausible start line. `cand`: the current position is a
    /// candidate (line or chunk start).
    Resync {
        reason: &'static str,
        skipped: u64,
        cand: bool,
    },
    /// Accumulating a head; `scanned`: bytes already searched for the end of the head.
    Head {
        scanned: usize,
    },
    /// Head parsed; waiting for the connection to choose the framing.
    AwaitFraming,
    Length(u64),
    Chunked(Chunked),
    Close,
    /// Body finished; the message is handed out on the next step.
    Complete,
    /// Upgraded or closed: nothing more is parsed.
    Done,
}

/// What a direction reports to the connection.
#[derive(Debug)]
enum Ev {
    /// A plausible start line at a message boundary (responses: with the status).
    Start {
        first: Mark,
        status: u16,
    },
    /// Head parsed (body not yet).
    Head,
    /// A message ended (complete, or cut: `incomplete`).
    Msg(Box<Building>),
    Skipped(u64, &'static str),
}

/// Parser state of one direction.
#[derive(Debug)]
struct Dir {
    requests: bool,
    egress: bool,
    inp: StreamCursor,
    st: St,
    cur: Option<Building>,
    /// First byte of the message whose start line was found.
    first: Mark,
    status: u16,
    /// Segments not yet processed (all input goes through here; held while paused).
    queue: VecDeque<Segment>,
    queued_bytes: u64,
    paused: bool,
    /// Sync was lost (gap, garbage) since this flag was last cleared: messages may be missing.
    lost_sync: bool,
}

fn headers_of(hs: &[httparse::Header<'_>]) -> Vec<(String, Bytes)> {
    hs.iter()
        .map(|h| (h.name.to_owned(), Bytes::copy_from_slice(h.value)))
        .collect()
}

/// Offset just past the end of a head (`\n\r\n` or `\n\n`) in `b`, searching from `from`.
fn head_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(k) = b.get(i..)?.iter().position(|&c| c == b'\n') {
        let j = i + k + 1;
        match b.get(j..) {
            Some([b'\n', ..]) => return Some(j + 1),
            Some([b'\r', b'\n', ..]) => return Some(j + 2),
            _ => {}
        }
        i = j;
    }
    None
}

impl Dir {
    fn new(requests: bool, egress: bool) -> Self {
        Self {
            requests,
            egress,
            inp: StreamCursor::default(),
            st: St::Start,
            cur: None,
            first: Mark::default(),
            status: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            paused: false,
            lost_sync: false,
        }
    }

    fn resync(&mut self, reason: &'static str, skipped: u64, cand: bool) {
        self.st = St::Resync {
            reason,
            skipped,
            cand,
        };
        if reason != "mid-stream" {
            self.lost_sync = true;
        }
    }

    /// Add `n` consumed bytes at the current position to the message being built.
    fn take(&mut self, n: usize, max_body: usize, body: bool) {
        if n == 0 {
            return;
        }
        let last = self.inp.mark_at(self.inp.pos() + n as u64 - 1);
        if let Some(b) = self.cur.as_mut() {
            if body {
                let data = &self.inp.avail()[..n];
                b.msg.body_size += n as u64;
                let room = max_body.saturating_sub(b.body.len());
                if n > room {
                    b.msg.truncated = true;
                }
                b.body.extend_from_slice(&data[..n.min(room)]);
            }
            b.msg.last = last;
            b.end += n as u64;
        }
        self.inp.skip(n);
    }

    /// Hand out the message being built.
    fn finish(&mut self, incomplete: bool) -> Option<Ev> {
        let mut b = self.cur.take()?;
        b.msg.incomplete |= incomplete;
        b.msg.body = Bytes::from(std::mem::take(&mut b.body));
        b.msg.wire_size = b.end.saturating_sub(b.msg.first.pos);
        Some(Ev::Msg(Box::new(b)))
    }

    /// Not a valid head after all: skip its first byte and look again. A response already
    /// paired is reported (incomplete) so that its exchange ends.
    fn cut_head(&mut self, reason: &'static str) -> Option<Ev> {
        let ev = match self.cur.take().map(|b| b.route) {
            Some(route @ (Route::Final(_) | Route::Interim(_))) => self.partial_response(route, 1),
            _ => {
                self.inp.skip(1);
                None
            }
        };
        self.resync(reason, u64::from(ev.is_none()), false);
        ev
    }

    /// A response cut inside its head (`n` bytes of it consumed): what we know from the
    /// status line.
    fn partial_response(&mut self, route: Route, n: usize) -> Option<Ev> {
        let last = if n > 0 {
            self.inp.mark_at(self.inp.pos() + n as u64 - 1)
        } else {
            self.first
        };
        let version = u8::from(self.inp.avail().get(7) == Some(&b'1'));
        self.cur = Some(Building {
            msg: HttpMessage {
                start: StartLine::Response {
                    status: self.status,
                    reason: String::new(),
                },
                version,
                headers: Vec::new(),
                body: Bytes::new(),
                body_size: 0,
                truncated: false,
                lost_bytes: 0,
                framing: Framing::None,
                trailers: Vec::new(),
                first: self.first,
                head_done: last,
                last,
                wire_size: 0,
                incomplete: true,
            },
            body: Vec::new(),
            route,
            end: self.inp.pos() + n as u64,
        });
        self.inp.skip(n);
        self.finish(true)
    }

    /// Run the state machine until it needs input or has something to report.
    fn step(&mut self, opts: &ParseOptions) -> Option<Ev> {
        loop {
            match self.st {
                St::Done | St::AwaitFraming => return None,
                St::Start | St::Idle => {
                    let start = self.st == St::Start;
                    // Empty lines between messages are ignored (RFC 9112 §2.2).
                    let ws = self
                        .inp
                        .avail()
                        .iter()
                        .take_while(|c| matches!(c, b'\r' | b'\n'))
                        .count();
                    self.inp.skip(ws);
                    let a = self.inp.avail();
                    if a.is_empty() {
                        return None;
                    }
                    match parse::start_line(a, self.requests) {
                        Verdict::NeedMore => return None,
                        Verdict::No => {
                            let reason = if start { "mid-stream" } else { "garbage" };
                            self.resync(reason, 0, true);
                        }
                        Verdict::Yes => {
                            let pos = self.inp.pos();
                            self.first = self.inp.mark_at(pos);
                            self.status = if self.requests {
                                0
                            } else {
                                a[9..12]
                                    .iter()
                                    .fold(0u16, |s, d| s * 10 + u16::from(d - b'0'))
                            };
                            self.st = St::Head { scanned: 0 };
                            return Some(Ev::Start {
                                first: self.first,
                                status: self.status,
                            });
                        }
                    }
                }
                St::Resync {
                    reason,
                    skipped,
                    cand,
                } => {
                    let a = self.inp.avail();
                    let pos = self.inp.pos();
                    let mut i = 0;
                    let mut is_cand = cand || self.inp.is_chunk_start(pos);
                    let mut found = None;
                    while i < a.len() {
                        if is_cand {
                            match parse::start_line(&a[i..], self.requests) {
                                Verdict::No => {}
                                v => {
                                    found = Some(v);
                                    break;
                                }
                            }
                        }
                        let nl = a[i..].iter().position(|&c| c == b'\n').map(|k| i + k + 1);
                        let cs = self
                            .inp
                            .next_chunk_start(pos + i as u64)
                            .map(|p| usize::try_from(p - pos).unwrap_or(usize::MAX));
                        i = match (nl, cs) {
                            (Some(x), Some(y)) => x.min(y),
                            (x, y) => x.or(y).unwrap_or(a.len()),
                        };
                        is_cand = true;
                    }
                    let i = i.min(a.len());
                    let cand_next = if i == a.len() {
                        a.last().is_some_and(|c| *c == b'\n')
                    } else {
                        true
                    };
                    self.inp.skip(i);
                    let skipped = skipped + i as u64;
                    if found == Some(Verdict::Yes) {
                        self.st = St::Idle;
                        if skipped > 0 {
                            return Some(Ev::Skipped(skipped, reason));
                        }
                    } else {
                        self.st = St::Resync {
                            reason,
                            skipped,
                            cand: cand_next,
                        };
                        return None;
                    }
                }
                St::Head { scanned } => {
                    let a = self.inp.avail();
                    let Some(n) = head_end(a, scanned.saturating_sub(2)) else {
                        if a.len() > MAX_HEAD {
                            if let Some(ev) = self.cut_head("head-too-large") {
                                return Some(ev);
                            }
                        } else {
                            self.st = St::Head { scanned: a.len() };
                            return None;
                        }
                        continue;
                    };
                    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let parsed = if self.requests {
                        let mut r = httparse::Request::new(&mut hs);
                        match r.parse(&a[..n]) {
                            Ok(httparse::Status::Complete(k)) => Some((
                                k,
                                StartLine::Request {
                                    method: r.method.unwrap_or_default().to_owned(),
                                    target: r.path.unwrap_or_default().to_owned(),
                                },
                                r.version.unwrap_or(1),
                                headers_of(r.headers),
                            )),
                            _ => None,
                        }
                    } else {
                        let mut r = httparse::Response::new(&mut hs);
                        match r.parse(&a[..n]) {
                            Ok(httparse::Status::Complete(k)) => Some((
                                k,
                                StartLine::Response {
                                    status: r.code.unwrap_or_default(),
                                    reason: r.reason.unwrap_or_default().to_owned(),
                                },
                                r.version.unwrap_or(1),
                                headers_of(r.headers),
                            )),
                            _ => None,
                        }
                    };
                    let Some((k, start, version, headers)) = parsed else {
                        if let Some(ev) = self.cut_head("bad-head") {
                            return Some(ev);
                        }
                        continue;
                    };
                    let pos = self.inp.pos();
                    let head_done = self.inp.mark_at(pos + k as u64 - 1);
                    // A response's route was chosen at its start line.
                    let route = self.cur.take().map_or(Route::Orphan, |b| b.route);
                    self.cur = Some(Building {
                        msg: HttpMessage {
                            start,
                            version,
                            headers,
                            body: Bytes::new(),
                            body_size: 0,
                            truncated: false,
                            lost_bytes: 0,
                            framing: Framing::None,
                            trailers: Vec::new(),
                            first: self.first,
                            head_done,
                            last: head_done,
                            wire_size: 0,
                            incomplete: false,
                        },
                        body: Vec::new(),
                        route,
                        end: pos,
                    });
                    self.take(k, opts.max_body, false);
                    self.st = St::AwaitFraming;
                    return Some(Ev::Head);
                }
                St::Length(rem) => {
                    let n = usize::try_from(rem)
                        .unwrap_or(usize::MAX)
                        .min(self.inp.avail().len());
                    self.take(n, opts.max_body, true);
                    let rem = rem - n as u64;
                    self.st = St::Length(rem);
                    if rem > 0 {
                        return None;
                    }
                    self.st = St::Complete;
                }
                St::Close => {
                    let n = self.inp.avail().len();
                    self.take(n, opts.max_body, true);
                    return None;
                }
                St::Complete => {
                    self.st = St::Idle;
                    return self.finish(false);
                }
                St::Chunked(c) => {
                    if let Some(ev) = self.step_chunked(c, opts) {
                        return Some(ev);
                    }
                    if self.st == St::Chunked(c) {
                        return None;
                    }
                }
            }
        }
    }

    /// One step of chunked de-framing. Returns an event when the message was cut; leaves the
    /// state unchanged when more input is needed.
    fn step_chunked(&mut self, c: Chunked, opts: &ParseOptions) -> Option<Ev> {
        let a = self.inp.avail();
        match c {
            Chunked::Size => match httparse::parse_chunk_size(a) {
                Ok(httparse::Status::Complete((k, size))) => {
                    self.take(k, opts.max_body, false);
                    self.st = St::Chunked(if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    });
                }
                Ok(httparse::Status::Partial) if a.len() <= MAX_CHUNK_LINE => {}
                _ => return self.bad_chunk(),
            },
            Chunked::Data(rem) => {
                let n = usize::try_from(rem).unwrap_or(usize::MAX).min(a.len());
                self.take(n, opts.max_body, true);
                let rem = rem - n as u64;
                if rem == 0 {
                    self.st = St::Chunked(Chunked::DataEnd);
                } else if n > 0 {
                    self.st = St::Chunked(Chunked::Data(rem));
                }
            }
            Chunked::DataEnd => match a {
                [b'\r', b'\n', ..] => {
                    self.take(2, opts.max_body, false);
                    self.st = St::Chunked(Chunked::Size);
                }
                [b'\n', ..] => {
                    self.take(1, opts.max_body, false);
                    self.st = St::Chunked(Chunked::Size);
                }
                [] | [b'\r'] => {}
                _ => return self.bad_chunk(),
            },
            Chunked::Trailers => {
                let end = match a {
                    [b'\r', b'\n', ..] => Some(2),
                    [b'\n', ..] => Some(1),
                    [] | [b'\r'] => None,
                    _ => head_end(a, 0),
                };
                let Some(end) = end else {
                    if a.len() > MAX_HEAD {
                        return self.bad_chunk();
                    }
                    return None;
                };
                if end > 2 {
                    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&a[..end], &mut hs) {
                        Ok(httparse::Status::Complete((_, hs))) => {
                            let t = headers_of(hs);
                            if let Some(b) = self.cur.as_mut() {
                                b.msg.trailers = t;
                            }
                        }
                        _ => return self.bad_chunk(),
                    }
                }
                self.take(end, opts.max_body, false);
                self.st = St::Complete;
            }
        }
        None
    }

    fn bad_chunk(&mut self) -> Option<Ev> {
        self.resync("bad-chunk", 0, false);
        self.finish(true)
    }

    /// `len` bytes at the current end of input will never arrive. Input must have been
    /// stepped until it needed more.
    fn gap(&mut self, len: u64, out: &mut Vec<Ev>) {
        // (no end yet: nothing arrived, the position is the start)
        let pos = self.inp.end().unwrap_or(self.inp.pos());
        let pending = self.inp.avail().len() as u64;
        match self.st {
            St::Done => {}
            St::Start | St::Idle => {
                let reason = if self.st == St::Start {
                    "mid-stream"
                } else {
                    "gap"
                };
                self.resync(reason, pending, false);
            }
            St::Resync {
                reason, skipped, ..
            } => self.resync(reason, skipped + pending, false),
            St::Head { .. } => {
                match self.cur.as_ref().map(|b| b.route) {
                    // (routes of heads in progress are kept in `cur` only for responses)
                    Some(route @ (Route::Final(_) | Route::Interim(_))) => {
                        self.cur = None;
                        if let Some(Ev::Msg(mut b)) = self.partial_response(route, pending as usize)
                        {
                            b.msg.lost_bytes += len;
                            b.msg.wire_size += len;
                            out.push(Ev::Msg(b));
                        }
                    }
                    _ => {
                        self.cur = None;
                        if pending > 0 {
                            out.push(Ev::Skipped(pending, "gap-in-head"));
                        }
                    }
                }
                self.resync("gap", 0, false);
            }
            St::Length(rem) => {
                let lost = rem.min(len);
                if let Some(b) = self.cur.as_mut() {
                    b.msg.lost_bytes += lost;
                    b.msg.body_size += lost;
                    b.end += lost;
                }
                if lost == rem {
                    self.st = St::Idle;
                    out.extend(self.finish(false));
                    if len > lost {
                        self.resync("gap", 0, false);
                    }
                } else {
                    self.st = St::Length(rem - lost);
                }
            }
            St::Close => {
                if let Some(b) = self.cur.as_mut() {
                    b.msg.lost_bytes += len;
                    b.msg.body_size += len;
                    b.end += len;
                }
            }
            St::Complete => {
                out.extend(self.finish(false));
                self.resync("gap", 0, false);
            }
            St::Chunked(_) | St::AwaitFraming => {
                if let Some(b) = self.cur.as_mut() {
                    b.msg.lost_bytes += len;
                    b.end += len;
                }
                self.resync("gap", 0, false);
                out.extend(self.finish(true));
            }
        }
        self.inp.reset_to(pos + len);
    }

    /// End of input: finish what can be finished.
    fn close(&mut self, out: &mut Vec<Ev>) {
        let pending = self.inp.avail().len() as u64;
        match self.st {
            St::Done => {}
            St::Start | St::Idle => {
                if pending > 0 {
                    out.push(Ev::Skipped(pending, "truncated"));
                }
            }
            St::Resync {
                reason, skipped, ..
            } => {
                if skipped + pending > 0 {
                    out.push(Ev::Skipped(skipped + pending, reason));
                }
            }
            St::Head { .. } => match self.cur.as_ref().map(|b| b.route) {
                Some(route @ (Route::Final(_) | Route::Interim(_))) => {
                    self.cur = None;
                    out.extend(self.partial_response(route, pending as usize));
                }
                _ => {
                    self.cur = None;
                    if pending > 0 {
                        out.push(Ev::Skipped(pending, "truncated-head"));
                    }
                }
            },
            St::Close | St::Complete => out.extend(self.finish(false)),
            St::Length(_) | St::Chunked(_) | St::AwaitFraming => out.extend(self.finish(true)),
        }
        self.inp.reset_to(self.inp.end().unwrap_or(0));
        self.st = St::Done;
    }
}

/// An exchange whose request head was seen.
#[derive(Debug)]
struct Pending {
    index: u64,
    method: String,
    head_done: Mark,
    /// The request asks to switch protocols (`Upgrade` header or `CONNECT`).
    wants_upgrade: bool,
    request: Option<HttpMessage>,
    interim: Vec<HttpMessage>,
    response: Option<HttpMessage>,
    /// A final response was routed here (or none will come).
    routed: bool,
    /// The final response ended (or none will come).
    resp_done: bool,
}

/// HTTP/1.x parser of one connection (both directions).
#[derive(Debug)]
pub struct HttpConn {
    side: Side,
    opts: ParseOptions,
    dirs: [Dir; 2],
    pending: VecDeque<Pending>,
    next_index: u64,
    upgraded: bool,
    closed: bool,
    /// Closing: pauses are not honoured (nothing more will come to resolve them).
    forcing: bool,
}

impl HttpConn {
    /// A parser for a connection on which the traced process is on `side`.
    #[must_use]
    pub fn new(side: Side, opts: ParseOptions) -> Self {
        let req_egress = side == Side::Client;
        Self {
            side,
            opts,
            dirs: [Dir::new(true, req_egress), Dir::new(false, !req_egress)],
            pending: VecDeque::new(),
            next_index: 0,
            upgraded: false,
            closed: false,
            forcing: false,
        }
    }

    /// The connection switched protocols; further input is ignored.
    #[must_use]
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Feed the next segment of one direction. `egress = true`: bytes written by the traced
    /// process (for [`Side::Server`], ingress = requests and egress = responses; for
    /// [`Side::Client`], egress = requests and ingress = responses). Segments of each
    /// direction must come in position order (as [`crate::reassembly::Stream`] delivers them).
    pub fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<HttpEvent>) {
        if self.closed || self.upgraded {
            return;
        }
        let which = if egress == (self.side == Side::Client) {
            REQ
        } else {
            RESP
        };
        let d = &mut self.dirs[which];
        d.queued_bytes += match &seg {
            Segment::Data(c) => c.data.len() as u64,
            Segment::Gap { .. } => 0,
        };
        d.queue.push_back(seg);
        if d.paused && d.queued_bytes + d.inp.avail().len() as u64 > MAX_QUEUED as u64 {
            // Waited too long for the other direction: stop waiting.
            self.forcing = true;
            self.dirs[which].paused = false;
            self.pump(out);
            self.forcing = false;
        }
        self.pump(out);
    }

    /// The connection closed (or tracing stopped): finish close-delimited bodies, emit
    /// pending exchanges (with `response: None` or `incomplete` messages). `ts_ns` is the
    /// time of the close; marks come from the chunks, so it is not used for them.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let _ = ts_ns;
        if self.closed {
            return;
        }
        if !self.upgraded {
            self.forcing = true;
            for d in &mut self.dirs {
                d.paused = false;
            }
            self.pump(out);
            for which in [REQ, RESP] {
                let mut evs = Vec::new();
                self.dirs[which].close(&mut evs);
                for ev in evs {
                    self.handle(which, ev, out);
                }
                self.pump(out);
            }
            for p in &mut self.pending {
                p.routed = true;
                p.resp_done = true;
            }
            self.emit_ready(out);
            self.pending.clear();
        }
        self.closed = true;
    }

    /// Process queued segments and events until nothing moves.
    fn pump(&mut self, out: &mut Vec<HttpEvent>) {
        loop {
            let mut moved = false;
            for which in [REQ, RESP] {
                loop {
                    if self.upgraded {
                        return;
                    }
                    if self.dirs[which].paused {
                        break;
                    }
                    if let Some(ev) = self.dirs[which].step(&self.opts) {
                        self.handle(which, ev, out);
                        moved = true;
                        continue;
                    }
                    let Some(seg) = self.dirs[which].queue.pop_front() else {
                        break;
                    };
                    moved = true;
                    self.apply(which, seg, out);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn apply(&mut self, which: usize, seg: Segment, out: &mut Vec<HttpEvent>) {
        let mut evs = Vec::new();
        let d = &mut self.dirs[which];
        match seg {
            Segment::Data(c) => {
                d.queued_bytes = d.queued_bytes.saturating_sub(c.data.len() as u64);
                let end = d.inp.end().unwrap_or(c.pos);
                let c_end = c.pos + c.data.len() as u64;
                if c.pos > end {
                    // A hole the stream did not report: treat it as a gap.
                    d.gap(c.pos - end, &mut evs);
                }
                if c_end > end.max(c.pos) {
                    // (bytes before `end` were seen already: the cursor keeps the new ones)
                    d.inp.append(&c);
                }
            }
            Segment::Gap { pos, len } => {
                let end = d.inp.end().unwrap_or(pos);
                let g_end = pos.saturating_add(len);
                if g_end > end {
                    if d.inp.end().is_none() {
                        d.inp.reset_to(end);
                    }
                    d.gap(g_end - end, &mut evs);
                }
            }
        }
        for ev in evs {
            self.handle(which, ev, out);
        }
    }

    fn pending_mut(&mut self, index: u64) -> Option<&mut Pending> {
        self.pending.iter_mut().find(|p| p.index == index)
    }

    /// Decide which request a response starting at `first` with `status` answers.
    /// `None` = wait for the request direction.
    fn route(&mut self, first: Mark, status: u16) -> Option<Route> {
        let interim = (100..200).contains(&status) && status != 101;
        let lost = self.dirs[RESP].lost_sync;
        let waiting: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].routed)
            .collect();
        if waiting.is_empty() {
            return if self.forcing {
                Some(Route::Orphan)
            } else {
                None
            };
        }
        let can_answer = |i: &usize| self.pending[*i].head_done.ts_ns <= first.ts_ns;
        let pick = if lost {
            waiting.iter().copied().rfind(can_answer)
        } else {
            waiting.first().copied().filter(can_answer)
        };
        let Some(i) = pick else {
            return Some(Route::Orphan);
        };
        let index = self.pending[i].index;
        if interim {
            return Some(Route::Interim(index));
        }
        // Requests before the chosen one lost their responses.
        for &j in waiting.iter().take_while(|&&j| j < i) {
            self.pending[j].routed = true;
            self.pending[j].resp_done = true;
        }
        self.pending[i].routed = true;
        self.dirs[RESP].lost_sync = false;
        Some(Route::Final(index))
    }

    fn skipped(&self, which: usize, bytes: u64, reason: &'static str) -> HttpEvent {
        HttpEvent::Skipped {
            dir_egress: self.dirs[which].egress,
            bytes,
            reason,
        }
    }

    fn handle(&mut self, which: usize, ev: Ev, out: &mut Vec<HttpEvent>) {
        match ev {
            Ev::Skipped(bytes, reason) => out.push(self.skipped(which, bytes, reason)),
            Ev::Start { first, status } if which == RESP => match self.route(first, status) {
                None => {
                    // Wait for the request direction; the start line is found again on resume.
                    let d = &mut self.dirs[RESP];
                    d.st = St::Idle;
                    d.paused = true;
                }
                Some(route) => {
                    if let Route::Final(index) = route {
                        out.push(HttpEvent::ResponseStarted { index, mark: first });
                        let upgrade = status == 101
                            || ((200..300).contains(&status)
                                && self
                                    .pending_mut(index)
                                    .is_some_and(|p| p.method == "CONNECT"));
                        if !upgrade && !self.pending.iter().any(|p| p.wants_upgrade && !p.routed) {
                            self.dirs[REQ].paused = false;
                        }
                    }
                    // Kept in `cur` (no message yet) so a cut head can still be reported.
                    self.dirs[RESP].cur = Some(Building {
                        msg: HttpMessage {
                            start: StartLine::Response {
                                status,
                                reason: String::new(),
                            },
                            version: 1,
                            headers: Vec::new(),
                            body: Bytes::new(),
                            body_size: 0,
                            truncated: false,
                            lost_bytes: 0,
                            framing: Framing::None,
                            trailers: Vec::new(),
                            first,
                            head_done: first,
                            last: first,
                            wire_size: 0,
                            incomplete: true,
                        },
                        body: Vec::new(),
                        route,
                        end: first.pos,
                    });
                }
            },
            Ev::Start { .. } => {}
            Ev::Head if which == REQ => self.request_head(out),
            Ev::Head => self.response_head(out),
            Ev::Msg(b) => self.message(which, *b, out),
        }
    }

    fn request_head(&mut self, out: &mut Vec<HttpEvent>) {
        let d = &mut self.dirs[REQ];
        let Some(b) = d.cur.as_mut() else { return };
        let te: Vec<&[u8]> = values(&b.msg, "transfer-encoding");
        let cl: Vec<&[u8]> = values(&b.msg, "content-length");
        let Ok(framing) = parse::request_framing(&te, &cl) else {
            let bytes = b.end - b.msg.first.pos;
            d.cur = None;
            d.resync("bad-framing", 0, true);
            out.push(self.skipped(REQ, bytes, "bad-framing"));
            return;
        };
        let index = self.next_index;
        self.next_index += 1;
        b.route = Route::Request(index);
        b.msg.framing = framing;
        let StartLine::Request { method, target } = &b.msg.start else {
            return;
        };
        let (method, target) = (method.clone(), target.clone());
        let wants_upgrade = method == "CONNECT" || b.msg.header("upgrade").is_some();
        out.push(HttpEvent::RequestHead {
            index,
            mark: b.msg.first,
            method: method.clone(),
            target,
        });
        self.pending.push_back(Pending {
            index,
            method,
            head_done: b.msg.head_done,
            wants_upgrade,
            request: None,
            interim: Vec::new(),
            response: None,
            routed: false,
            resp_done: false,
        });
        d.st = body_state(framing);
        // A response waiting for its request can now be routed.
        self.dirs[RESP].paused = false;
        // Bound the number of requests waiting for an answer.
        let waiting = self.pending.iter().filter(|p| !p.routed).count();
        if waiting > MAX_WAITING {
            if let Some(p) = self
                .pending
                .iter_mut()
                .find(|p| !p.routed && p.request.is_some())
            {
                p.routed = true;
                p.resp_done = true;
            }
            self.emit_ready(out);
        }
    }

    fn response_head(&mut self, out: &mut Vec<HttpEvent>) {
        let Some(b) = self.dirs[RESP].cur.as_mut() else {
            return;
        };
        let StartLine::Response { status, .. } = b.msg.start else {
            return;
        };
        let route = b.route;
        let method = match route {
            Route::Final(i) | Route::Interim(i) => self
                .pending
                .iter()
                .find(|p| p.index == i)
                .map(|p| p.method.clone()),
            Route::Request(_) | Route::Orphan => None,
        };
        let is_connect = method.as_deref() == Some("CONNECT");
        if let Route::Final(index) = route
            && (status == 101 || (is_connect && (200..300).contains(&status)))
        {
            self.upgrade(index, out);
            return;
        }
        let no_body = method.as_deref() == Some("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        let te: Vec<&[u8]> = values(&b.msg, "transfer-encoding");
        let cl: Vec<&[u8]> = values(&b.msg, "content-length");
        let framing = parse::response_framing(no_body, &te, &cl);
        b.msg.framing = framing;
        self.dirs[RESP].st = body_state(framing);
    }

    /// `101 Switching Protocols` or a `2xx` answer to `CONNECT`: finish and stop.
    fn upgrade(&mut self, index: u64, out: &mut Vec<HttpEvent>) {
        let bytes_after: u64 = self
            .dirs
            .iter()
            .map(|d| d.inp.avail().len() as u64 + d.queued_bytes)
            .sum();
        if let Some(Ev::Msg(b)) = self.dirs[RESP].finish(false) {
            let resp = b.msg;
            // The request is normally complete; if its body was still arriving, it is cut.
            let req_part = match self.dirs[REQ].cur.as_ref().map(|b| b.route) {
                Some(Route::Request(i)) if i == index => match self.dirs[REQ].finish(true) {
                    Some(Ev::Msg(b)) => Some(b.msg),
                    _ => None,
                },
                _ => None,
            };
            if let Some(p) = self.pending_mut(index) {
                if p.request.is_none() {
                    p.request = req_part;
                }
                p.response = Some(resp);
                p.routed = true;
                p.resp_done = true;
            }
        }
        self.emit_ready(out);
        for d in &mut self.dirs {
            d.st = St::Done;
            d.queue.clear();
            d.queued_bytes = 0;
            d.inp.reset_to(d.inp.end().unwrap_or(0));
        }
        self.upgraded = true;
        out.push(HttpEvent::Upgraded { index, bytes_after });
    }

    fn message(&mut self, which: usize, b: Building, out: &mut Vec<HttpEvent>) {
        match b.route {
            Route::Request(index) => {
                let forcing = self.forcing;
                if let Some(p) = self.pending_mut(index) {
                    p.request = Some(b.msg);
                    if p.wants_upgrade && !p.routed && !forcing {
                        // What follows may not be HTTP: wait for the answer.
                        self.dirs[REQ].paused = true;
                    }
                }
            }
            Route::Final(index) => {
                if let Some(p) = self.pending_mut(index) {
                    p.response = Some(b.msg);
                    p.resp_done = true;
                }
            }
            Route::Interim(index) => {
                if let Some(p) = self.pending_mut(index) {
                    p.interim.push(b.msg);
                }
            }
            Route::Orphan => {
                out.push(self.skipped(which, b.msg.wire_size, "response-without-request"));
            }
        }
        self.emit_ready(out);
    }

    /// Emit every exchange whose request and response are both done.
    fn emit_ready(&mut self, out: &mut Vec<HttpEvent>) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            if p.resp_done && p.request.is_some() {
                let Some(p) = self.pending.remove(i) else {
                    break;
                };
                if let Some(request) = p.request {
                    out.push(HttpEvent::Exchange(Exchange {
                        request,
                        response: p.response,
                        interim: p.interim,
                        index: p.index,
                    }));
                }
            } else {
                i += 1;
            }
        }
    }
}

fn values<'a>(m: &'a HttpMessage, name: &str) -> Vec<&'a [u8]> {
    m.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
        .collect()
}

fn body_state(f: Framing) -> St {
    match f {
        Framing::None | Framing::Length(0) => St::Complete,
        Framing::Length(n) => St::Length(n),
        Framing::Chunked => St::Chunked(Chunked::Size),
        Framing::Close => St::Close,
    }
}
