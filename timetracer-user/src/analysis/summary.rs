//! What a cassette is about, in one line each: its endpoint, its request target, its status,
//! whether it (or one of its calls) failed, where a call went.
use serde_json::Value;

use crate::cassette::Cassette;
use crate::cassette::format::{ErrorKind, Event};
use crate::urls::url_host;

/// Whether the request failed: status 0 or >= 400, or an `error` object.
#[must_use]
pub fn is_failure(c: &Cassette) -> bool {
    c.response.status == 0 || c.response.status >= 400 || c.error.is_some()
}

/// Whether a dependency call failed: an error, or an HTTP call answered >= 400 or 0.
#[must_use]
pub fn call_failed(e: &Event) -> bool {
    e.result.error.is_some()
        || (e.kind == "http.client" && e.result.status.is_some_and(|s| s >= 400 || s == 0))
}

/// Destination host of an event: the URL's `host[:port]`, else the connection's TLS name or
/// remote address, lower-cased.
#[must_use]
pub fn event_host(e: &Event) -> Option<String> {
    if let Some(h) = e.signature.url.as_deref().and_then(url_host) {
        return Some(h);
    }
    let conn = e.connection.as_ref()?;
    conn.server_name
        .clone()
        .or_else(|| conn.remote.clone())
        .map(|h| h.to_ascii_lowercase())
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

/// Replaces id-like path segments (numbers, UUIDs, long hex) by `{id}`.
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

/// `METHOD /route` with ids replaced by `{id}` (or the recorded route template).
#[must_use]
pub fn endpoint(c: &Cassette) -> String {
    let p = c
        .request
        .route_template
        .clone()
        .unwrap_or_else(|| normalize_path(&c.request.path));
    format!("{} {p}", c.request.method)
}

/// The request line's target: the raw target when recorded, else path + query (shown, not
/// re-encoded).
#[must_use]
pub fn target(c: &Cassette) -> String {
    if let Some(t) = &c.request.target {
        return t.clone();
    }
    let mut s = c.request.path.clone();
    if !c.request.query.is_empty() {
        s.push('?');
        s.push_str(&query_text(&c.request.query));
    }
    s
}

/// A query map shown as `k=v&k=v2` (values as recorded, not re-encoded).
#[must_use]
pub fn query_text(q: &serde_json::Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (k, v) in q {
        match v {
            Value::Array(a) => {
                for x in a {
                    parts.push(format!("{k}={}", x.as_str().unwrap_or(&x.to_string())));
                }
            }
            Value::String(s) => parts.push(format!("{k}={s}")),
            other => parts.push(format!("{k}={other}")),
        }
    }
    parts.join("&")
}

/// The classes a response belongs to, for display and filtering: `1xx`..`5xx`, plus
/// `exception` (a traceback was captured, or a Python-tool cassette with status 0, which is
/// how that tool records an exception) and `no-response` (the connection ended first).
#[must_use]
pub fn status_classes(c: &Cassette) -> Vec<&'static str> {
    let mut out = Vec::new();
    let s = c.response.status;
    match s {
        100..=199 => out.push("1xx"),
        200..=299 => out.push("2xx"),
        300..=399 => out.push("3xx"),
        400..=499 => out.push("4xx"),
        500..=599 => out.push("5xx"),
        _ => {}
    }
    let exception = c.error.as_ref().is_some_and(|e| {
        e.kind == ErrorKind::Exception || e.traceback.as_deref().is_some_and(|t| !t.is_empty())
    }) || (s == 0 && c.is_python_legacy());
    if exception {
        out.push("exception");
    }
    if s == 0 && !exception {
        out.push("no-response");
    }
    if out.is_empty() {
        out.push("other");
    }
    out
}

/// `200`, `500 · exception`, `exception`, `no response`.
#[must_use]
pub fn status_text(c: &Cassette) -> String {
    let mut parts = Vec::new();
    if c.response.status != 0 {
        parts.push(c.response.status.to_string());
    }
    for k in status_classes(c) {
        match k {
            "exception" => parts.push("exception".to_owned()),
            "no-response" => parts.push("no response".to_owned()),
            _ => {}
        }
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalize_ids() {
        assert_eq!(
            normalize_path("/users/42/orders/7"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(
            normalize_path("/x/0a1420f6-474d-408a-82e3-0a1420f6e065"),
            "/x/{id}"
        );
        let mut c = Cassette {
            startup: None,
            schema_version: "2.0".into(),
            generator: None,
            session: crate::cassette::format::Session::default(),
            request: crate::cassette::format::Request {
                method: "GET".into(),
                path: "/users/42".into(),
                ..Default::default()
            },
            response: crate::cassette::format::Response::default(),
            error: None,
            events: Vec::new(),
            db_sessions: Vec::new(),
            connection: None,
            timing: None,
            policies: Default::default(),
            stats: Default::default(),
        };
        assert_eq!(endpoint(&c), "GET /users/{id}");
        c.request.route_template = Some("/users/{user_id}".into());
        assert_eq!(endpoint(&c), "GET /users/{user_id}");
        c.request
            .query
            .insert("a".into(), serde_json::json!(["1", "2"]));
        assert_eq!(target(&c), "/users/42?a=1&a=2");
    }
}
