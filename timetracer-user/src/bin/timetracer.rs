//! `timetracer`: cassette tools; needs no privileges. See `timetracer --help`.
#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin front end; the library uses the dependencies"
)]
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Inspect timetracer cassettes (ours and the Python timetracer's 1.0 files).
#[derive(Debug, Parser)]
#[command(name = "timetracer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a cassette readably.
    ///
    /// Example: timetracer show cassettes/2026-11-23/GET__users_42__e92ca5c8.json --events
    Show {
        /// Cassette file (.json, .json.gz or .json.zst).
        file: PathBuf,
        /// Also list every dependency call.
        #[arg(short, long)]
        events: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Show { file, events } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            timetracer::cli::show::run(&file, events, &mut out)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("timetracer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
