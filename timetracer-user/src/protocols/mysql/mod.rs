//! MySQL / MariaDB client/server protocol, client side: one
//! [`DbCall`](crate::protocols::db::DbCall) per command (`COM_QUERY`, `COM_STMT_*`, ...) plus
//! the handshake, with auth responses redacted. Format of `detail`: `docs/protocols/mysql.md`.
pub mod detect;
pub mod parse;
pub mod redact;
pub mod stitch;

pub use stitch::{MysqlOptions, MysqlParser};

#[cfg(test)]
mod tests;

use super::http::types::Side;
use super::{Protocol, Replay, Spec};

/// MySQL in the registry (client connections of the traced process).
pub static SPEC: Spec = Spec {
    protocol: Protocol::Mysql,
    name: "mysql",
    label: "MySQL",
    aliases: &["mariadb", "pymysql", "mysqlclient", "aiomysql"],
    event_type: "db.query",
    sides: &[Side::Client],
    detect: |egress, ingress, _side| detect::detect_mysql(egress, ingress),
    parser: |_side, limits| {
        Box::new(MysqlParser::new(MysqlOptions {
            max_row_bytes: limits.max_body,
            max_raw: limits.max_body,
            ..MysqlOptions::default()
        }))
    },
    redact: super::redact::Redaction::Hook(redact::redact),
    replay: Replay::Mocked,
};
