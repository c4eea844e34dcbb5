//! Values that look like secrets, found in a cassette (`timetracer validate --secrets`): what
//! redaction missed — a secret under a key the policy does not list, in a free-text message,
//! in wire bytes.
//!
//! Detectors: JSON Web Tokens, AWS access key ids, PEM private key blocks, credit-card numbers
//! with a valid Luhn check digit, and high-entropy tokens (24+ characters of letters, digits
//! and `+/_-=`, mixing cases and digits, ≥ 4.3 bits of Shannon entropy per character: what
//! random API keys look like; hex digests, UUIDs and words stay below). Every string of the
//! document is scanned, and the decoded bytes of base64 fields (`wire.*_b64`, `{"bytes": …}`
//! bodies); digests (`sha256`, `hash`) are skipped.
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

/// One value that looks like a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// JSON path of the string (`$.events[2].db.sql`); ` (decoded)` when found in the bytes a
    /// base64 field holds.
    pub path: String,
    /// `jwt`, `aws-access-key`, `pem-private-key`, `credit-card`, `high-entropy`.
    pub kind: &'static str,
    /// The value, masked: its first 4 and last 2 characters.
    pub sample: String,
}

static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{10,}").expect("regex")
});
static AWS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b").expect("regex"));
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----").expect("regex")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("regex"));
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_\-=]{24,}").expect("regex"));

/// Luhn check of a digit string.
#[must_use]
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Shannon entropy of `s` in bits per character.
#[must_use]
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail} ({} chars)", chars.len())
}

/// The secrets in one string.
#[must_use]
pub fn scan_text(s: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut taken: Vec<std::ops::Range<usize>> = Vec::new();
    let mut push = |kind, m: regex::Match<'_>, out: &mut Vec<(&'static str, String)>| {
        if taken.iter().any(|r| r.start < m.end() && m.start() < r.end) {
            return;
        }
        taken.push(m.range());
        out.push((kind, mask(m.as_str())));
    };
    for m in JWT.find_iter(s) {
        push("jwt", m, &mut out);
    }
    for m in AWS.find_iter(s) {
        push("aws-access-key", m, &mut out);
    }
    for m in PEM.find_iter(s) {
        push("pem-private-key", m, &mut out);
    }
    for m in CARD.find_iter(s) {
        let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            push("credit-card", m, &mut out);
        }
    }
    for m in TOKEN.find_iter(s) {
        let t = m.as_str();
        let mixed = t.bytes().any(|c| c.is_ascii_uppercase())
            && t.bytes().any(|c| c.is_ascii_lowercase())
            && t.bytes().any(|c| c.is_ascii_digit());
        if mixed && entropy(t) >= 4.3 {
            push("high-entropy", m, &mut out);
        }
    }
    out
}

/// Keys whose string values are digests or opaque ids by design.
fn skipped(key: &str) -> bool {
    matches!(
        key,
        "sha256" | "hash" | "body_hash" | "id" | "trace_id" | "eid"
    )
}

/// Keys whose string values are base64: scanned decoded.
fn base64_field(key: &str) -> bool {
    matches!(key, "request_b64" | "response_b64" | "bytes" | "base64")
}

/// Every value of `doc` that looks like a secret, in document order.
#[must_use]
pub fn scan(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(doc, "$", None, &mut out, 0);
    out
}

fn walk(v: &Value, path: &str, key: Option<&str>, out: &mut Vec<Finding>, depth: u32) {
    if depth > 200 {
        return;
    }
    match v {
        Value::String(s) => {
            if key.is_some_and(skipped) {
                return;
            }
            if key.is_some_and(base64_field)
                && let Ok(b) = base64::engine::general_purpose::STANDARD.decode(s)
            {
                let text = String::from_utf8_lossy(&b);
                for (kind, sample) in scan_text(&text) {
                    out.push(Finding {
                        path: format!("{path} (decoded)"),
                        kind,
                        sample,
                    });
                }
                return;
            }
            for (kind, sample) in scan_text(s) {
                out.push(Finding {
                    path: path.to_owned(),
                    kind,
                    sample,
                });
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}[{i}]"), key, out, depth + 1);
            }
        }
        Value::Object(m) => {
            // A body whose `data` is base64 (`encoding: "base64"`) is scanned decoded.
            let base64_body = m.get("encoding").and_then(Value::as_str) == Some("base64");
            for (k, x) in m {
                let p = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !k.is_empty()
                {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{k:?}]")
                };
                let key = if base64_body && k == "data" {
                    "base64"
                } else {
                    k.as_str()
                };
                walk(x, &p, Some(key), out, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kinds(s: &str) -> Vec<&'static str> {
        scan_text(s).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn each_detector_and_what_it_leaves_alone() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(kinds(&format!("Bearer {jwt}")), ["jwt"]);
        assert_eq!(kinds("key=AKIAIOSFODNN7EXAMPLE;"), ["aws-access-key"]);
        assert_eq!(
            kinds("-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
            ["pem-private-key"]
        );
        assert_eq!(kinds("card 4111 1111 1111 1111 ok"), ["credit-card"]);
        assert!(kinds("card 4111 1111 1111 1112").is_empty(), "Luhn fails");
        assert_eq!(
            kinds("sk_live_9fQ2xZ7LmP4kR8tW1vB6nY3cJ5hD0gE"),
            ["high-entropy"]
        );
        // Digests, UUIDs, words, timestamps, order numbers.
        for clean in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "550e8400-e29b-41d4-a716-446655440000",
            "SELECT id, name FROM users WHERE name = $1",
            "2026-11-22T10:00:00.123456Z",
            "order 1234567890123",
            "application/x-www-form-urlencoded",
            "/api/v1/users/42/orders/recent_activity_summary",
        ] {
            assert!(kinds(clean).is_empty(), "{clean}: {:?}", kinds(clean));
        }
    }

    #[test]
    fn documents_paths_and_decoded_bytes() {
        let wire = base64::engine::general_purpose::STANDARD.encode("SET k AKIAIOSFODNN7EXAMPLE");
        let doc = json!({
            "request": {"body": {"sha256": "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz"}},
            "events": [{"wire": {"request_b64": wire}, "db": {"sql": "x = '4111-1111-1111-1111'"}}]
        });
        let f = scan(&doc);
        assert_eq!(
            f.iter()
                .map(|f| (f.path.as_str(), f.kind))
                .collect::<Vec<_>>(),
            [
                ("$.events[0].wire.request_b64 (decoded)", "aws-access-key"),
                ("$.events[0].db.sql", "credit-card"),
            ]
        );
        assert!(
            !f[0].sample.contains("IOSFODNN7EXAMP"),
            "masked: {}",
            f[0].sample
        );
        assert!(scan(&json!({"a": "hello", "n": 4_111_111_111_111_111_u64})).is_empty());
    }
}
