//! MySQL / MariaDB client/server protocol, client side: one
//! [`DbCall`](crate::protocols::db::DbCall) per command (`COM_QUERY`, `COM_STMT_*`, ...) plus
//! the handshake, with auth responses redacted. Format of `detail`: `docs/protocols/mysql.md`.
pub mod parse;
pub mod stitch;

pub use stitch::{MysqlOptions, MysqlParser};

#[cfg(test)]
mod tests;
