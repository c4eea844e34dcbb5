//! `timetracer`: cassette tools; needs no privileges. See `timetracer --help` and `docs/cli.md`.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin front end; the library uses the dependencies"
)]

fn main() -> std::process::ExitCode {
    timetracer::cli::tools::main()
}
