//! The searchable summary of a cassette (what the index stores).
use serde::Serialize;

use crate::analysis::stats::Call;
use crate::analysis::summary::{endpoint, event_host, is_failure};
use crate::cassette::Cassette;

/// Summary of one cassette.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub schema_version: String,
    pub id: String,
    pub recorded_at: String,
    /// `recorded_at` as Unix seconds, when it parses.
    #[serde(skip)]
    pub recorded_unix: Option<f64>,
    pub service: String,
    pub env: String,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub duration_ms: f64,
    pub event_count: i64,
    /// Status 0 or >= 400, or an `error` object.
    pub has_error: bool,
    /// Written by the Python tool (schema 1.0 / 0.1).
    pub legacy: bool,
    /// `session.k8s.namespace` (node mode), when recorded in a pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `session.k8s.pod`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `METHOD route` as `stats` groups it (`analysis::summary::endpoint`).
    #[serde(skip)]
    pub endpoint: String,
    #[serde(skip)]
    pub deps: Vec<DepSummary>,
}

/// Summary of one dependency call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepSummary {
    pub eid: i64,
    pub kind: String,
    pub lib: String,
    pub method: String,
    /// Lower-case `host[:port]` (port only when not the scheme's default), when known.
    pub host: Option<String>,
    pub url: Option<String>,
    pub status: Option<i64>,
    pub duration_ms: f64,
    /// What `stats` needs of the call (dependency key, fingerprint, start, failure,
    /// session-level), computed once when the cassette is indexed.
    #[serde(skip)]
    pub stats: Call,
}

/// Parse an RFC 3339 timestamp into Unix seconds.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The summary the index stores for `c`.
#[must_use]
pub fn summarize(c: &Cassette) -> Summary {
    Summary {
        schema_version: c.schema_version.clone(),
        id: c.session.id.clone(),
        recorded_at: c.session.recorded_at.clone(),
        recorded_unix: parse_rfc3339(&c.session.recorded_at),
        service: c.session.service.clone(),
        env: c.session.env.clone(),
        method: c.request.method.clone(),
        path: c.request.path.clone(),
        status: c.response.status,
        duration_ms: c.response.duration_ms,
        event_count: i64::try_from(c.events.len()).unwrap_or(i64::MAX),
        has_error: is_failure(c),
        legacy: c.is_python_legacy(),
        namespace: c.session.k8s.as_ref().map(|k| k.namespace.clone()),
        pod: c.session.k8s.as_ref().map(|k| k.pod.clone()),
        endpoint: endpoint(c),
        deps: c
            .events
            .iter()
            .map(|e| DepSummary {
                eid: i64::try_from(e.eid).unwrap_or(i64::MAX),
                kind: e.kind.clone(),
                lib: e.signature.lib.clone(),
                method: e.signature.method.clone(),
                host: event_host(e),
                url: e.signature.url.clone(),
                status: e.result.status,
                duration_ms: e.duration_ms,
                stats: Call::of(e),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = parse_rfc3339("2026-11-22T23:28:08.792058+00:00").unwrap();
        assert!((t - 1_795_390_088.792_058).abs() < 1e-3);
    }
}
