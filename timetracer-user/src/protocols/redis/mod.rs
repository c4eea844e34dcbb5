//! Redis (RESP2/RESP3) on the wire, client side: one [`DbCall`](crate::protocols::db::DbCall)
//! per command with its arguments and reply. See `docs/protocols/redis.md`.
mod conn;
pub mod detect;
mod input;
pub mod redact;
pub mod resp;
#[cfg(test)]
mod tests;

pub(crate) use conn::TWO_WORD;
pub use conn::{REDACTED, RedisOptions, RedisParser};
pub use input::split_inline;
pub(crate) use input::{Verdict, command_start, reply_start};

use super::http::types::Side;
use super::{Protocol, Replay, Spec};

/// Redis in the registry (client connections of the traced process).
pub static SPEC: Spec = Spec {
    protocol: Protocol::Redis,
    name: "redis",
    label: "Redis",
    aliases: &["valkey"],
    event_type: "redis",
    sides: &[Side::Client],
    detect: |egress, ingress, _side| detect::detect_redis(egress, ingress),
    parser: |_side, limits| {
        Box::new(RedisParser::new(RedisOptions {
            max_bytes: limits.max_body,
        }))
    },
    redact: super::redact::Redaction::Hook(redact::redact),
    replay: Replay::Mocked,
};
