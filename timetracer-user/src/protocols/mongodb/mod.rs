//! MongoDB wire protocol, client side: one [`DbCall`](crate::protocols::db::DbCall) per
//! request/reply pair with the command and reply documents as relaxed Extended JSON. See
//! `docs/protocols/mongodb.md`.
pub mod bson;
mod conn;
#[cfg(test)]
mod tests;

pub use conn::{
    MAX_MESSAGE, MIN_MESSAGE, MongoOptions, MongoParser, OP_COMPRESSED, OP_DELETE, OP_GET_MORE,
    OP_INSERT, OP_KILL_CURSORS, OP_MSG, OP_QUERY, OP_REPLY, OP_UPDATE, crc32c, header_ok,
};
