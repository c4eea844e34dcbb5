//! `timetracer export --to har|curl|postman`.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::{Ctx, Exit, read_inputs};
use crate::analysis::export::{to_curl, to_har, to_postman};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// HTTP Archive 1.2 (browser DevTools, har viewers).
    Har,
    /// One curl command per request (a shell script).
    Curl,
    /// Postman Collection v2.1 (Postman, Insomnia, Bruno: File > Import).
    Postman,
}

/// Export cassettes as HAR 1.2, curl commands or a Postman collection.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer export --to har cassettes/ -o session.har      # open in DevTools: Network > Import
  timetracer export --to har GET__users_42__e92ca5c8.json --no-deps
  timetracer export --to curl GET__users_42__e92ca5c8.json --base-url http://localhost:8000
  timetracer export --to curl GET__users_42__e92ca5c8.json --deps   # the dependency calls
  timetracer export --format postman cassettes/ -o api.postman_collection.json

HAR: each cassette gives one entry for the inbound request and, unless --no-deps, one per HTTP
dependency call. Postman: one request per cassette against the {{baseUrl}} collection variable
(--base-url, else the first request's host), its recorded response saved as an example, and
unless --no-deps a \"Dependency calls\" folder. Redacted values stay \"[REDACTED]\" (Postman:
such headers are disabled and say so).")]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, visible_alias = "format")]
    pub to: ExportFormat,
    /// Cassette files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// HAR, Postman: leave the dependency calls out.
    #[arg(long)]
    pub no_deps: bool,
    /// curl: print the dependency calls instead of the inbound request.
    #[arg(long)]
    pub deps: bool,
    /// curl, Postman: scheme://host[:port] of the app [default: from the Host header, http].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

/// `timetracer export`.
pub fn run(ctx: &mut Ctx, a: &ExportArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let cassettes = read_inputs(ctx, &a.paths)?;
    let text = match a.to {
        ExportFormat::Har => {
            let mut s = serde_json::to_string_pretty(&to_har(&cassettes, !a.no_deps))?;
            s.push('\n');
            s
        }
        ExportFormat::Curl => to_curl(&cassettes, a.deps, a.base_url.as_deref()),
        ExportFormat::Postman => {
            let mut s = serde_json::to_string_pretty(&to_postman(
                &cassettes,
                !a.no_deps,
                a.base_url.as_deref(),
            ))?;
            s.push('\n');
            s
        }
    };
    match &a.out {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            crate::atomic_file::write(p, text.as_bytes())?;
            eprintln!(
                "timetracer: wrote {} ({} cassettes)",
                p.display(),
                cassettes.len()
            );
        }
        None => out.write_all(text.as_bytes())?,
    }
    Ok(Exit::Ok)
}
