//! `timetracer clean --older-than 30d [--dry-run]`.
use std::io::Write;
use std::path::PathBuf;

use super::{Ctx, Exit, now_unix, parse_age};
use crate::index::{Index, Query};

/// Delete cassettes recorded longer ago than a given age.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer clean --older-than 30d --dry-run     # list what would go
  timetracer clean --older-than 12h --dir ./cassettes

Age is taken from session.recorded_at. Unreadable files are never deleted (they are named on
stderr and the exit code is 3). Empty date directories are removed.")]
pub struct CleanArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Age: a number and s, m, h, d or w (30d, 12h).
    #[arg(long, value_name = "AGE", required = true)]
    pub older_than: String,
    /// Only print what would be deleted.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `timetracer clean`.
pub fn run(ctx: &mut Ctx, a: &CleanArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let age = parse_age(&a.older_than)?;
    let dir = ctx.dir(a.dir.as_deref());
    let mut idx = Index::open(&dir)?;
    let rep = idx.refresh()?;
    for (p, e) in rep.walk_errors {
        ctx.file_error(&p, &e);
    }
    for fe in idx.errors()? {
        ctx.file_error(&fe.file, &fe.error);
    }
    let old = idx.search(&Query {
        until: Some(now_unix() - age),
        ..Query::default()
    })?;
    let mut bytes = 0i64;
    let mut n = 0usize;
    for e in &old {
        if a.dry_run {
            writeln!(
                out,
                "would delete {} ({})",
                e.file.display(),
                e.summary.recorded_at
            )?;
        } else {
            match std::fs::remove_file(&e.file) {
                Ok(()) => {
                    idx.remove(&e.file)?;
                    writeln!(out, "deleted {}", e.file.display())?;
                }
                Err(err) => {
                    ctx.file_error(&e.file, &format!("cannot delete: {err}"));
                    continue;
                }
            }
        }
        n += 1;
        bytes += e.size_bytes;
    }
    if !a.dry_run {
        // Remove date directories left empty (never the top directory).
        let mut dirs: Vec<PathBuf> = old
            .iter()
            .filter_map(|e| e.file.parent().map(PathBuf::from))
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs.iter().rev() {
            if *d != dir {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    writeln!(
        out,
        "{} {n} cassettes ({:.1} KiB) older than {}",
        if a.dry_run { "Would delete" } else { "Deleted" },
        bytes as f64 / 1024.0,
        a.older_than
    )?;
    Ok(Exit::Ok)
}
