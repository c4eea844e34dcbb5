//! Body encoding: choose `json` / `text` / `base64` so that the stored bytes can always be
//! reconstructed exactly ([`body_bytes`]).
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::format::{Body, BodyEncoding};

/// `sha256:<hex>` of `bytes`.
#[must_use]
pub fn sha256_tagged(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Build a body object for `stored` (the bytes to keep: already truncated and redacted).
/// `size_bytes` is the full body size; `None` when there is nothing to record.
#[must_use]
pub fn encode_body(
    stored: &[u8],
    size_bytes: u64,
    truncated: bool,
    redacted: Vec<String>,
) -> Option<Body> {
    if stored.is_empty() && size_bytes == 0 {
        return None;
    }
    if stored.is_empty() {
        // The body existed but none of it was captured.
        return Some(Body {
            captured: false,
            size_bytes: Some(size_bytes),
            truncated: true,
            ..Body::default()
        });
    }
    let (encoding, data) = if let Some(v) = exact_json(stored) {
        (BodyEncoding::Json, v)
    } else if let Ok(s) = std::str::from_utf8(stored) {
        (BodyEncoding::Text, Value::String(s.to_owned()))
    } else {
        (BodyEncoding::Base64, Value::String(B64.encode(stored)))
    };
    Some(Body {
        captured: true,
        encoding: Some(encoding),
        data: Some(data),
        size_bytes: Some(size_bytes),
        truncated,
        hash: Some(sha256_tagged(stored)),
        redacted,
    })
}

/// The parsed value when compact re-serialisation reproduces `bytes` exactly.
fn exact_json(bytes: &[u8]) -> Option<Value> {
    let first = bytes.first()?;
    // Cheap pre-check: compact JSON never starts or ends with whitespace.
    if first.is_ascii_whitespace() || bytes.last().is_some_and(u8::is_ascii_whitespace) {
        return None;
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let again = serde_json::to_vec(&v).ok()?;
    (again == bytes).then_some(v)
}

/// The exact stored bytes of a body (for `json`: compact re-serialisation of `data`; `text`: the
/// UTF-8 string; `base64`: decoded). Empty when the body holds no data (1.0 `_captured: false`,
/// `bytes` encoding, or invalid base64).
#[must_use]
pub fn body_bytes(body: &Body) -> Vec<u8> {
    match (body.encoding, &body.data) {
        (Some(BodyEncoding::Json), Some(v)) => serde_json::to_vec(v).unwrap_or_default(),
        (Some(BodyEncoding::Json), None) if body.captured => b"null".to_vec(),
        (Some(BodyEncoding::Text | BodyEncoding::Utf8), Some(Value::String(s))) => {
            s.as_bytes().to_vec()
        }
        (Some(BodyEncoding::Base64), Some(Value::String(s))) => B64.decode(s).unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn enc(b: &[u8]) -> Body {
        encode_body(b, b.len() as u64, false, Vec::new()).unwrap()
    }

    #[test]
    fn chooses_encodings() {
        assert_eq!(
            enc(br#"{"a":1.50,"b":[1.0e+5,true,12345678901234567890123]}"#).encoding,
            Some(BodyEncoding::Json)
        );
        // serde_json writes `1e5` as `1e+5`: not exact → text.
        assert_eq!(enc(b"[1e5]").encoding, Some(BodyEncoding::Text));
        // Not compact → not exact → text.
        assert_eq!(enc(br#"{"a": 1}"#).encoding, Some(BodyEncoding::Text));
        // Escapes that serde_json would rewrite → text.
        assert_eq!(enc(br#"{"a":"\u00e9"}"#).encoding, Some(BodyEncoding::Text));
        assert_eq!(enc(b"hello").encoding, Some(BodyEncoding::Text));
        assert_eq!(enc(&[0xff, 0, 1]).encoding, Some(BodyEncoding::Base64));
        assert!(encode_body(b"", 0, false, Vec::new()).is_none());
        let lost = encode_body(b"", 10, true, Vec::new()).unwrap();
        assert!(!lost.captured);
    }

    #[test]
    fn hash_is_of_stored_bytes() {
        let b = enc(b"abc");
        assert_eq!(
            b.hash.as_deref(),
            Some("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    proptest! {
        #[test]
        fn body_bytes_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..200)) {
            let b = enc(&bytes);
            prop_assert_eq!(body_bytes(&b), bytes.clone());
            // Also through JSON text.
            let text = serde_json::to_string(&b).unwrap();
            let back: Body = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(body_bytes(&back), bytes);
        }

        #[test]
        fn json_values_round_trip(s in "\\{\"[a-z]{1,5}\":(-?[0-9]{1,8}(\\.[0-9]{1,4})?|\"[ -~]{0,10}\"|null|\\[\\])\\}") {
            let b = enc(s.as_bytes());
            prop_assert_eq!(body_bytes(&b), s.as_bytes().to_vec());
        }
    }
}
