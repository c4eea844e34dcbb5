//! Privileged end-to-end tests; run by `cargo xtask test`.
//!
//! Real, unmodified Python web apps (`tests/apps/`: FastAPI under uvicorn, Flask under
//! gunicorn gthread) talk to a deterministic upstream while `timetracer-agent` records them
//! through its CLI (`record -- CMD` and `attach --pid`). The tests compare every cassette with
//! three independent ground truths: what the HTTP client received, what the app says it
//! received from the upstream, and what the upstream logged it sent.
//!
//! Run as root, one test at a time:
//!
//! ```text
//! export CARGO_TARGET_DIR=/tmp/target-tests
//! cargo test -p timetracer-integration --no-run
//! sudo -E cargo test -p timetracer-integration -- --test-threads=1 --nocapture
//! ```
//!
//! Environment: `TIMETRACER_AGENT`, `TIMETRACER_CLI`, `TIMETRACER_VENV` (see [`util::Paths`]),
//! `TIMETRACER_REQUIRE_PRIVILEGED=1` (turn skips into failures),
//! `TIMETRACER_KEEP_ARTIFACTS=1` (keep each test's temp dir and print its path),
//! `TIMETRACER_CASSETTE_SCHEMA` (JSON Schema every cassette is validated against; default
//! `docs/cassette.schema.json`; a missing schema fails the test).

// The browser tests (`tests/browser.rs`, built only with `cfg(test)`) drive Chromium with these.
use fantoccini as _;
use hyper_util as _;
use tokio as _;

pub mod dbservers;
pub mod fakeapi;
pub mod prereq;
pub mod seaweed;
pub mod util;

#[cfg(test)]
mod tests;
