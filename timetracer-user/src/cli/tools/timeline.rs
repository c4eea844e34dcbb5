//! `timetracer timeline FILE`: one self-contained HTML page with the request's waterfall.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Ctx, Exit};
use crate::web::{self, render::PageOpts};

/// Write a self-contained HTML timeline (waterfall) of one cassette.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer timeline cassettes/2026-11-22/GET__users_42__e92ca5c8.json --open
  timetracer timeline GET__boom_5__90588dcc.json.zst -o /tmp/boom.html

The page needs no network: CSS and script are inline and a Content-Security-Policy forbids
anything else. It shows each dependency call on a time axis with its kernel timings (request
sent, first and last response byte), what it asked for (URL, SQL, Redis command), its result,
calls running in parallel, the error and traceback, the request and response, and the raw JSON.
The file is written with mode 0600 (it holds what the cassette holds).")]
pub struct TimelineArgs {
    /// The cassette (.json, .json.gz, .json.zst).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Output file [default: the cassette's name with .html, next to it].
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Open the page in the default browser (xdg-open, or $BROWSER).
    #[arg(long)]
    pub open: bool,
}

/// `x.json` / `x.json.gz` / `x.json.zst` → `x.html`.
#[must_use]
pub fn default_out(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name
        .strip_suffix(crate::cassette::crypt::SUFFIX)
        .unwrap_or(&name);
    let stem = [".json.zst", ".json.gz", ".json"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    file.with_file_name(format!("{stem}.html"))
}

/// Opens `target` (a file path or URL) in the user's browser, without waiting for it.
pub fn open_in_browser(target: &str) -> anyhow::Result<()> {
    let browser = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    let prog = browser.as_deref().unwrap_or("xdg-open");
    std::process::Command::new(prog)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {prog} to open {target} (set $BROWSER)"))?;
    Ok(())
}

pub fn run(_ctx: &mut Ctx, a: &TimelineArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let l = web::load(&a.file)?;
    let v = web::view("c", &a.file.display().to_string(), "", &a.file, &l);
    let html = web::render::Renderer::new().timeline(
        &v,
        &PageOpts {
            generated_at: web::now_text(),
            ..PageOpts::default()
        },
    )?;
    let dest = a.out.clone().unwrap_or_else(|| default_out(&a.file));
    crate::atomic_file::write(&dest, html.as_bytes())?;
    writeln!(out, "Timeline written: {}", dest.display())?;
    writeln!(
        out,
        "Request: {} {} -> {} in {}",
        v.method, v.target, v.status_text, v.duration
    )?;
    writeln!(out, "Calls: {}", v.concurrency.text)?;
    if a.open {
        open_in_browser(&dest.display().to_string())?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        assert_eq!(default_out(Path::new("a/x.json")), Path::new("a/x.html"));
        assert_eq!(
            default_out(Path::new("a/x.json.zst")),
            Path::new("a/x.html")
        );
        assert_eq!(default_out(Path::new("x.json.gz")), Path::new("x.html"));
        assert_eq!(
            default_out(Path::new("x.json.zst.age")),
            Path::new("x.html")
        );
    }
}
