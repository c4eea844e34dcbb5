//! Aggregates over many cassettes: request counts, error rates and duration percentiles per
//! endpoint or per dependency, and N+1 suspects (one query shape repeated within a request).
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::summary::{call_failed, db_text, endpoint, event_host, is_failure, normalize_path};
use crate::cassette::Cassette;
use crate::cassette::format::Event;

/// What [`compute`] aggregates by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// METHOD + path with ids replaced by {id} (or the route template).
    Endpoint,
    /// Dependency call type + method + destination.
    Dependency,
}

impl GroupBy {
    /// `endpoint` / `dependency` (the `--json` output's `group_by`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Endpoint => "endpoint",
            Self::Dependency => "dependency",
        }
    }
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
    if let Some(t) = db_text(e) {
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

/// The groups and N+1 suspects of a set of cassettes.
#[derive(Debug)]
pub struct Stats {
    /// Busiest first.
    pub groups: Vec<Group>,
    /// Most repeats first.
    pub n_plus_one: Vec<NPlusOne>,
}

/// Aggregates `cassettes` by `by`; a query shape repeated at least `n_plus_one` times within one
/// request is an N+1 suspect.
#[must_use]
pub fn compute<'a>(
    cassettes: impl IntoIterator<Item = (&'a Path, &'a Cassette)>,
    by: GroupBy,
    n_plus_one: usize,
) -> Stats {
    let mut samples: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    let mut n1: BTreeMap<(String, String), NPlusOne> = BTreeMap::new();
    for (path, c) in cassettes {
        match by {
            GroupBy::Endpoint => samples
                .entry(endpoint(c))
                .or_default()
                .push((c.response.duration_ms, is_failure(c))),
            GroupBy::Dependency => {
                for e in &c.events {
                    samples
                        .entry(dependency(e))
                        .or_default()
                        .push((e.duration_ms, call_failed(e)));
                }
            }
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in &c.events {
            *counts.entry(shape(e)).or_default() += 1;
        }
        for (s, n) in counts.into_iter().filter(|(_, n)| *n >= n_plus_one) {
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
    let mut n1: Vec<NPlusOne> = n1.into_values().collect();
    n1.sort_by(|a, b| {
        b.max_repeats
            .cmp(&a.max_repeats)
            .then_with(|| a.shape.cmp(&b.shape))
    });
    Stats {
        groups: groups(samples),
        n_plus_one: n1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizers() {
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
