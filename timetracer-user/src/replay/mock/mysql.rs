//! MySQL / MariaDB mock server (client/server protocol 4.1).
//!
//! - Handshake answered by the mock: `HandshakeV10` with the recorded server version,
//!   capabilities (without `CLIENT_COMPRESS`; with `CLIENT_SSL` only when the recording was
//!   TLS), MariaDB capabilities and charset (`db_sessions[].facts`; defaults logged), auth
//!   plugin `mysql_native_password` and a random scramble; any `HandshakeResponse41` is
//!   accepted with an OK. A client's SSL request packet (the short handshake response with
//!   `CLIENT_SSL`) is followed by a TLS handshake with a certificate of the mock CA, and the
//!   handshake goes on inside TLS with the next sequence number, as with a server. A client that
//!   insists on another plugin (`caching_sha2_password`) gets an `AuthSwitchRequest` to
//!   `mysql_native_password` first. A recorded password exchange cannot be replayed (the
//!   scramble differs) and is not needed.
//! - Commands are matched against the recorded `request` packets: `COM_QUERY` text,
//!   `COM_STMT_PREPARE` SQL, `COM_STMT_EXECUTE` statement SQL and decoded parameter values;
//!   `COM_PING`, `COM_INIT_DB`, `COM_RESET_CONNECTION`, `COM_SET_OPTION`, `COM_STMT_RESET`
//!   from the recording when it holds them, else by the protocol's rules (OK / EOF), as is
//!   a `SET` the recording lacks (PyMySQL's `SET NAMES` at connect happens before any
//!   request). Answers are the recorded packets, byte for byte, except the statement id of a
//!   replayed `COM_STMT_PREPARE` answer: the mock hands out its own ids and maps them.
//! - A miss is an ERR packet (1105, `HY000`) naming the first differing field; the connection
//!   stays usable. Malformed packets: an ERR and close.
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf as _, BytesMut};
use serde_json::Value;
use tokio_rustls::TlsAcceptor;

use super::Io;
use crate::protocols::mysql::parse::{self as my, cap, com};
use crate::protocols::postgres::redact::RecordedRedaction;
use crate::protocols::redact::sql::Dialect;
use crate::replay::ledger::{Destination, Diff, Miss, RecordedCall, one_line};

/// `ER_UNKNOWN_ERROR`: a replay miss.
const MISS_CODE: u16 = 1105;
/// Largest packet payload before continuation packets.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Largest joined command accepted.
const MAX_COMMAND: usize = 64 << 20;
const NATIVE: &str = "mysql_native_password";
/// `CLIENT_COMPRESS`: not offered (compressed replay is not supported).
const COMPRESS: u32 = 1 << 5;
/// `SERVER_STATUS_AUTOCOMMIT`, the state of a fresh session.
const STATUS_AUTOCOMMIT: u16 = 0x0002;

/// Reason of a miss on a call whose recording was cut.
const TRUNCATED: &str =
    "the recorded response was truncated at the capture cap and cannot be replayed";
/// Reason of a miss on a session statement with data the recording lacks.
const SESSION_MISSING: &str = "session statement (SHOW, SELECT @@…) not in the recording: the \
     connection was set up before recording started, or the driver changed";

/// Serves one accepted connection until the app closes it.
///
/// # Errors
/// I/O errors of the connection.
pub async fn serve(dest: Arc<Destination>, io: impl Io + 'static) -> anyhow::Result<()> {
    serve_upgrading(dest, io, None).await
}

/// [`serve`], offering `CLIENT_SSL` in the greeting and upgrading the connection with `tls`
/// at the client's SSL request packet when it is given (the recording was TLS).
///
/// # Errors
/// I/O errors of the connection.
pub async fn serve_upgrading(
    dest: Arc<Destination>,
    io: impl Io + 'static,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let mut s = Session::new(dest);
    s.tls_offered = tls.is_some();
    s.greeting();
    super::drive(&mut s, io, tls.as_ref()).await
}

/// One packet (continuations joined) at the start of `b`: `(seq, payload, bytes used)`.
/// `Ok(None)`: more bytes needed.
fn packet(b: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, String> {
    let mut payload = Vec::new();
    let mut at = 0;
    let mut seq = None;
    loop {
        let Some(h) = b.get(at..at + 4) else {
            return Ok(None);
        };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        seq.get_or_insert(h[3]);
        let Some(p) = b.get(at + 4..at + 4 + len) else {
            return Ok(None);
        };
        payload.extend_from_slice(p);
        at += 4 + len;
        if payload.len() > MAX_COMMAND {
            return Err("packet larger than the mock accepts".into());
        }
        if len < MAX_PAYLOAD {
            return Ok(Some((seq.unwrap_or(0), payload, at)));
        }
    }
}

/// Packets of a recorded byte sequence: `(payload range start, payload)`.
fn packets(b: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = b.get(at..at + 4) {
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let Some(p) = b.get(at + 4..at + 4 + len) else {
            break;
        };
        out.push((at + 4, p));
        at += 4 + len;
    }
    out
}

fn push_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        let len = u32::try_from(n).unwrap_or(0).to_le_bytes();
        out.extend_from_slice(&len[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_PAYLOAD {
            return;
        }
    }
}

/// A prepared statement handed out by the mock.
#[derive(Clone, Debug)]
struct Stmt {
    sql: String,
    num_params: usize,
    /// Parameter types last bound (a `COM_STMT_EXECUTE` may omit them).
    types: Option<Vec<(u8, bool)>>,
}

/// What the app sent, decoded for matching.
enum Cmd<'a> {
    Query(String),
    Prepare(String),
    Execute {
        sql: &'a str,
        params: Vec<Value>,
    },
    /// Anything else: compared by command byte and payload.
    Other(&'a [u8]),
}

fn sql_of(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).into_owned()
}

/// The first difference between the app's command and a recorded call.
fn compare(app: &Cmd<'_>, app_byte: u8, c: &RecordedCall) -> Result<(), Diff> {
    let Some(&(_, rec)) = packets(&c.request).first() else {
        return Err(Diff::new(
            "command",
            "(undecodable recording)",
            my::command_name(app_byte),
        ));
    };
    let rec_byte = rec.first().copied().unwrap_or(0);
    if rec_byte != app_byte {
        return Err(Diff::new(
            "command",
            my::command_name(rec_byte),
            my::command_name(app_byte),
        ));
    }
    // What the recording hook redacted (`detail.redacted`): those literals and parameters
    // match any value.
    let red = RecordedRedaction::of(c.event.db.as_ref());
    match app {
        Cmd::Query(sql) | Cmd::Prepare(sql) => {
            let r = sql_of(rec);
            if red.sql_matches(&r, sql, Dialect::Mysql) {
                Ok(())
            } else {
                let depth = Diff::text_depth(&r, sql);
                Err(Diff::new("sql", r, sql).at_depth(depth))
            }
        }
        Cmd::Execute { sql, params } => {
            let db = c.event.db.as_ref();
            let rsql = db.and_then(|d| d.get("sql")).and_then(Value::as_str);
            if !rsql.is_some_and(|r| red.sql_matches(r, sql, Dialect::Mysql)) {
                let r = rsql.unwrap_or("(statement prepared before the recording)");
                return Err(Diff::new("sql", r, sql).at_depth(Diff::text_depth(r, sql)));
            }
            let Some(rparams) = db.and_then(|d| d.get("params")).and_then(Value::as_array) else {
                return Err(Diff::new("params", "(not decoded in the recording)", "…")
                    .at_depth(Diff::PARAMS_DEPTH));
            };
            for i in 0..params.len().max(rparams.len()) {
                let r = rparams
                    .get(i)
                    .map(|p| p.get("value").cloned().unwrap_or(Value::Null));
                let a = params.get(i);
                let redacted = red.params.contains(&i) && a.is_some_and(|a| !a.is_null());
                if r.as_ref() != a && !redacted {
                    let show =
                        |v: Option<&Value>| v.map_or_else(|| "(absent)".into(), Value::to_string);
                    let depth = Diff::PARAMS_DEPTH
                        .saturating_add(1)
                        .saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
                    return Err(Diff::new(format!("params[{i}]"), show(r.as_ref()), show(a))
                        .at_depth(depth));
                }
            }
            Ok(())
        }
        Cmd::Other(p) => {
            if rec == *p {
                Ok(())
            } else {
                Err(Diff::new(
                    "payload",
                    one_line(&String::from_utf8_lossy(rec), 120),
                    one_line(&String::from_utf8_lossy(p), 120),
                ))
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `HandshakeResponse41`.
    Handshake,
    /// Waiting for the answer to our `AuthSwitchRequest`.
    AuthSwitch,
    Command,
}

/// The protocol state of one mocked connection.
pub(crate) struct Session {
    dest: Arc<Destination>,
    phase: Phase,
    scramble: [u8; 20],
    stmts: HashMap<u32, Stmt>,
    next_id: u32,
    /// Status flags of the last OK / EOF sent.
    status: u16,
    pub(crate) out: Vec<u8>,
    pub(crate) closed: bool,
    /// `CLIENT_SSL` is offered (the recording was TLS and a certificate is at hand).
    pub(crate) tls_offered: bool,
    /// The client asked for TLS: the transport must become TLS before the next byte is read.
    tls_upgrade: bool,
    /// The transport is TLS already.
    tls_done: bool,
}

impl Session {
    pub(crate) fn new(dest: Arc<Destination>) -> Self {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mut scramble = [0u8; 20];
        for (i, x) in a.as_bytes().iter().chain(b.as_bytes()).take(20).enumerate() {
            // Printable, never NUL (clients read the second part as a C string).
            scramble[i] = 0x21 + x % 94;
        }
        Self {
            dest,
            phase: Phase::Handshake,
            scramble,
            stmts: HashMap::new(),
            next_id: 1,
            status: STATUS_AUTOCOMMIT,
            out: Vec::new(),
            closed: false,
            tls_offered: false,
            tls_upgrade: false,
            tls_done: false,
        }
    }

    fn fact_u64(&self, k: &str) -> Option<u64> {
        self.dest
            .facts
            .iter()
            .find_map(|f| f.get(k).and_then(Value::as_u64))
    }

    /// `HandshakeV10`.
    pub(crate) fn greeting(&mut self) {
        let version = self
            .dest
            .facts
            .iter()
            .find_map(|f| f.get("server_version").and_then(Value::as_str))
            .map(str::to_owned);
        let caps = self
            .fact_u64("server_capabilities")
            .and_then(|c| u32::try_from(c).ok());
        let charset = self
            .fact_u64("server_charset")
            .and_then(|c| u8::try_from(c).ok());
        if version.is_none() || caps.is_none() || charset.is_none() {
            tracing::info!(
                destination = %self.dest.addr,
                "MySQL greeting: server version / capabilities / charset missing from the recording, defaults used"
            );
        }
        let version = version.unwrap_or_else(|| "8.0.36".into());
        let default_caps = 0x0000_0001 // LONG_PASSWORD
            | 0x0000_0004 // LONG_FLAG
            | cap::CONNECT_WITH_DB
            | cap::PROTOCOL_41
            | 0x0000_2000 // TRANSACTIONS
            | cap::SECURE_CONNECTION
            | cap::MULTI_STATEMENTS
            | cap::MULTI_RESULTS
            | 0x0004_0000 // PS_MULTI_RESULTS
            | cap::PLUGIN_AUTH
            | cap::CONNECT_ATTRS
            | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | cap::SESSION_TRACK
            | cap::DEPRECATE_EOF;
        let ssl = if self.tls_offered { cap::SSL } else { 0 };
        let caps = (caps.unwrap_or(default_caps) & !cap::SSL & !COMPRESS)
            | ssl
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH;
        let mariadb = self
            .fact_u64("mariadb_capabilities")
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0);
        let conn_id = u32::from(uuid::Uuid::new_v4().as_bytes()[0]) + 1;
        let mut p = vec![10u8];
        p.extend_from_slice(version.as_bytes());
        p.push(0);
        p.extend_from_slice(&conn_id.to_le_bytes());
        p.extend_from_slice(&self.scramble[..8]);
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(charset.unwrap_or(45));
        p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        // MariaDB's extended capabilities, announced when CLIENT_MYSQL (bit 0) is clear.
        let ext = if caps & 1 == 0 { mariadb } else { 0 };
        p.extend_from_slice(&ext.to_le_bytes());
        p.extend_from_slice(&self.scramble[8..]);
        p.push(0);
        p.extend_from_slice(NATIVE.as_bytes());
        p.push(0);
        push_packet(&mut self.out, 0, &p);
    }

    fn ok(&mut self, seq: u8) {
        let mut p = vec![0u8, 0, 0];
        p.extend_from_slice(&self.status.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        push_packet(&mut self.out, seq, &p);
    }

    fn err(&mut self, seq: u8, code: u16, state: &str, msg: &str) {
        let mut p = vec![0xFF];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(msg.as_bytes());
        push_packet(&mut self.out, seq, &p);
    }

    fn miss_err(&mut self, miss: &Miss) {
        self.err(1, MISS_CODE, "HY000", &super::postgres::miss_message(miss));
    }

    /// Consumes every complete packet of `buf`.
    pub(crate) fn feed(&mut self, buf: &mut BytesMut) {
        while !self.closed && !self.tls_upgrade {
            match packet(buf) {
                Ok(None) => return,
                Ok(Some((seq, payload, n))) => {
                    buf.advance(n);
                    self.on_packet(seq, &payload);
                }
                Err(e) => {
                    let miss = self.dest.miss("(oversized packet)", &e);
                    self.miss_err(&miss);
                    self.closed = true;
                    buf.clear();
                }
            }
        }
    }

    fn malformed(&mut self, what: &str, payload: &[u8], seq: u8) {
        let head: String = payload
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let miss = self.dest.miss(
            &format!("{what} {head}"),
            &format!("malformed MySQL {what}: connection closed"),
        );
        self.err(
            seq,
            MISS_CODE,
            "08S01",
            &super::postgres::miss_message(&miss),
        );
        self.closed = true;
    }

    fn on_packet(&mut self, seq: u8, payload: &[u8]) {
        match self.phase {
            Phase::Handshake => {
                let Some(h) = my::parse_handshake_response(payload) else {
                    return self.malformed("handshake response", payload, seq.wrapping_add(1));
                };
                let recorded = self
                    .fact_u64("client_capabilities")
                    .and_then(|c| u32::try_from(c).ok());
                if let Some(r) = recorded
                    && (r ^ h.capabilities) & cap::DEPRECATE_EOF != 0
                {
                    tracing::warn!(
                        destination = %self.dest.addr,
                        "The client negotiates CLIENT_DEPRECATE_EOF differently from the recorded \
                         client: replayed result sets may not parse (another driver?)"
                    );
                }
                if h.ssl_request && !self.tls_done {
                    if !self.tls_offered {
                        return self.malformed("TLS request", payload, seq.wrapping_add(1));
                    }
                    // The SSL request packet: the same handshake response goes on inside TLS.
                    self.tls_upgrade = true;
                    self.tls_done = true;
                    return;
                }
                match h.auth_plugin.as_deref() {
                    Some(p) if p != NATIVE && !p.is_empty() => {
                        let mut sw = vec![0xFE];
                        sw.extend_from_slice(NATIVE.as_bytes());
                        sw.push(0);
                        sw.extend_from_slice(&self.scramble);
                        sw.push(0);
                        push_packet(&mut self.out, seq.wrapping_add(1), &sw);
                        self.phase = Phase::AuthSwitch;
                    }
                    _ => {
                        self.ok(seq.wrapping_add(1));
                        self.phase = Phase::Command;
                    }
                }
            }
            Phase::AuthSwitch => {
                self.ok(seq.wrapping_add(1));
                self.phase = Phase::Command;
            }
            Phase::Command => self.command(payload),
        }
    }

    fn command(&mut self, p: &[u8]) {
        let Some(&byte) = p.first() else {
            return self.malformed("empty command", p, 1);
        };
        match byte {
            com::QUIT => self.closed = true,
            com::QUERY => {
                let sql = sql_of(p);
                let cmd = Cmd::Query(sql.clone());
                let actual = one_line(&sql, 300);
                let keyword = my::first_keyword(&sql);
                if matches!(keyword.as_str(), "SET" | "USE") && !sql.contains(';') {
                    // Answered by the protocol (OK, no data) when not recorded.
                    self.answer(&cmd, byte, &actual, true, |s| s.ok(1));
                } else if keyword == "SHOW" || sql.to_ascii_uppercase().starts_with("SELECT @@") {
                    // Session statements carry data: only the recording can answer them.
                    let cmp = |c: &RecordedCall| compare(&cmd, byte, c);
                    match self.dest.try_take(cmp) {
                        Some(c) if !c.truncated => self.send_recorded(&c.response),
                        Some(_) => {
                            let miss = self.dest.miss(&actual, TRUNCATED);
                            self.miss_err(&miss);
                        }
                        None => {
                            let miss = self.dest.miss(&actual, SESSION_MISSING);
                            self.miss_err(&miss);
                        }
                    }
                } else {
                    self.answer(&cmd, byte, &actual, false, |_| {});
                }
            }
            com::STMT_PREPARE => self.prepare(p),
            com::STMT_EXECUTE => self.execute(p),
            com::STMT_CLOSE => {
                if let Some(id) = p.get(1..5) {
                    let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
                    self.stmts.remove(&id);
                }
            }
            com::STMT_SEND_LONG_DATA => {
                // No answer; the data is not matched (docs: limitations).
            }
            com::STMT_RESET => self.ok(1),
            com::PING | com::INIT_DB => {
                self.answer(&Cmd::Other(p), byte, my::command_name(byte), true, |s| {
                    s.ok(1)
                });
            }
            com::RESET_CONNECTION => {
                self.stmts.clear();
                self.answer(&Cmd::Other(p), byte, my::command_name(byte), true, |s| {
                    s.ok(1)
                });
            }
            com::SET_OPTION => {
                self.answer(&Cmd::Other(p), byte, "COM_SET_OPTION", true, |s| {
                    let mut e = vec![0xFE, 0, 0];
                    e.extend_from_slice(&s.status.to_le_bytes());
                    push_packet(&mut s.out, 1, &e);
                });
            }
            _ => {
                let what = my::command_name(byte);
                self.answer(&Cmd::Other(p), byte, what, false, |_| {});
            }
        }
    }

    /// Answers from the matching recorded call. `by_rule`: session traffic the protocol
    /// answers without data when the recording does not hold it (no miss).
    fn answer(
        &mut self,
        cmd: &Cmd<'_>,
        byte: u8,
        actual: &str,
        session: bool,
        by_rule: impl FnOnce(&mut Self),
    ) -> Option<RecordedCall> {
        let cmp = |c: &RecordedCall| compare(cmd, byte, c);
        let taken = if session {
            match self.dest.try_take(cmp) {
                Some(c) => Ok(c),
                None => {
                    self.dest
                        .answered_by_rule(actual, "OK without data (session command)");
                    by_rule(self);
                    return None;
                }
            }
        } else {
            self.dest.take(actual, cmp)
        };
        match taken {
            Ok(c) if c.truncated => {
                let miss = self.dest.miss(actual, TRUNCATED);
                self.miss_err(&miss);
                None
            }
            Ok(c) => {
                if !matches!(cmd, Cmd::Prepare(_)) {
                    self.send_recorded(&c.response);
                }
                Some(c)
            }
            Err(miss) => {
                self.miss_err(&miss);
                None
            }
        }
    }

    /// Sends recorded packets, remembering the last status flags.
    fn send_recorded(&mut self, bytes: &[u8]) {
        if let Some(&(_, last)) = packets(bytes).last() {
            match last.first() {
                Some(0x00) => {
                    if let Some(ok) = my::parse_ok(last) {
                        self.status = ok.status;
                    }
                }
                Some(0xFE) if last.len() < 9 => {
                    if let Some((_, status)) = my::parse_eof(last) {
                        self.status = status;
                    }
                }
                _ => {}
            }
        }
        self.out.extend_from_slice(bytes);
    }

    fn prepare(&mut self, p: &[u8]) {
        let sql = sql_of(p);
        let Some(c) = self.answer(
            &Cmd::Prepare(sql.clone()),
            com::STMT_PREPARE,
            &one_line(&sql, 300),
            false,
            |_| {},
        ) else {
            return;
        };
        let mut resp = c.response.clone();
        let first = packets(&resp).first().map(|&(at, pl)| (at, pl.to_vec()));
        if let Some((at, pl)) = first
            && pl.first() == Some(&0x00)
            && pl.len() >= 12
        {
            let id = self.next_id;
            self.next_id += 1;
            // The recorded statement id is the recording server's: hand out ours.
            resp[at + 1..at + 5].copy_from_slice(&id.to_le_bytes());
            let num_params = usize::from(u16::from_le_bytes([pl[7], pl[8]]));
            self.stmts.insert(
                id,
                Stmt {
                    sql,
                    num_params,
                    types: None,
                },
            );
        }
        self.send_recorded(&resp);
    }

    fn execute(&mut self, p: &[u8]) {
        let Some(idb) = p.get(1..5) else {
            return self.malformed("COM_STMT_EXECUTE", p, 1);
        };
        let id = u32::from_le_bytes([idb[0], idb[1], idb[2], idb[3]]);
        let Some(stmt) = self.stmts.get(&id).cloned() else {
            let miss = self.dest.miss(
                &format!("COM_STMT_EXECUTE statement {id}"),
                "unknown statement id (never prepared on this connection)",
            );
            return self.miss_err(&miss);
        };
        let Some(ex) = my::parse_execute(p, Some(stmt.num_params), stmt.types.as_deref()) else {
            return self.malformed("COM_STMT_EXECUTE", p, 1);
        };
        if let Some(t) = &ex.types
            && let Some(s) = self.stmts.get_mut(&id)
        {
            s.types = Some(t.clone());
        }
        let actual = format!(
            "{} {}",
            one_line(&stmt.sql, 240),
            Value::Array(ex.params.clone())
        );
        let cmd = Cmd::Execute {
            sql: &stmt.sql,
            params: ex.params,
        };
        self.answer(&cmd, com::STMT_EXECUTE, &actual, false, |_| {});
    }
}

#[cfg(test)]
mod tests;

impl super::WireSession for Session {
    fn feed(&mut self, buf: &mut BytesMut) {
        Session::feed(self, buf);
    }
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn closed(&self) -> bool {
        self.closed
    }
    fn take_tls_upgrade(&mut self) -> Option<super::TlsStart> {
        std::mem::take(&mut self.tls_upgrade).then_some(super::TlsStart::Immediate)
    }
    fn destination(&self) -> &Destination {
        &self.dest
    }
}
