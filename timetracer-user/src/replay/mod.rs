//! Replay: run the unmodified app with its dependencies answered from cassettes
//! (`timetracer-agent replay`, docs/replay.md).
pub mod ledger;
pub mod mock;
