//! The live feed from a recording session to a viewer (the TUI of `timetracer-agent top`):
//! requests as built cassettes (already redacted) and periodic counter snapshots. A request is
//! sent as soon as its response ended ([`Phase::Open`]: it may still gain late calls), again
//! whenever it gains one, and once more when the correlator finalized it ([`Phase::Final`]);
//! every version has the same cassette id, so the viewer updates one row in place.
//! The session never waits for the viewer: updates go through a bounded channel with
//! `try_send`, and what did not fit is counted in [`LiveStats::skipped_updates`].
use std::path::PathBuf;

use crate::cassette::Cassette;

/// One update for the viewer.
#[derive(Clone, Debug)]
pub enum LiveUpdate {
    /// A request. `path` is where it was written, `None` when not saved (still open,
    /// `--no-save`, filtered out) — the viewer may save a final one on demand.
    Request {
        cassette: Box<Cassette>,
        path: Option<PathBuf>,
        phase: Phase,
    },
    /// Counters, sent on every status tick (4 Hz).
    Stats(LiveStats),
}

/// Where a request is in the correlator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its response ended; it still accepts late calls (a provisional snapshot).
    Open,
    /// Finalized: this is its cassette (written unless filtered out or `--no-save`).
    Final,
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
