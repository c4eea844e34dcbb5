//! MongoDB wire protocol, client side: one [`DbCall`](crate::protocols::db::DbCall) per
//! request/reply pair with the command and reply documents as relaxed Extended JSON. See
//! `docs/protocols/mongodb.md`.
pub mod bson;
mod conn;
pub mod detect;
pub mod redact;
#[cfg(test)]
mod tests;

pub use conn::{
    MAX_MESSAGE, MIN_MESSAGE, MongoOptions, MongoParser, OP_COMPRESSED, OP_DELETE, OP_GET_MORE,
    OP_INSERT, OP_KILL_CURSORS, OP_MSG, OP_QUERY, OP_REPLY, OP_UPDATE, crc32c, header_ok,
};

use super::http::types::Side;
use super::{Protocol, Replay, Spec};

/// MongoDB in the registry (client connections of the traced process).
pub static SPEC: Spec = Spec {
    protocol: Protocol::Mongodb,
    name: "mongodb",
    label: "MongoDB",
    aliases: &["mongo", "motor", "pymongo"],
    event_type: "db.query",
    sides: &[Side::Client],
    detect: |egress, ingress, _side| detect::detect_mongodb(egress, ingress),
    parser: |_side, limits| {
        Box::new(MongoParser::new(MongoOptions {
            max_bytes: limits.max_body,
        }))
    },
    redact: super::redact::Redaction::Hook(redact::redact),
    replay: Replay::NotReplayable("no MongoDB mock yet: its calls are listed as not replayable"),
};
