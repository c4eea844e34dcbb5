//! Redaction of secrets before anything reaches disk.
//!
//! On by default. A [`RedactionPolicy`] names header names and body/query keys whose **values**
//! are replaced by [`REDACTED`]. Matching is case-insensitive on the **whole** name or key, never
//! on a substring: the Python tool's substring rule redacted `message` and `page` because they
//! contain `age`; here only a key that *is* `password` (any case) matches `password`.
//!
//! What is redacted, wherever it appears (inbound request and response, every dependency request
//! and response):
//! - header values (the header name stays, so the shape of the message stays visible);
//! - JSON body fields at any depth, including objects inside arrays (the whole value is replaced);
//! - `application/x-www-form-urlencoded` body fields and URL query parameters.
//!
//! A redacted JSON body is re-serialised compactly. A body that looks like JSON but does not parse
//! (for example cut at the capture cap) is redacted lexically: a string token equal to a key,
//! followed by `:`, has its value replaced.
use std::borrow::Cow;

use serde_json::Value;

use crate::urls::form_decode;

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Header names redacted by default (compared case-insensitively, whole name).
pub const DEFAULT_HEADER_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
    "x-refresh-token",
    "x-session-token",
    "x-csrf-token",
    "x-xsrf-token",
    "api-key",
    "apikey",
    "x-client-secret",
    "x-secret-key",
];

/// JSON / form / query keys redacted by default (compared case-insensitively, whole key).
pub const DEFAULT_BODY_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "client_secret",
    "private_key",
    "auth_token",
    "session_token",
    "csrf_token",
];

/// Redis keys whose values are redacted by default (glob patterns, any case).
pub const DEFAULT_REDIS_KEY_PATTERNS: &[&str] = &[
    "*session*",
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "*api_key*",
    "*apikey*",
    "*credential*",
];

/// Which values to redact. `enabled: false` is `--no-redact`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactionPolicy {
    pub enabled: bool,
    /// Header names, lowercase.
    pub header_names: Vec<String>,
    /// Body / query keys, lowercase; also SQL column names and MongoDB field names.
    pub body_keys: Vec<String>,
    /// Glob patterns of Redis keys whose values are redacted (`--redact-redis-key`).
    pub redis_key_patterns: Vec<String>,
}

impl Default for RedactionPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            header_names: DEFAULT_HEADER_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            body_keys: DEFAULT_BODY_KEYS.iter().map(|s| (*s).to_owned()).collect(),
            redis_key_patterns: DEFAULT_REDIS_KEY_PATTERNS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// A body after redaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactedBody<'a> {
    /// The bytes to store.
    pub bytes: Cow<'a, [u8]>,
    /// JSON paths (`$.a.b[0].password`) or keys (`$.password` for forms) that were redacted.
    pub paths: Vec<String>,
}

impl RedactionPolicy {
    /// The default lists plus user-configured extras (lowercased, deduplicated).
    #[must_use]
    pub fn with_extra<H, K>(extra_headers: H, extra_keys: K) -> Self
    where
        H: IntoIterator,
        H::Item: AsRef<str>,
        K: IntoIterator,
        K::Item: AsRef<str>,
    {
        let mut p = Self::default();
        for h in extra_headers {
            push_unique(&mut p.header_names, h.as_ref());
        }
        for k in extra_keys {
            push_unique(&mut p.body_keys, k.as_ref());
        }
        p
    }

    /// Redaction off (`--no-redact`).
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            header_names: Vec::new(),
            body_keys: Vec::new(),
            redis_key_patterns: Vec::new(),
        }
    }

    /// Adds the configured lists (`redact_keys`, `redact_redis_keys`: comma-separated) and
    /// the `--redact-redis-key` patterns to the defaults.
    pub fn add_configured(&mut self, keys: &str, redis_globs: &str, flag_globs: &[String]) {
        let list = |v: &str| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        for k in list(keys) {
            let k = k.to_ascii_lowercase();
            if !self.body_keys.contains(&k) {
                self.body_keys.push(k);
            }
        }
        for g in list(redis_globs)
            .into_iter()
            .chain(flag_globs.iter().cloned())
        {
            if !self.redis_key_patterns.contains(&g) {
                self.redis_key_patterns.push(g);
            }
        }
    }

    /// The Redis key matches one of the patterns (glob, any case).
    #[must_use]
    pub fn redis_key_matches(&self, key: &[u8]) -> bool {
        self.enabled
            && self
                .redis_key_patterns
                .iter()
                .any(|p| crate::protocols::redact::glob_match(p.as_bytes(), key))
    }

    /// The header name is on the list (whole name, any case).
    #[must_use]
    pub fn header_matches(&self, name: &str) -> bool {
        self.enabled
            && self
                .header_names
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name.trim()))
    }

    /// The body / query key is on the list (whole key, any case).
    #[must_use]
    pub fn key_matches(&self, key: &str) -> bool {
        self.enabled && self.body_keys.iter().any(|k| k.eq_ignore_ascii_case(key))
    }

    /// Replace the values of listed headers; returns how many were replaced.
    pub fn redact_headers(&self, headers: &mut [(String, String)]) -> usize {
        let mut n = 0;
        for (name, value) in headers.iter_mut() {
            if self.header_matches(name) {
                REDACTED.clone_into(value);
                n += 1;
            }
        }
        n
    }

    /// Redact a parsed JSON value in place; pushes the paths of redacted values, returns how many.
    pub fn redact_json(&self, value: &mut Value, paths: &mut Vec<String>) -> usize {
        if !self.enabled {
            return 0;
        }
        let before = paths.len();
        self.walk_json(value, "$", paths);
        paths.len() - before
    }

    fn walk_json(&self, value: &mut Value, path: &str, paths: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let p = json_path_child(path, k);
                    if self.key_matches(k) {
                        *v = Value::String(REDACTED.to_owned());
                        paths.push(p);
                    } else {
                        self.walk_json(v, &p, paths);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.walk_json(v, &format!("{path}[{i}]"), paths);
                }
            }
            _ => {}
        }
    }

    /// Redact `key=value` pairs of a urlencoded string (form body or URL query). Returns the new
    /// string (untouched pairs keep their exact bytes) and the decoded keys that were redacted.
    #[must_use]
    pub fn redact_urlencoded<'a>(&self, s: &'a str) -> (Cow<'a, str>, Vec<String>) {
        if !self.enabled || s.is_empty() {
            return (Cow::Borrowed(s), Vec::new());
        }
        let mut keys = Vec::new();
        let mut out = String::with_capacity(s.len());
        for (i, pair) in s.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (raw_key, has_value) = match pair.split_once('=') {
                Some((k, _)) => (k, true),
                None => (pair, false),
            };
            let key = form_decode(raw_key);
            if has_value && self.key_matches(&key) {
                out.push_str(raw_key);
                out.push('=');
                out.push_str(REDACTED);
                keys.push(key);
            } else {
                out.push_str(pair);
            }
        }
        if keys.is_empty() {
            (Cow::Borrowed(s), keys)
        } else {
            (Cow::Owned(out), keys)
        }
    }

    /// Redact the query part of a request-target (`/p?token=x` → `/p?token=[REDACTED]`).
    /// Returns the new target and how many parameters were redacted.
    #[must_use]
    pub fn redact_target<'a>(&self, target: &'a str) -> (Cow<'a, str>, usize) {
        let Some((path, query)) = target.split_once('?') else {
            return (Cow::Borrowed(target), 0);
        };
        let (fragment_free, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let (q, keys) = self.redact_urlencoded(fragment_free);
        if keys.is_empty() {
            return (Cow::Borrowed(target), 0);
        }
        let mut s = format!("{path}?{q}");
        if let Some(f) = fragment {
            s.push('#');
            s.push_str(f);
        }
        (Cow::Owned(s), keys.len())
    }

    /// Redact a message body given its `Content-Type`.
    ///
    /// - JSON (parses): listed keys at any depth, re-serialised compactly when anything changed;
    /// - JSON-looking but unparsable (cut at the cap): lexical redaction;
    /// - `application/x-www-form-urlencoded`: listed fields;
    /// - anything else: unchanged.
    #[must_use]
    pub fn redact_body<'a>(&self, body: &'a [u8], content_type: Option<&str>) -> RedactedBody<'a> {
        let unchanged = |b: &'a [u8]| RedactedBody {
            bytes: Cow::Borrowed(b),
            paths: Vec::new(),
        };
        if !self.enabled || body.is_empty() {
            return unchanged(body);
        }
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
        let looks_json = ct.contains("json") || matches!(first, Some(b'{' | b'['));
        if looks_json {
            if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
                let mut paths = Vec::new();
                if self.redact_json(&mut v, &mut paths) == 0 {
                    return unchanged(body);
                }
                return match serde_json::to_vec(&v) {
                    Ok(bytes) => RedactedBody {
                        bytes: Cow::Owned(bytes),
                        paths,
                    },
                    // Serialising a Value cannot fail; fall back to lexical redaction anyway.
                    Err(_) => self.redact_json_lexical(body),
                };
            }
            return self.redact_json_lexical(body);
        }
        let form = ct.starts_with("application/x-www-form-urlencoded");
        let Some(s) = form.then(|| std::str::from_utf8(body).ok()).flatten() else {
            return unchanged(body);
        };
        let (out, keys) = self.redact_urlencoded(s);
        if keys.is_empty() {
            return unchanged(body);
        }
        let paths = keys.iter().map(|k| json_path_child("$", k)).collect();
        RedactedBody {
            bytes: Cow::Owned(out.into_owned().into_bytes()),
            paths,
        }
    }

    /// Token-level redaction of JSON-ish bytes that do not parse (truncated or invalid): a string
    /// token equal to a listed key followed by `:` gets its value replaced by `"[REDACTED]"`.
    /// Paths are reported as `$..key` (the depth is unknown).
    fn redact_json_lexical<'a>(&self, body: &'a [u8]) -> RedactedBody<'a> {
        let mut out = Vec::with_capacity(body.len());
        let mut paths = Vec::new();
        let mut i = 0;
        while i < body.len() {
            if body[i] != b'"' {
                out.push(body[i]);
                i += 1;
                continue;
            }
            let end = string_end(body, i);
            let Some(end) = end else {
                out.extend_from_slice(&body[i..]);
                break;
            };
            out.extend_from_slice(&body[i..=end]);
            let key = &body[i + 1..end];
            i = end + 1;
            let mut j = skip_ws(body, i);
            if j >= body.len() || body[j] != b':' {
                continue;
            }
            let matched = std::str::from_utf8(key).is_ok_and(|k| self.key_matches(k));
            if !matched {
                continue;
            }
            j = skip_ws(body, j + 1);
            if j >= body.len() {
                continue;
            }
            // Copy the `:` and whitespace, then replace the value.
            out.extend_from_slice(&body[i..j]);
            let value_end = value_end(body, j);
            out.extend_from_slice(b"\"[REDACTED]\"");
            paths.push(format!("$..{}", String::from_utf8_lossy(key)));
            i = value_end;
        }
        if paths.is_empty() {
            RedactedBody {
                bytes: Cow::Borrowed(body),
                paths,
            }
        } else {
            RedactedBody {
                bytes: Cow::Owned(out),
                paths,
            }
        }
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    let item = item.trim().to_ascii_lowercase();
    if !item.is_empty() && !list.contains(&item) {
        list.push(item);
    }
}

/// `$.key`, or `$["odd key"]` when the key is not a plain identifier.
fn json_path_child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !key.as_bytes()[0].is_ascii_digit();
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::String(key.to_owned()))
    }
}

/// Index of the closing quote of the JSON string starting at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index just past the JSON value starting at `start` (or the end of input when it is cut).
fn value_end(b: &[u8], start: usize) -> usize {
    match b[start] {
        b'"' => string_end(b, start).map_or(b.len(), |e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'"' => match string_end(b, i) {
                        Some(e) => i = e,
                        None => return b.len(),
                    },
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            b.len()
        }
        _ => {
            let mut i = start;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') && !b[i].is_ascii_whitespace()
            {
                i += 1;
            }
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact_str(p: &RedactionPolicy, s: &str, ct: &str) -> (String, Vec<String>) {
        let r = p.redact_body(s.as_bytes(), Some(ct));
        (String::from_utf8(r.bytes.into_owned()).unwrap(), r.paths)
    }

    #[test]
    fn exact_key_match_never_substring() {
        let p = RedactionPolicy::default();
        let body = r#"{"username":"alice","password":"hunter2","message":"hi","page":3,"usage":1,"passwordless_enabled":true,"image":"x","language":"en","my_token_count":2,"Token":"t"}"#;
        let (out, paths) = redact_str(&p, body, "application/json");
        assert_eq!(
            out,
            r#"{"username":"alice","password":"[REDACTED]","message":"hi","page":3,"usage":1,"passwordless_enabled":true,"image":"x","language":"en","my_token_count":2,"Token":"[REDACTED]"}"#
        );
        assert_eq!(paths, vec!["$.password", "$.Token"]);
    }

    #[test]
    fn nested_and_arrays() {
        let p = RedactionPolicy::default();
        let body = r#"{"users":[{"name":"a","api_key":"k1"},{"name":"b","secret":{"x":1}}],"meta":{"auth":{"refresh_token":"r"}}}"#;
        let (out, paths) = redact_str(&p, body, "application/json");
        assert_eq!(
            out,
            r#"{"users":[{"name":"a","api_key":"[REDACTED]"},{"name":"b","secret":"[REDACTED]"}],"meta":{"auth":{"refresh_token":"[REDACTED]"}}}"#
        );
        assert_eq!(
            paths,
            vec![
                "$.users[0].api_key",
                "$.users[1].secret",
                "$.meta.auth.refresh_token"
            ]
        );
    }

    #[test]
    fn untouched_json_keeps_exact_bytes() {
        let p = RedactionPolicy::default();
        let body = b"{ \"a\" : 1.50 }";
        let r = p.redact_body(body, Some("application/json"));
        assert!(matches!(r.bytes, Cow::Borrowed(_)));
        assert!(r.paths.is_empty());
    }

    #[test]
    fn form_and_query() {
        let p = RedactionPolicy::default();
        let (out, paths) = redact_str(
            &p,
            "user=a&password=p%20w&pwdx=1&Token=t&page=2",
            "application/x-www-form-urlencoded",
        );
        assert_eq!(
            out,
            "user=a&password=[REDACTED]&pwdx=1&Token=[REDACTED]&page=2"
        );
        assert_eq!(paths, vec!["$.password", "$.Token"]);

        let (t, n) = p.redact_target("/cb?code=1&access_token=abc&message=x#frag");
        assert_eq!(t, "/cb?code=1&access_token=[REDACTED]&message=x#frag");
        assert_eq!(n, 1);
        let (t, n) = p.redact_target("/cb?message=x");
        assert_eq!((t.as_ref(), n), ("/cb?message=x", 0));
    }

    #[test]
    fn headers_keep_names() {
        let p = RedactionPolicy::with_extra(["X-Custom-Token"], ["ssn"]);
        let mut h = vec![
            ("Authorization".to_owned(), "Bearer x".to_owned()),
            ("X-Custom-Token".to_owned(), "t".to_owned()),
            ("X-Forwarded-For".to_owned(), "1.2.3.4".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ];
        assert_eq!(p.redact_headers(&mut h), 2);
        assert_eq!(h[0], ("Authorization".to_owned(), REDACTED.to_owned()));
        assert_eq!(h[1].1, REDACTED);
        assert_eq!(h[2].1, "1.2.3.4");
        assert!(p.key_matches("SSN"));
    }

    #[test]
    fn truncated_json_is_redacted_lexically() {
        let p = RedactionPolicy::default();
        let (out, paths) = redact_str(
            &p,
            r#"{"message":"password","token": "abc\"def", "n":{"secret":[1,2],"page":"#,
            "application/json",
        );
        assert_eq!(
            out,
            r#"{"message":"password","token": "[REDACTED]", "n":{"secret":"[REDACTED]","page":"#
        );
        assert_eq!(paths, vec!["$..token", "$..secret"]);
        let (out, _) = redact_str(&p, r#"{"password":"abc"#, "application/json");
        assert_eq!(out, r#"{"password":"[REDACTED]""#);
    }

    #[test]
    fn disabled_changes_nothing() {
        let p = RedactionPolicy::disabled();
        let (out, paths) = redact_str(&p, r#"{"password":"x"}"#, "application/json");
        assert_eq!(out, r#"{"password":"x"}"#);
        assert!(paths.is_empty());
        let mut h = vec![("Cookie".to_owned(), "a=b".to_owned())];
        assert_eq!(p.redact_headers(&mut h), 0);
    }
}
