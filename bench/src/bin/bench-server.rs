//! `bench-server`: the synthetic HTTP server that `timetracer-bench` traces in its drop-onset
//! runs (`timetracer_bench::load`); the runner starts it from its own directory. See
//! `bench-server --help`.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin front end; the library uses the dependencies"
)]
use std::process::ExitCode;

use clap::Parser as _;
use timetracer_bench::load::{ServeArgs, serve};

fn main() -> ExitCode {
    match serve(&ServeArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
