//! What the front ends show about recorded cassettes, computed once: one-line summaries
//! ([`summary`]: endpoint, target, status, failures), the comparison of two recordings
//! ([`diff`], over the one JSON comparison in [`json`] that replay uses too), aggregates and
//! N+1 suspects ([`stats`]), and how numbers and times are written ([`format`]).
//!
//! Layering: `cli`, `tui` and `web` build on this module; it imports none of them (a test in
//! `lib.rs` checks that no module outside `cli/` imports `cli`). Nothing here does I/O.
pub mod diff;
pub mod export;
pub mod fingerprint;
pub mod format;
pub mod json;
pub mod stats;
pub mod summary;
