//! View models: what the templates show, computed from a [`Cassette`] without any HTML.
//!
//! Everything here is plain data (strings and numbers); the templates escape every string they
//! print, so nothing in this module needs to care about HTML. Geometry of the waterfall is set
//! with SVG attributes so the page needs no inline `style`
//! attribute (the Content-Security-Policy forbids them): positions are percentages (`0..=100`)
//! that SVG `x`/`width` attributes take as they are.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::analysis::format::{fmt_bytes, fmt_ms, fmt_time, shell_word};
use crate::analysis::stats::percentile;
use crate::analysis::summary::{
    db_text, endpoint, event_host, is_failure, query_text, status_classes, status_text, target,
};
use crate::cassette::format::{AttributionInfo, Body, BodyEncoding, ErrorKind, Event, Timing};
use crate::cassette::{Cassette, body_bytes};
use crate::protocols::Protocol;

use super::json_view::{self, Token};

/// Width of the waterfall's time axis: positions are percentages of the chart's width.
pub const AXIS: f64 = 100.0;
/// Longest body or SQL text shown inline (the raw JSON view has the rest).
const MAX_TEXT: usize = 64 * 1024;
/// A request slower than this is flagged "slow" in the dashboard.
pub const SLOW_MS: f64 = 1000.0;

/// A key/value line of a details table.
#[derive(Clone, Debug, Serialize)]
pub struct Kv {
    pub k: String,
    pub v: String,
}

fn kv(k: &str, v: impl Into<String>) -> Kv {
    Kv {
        k: k.to_owned(),
        v: v.into(),
    }
}

/// A titled block of preformatted text (SQL, a body, a reply).
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub title: String,
    /// One line under the title (encoding, size, hash ...).
    pub meta: String,
    pub text: String,
    /// `sql`, `json`, `text`, `error`.
    pub kind: &'static str,
}

/// A coloured segment of a waterfall bar.
#[derive(Clone, Debug, Serialize)]
pub struct Seg {
    /// CSS class suffix: `send`, `wait`, `recv`, `whole`.
    pub cls: &'static str,
    pub x: f64,
    pub w: f64,
    /// Tooltip.
    pub title: String,
}

/// One tick of the time axis.
#[derive(Clone, Debug, Serialize)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

/// How a dependency type is shown: a stable key (CSS class, filter value) and a label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DepType {
    /// `http`, `postgres`, `mysql`, `mongodb`, `redis`, `sql`, or `other`.
    pub key: &'static str,
    /// `HTTP`, `HTTPS`, `PostgreSQL`, `MySQL`, `MongoDB`, `Redis`, `SQL (sqlalchemy)`, or the
    /// event's own `type` for a type this version does not know.
    pub label: String,
}

/// The type of a dependency call. Known types are never shown as "unknown": `db.query` is
/// told apart by `signature.lib`, the Python tool's client libraries included.
#[must_use]
pub fn dep_type(e: &Event) -> DepType {
    let lib = e.signature.lib.to_ascii_lowercase();
    let protocol = Protocol::of_event(&e.kind, &lib);
    let (key, label) = match protocol {
        Some(Protocol::Http) => {
            let tls = e.connection.as_ref().is_some_and(|c| c.tls)
                || e.signature
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://"));
            ("http", if tls { "HTTPS" } else { "HTTP" }.to_owned())
        }
        Some(p) => (p.name(), p.spec().label.to_owned()),
        // A `db.query` of no protocol we parse: the Python tool's ORM-level events.
        None if e.kind == "db.query" && lib.is_empty() => ("sql", "SQL".to_owned()),
        None if e.kind == "db.query" => ("sql", format!("SQL ({lib})")),
        None => ("other", e.kind.clone()),
    };
    DepType { key, label }
}

/// The exact command that replays this cassette (`timetracer-agent replay`); `-- CMD` is
/// appended when the cassette does not record the app's command line.
#[must_use]
pub fn replay_command(abs_path: &Path, c: &Cassette) -> String {
    let mut cmd = format!(
        "sudo timetracer-agent replay {}",
        shell_word(&abs_path.to_string_lossy())
    );
    if c.session.cmdline.as_ref().is_none_or(Vec::is_empty) {
        cmd.push_str(" -- CMD");
    }
    cmd
}

/// One row of the dashboard table (and the data its filters and sorting use).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Position in the page (DOM ids).
    pub n: usize,
    /// Path relative to the cassette directory, `/`-separated (what `serve` takes).
    pub rel: String,
    pub recorded_at: String,
    pub time: String,
    /// Unix seconds (0 when `recorded_at` does not parse).
    pub t: f64,
    pub method: String,
    pub path: String,
    pub target: String,
    pub endpoint: String,
    pub status: i64,
    pub status_text: String,
    /// Main class for colouring (`2xx` ... `5xx`, `exception`, `no-response`).
    pub status_class: &'static str,
    pub classes: Vec<&'static str>,
    pub duration_ms: f64,
    pub duration: String,
    pub deps: usize,
    /// Dependency types with their counts, in a stable order.
    pub dep_types: Vec<DepChip>,
    pub is_error: bool,
    pub slow: bool,
    pub service: String,
    pub env: String,
    pub legacy: bool,
    /// Tags from the directory's tags-and-notes store (`index::notes`), set by the collector.
    pub tags: Vec<String>,
    /// The note from the same store.
    pub note: String,
    /// Each dependency call as an edge sample of the endpoint's dependency graph.
    #[serde(skip)]
    pub edges: Vec<EdgeSample>,
}

/// One dependency call of a request: where it went and how long it took.
#[derive(Clone, Debug)]
pub struct EdgeSample {
    pub dep: DepType,
    /// Host (or server name) it went to; empty when the cassette does not say.
    pub dest: String,
    pub ms: f64,
}

/// A dependency type and how many calls of it a request made.
#[derive(Clone, Debug, Serialize)]
pub struct DepChip {
    pub key: &'static str,
    pub label: String,
    pub count: usize,
}

/// What the dashboard's script needs per row (embedded as JSON, escaped for `<script>`).
#[derive(Clone, Debug, Serialize)]
pub struct RowData {
    pub n: usize,
    pub rel: String,
    pub m: String,
    pub p: String,
    pub e: String,
    pub s: i64,
    pub c: Vec<&'static str>,
    pub d: f64,
    pub t: f64,
    pub k: Vec<&'static str>,
    pub deps: usize,
    /// Tags (lower case).
    pub g: Vec<String>,
}

impl Row {
    /// The row of cassette `c` stored at `rel`.
    #[must_use]
    pub fn new(n: usize, rel: &str, c: &Cassette) -> Self {
        let classes = status_classes(c);
        let mut chips: BTreeMap<DepType, usize> = BTreeMap::new();
        for e in &c.events {
            *chips.entry(dep_type(e)).or_default() += 1;
        }
        let status_class = if classes.contains(&"exception") {
            "exception"
        } else {
            classes[0]
        };
        Self {
            n,
            rel: rel.to_owned(),
            recorded_at: c.session.recorded_at.clone(),
            time: fmt_time(&c.session.recorded_at),
            t: crate::index::summary::parse_rfc3339(&c.session.recorded_at).unwrap_or(0.0),
            method: c.request.method.clone(),
            path: c.request.path.clone(),
            target: target(c),
            endpoint: endpoint(c),
            status: c.response.status,
            status_text: status_text(c),
            status_class,
            classes,
            duration_ms: c.response.duration_ms,
            duration: fmt_ms(c.response.duration_ms),
            deps: c.events.len(),
            dep_types: chips
                .into_iter()
                .map(|(t, count)| DepChip {
                    key: t.key,
                    label: t.label,
                    count,
                })
                .collect(),
            is_error: is_failure(c),
            slow: c.response.duration_ms >= SLOW_MS,
            service: c.session.service.clone(),
            env: c.session.env.clone(),
            legacy: c.is_python_legacy(),
            tags: Vec::new(),
            note: String::new(),
            edges: c
                .events
                .iter()
                .map(|e| EdgeSample {
                    dep: dep_type(e),
                    dest: event_host(e).unwrap_or_default(),
                    ms: e.duration_ms,
                })
                .collect(),
        }
    }

    /// The compact form the page's script filters and sorts on.
    #[must_use]
    pub fn data(&self) -> RowData {
        let mut k: Vec<&'static str> = self.dep_types.iter().map(|d| d.key).collect();
        k.dedup();
        RowData {
            n: self.n,
            rel: self.rel.clone(),
            m: self.method.clone(),
            p: self.target.clone(),
            e: self.endpoint.clone(),
            s: self.status,
            c: self.classes.clone(),
            d: self.duration_ms,
            t: self.t,
            k,
            deps: self.deps,
            g: self.tags.clone(),
        }
    }
}

/// A message body, ready to show.
#[derive(Clone, Debug, Serialize)]
pub struct BodyView {
    pub meta: String,
    pub text: String,
    pub kind: &'static str,
}

fn body_view(b: &Body) -> BodyView {
    let mut meta = Vec::new();
    let enc = match b.encoding {
        Some(BodyEncoding::Json) => "json",
        Some(BodyEncoding::Text) => "text",
        Some(BodyEncoding::Base64) => "base64",
        Some(BodyEncoding::Bytes) => "bytes",
        Some(BodyEncoding::Utf8) => "utf-8",
        Some(BodyEncoding::Unknown) => "?",
        None => "",
    };
    if !enc.is_empty() {
        meta.push(enc.to_owned());
    }
    if let Some(n) = b.size_bytes {
        meta.push(fmt_bytes(n));
    }
    if b.truncated {
        meta.push("truncated".to_owned());
    }
    if !b.redacted.is_empty() {
        meta.push(format!("redacted: {}", b.redacted.join(", ")));
    }
    if !b.captured {
        meta.push("not captured".to_owned());
    }
    if let Some(h) = &b.hash {
        meta.push(h.chars().take(19).collect::<String>() + "…");
    }
    let (text, kind) = match (&b.encoding, &b.data) {
        (Some(BodyEncoding::Json | BodyEncoding::Utf8), Some(v)) if !v.is_string() => {
            (serde_json::to_string_pretty(v).unwrap_or_default(), "json")
        }
        (Some(BodyEncoding::Base64), Some(Value::String(s))) => {
            let bytes = body_bytes(b);
            let shown = String::from_utf8_lossy(&bytes).into_owned();
            if shown.contains('\u{fffd}') {
                (format!("(binary, base64)\n{s}"), "text")
            } else {
                (shown, "text")
            }
        }
        (_, Some(Value::String(s))) => (s.clone(), "text"),
        (_, Some(v)) => (v.to_string(), "json"),
        (_, None) => (String::new(), "text"),
    };
    BodyView {
        meta: meta.join(" · "),
        text: cap(text),
        kind,
    }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let total = s.len();
        s.truncate(end);
        s.push_str(&format!(
            "\n… ({} more bytes: see the raw JSON)",
            total - end
        ));
    }
    s
}

/// One side (request or response) of an exchange.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MessageView {
    pub facts: Vec<Kv>,
    pub headers: Vec<Kv>,
    pub body: Option<BodyView>,
}

fn headers(list: Option<&Vec<(String, String)>>, map: &serde_json::Map<String, Value>) -> Vec<Kv> {
    match list {
        Some(l) if !l.is_empty() => l.iter().map(|(k, v)| kv(k, v.clone())).collect(),
        _ => map
            .iter()
            .map(|(k, v)| kv(k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect(),
    }
}

/// Kernel timings of one exchange, as phases.
#[derive(Clone, Debug, Serialize)]
pub struct Phases {
    pub facts: Vec<Kv>,
    pub segs: Vec<Seg>,
}

fn phases(t: &Timing, start: f64, end: f64, scale: f64, label_wait: &str) -> Phases {
    let x = |ms: f64| (ms * scale).clamp(0.0, AXIS);
    let mut facts = Vec::new();
    let mut segs = Vec::new();
    let rs = t.request_start.unwrap_or(start);
    if let Some(re) = t.request_end {
        facts.push(kv(
            "request sent",
            format!("{} → {}", fmt_ms(rs), fmt_ms(re)),
        ));
        segs.push(Seg {
            cls: "send",
            x: x(rs),
            w: (x(re) - x(rs)).max(0.0),
            title: format!("sending the request: {}", fmt_ms(re - rs)),
        });
        if let Some(fs) = t.response_start {
            facts.push(kv(
                "first response byte",
                format!(
                    "{} ({} after the request was sent)",
                    fmt_ms(fs),
                    fmt_ms(fs - re)
                ),
            ));
            segs.push(Seg {
                cls: "wait",
                x: x(re),
                w: (x(fs) - x(re)).max(0.0),
                title: format!("{label_wait}: {}", fmt_ms(fs - re)),
            });
            let le = t.response_end.unwrap_or(end);
            facts.push(kv("last response byte", fmt_ms(le)));
            segs.push(Seg {
                cls: "recv",
                x: x(fs),
                w: (x(le) - x(fs)).max(0.0),
                title: format!("receiving the response: {}", fmt_ms(le - fs)),
            });
        }
    }
    Phases { facts, segs }
}

/// One dependency call, ready to show.
#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    pub eid: u64,
    pub kind: String,
    pub dep: DepType,
    pub lib: String,
    pub method: String,
    /// One line: what the call asked for.
    pub label: String,
    pub destination: String,
    pub start: String,
    pub duration: String,
    pub start_ms: f64,
    pub end_ms: f64,
    pub status: String,
    pub is_error: bool,
    pub error: Option<String>,
    pub session_level: bool,
    pub ambiguous: bool,
    pub attribution: Option<String>,
    /// Bar on the waterfall (whole call, plus kernel phases when recorded).
    pub bar: Seg,
    pub phases: Vec<Seg>,
    pub timing: Vec<Kv>,
    pub parallel_with: Vec<u64>,
    pub facts: Vec<Kv>,
    pub blocks: Vec<Block>,
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("base64") => format!(
            "base64:{}",
            o.get("base64").and_then(Value::as_str).unwrap_or("")
        ),
        Value::Object(o) if o.contains_key("text") => o
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        other => other.to_string(),
    }
}

fn first_line(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > max {
        one.chars().take(max).collect::<String>() + "…"
    } else {
        one
    }
}

fn event_view(e: &Event, scale: f64) -> EventView {
    let dep = dep_type(e);
    let db = e.db.as_ref();
    let db_text = db_text(e);
    let mut facts = Vec::new();
    let mut blocks = Vec::new();
    let label = match (dep.key, db) {
        ("redis", Some(d)) => {
            let mut s = d
                .get("command")
                .map_or_else(|| e.signature.method.clone(), str_of);
            if let Some(Value::Array(args)) = d.get("args") {
                for a in args {
                    s.push(' ');
                    s.push_str(&str_of(a));
                }
            }
            first_line(&s, 160)
        }
        ("mongodb", Some(d)) => {
            let coll = d
                .get("collection")
                .map(str_of)
                .or_else(|| {
                    d.get("command")
                        .and_then(|c| c.get(&e.signature.method))
                        .map(str_of)
                })
                .unwrap_or_default();
            first_line(&format!("{} {coll}", e.signature.method), 160)
        }
        _ => match &db_text {
            Some(t) => first_line(t, 160),
            None => {
                let mut s = format!(
                    "{} {}",
                    e.signature.method,
                    e.signature.url.as_deref().unwrap_or("")
                );
                if let Some(q) = e.signature.query.as_ref().filter(|q| !q.is_empty()) {
                    s.push('?');
                    s.push_str(&query_text(q));
                }
                first_line(s.trim(), 200)
            }
        },
    };
    // Status / outcome.
    let db_error = db.and_then(|d| d.get("error")).filter(|v| !v.is_null());
    let redis_error = db
        .and_then(|d| d.get("reply"))
        .and_then(|r| r.get("error"))
        .map(str_of);
    let error = e
        .result
        .error
        .clone()
        .map(|err| match &e.result.error_type {
            Some(t) => format!("{t}: {err}"),
            None => err,
        })
        .or_else(|| {
            db_error.map(|v| match v {
                Value::Object(o) => {
                    let code = o.get("code").map(str_of).unwrap_or_default();
                    let msg = o
                        .get("message")
                        .map(str_of)
                        .unwrap_or_else(|| v.to_string());
                    if code.is_empty() {
                        msg
                    } else {
                        format!("{code}: {msg}")
                    }
                }
                other => str_of(other),
            })
        })
        .or(redis_error);
    let status = match (dep.key, e.result.status) {
        ("http", Some(s)) => {
            let mut t = s.to_string();
            if let Some(r) = &e.result.reason {
                t.push(' ');
                t.push_str(r);
            }
            t
        }
        ("http", None) => "no response".to_owned(),
        _ => match db
            .and_then(|d| d.get("command_tag"))
            .and_then(Value::as_str)
        {
            Some(tag) => tag.to_owned(),
            None if error.is_some() => "error".to_owned(),
            None => "ok".to_owned(),
        },
    };
    let is_error = error.is_some()
        || (dep.key == "http" && e.result.status.is_none_or(|s| s >= 400 || s == 0));

    // Facts and blocks.
    facts.push(kv("type", format!("{} ({})", dep.label, e.kind)));
    if !e.signature.lib.is_empty() {
        facts.push(kv("library", e.signature.lib.clone()));
    }
    if !e.signature.method.is_empty() {
        facts.push(kv("method", e.signature.method.clone()));
    }
    if let Some(u) = &e.signature.url {
        facts.push(kv("url", u.clone()));
    }
    if let Some(q) = e.signature.query.as_ref().filter(|q| !q.is_empty()) {
        facts.push(kv("query", query_text(q)));
    }
    if let Some(s) = e.result.status {
        facts.push(kv("status", s.to_string()));
    }
    if let Some(req_body) = e.request.as_ref().and_then(|r| r.body.as_ref()) {
        facts.push(kv(
            "request size",
            req_body.size_bytes.map_or_else(|| "?".into(), fmt_bytes),
        ));
    }
    if let Some(b) = &e.result.body {
        facts.push(kv(
            "response size",
            b.size_bytes.map_or_else(|| "?".into(), fmt_bytes),
        ));
    }
    if let Some(t) = &db_text {
        blocks.push(Block {
            title: if dep.key == "redis" {
                "Command"
            } else {
                "Statement"
            }
            .to_owned(),
            meta: String::new(),
            text: cap(t.clone()),
            kind: "sql",
        });
    }
    if let Some(d) = db {
        for (key, title) in [
            ("params", "Parameters"),
            ("args", "Arguments"),
            ("rows", "Rows"),
            ("reply", "Reply"),
            ("command", "Command document"),
            ("documents", "Documents"),
        ] {
            if dep.key == "redis" && key == "args" {
                continue; // already in the command line
            }
            if let Some(v) = d.get(key).filter(|v| !v.is_null() && !v.is_string()) {
                let mut meta = String::new();
                let total = d
                    .get("rows_total")
                    .and_then(Value::as_u64)
                    .filter(|_| key == "rows");
                if let Some(n) = total {
                    meta = format!("{n} rows");
                    if d.get("rows_truncated").and_then(Value::as_bool) == Some(true) {
                        meta.push_str(" (not all kept)");
                    }
                }
                blocks.push(Block {
                    title: title.to_owned(),
                    meta,
                    text: cap(serde_json::to_string_pretty(v).unwrap_or_default()),
                    kind: "json",
                });
            } else if let Some(Value::String(s)) = d.get(key).filter(|_| key == "reply") {
                blocks.push(Block {
                    title: title.to_owned(),
                    meta: String::new(),
                    text: cap(s.clone()),
                    kind: "text",
                });
            }
        }
        for key in ["command_tag", "transaction_status", "statement", "database"] {
            if let Some(v) = d.get(key).filter(|v| !v.is_null()) {
                facts.push(kv(key, str_of(v)));
            }
        }
        if let Some(v) = db_error {
            blocks.push(Block {
                title: "Server error".to_owned(),
                meta: String::new(),
                text: serde_json::to_string_pretty(v).unwrap_or_default(),
                kind: "error",
            });
        }
    }
    if let Some(r) = &e.request {
        let h = headers(Some(&r.header_list), &r.headers);
        if !h.is_empty() {
            blocks.push(Block {
                title: "Request headers".to_owned(),
                meta: String::new(),
                text: h
                    .iter()
                    .map(|x| format!("{}: {}", x.k, x.v))
                    .collect::<Vec<_>>()
                    .join("\n"),
                kind: "text",
            });
        }
        if let Some(b) = &r.body {
            let v = body_view(b);
            blocks.push(Block {
                title: "Request body".to_owned(),
                meta: v.meta,
                text: v.text,
                kind: v.kind,
            });
        }
    }
    let rh = headers(e.result.header_list.as_ref(), &e.result.headers);
    if !rh.is_empty() {
        blocks.push(Block {
            title: "Response headers".to_owned(),
            meta: String::new(),
            text: rh
                .iter()
                .map(|x| format!("{}: {}", x.k, x.v))
                .collect::<Vec<_>>()
                .join("\n"),
            kind: "text",
        });
    }
    if let Some(b) = &e.result.body {
        let v = body_view(b);
        blocks.push(Block {
            title: "Response body".to_owned(),
            meta: v.meta,
            text: v.text,
            kind: v.kind,
        });
    }
    if let Some(c) = &e.connection {
        let mut s = c.remote.clone().unwrap_or_else(|| "?".into());
        if c.tls {
            s.push_str(" · TLS");
            if let Some(n) = &c.server_name {
                s.push_str(&format!(" ({n})"));
            }
        }
        if c.preexisting {
            s.push_str(" · opened before tracing started");
        }
        facts.push(kv("connection", s));
        facts.push(kv(
            "socket",
            format!("pid {} fd {} conn {}", c.pid, c.fd, c.conn_id),
        ));
    }
    let (ambiguous, attribution) = match &e.attribution {
        Some(AttributionInfo::Exact { evidence, .. }) => {
            (false, Some(format!("exact ({evidence})")))
        }
        Some(AttributionInfo::Ambiguous { reason }) => (true, Some(format!("ambiguous: {reason}"))),
        None => (false, None),
    };
    if let Some(a) = &attribution {
        facts.push(kv("attribution", a.clone()));
    }
    if e.session_level {
        facts.push(kv(
            "session level",
            "yes (handshake / SET / ping: replay answers it whenever asked)",
        ));
    }

    let start_ms = e.start_offset_ms;
    let end_ms = e.start_offset_ms + e.duration_ms.max(0.0);
    let x = (start_ms * scale).clamp(0.0, AXIS);
    let w = ((end_ms - start_ms) * scale).max(2.0).min(AXIS - x);
    let bar = Seg {
        cls: "whole",
        x,
        w,
        title: format!(
            "#{} {}: starts at {}, takes {}",
            e.eid,
            label,
            fmt_ms(start_ms),
            fmt_ms(e.duration_ms)
        ),
    };
    let (timing, segs) = match &e.timing {
        Some(t) => {
            let p = phases(t, start_ms, end_ms, scale, "waiting for the first byte");
            (p.facts, p.segs)
        }
        None => (Vec::new(), Vec::new()),
    };
    EventView {
        eid: e.eid,
        kind: e.kind.clone(),
        destination: event_host(e).unwrap_or_default(),
        lib: e.signature.lib.clone(),
        method: e.signature.method.clone(),
        dep,
        label,
        start: fmt_ms(start_ms),
        duration: fmt_ms(e.duration_ms),
        start_ms,
        end_ms,
        status,
        is_error,
        error,
        session_level: e.session_level,
        ambiguous,
        attribution,
        bar,
        phases: segs,
        timing,
        parallel_with: Vec::new(),
        facts,
        blocks,
    }
}

/// The error of a request, ready to show.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorView {
    pub kind: String,
    /// The last line of the traceback (`ZeroDivisionError: division by zero`).
    pub headline: String,
    pub traceback: Option<String>,
}

/// How the calls of a request relate in time.
#[derive(Clone, Debug, Serialize)]
pub struct Concurrency {
    pub max_parallel: usize,
    pub text: String,
}

/// A whole cassette, ready to show (timeline page, dashboard detail, compare column).
#[derive(Clone, Debug, Serialize)]
pub struct CassetteView {
    /// DOM id prefix (unique in a page).
    pub uid: String,
    pub file: String,
    pub rel: String,
    pub id: String,
    pub schema_version: String,
    pub legacy: bool,
    pub generator: String,
    pub recorded_at: String,
    pub time: String,
    pub service: String,
    pub env: String,
    pub method: String,
    pub path: String,
    pub target: String,
    pub endpoint: String,
    pub status: i64,
    pub status_text: String,
    pub status_class: &'static str,
    pub is_error: bool,
    pub duration: String,
    pub duration_ms: f64,
    pub error: Option<ErrorView>,
    pub events: Vec<EventView>,
    pub dep_types: Vec<DepChip>,
    pub ticks: Vec<Tick>,
    pub inbound: Seg,
    pub inbound_phases: Vec<Seg>,
    pub inbound_timing: Vec<Kv>,
    pub concurrency: Concurrency,
    pub session: Vec<Kv>,
    pub request: MessageView,
    pub response: MessageView,
    pub replay_cmd: String,
    pub replay_needs_cmd: bool,
    pub notes: Vec<String>,
    pub raw: Vec<Token>,
    pub raw_note: Option<String>,
    /// Tags from the directory's tags-and-notes store (set by the caller; empty here).
    pub tags: Vec<String>,
    /// The note from the same store (not [`Self::notes`], which are the cassette's own).
    pub user_note: String,
    /// The inbound request as a curl command (what `timetracer export --to curl` writes),
    /// for the static page's download; empty unless the caller sets it.
    pub curl: String,
    /// The cassette's file name without its suffix (names of the downloads).
    pub download_name: String,
}

fn ticks(total: f64, scale: f64) -> Vec<Tick> {
    if total <= 0.0 {
        return vec![Tick {
            x: 0.0,
            label: "0".into(),
        }];
    }
    // A "nice" step: 1, 2 or 5 × 10^k giving 4 to 10 ticks.
    let raw = total / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| total / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut v = 0.0;
    while v <= total + step * 1e-9 {
        let label = if v == 0.0 {
            "0".to_owned()
        } else if step >= 1000.0 {
            format!("{} s", v / 1000.0)
        } else if step >= 1.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v:.2} ms")
        };
        out.push(Tick {
            x: (v * scale).min(AXIS),
            label,
        });
        v += step;
    }
    out
}

/// Marks overlapping calls (`parallel_with`) and summarises.
fn concurrency(events: &mut [EventView]) -> Concurrency {
    let n = events.len();
    for i in 0..n {
        for j in 0..n {
            if i != j
                && events[i].start_ms < events[j].end_ms
                && events[j].start_ms < events[i].end_ms
            {
                let other = events[j].eid;
                events[i].parallel_with.push(other);
            }
        }
    }
    // Sweep for the largest number of calls in flight at once.
    let mut points: Vec<(f64, i32)> = events
        .iter()
        .flat_map(|e| [(e.start_ms, 1), (e.end_ms, -1)])
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    let max = usize::try_from(max).unwrap_or(0);
    let overlapping = events
        .iter()
        .filter(|e| !e.parallel_with.is_empty())
        .count();
    let text = match (n, max) {
        (0, _) => "no dependency calls".to_owned(),
        (1, _) => "1 dependency call".to_owned(),
        (_, 0 | 1) => format!("{n} dependency calls, all sequential"),
        _ => format!(
            "{n} dependency calls: up to {max} in parallel ({overlapping} overlap another call)"
        ),
    };
    Concurrency {
        max_parallel: max,
        text,
    }
}

/// Builds the view of cassette `c`, read from `abs_path` (shown as `file`, `rel` under the
/// served directory). `raw` is the file's JSON as read (for the raw view).
#[must_use]
pub fn cassette_view(
    uid: &str,
    file: &str,
    rel: &str,
    abs_path: &Path,
    c: &Cassette,
    raw: Option<&Value>,
) -> CassetteView {
    let max_end = c
        .events
        .iter()
        .map(|e| e.start_offset_ms + e.duration_ms.max(0.0))
        .fold(c.response.duration_ms, f64::max);
    let total = if max_end > 0.0 { max_end } else { 1.0 };
    let scale = AXIS / total;
    let mut events: Vec<EventView> = c.events.iter().map(|e| event_view(e, scale)).collect();
    let conc = concurrency(&mut events);
    let row = Row::new(0, rel, c);

    let inbound = Seg {
        cls: "whole",
        x: 0.0,
        w: (c.response.duration_ms * scale).clamp(0.3, AXIS),
        title: format!(
            "{} {}: {}",
            c.request.method,
            c.request.path,
            fmt_ms(c.response.duration_ms)
        ),
    };
    let (inbound_timing, inbound_phases) = match &c.timing {
        Some(t) => {
            let p = phases(t, 0.0, c.response.duration_ms, scale, "the app working");
            (p.facts, p.segs)
        }
        None => (Vec::new(), Vec::new()),
    };

    let error = c.error.as_ref().map(|e| {
        let kind = match e.kind {
            ErrorKind::Exception => "exception",
            ErrorKind::ServerError => "server error",
            ErrorKind::NoResponse => "no response",
            ErrorKind::Unknown => "error",
        };
        let headline = e
            .traceback
            .as_deref()
            .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
            .map_or_else(|| format!("status {}", e.status), |l| l.trim().to_owned());
        ErrorView {
            kind: kind.to_owned(),
            headline,
            traceback: e.traceback.clone(),
        }
    });
    let error = error.or_else(|| {
        (c.response.status == 0 && c.is_python_legacy()).then(|| ErrorView {
            kind: "exception".into(),
            headline: "the app raised an exception (the Python tool records no traceback)".into(),
            traceback: None,
        })
    });

    let s = &c.session;
    let mut session = vec![
        kv("id", s.id.clone()),
        kv("recorded", fmt_time(&s.recorded_at)),
        kv("service", s.service.clone()),
        kv("environment", s.env.clone()),
    ];
    for (k, v) in [
        ("framework", &s.framework),
        ("python", &s.python_version),
        ("git sha", &s.git_sha),
    ] {
        if let Some(v) = v {
            session.push(kv(k, v.clone()));
        }
    }
    if let Some(pid) = s.pid {
        session.push(kv("pid", pid.to_string()));
    }
    if let Some(cmd) = &s.cmdline {
        session.push(kv("command", cmd.join(" ")));
    }
    session.push(kv("schema", c.schema_version.clone()));

    let mut req_facts = vec![kv("target", target(c))];
    if let Some(v) = &c.request.http_version {
        req_facts.push(kv("http", v.clone()));
    }
    if let Some(ip) = &c.request.client_ip {
        req_facts.push(kv("client", ip.clone()));
    }
    if let Some(conn) = &c.connection {
        if let Some(l) = &conn.local {
            req_facts.push(kv("server socket", l.clone()));
        }
        if conn.tls {
            req_facts.push(kv(
                "tls",
                conn.server_name.clone().unwrap_or_else(|| "yes".into()),
            ));
        }
    }
    let request = MessageView {
        facts: req_facts,
        headers: headers(c.request.header_list.as_ref(), &c.request.headers),
        body: c.request.body.as_ref().map(body_view),
    };
    let mut resp_facts = vec![kv("status", status_text(c))];
    if let Some(r) = &c.response.reason {
        resp_facts.push(kv("reason", r.clone()));
    }
    resp_facts.push(kv("duration", fmt_ms(c.response.duration_ms)));
    let response = MessageView {
        facts: resp_facts,
        headers: headers(c.response.header_list.as_ref(), &c.response.headers),
        body: c.response.body.as_ref().map(body_view),
    };

    let mut notes = Vec::new();
    if c.is_python_legacy() {
        notes.push(format!(
            "Recorded by the Python timetracer (schema {}): no kernel timings, no connection facts.",
            c.schema_version
        ));
    } else if c.timing.is_none() {
        notes.push("No kernel timings in this cassette.".to_owned());
    }
    if let Some(drops) = &c.stats.drops {
        let lost: Vec<String> = drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !lost.is_empty() {
            notes.push(format!(
                "The capture dropped data while recording ({}): some bytes may be missing.",
                lost.join(", ")
            ));
        }
    }
    if events.iter().any(|e| e.ambiguous) {
        notes.push(
            "Some calls could not be attributed to this request with certainty (marked \"ambiguous\")."
                .to_owned(),
        );
    }
    let (raw_tokens, raw_note) = match raw {
        Some(v) => json_view::tokens(v, json_view::MAX_RAW_BYTES),
        None => (Vec::new(), Some("raw JSON not available".to_owned())),
    };
    CassetteView {
        uid: uid.to_owned(),
        file: file.to_owned(),
        rel: rel.to_owned(),
        id: s.id.clone(),
        schema_version: c.schema_version.clone(),
        legacy: c.is_python_legacy(),
        generator: c
            .generator
            .as_ref()
            .map_or_else(String::new, |g| format!("{} {}", g.name, g.version)),
        recorded_at: s.recorded_at.clone(),
        time: fmt_time(&s.recorded_at),
        service: s.service.clone(),
        env: s.env.clone(),
        method: c.request.method.clone(),
        path: c.request.path.clone(),
        target: target(c),
        endpoint: endpoint(c),
        status: c.response.status,
        status_text: row.status_text,
        status_class: row.status_class,
        is_error: row.is_error,
        duration: fmt_ms(c.response.duration_ms),
        duration_ms: c.response.duration_ms,
        error,
        events,
        dep_types: row.dep_types,
        ticks: ticks(total, scale),
        inbound,
        inbound_phases,
        inbound_timing,
        concurrency: conc,
        session,
        request,
        response,
        replay_cmd: replay_command(abs_path, c),
        replay_needs_cmd: c.session.cmdline.as_ref().is_none_or(Vec::is_empty),
        notes,
        raw: raw_tokens,
        raw_note,
        tags: Vec::new(),
        user_note: String::new(),
        curl: String::new(),
        download_name: download_name(abs_path),
    }
}

/// Duration trend of one endpoint (an SVG sparkline).
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    pub endpoint: String,
    pub count: usize,
    pub errors: usize,
    pub p50: String,
    pub p95: String,
    pub max: String,
    /// `x,y x,y ...` for an SVG polyline in a 300 × 80 box.
    pub line: String,
    pub points: Vec<TrendPoint>,
}

/// One request on a trend chart.
#[derive(Clone, Debug, Serialize)]
pub struct TrendPoint {
    pub x: f64,
    pub y: f64,
    pub error: bool,
    pub title: String,
}

/// Width and height of a trend chart in SVG units.
pub const TREND_W: f64 = 300.0;
pub const TREND_H: f64 = 80.0;

/// The rows grouped by endpoint, the `max` endpoints with the most rows first (ties by name).
fn busiest_endpoints<'a>(
    rows: impl Iterator<Item = &'a Row>,
    max: usize,
) -> Vec<(&'a str, Vec<&'a Row>)> {
    let mut by: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by.entry(&r.endpoint).or_default().push(r);
    }
    let mut groups: Vec<(&str, Vec<&Row>)> = by.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    groups.truncate(max);
    groups
}

/// Trends of the `max` busiest endpoints among `rows`.
#[must_use]
pub fn trends(rows: &[Row], max: usize) -> Vec<Trend> {
    busiest_endpoints(rows.iter(), max)
        .into_iter()
        .map(|(ep, mut rs)| {
            rs.sort_by(|a, b| a.t.total_cmp(&b.t).then(a.rel.cmp(&b.rel)));
            let mut ds: Vec<f64> = rs.iter().map(|r| r.duration_ms).collect();
            ds.sort_by(f64::total_cmp);
            let p = |q: f64| percentile(&ds, q);
            let dmax = ds.last().copied().unwrap_or(0.0).max(1e-9);
            let (t0, t1) = (rs[0].t, rs[rs.len() - 1].t);
            let n = rs.len();
            let pad = 6.0;
            let points: Vec<TrendPoint> = rs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    // Time axis when the times differ, else request order.
                    let frac = if t1 > t0 {
                        (r.t - t0) / (t1 - t0)
                    } else if n > 1 {
                        i as f64 / (n - 1) as f64
                    } else {
                        0.5
                    };
                    TrendPoint {
                        x: pad + frac * (TREND_W - 2.0 * pad),
                        y: TREND_H - pad - (r.duration_ms / dmax) * (TREND_H - 2.0 * pad),
                        error: r.is_error,
                        title: format!("{} · {} · {}", r.time, r.duration, r.status_text),
                    }
                })
                .collect();
            let line = points
                .iter()
                .map(|p| format!("{:.1},{:.1}", p.x, p.y))
                .collect::<Vec<_>>()
                .join(" ");
            Trend {
                endpoint: ep.to_owned(),
                count: n,
                errors: rs.iter().filter(|r| r.is_error).count(),
                p50: fmt_ms(p(50.0)),
                p95: fmt_ms(p(95.0)),
                max: fmt_ms(dmax),
                line,
                points,
            }
        })
        .collect()
}

/// Width of a dependency graph in SVG units; nodes and edges are laid out in this box.
pub const GRAPH_W: f64 = 760.0;
/// Height of one dependency node, and the vertical pitch between two.
const NODE_H: f64 = 40.0;
const NODE_PITCH: f64 = 50.0;
/// The endpoint node's and the dependency nodes' left edge and width.
const EP_X: f64 = 0.0;
const EP_W: f64 = 240.0;
const DEP_X: f64 = 420.0;
const DEP_W: f64 = 340.0;
/// Labels longer than this are cut (the node's `<title>` has the whole text).
const NODE_CHARS: usize = 44;

/// The dependency graph of one endpoint: which services and databases its requests called,
/// with counts and latency per edge, laid out for an SVG (endpoint on the left, one node per
/// destination on the right).
#[derive(Clone, Debug, Serialize)]
pub struct EndpointGraph {
    pub endpoint: String,
    /// Its requests among the rows.
    pub requests: usize,
    pub height: f64,
    /// The endpoint node's vertical centre.
    pub cy: f64,
    pub label: String,
    pub edges: Vec<GraphEdge>,
}

/// One destination of an endpoint's calls.
#[derive(Clone, Debug, Serialize)]
pub struct GraphEdge {
    /// Dependency type key (colour) and label (`PostgreSQL`, `HTTPS`, …).
    pub key: &'static str,
    pub kind: String,
    /// Host or server name; `(unknown host)` when the cassettes do not say.
    pub dest: String,
    pub calls: usize,
    /// Requests of the endpoint that made at least one such call.
    pub in_requests: usize,
    pub p50: String,
    pub p95: String,
    /// Node top, the SVG path of the edge, its stroke width, the cut label and the stats line.
    pub y: f64,
    pub path: String,
    pub stroke: f64,
    pub label: String,
    pub stats: String,
    pub title: String,
}

/// Geometry constants the graph template uses.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GraphBox {
    pub w: f64,
    pub ep_x: f64,
    pub ep_w: f64,
    pub dep_x: f64,
    pub dep_w: f64,
    pub node_h: f64,
}

/// The layout every [`EndpointGraph`] uses.
pub const GRAPH_BOX: GraphBox = GraphBox {
    w: GRAPH_W,
    ep_x: EP_X,
    ep_w: EP_W,
    dep_x: DEP_X,
    dep_w: DEP_W,
    node_h: NODE_H,
};

/// `GET__users_42__1a2b3c4d` for `…/GET__users_42__1a2b3c4d.json.zst`.
#[must_use]
pub fn download_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::index::SUFFIXES
        .iter()
        .rev()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(&name)
        .to_owned()
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The dependency graphs of the `max` busiest endpoints among `rows` that made dependency
/// calls; edges by (type, destination), the most called first.
#[must_use]
pub fn dependency_graphs(rows: &[Row], max: usize) -> Vec<EndpointGraph> {
    busiest_endpoints(rows.iter().filter(|r| !r.edges.is_empty()), max)
        .into_iter()
        .map(|(ep, rs)| {
            // (type, destination) -> (durations, requests that called it)
            let mut edges: BTreeMap<(&DepType, &str), (Vec<f64>, usize)> = BTreeMap::new();
            for r in &rs {
                let mut seen = std::collections::BTreeSet::new();
                for e in &r.edges {
                    let k = (&e.dep, e.dest.as_str());
                    let entry = edges.entry(k).or_default();
                    entry.0.push(e.ms);
                    if seen.insert(k) {
                        entry.1 += 1;
                    }
                }
            }
            let mut edges: Vec<_> = edges.into_iter().collect();
            edges.sort_by(|a, b| b.1.0.len().cmp(&a.1.0.len()).then(a.0.cmp(&b.0)));
            let height = NODE_PITCH * edges.len().max(1) as f64;
            let cy = height / 2.0;
            let most = edges.first().map_or(1, |e| e.1.0.len()).max(1);
            let edges = edges
                .into_iter()
                .enumerate()
                .map(|(i, ((dep, dest), (mut ds, in_requests)))| {
                    ds.sort_by(f64::total_cmp);
                    let y = NODE_PITCH * i as f64 + (NODE_PITCH - NODE_H) / 2.0;
                    let ty = y + NODE_H / 2.0;
                    let (x0, x1) = (EP_X + EP_W, DEP_X);
                    let mid = f64::midpoint(x0, x1);
                    let dest = if dest.is_empty() {
                        "(unknown host)".to_owned()
                    } else {
                        dest.to_owned()
                    };
                    let calls = ds.len();
                    let (p50, p95) = (fmt_ms(percentile(&ds, 50.0)), fmt_ms(percentile(&ds, 95.0)));
                    let stats = format!(
                        "{calls} call{} in {in_requests} of {} requests · p50 {p50} · p95 {p95}",
                        if calls == 1 { "" } else { "s" },
                        rs.len()
                    );
                    let full = format!("{} {dest}", dep.label);
                    GraphEdge {
                        key: dep.key,
                        kind: dep.label.clone(),
                        title: format!("{ep} → {full}: {stats}"),
                        label: cut(&full, NODE_CHARS),
                        dest,
                        calls,
                        in_requests,
                        p50,
                        p95,
                        y,
                        path: format!(
                            "M{x0:.1},{cy:.1} C{mid:.1},{cy:.1} {mid:.1},{ty:.1} {x1:.1},{ty:.1}"
                        ),
                        stroke: 1.5 + 4.5 * calls as f64 / most as f64,
                        stats,
                    }
                })
                .collect();
            EndpointGraph {
                endpoint: ep.to_owned(),
                requests: rs.len(),
                height,
                cy,
                label: cut(ep, 34),
                edges,
            }
        })
        .collect()
}

/// Totals shown in the dashboard's cards.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub total: usize,
    pub ok: usize,
    pub client_errors: usize,
    pub server_errors: usize,
    pub exceptions: usize,
    pub p50: String,
    pub p95: String,
}

/// Totals over `rows`.
#[must_use]
pub fn totals(rows: &[Row]) -> Totals {
    let mut ds: Vec<f64> = rows.iter().map(|r| r.duration_ms).collect();
    ds.sort_by(f64::total_cmp);
    let p = |q: f64| {
        if ds.is_empty() {
            "–".to_owned()
        } else {
            fmt_ms(percentile(&ds, q))
        }
    };
    Totals {
        total: rows.len(),
        ok: rows.iter().filter(|r| !r.is_error).count(),
        client_errors: rows.iter().filter(|r| r.classes.contains(&"4xx")).count(),
        server_errors: rows.iter().filter(|r| r.classes.contains(&"5xx")).count(),
        exceptions: rows
            .iter()
            .filter(|r| r.classes.contains(&"exception") || r.classes.contains(&"no-response"))
            .count(),
        p50: p(50.0),
        p95: p(95.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, lib: &str) -> Event {
        Event {
            kind: kind.into(),
            signature: crate::cassette::format::Signature {
                lib: lib.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn dependency_types_are_named() {
        let label = |k, l| dep_type(&ev(k, l)).label;
        assert_eq!(label("http.client", "httpx"), "HTTP");
        assert_eq!(label("db.query", "postgres"), "PostgreSQL");
        assert_eq!(label("db.query", "mysql"), "MySQL");
        assert_eq!(label("db.query", "mongodb"), "MongoDB");
        assert_eq!(label("db.query", "motor"), "MongoDB");
        assert_eq!(label("db.query", "sqlalchemy"), "SQL (sqlalchemy)");
        assert_eq!(label("redis", "redis"), "Redis");
        assert_eq!(label("grpc", "x"), "grpc");
        for (k, l) in [
            ("http.client", ""),
            ("db.query", ""),
            ("redis", ""),
            ("db.query", "x"),
        ] {
            assert_ne!(label(k, l).to_lowercase(), "unknown");
        }
    }

    #[test]
    fn dependency_graph_per_endpoint() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/ui/POST__orders_17_checkout__7d1c9a52.json");
        let c = crate::cassette::read(&path).unwrap();
        let mut rows = vec![Row::new(0, "a.json", &c), Row::new(1, "b.json", &c)];
        rows[1].edges.truncate(2); // the second request made only its first two calls
        let g = dependency_graphs(&rows, 10);
        assert_eq!(g.len(), 1);
        let g = &g[0];
        assert_eq!(g.endpoint, rows[0].endpoint);
        assert_eq!(g.requests, 2);
        let by: Vec<(&str, &str, usize, usize)> = g
            .edges
            .iter()
            .map(|e| (e.kind.as_str(), e.dest.as_str(), e.calls, e.in_requests))
            .collect();
        // Most called first; PostgreSQL: 2 + 1 calls, in both requests.
        assert_eq!(by[0], ("PostgreSQL", "127.0.0.1:5432", 3, 2), "{by:?}");
        assert_eq!(by.len(), 6, "{by:?}");
        assert!(
            by.contains(&("HTTPS", "pricing.internal:8443", 1, 1)),
            "{by:?}"
        );
        assert!(by.contains(&("Redis", "127.0.0.1:6379", 2, 2)), "{by:?}");
        let pg = &g.edges[0];
        assert_eq!((pg.p50.as_str(), pg.p95.as_str()), ("3.10 ms", "3.10 ms"));
        assert_eq!(
            pg.stats,
            "3 calls in 2 of 2 requests · p50 3.10 ms · p95 3.10 ms"
        );
        // Layout: one node per edge, inside the box, edges from the endpoint node.
        assert_eq!(g.height, NODE_PITCH * 6.0);
        for e in &g.edges {
            assert!(e.y >= 0.0 && e.y + NODE_H <= g.height);
            assert!(
                e.path
                    .starts_with(&format!("M{:.1},{:.1}", EP_X + EP_W, g.cy))
            );
            assert!(e.stroke >= 1.5 && e.stroke <= 6.0);
        }
        // Requests without calls make no graph.
        let mut quiet = Row::new(2, "c.json", &c);
        quiet.edges.clear();
        assert!(dependency_graphs(&[quiet], 10).is_empty());
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ms(0.4213), "0.42 ms");
        assert_eq!(fmt_ms(17.38), "17.4 ms");
        assert_eq!(fmt_ms(1234.0), "1.23 s");
        assert_eq!(
            fmt_time("2026-11-22T23:28:08.792058+00:00"),
            "2026-11-22 23:28:08.792 UTC"
        );
        assert_eq!(fmt_time("garbage"), "garbage");
        let t = ticks(17.4, AXIS / 17.4);
        assert_eq!(t[0].label, "0");
        assert_eq!(t[1].label, "5 ms");
        assert!(t.len() >= 4 && t.len() <= 7, "{t:?}");
    }
}
