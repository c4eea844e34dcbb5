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
    Command, MAX_MESSAGE, MIN_MESSAGE, MongoOptions, MongoParser, OP_COMPRESSED, OP_DELETE,
    OP_GET_MORE, OP_INSERT, OP_KILL_CURSORS, OP_MSG, OP_QUERY, OP_REPLY, OP_UPDATE, crc32c,
    decode_message, decompress, header_ok,
};

use std::fmt::Write as _;

use serde_json::{Map, Value};

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
    replay: Replay::Mocked,
};

/// Top-level command fields that change from run to run of the same code: the session id,
/// the gossiped cluster time, retryable-write counters, the time left of a client-side
/// timeout. Replay ignores them when matching; descriptions leave them out.
pub const PER_RUN_FIELDS: &[&str] = &["lsid", "$clusterTime", "txnNumber", "maxTimeMS"];

/// A command in one line: `find app.people {"filter":{"name":"ada"},"limit":5}` (its name,
/// database and collection, then its other fields without `$db` and [`PER_RUN_FIELDS`]).
#[must_use]
pub fn describe_command(doc: &Map<String, Value>, db: Option<&str>) -> String {
    let Some((name, target)) = doc.iter().next() else {
        return "(empty command)".to_owned();
    };
    let mut s = name.clone();
    // `getMore`'s value is the cursor id; its collection is a field of its own.
    let coll = target
        .as_str()
        .or_else(|| doc.get("collection").and_then(Value::as_str));
    match (db, coll) {
        (Some(db), Some(coll)) => {
            let _ = write!(s, " {db}.{coll}");
        }
        (Some(db), None) => {
            let _ = write!(s, " {db}");
        }
        (None, Some(coll)) => {
            let _ = write!(s, " {coll}");
        }
        (None, None) => {}
    }
    if !target.is_string() && coll.is_some() {
        let _ = write!(s, " {target}");
    }
    let rest: Map<String, Value> = doc
        .iter()
        .skip(1)
        .filter(|(k, _)| {
            k.as_str() != "$db"
                && !PER_RUN_FIELDS.contains(&k.as_str())
                && (target.is_string() || k.as_str() != "collection")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rest.is_empty() {
        s.push(' ');
        s.push_str(&Value::Object(rest).to_string());
    }
    s
}
