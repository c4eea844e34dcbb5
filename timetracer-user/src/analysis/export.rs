//! Cassettes as HAR 1.2 (`to_har`) or curl commands (`to_curl`): `timetracer export` and the
//! dashboard server's export.
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::analysis::format::shell_quote;
use crate::cassette::Cassette;
use crate::cassette::format::{Body, BodyEncoding, Event, JsonMap, Timing};
use crate::index::summary::parse_rfc3339;

fn fmt_time(unix: f64) -> String {
    let ns = (unix * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

fn header_pairs(map: &JsonMap, list: Option<&Vec<(String, String)>>) -> Vec<(String, String)> {
    match list {
        Some(l) if !l.is_empty() => l.clone(),
        _ => map
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect(),
    }
}

fn query_pairs(q: &JsonMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in q {
        match v {
            Value::Array(a) => {
                for x in a {
                    out.push((
                        k.clone(),
                        x.as_str().map_or_else(|| x.to_string(), str::to_owned),
                    ));
                }
            }
            Value::String(s) => out.push((k.clone(), s.clone())),
            other => out.push((k.clone(), other.to_string())),
        }
    }
    out
}

fn header(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Scheme and authority of the inbound request.
fn inbound_base(c: &Cassette, headers: &[(String, String)]) -> String {
    let tls = c.connection.as_ref().is_some_and(|x| x.tls);
    let scheme = if tls { "https" } else { "http" };
    let host = header(headers, "host").unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}")
}

fn inbound_target(c: &Cassette) -> String {
    if let Some(t) = c.request.target.as_ref().filter(|t| t.starts_with('/')) {
        return t.clone();
    }
    let q = query_pairs(&c.request.query);
    if q.is_empty() {
        c.request.path.clone()
    } else {
        format!("{}?{}", c.request.path, crate::urls::query_string(&q))
    }
}

fn event_url(e: &Event) -> String {
    let base = e.signature.url.clone().unwrap_or_default();
    match e
        .signature
        .query
        .as_ref()
        .map(query_pairs)
        .filter(|q| !q.is_empty())
    {
        Some(q) => format!("{base}?{}", crate::urls::query_string(&q)),
        None => base,
    }
}

fn har_headers(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

fn har_query(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

fn body_text(b: &Body) -> (Option<String>, Option<&'static str>) {
    match (b.encoding, &b.data) {
        (Some(BodyEncoding::Json), Some(v)) => {
            (Some(serde_json::to_string(v).unwrap_or_default()), None)
        }
        (Some(BodyEncoding::Text | BodyEncoding::Utf8), Some(Value::String(s))) => {
            (Some(s.clone()), None)
        }
        (Some(BodyEncoding::Base64), Some(Value::String(s))) => (Some(s.clone()), Some("base64")),
        _ => (None, None),
    }
}

fn har_timings(t: Option<&Timing>, duration: f64) -> (Value, f64) {
    let pos = |x: f64| if x.is_finite() && x >= 0.0 { x } else { 0.0 };
    let (send, wait, receive) = match t {
        Some(Timing {
            request_start: Some(a),
            request_end: Some(b),
            response_start: Some(c),
            response_end: Some(d),
        }) => (pos(b - a), pos(c - b), pos(d - c)),
        _ => (0.0, pos(duration), 0.0),
    };
    (
        json!({"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": send, "wait": wait, "receive": receive}),
        send + wait + receive,
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "one HAR entry has this many parts"
)]
fn har_entry(
    started: f64,
    method: &str,
    url: &str,
    http_version: &str,
    req_headers: &[(String, String)],
    query: &[(String, String)],
    req_body: Option<&Body>,
    status: Option<i64>,
    reason: Option<&str>,
    resp_headers: &[(String, String)],
    resp_body: Option<&Body>,
    timing: Option<&Timing>,
    duration: f64,
    extra: Value,
) -> Value {
    let mut request = json!({
        "method": method,
        "url": url,
        "httpVersion": http_version,
        "cookies": [],
        "headers": har_headers(req_headers),
        "queryString": har_query(query),
        "headersSize": -1,
        "bodySize": req_body.and_then(|b| b.size_bytes).map_or(0, |n| n as i64),
    });
    if let Some(b) = req_body {
        let (text, encoding) = body_text(b);
        let mime = header(req_headers, "content-type").unwrap_or_default();
        let text = match encoding {
            // HAR postData has no encoding field: decode base64 lossily.
            Some(_) => text
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            None => text,
        };
        request["postData"] = json!({"mimeType": mime, "text": text.unwrap_or_default()});
    }
    let mut content = json!({
        "size": resp_body.and_then(|b| b.size_bytes).map_or(0, |n| n as i64),
        "mimeType": header(resp_headers, "content-type").unwrap_or_else(|| "x-unknown".to_owned()),
    });
    if let Some(b) = resp_body {
        let (text, encoding) = body_text(b);
        if let Some(t) = text {
            content["text"] = t.into();
        }
        if let Some(e) = encoding {
            content["encoding"] = e.into();
        }
    }
    let (timings, time) = har_timings(timing, duration);
    let mut entry = json!({
        "startedDateTime": fmt_time(started),
        "time": time,
        "request": request,
        "response": {
            "status": status.unwrap_or(0),
            "statusText": reason.unwrap_or(""),
            "httpVersion": http_version,
            "cookies": [],
            "headers": har_headers(resp_headers),
            "content": content,
            "redirectURL": header(resp_headers, "location").unwrap_or_default(),
            "headersSize": -1,
            "bodySize": resp_body.and_then(|b| b.size_bytes).map_or(-1, |n| n as i64),
        },
        "cache": {},
        "timings": timings,
    });
    if let (Value::Object(e), Value::Object(x)) = (&mut entry, extra) {
        e.extend(x);
    }
    entry
}

/// The HAR 1.2 document for `cassettes` (inbound requests, plus HTTP dependency calls).
#[must_use]
pub fn to_har(cassettes: &[(PathBuf, Cassette)], deps: bool) -> Value {
    let mut entries = Vec::new();
    for (path, c) in cassettes {
        let t0 = parse_rfc3339(&c.session.recorded_at).unwrap_or(0.0);
        let rh = header_pairs(&c.request.headers, c.request.header_list.as_ref());
        let url = format!("{}{}", inbound_base(c, &rh), inbound_target(c));
        let ver = format!(
            "HTTP/{}",
            c.request.http_version.as_deref().unwrap_or("1.1")
        );
        let resp_h = header_pairs(&c.response.headers, c.response.header_list.as_ref());
        entries.push(har_entry(
            t0,
            &c.request.method,
            &url,
            &ver,
            &rh,
            &query_pairs(&c.request.query),
            c.request.body.as_ref(),
            Some(c.response.status),
            c.response.reason.as_deref(),
            &resp_h,
            c.response.body.as_ref(),
            c.timing.as_ref(),
            c.response.duration_ms,
            json!({"_timetracer": {"cassette": path.display().to_string(), "session_id": c.session.id, "kind": "inbound"}}),
        ));
        if !deps {
            continue;
        }
        for e in c.events.iter().filter(|e| e.kind == "http.client") {
            let (qh, qb) = e.request.as_ref().map_or((Vec::new(), None), |r| {
                (
                    header_pairs(&r.headers, Some(&r.header_list)),
                    r.body.as_ref(),
                )
            });
            let q = e
                .signature
                .query
                .as_ref()
                .map(query_pairs)
                .unwrap_or_default();
            let rh = header_pairs(&e.result.headers, e.result.header_list.as_ref());
            entries.push(har_entry(
                t0 + e.start_offset_ms / 1000.0,
                &e.signature.method,
                &event_url(e),
                "HTTP/1.1",
                &qh,
                &q,
                qb,
                e.result.status,
                e.result.reason.as_deref(),
                &rh,
                e.result.body.as_ref(),
                None,
                e.duration_ms,
                json!({"_timetracer": {"cassette": path.display().to_string(), "session_id": c.session.id, "kind": "dependency", "eid": e.eid, "lib": e.signature.lib}}),
            ));
        }
    }
    entries.sort_by(|a, b| {
        a["startedDateTime"]
            .as_str()
            .cmp(&b["startedDateTime"].as_str())
    });
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "timetracer", "version": env!("CARGO_PKG_VERSION")},
            "entries": entries,
        }
    })
}

const SKIP_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

fn curl_cmd(method: &str, url: &str, headers: &[(String, String)], body: Option<&Body>) -> String {
    let mut parts = vec![
        "curl".to_owned(),
        "-sS".to_owned(),
        "-X".to_owned(),
        shell_quote(method),
        shell_quote(url),
    ];
    let mut notes = Vec::new();
    for (k, v) in headers {
        if SKIP_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            continue;
        }
        if v == crate::redact::REDACTED {
            notes.push(format!("# {k} was redacted when recorded: fill it in"));
        }
        parts.push("-H".to_owned());
        parts.push(shell_quote(&format!("{k}: {v}")));
    }
    let mut prefix = String::new();
    if let Some(b) = body {
        match body_text(b) {
            (Some(t), None) => {
                parts.push("--data-binary".to_owned());
                parts.push(shell_quote(&t));
            }
            (Some(t), Some(_)) => {
                prefix = format!("printf %s {} | base64 -d | ", shell_quote(&t));
                parts.push("--data-binary".to_owned());
                parts.push("@-".to_owned());
            }
            _ => notes.push("# the body was not captured".to_owned()),
        }
    }
    let mut s = String::new();
    for n in notes {
        s.push_str(&n);
        s.push('\n');
    }
    s.push_str(&prefix);
    s.push_str(&parts.join(" "));
    s
}

pub fn to_curl(cassettes: &[(PathBuf, Cassette)], deps: bool, base: Option<&str>) -> String {
    let mut s = String::from("#!/bin/sh\n# generated by timetracer export --to curl\n");
    for (path, c) in cassettes {
        s.push_str(&format!(
            "\n# {} ({} {} -> {})\n",
            path.display(),
            c.request.method,
            c.request.path,
            c.response.status
        ));
        if deps {
            for e in c.events.iter().filter(|e| e.kind == "http.client") {
                let (h, b) = e.request.as_ref().map_or((Vec::new(), None), |r| {
                    (
                        header_pairs(&r.headers, Some(&r.header_list)),
                        r.body.as_ref(),
                    )
                });
                s.push_str(&format!("# event #{} ({})\n", e.eid, e.signature.lib));
                s.push_str(&curl_cmd(&e.signature.method, &event_url(e), &h, b));
                s.push('\n');
            }
        } else {
            let h = header_pairs(&c.request.headers, c.request.header_list.as_ref());
            let base = base.map_or_else(
                || inbound_base(c, &h),
                |b| b.trim_end_matches('/').to_owned(),
            );
            s.push_str(&curl_cmd(
                &c.request.method,
                &format!("{base}{}", inbound_target(c)),
                &h,
                c.request.body.as_ref(),
            ));
            s.push('\n');
        }
    }
    s
}
