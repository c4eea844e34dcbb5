//! The protocols' redaction hooks ([`Redaction`] in each [`super::Spec`]) and what they share.
//!
//! A hook runs once on every event a parser produces, in the connection layer (`conn/`), before
//! the event reaches attribution, sinks or disk. It replaces secret values in the event's
//! `detail` by [`REDACTED`] and overwrites the same values in its wire bytes **without changing
//! their length** (`*` for text, `0` for numbers), so the recorded messages stay framed and
//! replay's byte-exact answers keep working. What it did is recorded in the call's
//! `detail.redacted` (per protocol, `docs/protocols/<name>.md`): replay's mocks read it to let
//! a redacted recorded value match any live value.
//!
//! Which values are secret comes from the user's [`RedactionPolicy`] (`--redact-key`,
//! `--redact-redis-key`, `timetracer.toml`, `--no-redact`).
pub mod sql;

use serde_json::{Value, json};

use super::ProtoEvent;
use super::db::{DbCall, DbEvent};
pub use crate::redact::REDACTED;
use crate::redact::RedactionPolicy;

/// What a hook did to one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Values replaced (a SQL literal, a parameter of one execution, a row value, a Redis
    /// value, a document field).
    pub values: u64,
}

/// Where a protocol's secrets are redacted.
#[derive(Clone, Copy, Debug)]
pub enum Redaction {
    /// By this hook, on each event as it leaves the connection layer.
    Hook(fn(&mut ProtoEvent, &RedactionPolicy) -> Applied),
    /// By the cassette builder (`cassette/build.rs`), which has the message model the policy
    /// needs: header names, the body's content type (JSON / form fields), the query string.
    CassetteBuilder,
}

impl Redaction {
    /// Runs the hook, if this protocol has one, on an event leaving the connection layer.
    pub fn apply(self, e: &mut ProtoEvent, p: &RedactionPolicy) -> Applied {
        match self {
            Self::Hook(f) if p.enabled => f(e, p),
            _ => Applied::default(),
        }
    }
}

/// The call of a database event, if it is one.
pub(crate) fn db_call(e: &mut ProtoEvent) -> Option<&mut DbCall> {
    match e {
        ProtoEvent::Db(DbEvent::Call(c)) => Some(c),
        _ => None,
    }
}

/// Replaces `v` by [`REDACTED`] unless it is `null` (nothing to hide); true when replaced.
pub(crate) fn redact_value(v: &mut Value) -> bool {
    if v.is_null() || v.as_str() == Some(REDACTED) {
        return false;
    }
    *v = Value::String(REDACTED.to_owned());
    true
}

/// Redacts `rows[*][c]` of a result (`{columns, rows}`) for every column whose `name` the
/// policy lists; returns the matching column names and how many values were replaced.
pub(crate) fn redact_rows(result: &mut Value, p: &RedactionPolicy) -> (Vec<String>, u64) {
    let cols: Vec<(usize, String)> = result
        .get("columns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let name = c.get("name").and_then(Value::as_str)?;
                    p.key_matches(name).then(|| (i, name.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut n = 0;
    if let Some(rows) = result.get_mut("rows").and_then(Value::as_array_mut) {
        for row in rows {
            for (i, _) in &cols {
                if let Some(v) = row.get_mut(*i)
                    && redact_value(v)
                {
                    n += 1;
                }
            }
        }
    }
    (cols.into_iter().map(|(_, c)| c).collect(), n)
}

/// Applies a statement's secrets to a SQL call's `detail` (PostgreSQL and MySQL): the literals
/// of `detail.sql` (`text`, as recorded), `params[i].value` for `params`, the row values of
/// secret columns in `rows` and `results[*].rows`; then records `detail.redacted`. `wire`:
/// values the hook already replaced in the wire bytes only (bound parameters). Returns the
/// total replaced.
pub(crate) fn sql_detail(
    detail: &mut Value,
    text: Option<String>,
    secrets: &sql::SqlSecrets,
    params: &std::collections::BTreeSet<usize>,
    p: &RedactionPolicy,
    wire: u64,
) -> u64 {
    let mut values = wire;
    let mut literals = Vec::new();
    if let Some(text) = text
        && !secrets.literals.is_empty()
    {
        let mut bytes = text.into_bytes();
        sql::fill(&mut bytes, 0, &secrets.literals);
        // Only ASCII bytes were written between ASCII delimiters: still UTF-8.
        if let Ok(s) = String::from_utf8(bytes) {
            detail["sql"] = Value::String(s);
            values += secrets.literals.len() as u64;
            literals.clone_from(&secrets.literals);
        }
    }
    if let Some(ps) = detail.get_mut("params").and_then(Value::as_array_mut) {
        for &k in params {
            if let Some(v) = ps.get_mut(k).and_then(|p| p.get_mut("value")) {
                redact_value(v);
            }
        }
    }
    let (mut columns, n) = redact_rows(detail, p);
    values += n;
    if let Some(results) = detail.get_mut("results").and_then(Value::as_array_mut) {
        for r in results {
            let (c, n) = redact_rows(r, p);
            values += n;
            columns.extend(c);
        }
    }
    columns.sort();
    columns.dedup();
    let found = sql::SqlSecrets {
        literals,
        params: params.clone(),
    };
    record(detail, &found, &columns, values);
    values
}

/// `detail.redacted` of a SQL call (PostgreSQL and MySQL).
fn record(detail: &mut Value, s: &sql::SqlSecrets, columns: &[String], values: u64) {
    if values == 0 && s.is_empty() && columns.is_empty() {
        return;
    }
    if !s.literals.is_empty() {
        let spans: Vec<Value> = s.literals.iter().map(|r| json!([r.start, r.end])).collect();
        note(detail, "sql", Value::Array(spans));
    }
    if !s.params.is_empty() {
        note(detail, "params", json!(s.params));
    }
    if !columns.is_empty() {
        note(detail, "columns", json!(columns));
    }
    note(detail, "values", json!(values));
}

/// Records in `detail.redacted` what a hook did (merged with what is there).
pub(crate) fn note(detail: &mut Value, key: &str, what: Value) {
    let Some(d) = detail.as_object_mut() else {
        return;
    };
    let r = d.entry("redacted").or_insert_with(|| json!({}));
    if let Some(r) = r.as_object_mut() {
        r.insert(key.to_owned(), what);
    }
}

/// Runs `f` over a copy of `bytes` and stores it back when `f` changed something.
pub(crate) fn rewrite(bytes: &mut bytes::Bytes, f: impl FnOnce(&mut Vec<u8>)) {
    let mut v = bytes.to_vec();
    f(&mut v);
    if v != *bytes {
        *bytes = bytes::Bytes::from(v);
    }
}

/// Overwrites `buf[range]` (clamped) with `byte`: a value's bytes in a wire message.
pub(crate) fn blank(buf: &mut [u8], start: usize, len: usize, byte: u8) {
    let s = start.min(buf.len());
    let e = start.saturating_add(len).min(buf.len());
    buf[s..e].fill(byte);
}

/// Redis-style glob match (`*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\x`), ASCII case-insensitive.
/// Hand-written: these are the patterns Redis users write for `KEYS` / `SCAN MATCH`, with
/// Redis's semantics (`stringmatchlen`), on bytes (keys need not be UTF-8).
#[must_use]
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Backtracking point of the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pat, p, s[i]),
            Some(b'\\') if p + 1 < pat.len() => {
                pat[p + 1].eq_ignore_ascii_case(&s[i]).then_some(p + 2)
            }
            Some(c) => c.eq_ignore_ascii_case(&s[i]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(np), _) => {
                p = np;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pat[p]` against `c`: the pattern index after it when it matches.
fn class(pat: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pat.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let c = c.to_ascii_lowercase();
    let mut hit = false;
    while j < pat.len() && pat[j] != b']' {
        if pat[j] == b'\\' && j + 1 < pat.len() {
            hit |= pat[j + 1].to_ascii_lowercase() == c;
            j += 2;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let (a, b) = (pat[j].to_ascii_lowercase(), pat[j + 2].to_ascii_lowercase());
            hit |= (a.min(b)..=a.max(b)).contains(&c);
            j += 3;
        } else {
            hit |= pat[j].to_ascii_lowercase() == c;
            j += 1;
        }
    }
    // An unclosed class is taken literally up to the end, as Redis does.
    (hit != negate).then_some((j + 1).min(pat.len()))
}

/// A database call event for the hooks' tests.
#[cfg(test)]
pub(crate) fn test_call(
    protocol: super::Protocol,
    method: &str,
    detail: Value,
    request: &[u8],
    response: &[u8],
) -> ProtoEvent {
    use super::http::types::Mark;
    ProtoEvent::Db(DbEvent::Call(Box::new(DbCall {
        protocol,
        index: 0,
        method: method.to_owned(),
        detail,
        error: None,
        raw_request: bytes::Bytes::copy_from_slice(request),
        raw_response: bytes::Bytes::copy_from_slice(response),
        raw_truncated: false,
        session_level: false,
        request_first: Mark::default(),
        request_last: Mark::default(),
        response_first: None,
        response_last: None,
    })))
}

/// The call of a test event.
#[cfg(test)]
pub(crate) fn test_parts(e: &ProtoEvent) -> (&Value, &[u8], &[u8]) {
    match e {
        ProtoEvent::Db(DbEvent::Call(c)) => (&c.detail, &c.raw_request, &c.raw_response),
        _ => panic!("not a call"),
    }
}

/// `needle` nowhere in `hay`.
#[cfg(test)]
pub(crate) fn absent(hay: &[u8], needle: &str) -> bool {
    !hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_policy_runs_no_hook() {
        let mut e = test_call(
            super::super::Protocol::Redis,
            "SET",
            json!({"command": "SET", "args": ["session:1", "v"]}),
            b"*3\r\n$3\r\nSET\r\n$9\r\nsession:1\r\n$1\r\nv\r\n",
            b"+OK\r\n",
        );
        let before = e.clone();
        let hook = super::super::Protocol::Redis.spec().redact;
        assert_eq!(
            hook.apply(&mut e, &RedactionPolicy::disabled()),
            Applied::default()
        );
        assert_eq!(e, before);
        assert_eq!(hook.apply(&mut e, &RedactionPolicy::default()).values, 1);
    }

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("*session*", "user:SESSION:42"));
        assert!(m("*token*", "token"));
        assert!(!m("*token*", "tokne"));
        assert!(m("sess:?", "sess:1"));
        assert!(!m("sess:?", "sess:12"));
        assert!(m("k[0-9]", "k7"));
        assert!(!m("k[^0-9]", "k7"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(!m("[abc", "x"));
    }

    #[test]
    fn rows_by_column_name() {
        let p = RedactionPolicy::default();
        let mut r = json!({"columns": [{"name": "id"}, {"name": "Password"}],
                           "rows": [[1, "a"], [2, null]]});
        let (cols, n) = redact_rows(&mut r, &p);
        assert_eq!((cols, n), (vec!["Password".to_owned()], 1));
        assert_eq!(r["rows"], json!([[1, REDACTED], [2, null]]));
    }
}
