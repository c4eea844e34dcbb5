//! Replay: run the unmodified app with its dependencies answered from cassettes
//! (`timetracer-agent replay`, docs/replay.md).
//!
//! `plan` turns cassettes into mocked destinations; `redirect` puts the app in a cgroup whose
//! connects BPF sends to the mocks; `mock` answers per protocol from the `ledger`; `hook` is
//! the Python side (CA trust, recorded hostnames, frozen time); `run` drives the app and
//! `compare` / `verdict` say what changed;
//! `junit` writes the verdict as a JUnit XML report for CI.
pub mod ca;
pub mod compare;
pub mod hook;
pub mod junit;
pub mod ledger;
pub mod mock;
pub mod plan;
pub mod redirect;
pub mod run;
pub mod service;
pub mod verdict;
