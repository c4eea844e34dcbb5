//! The MySQL connection parser: frames packets in both directions (joining packets split at
//! 16 MiB), follows the handshake and each command's response, and emits one [`DbCall`] per
//! command (see `docs/protocols/mysql.md` for the `detail` format).
use crate::protocols::db::push_capped;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::parse::{self, ColumnDef, cap, com};
use crate::protocols::Protocol;
use crate::protocols::cursor::StreamCursor;
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::protocols::http::types::Mark;
use crate::reassembly::Segment;

/// Parser limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MysqlOptions {
    /// Rows kept per call (the rest are counted in `rows_total`).
    pub max_rows: usize,
    /// Bytes of row data kept per call.
    pub max_row_bytes: usize,
    /// Bytes kept of each of `raw_request` / `raw_response`.
    pub max_raw: usize,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        Self {
            max_rows: 1000,
            max_row_bytes: 1 << 20,
            max_raw: 1 << 20,
        }
    }
}

/// Logical packet payload kept at most (longer ones are counted).
const MAX_PAYLOAD: usize = 32 << 20;
const MAX_ORPHANS: usize = 4096;
const FULL: usize = 0xff_ffff;

/// One logical packet (continuations joined).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pkt {
    seq: u8,
    payload: Bytes,
    /// Wire bytes (headers included), possibly redacted later.
    raw: Bytes,
    first: Mark,
    last: Mark,
    /// Full payload length when it exceeded [`MAX_PAYLOAD`].
    oversized: Option<u64>,
}

impl Pkt {
    fn wire_len(&self) -> u64 {
        self.oversized.map_or(self.raw.len() as u64, |n| n + 4)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frm {
    Start,
    Sync,
    Resync,
    Stopped,
}

#[derive(Debug, Default)]
struct Partial {
    seq: u8,
    payload: Vec<u8>,
    raw: Vec<u8>,
    first: Option<Mark>,
    total: u64,
}

#[derive(Debug)]
struct Dir {
    inp: StreamCursor,
    st: Frm,
    partial: Option<Partial>,
    q: VecDeque<Pkt>,
}

impl Dir {
    fn new() -> Self {
        Self {
            inp: StreamCursor::default(),
            st: Frm::Start,
            partial: None,
            q: VecDeque::new(),
        }
    }
}

fn header(b: &[u8]) -> Option<(usize, u8)> {
    let h = b.get(..4)?;
    Some((
        usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
        h[3],
    ))
}

/// A plausible client command packet at `b[0]` that ends the buffer or is followed by
/// another command. `None` = need more bytes.
fn client_cmd_at(b: &[u8]) -> Option<bool> {
    let (len, seq) = header(b)?;
    let cmd = *b.get(4)?;
    if seq != 0 || !parse::plausible_command(len, cmd) {
        return Some(false);
    }
    if len == FULL {
        // Continuation packets follow.
        return Some(true);
    }
    let end = 4 + len;
    if b.len() < end {
        return if len < 1 << 20 { None } else { Some(true) };
    }
    if b.len() == end {
        return Some(true);
    }
    client_cmd_at(&b[end..])
}

/// A chain of server packets with consecutive sequence numbers from `b[0]` to the end.
fn server_chain_at(b: &[u8], first_seq: Option<u8>) -> Option<bool> {
    let (len, seq) = header(b)?;
    if let Some(s) = first_seq
        && seq != s
    {
        return Some(false);
    }
    if seq == 0 && first_seq.is_none() && b.get(4) != Some(&10) {
        return Some(false);
    }
    if len == 0 || len >= FULL {
        return Some(len == FULL);
    }
    let end = 4 + len;
    if b.len() < end {
        return None;
    }
    if b.len() == end {
        return Some(true);
    }
    server_chain_at(&b[end..], Some(seq.wrapping_add(1)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rs {
    First,
    ColDefs(u64),
    AfterDefs,
    Rows,
    PrepParams(u64),
    PrepAfterParams,
    PrepCols(u64),
    PrepAfterCols,
    /// Waiting for the client's `LOCAL INFILE` data, then an OK/ERR.
    Infile,
    Done,
}

#[derive(Debug, Default)]
struct ResultSet {
    columns: Option<Vec<ColumnDef>>,
    rows: Vec<Value>,
    rows_total: u64,
    truncated: bool,
    ok: Option<parse::Ok>,
    end_status: Option<u16>,
}

#[derive(Clone, Debug, Default)]
struct Stmt {
    sql: String,
    num_params: usize,
    params: Vec<ColumnDef>,
    columns: Vec<ColumnDef>,
    last_types: Option<Vec<(u8, bool)>>,
}

#[derive(Debug)]
struct MCall {
    handshake: bool,
    cmd: u8,
    st: Rs,
    next_seq: u8,
    server_packets: u64,
    raw_req: Vec<u8>,
    raw_resp: Vec<u8>,
    raw_truncated: bool,
    req_first: Mark,
    req_last: Mark,
    resp_first: Option<Mark>,
    resp_last: Option<Mark>,
    incomplete: bool,
    sql: Option<String>,
    stmt_id: Option<u32>,
    stmt_missing: bool,
    params: Option<Vec<Value>>,
    param_types: Vec<(u8, bool)>,
    prepared: Option<(u32, u64, u64, u16)>,
    prep_params: Vec<ColumnDef>,
    prep_cols: Vec<ColumnDef>,
    results: Vec<ResultSet>,
    stored_rows: usize,
    stored_bytes: usize,
    err: Option<parse::Err>,
    infile_bytes: u64,
    extra_client_packets: u64,
    // Handshake.
    greeting: Option<parse::Greeting>,
    response: Option<parse::HandshakeResponse>,
    auth_switch: Option<String>,
    auth_ok: Option<bool>,
    tls: bool,
    init_db: Option<String>,
}

impl MCall {
    fn new(handshake: bool, cmd: u8, first: Mark) -> Self {
        Self {
            handshake,
            cmd,
            st: Rs::First,
            next_seq: 1,
            server_packets: 0,
            raw_req: Vec::new(),
            raw_resp: Vec::new(),
            raw_truncated: false,
            req_first: first,
            req_last: first,
            resp_first: None,
            resp_last: None,
            incomplete: false,
            sql: None,
            stmt_id: None,
            stmt_missing: false,
            params: None,
            param_types: Vec::new(),
            prepared: None,
            prep_params: Vec::new(),
            prep_cols: Vec::new(),
            results: Vec::new(),
            stored_rows: 0,
            stored_bytes: 0,
            err: None,
            infile_bytes: 0,
            extra_client_packets: 0,
            greeting: None,
            response: None,
            auth_switch: None,
            auth_ok: None,
            tls: false,
            init_db: None,
        }
    }
    fn cur(&mut self) -> &mut ResultSet {
        if self.results.is_empty() {
            self.results.push(ResultSet::default());
        }
        let n = self.results.len() - 1;
        &mut self.results[n]
    }
}

/// `raw` with payload bytes `[from, to)` (payload offsets) zeroed; single-packet only.
fn redact_range(raw: &Bytes, from: usize, to: usize) -> Bytes {
    let mut v = raw.to_vec();
    for i in from.saturating_add(4)..to.saturating_add(4).min(v.len()) {
        v[i] = 0;
    }
    Bytes::from(v)
}

/// Client-side MySQL / MariaDB protocol parser for one connection.
#[derive(Debug)]
pub struct MysqlParser {
    opts: MysqlOptions,
    cl: Dir,
    sv: Dir,
    call: Option<MCall>,
    index: u64,
    stmts: HashMap<u32, Stmt>,
    facts: Map<String, Value>,
    missing: Vec<String>,
    session_dirty: bool,
    deprecate_eof: Option<bool>,
    /// The handshake is over (or was never seen).
    command_phase: bool,
    tls: bool,
    closed: bool,
}

impl Default for MysqlParser {
    fn default() -> Self {
        Self::new(MysqlOptions::default())
    }
}

impl MysqlParser {
    /// A parser for one connection (greeting expected; mid-session attach recognised).
    #[must_use]
    pub fn new(opts: MysqlOptions) -> Self {
        Self {
            opts,
            cl: Dir::new(),
            sv: Dir::new(),
            call: None,
            index: 0,
            stmts: HashMap::new(),
            facts: Map::new(),
            missing: Vec::new(),
            session_dirty: false,
            deprecate_eof: None,
            command_phase: false,
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

    fn set_fact(&mut self, k: &str, v: Value) {
        if self.facts.get(k) != Some(&v) {
            self.facts.insert(k.to_owned(), v);
            self.session_dirty = true;
        }
    }

    fn flush_session(&mut self, out: &mut Vec<DbEvent>) {
        if self.session_dirty {
            self.session_dirty = false;
            out.push(DbEvent::Session {
                protocol: Protocol::Mysql,
                facts: Value::Object(self.facts.clone()),
                missing: self.missing.clone(),
            });
        }
    }

    // ---- framing -------------------------------------------------------------------------

    fn frame(&mut self, client: bool, out: &mut Vec<DbEvent>) {
        let mut mid = false;
        let d = if client { &mut self.cl } else { &mut self.sv };
        loop {
            if d.inp.len() == 0 || d.inp.discarding() > 0 {
                break;
            }
            match d.st {
                Frm::Stopped => {
                    let n = d.inp.clear();
                    out.push(DbEvent::Skipped {
                        egress: client,
                        bytes: n,
                        reason: if self.tls { "tls" } else { "stopped" },
                    });
                    break;
                }
                Frm::Start => {
                    let b = d.inp.avail();
                    if b.len() < 5 {
                        break;
                    }
                    let v = if client {
                        match header(b) {
                            // A handshake response (fresh connection).
                            Some((len, 1)) if (32..1 << 16).contains(&len) => Some(true),
                            Some(_) => {
                                let r = client_cmd_at(b);
                                if r == Some(true) {
                                    mid = true;
                                }
                                r
                            }
                            None => None,
                        }
                    } else {
                        match header(b) {
                            Some((_, 0)) if b.get(4) == Some(&10) => Some(true),
                            Some(_) => server_chain_at(b, None),
                            None => None,
                        }
                    };
                    match v {
                        Some(true) => d.st = Frm::Sync,
                        Some(false) => d.st = Frm::Resync,
                        None => break,
                    }
                }
                Frm::Resync => {
                    let b = d.inp.avail();
                    let mut found = None;
                    let mut wait = None;
                    for i in 0..b.len() {
                        let v = if client {
                            client_cmd_at(&b[i..])
                        } else {
                            server_chain_at(&b[i..], Some(1))
                        };
                        // A definite boundary anywhere wins over an undecided earlier one
                        // (junk claiming a long length must not stall the resync).
                        match v {
                            Some(true) => {
                                found = Some(i);
                                break;
                            }
                            None if wait.is_none() => wait = Some(i),
                            _ => {}
                        }
                    }
                    let skip = found.or(wait).unwrap_or(b.len());
                    d.inp.skip(skip);
                    if skip > 0 {
                        out.push(DbEvent::Skipped {
                            egress: client,
                            bytes: skip as u64,
                            reason: "resync",
                        });
                    }
                    if found.is_some() {
                        d.st = Frm::Sync;
                        d.partial = None;
                    } else {
                        break;
                    }
                }
                Frm::Sync => {
                    let Some((len, seq)) = header(d.inp.avail()) else {
                        break;
                    };
                    if d.inp.len() < 4 + len {
                        break;
                    }
                    let (raw, first, last) = d.inp.take(4 + len);
                    let p = d.partial.get_or_insert_with(|| Partial {
                        seq,
                        first: Some(first),
                        ..Partial::default()
                    });
                    p.total += len as u64;
                    if p.payload.len() < MAX_PAYLOAD {
                        let room = MAX_PAYLOAD - p.payload.len();
                        p.payload.extend_from_slice(&raw[4..4 + len.min(room)]);
                    }
                    if p.raw.len() < MAX_PAYLOAD {
                        p.raw.extend_from_slice(&raw);
                    }
                    if len == FULL {
                        continue;
                    }
                    let Some(p) = d.partial.take() else { break };
                    let oversized = (p.total as usize > MAX_PAYLOAD).then_some(p.total);
                    d.q.push_back(Pkt {
                        seq: p.seq,
                        payload: Bytes::from(p.payload),
                        raw: Bytes::from(p.raw),
                        first: p.first.unwrap_or(first),
                        last,
                        oversized,
                    });
                }
            }
        }
        if mid {
            self.mid_session();
        }
    }

    fn mid_session(&mut self) {
        self.command_phase = true;
        for m in ["greeting", "handshake"] {
            self.add_missing(m.into());
        }
    }

    fn stop_tls(&mut self, out: &mut Vec<DbEvent>) {
        self.tls = true;
        self.set_fact("tls", Value::Bool(true));
        for (client, d) in [(true, &mut self.cl), (false, &mut self.sv)] {
            d.st = Frm::Stopped;
            let n = d.inp.clear() + d.q.drain(..).map(|p| p.wire_len()).sum::<u64>();
            if n > 0 {
                out.push(DbEvent::Skipped {
                    egress: client,
                    bytes: n,
                    reason: "tls",
                });
            }
        }
    }

    // ---- stitching -----------------------------------------------------------------------

    fn skip_server(&mut self, reason: &'static str, out: &mut Vec<DbEvent>) {
        if let Some(p) = self.sv.q.pop_front() {
            out.push(DbEvent::Skipped {
                egress: false,
                bytes: p.wire_len(),
                reason,
            });
        }
    }

    fn stitch(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            if self.call.is_none() && !self.start_call(out) {
                return;
            }
            self.advance(out);
            let done = self.call.as_ref().is_some_and(|c| c.st == Rs::Done);
            if done {
                self.finish(out);
                continue;
            }
            if self.closed {
                if let Some(c) = &mut self.call {
                    // A prepare response may legitimately end without its optional EOF.
                    if !matches!(c.st, Rs::PrepAfterCols) {
                        c.incomplete = true;
                    }
                }
                self.finish(out);
                continue;
            }
            return;
        }
    }

    fn start_call(&mut self, out: &mut Vec<DbEvent>) -> bool {
        // The server speaks first.
        if let Some(g) = self.sv.q.front()
            && g.seq == 0
            && g.payload.first() == Some(&10)
            && !self.command_phase
        {
            let Some(g) = self.sv.q.pop_front() else {
                return false;
            };
            let mut c = MCall::new(true, 0, g.first);
            c.resp_first = Some(g.first);
            c.resp_last = Some(g.last);
            push_capped(
                &mut c.raw_resp,
                &g.raw,
                self.opts.max_raw,
                &mut c.raw_truncated,
            );
            c.greeting = parse::parse_greeting(&g.payload);
            if let Some(gr) = &c.greeting {
                self.set_fact("server_version", json!(gr.server_version));
                self.set_fact("connection_id", json!(gr.connection_id));
                self.set_fact("server_capabilities", json!(gr.capabilities));
                self.set_fact("mariadb_capabilities", json!(gr.mariadb_capabilities));
                self.set_fact("server_charset", json!(gr.charset));
                self.set_fact("server_auth_plugin", json!(gr.auth_plugin));
            }
            c.next_seq = 1;
            self.call = Some(c);
            return true;
        }
        let Some(p) = self.cl.q.pop_front() else {
            if self.closed {
                while !self.sv.q.is_empty() {
                    self.skip_server("response-without-request", out);
                }
            }
            while self.sv.q.len() > MAX_ORPHANS {
                self.skip_server("response-without-request", out);
            }
            return false;
        };
        while self
            .sv
            .q
            .front()
            .is_some_and(|s| s.last.ts_ns < p.first.ts_ns)
        {
            self.skip_server("response-without-request", out);
        }
        if !self.command_phase && p.seq != 0 {
            // Handshake response whose greeting was not seen.
            let mut c = MCall::new(true, 0, p.first);
            c.next_seq = p.seq.wrapping_add(1);
            self.add_missing("greeting".into());
            self.call = Some(c);
            self.include_handshake_client(p, out);
            return true;
        }
        if p.seq != 0 {
            out.push(DbEvent::Skipped {
                egress: true,
                bytes: p.wire_len(),
                reason: "packet-outside-command",
            });
            return true;
        }
        self.command_phase = true;
        let cmd = p.payload.first().copied().unwrap_or(0);
        if cmd == com::QUIT {
            return true;
        }
        let mut c = MCall::new(false, cmd, p.first);
        c.req_last = p.last;
        c.raw_truncated |= p.oversized.is_some();
        push_capped(
            &mut c.raw_req,
            &p.raw,
            self.opts.max_raw,
            &mut c.raw_truncated,
        );
        let body = p.payload.get(1..).unwrap_or(&[]);
        match cmd {
            com::QUERY | com::STMT_PREPARE => {
                c.sql = Some(String::from_utf8_lossy(body).into_owned());
                if cmd == com::STMT_PREPARE {
                    c.st = Rs::First;
                }
            }
            com::INIT_DB => c.init_db = Some(String::from_utf8_lossy(body).into_owned()),
            com::STMT_EXECUTE
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_FETCH
            | com::STMT_SEND_LONG_DATA => {
                let id = parse::Reader::new(body).u32();
                c.stmt_id = id;
                let st = id.and_then(|i| self.stmts.get(&i));
                match st {
                    Some(s) => c.sql = Some(s.sql.clone()),
                    None => {
                        c.stmt_missing = true;
                        if let Some(i) = id {
                            self.add_missing(format!("prepared:{i}"));
                        }
                    }
                }
                if cmd == com::STMT_EXECUTE {
                    let st = id.and_then(|i| self.stmts.get(&i));
                    let fallback: Option<Vec<(u8, bool)>> = st.map(|s| {
                        s.last_types.clone().unwrap_or_else(|| {
                            s.params
                                .iter()
                                .map(|d| (d.type_code, d.flags & 0x20 != 0))
                                .collect()
                        })
                    });
                    let ex = parse::parse_execute(
                        &p.payload,
                        st.map(|s| s.num_params),
                        fallback.as_deref(),
                    );
                    if let Some(ex) = ex {
                        if let (Some(t), Some(i)) = (&ex.types, id)
                            && let Some(s) = self.stmts.get_mut(&i)
                        {
                            s.last_types = Some(t.clone());
                        }
                        c.params = Some(ex.params);
                        c.param_types = ex.param_types_used;
                    }
                }
                if matches!(cmd, com::STMT_CLOSE | com::STMT_SEND_LONG_DATA) {
                    if cmd == com::STMT_CLOSE
                        && let Some(i) = id
                    {
                        self.stmts.remove(&i);
                    }
                    c.st = Rs::Done;
                }
                if cmd == com::STMT_FETCH {
                    c.st = Rs::Rows;
                    let cols = st_cols(&self.stmts, id);
                    c.cur().columns = cols;
                }
            }
            _ => {}
        }
        self.call = Some(c);
        true
    }

    fn include_handshake_client(&mut self, p: Pkt, out: &mut Vec<DbEvent>) {
        let max_raw = self.opts.max_raw;
        let Some(c) = &mut self.call else { return };
        c.req_last = p.last;
        if c.response.is_none() && c.auth_switch.is_none() {
            c.req_first = p.first;
            if let Some(h) = parse::parse_handshake_response(&p.payload) {
                let raw = redact_range(&p.raw, h.auth_range.0, h.auth_range.1);
                push_capped(&mut c.raw_req, &raw, max_raw, &mut c.raw_truncated);
                let tls = h.ssl_request;
                c.response = Some(h);
                if tls {
                    c.tls = true;
                    c.st = Rs::Done;
                }
                let h = c.response.clone().unwrap_or_default();
                self.set_fact("user", json!(h.user));
                self.set_fact("database", json!(h.database));
                self.set_fact("client_capabilities", json!(h.capabilities));
                self.set_fact("client_auth_plugin", json!(h.auth_plugin));
                let attrs: Map<String, Value> = h
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                self.set_fact("connect_attributes", Value::Object(attrs));
                let server_caps = self
                    .facts
                    .get("server_capabilities")
                    .and_then(Value::as_u64)
                    .map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX));
                self.deprecate_eof = Some(h.capabilities & server_caps & cap::DEPRECATE_EOF != 0);
                if tls {
                    self.set_fact("tls", Value::Bool(true));
                }
                return;
            }
        }
        // Any other client packet during authentication: payload redacted (zeros).
        let raw = redact_range(&p.raw, 0, p.raw.len());
        push_capped(&mut c.raw_req, &raw, max_raw, &mut c.raw_truncated);
        let _ = out;
    }

    fn advance(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            let Some(c) = &self.call else { return };
            if c.st == Rs::Done {
                return;
            }
            if c.handshake {
                // Client auth packets (sequence > 0) belong to the handshake.
                if let Some(p) = self.cl.q.front()
                    && p.seq != 0
                {
                    let Some(p) = self.cl.q.pop_front() else {
                        return;
                    };
                    self.include_handshake_client(p, out);
                    continue;
                }
                let Some(p) = self.sv.q.pop_front() else {
                    return;
                };
                self.handshake_server(p);
                continue;
            }
            // LOCAL INFILE data from the client.
            if c.st == Rs::Infile
                && let Some(p) = self.cl.q.front()
                && p.seq != 0
            {
                let Some(p) = self.cl.q.pop_front() else {
                    return;
                };
                let Some(c) = &mut self.call else { return };
                c.infile_bytes += p.payload.len() as u64;
                c.extra_client_packets += 1;
                c.req_last = p.last;
                c.next_seq = p.seq.wrapping_add(1);
                if p.payload.is_empty() {
                    c.st = Rs::First;
                }
                continue;
            }
            let Some(p) = self.sv.q.front() else { return };
            if p.seq != c.next_seq && c.server_packets > 0 && p.seq == 1 {
                // The next command's response: ours ended early.
                let Some(c) = &mut self.call else { return };
                if c.st != Rs::PrepAfterCols {
                    c.incomplete = true;
                }
                c.st = Rs::Done;
                return;
            }
            let Some(p) = self.sv.q.pop_front() else {
                return;
            };
            self.command_server(p);
        }
    }

    fn handshake_server(&mut self, p: Pkt) {
        let max_raw = self.opts.max_raw;
        let first = p.payload.first().copied();
        let Some(c) = &mut self.call else { return };
        c.server_packets += 1;
        if c.resp_first.is_none() {
            c.resp_first = Some(p.first);
        }
        c.resp_last = Some(p.last);
        let raw = match first {
            // Auth switch: keep the plugin name, zero the plugin data.
            Some(0xfe) => {
                let mut r = parse::Reader::new(&p.payload[1..]);
                let name = r.cstr().unwrap_or_default();
                let keep = 1 + name.len() + 1;
                c.auth_switch = Some(name);
                redact_range(&p.raw, keep, p.raw.len())
            }
            Some(0x01) => redact_range(&p.raw, 2, p.raw.len()),
            _ => p.raw.clone(),
        };
        push_capped(&mut c.raw_resp, &raw, max_raw, &mut c.raw_truncated);
        match first {
            Some(0x00) => {
                c.auth_ok = Some(true);
                c.st = Rs::Done;
            }
            Some(0xff) => {
                c.auth_ok = Some(false);
                c.err = parse::parse_err(&p.payload);
                c.st = Rs::Done;
            }
            _ => {}
        }
    }

    fn add_row(&mut self, p: &Pkt, binary: bool) {
        let opts = self.opts;
        let Some(c) = &mut self.call else { return };
        let size = p.payload.len();
        let keep = c.stored_rows < opts.max_rows
            && c.stored_bytes.saturating_add(size) <= opts.max_row_bytes
            && p.oversized.is_none();
        let cols = c.cur().columns.clone().unwrap_or_default();
        let row = if keep {
            if binary {
                parse::parse_binary_row(&p.payload, &cols)
            } else {
                parse::parse_text_row(&p.payload, &cols)
            }
        } else {
            None
        };
        let r = c.cur();
        r.rows_total += 1;
        match row {
            Some(v) => {
                r.rows.push(v);
                c.stored_rows += 1;
                c.stored_bytes += size;
            }
            None => r.truncated = true,
        }
    }

    fn command_server(&mut self, p: Pkt) {
        let max_raw = self.opts.max_raw;
        let deprecate = self.deprecate_eof;
        let binary = matches!(
            self.call.as_ref().map(|c| c.cmd),
            Some(com::STMT_EXECUTE | com::STMT_FETCH)
        );
        {
            let Some(c) = &mut self.call else { return };
            c.server_packets += 1;
            c.next_seq = p.seq.wrapping_add(1);
            if c.resp_first.is_none() {
                c.resp_first = Some(p.first);
            }
            c.resp_last = Some(p.last);
            c.raw_truncated |= p.oversized.is_some();
            push_capped(&mut c.raw_resp, &p.raw, max_raw, &mut c.raw_truncated);
        }
        let pl = &p.payload;
        let h = pl.first().copied().unwrap_or(0);
        let Some(st) = self.call.as_ref().map(|c| c.st) else {
            return;
        };
        let mut learned_eof = None;
        let Some(c) = &mut self.call else { return };
        if h == 0xff && !matches!(st, Rs::ColDefs(_) | Rs::PrepParams(_) | Rs::PrepCols(_)) {
            c.err = parse::parse_err(pl);
            c.st = Rs::Done;
            return;
        }
        match st {
            Rs::First => match (c.cmd, h) {
                (com::STATISTICS, _) => c.st = Rs::Done,
                (com::STMT_PREPARE, 0x00) => {
                    // `h` is 0 for an empty packet too: nothing after the header byte.
                    let mut r = parse::Reader::new(pl.get(1..).unwrap_or_default());
                    let id = r.u32().unwrap_or(0);
                    let ncols = u64::from(r.u16().unwrap_or(0));
                    let nparams = u64::from(r.u16().unwrap_or(0));
                    r.u8();
                    let warnings = r.u16().unwrap_or(0);
                    c.prepared = Some((id, ncols, nparams, warnings));
                    c.stmt_id = Some(id);
                    c.st = if nparams > 0 {
                        Rs::PrepParams(nparams)
                    } else if ncols > 0 {
                        Rs::PrepCols(ncols)
                    } else {
                        Rs::Done
                    };
                }
                (_, 0x00) => {
                    let ok = parse::parse_ok(pl);
                    let more = ok
                        .as_ref()
                        .is_some_and(|o| o.status & parse::status::MORE_RESULTS_EXISTS != 0);
                    c.results.push(ResultSet {
                        ok,
                        ..ResultSet::default()
                    });
                    c.st = if more { Rs::First } else { Rs::Done };
                }
                (_, 0xfe) if pl.len() < 9 => c.st = Rs::Done,
                (com::QUERY, 0xfb) => c.st = Rs::Infile,
                _ => {
                    let n = parse::Reader::new(pl).lenenc().unwrap_or(0);
                    c.results.push(ResultSet::default());
                    c.st = if n == 0 { Rs::Done } else { Rs::ColDefs(n) };
                }
            },
            Rs::ColDefs(n) => {
                if let Some(d) = parse::parse_column_def(pl) {
                    c.cur().columns.get_or_insert_with(Vec::new).push(d);
                }
                c.st = if n <= 1 {
                    Rs::AfterDefs
                } else {
                    Rs::ColDefs(n - 1)
                };
            }
            Rs::AfterDefs => {
                if h == 0xfe && pl.len() == 5 {
                    learned_eof = Some(false);
                    let status = parse::terminator_status(pl);
                    c.st = if status & parse::status::CURSOR_EXISTS != 0 {
                        Rs::Done
                    } else {
                        Rs::Rows
                    };
                } else {
                    learned_eof = Some(true);
                    c.st = Rs::Rows;
                    self.rows_packet(&p, binary);
                }
            }
            Rs::Rows => self.rows_packet(&p, binary),
            Rs::PrepParams(n) => {
                if let Some(d) = parse::parse_column_def(pl) {
                    c.prep_params.push(d);
                }
                if n <= 1 {
                    c.st = Rs::PrepAfterParams;
                } else {
                    c.st = Rs::PrepParams(n - 1);
                }
            }
            Rs::PrepAfterParams => {
                let ncols = c.prepared.map_or(0, |p| p.1);
                if h == 0xfe && pl.len() == 5 {
                    learned_eof = Some(false);
                    c.st = if ncols > 0 {
                        Rs::PrepCols(ncols)
                    } else {
                        Rs::Done
                    };
                } else if ncols > 0 {
                    learned_eof = Some(true);
                    if let Some(d) = parse::parse_column_def(pl) {
                        c.prep_cols.push(d);
                    }
                    c.st = if ncols <= 1 {
                        Rs::PrepAfterCols
                    } else {
                        Rs::PrepCols(ncols - 1)
                    };
                } else {
                    c.st = Rs::Done;
                }
            }
            Rs::PrepCols(n) => {
                if let Some(d) = parse::parse_column_def(pl) {
                    c.prep_cols.push(d);
                }
                c.st = if n <= 1 {
                    Rs::PrepAfterCols
                } else {
                    Rs::PrepCols(n - 1)
                };
            }
            Rs::PrepAfterCols => {
                if h == 0xfe && pl.len() == 5 {
                    learned_eof = Some(false);
                }
                c.st = Rs::Done;
            }
            Rs::Infile => {
                // Server packets while waiting for the file: OK/ERR end it.
                if h == 0x00 {
                    c.results.push(ResultSet {
                        ok: parse::parse_ok(pl),
                        ..ResultSet::default()
                    });
                    c.st = Rs::Done;
                }
            }
            Rs::Done => {}
        }
        if let Some(l) = learned_eof
            && self.deprecate_eof.is_none()
        {
            self.deprecate_eof = Some(l);
        }
        // After the last prepare definition, no EOF follows with CLIENT_DEPRECATE_EOF.
        if let Some(c) = &mut self.call {
            let eof_expected = deprecate.or(self.deprecate_eof) != Some(true);
            if c.st == Rs::PrepAfterCols && !eof_expected {
                c.st = Rs::Done;
            }
            if c.st == Rs::PrepAfterParams && !eof_expected && c.prepared.is_some_and(|p| p.1 == 0)
            {
                c.st = Rs::Done;
            }
        }
    }

    fn rows_packet(&mut self, p: &Pkt, binary: bool) {
        let pl = &p.payload;
        if parse::is_terminator(pl) {
            let status = parse::terminator_status(pl);
            let Some(c) = &mut self.call else { return };
            c.cur().end_status = Some(status);
            if pl.len() > 5 {
                c.cur().ok = parse::parse_ok(pl);
            }
            c.st = if status & parse::status::MORE_RESULTS_EXISTS != 0 {
                Rs::First
            } else {
                Rs::Done
            };
            return;
        }
        self.add_row(p, binary);
    }

    fn result_json(r: &ResultSet) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "columns".into(),
            r.columns.as_ref().map_or(Value::Null, |c| {
                Value::Array(c.iter().map(ColumnDef::json).collect())
            }),
        );
        m.insert("rows".into(), Value::Array(r.rows.clone()));
        m.insert("rows_total".into(), json!(r.rows_total));
        m.insert("rows_truncated".into(), Value::Bool(r.truncated));
        m.insert(
            "ok".into(),
            r.ok.as_ref().map_or(Value::Null, parse::Ok::json),
        );
        if let Some(s) = r.end_status {
            m.insert("end_status_flags".into(), json!(s));
        }
        m
    }

    fn finish(&mut self, out: &mut Vec<DbEvent>) {
        let Some(c) = self.call.take() else { return };
        let mut d = Map::new();
        let method;
        let session_level;
        if c.handshake {
            method = "HANDSHAKE".to_owned();
            session_level = true;
            d.insert("command".into(), json!("handshake"));
            if let Some(g) = &c.greeting {
                d.insert(
                    "greeting".into(),
                    json!({
                        "protocol_version": 10,
                        "server_version": g.server_version,
                        "connection_id": g.connection_id,
                        "capabilities": g.capabilities,
                        "mariadb_capabilities": g.mariadb_capabilities,
                        "charset": g.charset,
                        "status_flags": g.status,
                        "auth_plugin": g.auth_plugin,
                    }),
                );
            }
            if let Some(h) = &c.response {
                d.insert(
                    "response".into(),
                    json!({
                        "capabilities": h.capabilities,
                        "charset": h.charset,
                        "user": h.user,
                        "database": h.database,
                        "auth_plugin": h.auth_plugin,
                        "auth_response_bytes": h.auth_range.1 - h.auth_range.0,
                        "ssl_request": h.ssl_request,
                    }),
                );
            }
            let plugin = c
                .auth_switch
                .clone()
                .or_else(|| c.response.as_ref().and_then(|h| h.auth_plugin.clone()))
                .or_else(|| c.greeting.as_ref().map(|g| g.auth_plugin.clone()));
            let outcome = match c.auth_ok {
                Some(true) => "ok",
                Some(false) => "error",
                None if c.tls => "tls",
                None => "unknown",
            };
            let auth = json!({
                "plugin": plugin,
                "switched_to": c.auth_switch,
                "outcome": outcome,
            });
            d.insert("auth".into(), auth.clone());
            self.set_fact("auth", auth);
        } else {
            let name = parse::command_name(c.cmd);
            d.insert("command".into(), json!(name));
            let kw = c.sql.as_deref().map(parse::first_keyword);
            method = match c.cmd {
                com::QUERY | com::STMT_EXECUTE => match &kw {
                    Some(k) if !k.is_empty() => k.clone(),
                    _ => name.trim_start_matches("COM_").to_owned(),
                },
                _ => name.trim_start_matches("COM_").to_owned(),
            };
            session_level = match c.cmd {
                com::QUERY | com::STMT_EXECUTE => {
                    matches!(kw.as_deref(), Some("SET" | "SHOW" | "USE"))
                        || c.sql.as_deref().is_some_and(|s| {
                            s.trim_start().to_ascii_uppercase().starts_with("SELECT @@")
                        })
                }
                _ => true,
            };
            d.insert(
                "sql".into(),
                c.sql.clone().map_or(Value::Null, Value::String),
            );
            if c.stmt_missing && c.sql.is_none() {
                d.insert(
                    "sql_missing".into(),
                    json!(crate::protocols::postgres::MISSING_SQL),
                );
            }
            if let Some(id) = c.stmt_id {
                d.insert("statement_id".into(), json!(id));
            }
            if c.cmd == com::STMT_EXECUTE {
                let params = c.params.as_ref().map_or(Value::Null, |ps| {
                    Value::Array(
                        ps.iter()
                            .enumerate()
                            .map(|(i, v)| {
                                let (t, u) = c.param_types.get(i).copied().unwrap_or((0, false));
                                json!({
                                    "type": parse::type_name(t),
                                    "type_code": t,
                                    "unsigned": u,
                                    "value": v,
                                })
                            })
                            .collect(),
                    )
                });
                d.insert("params".into(), params);
            }
            if let Some(db) = &c.init_db {
                d.insert("database".into(), json!(db));
            }
            if let Some((id, ncols, nparams, warnings)) = c.prepared {
                d.insert(
                    "prepared".into(),
                    json!({
                        "statement_id": id,
                        "num_columns": ncols,
                        "num_params": nparams,
                        "warnings": warnings,
                        "params": c.prep_params.iter().map(ColumnDef::json).collect::<Vec<_>>(),
                        "columns": c.prep_cols.iter().map(ColumnDef::json).collect::<Vec<_>>(),
                    }),
                );
                if c.err.is_none() {
                    self.stmts.insert(
                        id,
                        Stmt {
                            sql: c.sql.clone().unwrap_or_default(),
                            num_params: usize::try_from(nparams).unwrap_or(0),
                            params: c.prep_params.clone(),
                            columns: c.prep_cols.clone(),
                            last_types: None,
                        },
                    );
                }
            }
            if c.cmd == com::INIT_DB && c.err.is_none() && c.init_db.is_some() {
                self.set_fact("database", json!(c.init_db));
            }
            let results: Vec<Map<String, Value>> =
                c.results.iter().map(Self::result_json).collect();
            if let Some(first) = results.first() {
                for (k, v) in first {
                    d.insert(k.clone(), v.clone());
                }
            } else {
                for (k, v) in Self::result_json(&ResultSet::default()) {
                    d.insert(k, v);
                }
            }
            if results.len() > 1 {
                d.insert(
                    "results".into(),
                    Value::Array(results.into_iter().map(Value::Object).collect()),
                );
            }
            if c.infile_bytes > 0 || c.extra_client_packets > 0 {
                d.insert("local_infile_bytes".into(), json!(c.infile_bytes));
            }
        }
        if let Some(e) = &c.err {
            d.insert(
                "error".into(),
                json!({"code": e.code, "sql_state": e.sql_state, "message": e.message}),
            );
        }
        d.insert("incomplete".into(), Value::Bool(c.incomplete));
        let error = c.err.as_ref().map(|e| {
            if e.sql_state.is_empty() {
                format!("MySQL {}: {}", e.code, e.message)
            } else {
                format!("MySQL {} ({}): {}", e.code, e.sql_state, e.message)
            }
        });
        let index = self.index;
        self.index += 1;
        let tls = c.tls;
        out.push(DbEvent::Call(Box::new(DbCall {
            protocol: Protocol::Mysql,
            index,
            method,
            detail: Value::Object(d),
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
        if c.handshake {
            self.command_phase = true;
        }
        if tls {
            self.stop_tls(out);
        }
        self.flush_session(out);
    }

    fn gap(&mut self, client: bool, pos: u64, len: u64, out: &mut Vec<DbEvent>) {
        let d = if client { &mut self.cl } else { &mut self.sv };
        let dropped = d.inp.reset_to(pos.saturating_add(len))
            + d.partial.take().map_or(0, |p| p.raw.len() as u64);
        out.push(DbEvent::Skipped {
            egress: client,
            bytes: dropped + len,
            reason: "gap",
        });
        if d.st != Frm::Stopped {
            d.st = Frm::Resync;
        }
        if !client && let Some(c) = &mut self.call {
            // The rest of this response is unusable.
            c.incomplete = true;
            c.st = Rs::Done;
        }
        if !client {
            // Responses still queued for commands not yet started are kept; the resync looks
            // for the next response that starts at sequence 1.
        } else {
            self.command_phase = true;
        }
    }
}

fn st_cols(stmts: &HashMap<u32, Stmt>, id: Option<u32>) -> Option<Vec<ColumnDef>> {
    id.and_then(|i| stmts.get(&i)).map(|s| s.columns.clone())
}

impl DbParser for MysqlParser {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<DbEvent>) {
        match seg {
            Segment::Data(c) => {
                let d = if egress { &mut self.cl } else { &mut self.sv };
                if let Some(end) = d.inp.end()
                    && c.pos > end
                {
                    self.gap(egress, end, c.pos - end, out);
                }
                let d = if egress { &mut self.cl } else { &mut self.sv };
                d.inp.append(&c);
            }
            Segment::Gap { pos, len } => self.gap(egress, pos, len, out),
        }
        self.frame(true, out);
        self.frame(false, out);
        self.stitch(out);
        if self.call.is_none() {
            self.flush_session(out);
        }
    }

    fn close(&mut self, out: &mut Vec<DbEvent>) {
        self.frame(true, out);
        self.frame(false, out);
        self.closed = true;
        self.stitch(out);
        for (client, d) in [(true, &mut self.cl), (false, &mut self.sv)] {
            let n = d.inp.clear() + d.partial.take().map_or(0, |p| p.raw.len() as u64);
            if n > 0 {
                out.push(DbEvent::Skipped {
                    egress: client,
                    bytes: n,
                    reason: "incomplete message at close",
                });
            }
        }
        self.flush_session(out);
    }

    fn protocol(&self) -> Protocol {
        Protocol::Mysql
    }
}
