//! `timetracer-agent`: the privileged recorder. See `timetracer-agent --help`.
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TIMETRACER_LOG"))
        .with_writer(std::io::stderr)
        .init();
    timetracer::cli::agent::main()
}
