//! PostgreSQL frontend/backend protocol 3.0, client side: one [`DbCall`](crate::protocols::db::DbCall)
//! per statement execution (simple `Query`, or an extended-protocol group ending in `Execute`),
//! plus startup/authentication and session facts. Format of `detail`: `docs/protocols/postgres.md`.
pub(crate) mod input;
pub mod parse;
pub mod stitch;
pub mod types;

pub use stitch::{MISSING_SQL, PgOptions, PgParser};

#[cfg(test)]
pub(crate) mod tests;
