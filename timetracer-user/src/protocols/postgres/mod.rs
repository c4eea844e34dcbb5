//! PostgreSQL frontend/backend protocol 3.0, client side: one [`DbCall`](crate::protocols::db::DbCall)
//! per statement execution (simple `Query`, or an extended-protocol group ending in `Execute`),
//! plus startup/authentication and session facts. Format of `detail`: `docs/protocols/postgres.md`.
pub mod detect;
pub mod parse;
pub mod redact;
pub mod stitch;
pub mod types;

pub use stitch::{MISSING_SQL, PgOptions, PgParser};

#[cfg(test)]
pub(crate) mod tests;

use super::http::types::Side;
use super::{Protocol, Replay, Spec};

/// PostgreSQL in the registry (client connections of the traced process).
pub static SPEC: Spec = Spec {
    protocol: Protocol::Postgres,
    name: "postgres",
    label: "PostgreSQL",
    aliases: &["postgresql", "pg", "asyncpg", "psycopg", "psycopg2"],
    event_type: "db.query",
    sides: &[Side::Client],
    detect: |egress, ingress, _side| detect::detect_pg(egress, ingress),
    parser: |_side, limits| {
        Box::new(PgParser::new(PgOptions {
            max_row_bytes: limits.max_body,
            max_raw: limits.max_body,
            ..PgOptions::default()
        }))
    },
    redact: super::redact::Redaction::Hook(redact::redact),
    replay: Replay::Mocked,
};
