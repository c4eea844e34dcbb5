//! timetracer: record each inbound HTTP request of an unmodified Python process, with every
//! dependency call it made, into one cassette — from the kernel, with eBPF.
//!
//! The agent is a pipeline (see `docs/ARCHITECTURE.md`):
//! `capture` (ring buffer) → `conn` (the connection layer: `reassembly` per connection and
//! direction, by byte position, → `protocols`: detect, parse, stitch) → `correlate` (attribute
//! outbound calls to inbound requests) → `record::sink` (filters, cassette files, index, S3, live view); `record` runs
//! the whole pipeline for a target, as `replay` runs a replay.

pub mod analysis;
pub mod atomic_file;
pub mod capture;
pub mod cassette;
pub mod cli;
pub mod config;
pub mod conn;
pub mod correlate;
pub mod index;
pub mod k8s;
pub mod live;
pub mod privilege;
pub mod protocols;
pub mod reassembly;
pub mod record;
pub mod redact;
pub mod replay;
pub mod s3;
pub mod secrets;
pub mod stderr;
pub mod telemetry;
pub mod tui;
pub mod urls;
pub mod web;

#[cfg(test)]
mod layering;
/// The workspace's skip policy and prerequisite search for tests (one file, shared with
/// `tests/integration`).
#[cfg(test)]
#[path = "../../tests/integration/src/prereq.rs"]
pub mod prereq;

// Dev-dependencies used only by integration tests in `tests/`.
#[cfg(test)]
use jsonschema as _;
#[cfg(test)]
use tempfile as _;
