//! PostgreSQL mock server (protocol 3.0): answers the app's startup itself, then replays the
//! recorded backend messages of the matching recorded call, message by message.
//!
//! - Startup: `SSLRequest` → `S` and a TLS handshake with a certificate of the mock CA when
//!   the recording was TLS (the protocol then goes on inside TLS exactly as in plaintext),
//!   else `N`, as the recorded server answered; `GSSENCRequest` → `N`; `StartupMessage` → `AuthenticationOk`, one
//!   `ParameterStatus` per recorded parameter (`db_sessions[].facts.parameters`; defaults for
//!   what is missing, logged), `BackendKeyData`, `ReadyForQuery('I')`. No password is asked:
//!   a recorded SCRAM exchange cannot be replayed (the nonces differ).
//! - Work: the app's frontend messages are cut into the same units the recorder makes a call
//!   of (docs/protocols/postgres.md: a `Query`; extended messages up to an `Execute` plus the
//!   `Sync` right after it; or up to a `Sync`). A unit is matched against the recorded calls'
//!   `request` bytes decoded the same way: `Query` text, `Parse` SQL (statement names ignored:
//!   they differ between runs), `Bind` parameter formats and bytes, result formats, number of
//!   executions.
//! - Answers are the recorded backend messages, split per frontend message (`Parse` →
//!   `ParseComplete`, `Describe` → `ParameterDescription` + `RowDescription`/`NoData`, `Bind` →
//!   `BindComplete`, `Execute` → rows … `CommandComplete`, `Sync` → `ReadyForQuery`; notices,
//!   parameter statuses and notifications ride along; after an `ErrorResponse` the rest up to
//!   `Sync` is skipped, as the server does) and sent when the app's `Flush` / `Sync` asks for
//!   them. asyncpg sends `Parse, Describe, Flush` and waits before `Bind, Execute, Sync`: the
//!   `Parse` / `Describe` answers are then taken from a recorded call with the same SQL (they
//!   depend only on the statement), and the unit is matched once its `Execute` is known.
//! - A statement the recording executed without preparing it (the pool had it cached) is
//!   described from the recorded `param_types` / `columns` when no recorded `Describe` exists.
//! - A miss is an `ErrorResponse` (SQLSTATE `XX000`) whose message names the first differing
//!   field; the rest of the unit is skipped up to `Sync`, answered by `ReadyForQuery`: the
//!   connection stays usable. Malformed frontend bytes: a FATAL `08P01` and close.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::BytesMut;
use serde_json::Value;
use tokio_rustls::TlsAcceptor;

use super::Io;
use super::pg_rules;
use crate::protocols::postgres::parse::{self as pg, Frame, Kind};
use crate::protocols::postgres::redact::RecordedRedaction;
use crate::protocols::postgres::types::decode_value;
use crate::protocols::redact::sql::Dialect;
use crate::replay::ledger::{Destination, Diff, Miss, RecordedCall, one_line};

/// SQLSTATE of a replay miss: `internal_error`, which every driver maps to an error it raises
/// without dropping the connection.
const MISS_SQLSTATE: &str = "XX000";

/// Reason of a miss on a call whose recording was cut.
const TRUNCATED: &str =
    "the recorded response was truncated at the capture cap and cannot be replayed";

/// Why a session statement (answered whenever asked, from the recording) has no answer: the
/// recording lacks it. `None` for request work.
fn session_reason(sql: &str) -> Option<&'static str> {
    let lower = sql.to_ascii_lowercase();
    (pg::first_keyword(sql) == "SHOW" || lower.contains("pg_catalog") || lower.contains("pg_type"))
        .then_some(
            "session statement (SHOW, catalog or type introspection) not in the recording: \
             the connection was set up before recording started, or the driver changed",
        )
}

/// Serves one accepted connection until the app closes it.
///
/// # Errors
/// I/O errors of the connection.
pub async fn serve(dest: Arc<Destination>, io: impl Io + 'static) -> anyhow::Result<()> {
    serve_upgrading(dest, io, None).await
}

/// [`serve`], answering an `SSLRequest` with `S` and upgrading the connection with `tls`
/// when it is given (the recording was TLS).
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
    super::drive(&mut s, io, tls.as_ref()).await
}

/// One frontend message, decoded (the same decoder serves the app's bytes and the recorded
/// `request` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    Query(String),
    Parse(pg::Parse),
    Bind(pg::Bind),
    /// `Describe`: `S` statement / `P` portal.
    Describe(u8, String),
    Execute(String, i32),
    /// `Close`: `S` statement / `P` portal.
    Close(u8, String),
    Sync,
    Flush,
    Terminate,
    FunctionCall,
    /// `CopyData` / `CopyDone` / `CopyFail` and anything else: no answer of its own.
    Other(u8),
}

impl Front {
    fn decode(typ: u8, payload: &[u8]) -> Option<Self> {
        let mut r = pg::Reader::new(payload);
        Some(match typ {
            b'Q' => Self::Query(r.cstr()?),
            b'P' => Self::Parse(pg::parse_parse(payload)?),
            b'B' => Self::Bind(pg::parse_bind(payload)?),
            b'D' => {
                let kind = r.u8()?;
                Self::Describe(kind, r.cstr()?)
            }
            b'E' => {
                let portal = r.cstr()?;
                Self::Execute(portal, r.i32()?)
            }
            b'C' => {
                let kind = r.u8()?;
                Self::Close(kind, r.cstr()?)
            }
            b'S' => Self::Sync,
            b'H' => Self::Flush,
            b'X' => Self::Terminate,
            b'F' => Self::FunctionCall,
            t => Self::Other(t),
        })
    }

    /// Which frontend messages of a recorded call answer this one (`k`-th of its kind).
    fn same_kind(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Describe(a, _), Self::Describe(b, _))
            | (Self::Close(a, _), Self::Close(b, _)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// Splits frontend bytes into typed messages. `None` when they do not frame exactly (a
/// startup-phase recording, or garbage).
pub(crate) fn split_front(b: &[u8]) -> Option<Vec<Front>> {
    let mut out = Vec::new();
    let mut rest = b;
    while !rest.is_empty() {
        let Frame::Msg(Kind::Typed(t), len) = pg::frame_typed(rest, true) else {
            return None;
        };
        let len = usize::try_from(len).ok()?;
        let raw = rest.get(..len)?;
        out.push(Front::decode(t, raw.get(5..)?)?);
        rest = &rest[len..];
    }
    Some(out)
}

/// Splits backend bytes into `(type, whole message)`; stops at anything that does not frame.
pub(crate) fn split_back(b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = b;
    while let Frame::Msg(Kind::Typed(t), len) = pg::frame_typed(rest, false) {
        let Some(raw) = usize::try_from(len).ok().and_then(|l| rest.get(..l)) else {
            break;
        };
        out.push((t, raw));
        rest = &rest[raw.len()..];
    }
    out
}

/// The recorded backend messages answering each recorded frontend message, in order.
///
/// `Parse`/`Bind`/`Close` take one message, `Describe` statement a `ParameterDescription`
/// and the `RowDescription`/`NoData` after it, `Describe` portal one, `Execute` rows up to
/// `CommandComplete` / `EmptyQueryResponse` / `PortalSuspended` / `ErrorResponse`, `Sync`,
/// `Query` and `FunctionCall` everything up to `ReadyForQuery`. Notices, parameter statuses
/// and notifications ride along with whatever they arrive with. After an `ErrorResponse`
/// (extended protocol) the server skipped to `Sync`: the skipped messages get nothing.
pub(crate) fn segments(front: &[Front], back: &[(u8, &[u8])]) -> Vec<Vec<u8>> {
    let mut segs = vec![Vec::new(); front.len()];
    let mut bi = 0;
    let mut skipping = false;
    let mut last = None;
    for (fi, f) in front.iter().enumerate() {
        if matches!(f, Front::Flush | Front::Terminate | Front::Other(_)) {
            continue;
        }
        if skipping && *f != Front::Sync {
            continue;
        }
        skipping = false;
        last = Some(fi);
        while let Some(&(t, raw)) = back.get(bi) {
            bi += 1;
            segs[fi].extend_from_slice(raw);
            if matches!(t, b'N' | b'S' | b'A') {
                continue;
            }
            let until_ready = matches!(f, Front::Sync | Front::Query(_) | Front::FunctionCall);
            if t == b'E' && !until_ready {
                skipping = true;
                break;
            }
            let done = match f {
                Front::Describe(b'S', _) => t != b't',
                Front::Execute(..) => !matches!(t, b'D' | b'G' | b'H' | b'W' | b'd' | b'c'),
                _ if until_ready => t == b'Z',
                _ => true,
            };
            if done {
                break;
            }
        }
    }
    // Messages after the last answered frontend message (late notices) go with it.
    if let Some(fi) = last {
        for &(_, raw) in back.get(bi..).unwrap_or_default() {
            segs[fi].extend_from_slice(raw);
        }
    }
    segs
}

/// A recorded call decoded: its frontend messages (no `Flush`), the backend bytes answering
/// each, and its SQL.
struct Rec {
    msgs: Vec<Front>,
    segs: Vec<Vec<u8>>,
    sql: Option<String>,
    /// Parameter type OIDs (for showing values in a diff).
    param_types: Vec<u32>,
    /// What the recording hook redacted (`detail.redacted`): those literals and parameters
    /// match any value.
    red: RecordedRedaction,
}

impl Rec {
    fn decode(call: &RecordedCall) -> Option<Self> {
        let front = split_front(&call.request)?;
        let back = split_back(&call.response);
        let segs = segments(&front, &back);
        let (msgs, segs): (Vec<_>, Vec<_>) = front
            .into_iter()
            .zip(segs)
            .filter(|(m, _)| *m != Front::Flush)
            .unzip();
        let db = call.event.db.as_ref();
        let sql = msgs
            .iter()
            .find_map(|m| match m {
                Front::Parse(p) => Some(p.sql.clone()),
                Front::Query(q) => Some(q.clone()),
                _ => None,
            })
            .or_else(|| {
                db.and_then(|d| d.get("sql"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let param_types = msgs
            .iter()
            .find_map(|m| match m {
                Front::Parse(p) if !p.param_types.is_empty() => Some(p.param_types.clone()),
                _ => None,
            })
            .or_else(|| {
                db.and_then(|d| d.get("param_types"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
                            .collect()
                    })
            })
            .unwrap_or_default();
        Some(Self {
            msgs,
            segs,
            sql,
            param_types,
            red: RecordedRedaction::of(db),
        })
    }

    /// The answer recorded for the `k`-th message of `m`'s kind.
    fn answer(&self, m: &Front, k: usize) -> Option<&[u8]> {
        self.msgs
            .iter()
            .zip(&self.segs)
            .filter(|(r, _)| r.same_kind(m))
            .nth(k)
            .map(|(_, s)| s.as_slice())
    }

    fn query(&self) -> Option<&str> {
        self.msgs.iter().find_map(|m| match m {
            Front::Query(q) => Some(q.as_str()),
            _ => None,
        })
    }

    fn executes(&self) -> usize {
        self.msgs
            .iter()
            .filter(|m| matches!(m, Front::Execute(..)))
            .count()
    }

    fn binds(&self) -> impl Iterator<Item = &pg::Bind> {
        self.msgs.iter().filter_map(|m| match m {
            Front::Bind(b) => Some(b),
            _ => None,
        })
    }
}

/// The app's messages of one unit, and what they refer to.
struct Unit<'a> {
    msgs: &'a [Front],
    sql: Option<&'a str>,
}

impl Unit<'_> {
    fn query(&self) -> Option<&str> {
        self.msgs.iter().find_map(|m| match m {
            Front::Query(q) => Some(q.as_str()),
            _ => None,
        })
    }
    fn binds(&self) -> impl Iterator<Item = &pg::Bind> {
        self.msgs.iter().filter_map(|m| match m {
            Front::Bind(b) => Some(b),
            _ => None,
        })
    }
    fn executes(&self) -> usize {
        self.msgs
            .iter()
            .filter(|m| matches!(m, Front::Execute(..)))
            .count()
    }
}

fn show_param(oid: u32, format: i16, v: Option<&[u8]>) -> String {
    let v = decode_value(oid, format, v);
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The first semantic difference between the app's unit and a recorded call. `partial`: the
/// unit is not complete yet (answered at `Flush`): only what the app sent so far counts.
fn compare(app: &Unit<'_>, rec: &Rec, partial: bool) -> Result<(), Diff> {
    let unknown = "(statement prepared before the recording)";
    let sql_diff = |r: &str, a: &str| Err(Diff::new("sql", r, a).at_depth(Diff::text_depth(r, a)));
    match (app.query(), rec.query()) {
        (Some(a), Some(r)) => {
            return if rec.red.sql_matches(r, a, Dialect::Postgres) {
                Ok(())
            } else {
                sql_diff(r, a)
            };
        }
        (Some(a), None) => return sql_diff(rec.sql.as_deref().unwrap_or(unknown), a),
        (None, Some(r)) => return sql_diff(r, app.sql.unwrap_or(unknown)),
        (None, None) => {}
    }
    let same_sql = match (app.sql, rec.sql.as_deref()) {
        (Some(a), Some(r)) => rec.red.sql_matches(r, a, Dialect::Postgres),
        (a, r) => a == r,
    };
    if !same_sql {
        return sql_diff(
            rec.sql.as_deref().unwrap_or(unknown),
            app.sql.unwrap_or(unknown),
        );
    }
    let deeper = |n: usize| Diff::PARAMS_DEPTH.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    let abinds: Vec<_> = app.binds().collect();
    let rbinds: Vec<_> = rec.binds().collect();
    if !partial && abinds.len() != rbinds.len() {
        return Err(Diff::new("executions", rbinds.len(), abinds.len()).at_depth(deeper(0)));
    }
    for (k, a) in abinds.iter().enumerate() {
        let prefix = if k == 0 {
            String::new()
        } else {
            format!("binds[{k}].")
        };
        let Some(r) = rbinds.get(k) else {
            return Err(Diff::new("executions", rbinds.len(), abinds.len()).at_depth(deeper(0)));
        };
        if a.params.len() != r.params.len() {
            return Err(Diff::new(
                format!("{prefix}params"),
                format!("{} parameters", r.params.len()),
                format!("{} parameters", a.params.len()),
            )
            .at_depth(deeper(1)));
        }
        for (i, (av, rv)) in a.params.iter().zip(&r.params).enumerate() {
            let fa = pg::format_of(&a.param_formats, i);
            let fr = pg::format_of(&r.param_formats, i);
            let redacted = rec.red.params.contains(&i) && av.is_some() && rv.is_some();
            if fa != fr || (av != rv && !redacted) {
                let oid = rec.param_types.get(i).copied().unwrap_or(0);
                let mut expected = show_param(oid, fr, rv.as_deref());
                let mut actual = show_param(oid, fa, av.as_deref());
                if expected == actual {
                    expected = format!("{expected} ({} format)", fmt_name(fr));
                    actual = format!("{actual} ({} format)", fmt_name(fa));
                }
                let depth = deeper(2 + i);
                return Err(
                    Diff::new(format!("{prefix}params[{i}]"), expected, actual).at_depth(depth)
                );
            }
        }
        if a.result_formats != r.result_formats {
            return Err(Diff::new(
                format!("{prefix}result_formats"),
                format!("{:?}", r.result_formats),
                format!("{:?}", a.result_formats),
            )
            .at_depth(deeper(1)));
        }
    }
    let rexec = rec
        .msgs
        .iter()
        .filter(|m| matches!(m, Front::Execute(..)))
        .count();
    if !partial && app.executes() != rexec {
        return Err(Diff::new("executions", rexec, app.executes()).at_depth(deeper(0)));
    }
    Ok(())
}

fn fmt_name(f: i16) -> &'static str {
    if f == 1 { "binary" } else { "text" }
}

/// A unit in one line, for the journal: `SQL [params]`.
fn describe_unit(app: &Unit<'_>, param_types: &[u32]) -> String {
    if let Some(q) = app.query() {
        return one_line(q, 300);
    }
    let mut s = app
        .sql
        .map_or_else(|| "(unknown statement)".to_owned(), |q| one_line(q, 240));
    for b in app.binds() {
        let vals: Vec<String> = b
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let oid = param_types.get(i).copied().unwrap_or(0);
                decode_value(oid, pg::format_of(&b.param_formats, i), v.as_deref()).to_string()
            })
            .collect();
        let _ = write!(s, " [{}]", vals.join(", "));
    }
    s
}

/// One app message waiting for its answer.
#[derive(Debug)]
struct Pending {
    msg: Front,
    answered: bool,
}

/// The protocol state of one mocked connection. Pure: bytes in ([`Session::feed`]), bytes out
/// (`out`); the async loop only moves bytes.
pub(crate) struct Session {
    dest: Arc<Destination>,
    started: bool,
    /// Unanswered (or partly answered) messages of the current extended-protocol units.
    pending: Vec<Pending>,
    /// Statement name → SQL, from the app's `Parse` messages.
    stmts: HashMap<String, String>,
    /// Portal name → SQL, from the app's `Bind` messages (a cursor's later `Execute`s come
    /// alone).
    portals: HashMap<String, String>,
    /// `COPY … FROM STDIN` in progress: the recorded answer after `CopyInResponse`, sent at
    /// the app's `CopyDone`.
    copy_rest: Option<Vec<u8>>,
    /// Transaction status of the last `ReadyForQuery` sent.
    tx: u8,
    /// An `ErrorResponse` was sent in the extended protocol: skip to `Sync`.
    errored: bool,
    /// The app's startup parameters (`user`, `database`, ...).
    client: Vec<(String, String)>,
    /// The parameter statuses announced at startup (recorded, else defaults).
    server: Vec<(String, String)>,
    pub(crate) out: Vec<u8>,
    pub(crate) closed: bool,
    /// `SSLRequest` is answered `S` (the recording was TLS and a certificate is at hand).
    pub(crate) tls_offered: bool,
    /// `S` was sent: the transport must become TLS before the next byte is read.
    tls_upgrade: bool,
    /// The transport is TLS already (a second `SSLRequest` is a protocol violation).
    tls_done: bool,
}

impl Session {
    pub(crate) fn new(dest: Arc<Destination>) -> Self {
        Self {
            tls_offered: false,
            tls_upgrade: false,
            tls_done: false,
            dest,
            started: false,
            pending: Vec::new(),
            stmts: HashMap::new(),
            portals: HashMap::new(),
            copy_rest: None,
            tx: b'I',
            errored: false,
            client: Vec::new(),
            server: Vec::new(),
            out: Vec::new(),
            closed: false,
        }
    }

    /// Consumes every complete message of `buf`, appending answers to `out`.
    pub(crate) fn feed(&mut self, buf: &mut BytesMut) {
        while !self.closed && !self.tls_upgrade {
            if self.started {
                match pg::frame_typed(buf, true) {
                    Frame::NeedMore => return,
                    Frame::Msg(Kind::Typed(t), len) => {
                        let Ok(len) = usize::try_from(len) else {
                            return self.malformed(buf);
                        };
                        if buf.len() < len {
                            return;
                        }
                        let raw = buf.split_to(len);
                        match Front::decode(t, &raw[5..]) {
                            Some(m) => self.on_message(m),
                            None => return self.malformed(&raw),
                        }
                    }
                    Frame::Msg(..) | Frame::Invalid => return self.malformed(buf),
                }
            } else {
                match pg::frame_untyped(buf) {
                    Frame::NeedMore => return,
                    Frame::Msg(kind, len) => {
                        let Ok(len) = usize::try_from(len) else {
                            return self.malformed(buf);
                        };
                        if buf.len() < len {
                            return;
                        }
                        let raw = buf.split_to(len);
                        self.on_startup(kind, &raw);
                    }
                    Frame::Invalid => return self.malformed(buf),
                }
            }
        }
    }

    fn malformed(&mut self, bytes: &[u8]) {
        let head: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let miss = self.dest.miss(
            &format!("malformed bytes {head}"),
            "malformed PostgreSQL frontend message: connection closed",
        );
        self.error_response("FATAL", "08P01", &miss_message(&miss), None);
        self.closed = true;
    }

    fn on_startup(&mut self, kind: Kind, raw: &[u8]) {
        match kind {
            Kind::SslRequest if self.tls_offered && !self.tls_done => {
                self.out.push(b'S');
                self.tls_upgrade = true;
                self.tls_done = true;
            }
            Kind::SslRequest | Kind::GssRequest => self.out.push(b'N'),
            Kind::Cancel => self.closed = true,
            Kind::Startup => {
                let params = pg::parse_startup(raw.get(8..).unwrap_or_default());
                self.startup(&params);
                self.started = true;
            }
            Kind::Typed(_) | Kind::Answer(_) => {}
        }
    }

    /// `AuthenticationOk`, the recorded parameter statuses, `BackendKeyData`,
    /// `ReadyForQuery`.
    fn startup(&mut self, client: &[(String, String)]) {
        push_msg(&mut self.out, b'R', &0i32.to_be_bytes());
        let mut params: Vec<(String, String)> = Vec::new();
        let mut pid = None;
        for f in &self.dest.facts {
            if let Some(p) = f.get("parameters").and_then(Value::as_object) {
                for (k, v) in p {
                    if let Some(v) = v.as_str()
                        && !params.iter().any(|(n, _)| n == k)
                    {
                        params.push((k.clone(), v.to_owned()));
                    }
                }
            }
            if let Some(v) = f.get("server_version").and_then(Value::as_str)
                && !params.iter().any(|(n, _)| n == "server_version")
            {
                params.push(("server_version".into(), v.to_owned()));
            }
            pid = pid.or_else(|| f.get("backend_pid").and_then(Value::as_i64));
        }
        let client_param = |k: &str| client.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // The server echoes the client's application_name.
        if let Some(app) = client_param("application_name") {
            params.retain(|(n, _)| n != "application_name");
            params.push(("application_name".into(), app));
        }
        let user = client_param("user").unwrap_or_default();
        let defaults = [
            ("server_version", "16.0"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "UTC"),
            ("is_superuser", "off"),
            ("session_authorization", user.as_str()),
            ("application_name", ""),
        ];
        let mut defaulted = Vec::new();
        for (k, v) in defaults {
            if !params.iter().any(|(n, _)| n == k) {
                params.push((k.to_owned(), v.to_owned()));
                defaulted.push(k);
            }
        }
        if !defaulted.is_empty() {
            tracing::info!(
                destination = %self.dest.addr,
                defaulted = ?defaulted,
                "Parameter statuses missing from the recording answered with defaults"
            );
        }
        self.client = client.to_vec();
        for (k, v) in &params {
            let mut p = Vec::with_capacity(k.len() + v.len() + 2);
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
            push_msg(&mut self.out, b'S', &p);
        }
        let rnd = uuid::Uuid::new_v4();
        let rnd = rnd.as_bytes();
        let pid = pid
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| i32::from_be_bytes([0, 1, rnd[0], rnd[1]]));
        let mut k = pid.to_be_bytes().to_vec();
        k.extend_from_slice(&rnd[4..8]);
        push_msg(&mut self.out, b'K', &k);
        self.ready(b'I');
        self.server = params;
    }

    /// The answer by rule of a statement no recorded call holds (`pg_rules`); `msgs`: the
    /// extended-protocol unit (its bound values).
    fn rule(&self, sql: &str, msgs: &[Front]) -> Option<pg_rules::Answer> {
        let bound: Vec<String> = msgs
            .iter()
            .filter_map(|m| match m {
                Front::Bind(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| b.params.iter().flatten())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        pg_rules::answer(sql, &self.server, &self.client, &bound)
    }

    /// Journals `rule` answering `call`.
    fn ruled(&self, call: &str, rule: &pg_rules::Answer) {
        self.dest.answered_by_rule(call, rule.rule);
    }

    fn ready(&mut self, status: u8) {
        push_msg(&mut self.out, b'Z', &[status]);
        self.tx = status;
    }

    /// Sends recorded answer bytes, tracking `ReadyForQuery` and errors.
    fn send_recorded(&mut self, bytes: &[u8]) {
        for (t, raw) in split_back(bytes) {
            if t == b'Z'
                && let Some(&s) = raw.get(5)
            {
                self.tx = s;
            }
            if t == b'E' {
                self.errored = true;
            }
        }
        self.out.extend_from_slice(bytes);
    }

    fn on_message(&mut self, m: Front) {
        match &m {
            Front::Terminate => {
                self.closed = true;
                return;
            }
            Front::Query(_) => {
                self.answer_pending(true);
                self.errored = false;
                self.query(&m);
                return;
            }
            Front::Parse(p) => {
                self.stmts.insert(p.name.clone(), p.sql.clone());
            }
            Front::Bind(b) => {
                if let Some(sql) = self.stmts.get(&b.statement).cloned() {
                    self.portals.insert(b.portal.clone(), sql);
                }
            }
            Front::Other(t) => {
                self.copy_message(*t, &m);
                return;
            }
            Front::FunctionCall => {
                let miss = self.dest.miss(
                    "FunctionCall",
                    "function calls are not replayed by the mock",
                );
                self.error_response("ERROR", MISS_SQLSTATE, &miss_message(&miss), Some(&miss));
                self.ready(self.tx);
                return;
            }
            _ => {}
        }
        let trigger = matches!(m, Front::Flush | Front::Sync);
        if m != Front::Flush {
            self.pending.push(Pending {
                msg: m,
                answered: false,
            });
        }
        if trigger {
            self.answer_pending(false);
        }
    }

    /// `CopyData` / `CopyDone` / `CopyFail` of a `COPY … FROM STDIN` (the data itself is not
    /// recorded, so not compared); anything else without an answer of its own is ignored.
    fn copy_message(&mut self, t: u8, m: &Front) {
        match (t, self.copy_rest.take()) {
            (b'd', rest) => self.copy_rest = rest,
            (b'c', Some(rest)) => self.send_recorded(&rest),
            (b'f', Some(rest)) => {
                if split_back(&rest).iter().any(|(t, _)| *t == b'E') {
                    self.send_recorded(&rest);
                } else {
                    // The recorded COPY succeeded; the app gave up: the server's answer.
                    self.error_response("ERROR", "57014", "COPY from stdin failed", None);
                    self.ready(self.failed_status());
                }
            }
            (_, rest) => {
                self.copy_rest = rest;
                tracing::debug!(message = ?m, "Frontend message ignored by the PostgreSQL mock");
            }
        }
    }

    /// A recorded `Query` answer: whole, or up to `CopyInResponse` (the rest at `CopyDone`).
    /// `COPY … TO STDOUT` cannot be replayed: the recorder does not store COPY data.
    fn replay_query(&mut self, text: &str, response: &[u8]) {
        let back = split_back(response);
        if back.iter().any(|(t, _)| matches!(t, b'H' | b'W')) {
            let miss = self.dest.miss(
                text,
                "COPY TO / replication data is not recorded (only counted), so not replayed",
            );
            self.error_response("ERROR", MISS_SQLSTATE, &miss_message(&miss), Some(&miss));
            self.ready(self.failed_status());
            return;
        }
        let mut at = 0;
        for (t, raw) in back {
            at += raw.len();
            if t == b'G' {
                self.send_recorded(&response[..at]);
                self.copy_rest = Some(response[at..].to_vec());
                return;
            }
        }
        self.send_recorded(response);
    }

    /// Simple-protocol `Query`: one recorded call answers it whole.
    fn query(&mut self, m: &Front) {
        let msgs = std::slice::from_ref(m);
        let Front::Query(text) = m else { return };
        let unit = Unit {
            msgs,
            sql: Some(text),
        };
        let cmp = |c: &RecordedCall| match Rec::decode(c) {
            Some(r) => compare(&unit, &r, false),
            None => Err(Diff::new("messages", "(undecodable recording)", "Query")),
        };
        let by_rule = self.rule(text, &[]);
        let taken = if by_rule.is_some() {
            self.dest.try_take(cmp).ok_or(None)
        } else if let Some(reason) = session_reason(text) {
            self.dest
                .try_take(cmp)
                .ok_or_else(|| Some(self.dest.miss(text, reason)))
        } else {
            self.dest
                .take(&describe_unit(&unit, &[]), cmp)
                .map_err(Some)
        };
        match taken {
            Ok(call) if call.truncated => {
                let miss = self.dest.miss(text, TRUNCATED);
                self.error_response("ERROR", MISS_SQLSTATE, &miss_message(&miss), None);
                self.ready(self.failed_status());
            }
            Ok(call) => self.replay_query(text, &call.response),
            Err(None) => {
                // A statement the recording does not hold (the pool connected before the
                // recorded requests) whose answer the protocol fixes.
                let Some(rule) = by_rule else { return };
                self.ruled(text, &rule);
                if !rule.columns.is_empty() {
                    push_msg(&mut self.out, b'T', &row_description(&rule.columns, &[]));
                }
                for row in &rule.rows {
                    push_msg(&mut self.out, b'D', &data_row(row));
                }
                push_msg(&mut self.out, b'C', &cstr(&rule.tag));
                self.ready(rule.tx.unwrap_or(self.tx));
            }
            Err(Some(miss)) => {
                self.error_response("ERROR", MISS_SQLSTATE, &miss_message(&miss), Some(&miss));
                self.ready(self.failed_status());
            }
        }
        self.errored = false;
    }

    fn failed_status(&self) -> u8 {
        if self.tx == b'I' { b'I' } else { b'E' }
    }

    /// Answers the pending messages up to here. `force`: something that is not part of the
    /// extended protocol arrived, so every unit ends now.
    fn answer_pending(&mut self, force: bool) {
        let pending = std::mem::take(&mut self.pending);
        let mut start = 0;
        while start < pending.len() {
            let mut end = None;
            for i in start..pending.len() {
                match pending[i].msg {
                    Front::Execute(..) => {
                        let next = pending.get(i + 1).map(|p| &p.msg);
                        end = Some(if next == Some(&Front::Sync) {
                            i + 2
                        } else {
                            i + 1
                        });
                        break;
                    }
                    Front::Sync => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            let complete = end.is_some() || force;
            let end = end.unwrap_or(pending.len());
            let unit = &pending[start..end];
            self.answer_unit(unit, complete);
            if !complete {
                // Answered up to here (Flush); the unit goes on with the next messages.
                self.pending = pending[start..]
                    .iter()
                    .map(|p| Pending {
                        msg: p.msg.clone(),
                        answered: true,
                    })
                    .collect();
                return;
            }
            start = end;
        }
    }

    fn unit_sql(&self, msgs: &[Front]) -> Option<String> {
        msgs.iter().find_map(|m| match m {
            Front::Parse(p) => Some(p.sql.clone()),
            Front::Bind(b) => self.stmts.get(&b.statement).cloned(),
            Front::Describe(b'S', n) => self.stmts.get(n).cloned(),
            Front::Describe(b'P', n) | Front::Execute(n, _) => self.portals.get(n).cloned(),
            _ => None,
        })
    }

    fn answer_unit(&mut self, unit: &[Pending], complete: bool) {
        let msgs: Vec<Front> = unit.iter().map(|p| p.msg.clone()).collect();
        let sql = self.unit_sql(&msgs);
        let app = Unit {
            msgs: &msgs,
            sql: sql.as_deref(),
        };
        let has_execute = app.executes() > 0;
        let rec_of = |c: &RecordedCall| Rec::decode(c);
        // The recorded call answering this unit.
        let partial_match =
            |c: &RecordedCall| rec_of(c).is_some_and(|r| compare(&app, &r, true).is_ok());
        // A unit without `Execute` (a prepare) uses up a recorded prepare of the statement;
        // an execution may only lend it its `Parse` / `Describe` answers.
        let take_prepare = |dest: &Destination| {
            dest.try_take(|c| match rec_of(c) {
                Some(r) if r.executes() == 0 => compare(&app, &r, true),
                Some(r) => Err(Diff::new("executions", r.executes(), 0)),
                None => Err(Diff::new("messages", "(undecodable recording)", "prepare")),
            })
        };
        let chosen: Result<Option<Rec>, Miss> = if self.errored {
            // An error already answered part of this unit (at `Flush`): the server skipped to
            // `Sync`, whose answer comes from a recorded call of the statement if there is one.
            let taken = if !complete {
                None
            } else if has_execute {
                self.dest.try_take(|c| match rec_of(c) {
                    Some(r) => compare(&app, &r, false),
                    None => Err(Diff::new("messages", "(undecodable recording)", "execute")),
                })
            } else {
                take_prepare(&self.dest)
            };
            Ok(taken
                .or_else(|| self.dest.find(partial_match))
                .and_then(|c| rec_of(&c)))
        } else if complete && has_execute {
            let cmp = |c: &RecordedCall| match rec_of(c) {
                Some(r) => compare(&app, &r, false),
                None => Err(Diff::new(
                    "messages",
                    "(undecodable recording)",
                    "extended query",
                )),
            };
            // Parameter types of the statement, to show the app's values decoded.
            let types = self
                .dest
                .find(|c| rec_of(c).is_some_and(|r| r.sql.is_some() && r.sql == sql))
                .and_then(|c| rec_of(&c))
                .map(|r| r.param_types)
                .unwrap_or_default();
            let actual = describe_unit(&app, &types);
            let rule = sql.as_deref().and_then(|q| self.rule(q, &msgs));
            let taken = match (&rule, sql.as_deref().and_then(session_reason)) {
                (Some(_), _) => self.dest.try_take(cmp).ok_or(None),
                (None, Some(reason)) => self
                    .dest
                    .try_take(cmp)
                    .ok_or_else(|| Some(self.dest.miss(&actual, reason))),
                (None, None) => self.dest.take(&actual, cmp).map_err(Some),
            };
            match (taken, rule) {
                (Ok(c), _) if c.truncated => Err(self.dest.miss(&actual, TRUNCATED)),
                (Ok(c), _) => Ok(rec_of(&c)),
                (Err(None), Some(rule)) => {
                    self.ruled(&actual, &rule);
                    Ok(Some(rule_rec(&msgs, &rule, self.tx)))
                }
                (Err(m), _) => Err(m.unwrap_or_else(|| {
                    self.dest
                        .miss(&actual, "no recorded call and no rule answers it")
                })),
            }
        } else if sql.is_some() {
            // A prepare (or the part of a unit before `Flush`): any recorded call of the same
            // statement answers `Parse` / `Describe`.
            let partial = |c: &RecordedCall| {
                rec_of(c).is_some_and(|r| compare(&app, &r, true).is_ok() && !c.truncated)
            };
            let taken = if complete {
                take_prepare(&self.dest)
            } else {
                None
            };
            let rule = sql.as_deref().and_then(|q| self.rule(q, &msgs));
            match taken.or_else(|| self.dest.find(partial)) {
                Some(c) => Ok(rec_of(&c)),
                // Its execution (the next unit) is journaled as answered by the rule.
                None if rule.is_some() => Ok(rule.map(|r| rule_rec(&msgs, &r, self.tx))),
                None => {
                    let cmp = |c: &RecordedCall| match rec_of(c) {
                        Some(r) => compare(&app, &r, true),
                        None => Err(Diff::new("messages", "(undecodable recording)", "prepare")),
                    };
                    match self.dest.take(&describe_unit(&app, &[]), cmp) {
                        Ok(c) => Ok(rec_of(&c)),
                        Err(m) => Err(m),
                    }
                }
            }
        } else {
            // `Close`, `Describe` portal, bare `Sync`: answered by the protocol's rules.
            Ok(None)
        };
        let rec = match chosen {
            Ok(r) => r,
            Err(miss) => {
                if !self.errored {
                    self.error_response("ERROR", MISS_SQLSTATE, &miss_message(&miss), Some(&miss));
                    self.errored = true;
                }
                if unit.iter().any(|p| p.msg == Front::Sync) {
                    self.ready(self.failed_status());
                    self.errored = false;
                }
                return;
            }
        };
        let mut seen: Vec<(Front, usize)> = Vec::new();
        for p in unit {
            let k = match seen.iter_mut().find(|(m, _)| m.same_kind(&p.msg)) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    seen.push((p.msg.clone(), 0));
                    0
                }
            };
            if p.answered {
                continue;
            }
            if self.errored {
                if p.msg == Front::Sync {
                    self.errored = false;
                    match rec.as_ref().and_then(|r| r.answer(&p.msg, k)) {
                        Some(a) if !a.is_empty() => self.send_recorded(a),
                        _ => self.ready(self.failed_status()),
                    }
                }
                continue;
            }
            let recorded = rec
                .as_ref()
                .and_then(|r| r.answer(&p.msg, k))
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec);
            match recorded {
                Some(a) => self.send_recorded(&a),
                None => self.answer_by_rule(&p.msg, sql.as_deref()),
            }
        }
    }

    /// The answer to a message the matched recording does not hold (the statement was
    /// prepared in another recorded call, or before recording): from another recorded call of
    /// the same statement, else built from the recorded description, else the protocol's
    /// fixed answer.
    fn answer_by_rule(&mut self, m: &Front, sql: Option<&str>) {
        match m {
            Front::Parse(_) => push_msg(&mut self.out, b'1', &[]),
            Front::Bind(_) => push_msg(&mut self.out, b'2', &[]),
            Front::Close(..) => push_msg(&mut self.out, b'3', &[]),
            Front::Sync => self.ready(self.tx),
            Front::Describe(kind, _) => {
                let Some(sql) = sql else {
                    push_msg(&mut self.out, b'n', &[]);
                    return;
                };
                let with_describe = |c: &RecordedCall| {
                    Rec::decode(c).is_some_and(|r| {
                        r.sql.as_deref() == Some(sql)
                            && r.answer(m, 0).is_some_and(|a| !a.is_empty())
                    })
                };
                if let Some(r) = self.dest.find(with_describe).and_then(|c| Rec::decode(&c))
                    && let Some(a) = r.answer(m, 0)
                {
                    let a = a.to_vec();
                    self.send_recorded(&a);
                    return;
                }
                let described = |c: &RecordedCall| {
                    Rec::decode(c).is_some_and(|r| r.sql.as_deref() == Some(sql))
                        && c.event
                            .db
                            .as_ref()
                            .is_some_and(|d| d.get("columns").is_some())
                };
                let call = self.dest.find(described);
                let db = call.as_ref().and_then(|c| c.event.db.as_ref());
                let bytes = describe_from_detail(*kind, db);
                self.out.extend_from_slice(&bytes);
            }
            Front::Execute(..) => {
                // Unreachable with a matched recording (executions are compared).
                push_msg(&mut self.out, b'I', &[]);
            }
            _ => {}
        }
    }

    fn error_response(&mut self, severity: &str, code: &str, message: &str, miss: Option<&Miss>) {
        let mut p = Vec::new();
        let mut field = |c: u8, v: &str| {
            p.push(c);
            p.extend(v.bytes().filter(|&b| b != 0));
            p.push(0);
        };
        field(b'S', severity);
        field(b'V', severity);
        field(b'C', code);
        field(b'M', message);
        if let Some(m) = miss
            && let Some(e) = &m.expected
        {
            field(b'D', &format!("closest recorded call: {e}"));
        }
        field(
            b'H',
            "the app sent a call the cassettes do not hold (see the replay verdict)",
        );
        p.push(0);
        push_msg(&mut self.out, b'E', &p);
    }
}

/// `ParameterDescription` + `RowDescription` (statement) or `RowDescription` (portal) built
/// from a recorded call's `param_types` and `columns`; `NoData` when no columns were recorded.
fn describe_from_detail(kind: u8, db: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::new();
    if kind == b'S' {
        let types: Vec<u32> = db
            .and_then(|d| d.get("param_types"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        let mut p = i16::try_from(types.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        for t in types {
            p.extend_from_slice(&t.to_be_bytes());
        }
        push_msg(&mut out, b't', &p);
    }
    let cols = db
        .and_then(|d| d.get("columns"))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let Some(cols) = cols else {
        push_msg(&mut out, b'n', &[]);
        return out;
    };
    let result_formats: Vec<i16> = db
        .and_then(|d| d.get("result_formats"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_i64().and_then(|n| i16::try_from(n).ok()).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let num = |c: &Value, k: &str| c.get(k).and_then(Value::as_i64).unwrap_or(0);
    let mut p = i16::try_from(cols.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    for (i, c) in cols.iter().enumerate() {
        p.extend_from_slice(
            c.get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .as_bytes(),
        );
        p.push(0);
        p.extend_from_slice(&(num(c, "table_oid") as u32).to_be_bytes());
        p.extend_from_slice(&(num(c, "column") as i16).to_be_bytes());
        p.extend_from_slice(&(num(c, "type_oid") as u32).to_be_bytes());
        p.extend_from_slice(&(num(c, "type_size") as i16).to_be_bytes());
        p.extend_from_slice(&(num(c, "type_modifier") as i32).to_be_bytes());
        // A statement's description has text formats; a portal's those of its Bind.
        let format = if kind == b'S' {
            0
        } else {
            pg::format_of(&result_formats, i)
        };
        p.extend_from_slice(&format.to_be_bytes());
    }
    push_msg(&mut out, b'T', &p);
    out
}

/// A recorded-call shape for a rule's answer to the app's extended-protocol `msgs`, so it is
/// sent like a recording: one answer per message.
fn rule_rec(msgs: &[Front], rule: &pg_rules::Answer, tx: u8) -> Rec {
    let msgs: Vec<Front> = msgs
        .iter()
        .filter(|m| **m != Front::Flush)
        .cloned()
        .collect();
    let mut formats: Vec<i16> = Vec::new();
    let mut sql = None;
    let mut param_types: Vec<u32> = Vec::new();
    let mut segs = Vec::with_capacity(msgs.len());
    let describe = |seg: &mut Vec<u8>, formats: &[i16]| {
        if rule.columns.is_empty() {
            push_msg(seg, b'n', &[]);
        } else {
            push_msg(seg, b'T', &row_description(&rule.columns, formats));
        }
    };
    for m in &msgs {
        let mut seg = Vec::new();
        match m {
            Front::Parse(p) => {
                push_msg(&mut seg, b'1', &[]);
                sql = Some(p.sql.clone());
                param_types.clone_from(&p.param_types);
            }
            Front::Bind(b) => {
                push_msg(&mut seg, b'2', &[]);
                formats.clone_from(&b.result_formats);
            }
            Front::Describe(b'S', _) => {
                let n = sql.as_deref().map_or(param_types.len(), placeholders);
                let mut p = i16::try_from(n).unwrap_or(0).to_be_bytes().to_vec();
                for i in 0..n {
                    // An unspecified type is `text`: rules answer lookups by name.
                    let t = param_types
                        .get(i)
                        .copied()
                        .filter(|&t| t != 0)
                        .unwrap_or(25);
                    p.extend_from_slice(&t.to_be_bytes());
                }
                push_msg(&mut seg, b't', &p);
                describe(&mut seg, &[]);
            }
            Front::Describe(..) => describe(&mut seg, &formats),
            Front::Execute(..) => {
                for row in &rule.rows {
                    push_msg(&mut seg, b'D', &data_row(row));
                }
                push_msg(&mut seg, b'C', &cstr(&rule.tag));
            }
            Front::Close(..) => push_msg(&mut seg, b'3', &[]),
            Front::Sync => push_msg(&mut seg, b'Z', &[rule.tx.unwrap_or(tx)]),
            _ => {}
        }
        segs.push(seg);
    }
    Rec {
        msgs,
        segs,
        sql,
        param_types,
        red: RecordedRedaction::default(),
    }
}

/// The highest `$n` placeholder of `sql`.
fn placeholders(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// `RowDescription` of a rule's columns (no table; result formats as the app bound them).
fn row_description(columns: &[pg_rules::Column], formats: &[i16]) -> Vec<u8> {
    let mut p = i16::try_from(columns.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    for (i, c) in columns.iter().enumerate() {
        p.extend_from_slice(c.name.as_bytes());
        p.push(0);
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0i16.to_be_bytes());
        p.extend_from_slice(&c.type_oid.to_be_bytes());
        let size: i16 = if c.type_oid == 26 { 4 } else { -1 };
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&pg::format_of(formats, i).to_be_bytes());
    }
    p
}

/// `DataRow` of text values (a rule's values are `text` / `name`: the same bytes in either
/// format).
fn data_row(values: &[String]) -> Vec<u8> {
    let mut p = i16::try_from(values.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    for v in values {
        p.extend_from_slice(&i32::try_from(v.len()).unwrap_or(0).to_be_bytes());
        p.extend_from_slice(v.as_bytes());
    }
    p
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn push_msg(out: &mut Vec<u8>, t: u8, payload: &[u8]) {
    out.push(t);
    let len = u32::try_from(payload.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// `timetracer replay: no recorded call matches …: params[0]: expected 1, got 2`.
pub(crate) fn miss_message(m: &Miss) -> String {
    let mut s = format!("timetracer replay: no recorded call matches {}", m.call);
    if let (Some(f), Some(e), Some(a)) = (&m.field, &m.expected_value, &m.actual_value) {
        let _ = write!(s, ": {f}: expected {e}, got {a}");
    }
    if let Some(r) = &m.reason {
        let _ = write!(s, " ({r})");
    }
    s
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
        std::mem::take(&mut self.tls_upgrade).then_some(super::TlsStart::AfterAnswer)
    }
    fn destination(&self) -> &Destination {
        &self.dest
    }
}
