//! `timetracer stats`: counts, error rates, duration percentiles, N+1 detection (computed by
//! [`crate::analysis::stats`]; this prints them).
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Ctx, Exit, read_inputs};
use crate::analysis::stats::{self, Stats};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// METHOD + path with ids replaced by {id} (or the route template).
    Endpoint,
    /// Dependency call type + method + destination.
    Dependency,
}

impl From<GroupBy> for stats::GroupBy {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::Endpoint => Self::Endpoint,
            GroupBy::Dependency => Self::Dependency,
        }
    }
}

/// Aggregate statistics and N+1 query detection.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer stats                                  # by endpoint, ./cassettes
  timetracer stats --dir cassettes --group-by dependency
  timetracer stats --n-plus-one 5 --json

Numbers in paths (/users/42), UUIDs and long hex ids become {id}, so /users/42 and /users/43
are one endpoint. N+1: the same call fingerprint made at least --n-plus-one times one after the
other within one request. SQL: literals, placeholders, comments and whitespace normalised, IN
lists of any length folded; Redis: command + key pattern (ids as ?); HTTP: method + URL with ids
replaced. Pipelined or concurrent calls count once; session-level calls (BEGIN, COMMIT, SET,
SHOW, pings, AUTH, HELLO ...) never count.")]
pub struct StatsArgs {
    /// Cassette directory or files [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// What to aggregate by.
    #[arg(short, long, value_enum, default_value = "endpoint")]
    pub group_by: GroupBy,
    /// Sequential repeats of one call fingerprint within one request reported as N+1 [default: stats.n_plus_one, else 3].
    #[arg(long, value_name = "N")]
    pub n_plus_one: Option<u64>,
    /// Print JSON.
    #[arg(short, long)]
    pub json: bool,
}

/// The requests of `dir`, and where they came from: `"index"` (a directory: its index,
/// refreshed — only new or changed files are read — and then only its rows), or `"files"`
/// (cassette files named, or a directory whose index cannot be used: every file is read, and
/// stderr says why).
fn load_requests(ctx: &mut Ctx, dir: &Path) -> anyhow::Result<(Vec<stats::Request>, &'static str)> {
    if dir.is_dir() {
        match super::list::open_fresh(ctx, dir, true).and_then(|idx| Ok(idx.stats_requests()?)) {
            Ok(r) => return Ok((r, "index")),
            Err(e) => eprintln!(
                "timetracer: stats: the index of {} cannot be used ({e:#}); reading every \
                 cassette instead",
                dir.display(),
            ),
        }
    }
    let cassettes = read_inputs(ctx, &[dir.to_path_buf()])?;
    Ok((
        cassettes
            .iter()
            .map(|(p, c)| stats::Request::of(p, c))
            .collect(),
        "files",
    ))
}

/// `timetracer stats`.
pub fn run(ctx: &mut Ctx, a: &StatsArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let threshold = a
        .n_plus_one
        .or_else(|| ctx.cfg.u64("stats.n_plus_one"))
        .unwrap_or(3)
        .max(2) as usize;
    let (requests, source) = load_requests(ctx, &dir)?;
    let Stats {
        groups,
        n_plus_one: n1,
    } = stats::compute(&requests, a.group_by.into(), threshold);
    if a.json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "cassettes": requests.len(),
                "source": source,
                "group_by": stats::GroupBy::from(a.group_by).name(),
                "groups": groups,
                "n_plus_one_threshold": threshold,
                "n_plus_one": n1,
            }),
        )?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "{} cassettes in {}\n", requests.len(), dir.display())?;
    let title = match a.group_by {
        GroupBy::Endpoint => "Endpoint",
        GroupBy::Dependency => "Dependency",
    };
    writeln!(
        out,
        "{:<48} {:>7} {:>7} {:>10} {:>10} {:>10}",
        title, "Count", "Errors", "p50", "p95", "p99"
    )?;
    for g in &groups {
        let err = format!("{:.1}%", g.error_rate * 100.0);
        let err = if g.errors > 0 {
            ctx.paint("31", &format!("{err:>7}"))
        } else {
            format!("{err:>7}")
        };
        writeln!(
            out,
            "{:<48} {:>7} {err} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
            g.key, g.count, g.p50_ms, g.p95_ms, g.p99_ms
        )?;
    }
    if n1.is_empty() {
        writeln!(
            out,
            "\nNo N+1 patterns (no call repeated {threshold}+ times in a row in one request)"
        )?;
    } else {
        writeln!(
            out,
            "\n{}",
            ctx.paint(
                "1;33",
                &format!("N+1 suspects (same call {threshold}+ times in a row in one request):")
            )
        )?;
        for n in &n1 {
            writeln!(
                out,
                "  {}: {} ×{} (in {} request(s)), e.g. {}",
                n.endpoint, n.shape, n.max_repeats, n.requests, n.example
            )?;
        }
    }
    Ok(Exit::Ok)
}
