//! What every database / cache protocol parser produces: one [`DbCall`] per request/response
//! exchange (a statement execution, a command), plus session-level facts. The correlator
//! attributes a call by its first request byte (thread, time), exactly like an HTTP call.
//!
//! A parser is client-side: the traced process connected to the server. Each protocol folder
//! (`postgres/`, `mysql/`, `redis/`, `mongodb/`) exposes a type implementing [`DbParser`].
use bytes::Bytes;

use super::http::types::Mark;
use super::{ProtoEvent, Protocol};
use crate::reassembly::Segment;

/// One request/response exchange on a database or cache connection.
#[derive(Clone, Debug, PartialEq)]
pub struct DbCall {
    pub protocol: Protocol,
    /// Index of the call on its connection (0-based, request order).
    pub index: u64,
    /// Short verb for listings and `signature.method`: the first SQL keyword (`SELECT`), the
    /// Redis command (`GET`), the MongoDB command name (`find`).
    pub method: String,
    /// The protocol's own description of the call, documented per protocol in
    /// `docs/protocols/<name>.md` and `docs/cassette-format.md` (SQL text, parameters, row
    /// description, rows, command tag; Redis arguments and reply; ...). Secrets already removed.
    pub detail: serde_json::Value,
    /// Error summary when the server answered with an error (SQLSTATE + message, MySQL code,
    /// Redis `-ERR ...`), else `None`.
    pub error: Option<String>,
    /// The request as it was on the wire (capped), for byte-exact replay. Credentials removed.
    pub raw_request: Bytes,
    /// The response as it was on the wire (capped), for byte-exact replay.
    pub raw_response: Bytes,
    /// `raw_request` / `raw_response` were cut at the cap.
    pub raw_truncated: bool,
    /// Session-level traffic (handshake, authentication, `SET`, ping, `HELLO`, type
    /// introspection) rather than work a request asked for. Still attributed when it happens
    /// inside a request; replay answers it whenever asked.
    pub session_level: bool,
    pub request_first: Mark,
    pub request_last: Mark,
    pub response_first: Option<Mark>,
    pub response_last: Option<Mark>,
}

/// What a protocol parser reports, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum DbEvent {
    /// A complete exchange (or one ended by close / gap, with `response_*` = `None`).
    Call(Box<DbCall>),
    /// Facts about the session a fresh client would need at replay time (server version,
    /// parameter statuses, authentication outcome — never the secret), as they become known;
    /// `missing` lists what was not seen because tracing started mid-session.
    Session {
        protocol: Protocol,
        facts: serde_json::Value,
        missing: Vec<String>,
    },
    /// Bytes that could not be used (gap resync, garbage); counted by the agent.
    Skipped {
        egress: bool,
        bytes: u64,
        reason: &'static str,
    },
}

/// A client-side protocol parser for one connection.
pub trait DbParser: Send {
    /// Feeds one in-order segment; `egress` = bytes the traced (client) process wrote.
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<DbEvent>);
    /// The connection closed (or tracing stopped).
    fn close(&mut self, out: &mut Vec<DbEvent>);
    /// Which protocol this parser speaks.
    fn protocol(&self) -> Protocol;
}

/// Every database parser is a registry [`super::Parser`]: its events are [`ProtoEvent::Db`].
impl<P: DbParser> super::Parser for P {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<ProtoEvent>) {
        let mut evs = Vec::new();
        DbParser::feed(self, egress, seg, &mut evs);
        out.extend(evs.into_iter().map(ProtoEvent::Db));
    }
    fn close(&mut self, _ts_ns: u64, out: &mut Vec<ProtoEvent>) {
        let mut evs = Vec::new();
        DbParser::close(self, &mut evs);
        out.extend(evs.into_iter().map(ProtoEvent::Db));
    }
    fn protocol(&self) -> Protocol {
        DbParser::protocol(self)
    }
}

/// Appends `src` to `dst` without letting `dst` grow past `cap` bytes; sets `truncated` when
/// bytes were left out. Shared by the parsers' raw-wire-byte capture.
pub(crate) fn push_capped(dst: &mut Vec<u8>, src: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(dst.len());
    if src.len() > room {
        *truncated = true;
    }
    dst.extend_from_slice(&src[..src.len().min(room)]);
}
