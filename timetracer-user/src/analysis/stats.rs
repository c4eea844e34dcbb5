//! Aggregates over many cassettes: request counts, error rates and duration percentiles per
//! endpoint or per dependency, and N+1 suspects: one call [fingerprint](super::fingerprint)
//! made at least N times **one after the other** within one request (calls sent together — a
//! Redis pipeline, an `asyncio.gather` — overlap in time and count once; session-level calls
//! never count).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::fingerprint;
use super::summary::{call_failed, endpoint, event_host, is_failure};
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

/// One request as `stats` needs it: from its cassette ([`Request::of`]) or from the index
/// (`Index::stats_requests`, which stores these fields), so both give the same numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub file: PathBuf,
    /// [`endpoint`]: METHOD + route template or path with ids as `{id}`.
    pub endpoint: String,
    pub duration_ms: f64,
    /// [`is_failure`].
    pub failed: bool,
    /// In `eid` order.
    pub calls: Vec<Call>,
}

/// One dependency call as `stats` needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Call {
    /// Type, method and destination (`--group-by dependency`).
    pub dependency: String,
    /// [`fingerprint::of`].
    pub fingerprint: String,
    /// From the inbound request's start.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// [`call_failed`].
    pub failed: bool,
    /// [`fingerprint::is_session_level`]: never N+1.
    pub session_level: bool,
}

impl Call {
    /// The call `e`.
    #[must_use]
    pub fn of(e: &Event) -> Self {
        Self {
            dependency: dependency_key(
                &e.kind,
                &e.signature.method,
                event_host(e).as_deref(),
                e.signature.url.as_deref(),
            ),
            fingerprint: fingerprint::of(e),
            start_ms: e.start_offset_ms,
            duration_ms: e.duration_ms,
            failed: call_failed(e),
            session_level: fingerprint::is_session_level(e),
        }
    }
}

impl Request {
    /// The request of cassette `c` read from `file`.
    #[must_use]
    pub fn of(file: &Path, c: &Cassette) -> Self {
        Self {
            file: file.to_path_buf(),
            endpoint: endpoint(c),
            duration_ms: c.response.duration_ms,
            failed: is_failure(c),
            calls: c.events.iter().map(Call::of).collect(),
        }
    }
}

/// `type method destination` (the destination: the host, else the URL).
#[must_use]
pub fn dependency_key(kind: &str, method: &str, host: Option<&str>, url: Option<&str>) -> String {
    let dest = host.or(url).unwrap_or_default();
    format!("{kind} {method} {dest}")
}

/// How many of the calls `spans` (`(start, end)`, ms) ran one after the other: the longest chain
/// of calls each starting once the previous one ended (earliest end first is optimal). Calls
/// sent together overlap and count once; without timings (all zero) every call counts.
fn sequential(spans: &mut [(f64, f64)]) -> usize {
    spans.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    let mut n = 0;
    let mut end = f64::NEG_INFINITY;
    for &mut (s, e) in spans {
        if s >= end {
            n += 1;
            end = e;
        }
    }
    n
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

/// Aggregates `requests` by `by`; a call fingerprint made at least `n_plus_one` times one after
/// the other within one request is an N+1 suspect.
#[must_use]
pub fn compute<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    by: GroupBy,
    n_plus_one: usize,
) -> Stats {
    let mut samples: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    let mut n1: BTreeMap<(String, String), NPlusOne> = BTreeMap::new();
    for r in requests {
        match by {
            GroupBy::Endpoint => samples
                .entry(r.endpoint.clone())
                .or_default()
                .push((r.duration_ms, r.failed)),
            GroupBy::Dependency => {
                for c in &r.calls {
                    samples
                        .entry(c.dependency.clone())
                        .or_default()
                        .push((c.duration_ms, c.failed));
                }
            }
        }
        let mut spans: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for c in r.calls.iter().filter(|c| !c.session_level) {
            spans
                .entry(c.fingerprint.as_str())
                .or_default()
                .push((c.start_ms, c.start_ms + c.duration_ms.max(0.0)));
        }
        for (s, n) in spans
            .into_iter()
            .map(|(s, mut v)| (s, sequential(&mut v)))
            .filter(|(_, n)| *n >= n_plus_one)
        {
            let example = r.file.display().to_string();
            let entry = n1
                .entry((r.endpoint.clone(), s.to_owned()))
                .or_insert_with(|| NPlusOne {
                    endpoint: r.endpoint.clone(),
                    shape: s.to_owned(),
                    requests: 0,
                    max_repeats: 0,
                    example: example.clone(),
                });
            entry.requests += 1;
            if n > entry.max_repeats {
                entry.max_repeats = n;
                entry.example = example;
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
    fn percentiles() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }

    #[test]
    fn only_calls_one_after_the_other_count() {
        // Five calls in a row.
        let mut row: Vec<(f64, f64)> = (0..5).map(|i| (f64::from(i), f64::from(i) + 0.9)).collect();
        assert_eq!(sequential(&mut row), 5);
        // A pipeline: five commands written together, replies one after the other.
        let mut pipe: Vec<(f64, f64)> = (0..5).map(|i| (0.0, 1.0 + f64::from(i) * 0.1)).collect();
        assert_eq!(sequential(&mut pipe), 1);
        // Two gathers of three, one after the other.
        let mut two: Vec<(f64, f64)> = (0..6)
            .map(|i| if i < 3 { (0.0, 1.0) } else { (2.0, 3.0) })
            .collect();
        assert_eq!(sequential(&mut two), 2);
        // No timings (1.0 cassettes): each call counts.
        let mut none = vec![(0.0, 0.0); 4];
        assert_eq!(sequential(&mut none), 4);
    }
}
