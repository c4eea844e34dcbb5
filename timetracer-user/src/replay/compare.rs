//! Comparing what the app did in replay with what it did when recorded: JSON compared
//! structurally (first differing path) by [`crate::analysis::json`], the comparison
//! `timetracer diff` uses too; volatile response headers ignored.
use serde_json::Value;

use super::ledger::Diff;
use crate::analysis::json::{self, Kind};
use crate::cassette::body_bytes;
use crate::cassette::format::{Body, BodyEncoding, JsonMap, Response};
use crate::redact::REDACTED;

/// Response headers that differ between runs of the same code.
pub const VOLATILE_HEADERS: &[&str] = &[
    "date",
    "server",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// The first difference between two JSON values under `path`, by the one JSON comparison
/// ([`crate::analysis::json`]: numbers by value, `"[REDACTED]"` matches anything).
#[must_use]
pub fn json_diff(path: &str, expected: &Value, actual: &Value) -> Option<Diff> {
    let d = json::first_difference(path, expected, actual)?;
    Some(match d.kind {
        Kind::Changed { expected, actual } => Diff::new(d.path, expected, actual),
        Kind::Removed(expected) => Diff::new(d.path, expected, "(missing)"),
        Kind::Added(actual) => Diff::new(d.path, "(missing)", actual),
        Kind::Length { expected, actual } => Diff::new(d.path, expected, actual),
    })
}

/// Compares query maps (`signature.query` / `request.query` shape).
#[must_use]
pub fn query_diff(expected: &JsonMap, actual: &JsonMap) -> Option<Diff> {
    json_diff(
        "query",
        &Value::Object(expected.clone()),
        &Value::Object(actual.clone()),
    )
}

/// Shows bytes for a verdict: UTF-8 text when it is, else a hex prefix.
fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => {
            let hex: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
            format!(
                "0x{hex}{} ({} bytes)",
                if b.len() > 32 { "…" } else { "" },
                b.len()
            )
        }
    }
}

/// Compares a recorded body with actual bytes. JSON bodies are compared structurally;
/// others byte for byte (only the stored prefix of a truncated recording).
#[must_use]
pub fn body_diff(field: &str, recorded: Option<&Body>, actual: &[u8]) -> Option<Diff> {
    let Some(body) = recorded else {
        return (!actual.is_empty())
            .then(|| Diff::new(field, "(no body)", format!("{} bytes", actual.len())));
    };
    if !body.captured || body.data.is_none() {
        // Only size and hash were kept (Python 1.0 `bytes`): compare the size.
        return body
            .size_bytes
            .filter(|&n| n != actual.len() as u64)
            .map(|n| Diff::new(format!("{field}.size"), n, actual.len()));
    }
    if body.encoding == Some(BodyEncoding::Json)
        && let Some(expected) = &body.data
    {
        return match serde_json::from_slice::<Value>(actual) {
            Ok(a) => json_diff(field, expected, &a),
            Err(_) => Some(Diff::new(field, expected, show_bytes(actual))),
        };
    }
    let expected = body_bytes(body);
    let actual_cmp = if body.truncated && actual.len() > expected.len() {
        &actual[..expected.len()]
    } else {
        actual
    };
    if expected == actual_cmp {
        return None;
    }
    // Text that is JSON on both sides (recorded as text because it was not compact).
    if let (Ok(e), Ok(a)) = (
        serde_json::from_slice::<Value>(&expected),
        serde_json::from_slice::<Value>(actual),
    ) {
        return json_diff(field, &e, &a);
    }
    let at = expected
        .iter()
        .zip(actual_cmp)
        .position(|(x, y)| x != y)
        .unwrap_or(expected.len().min(actual_cmp.len()));
    let window = |b: &[u8]| show_bytes(&b[at.min(b.len())..(at + 40).min(b.len())]);
    Some(Diff::new(
        format!("{field}@{at}"),
        window(&expected),
        window(actual_cmp),
    ))
}

/// What came back from the app in replay.
#[derive(Clone, Debug, Default)]
pub struct ActualResponse {
    pub status: u16,
    /// Names lowercased, wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Every difference between the recorded response and the replayed one (status, headers
/// minus volatile and `ignore`d ones, body).
#[must_use]
pub fn response_diffs(
    recorded: &Response,
    actual: &ActualResponse,
    ignore: &[String],
) -> Vec<Diff> {
    let mut out = Vec::new();
    if i64::from(actual.status) != recorded.status {
        out.push(Diff::new("status", recorded.status, actual.status));
    }
    let skip =
        |n: &str| VOLATILE_HEADERS.contains(&n) || ignore.iter().any(|i| i.eq_ignore_ascii_case(n));
    let joined = |name: &str| -> Option<String> {
        let v: Vec<&str> = actual
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join(", "))
    };
    for (name, v) in &recorded.headers {
        let name = name.to_ascii_lowercase();
        if skip(&name) {
            continue;
        }
        let expected = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        if expected == REDACTED {
            continue;
        }
        match joined(&name) {
            Some(a) if a == expected => {}
            Some(a) => out.push(Diff::new(format!("headers.{name}"), &expected, a)),
            None => out.push(Diff::new(format!("headers.{name}"), &expected, "(missing)")),
        }
    }
    let mut extra: Vec<&str> = actual
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !skip(n) && !recorded.headers.contains_key(*n))
        .collect();
    extra.dedup();
    for n in extra {
        out.push(Diff::new(
            format!("headers.{n}"),
            "(missing)",
            joined(n).unwrap_or_default(),
        ));
    }
    if let Some(d) = body_diff("body", recorded.body.as_ref(), &actual.body) {
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cassette::body::encode_body;

    #[test]
    fn json_first_difference_and_redaction() {
        let e = json!({"items": [{"id": 1}, {"id": 2}], "token": "[REDACTED]"});
        let a = json!({"items": [{"id": 1}, {"id": 3}], "token": "abc"});
        let d = json_diff("body", &e, &a).unwrap();
        assert_eq!(d.field, "body.items[1].id");
        assert_eq!((d.expected.as_str(), d.actual.as_str()), ("2", "3"));
        assert!(json_diff("body", &json!({"a": 1.0}), &json!({"a": 1})).is_none());
        assert_eq!(
            json_diff("b", &json!([1]), &json!([1, 2])).unwrap().field,
            "b.length"
        );
    }

    #[test]
    fn bodies_and_headers() {
        let rec = encode_body(b"hello world", 11, false, Vec::new()).unwrap();
        assert!(body_diff("body", Some(&rec), b"hello world").is_none());
        let d = body_diff("body", Some(&rec), b"hello there").unwrap();
        assert_eq!(d.field, "body@6");
        let mut headers = JsonMap::new();
        headers.insert("content-type".into(), "text/plain".into());
        headers.insert("date".into(), "x".into());
        let recorded = Response {
            status: 200,
            headers,
            body: Some(rec),
            ..Default::default()
        };
        let actual = ActualResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("date".into(), "y".into()),
                ("x-new".into(), "1".into()),
            ],
            body: b"hello world".to_vec(),
        };
        let diffs = response_diffs(&recorded, &actual, &[]);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert_eq!(diffs[0].field, "headers.x-new");
        assert!(response_diffs(&recorded, &actual, &["X-New".into()]).is_empty());
    }
}
