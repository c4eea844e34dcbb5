//! Wire protocols: one folder per protocol with pure, I/O-free detection and parsing, and the
//! one registry that lists them ([`REGISTRY`]).
//!
//! Each protocol exports one [`Spec`]: how to recognise it from a connection's first bytes, a
//! [`Parser`] for one connection built with the recording's [`Limits`], the cassette event type
//! it produces, the names users and the Python tool call it by, and whether replay can mock it.
//! The connection layer tries the registry in order to decide a connection's protocol; replay,
//! the dashboard and the TUI name and classify events through it. Adding a protocol = a folder
//! with a `SPEC`, one line in [`REGISTRY`], one variant of [`Protocol`] (the compiler then
//! names every `match` that must learn it: the replay mocks), and the conformance suite
//! (`protocols/conformance.rs`) runs it through the shared properties.
//!
//! Redaction: each spec names where its secrets are redacted ([`redact::Redaction`]). The
//! database protocols have a hook the connection layer runs on every event before it leaves
//! that layer (values bound to secret columns, secret rows, Redis values of secret keys,
//! document fields — in `detail` and, same length, in the wire bytes); HTTP messages are
//! redacted by the cassette builder, which has their message model. Credentials (AUTH
//! arguments, password messages, SASL payloads) are removed by the parsers themselves,
//! whatever the policy says.
pub(crate) mod cursor;
pub mod db;
pub mod detect;
pub mod http;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redact;
pub mod redis;

#[cfg(test)]
mod conformance;

use serde::Serialize;

use self::db::DbEvent;
use self::http::types::{HttpEvent, Side};
use crate::reassembly::Segment;

/// Every protocol the recorder understands. The order is the registry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Postgres,
    Mysql,
    Redis,
    Mongodb,
}

/// The recording's limits, given to every parser it builds (`--max-body`, `max_body_kb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes kept of each body, value, row set and raw wire message; the rest is counted and
    /// the event is marked truncated.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body: 1 << 20 }
    }
}

/// What any parser reports, in stream order.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived, moved once per parsed message"
)]
pub enum ProtoEvent {
    Http(HttpEvent),
    Db(DbEvent),
}

impl ProtoEvent {
    /// Bytes the parser could not use (gap resync, garbage), if this event reports some.
    #[must_use]
    pub fn skipped_bytes(&self) -> Option<u64> {
        match self {
            Self::Http(HttpEvent::Skipped { bytes, .. })
            | Self::Db(DbEvent::Skipped { bytes, .. }) => Some(*bytes),
            _ => None,
        }
    }
}

/// One connection's parser, fed by the connection layer.
pub trait Parser: Send {
    /// Feeds one in-order segment (data or a gap); `egress` = bytes the traced process wrote.
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<ProtoEvent>);
    /// The connection closed (or tracing stopped) at `ts_ns`: report what is still open.
    fn close(&mut self, ts_ns: u64, out: &mut Vec<ProtoEvent>);
    /// Which protocol this parser speaks.
    fn protocol(&self) -> Protocol;
}

/// Can `timetracer replay` answer this protocol's calls?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// A mock server answers from the recorded calls (`replay/mock/<name>.rs`).
    Mocked,
    /// Recorded and shown, but a replay reports its calls as not replayable, with this reason.
    NotReplayable(&'static str),
}

/// Everything the rest of the product needs to know about one protocol.
#[derive(Debug)]
pub struct Spec {
    pub protocol: Protocol,
    /// Lower-case name: cassettes (`signature.lib`), `--mock` / `--live`, verdicts.
    pub name: &'static str,
    /// Human label (dashboard, TUI).
    pub label: &'static str,
    /// Other names a user or a cassette may use for it: client libraries, the Python tool's
    /// plugin names (`asyncpg`, `psycopg2`, `requests`, ...).
    pub aliases: &'static [&'static str],
    /// Cassette `events[].type` of a dependency call of this protocol.
    pub event_type: &'static str,
    /// The sides of a connection it is parsed on: HTTP on both (inbound requests and calls),
    /// the database protocols on the client side (the traced process called them).
    pub sides: &'static [Side],
    /// Does a connection carry this protocol? From the first bytes seen of each direction
    /// (egress = written by the traced process): `Some(true)`, `Some(false)`, or `None` = tell
    /// me again with more bytes. Never looks at ports.
    pub detect: fn(first_egress: &[u8], first_ingress: &[u8], side: Side) -> Option<bool>,
    /// A parser for one connection.
    pub parser: fn(side: Side, limits: &Limits) -> Box<dyn Parser>,
    /// Where the user's redaction policy is applied to this protocol's events.
    pub redact: redact::Redaction,
    pub replay: Replay,
}

/// Every protocol, in the order detection tries them.
pub static REGISTRY: [&Spec; 5] = [
    &http::SPEC,
    &postgres::SPEC,
    &mysql::SPEC,
    &redis::SPEC,
    &mongodb::SPEC,
];

impl Protocol {
    /// This protocol's entry in the registry.
    #[must_use]
    pub fn spec(self) -> &'static Spec {
        // The registry is in enum order (a test checks it).
        REGISTRY[self as usize]
    }

    /// Lower-case name (`postgres`).
    #[must_use]
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Cassette event type of its dependency calls (`db.query`, `redis`, `http.client`).
    #[must_use]
    pub fn event_type(self) -> &'static str {
        self.spec().event_type
    }

    /// Every protocol.
    pub fn all() -> impl Iterator<Item = Protocol> {
        REGISTRY.iter().map(|s| s.protocol)
    }

    /// Every protocol replay mocks.
    pub fn replayable() -> impl Iterator<Item = Protocol> {
        REGISTRY
            .iter()
            .filter(|s| s.replay == Replay::Mocked)
            .map(|s| s.protocol)
    }

    /// A protocol by its name or one of its aliases, any case.
    #[must_use]
    pub fn parse(name: &str) -> Option<Protocol> {
        let n = name.to_ascii_lowercase();
        REGISTRY
            .iter()
            .find(|s| s.name == n || s.aliases.contains(&n.as_str()))
            .map(|s| s.protocol)
    }

    /// The protocol of a recorded dependency event: its `type`, then `signature.lib` where
    /// several protocols share a type (`db.query`). `None` for events of no known protocol
    /// (the Python tool's `db.query` with an ORM's name, a future event type).
    #[must_use]
    pub fn of_event(event_type: &str, lib: &str) -> Option<Protocol> {
        let sharing: Vec<&Spec> = REGISTRY
            .iter()
            .copied()
            .filter(|s| s.event_type == event_type)
            .collect();
        match sharing.as_slice() {
            [] => None,
            [only] => Some(only.protocol),
            _ => Protocol::parse(lib).filter(|p| p.spec().event_type == event_type),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a connection's first bytes show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The first registered protocol that parses on this side and recognised the bytes.
    Found(&'static Spec),
    /// None of ours: the connection's bytes are counted, not parsed.
    NoneOfOurs,
    /// Some protocol still needs more bytes to tell.
    NeedMore,
}

impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.protocol == other.protocol
    }
}
impl Eq for Spec {}

/// Which registered protocol a connection speaks, from the first bytes of each direction.
#[must_use]
pub fn detect(first_egress: &[u8], first_ingress: &[u8], side: Side) -> Detection {
    let mut undecided = false;
    for spec in REGISTRY {
        if !spec.sides.contains(&side) {
            continue;
        }
        match (spec.detect)(first_egress, first_ingress, side) {
            Some(true) => return Detection::Found(spec),
            Some(false) => {}
            None => undecided = true,
        }
    }
    if undecided {
        Detection::NeedMore
    } else {
        Detection::NoneOfOurs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_in_enum_order_and_names_are_unique() {
        for (i, s) in REGISTRY.iter().enumerate() {
            assert_eq!(s.protocol as usize, i, "{}", s.name);
            assert_eq!(s.protocol.spec().name, s.name);
        }
        let mut names: Vec<&str> = REGISTRY
            .iter()
            .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name or alias is used twice");
    }

    #[test]
    fn names_and_events() {
        assert_eq!(Protocol::parse("PostgreSQL"), Some(Protocol::Postgres));
        assert_eq!(Protocol::parse("asyncpg"), Some(Protocol::Postgres));
        assert_eq!(Protocol::parse("requests"), Some(Protocol::Http));
        assert_eq!(Protocol::parse("motor"), Some(Protocol::Mongodb));
        assert_eq!(Protocol::parse("sqlalchemy"), None);
        assert_eq!(Protocol::of_event("redis", ""), Some(Protocol::Redis));
        assert_eq!(
            Protocol::of_event("http.client", "httpx"),
            Some(Protocol::Http)
        );
        assert_eq!(
            Protocol::of_event("db.query", "mysql"),
            Some(Protocol::Mysql)
        );
        assert_eq!(
            Protocol::of_event("db.query", "mongodb"),
            Some(Protocol::Mongodb)
        );
        assert_eq!(Protocol::of_event("db.query", "sqlalchemy"), None);
        // A name of another type's protocol does not make a db.query of it.
        assert_eq!(Protocol::of_event("db.query", "redis"), None);
        assert_eq!(Protocol::of_event("celery.task", ""), None);
        let replayable: Vec<&str> = Protocol::replayable().map(Protocol::name).collect();
        assert_eq!(
            replayable,
            ["http", "postgres", "mysql", "redis", "mongodb"]
        );
        assert_eq!(
            serde_json::to_string(&Protocol::Mongodb).unwrap(),
            "\"mongodb\""
        );
    }
}
