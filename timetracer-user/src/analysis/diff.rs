//! Comparing two recordings of the same request: the response (status, headers, body,
//! duration) and the dependency calls. What `timetracer diff` prints and the web compare view
//! shows.
//!
//! Events are paired by destination (type + host, or type + lib + target for the Python
//! tool's db events without a host) and then by order within that destination, so an extra
//! call to one service does not shift every later pair. JSON bodies are compared with
//! [`super::json`] (numbers by value: `1.0` and `1` are the same).
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::format::fmt_pct_change as pct;
use super::json::{self, Kind};
use super::summary::{call_failed, db_text, event_host, is_failure};
use crate::cassette::format::{Body, BodyEncoding, Event};
use crate::cassette::{self, Cassette, body_bytes};

/// One difference.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// `response.status`, `response.header`, `response.body`, `response.duration`,
    /// `event.target`, `event.status`, `event.error`, `event.body`, `event.duration`,
    /// `event.missing`, `event.extra`.
    pub what: String,
    /// Destination of the event (events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Event ids in A and B (events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid_a: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid_b: Option<u64>,
    pub a: Value,
    pub b: Value,
    pub summary: String,
    pub regression: bool,
}

/// The whole report (also the `--json` output).
#[derive(Debug, Serialize)]
pub struct Report {
    pub cassette_a: String,
    pub cassette_b: String,
    pub request: String,
    pub has_differences: bool,
    pub is_regression: bool,
    pub threshold_pct: f64,
    pub response: Vec<Change>,
    pub events: EventsReport,
}

impl Report {
    /// The report of `response` and `events` (from [`compare`]) between the cassettes named
    /// `cassette_a` and `cassette_b`.
    #[must_use]
    pub fn new(
        cassette_a: String,
        cassette_b: String,
        request: String,
        threshold_pct: f64,
        (response, events): (Vec<Change>, EventsReport),
    ) -> Self {
        Self {
            cassette_a,
            cassette_b,
            request,
            has_differences: !response.is_empty() || !events.changes.is_empty(),
            is_regression: response.iter().chain(&events.changes).any(|c| c.regression),
            threshold_pct,
            response,
            events,
        }
    }

    /// Every change, the response's first.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.response.iter().chain(&self.events.changes)
    }
}

#[derive(Debug, Serialize)]
pub struct EventsReport {
    pub count_a: usize,
    pub count_b: usize,
    pub paired: usize,
    pub changes: Vec<Change>,
}

fn destination(e: &Event) -> String {
    match event_host(e) {
        Some(h) => format!("{} {h}", e.kind),
        None => format!(
            "{} {} {}",
            e.kind,
            e.signature.lib,
            e.signature.url.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
    }
}

/// What the call asked for: method + URL + query, or the SQL / command.
fn target(e: &Event) -> String {
    if let Some(t) = db_text(e) {
        return t;
    }
    let mut s = format!(
        "{} {}",
        e.signature.method,
        e.signature.url.as_deref().unwrap_or("")
    );
    if let Some(q) = e.signature.query.as_ref().filter(|q| !q.is_empty()) {
        s.push_str(&format!(" {}", Value::Object(q.clone())));
    }
    if let Some(h) = &e.signature.body_hash {
        s.push_str(&format!(" body={}", &h[..h.len().min(19)]));
    }
    s
}

fn body_id(b: Option<&Body>) -> Option<String> {
    let b = b?;
    b.hash.clone().or_else(|| {
        let bytes = body_bytes(b);
        (!bytes.is_empty()).then(|| cassette::sha256_tagged(&bytes))
    })
}

fn json_body(b: Option<&Body>) -> Option<&Value> {
    let b = b?;
    match (b.encoding, &b.data) {
        (Some(BodyEncoding::Json), Some(v)) => Some(v),
        _ => None,
    }
}

fn body_change(a: Option<&Body>, b: Option<&Body>) -> Option<String> {
    if body_id(a) == body_id(b) {
        return None;
    }
    if let (Some(ja), Some(jb)) = (json_body(a), json_body(b)) {
        let paths: Vec<String> = json::differences("$", ja, jb, 8)
            .into_iter()
            .map(|d| match d.kind {
                Kind::Removed(_) => format!("{} (removed)", d.path),
                Kind::Added(_) => format!("{} (added)", d.path),
                Kind::Changed { .. } | Kind::Length { .. } => d.path,
            })
            .collect();
        // Same JSON by value (`1.0` for `1`, keys reordered): not a change.
        if paths.is_empty() {
            return None;
        }
        return Some(format!("body changed at {}", paths.join(", ")));
    }
    let size = |b: Option<&Body>| b.and_then(|b| b.size_bytes).unwrap_or(0);
    Some(format!("body changed ({} B → {} B)", size(a), size(b)))
}

fn slower(a: f64, b: f64, pct: f64, min_delta: f64) -> bool {
    b - a >= min_delta && b > a * (1.0 + pct / 100.0)
}

/// Compare two cassettes.
#[must_use]
pub fn compare(
    a: &Cassette,
    b: &Cassette,
    threshold: f64,
    min_delta: f64,
    ignore_headers: &[String],
) -> (Vec<Change>, EventsReport) {
    let mut resp = Vec::new();
    let (ra, rb) = (&a.response, &b.response);
    if ra.status != rb.status {
        let reg = is_failure(b) && !is_failure(a);
        resp.push(Change {
            what: "response.status".into(),
            destination: None,
            eid_a: None,
            eid_b: None,
            a: ra.status.into(),
            b: rb.status.into(),
            summary: format!("status {} → {}", ra.status, rb.status),
            regression: reg,
        });
    } else if is_failure(b) && !is_failure(a) {
        resp.push(Change {
            what: "response.error".into(),
            destination: None,
            eid_a: None,
            eid_b: None,
            a: Value::Null,
            b: serde_json::to_value(&b.error).unwrap_or(Value::Null),
            summary: "the request now records an error".into(),
            regression: true,
        });
    }
    if slower(ra.duration_ms, rb.duration_ms, threshold, min_delta) {
        resp.push(Change {
            what: "response.duration".into(),
            destination: None,
            eid_a: None,
            eid_b: None,
            a: ra.duration_ms.into(),
            b: rb.duration_ms.into(),
            summary: format!(
                "duration {:.1}ms → {:.1}ms ({})",
                ra.duration_ms,
                rb.duration_ms,
                pct(ra.duration_ms, rb.duration_ms)
            ),
            regression: true,
        });
    }
    let ignored = |k: &str| k == "date" || ignore_headers.iter().any(|i| i.eq_ignore_ascii_case(k));
    let mut names: Vec<&String> = ra.headers.keys().chain(rb.headers.keys()).collect();
    names.sort();
    names.dedup();
    for k in names {
        if ignored(k) {
            continue;
        }
        let (va, vb) = (ra.headers.get(k), rb.headers.get(k));
        if va != vb {
            let show = |v: Option<&Value>| {
                v.map_or_else(
                    || "(none)".to_owned(),
                    |v| {
                        v.as_str()
                            .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
                    },
                )
            };
            resp.push(Change {
                what: "response.header".into(),
                destination: None,
                eid_a: None,
                eid_b: None,
                a: va.cloned().unwrap_or(Value::Null),
                b: vb.cloned().unwrap_or(Value::Null),
                summary: format!("header {k}: {} → {}", show(va), show(vb)),
                regression: false,
            });
        }
    }
    if let Some(s) = body_change(ra.body.as_ref(), rb.body.as_ref()) {
        resp.push(Change {
            what: "response.body".into(),
            destination: None,
            eid_a: None,
            eid_b: None,
            a: body_id(ra.body.as_ref()).into(),
            b: body_id(rb.body.as_ref()).into(),
            summary: s,
            regression: false,
        });
    }

    // Pair events by destination, then order.
    let mut groups: BTreeMap<String, (Vec<&Event>, Vec<&Event>)> = BTreeMap::new();
    for e in &a.events {
        groups.entry(destination(e)).or_default().0.push(e);
    }
    for e in &b.events {
        groups.entry(destination(e)).or_default().1.push(e);
    }
    let mut changes = Vec::new();
    let mut paired = 0;
    for (dest, (ea, eb)) in &groups {
        let n = ea.len().max(eb.len());
        for i in 0..n {
            let mk = |what: &str, x: Value, y: Value, summary: String, regression: bool| Change {
                what: what.into(),
                destination: Some(dest.clone()),
                eid_a: ea.get(i).map(|e| e.eid),
                eid_b: eb.get(i).map(|e| e.eid),
                a: x,
                b: y,
                summary,
                regression,
            };
            match (ea.get(i), eb.get(i)) {
                (Some(x), None) => changes.push(mk(
                    "event.missing",
                    target(x).into(),
                    Value::Null,
                    format!("call no longer made: {}", target(x)),
                    false,
                )),
                (None, Some(y)) => changes.push(mk(
                    "event.extra",
                    Value::Null,
                    target(y).into(),
                    format!("new call: {}", target(y)),
                    false,
                )),
                (Some(x), Some(y)) => {
                    paired += 1;
                    let (tx, ty) = (target(x), target(y));
                    if tx != ty {
                        changes.push(mk(
                            "event.target",
                            tx.clone().into(),
                            ty.clone().into(),
                            format!("{tx} → {ty}"),
                            true,
                        ));
                    }
                    if x.result.status != y.result.status {
                        let reg = call_failed(y) && !call_failed(x);
                        let s =
                            |v: Option<i64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
                        changes.push(mk(
                            "event.status",
                            x.result.status.into(),
                            y.result.status.into(),
                            format!("status {} → {}", s(x.result.status), s(y.result.status)),
                            reg,
                        ));
                    }
                    if x.result.error != y.result.error {
                        changes.push(mk(
                            "event.error",
                            x.result.error.clone().into(),
                            y.result.error.clone().into(),
                            format!(
                                "error {} → {}",
                                x.result.error.as_deref().unwrap_or("none"),
                                y.result.error.as_deref().unwrap_or("none")
                            ),
                            y.result.error.is_some() && x.result.error.is_none(),
                        ));
                    }
                    if let Some(s) = body_change(x.result.body.as_ref(), y.result.body.as_ref()) {
                        changes.push(mk(
                            "event.body",
                            body_id(x.result.body.as_ref()).into(),
                            body_id(y.result.body.as_ref()).into(),
                            s,
                            false,
                        ));
                    }
                    if slower(x.duration_ms, y.duration_ms, threshold, min_delta) {
                        changes.push(mk(
                            "event.duration",
                            x.duration_ms.into(),
                            y.duration_ms.into(),
                            format!(
                                "duration {:.1}ms → {:.1}ms ({})",
                                x.duration_ms,
                                y.duration_ms,
                                pct(x.duration_ms, y.duration_ms)
                            ),
                            true,
                        ));
                    }
                }
                (None, None) => {}
            }
        }
    }
    (
        resp,
        EventsReport {
            count_a: a.events.len(),
            count_b: b.events.len(),
            paired,
            changes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cassette::body::encode_body;

    fn body(json: &str) -> Body {
        encode_body(json.as_bytes(), json.len() as u64, false, Vec::new()).unwrap()
    }

    #[test]
    fn json_bodies_compare_by_value() {
        let a = body(r#"{"n":1,"x":[1,2],"gone":0}"#);
        // Same values: `1.0` for `1`, keys in another order.
        let same = body(r#"{"x":[1.0,2],"gone":0,"n":1.0}"#);
        assert_eq!(a.encoding, Some(BodyEncoding::Json));
        assert_ne!(body_id(Some(&a)), body_id(Some(&same)));
        assert_eq!(body_change(Some(&a), Some(&same)), None);

        let changed = body(r#"{"n":2,"x":[1,2,3],"new":true}"#);
        assert_eq!(
            body_change(Some(&a), Some(&changed)).as_deref(),
            Some("body changed at $.n, $.x.length, $.gone (removed), $.new (added)")
        );
        let text = body("plain text");
        assert_eq!(
            body_change(Some(&a), Some(&text)).as_deref(),
            Some("body changed (26 B → 10 B)")
        );
    }
}
