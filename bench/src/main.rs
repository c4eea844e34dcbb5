//! `timetracer-bench`: timetracer's benchmark (issue #11), which measures what recording costs
//! next to the Python tool. This crate is the benchmark: the runner (this binary), the
//! synthetic HTTP server it traces (`bench-server`, src/bin/bench-server.rs) and the harness
//! both share (src/lib.rs and its modules). It is a crate of its own, not part of xtask, so that
//! the project's task runner stays small and the server is a named program of its own.
//!
//! Run it with `sudo cargo xtask bench [OPTIONS]`: that thin wrapper installs the tools (wrk,
//! bpftool, openssl), builds the agent (unless `--no-build`) and this crate, creates the bench
//! venv, then runs `target/release/timetracer-bench` with the same arguments. Running the binary
//! directly works once those are in place; it needs root and builds nothing.
//!
//! Groups (all by default, `--only` picks some):
//! - `overhead`: uvicorn/FastAPI `/plain` and `/dep`, HTTP and HTTPS, untraced vs
//!   `timetracer-agent attach` vs the Python `timetracer` 1.6.0 middleware, interleaved rounds;
//! - `agent`: agent CPU per 10k messages/s and peak RSS at fixed rates; drop onset (tracing
//!   `bench-server`);
//! - `kernel`: BPF run time per program and hook hits per request (`bpf_stats`);
//! - `tools`: bytes per request vs the Python tool; `timetracer search` over a corpus;
//! - `replay`: latency added per mocked call (when this build has `replay`).
//!
//! Results: `bench-results/<timestamp>.json` and `.md`; the Markdown is printed too. The method
//! is described in docs/performance.md.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin front end; the library uses the dependencies"
)]
use std::process::ExitCode;

use clap::Parser as _;
use timetracer_bench::{BenchArgs, run};

fn main() -> ExitCode {
    match run(&BenchArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("timetracer-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
