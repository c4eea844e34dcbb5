//! HTTP/1.x: incremental parsing of both directions of a connection and stitching of
//! requests to responses.
mod conn;
pub(crate) mod parse;
pub mod types;

pub use conn::{HttpConn, ParseOptions};

#[cfg(test)]
mod tests;
