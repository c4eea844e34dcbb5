//! Redis (RESP2/RESP3) on the wire, client side: one [`DbCall`](crate::protocols::db::DbCall)
//! per command with its arguments and reply. See `docs/protocols/redis.md`.
mod conn;
mod input;
pub mod resp;
#[cfg(test)]
mod tests;

pub(crate) use conn::TWO_WORD;
pub use conn::{REDACTED, RedisOptions, RedisParser};
pub use input::split_inline;
pub(crate) use input::{Verdict, command_start, reply_start};
