//! `timetracer-agent`: the privileged recorder. See `timetracer-agent --help`.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin front end; the library uses the dependencies"
)]
use std::process::ExitCode;

fn main() -> ExitCode {
    timetracer::cli::agent::main()
}
