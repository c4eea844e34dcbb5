//! Wire protocols. Each protocol is a folder with pure, I/O-free parse/stitch functions.
pub mod db;
pub mod detect;
pub mod http;
pub mod redis;
