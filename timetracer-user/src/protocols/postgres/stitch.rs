//! The PostgreSQL connection parser: frames both directions, pairs backend messages with the
//! frontend messages they answer, and emits one [`DbCall`] per statement execution (see
//! `docs/protocols/postgres.md` for the grouping rules and the `detail` format).
use crate::protocols::db::push_capped;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::parse::{
    self, Bind, Column, Frame, Kind, MAX_BUFFERED, Msg, format_of, frame_typed, frame_untyped,
    plausible_at,
};
use super::types::decode_value;
use crate::protocols::Protocol;
use crate::protocols::cursor::StreamCursor;
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::protocols::http::types::Mark;
use crate::reassembly::Segment;

/// Parser limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Rows kept per call (the rest are counted in `rows_total`).
    pub max_rows: usize,
    /// Bytes of row data kept per call.
    pub max_row_bytes: usize,
    /// Bytes kept of each of `raw_request` / `raw_response`.
    pub max_raw: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_rows: 1000,
            max_row_bytes: 1 << 20,
            max_raw: 1 << 20,
        }
    }
}

/// Backend messages held while no request is known to pair them with.
const MAX_ORPHANS: usize = 4096;
/// Backend bytes held, before any frontend byte was seen, while they may start with an
/// `SSLRequest`/`GSSENCRequest` answer.
const MAX_EARLY_BACKEND: usize = 1 << 16;
/// Placeholder SQL reason when a statement's `Parse` was not seen.
pub const MISSING_SQL: &str = "prepared before tracing";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FeState {
    /// Nothing framed yet: a startup message, or any message (mid-session attach).
    Start,
    /// Expecting an untyped startup-phase message.
    Untyped,
    Typed,
    Resync,
    /// TLS or unusable: nothing more is parsed.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BeState {
    Start,
    Typed,
    Resync,
    Stopped,
}

#[derive(Debug)]
enum FeItem {
    Msg(Msg),
    /// Frontend bytes were lost here.
    Gap,
}

/// What the backend owes for a frontend message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    ParseComplete,
    BindComplete,
    /// `ParameterDescription` then `RowDescription`/`NoData`.
    StmtDesc,
    PortalDesc,
    Exec,
    CloseComplete,
    Ready,
    QueryRes,
    FuncRes,
    Auth,
    Answer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    Startup,
    Ssl,
    Gss,
    Cancel,
    Query,
    Extended,
    FunctionCall,
    Other,
}

#[derive(Clone, Debug, Default)]
struct Stmt {
    sql: String,
    parse_types: Vec<u32>,
    param_desc: Option<Vec<u32>>,
    columns: Option<Vec<Column>>,
}

#[derive(Clone, Debug, Default)]
struct Portal {
    statement: String,
    result_formats: Vec<i16>,
    columns: Option<Vec<Column>>,
}

#[derive(Debug, Default)]
struct ResultSet {
    columns: Option<Vec<Column>>,
    rows: Vec<Value>,
    rows_total: u64,
    truncated: bool,
    tag: Option<String>,
    empty_query: bool,
    suspended: bool,
}

#[derive(Debug, Default)]
struct Copy {
    direction: &'static str,
    binary: bool,
    data_messages: u64,
    bytes: u64,
    failed: Option<String>,
}

#[derive(Debug)]
struct CallB {
    kind: CallKind,
    fe_types: String,
    be_count: u64,
    expect: VecDeque<Expect>,
    ended: bool,
    has_execute: bool,
    has_parse: bool,
    has_describe: bool,
    has_close: bool,
    has_sync: bool,
    skip_to_sync: bool,
    copy_in: bool,
    raw_req: Vec<u8>,
    raw_resp: Vec<u8>,
    raw_truncated: bool,
    req_first: Mark,
    req_last: Mark,
    resp_first: Option<Mark>,
    resp_last: Option<Mark>,
    incomplete: bool,
    unexpected: u64,
    skipped_messages: u64,
    // Detail.
    sql: Option<String>,
    sql_missing: bool,
    statement: Option<String>,
    portal: Option<String>,
    parse_types: Vec<u32>,
    bind: Option<Bind>,
    describe_params: Option<Vec<u32>>,
    columns: Option<Vec<Column>>,
    results: Vec<ResultSet>,
    stored_rows: usize,
    stored_bytes: usize,
    error: Option<Vec<(u8, String)>>,
    notices: Vec<Value>,
    notifications: Vec<Value>,
    tx_status: Option<char>,
    copy: Option<Copy>,
    startup_params: Vec<(String, String)>,
    answer: Option<char>,
    cancel_pid: Option<i32>,
    max_rows: Option<i32>,
}

impl CallB {
    fn new(kind: CallKind, first: Mark) -> Self {
        Self {
            kind,
            fe_types: String::new(),
            be_count: 0,
            expect: VecDeque::new(),
            ended: false,
            has_execute: false,
            has_parse: false,
            has_describe: false,
            has_close: false,
            has_sync: false,
            skip_to_sync: false,
            copy_in: false,
            raw_req: Vec::new(),
            raw_resp: Vec::new(),
            raw_truncated: false,
            req_first: first,
            req_last: first,
            resp_first: None,
            resp_last: None,
            incomplete: false,
            unexpected: 0,
            skipped_messages: 0,
            sql: None,
            sql_missing: false,
            statement: None,
            portal: None,
            parse_types: Vec::new(),
            bind: None,
            describe_params: None,
            columns: None,
            results: Vec::new(),
            stored_rows: 0,
            stored_bytes: 0,
            error: None,
            notices: Vec::new(),
            notifications: Vec::new(),
            tx_status: None,
            copy: None,
            startup_params: Vec::new(),
            answer: None,
            cancel_pid: None,
            max_rows: None,
        }
    }
    fn cur_result(&mut self) -> &mut ResultSet {
        if self.results.is_empty() {
            self.results.push(ResultSet::default());
        }
        let n = self.results.len() - 1;
        &mut self.results[n]
    }
}

fn field_name(code: u8) -> Option<&'static str> {
    Some(match code {
        b'S' => "severity_localized",
        b'V' => "severity",
        b'C' => "code",
        b'M' => "message",
        b'D' => "detail",
        b'H' => "hint",
        b'P' => "position",
        b'p' => "internal_position",
        b'q' => "internal_query",
        b'W' => "where",
        b's' => "schema",
        b't' => "table",
        b'c' => "column",
        b'd' => "data_type",
        b'n' => "constraint",
        b'F' => "file",
        b'L' => "line",
        b'R' => "routine",
        _ => return None,
    })
}

/// `ErrorResponse`/`NoticeResponse` fields as a JSON object (`severity` falls back to the
/// localized one).
fn fields_json(fields: &[(u8, String)]) -> Value {
    let mut m = Map::new();
    for (c, v) in fields {
        if let Some(n) = field_name(*c) {
            m.insert(n.into(), Value::String(v.clone()));
        }
    }
    if !m.contains_key("severity")
        && let Some(s) = m.get("severity_localized").cloned()
    {
        m.insert("severity".into(), s);
    }
    m.remove("severity_localized");
    Value::Object(m)
}

fn field(fields: &[(u8, String)], code: u8) -> Option<&str> {
    fields.iter().find(|f| f.0 == code).map(|f| f.1.as_str())
}

fn columns_json(cols: &[Column]) -> Value {
    Value::Array(
        cols.iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type_oid": c.type_oid,
                    "table_oid": c.table_oid,
                    "column": c.column,
                    "type_size": c.type_size,
                    "type_modifier": c.type_modifier,
                    "format": if c.format == 1 { "binary" } else { "text" },
                })
            })
            .collect(),
    )
}

/// Client-side PostgreSQL protocol 3.0 parser for one connection.
#[derive(Debug)]
pub struct PgParser {
    opts: PgOptions,
    fe_in: StreamCursor,
    be_in: StreamCursor,
    fe_state: FeState,
    be_state: BeState,
    answers_expected: u32,
    fe: VecDeque<FeItem>,
    be: VecDeque<Msg>,
    call: Option<CallB>,
    index: u64,
    stmts: HashMap<String, Stmt>,
    portals: HashMap<String, Portal>,
    facts: Map<String, Value>,
    missing: Vec<String>,
    session_dirty: bool,
    be_skip_to_z: bool,
    tls: bool,
    closed: bool,
}

impl Default for PgParser {
    fn default() -> Self {
        Self::new(PgOptions::default())
    }
}

impl PgParser {
    /// A parser for one connection, in its initial state (startup expected, mid-session
    /// attach recognised from the first bytes).
    #[must_use]
    pub fn new(opts: PgOptions) -> Self {
        Self {
            opts,
            fe_in: StreamCursor::default(),
            be_in: StreamCursor::default(),
            fe_state: FeState::Start,
            be_state: BeState::Start,
            answers_expected: 0,
            fe: VecDeque::new(),
            be: VecDeque::new(),
            call: None,
            index: 0,
            stmts: HashMap::new(),
            portals: HashMap::new(),
            facts: Map::new(),
            missing: Vec::new(),
            session_dirty: false,
            be_skip_to_z: false,
            tls: false,
            closed: false,
        }
    }

    fn add_missing(&mut self, what: String) {
        if !self.missing.contains(&what) {
            self.missing.push(what);
            self.session_dirty = true;
        }
    }

    fn mid_session(&mut self) {
        for m in [
            "startup",
            "authentication",
            "parameter_status",
            "backend_key_data",
        ] {
            self.add_missing(m.into());
        }
    }

    fn flush_session(&mut self, out: &mut Vec<DbEvent>) {
        if self.session_dirty {
            self.session_dirty = false;
            out.push(DbEvent::Session {
                protocol: Protocol::Postgres,
                facts: Value::Object(self.facts.clone()),
                missing: self.missing.clone(),
            });
        }
    }

    fn set_fact(&mut self, path: &[&str], v: Value) {
        let mut m = &mut self.facts;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if m.get(*k) != Some(&v) {
                    m.insert((*k).to_owned(), v);
                    self.session_dirty = true;
                }
                return;
            }
            let e = m
                .entry((*k).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !e.is_object() {
                *e = Value::Object(Map::new());
            }
            let Value::Object(inner) = e else { return };
            m = inner;
        }
    }

    fn stop_tls(&mut self, out: &mut Vec<DbEvent>) {
        self.tls = true;
        self.fe_state = FeState::Stopped;
        self.be_state = BeState::Stopped;
        self.set_fact(&["tls"], Value::Bool(true));
        for (egress, inp) in [(true, &mut self.fe_in), (false, &mut self.be_in)] {
            let n = inp.clear();
            if n > 0 {
                out.push(DbEvent::Skipped {
                    egress,
                    bytes: n,
                    reason: "tls",
                });
            }
        }
    }

    // ---- framing -------------------------------------------------------------------------

    fn take_msg(inp: &mut StreamCursor, kind: Kind, len: u64) -> Option<Msg> {
        if len > MAX_BUFFERED as u64 {
            let hdr = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(5)
                .min(inp.len());
            let raw = Bytes::copy_from_slice(&inp.avail()[..hdr]);
            let start = inp.pos();
            let first = inp.discard(len);
            let last = inp.mark_at(start + len - 1);
            return Some(Msg {
                kind,
                raw,
                first,
                last: Mark {
                    pos: start + len - 1,
                    ..last
                },
                oversized: Some(len),
            });
        }
        let n = usize::try_from(len).ok()?;
        if inp.len() < n {
            return None;
        }
        let (raw, first, last) = inp.take(n);
        Some(Msg {
            kind,
            raw,
            first,
            last,
            oversized: None,
        })
    }

    /// Scans for the next plausible typed message; returns whether one was found.
    fn resync(
        inp: &mut StreamCursor,
        frontend: bool,
        egress: bool,
        out: &mut Vec<DbEvent>,
    ) -> bool {
        let b = inp.avail();
        let mut i = 0;
        let mut found = None;
        let mut wait_at = None;
        while i < b.len() {
            // A definite boundary anywhere wins over an undecided earlier one (junk claiming
            // a long length must not stall the resync).
            match plausible_at(&b[i..], frontend) {
                Some(true) => {
                    found = Some(i);
                    break;
                }
                None if wait_at.is_none() => wait_at = Some(i),
                _ => {}
            }
            i += 1;
        }
        let skip = found.or(wait_at).unwrap_or(b.len());
        if skip > 0 {
            inp.skip(skip);
            out.push(DbEvent::Skipped {
                egress,
                bytes: skip as u64,
                reason: "resync",
            });
        }
        found.is_some()
    }

    fn frame_fe(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            if self.fe_in.discarding() > 0 || self.fe_in.len() == 0 {
                return;
            }
            match self.fe_state {
                FeState::Stopped => {
                    let n = self.fe_in.clear();
                    out.push(DbEvent::Skipped {
                        egress: true,
                        bytes: n,
                        reason: if self.tls { "tls" } else { "stopped" },
                    });
                    return;
                }
                FeState::Start => match frame_untyped(self.fe_in.avail()) {
                    Frame::Msg(..) => self.fe_state = FeState::Untyped,
                    Frame::NeedMore | Frame::Invalid => {
                        match plausible_at(self.fe_in.avail(), true) {
                            Some(true) => {
                                self.fe_state = FeState::Typed;
                                self.mid_session();
                            }
                            None => return,
                            Some(false) => {
                                if self.fe_in.len() < 8 {
                                    return;
                                }
                                self.fe_state = FeState::Resync;
                                self.mid_session();
                            }
                        }
                    }
                },
                FeState::Untyped => {
                    if self.fe_in.avail().starts_with(&[0x16, 0x03]) {
                        self.fe_state = FeState::Stopped;
                        self.tls = true;
                        continue;
                    }
                    match frame_untyped(self.fe_in.avail()) {
                        Frame::Msg(kind, len) => {
                            let Some(m) = Self::take_msg(&mut self.fe_in, kind, len) else {
                                return;
                            };
                            match kind {
                                Kind::SslRequest | Kind::GssRequest => {
                                    self.answers_expected += 1;
                                }
                                _ => self.fe_state = FeState::Typed,
                            }
                            self.fe.push_back(FeItem::Msg(m));
                        }
                        Frame::NeedMore => return,
                        Frame::Invalid => self.fe_state = FeState::Typed,
                    }
                }
                FeState::Typed => match frame_typed(self.fe_in.avail(), true) {
                    Frame::Msg(kind, len) => {
                        let Some(m) = Self::take_msg(&mut self.fe_in, kind, len) else {
                            return;
                        };
                        self.fe.push_back(FeItem::Msg(m));
                    }
                    Frame::NeedMore => return,
                    Frame::Invalid => self.fe_state = FeState::Resync,
                },
                FeState::Resync => {
                    if Self::resync(&mut self.fe_in, true, true, out) {
                        self.fe_state = FeState::Typed;
                    } else {
                        return;
                    }
                }
            }
        }
    }

    fn frame_be(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            if self.be_in.discarding() > 0 || self.be_in.len() == 0 {
                return;
            }
            if self.answers_expected > 0 && self.be_state != BeState::Stopped {
                let a = self.be_in.avail()[0];
                if matches!(a, b'S' | b'N' | b'G') {
                    self.answers_expected -= 1;
                    let (raw, first, last) = self.be_in.take(1);
                    self.be.push_back(Msg {
                        kind: Kind::Answer(a),
                        raw,
                        first,
                        last,
                        oversized: None,
                    });
                    self.be_state = BeState::Typed;
                    if a != b'N' {
                        // TLS / GSS encryption follows: nothing more is readable.
                        self.fe_state = FeState::Stopped;
                        self.be_state = BeState::Stopped;
                        self.tls = true;
                    }
                    continue;
                }
                // An error instead (a pre-3.0 server) or garbage: parse normally.
                self.answers_expected = 0;
            }
            match self.be_state {
                BeState::Stopped => {
                    let n = self.be_in.clear();
                    out.push(DbEvent::Skipped {
                        egress: false,
                        bytes: n,
                        reason: if self.tls { "tls" } else { "stopped" },
                    });
                    return;
                }
                BeState::Start => {
                    let b = self.be_in.avail();
                    if !self.fe_in.seen()
                        && matches!(b[0], b'S' | b'N' | b'G')
                        && b.len() < MAX_EARLY_BACKEND
                    {
                        // Possibly the answer to an SSLRequest not fed yet, followed by the
                        // answer to the startup message: the client speaks first, wait for it
                        // rather than resync over the answer byte (which shifted every later
                        // response onto the wrong call).
                        return;
                    }
                    match plausible_at(b, false) {
                        Some(true) => self.be_state = BeState::Typed,
                        None => return,
                        Some(false) => self.be_state = BeState::Resync,
                    }
                }
                BeState::Typed => match frame_typed(self.be_in.avail(), false) {
                    Frame::Msg(kind, len) => {
                        let Some(m) = Self::take_msg(&mut self.be_in, kind, len) else {
                            return;
                        };
                        self.be.push_back(m);
                    }
                    Frame::NeedMore => return,
                    Frame::Invalid => self.be_state = BeState::Resync,
                },
                BeState::Resync => {
                    if Self::resync(&mut self.be_in, false, false, out) {
                        self.be_state = BeState::Typed;
                    } else {
                        return;
                    }
                }
            }
        }
    }

    // ---- stitching -----------------------------------------------------------------------

    fn skip_be(&mut self, reason: &'static str, out: &mut Vec<DbEvent>) {
        if let Some(m) = self.be.pop_front() {
            out.push(DbEvent::Skipped {
                egress: false,
                bytes: m.wire_len(),
                reason,
            });
        }
    }

    fn stitch(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            if self.call.is_none() {
                // Backend messages answering something lost in a gap.
                while self.be_skip_to_z && !self.be.is_empty() {
                    let z = self.be.front().is_some_and(|m| m.kind == Kind::Typed(b'Z'));
                    self.skip_be("gap", out);
                    if z {
                        self.be_skip_to_z = false;
                    }
                }
                match self.fe.pop_front() {
                    Some(FeItem::Gap) => {
                        self.be_skip_to_z = true;
                        continue;
                    }
                    Some(FeItem::Msg(m)) => {
                        // Responses older than the request cannot answer it.
                        while self
                            .be
                            .front()
                            .is_some_and(|b| b.last.ts_ns < m.first.ts_ns && !self.be_skip_to_z)
                        {
                            self.skip_be("response-without-request", out);
                        }
                        if m.kind == Kind::Typed(b'X') {
                            continue;
                        }
                        let kind = match m.kind {
                            Kind::Startup => CallKind::Startup,
                            Kind::SslRequest => CallKind::Ssl,
                            Kind::GssRequest => CallKind::Gss,
                            Kind::Cancel => CallKind::Cancel,
                            Kind::Typed(b'Q') => CallKind::Query,
                            Kind::Typed(b'F') => CallKind::FunctionCall,
                            Kind::Typed(b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H') => {
                                CallKind::Extended
                            }
                            _ => CallKind::Other,
                        };
                        self.call = Some(CallB::new(kind, m.first));
                        self.include(m);
                    }
                    None => {
                        if self.closed {
                            while !self.be.is_empty() {
                                self.skip_be("response-without-request", out);
                            }
                        }
                        while self.be.len() > MAX_ORPHANS {
                            self.skip_be("response-without-request", out);
                        }
                        return;
                    }
                }
            }
            let progressed = self.advance();
            if self.call_complete() {
                self.finish(out);
                continue;
            }
            if !progressed {
                if self.closed {
                    self.finish(out);
                    continue;
                }
                return;
            }
        }
    }

    /// Is the open call complete (nothing owed, no more frontend messages can join)?
    fn call_complete(&self) -> bool {
        let Some(c) = &self.call else { return false };
        if !c.expect.is_empty() || c.skip_to_sync || c.copy_in {
            return false;
        }
        if c.ended {
            return true;
        }
        match c.kind {
            CallKind::Extended => {
                if c.has_execute {
                    // Waiting for the Sync that usually follows an Execute, unless the backend
                    // already moved on to something else.
                    match self.fe.front() {
                        Some(_) => true,
                        None => self.be.front().is_some_and(|m| m.kind != Kind::Typed(b'Z')),
                    }
                } else {
                    self.fe.front().is_some()
                }
            }
            _ => true,
        }
    }

    /// May the next frontend message join the open call?
    fn joins(c: &CallB, next: &Msg) -> bool {
        let t = next.typ();
        if !matches!(next.kind, Kind::Typed(_)) {
            return false;
        }
        if c.copy_in && matches!(t, b'd' | b'c' | b'f') {
            return true;
        }
        if c.ended {
            return false;
        }
        match c.kind {
            CallKind::Startup => t == b'p',
            CallKind::Extended => {
                if c.skip_to_sync {
                    return t != b'Q' && t != b'X';
                }
                if c.has_execute {
                    t == b'S'
                } else {
                    matches!(t, b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S')
                }
            }
            _ => false,
        }
    }

    /// Moves the open call forward: joins frontend messages, consumes backend messages.
    fn advance(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let Some(c) = &mut self.call else {
                return progressed;
            };
            // Frontend messages that belong to this call.
            match self.fe.front() {
                Some(FeItem::Msg(m)) if Self::joins(c, m) => {
                    let Some(FeItem::Msg(m)) = self.fe.pop_front() else {
                        return progressed;
                    };
                    self.include(m);
                    progressed = true;
                    continue;
                }
                Some(FeItem::Gap) if !c.ended => {
                    // The rest of this call's request was lost.
                    c.ended = true;
                    c.incomplete = true;
                    progressed = true;
                }
                Some(_) if c.expect.is_empty() => c.ended = true,
                _ => {}
            }
            let Some(c) = &self.call else {
                return progressed;
            };
            if c.expect.is_empty() {
                return progressed;
            }
            let Some(m) = self.be.pop_front() else {
                return progressed;
            };
            self.answer(m);
            progressed = true;
        }
    }

    /// Adds a frontend message to the open call.
    fn include(&mut self, m: Msg) {
        let max_raw = self.opts.max_raw;
        let mut missing = Vec::new();
        let Some(c) = &mut self.call else { return };
        let t = m.typ();
        if c.fe_types.len() < 256 {
            c.fe_types.push(match m.kind {
                Kind::Typed(t) => char::from(t),
                Kind::Startup => '0',
                Kind::SslRequest => '8',
                Kind::GssRequest => '9',
                Kind::Cancel => '7',
                Kind::Answer(t) => char::from(t),
            });
        }
        c.req_last = m.last;
        if m.oversized.is_some() {
            c.raw_truncated = true;
        }
        // Raw bytes, with secrets removed and COPY data not stored.
        match m.kind {
            Kind::Typed(b'p') => {
                let r = parse::redact(&m.raw, 5);
                push_capped(&mut c.raw_req, &r, max_raw, &mut c.raw_truncated);
            }
            Kind::Typed(b'd') => {}
            _ => push_capped(&mut c.raw_req, &m.raw, max_raw, &mut c.raw_truncated),
        }
        let p = m.payload();
        if c.skip_to_sync {
            if t == b'S' {
                c.skip_to_sync = false;
                c.has_sync = true;
                c.expect.push_back(Expect::Ready);
                c.ended = true;
            } else {
                c.skipped_messages += 1;
            }
            return;
        }
        match m.kind {
            Kind::Startup => {
                c.startup_params = parse::parse_startup(p);
                c.expect.push_back(Expect::Auth);
            }
            Kind::SslRequest | Kind::GssRequest => {
                c.expect.push_back(Expect::Answer);
                c.ended = true;
            }
            Kind::Cancel => {
                let mut r = parse::Reader::new(p);
                c.cancel_pid = r.i32();
                c.ended = true;
            }
            Kind::Answer(_) => {}
            Kind::Typed(t) => match t {
                b'Q' => {
                    let mut r = parse::Reader::new(p);
                    c.sql = r.cstr();
                    c.expect.push_back(Expect::QueryRes);
                    c.ended = true;
                }
                b'P' => {
                    c.has_parse = true;
                    if let Some(ps) = parse::parse_parse(p) {
                        if c.sql.is_none() || c.statement.as_deref() != Some(ps.name.as_str()) {
                            c.sql = Some(ps.sql.clone());
                            c.sql_missing = false;
                            c.statement = Some(ps.name.clone());
                            c.parse_types.clone_from(&ps.param_types);
                        }
                        self.stmts.insert(
                            ps.name,
                            Stmt {
                                sql: ps.sql,
                                parse_types: ps.param_types,
                                param_desc: None,
                                columns: None,
                            },
                        );
                    }
                    c.expect.push_back(Expect::ParseComplete);
                }
                b'B' => {
                    if let Some(b) = parse::parse_bind(p) {
                        match self.stmts.get(&b.statement) {
                            Some(s) => {
                                c.sql = Some(s.sql.clone());
                                c.sql_missing = false;
                                c.parse_types.clone_from(&s.parse_types);
                            }
                            None => {
                                c.sql = None;
                                c.sql_missing = true;
                                missing.push(format!("prepared:{}", b.statement));
                            }
                        }
                        c.statement = Some(b.statement.clone());
                        c.portal = Some(b.portal.clone());
                        self.portals.insert(
                            b.portal.clone(),
                            Portal {
                                statement: b.statement.clone(),
                                result_formats: b.result_formats.clone(),
                                columns: None,
                            },
                        );
                        c.bind = Some(b);
                    }
                    c.expect.push_back(Expect::BindComplete);
                }
                b'D' => {
                    c.has_describe = true;
                    let mut r = parse::Reader::new(p);
                    let what = r.u8();
                    let name = r.cstr().unwrap_or_default();
                    if what == Some(b'S') {
                        if c.statement.is_none() {
                            match self.stmts.get(&name) {
                                Some(s) => c.sql = Some(s.sql.clone()),
                                None => {
                                    c.sql_missing = true;
                                    missing.push(format!("prepared:{name}"));
                                }
                            }
                            c.statement = Some(name);
                        }
                        c.expect.push_back(Expect::StmtDesc);
                    } else {
                        if c.portal.is_none() {
                            c.portal = Some(name);
                        }
                        c.expect.push_back(Expect::PortalDesc);
                    }
                }
                b'E' => {
                    c.has_execute = true;
                    let mut r = parse::Reader::new(p);
                    let portal = r.cstr().unwrap_or_default();
                    c.max_rows = r.i32();
                    if c.bind.is_none() {
                        // Executing a portal bound earlier (cursor fetch).
                        match self.portals.get(&portal) {
                            Some(po) => {
                                c.statement = Some(po.statement.clone());
                                match self.stmts.get(&po.statement) {
                                    Some(s) => c.sql = Some(s.sql.clone()),
                                    None => c.sql_missing = true,
                                }
                            }
                            None => {
                                c.sql_missing = true;
                                missing.push(format!("portal:{portal}"));
                            }
                        }
                    }
                    c.portal = Some(portal);
                    c.expect.push_back(Expect::Exec);
                }
                b'C' => {
                    c.has_close = true;
                    let mut r = parse::Reader::new(p);
                    let what = r.u8();
                    let name = r.cstr().unwrap_or_default();
                    if what == Some(b'S') {
                        self.stmts.remove(&name);
                        if c.statement.is_none() {
                            c.statement = Some(name);
                        }
                    } else {
                        self.portals.remove(&name);
                    }
                    c.expect.push_back(Expect::CloseComplete);
                }
                b'S' => {
                    c.has_sync = true;
                    c.expect.push_back(Expect::Ready);
                    c.ended = true;
                }
                b'F' => {
                    c.expect.push_back(Expect::FuncRes);
                    c.ended = true;
                }
                b'd' => {
                    let cp = c.copy.get_or_insert_with(Copy::default);
                    cp.data_messages += 1;
                    cp.bytes += m.wire_len().saturating_sub(5);
                    if c.kind == CallKind::Other {
                        c.ended = true;
                    }
                }
                b'c' | b'f' => {
                    if t == b'f' {
                        let mut r = parse::Reader::new(p);
                        c.copy.get_or_insert_with(Copy::default).failed = r.cstr();
                    }
                    c.copy_in = false;
                    if c.kind == CallKind::Other {
                        c.ended = true;
                    }
                }
                _ => {
                    if c.kind == CallKind::Other {
                        c.ended = true;
                    }
                }
            },
        }
        for m in missing {
            if m != "prepared:" || !self.missing.is_empty() {
                self.add_missing(m);
            }
        }
    }

    /// Columns and result formats for rows of the current execution.
    fn exec_columns(&self) -> (Option<Vec<Column>>, Vec<i16>) {
        let Some(c) = &self.call else {
            return (None, Vec::new());
        };
        let portal = c.portal.as_deref().and_then(|p| self.portals.get(p));
        let formats = c
            .bind
            .as_ref()
            .map(|b| b.result_formats.clone())
            .or_else(|| portal.map(|p| p.result_formats.clone()))
            .unwrap_or_default();
        let cols = c
            .columns
            .clone()
            .or_else(|| portal.and_then(|p| p.columns.clone()))
            .or_else(|| {
                let st = c
                    .statement
                    .as_deref()
                    .or(portal.map(|p| p.statement.as_str()))?;
                self.stmts.get(st)?.columns.clone()
            });
        (cols, formats)
    }

    fn add_row(&mut self, m: &Msg, exec: bool) {
        let (cols, formats) = if exec {
            self.exec_columns()
        } else {
            let cols = self
                .call
                .as_mut()
                .and_then(|c| c.cur_result().columns.clone());
            let f = cols
                .as_ref()
                .map(|c| c.iter().map(|c| c.format).collect())
                .unwrap_or_default();
            (cols, f)
        };
        let opts = self.opts;
        let Some(c) = &mut self.call else { return };
        let size = usize::try_from(m.wire_len()).unwrap_or(usize::MAX);
        let keep = c.stored_rows < opts.max_rows
            && c.stored_bytes.saturating_add(size) <= opts.max_row_bytes
            && m.oversized.is_none();
        let row = if keep {
            parse::parse_data_row(m.payload()).map(|vals| {
                Value::Array(
                    vals.iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let oid = cols
                                .as_ref()
                                .and_then(|c| c.get(i))
                                .map_or(0, |c| c.type_oid);
                            let fmt = if exec {
                                format_of(&formats, i)
                            } else {
                                formats.get(i).copied().unwrap_or(0)
                            };
                            decode_value(oid, fmt, *v)
                        })
                        .collect(),
                )
            })
        } else {
            None
        };
        let r = c.cur_result();
        r.rows_total += 1;
        match row {
            Some(row) => {
                r.rows.push(row);
                c.stored_rows += 1;
                c.stored_bytes += size;
            }
            None => r.truncated = true,
        }
    }

    /// Consumes one backend message for the open call.
    fn answer(&mut self, m: Msg) {
        let max_raw = self.opts.max_raw;
        let t = m.typ();
        let p = m.payload().to_vec();
        {
            let Some(c) = &mut self.call else { return };
            c.be_count += 1;
            if c.resp_first.is_none() {
                c.resp_first = Some(m.first);
            }
            c.resp_last = Some(m.last);
            if m.oversized.is_some() {
                c.raw_truncated = true;
            }
            match m.kind {
                Kind::Typed(b'R') => {
                    let code = parse::Reader::new(&p).i32().unwrap_or(-1);
                    let r = if matches!(code, 11 | 12 | 8) {
                        parse::redact(&m.raw, 9)
                    } else {
                        m.raw.clone()
                    };
                    push_capped(&mut c.raw_resp, &r, max_raw, &mut c.raw_truncated);
                }
                Kind::Typed(b'd') => {}
                _ => push_capped(&mut c.raw_resp, &m.raw, max_raw, &mut c.raw_truncated),
            }
        }
        // Asynchronous messages, at any time.
        match t {
            b'N' if m.kind == Kind::Typed(b'N') => {
                let f = fields_json(&parse::parse_fields(&p));
                if let Some(c) = &mut self.call
                    && c.notices.len() < 100
                {
                    c.notices.push(f);
                }
                return;
            }
            b'S' if m.kind == Kind::Typed(b'S') => {
                let mut r = parse::Reader::new(&p);
                if let (Some(k), Some(v)) = (r.cstr(), r.cstr()) {
                    if k == "server_version" {
                        self.set_fact(&["server_version"], Value::String(v.clone()));
                    }
                    self.set_fact(&["parameters", &k], Value::String(v));
                }
                return;
            }
            b'A' => {
                let mut r = parse::Reader::new(&p);
                let pid = r.i32();
                let (ch, pl) = (r.cstr(), r.cstr());
                if let Some(c) = &mut self.call
                    && c.notifications.len() < 100
                {
                    c.notifications
                        .push(json!({"pid": pid, "channel": ch, "payload": pl}));
                }
                return;
            }
            _ => {}
        }
        let Some(front) = self.call.as_ref().and_then(|c| c.expect.front().copied()) else {
            return;
        };
        if m.kind == Kind::Typed(b'E') {
            self.on_error(&p, front);
            return;
        }
        let ok = self.answer_expected(front, &m, &p);
        if !ok {
            let Some(c) = &mut self.call else { return };
            if t == b'Z' && m.kind == Kind::Typed(b'Z') {
                // The server ended a sync group early: what we expected was lost.
                c.incomplete = true;
                while let Some(e) = c.expect.pop_front() {
                    if matches!(e, Expect::Ready | Expect::QueryRes | Expect::FuncRes) {
                        break;
                    }
                }
                c.tx_status = p.first().map(|b| char::from(*b));
                if !c.expect.contains(&Expect::Ready) {
                    c.expect.clear();
                    c.ended = true;
                }
            } else {
                c.unexpected += 1;
            }
        }
    }

    fn on_error(&mut self, p: &[u8], front: Expect) {
        let fields = parse::parse_fields(p);
        let auth_failed = front == Expect::Auth;
        if auth_failed {
            self.set_fact(&["auth", "outcome"], Value::String("error".into()));
            if let Some(code) = field(&fields, b'C') {
                self.set_fact(&["auth", "error_code"], Value::String(code.into()));
            }
        }
        let Some(c) = &mut self.call else { return };
        if c.error.is_none() {
            c.error = Some(fields);
        }
        match front {
            Expect::QueryRes | Expect::FuncRes => {}
            Expect::Auth | Expect::Answer => {
                c.expect.clear();
                c.ended = true;
            }
            _ => {
                let had_sync = c.expect.contains(&Expect::Ready);
                c.expect.clear();
                if had_sync {
                    c.expect.push_back(Expect::Ready);
                } else {
                    c.skip_to_sync = true;
                    c.ended = false;
                }
            }
        }
    }

    /// Handles `m` as the answer to `front`; false when it does not fit.
    fn answer_expected(&mut self, front: Expect, m: &Msg, p: &[u8]) -> bool {
        let t = m.typ();
        let typed = matches!(m.kind, Kind::Typed(_));
        match (front, t) {
            (Expect::Answer, _) if matches!(m.kind, Kind::Answer(_)) => {
                let Some(c) = &mut self.call else { return true };
                c.answer = Some(char::from(t));
                c.expect.pop_front();
                if t != b'N' {
                    self.set_fact(&["tls"], Value::Bool(true));
                }
                true
            }
            _ if !typed => false,
            (Expect::ParseComplete, b'1')
            | (Expect::BindComplete, b'2')
            | (Expect::CloseComplete, b'3') => {
                if let Some(c) = &mut self.call {
                    c.expect.pop_front();
                }
                true
            }
            (Expect::StmtDesc, b't') => {
                let d = parse::parse_param_description(p);
                let Some(c) = &mut self.call else { return true };
                if let (Some(st), Some(d)) = (&c.statement, &d)
                    && let Some(s) = self.stmts.get_mut(st)
                {
                    s.param_desc = Some(d.clone());
                }
                c.describe_params = d;
                true
            }
            (Expect::StmtDesc | Expect::PortalDesc, b'T' | b'n') => {
                let cols = if t == b'T' {
                    parse::parse_row_description(p)
                } else {
                    Some(Vec::new())
                };
                let Some(c) = &mut self.call else { return true };
                if front == Expect::StmtDesc {
                    if let (Some(st), Some(cols)) = (&c.statement, &cols)
                        && let Some(s) = self.stmts.get_mut(st)
                    {
                        s.columns = Some(cols.clone());
                    }
                } else if let (Some(po), Some(cols)) = (&c.portal, &cols)
                    && let Some(po) = self.portals.get_mut(po)
                {
                    po.columns = Some(cols.clone());
                }
                c.columns = cols;
                c.expect.pop_front();
                true
            }
            (Expect::Exec, b'D') => {
                self.add_row(m, true);
                true
            }
            (Expect::Exec, b'C' | b'I' | b's') | (Expect::QueryRes, b'C' | b'I') => {
                let tag = if t == b'C' {
                    parse::Reader::new(p).cstr()
                } else {
                    None
                };
                let Some(c) = &mut self.call else { return true };
                let r = c.cur_result();
                r.tag = tag;
                r.empty_query = t == b'I';
                r.suspended = t == b's';
                if front == Expect::Exec {
                    c.expect.pop_front();
                } else {
                    // The next statement of a multi-statement query starts a new result.
                    c.results.push(ResultSet::default());
                }
                true
            }
            (Expect::Exec | Expect::QueryRes, b'G' | b'H' | b'W') => {
                let mut r = parse::Reader::new(p);
                let binary = r.u8() == Some(1);
                let Some(c) = &mut self.call else { return true };
                c.copy = Some(Copy {
                    direction: match t {
                        b'G' => "in",
                        b'H' => "out",
                        _ => "both",
                    },
                    binary,
                    ..Copy::default()
                });
                if t != b'H' {
                    c.copy_in = true;
                }
                true
            }
            (Expect::Exec | Expect::QueryRes, b'd' | b'c') => {
                let Some(c) = &mut self.call else { return true };
                if t == b'd' {
                    let cp = c.copy.get_or_insert_with(Copy::default);
                    cp.data_messages += 1;
                    cp.bytes += m.wire_len().saturating_sub(5);
                }
                true
            }
            (Expect::QueryRes, b'T') => {
                let cols = parse::parse_row_description(p);
                let Some(c) = &mut self.call else { return true };
                let r = c.cur_result();
                if r.columns.is_some() || r.tag.is_some() {
                    c.results.push(ResultSet::default());
                }
                c.cur_result().columns = cols;
                true
            }
            (Expect::QueryRes, b'D') => {
                self.add_row(m, false);
                true
            }
            (Expect::FuncRes, b'V') => {
                let mut r = parse::Reader::new(p);
                let len = r.i32().unwrap_or(-1);
                let v = if len < 0 {
                    None
                } else {
                    r.bytes(usize::try_from(len).unwrap_or(0))
                };
                let val = decode_value(0, 1, v);
                if let Some(c) = &mut self.call {
                    let r = c.cur_result();
                    r.rows.push(Value::Array(vec![val]));
                    r.rows_total += 1;
                }
                true
            }
            (Expect::Ready | Expect::QueryRes | Expect::FuncRes | Expect::Auth, b'Z') => {
                let Some(c) = &mut self.call else { return true };
                c.tx_status = p.first().map(|b| char::from(*b));
                c.expect.pop_front();
                if let Some(r) = c.results.last()
                    && r.columns.is_none()
                    && r.tag.is_none()
                    && r.rows_total == 0
                    && !r.empty_query
                    && c.results.len() > 1
                {
                    c.results.pop();
                }
                if front == Expect::Auth
                    && self
                        .facts
                        .get("auth")
                        .and_then(|a| a.get("outcome"))
                        .is_none()
                {
                    self.set_fact(&["auth", "outcome"], Value::String("ok".into()));
                }
                true
            }
            (Expect::Auth, b'R') => {
                let mut r = parse::Reader::new(p);
                let code = r.i32().unwrap_or(-1);
                match code {
                    0 => {
                        if self
                            .facts
                            .get("auth")
                            .and_then(|a| a.get("method"))
                            .is_none()
                        {
                            self.set_fact(&["auth", "method"], Value::String("trust".into()));
                        }
                        self.set_fact(&["auth", "outcome"], Value::String("ok".into()));
                    }
                    10 => {
                        let mut mechs = Vec::new();
                        while let Some(s) = r.cstr() {
                            if s.is_empty() {
                                break;
                            }
                            mechs.push(Value::String(s));
                        }
                        let method = mechs
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or("sasl")
                            .to_ascii_lowercase();
                        self.set_fact(&["auth", "method"], Value::String(method));
                        self.set_fact(&["auth", "sasl_mechanisms"], Value::Array(mechs));
                    }
                    11 | 12 | 8 => {}
                    c => {
                        self.set_fact(
                            &["auth", "method"],
                            Value::String(parse::auth_name(c).into()),
                        );
                    }
                }
                true
            }
            (Expect::Auth, b'K') => {
                let pid = parse::Reader::new(p).i32();
                if let Some(pid) = pid {
                    self.set_fact(&["backend_pid"], json!(pid));
                }
                true
            }
            (Expect::Auth, b'v') => {
                let mut r = parse::Reader::new(p);
                let minor = r.i32();
                self.set_fact(&["negotiated_minor_version"], json!(minor));
                true
            }
            _ => false,
        }
    }

    fn finish(&mut self, out: &mut Vec<DbEvent>) {
        let Some(mut c) = self.call.take() else {
            return;
        };
        if !c.expect.is_empty() || c.skip_to_sync || c.copy_in {
            c.incomplete = true;
        }
        if c.kind == CallKind::Startup {
            for (k, v) in &c.startup_params {
                self.set_fact(&["startup", k], Value::String(v.clone()));
            }
            let pv = "3.0";
            self.set_fact(&["protocol_version"], Value::String(pv.into()));
        }
        if matches!(c.kind, CallKind::Ssl | CallKind::Gss) {
            let k = if c.kind == CallKind::Ssl {
                "ssl"
            } else {
                "gssenc"
            };
            self.set_fact(
                &[k],
                Value::String(match c.answer {
                    Some('N') => "refused".into(),
                    Some(_) => "accepted".into(),
                    None => "unanswered".into(),
                }),
            );
        }
        let (detail, method, session_level) = self.detail(&c);
        let error = c.error.as_ref().map(|f| {
            format!(
                "SQLSTATE {}: {}",
                field(f, b'C').unwrap_or("?????"),
                field(f, b'M').unwrap_or("")
            )
        });
        let index = self.index;
        self.index += 1;
        out.push(DbEvent::Call(Box::new(DbCall {
            protocol: Protocol::Postgres,
            index,
            method,
            detail,
            error,
            raw_request: Bytes::from(c.raw_req),
            raw_response: Bytes::from(c.raw_resp),
            raw_truncated: c.raw_truncated,
            session_level,
            request_first: c.req_first,
            request_last: c.req_last,
            response_first: c.resp_first,
            response_last: c.resp_last,
        })));
        if self.tls {
            self.stop_tls(out);
        }
        self.flush_session(out);
    }

    fn result_json(r: &ResultSet) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "columns".into(),
            r.columns.as_deref().map_or(Value::Null, columns_json),
        );
        m.insert("rows".into(), Value::Array(r.rows.clone()));
        m.insert("rows_total".into(), json!(r.rows_total));
        m.insert("rows_truncated".into(), Value::Bool(r.truncated));
        m.insert(
            "command_tag".into(),
            r.tag.clone().map_or(Value::Null, Value::String),
        );
        if r.empty_query {
            m.insert("empty_query".into(), Value::Bool(true));
        }
        if r.suspended {
            m.insert("portal_suspended".into(), Value::Bool(true));
        }
        m
    }

    fn detail(&self, c: &CallB) -> (Value, String, bool) {
        let mut d = Map::new();
        let kind = match c.kind {
            CallKind::Startup => "startup",
            CallKind::Ssl => "ssl_request",
            CallKind::Gss => "gssenc_request",
            CallKind::Cancel => "cancel",
            CallKind::Query => "query",
            CallKind::FunctionCall => "function_call",
            CallKind::Other => "other",
            CallKind::Extended if c.has_execute => "execute",
            CallKind::Extended if c.has_parse => "prepare",
            CallKind::Extended if c.has_describe => "describe",
            CallKind::Extended if c.has_close => "close",
            CallKind::Extended => "sync",
        };
        d.insert("kind".into(), Value::String(kind.into()));
        d.insert("messages".into(), Value::String(c.fe_types.clone()));
        let sql_kw = c.sql.as_deref().map(parse::first_keyword);
        let method = match kind {
            "query" | "execute" => match &sql_kw {
                Some(k) if !k.is_empty() => k.clone(),
                _ => kind.to_ascii_uppercase(),
            },
            "ssl_request" => "SSLREQUEST".into(),
            "gssenc_request" => "GSSENCREQUEST".into(),
            k => k.to_ascii_uppercase(),
        };
        let introspection = c.sql.as_deref().is_some_and(|s| {
            let l = s.to_ascii_lowercase();
            l.contains("pg_catalog") || l.contains("pg_type")
        });
        let session_level = match kind {
            "query" | "execute" => {
                introspection
                    || matches!(
                        sql_kw.as_deref(),
                        Some("SET" | "SHOW" | "RESET" | "DISCARD" | "DEALLOCATE")
                    )
            }
            // A statement whose preparation failed (asyncpg: `Parse`/`Describe`/`Sync` answered
            // by an error) never executes: the failure is the app's query outcome.
            "prepare" => c.error.is_none() || introspection,
            _ => true,
        };
        match c.kind {
            CallKind::Startup => {
                let mut ps = Map::new();
                for (k, v) in &c.startup_params {
                    ps.insert(k.clone(), Value::String(v.clone()));
                }
                d.insert("protocol_version".into(), json!("3.0"));
                d.insert("parameters".into(), Value::Object(ps));
                d.insert(
                    "auth".into(),
                    self.facts.get("auth").cloned().unwrap_or(Value::Null),
                );
                d.insert(
                    "backend_pid".into(),
                    self.facts
                        .get("backend_pid")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
                d.insert(
                    "server_parameters".into(),
                    self.facts.get("parameters").cloned().unwrap_or(json!({})),
                );
            }
            CallKind::Ssl | CallKind::Gss => {
                d.insert(
                    "answer".into(),
                    c.answer
                        .map_or(Value::Null, |a| Value::String(a.to_string())),
                );
            }
            CallKind::Cancel => {
                d.insert("backend_pid".into(), json!(c.cancel_pid));
            }
            _ => {
                d.insert(
                    "sql".into(),
                    c.sql.clone().map_or(Value::Null, Value::String),
                );
                if c.sql_missing && c.sql.is_none() {
                    d.insert("sql_missing".into(), Value::String(MISSING_SQL.into()));
                }
                if c.kind == CallKind::Extended {
                    d.insert(
                        "statement".into(),
                        c.statement.clone().map_or(Value::Null, Value::String),
                    );
                    d.insert(
                        "portal".into(),
                        c.portal.clone().map_or(Value::Null, Value::String),
                    );
                    let stmt = c.statement.as_deref().and_then(|s| self.stmts.get(s));
                    let desc = c
                        .describe_params
                        .clone()
                        .or_else(|| stmt.and_then(|s| s.param_desc.clone()));
                    let parse_types: &[u32] = if c.parse_types.is_empty() {
                        stmt.map_or(&[], |s| s.parse_types.as_slice())
                    } else {
                        &c.parse_types
                    };
                    let type_of = |i: usize| -> u32 {
                        match parse_types.get(i) {
                            Some(&t) if t != 0 => t,
                            _ => desc.as_ref().and_then(|d| d.get(i)).copied().unwrap_or(0),
                        }
                    };
                    let n_types = parse_types.len().max(desc.as_ref().map_or(0, Vec::len));
                    d.insert(
                        "param_types".into(),
                        Value::Array((0..n_types).map(|i| json!(type_of(i))).collect()),
                    );
                    if let Some(b) = &c.bind {
                        let params = b
                            .params
                            .iter()
                            .enumerate()
                            .map(|(i, v)| {
                                let f = format_of(&b.param_formats, i);
                                let oid = type_of(i);
                                json!({
                                    "type_oid": oid,
                                    "format": if f == 1 { "binary" } else { "text" },
                                    "value": decode_value(oid, f, v.as_deref()),
                                })
                            })
                            .collect();
                        d.insert("params".into(), Value::Array(params));
                        d.insert(
                            "result_formats".into(),
                            Value::Array(b.result_formats.iter().map(|f| json!(f)).collect()),
                        );
                    } else {
                        d.insert("params".into(), Value::Array(Vec::new()));
                    }
                    if let Some(n) = c.max_rows
                        && n != 0
                    {
                        d.insert("max_rows".into(), json!(n));
                    }
                }
                // Results: execution columns come from this call's Describe or the statement's.
                let mut results: Vec<Map<String, Value>> =
                    c.results.iter().map(Self::result_json).collect();
                if c.kind == CallKind::Extended {
                    let cols = c.columns.clone().or_else(|| {
                        let portal = c.portal.as_deref().and_then(|p| self.portals.get(p));
                        portal.and_then(|p| p.columns.clone()).or_else(|| {
                            c.statement
                                .as_deref()
                                .and_then(|s| self.stmts.get(s))
                                .and_then(|s| s.columns.clone())
                        })
                    });
                    if results.is_empty() {
                        results.push(Self::result_json(&ResultSet::default()));
                    }
                    if let Some(r) = results.first_mut() {
                        r.insert(
                            "columns".into(),
                            cols.as_deref().map_or(Value::Null, columns_json),
                        );
                    }
                }
                if results.is_empty() {
                    results.push(Self::result_json(&ResultSet::default()));
                }
                let multi = results.len() > 1;
                if let Some(last) = results.last() {
                    for (k, v) in last {
                        d.insert(k.clone(), v.clone());
                    }
                }
                if multi {
                    d.insert(
                        "results".into(),
                        Value::Array(results.into_iter().map(Value::Object).collect()),
                    );
                }
            }
        }
        d.insert(
            "transaction_status".into(),
            c.tx_status
                .map_or(Value::Null, |s| Value::String(s.to_string())),
        );
        if let Some(e) = &c.error {
            d.insert("error".into(), fields_json(e));
        }
        if !c.notices.is_empty() {
            d.insert("notices".into(), Value::Array(c.notices.clone()));
        }
        if !c.notifications.is_empty() {
            d.insert(
                "notifications".into(),
                Value::Array(c.notifications.clone()),
            );
        }
        if let Some(cp) = &c.copy {
            d.insert(
                "copy".into(),
                json!({
                    "direction": cp.direction,
                    "format": if cp.binary { "binary" } else { "text" },
                    "data_messages": cp.data_messages,
                    "data_bytes": cp.bytes,
                    "failed": cp.failed,
                }),
            );
        }
        if c.skipped_messages > 0 {
            d.insert("skipped_messages".into(), json!(c.skipped_messages));
        }
        if c.unexpected > 0 {
            d.insert("unexpected_messages".into(), json!(c.unexpected));
        }
        d.insert("incomplete".into(), Value::Bool(c.incomplete));
        (Value::Object(d), method, session_level)
    }

    fn gap(&mut self, egress: bool, pos: u64, len: u64, out: &mut Vec<DbEvent>) {
        let inp = if egress {
            &mut self.fe_in
        } else {
            &mut self.be_in
        };
        let dropped = inp.reset_to(pos.saturating_add(len));
        out.push(DbEvent::Skipped {
            egress,
            bytes: dropped + len,
            reason: "gap",
        });
        if egress {
            if self.fe_state != FeState::Stopped {
                self.fe_state = FeState::Resync;
            }
            self.fe.push_back(FeItem::Gap);
        } else {
            if self.be_state != BeState::Stopped {
                self.be_state = BeState::Resync;
            }
            // Responses of the open call were lost: it ends at the next ReadyForQuery.
            match &mut self.call {
                Some(c) => {
                    c.incomplete = true;
                    let sync = c.expect.contains(&Expect::Ready)
                        || c.expect.contains(&Expect::QueryRes)
                        || c.expect.contains(&Expect::FuncRes);
                    c.expect.clear();
                    if sync {
                        c.expect.push_back(Expect::Ready);
                    }
                }
                None => self.be_skip_to_z = !self.fe.is_empty(),
            }
            self.be_state = BeState::Resync;
            // After a lost response, a Z may come before the frontend sees anything.
        }
        self.fe_state = if self.fe_state == FeState::Stopped {
            FeState::Stopped
        } else if egress {
            FeState::Resync
        } else {
            self.fe_state
        };
    }
}

impl DbParser for PgParser {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<DbEvent>) {
        match seg {
            Segment::Data(c) => {
                let inp = if egress {
                    &mut self.fe_in
                } else {
                    &mut self.be_in
                };
                if let Some(end) = inp.end()
                    && c.pos > end
                {
                    self.gap(egress, end, c.pos - end, out);
                }
                let inp = if egress {
                    &mut self.fe_in
                } else {
                    &mut self.be_in
                };
                inp.append(&c);
            }
            Segment::Gap { pos, len } => self.gap(egress, pos, len, out),
        }
        self.frame_fe(out);
        self.frame_be(out);
        self.stitch(out);
        if self.tls && self.call.is_none() {
            self.stop_tls(out);
        }
        // Session facts are reported between calls, so that the events do not depend on how
        // the stream was cut into segments.
        if self.call.is_none() {
            self.flush_session(out);
        }
    }

    fn close(&mut self, out: &mut Vec<DbEvent>) {
        self.frame_fe(out);
        self.frame_be(out);
        self.closed = true;
        self.stitch(out);
        for (egress, inp) in [(true, &mut self.fe_in), (false, &mut self.be_in)] {
            let n = inp.clear();
            if n > 0 {
                out.push(DbEvent::Skipped {
                    egress,
                    bytes: n,
                    reason: "incomplete message at close",
                });
            }
        }
        self.flush_session(out);
    }

    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }
}
