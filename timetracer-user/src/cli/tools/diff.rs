//! `timetracer diff --a A --b B`: compare two recordings of the same request.
//!
//! Events are paired by destination (type + host, or type + lib + target for the Python
//! tool's db events without a host) and then by order within that destination, so an extra
//! call to one service does not shift every later pair.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::{Ctx, Exit};
use crate::cassette::format::{Body, BodyEncoding, Event};
use crate::cassette::{self, Cassette, body_bytes};
use crate::index::summary::{event_host, is_failure};

/// Compare two cassettes: response, headers, body and dependency calls.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer diff --a cassettes/before.json --b cassettes/after.json.zst
  timetracer diff -a A.json -b B.json --json -o report.json
  timetracer diff -a A.json -b B.json --threshold 50 --ignore-header x-request-id

Exit status: 0 no differences, 1 differences, 2 regression (the response or a dependency call
became an error, something got slower than --threshold, or a dependency call went to another
URL/query), 4 a cassette could not be read.")]
pub struct DiffArgs {
    /// Baseline cassette.
    #[arg(short = 'a', long = "a", value_name = "A")]
    pub a: PathBuf,
    /// Cassette to compare with the baseline.
    #[arg(short = 'b', long = "b", value_name = "B")]
    pub b: PathBuf,
    /// Print the report as JSON.
    #[arg(short, long)]
    pub json: bool,
    /// Also write the report (JSON with --json, else text) to this file.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Percent slower that counts as a regression [default: diff.threshold, else 20].
    #[arg(short, long, value_name = "PCT")]
    pub threshold: Option<f64>,
    /// Ignore slowdowns smaller than this many milliseconds (timer noise).
    #[arg(long, value_name = "MS", default_value_t = 1.0)]
    pub min_delta: f64,
    /// Header to ignore when comparing (repeatable; `date` is always ignored).
    #[arg(long, value_name = "NAME")]
    pub ignore_header: Vec<String>,
}

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

/// SQL / command text of a db event (2.0 `db` object), when present.
#[must_use]
pub fn db_text(e: &Event) -> Option<String> {
    let db = e.db.as_ref()?;
    for k in ["sql", "query", "statement", "command"] {
        match db.get(k) {
            Some(Value::String(s)) => return Some(s.clone()),
            Some(Value::Array(a)) => {
                return Some(
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            _ => {}
        }
    }
    if let Some(Value::Array(a)) = db.get("args") {
        return Some(
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    None
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

fn json_body(b: Option<&Body>) -> Option<Value> {
    let b = b?;
    match (b.encoding, &b.data) {
        (Some(BodyEncoding::Json), Some(v)) => Some(v.clone()),
        _ => None,
    }
}

/// JSON paths whose values differ (at most `max`).
fn json_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, max: usize) {
    if out.len() >= max || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    Some(vb) => json_paths(va, vb, &p, out, max),
                    None => out.push(format!("{p} (removed)")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                if out.len() < max {
                    out.push(format!("{path}.{k} (added)"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_paths(va, vb, &format!("{path}[{i}]"), out, max);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

fn body_change(a: Option<&Body>, b: Option<&Body>) -> Option<String> {
    if body_id(a) == body_id(b) {
        return None;
    }
    if let (Some(ja), Some(jb)) = (json_body(a), json_body(b)) {
        let mut paths = Vec::new();
        json_paths(&ja, &jb, "$", &mut paths, 8);
        if !paths.is_empty() {
            return Some(format!("body changed at {}", paths.join(", ")));
        }
    }
    let size = |b: Option<&Body>| b.and_then(|b| b.size_bytes).unwrap_or(0);
    Some(format!("body changed ({} B → {} B)", size(a), size(b)))
}

fn slower(a: f64, b: f64, pct: f64, min_delta: f64) -> bool {
    b - a >= min_delta && b > a * (1.0 + pct / 100.0)
}

fn pct(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:+.1}%", (b - a) / a * 100.0)
    } else {
        "new".to_owned()
    }
}

fn http_failed(kind: &str, status: Option<i64>, error: Option<&String>) -> bool {
    error.is_some() || (kind == "http.client" && status.is_some_and(|s| s >= 400 || s == 0))
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
                        let reg = http_failed(&y.kind, y.result.status, y.result.error.as_ref())
                            && !http_failed(&x.kind, x.result.status, x.result.error.as_ref());
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

fn render(
    ctx: &Ctx,
    r: &Report,
    a: &Cassette,
    b: &Cassette,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let bold = |s: &str| ctx.paint("1", s);
    writeln!(out, "{} {}", bold("A:"), r.cassette_a)?;
    writeln!(out, "{} {}", bold("B:"), r.cassette_b)?;
    writeln!(out, "Request: {}", r.request)?;
    writeln!(out, "\n{}", bold("RESPONSE"))?;
    if a.response.status == b.response.status {
        writeln!(out, "  status: {} (unchanged)", a.response.status)?;
    }
    writeln!(
        out,
        "  duration: {:.1}ms → {:.1}ms ({})",
        a.response.duration_ms,
        b.response.duration_ms,
        pct(a.response.duration_ms, b.response.duration_ms)
    )?;
    let line = |c: &Change| {
        let (mark, code) = if c.regression {
            ("!", "31")
        } else {
            ("~", "33")
        };
        ctx.paint(code, &format!("  {mark} {}", c.summary))
    };
    for c in &r.response {
        writeln!(out, "{}", line(c))?;
    }
    writeln!(
        out,
        "\n{} (a: {}, b: {}, paired: {})",
        bold("EVENTS"),
        r.events.count_a,
        r.events.count_b,
        r.events.paired
    )?;
    let mut last_dest = None;
    for c in &r.events.changes {
        if last_dest != c.destination.as_ref() {
            writeln!(out, "  {}", c.destination.as_deref().unwrap_or(""))?;
            last_dest = c.destination.as_ref();
        }
        let ids = format!(
            "#{}→#{}",
            c.eid_a.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            c.eid_b.map_or_else(|| "-".to_owned(), |v| v.to_string())
        );
        let (mark, code) = match (c.regression, c.what.as_str()) {
            (true, _) => ("!", "31"),
            (false, "event.extra") => ("+", "32"),
            (false, "event.missing") => ("-", "31"),
            _ => ("~", "33"),
        };
        writeln!(
            out,
            "{}",
            ctx.paint(code, &format!("    {mark} {ids} {}", c.summary))
        )?;
    }
    let n = r.response.len() + r.events.changes.len();
    let verdict = if r.is_regression {
        ctx.paint("1;31", "REGRESSION")
    } else if r.has_differences {
        ctx.paint("33", "DIFFERENT")
    } else {
        ctx.paint("32", "SAME")
    };
    writeln!(
        out,
        "\n{} {verdict}: {n} difference(s), threshold {}%",
        bold("SUMMARY"),
        r.threshold_pct
    )?;
    Ok(())
}

/// `timetracer diff`.
pub fn run(ctx: &mut Ctx, a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let ca = cassette::read(&a.a).with_context(|| "cannot read --a (pass a cassette file)")?;
    let cb = cassette::read(&a.b).with_context(|| "cannot read --b (pass a cassette file)")?;
    let threshold = a
        .threshold
        .or_else(|| ctx.cfg.f64("diff.threshold"))
        .unwrap_or(20.0);
    if !(threshold.is_finite() && threshold >= 0.0) {
        anyhow::bail!("--threshold must be a non-negative percentage, e.g. 20");
    }
    let (response, events) = compare(&ca, &cb, threshold, a.min_delta, &a.ignore_header);
    let is_regression = response.iter().chain(&events.changes).any(|c| c.regression);
    let has_differences = !response.is_empty() || !events.changes.is_empty();
    let mut request = format!("{} {}", cb.request.method, cb.request.path);
    if (ca.request.method.as_str(), ca.request.path.as_str())
        != (cb.request.method.as_str(), cb.request.path.as_str())
    {
        request = format!(
            "{} {} vs {request} (different requests)",
            ca.request.method, ca.request.path
        );
    }
    let report = Report {
        cassette_a: a.a.display().to_string(),
        cassette_b: a.b.display().to_string(),
        request,
        has_differences,
        is_regression,
        threshold_pct: threshold,
        response,
        events,
    };
    let mut text = Vec::new();
    if a.json {
        serde_json::to_writer_pretty(&mut text, &report)?;
        writeln!(text)?;
        out.write_all(&text)?;
    } else {
        render(ctx, &report, &ca, &cb, out)?;
        if a.out.is_some() {
            let plain = Ctx {
                cfg: ctx.cfg.clone(),
                color: false,
                partial: false,
            };
            render(&plain, &report, &ca, &cb, &mut text)?;
        }
    }
    if let Some(p) = &a.out {
        std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if is_regression {
        Exit::Regression
    } else if has_differences {
        Exit::Differences
    } else {
        Exit::Ok
    })
}
