//! Cassettes as HAR 1.2 (`to_har`), curl commands (`to_curl`) or a Postman Collection v2.1
//! (`to_postman`): `timetracer export` and the dashboard server's export.
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

/// The headers and body of a dependency call's request (none recorded: no headers, no body).
fn event_request(e: &Event) -> (Vec<(String, String)>, Option<&Body>) {
    e.request.as_ref().map_or((Vec::new(), None), |r| {
        (
            header_pairs(&r.headers, Some(&r.header_list)),
            r.body.as_ref(),
        )
    })
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
            let (qh, qb) = event_request(e);
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
                let (h, b) = event_request(e);
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

/// The schema URL a Postman Collection v2.1 names in `info.schema`.
pub const POSTMAN_SCHEMA: &str =
    "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

/// Postman headers (`key`, `value`); a value redacted when recorded says so in its description
/// and starts disabled, so the request is not sent with the placeholder by accident.
fn postman_headers(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .filter(|(k, _)| !SKIP_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s)))
            .map(|(k, v)| {
                if v == crate::redact::REDACTED {
                    json!({"key": k, "value": v, "disabled": true,
                           "description": "redacted when recorded: fill it in"})
                } else {
                    json!({"key": k, "value": v})
                }
            })
            .collect(),
    )
}

/// A Postman `url` object: `raw`, and its parts. `base` is `{{baseUrl}}` for the app's own
/// requests (a collection variable), a real `scheme://host[:port]` for dependency calls.
fn postman_url(base: &str, target: &str) -> Value {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut url = json!({
        "raw": format!("{base}{target}"),
        "path": path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
    });
    if let Some((scheme, authority)) = base.split_once("://") {
        // `host:port`, `[v6]:port`; a bare `[v6]` has no port.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p))
                if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && (!h.contains(':') || h.ends_with(']')) =>
            {
                (h, Some(p))
            }
            _ => (authority, None),
        };
        url["protocol"] = scheme.into();
        url["host"] = host.split('.').collect::<Vec<_>>().into();
        if let Some(p) = port {
            url["port"] = p.into();
        }
    } else {
        url["host"] = json!([base]);
    }
    if !query.is_empty() {
        url["query"] = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').map_or((kv, None), |(k, v)| (k, Some(v)));
                json!({"key": k, "value": v})
            })
            .collect::<Vec<_>>()
            .into();
    }
    url
}

/// A Postman `body`: raw text (JSON marked as such); a binary body is left out, with a note.
fn postman_body(b: &Body, notes: &mut Vec<String>) -> Option<Value> {
    match body_text(b) {
        (Some(text), None) => {
            let mut body = json!({"mode": "raw", "raw": text});
            if b.encoding == Some(BodyEncoding::Json) {
                body["options"] = json!({"raw": {"language": "json"}});
            }
            Some(body)
        }
        (Some(_), Some(_)) => {
            notes.push(format!(
                "The recorded body is binary ({} bytes) and is not in the collection.",
                b.size_bytes.unwrap_or_default()
            ));
            None
        }
        _ => {
            notes.push("The body was not captured when recorded.".to_owned());
            None
        }
    }
}

/// One Postman item: the request, with the recorded response as its saved example.
#[expect(
    clippy::too_many_arguments,
    reason = "one request and its recorded response have this many parts"
)]
fn postman_item(
    name: String,
    method: &str,
    url: Value,
    req_headers: &[(String, String)],
    req_body: Option<&Body>,
    status: Option<i64>,
    reason: Option<&str>,
    resp_headers: &[(String, String)],
    resp_body: Option<&Body>,
    duration_ms: f64,
    mut notes: Vec<String>,
) -> Value {
    let mut request = json!({
        "method": method,
        "header": postman_headers(req_headers),
        "url": url,
    });
    if let Some(b) = req_body.and_then(|b| postman_body(b, &mut notes)) {
        request["body"] = b;
    }
    if req_headers
        .iter()
        .any(|(_, v)| v == crate::redact::REDACTED)
    {
        notes.push("Headers redacted when recorded are disabled: fill them in.".to_owned());
    }
    request["description"] = notes.join("\n\n").into();
    let mut response = json!({
        "name": format!("recorded ({})", status.unwrap_or(0)),
        "originalRequest": request.clone(),
        "status": reason.unwrap_or(""),
        "code": status.unwrap_or(0),
        "header": postman_headers(resp_headers),
        "responseTime": duration_ms,
        "body": Value::Null,
    });
    if let Some(b) = resp_body
        && let (Some(text), None) = body_text(b)
    {
        response["body"] = text.into();
        if b.encoding == Some(BodyEncoding::Json) {
            response["_postman_previewlanguage"] = "json".into();
        }
    }
    json!({"name": name, "request": request, "response": [response]})
}

/// A Postman Collection v2.1 of `cassettes`: one item per recorded request against the
/// `{{baseUrl}}` collection variable (`base`, else the first request's scheme and `Host`),
/// with the recorded response as the item's example; with `deps`, a folder of the HTTP
/// dependency calls at their recorded URLs. Values redacted when recorded stay `[REDACTED]`.
#[must_use]
pub fn to_postman(cassettes: &[(PathBuf, Cassette)], deps: bool, base: Option<&str>) -> Value {
    let mut items = Vec::new();
    let mut dep_items = Vec::new();
    let mut base_url = base.map(|b| b.trim_end_matches('/').to_owned());
    for (path, c) in cassettes {
        let rh = header_pairs(&c.request.headers, c.request.header_list.as_ref());
        base_url.get_or_insert_with(|| inbound_base(c, &rh));
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".json").next())
            .and_then(|s| s.rsplit_once("__"))
            .map_or("", |(_, id)| id);
        let target = inbound_target(c);
        let name = format!("{} {target} ({id})", c.request.method);
        let resp_h = header_pairs(&c.response.headers, c.response.header_list.as_ref());
        items.push(postman_item(
            name.clone(),
            &c.request.method,
            postman_url("{{baseUrl}}", &target),
            &rh,
            c.request.body.as_ref(),
            Some(c.response.status),
            c.response.reason.as_deref(),
            &resp_h,
            c.response.body.as_ref(),
            c.response.duration_ms,
            vec![format!(
                "Recorded by timetracer at {} ({}).",
                c.session.recorded_at,
                path.display()
            )],
        ));
        if !deps {
            continue;
        }
        for e in c.events.iter().filter(|e| e.kind == "http.client") {
            let (qh, qb) = event_request(e);
            let full = event_url(e);
            let (origin, target) = match full.find("://").map(|i| i + 3) {
                Some(i) => full[i..]
                    .find('/')
                    .map_or((full.as_str(), "/"), |j| full.split_at(i + j)),
                None => ("", full.as_str()),
            };
            let rh = header_pairs(&e.result.headers, e.result.header_list.as_ref());
            dep_items.push(postman_item(
                format!("{name} #{} {} {full}", e.eid, e.signature.method),
                &e.signature.method,
                postman_url(origin, target),
                &qh,
                qb,
                e.result.status,
                e.result.reason.as_deref(),
                &rh,
                e.result.body.as_ref(),
                e.duration_ms,
                vec![format!(
                    "Dependency call #{} ({}) made while serving {name}.",
                    e.eid, e.signature.lib
                )],
            ));
        }
    }
    if !dep_items.is_empty() {
        items.push(json!({
            "name": "Dependency calls",
            "description": "The HTTP calls the app made while serving the requests above, at their recorded URLs.",
            "item": dep_items,
        }));
    }
    json!({
        "info": {
            "name": format!("timetracer: {} recorded request(s)", cassettes.len()),
            "description": "Exported by timetracer export --format postman. Set the baseUrl variable to the app's address.",
            "schema": POSTMAN_SCHEMA,
        },
        "item": items,
        "variable": [{
            "key": "baseUrl",
            "value": base_url.unwrap_or_else(|| "http://localhost:8000".to_owned()),
            "type": "string",
        }],
    })
}
