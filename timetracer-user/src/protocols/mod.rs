//! Wire protocols. Each protocol is a folder with pure, I/O-free parse/stitch functions.
pub mod db;
pub mod detect;
pub mod detect_db;
pub mod detect_kv;
pub mod http;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redis;
