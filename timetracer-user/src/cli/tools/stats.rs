//! `timetracer stats`: counts, error rates, duration percentiles, N+1 detection.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::{Ctx, Exit, read_inputs};
use crate::cassette::Cassette;
use crate::cassette::format::Event;
use crate::index::summary::{event_host, is_failure};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// METHOD + path with ids replaced by {id} (or the route template).
    Endpoint,
    /// Dependency call type + method + destination.
    Dependency,
}

/// Aggregate statistics and N+1 query detection.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer stats                                  # by endpoint, ./cassettes
  timetracer stats --dir cassettes --group-by dependency
  timetracer stats --n-plus-one 5 --json

Numbers in paths (/users/42), UUIDs and long hex ids become {id}, so /users/42 and /users/43
are one endpoint. N+1: the same query shape (SQL with literals replaced by ?, or method + URL
with ids replaced) repeated at least --n-plus-one times within one request.")]
pub struct StatsArgs {
    /// Cassette directory or files [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// What to aggregate by.
    #[arg(short, long, value_enum, default_value = "endpoint")]
    pub group_by: GroupBy,
    /// Repeats of one query shape within one request reported as N+1 [default: stats.n_plus_one, else 3].
    #[arg(long, value_name = "N")]
    pub n_plus_one: Option<u64>,
    /// Print JSON.
    #[arg(short, long)]
    pub json: bool,
}

/// Replace id-like path segments by `{id}`.
#[must_use]
pub fn normalize_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let hex = seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            let num = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
            if num || hex { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// SQL with string and number literals replaced by `?`, whitespace collapsed, `IN (?, ?)`
/// lists folded to `IN (?)`.
#[must_use]
pub fn normalize_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut prev_ident = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            for d in chars.by_ref() {
                if d == '\'' {
                    break;
                }
            }
            out.push('?');
            prev_ident = false;
        } else if c.is_ascii_digit() && !prev_ident {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                chars.next();
            }
            out.push('?');
        } else if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            prev_ident = false;
        } else {
            prev_ident = c.is_alphanumeric() || c == '_';
            out.push(c);
        }
    }
    let mut s = out.trim().to_owned();
    while let Some(i) = s.find("?, ?") {
        s.replace_range(i..i + 4, "?");
    }
    while let Some(i) = s.find("?,?") {
        s.replace_range(i..i + 3, "?");
    }
    s
}

/// The shape of a dependency call (what N+1 detection counts).
#[must_use]
pub fn shape(e: &Event) -> String {
    if let Some(t) = super::diff::db_text(e) {
        return format!("{} {}", e.kind, normalize_sql(&t));
    }
    let url = e.signature.url.as_deref().unwrap_or("");
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!("{scheme}://{host}{}", normalize_path(path))
        }
        None => normalize_path(url),
    };
    format!("{} {} {}", e.kind, e.signature.method, url)
}

fn endpoint(c: &Cassette) -> String {
    let p = c
        .request
        .route_template
        .clone()
        .unwrap_or_else(|| normalize_path(&c.request.path));
    format!("{} {p}", c.request.method)
}

fn dependency(e: &Event) -> String {
    let dest = event_host(e).unwrap_or_else(|| e.signature.url.clone().unwrap_or_default());
    format!("{} {} {dest}", e.kind, e.signature.method)
}

/// Nearest-rank percentile of sorted values.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Serialize)]
pub struct Group {
    pub key: String,
    pub count: usize,
    pub errors: usize,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct NPlusOne {
    pub endpoint: String,
    pub shape: String,
    /// Requests where the shape repeated at least N times.
    pub requests: usize,
    pub max_repeats: usize,
    pub example: String,
}

fn groups(samples: BTreeMap<String, Vec<(f64, bool)>>) -> Vec<Group> {
    let mut out: Vec<Group> = samples
        .into_iter()
        .map(|(key, v)| {
            let mut d: Vec<f64> = v.iter().map(|x| x.0).collect();
            d.sort_by(f64::total_cmp);
            let errors = v.iter().filter(|x| x.1).count();
            Group {
                key,
                count: v.len(),
                errors,
                error_rate: errors as f64 / v.len().max(1) as f64,
                p50_ms: percentile(&d, 50.0),
                p95_ms: percentile(&d, 95.0),
                p99_ms: percentile(&d, 99.0),
                max_ms: d.last().copied().unwrap_or(0.0),
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    out
}

/// `timetracer stats`.
pub fn run(ctx: &mut Ctx, a: &StatsArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let threshold = a
        .n_plus_one
        .or_else(|| ctx.cfg.u64("stats.n_plus_one"))
        .unwrap_or(3)
        .max(2) as usize;
    let cassettes = read_inputs(ctx, std::slice::from_ref(&dir))?;
    let mut samples: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    let mut n1: BTreeMap<(String, String), NPlusOne> = BTreeMap::new();
    for (path, c) in &cassettes {
        match a.group_by {
            GroupBy::Endpoint => samples
                .entry(endpoint(c))
                .or_default()
                .push((c.response.duration_ms, is_failure(c))),
            GroupBy::Dependency => {
                for e in &c.events {
                    let failed = e.result.error.is_some()
                        || (e.kind == "http.client"
                            && e.result.status.is_some_and(|s| s >= 400 || s == 0));
                    samples
                        .entry(dependency(e))
                        .or_default()
                        .push((e.duration_ms, failed));
                }
            }
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in &c.events {
            *counts.entry(shape(e)).or_default() += 1;
        }
        for (s, n) in counts.into_iter().filter(|(_, n)| *n >= threshold) {
            let ep = endpoint(c);
            let entry = n1
                .entry((ep.clone(), s.clone()))
                .or_insert_with(|| NPlusOne {
                    endpoint: ep,
                    shape: s,
                    requests: 0,
                    max_repeats: 0,
                    example: path.display().to_string(),
                });
            entry.requests += 1;
            if n > entry.max_repeats {
                entry.max_repeats = n;
                entry.example = path.display().to_string();
            }
        }
    }
    let groups = groups(samples);
    let mut n1: Vec<NPlusOne> = n1.into_values().collect();
    n1.sort_by(|a, b| {
        b.max_repeats
            .cmp(&a.max_repeats)
            .then_with(|| a.shape.cmp(&b.shape))
    });
    if a.json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "cassettes": cassettes.len(),
                "group_by": match a.group_by { GroupBy::Endpoint => "endpoint", GroupBy::Dependency => "dependency" },
                "groups": groups,
                "n_plus_one_threshold": threshold,
                "n_plus_one": n1,
            }),
        )?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "{} cassettes in {}\n", cassettes.len(), dir.display())?;
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
            "\nNo N+1 patterns (no query shape repeated {threshold}+ times in one request)"
        )?;
    } else {
        writeln!(
            out,
            "\n{}",
            ctx.paint(
                "1;33",
                &format!("N+1 suspects (same query shape {threshold}+ times in one request):")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizers() {
        assert_eq!(
            normalize_path("/users/42/orders/7"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(
            normalize_path("/x/0a1420f6-474d-408a-82e3-0a1420f6e065"),
            "/x/{id}"
        );
        assert_eq!(
            normalize_sql("SELECT * FROM t WHERE id = 42 AND name = 'bob'"),
            "SELECT * FROM t WHERE id = ? AND name = ?"
        );
        assert_eq!(
            normalize_sql("select a from t1 where x in (1, 2,3)"),
            "select a from t1 where x in (?)"
        );
        assert_eq!(
            normalize_sql("SELECT  *\n FROM t WHERE id=$1"),
            "SELECT * FROM t WHERE id=?"
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }
}
