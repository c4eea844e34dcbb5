//! HTTP/1.x: incremental parsing of both directions of a connection and stitching of
//! requests to responses.
pub mod types;
