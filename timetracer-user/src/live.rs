//! The live feed from a recording session to a viewer (the TUI of `timetracer-agent top`):
//! finished requests as built cassettes (already redacted) and periodic counter snapshots.
//! The session never waits for the viewer: updates go through a bounded channel with
//! `try_send`, and what did not fit is counted in [`LiveStats::skipped_updates`].
use std::path::PathBuf;

use crate::cassette::Cassette;

/// One update for the viewer.
#[derive(Clone, Debug)]
pub enum LiveUpdate {
    /// A finished request. `path` is where it was written, `None` when not saved
    /// (`--no-save`, filtered out) — the viewer may save it on demand.
    Request {
        cassette: Box<Cassette>,
        path: Option<PathBuf>,
    },
    /// Counters, sent on every status tick (4 Hz).
    Stats(LiveStats),
}

/// Counters of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// What is traced, e.g. `pid 1234 (uvicorn app:app)`.
    pub target: String,
    /// Since the session started.
    pub uptime_ms: u64,
    /// Inbound requests completed.
    pub requests: u64,
    /// Ring-buffer records read.
    pub events: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Cassettes written to disk.
    pub cassettes: u64,
    /// Kernel and agent drops by reason (only non-zero ones).
    pub drops: Vec<(String, u64)>,
    /// Updates the viewer was too slow to take.
    pub skipped_updates: u64,
}
