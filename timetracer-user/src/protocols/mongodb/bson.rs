//! BSON documents to relaxed Extended JSON (the MongoDB Extended JSON v2 "relaxed" form, as
//! `bson.json_util` with `RELAXED_JSON_OPTIONS` prints it), hand-written: bounded depth, no
//! panics on any input, key order kept, and the byte ranges of secrets reported so raw bytes
//! can be masked in place.
//!
//! Secrets: `pwd` anywhere; `payload` in a document that also has `conversationId`,
//! `mechanism`, `saslStart` or `saslContinue` (SASL conversations), inside
//! `speculativeAuthenticate`, or anywhere when the caller says the document belongs to a SASL
//! exchange. Their JSON value becomes `"[REDACTED]"`.
use std::ops::Range;

use base64::Engine as _;
use serde_json::{Map, Number, Value, json};

/// Deepest document nesting decoded.
pub const MAX_DEPTH: usize = 100;
/// Replaces secret values in JSON.
pub const REDACTED: &str = "[REDACTED]";

/// Decoding context: where secrets are, and where they were found.
#[derive(Debug, Default)]
pub struct Ctx {
    /// The whole document is part of a SASL exchange (`payload` is secret at any level).
    pub sasl: bool,
    /// Byte ranges (relative to the slice given to [`decode_doc`]) of secret values.
    pub secrets: Vec<Range<usize>>,
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Length of the document starting at `b` (its own length prefix), when plausible.
#[must_use]
pub fn doc_len(b: &[u8]) -> Option<usize> {
    let n = usize::try_from(i32_at(b, 0)?).ok()?;
    (n >= 5).then_some(n)
}

/// Decodes one document at the start of `b`; returns the JSON object and its length.
pub fn decode_doc(b: &[u8], ctx: &mut Ctx) -> Result<(Map<String, Value>, usize), &'static str> {
    let (v, n) = doc(b, 0, 0, ctx, false, false)?;
    match v {
        Value::Object(m) => Ok((m, n)),
        _ => Err("bson-not-document"),
    }
}

/// `(value, length)` of the document at `b[at..]`.
fn doc(
    b: &[u8],
    at: usize,
    depth: usize,
    ctx: &mut Ctx,
    array: bool,
    in_sasl: bool,
) -> Result<(Value, usize), &'static str> {
    if depth > MAX_DEPTH {
        return Err("bson-too-deep");
    }
    let len = doc_len(b.get(at..).unwrap_or_default()).ok_or("bson-bad-length")?;
    let end = at.checked_add(len).ok_or("bson-bad-length")?;
    if end > b.len() {
        return Err("bson-truncated");
    }
    if b.get(end - 1) != Some(&0) {
        return Err("bson-no-terminator");
    }
    let mut items: Vec<(String, Value, Range<usize>)> = Vec::new();
    let mut p = at + 4;
    while p < end - 1 {
        let ty = b[p];
        p += 1;
        let kend = b
            .get(p..end)
            .and_then(|s| s.iter().position(|&c| c == 0))
            .ok_or("bson-bad-key")?;
        let key = String::from_utf8_lossy(&b[p..p + kend]).into_owned();
        p += kend + 1;
        let child_sasl = in_sasl || key == "speculativeAuthenticate";
        let (v, n, secret) = value(b, p, end - 1, ty, depth, ctx, child_sasl)?;
        items.push((key, v, secret));
        p += n;
    }
    if p != end - 1 {
        return Err("bson-overrun");
    }
    let sasl_doc = in_sasl
        || ctx.sasl
        || items.iter().any(|(k, ..)| {
            matches!(
                k.as_str(),
                "conversationId" | "mechanism" | "saslStart" | "saslContinue"
            )
        });
    if array {
        return Ok((
            Value::Array(items.into_iter().map(|(_, v, _)| v).collect()),
            len,
        ));
    }
    let mut m = Map::new();
    for (k, v, secret) in items {
        let is_secret = k == "pwd" || (k == "payload" && sasl_doc);
        if is_secret {
            ctx.secrets.push(secret);
            m.insert(k, Value::String(REDACTED.into()));
        } else {
            m.insert(k, v);
        }
    }
    Ok((Value::Object(m), len))
}

/// A string value (`i32` length incl. NUL, bytes, NUL) at `b[at..]`, within `end`.
fn string_at(
    b: &[u8],
    at: usize,
    end: usize,
) -> Result<(String, usize, Range<usize>), &'static str> {
    let n =
        usize::try_from(i32_at(b, at).ok_or("bson-truncated")?).map_err(|_| "bson-bad-string")?;
    if n < 1 || at + 4 + n > end || b.get(at + 3 + n) != Some(&0) {
        return Err("bson-bad-string");
    }
    let r = at + 4..at + 3 + n;
    Ok((
        String::from_utf8_lossy(&b[r.clone()]).into_owned(),
        4 + n,
        r,
    ))
}

fn cstring_at(b: &[u8], at: usize, end: usize) -> Result<(String, usize), &'static str> {
    let n = b
        .get(at..end)
        .and_then(|s| s.iter().position(|&c| c == 0))
        .ok_or("bson-bad-cstring")?;
    Ok((String::from_utf8_lossy(&b[at..at + n]).into_owned(), n + 1))
}

fn fixed(b: &[u8], at: usize, end: usize, n: usize) -> Result<&[u8], &'static str> {
    if at + n > end {
        return Err("bson-truncated");
    }
    b.get(at..at + n).ok_or("bson-truncated")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `(json, length, byte range of the secret-bearing part)` of one element value.
fn value(
    b: &[u8],
    at: usize,
    end: usize,
    ty: u8,
    depth: usize,
    ctx: &mut Ctx,
    sasl: bool,
) -> Result<(Value, usize, Range<usize>), &'static str> {
    let whole = |n: usize| at..at + n;
    Ok(match ty {
        0x01 => {
            let f = f64::from_le_bytes(
                fixed(b, at, end, 8)?
                    .try_into()
                    .map_err(|_| "bson-truncated")?,
            );
            (double_json(f), 8, whole(8))
        }
        0x02 => {
            let (s, n, r) = string_at(b, at, end)?;
            (Value::String(s), n, r)
        }
        0x03 | 0x04 => {
            let (v, n) = doc(b, at, depth + 1, ctx, ty == 0x04, sasl)?;
            if at + n > end {
                return Err("bson-overrun");
            }
            (v, n, whole(n))
        }
        0x05 => {
            let n = usize::try_from(i32_at(b, at).ok_or("bson-truncated")?)
                .map_err(|_| "bson-bad-binary")?;
            let data = fixed(b, at + 5, end, n)?;
            let sub = *b.get(at + 4).ok_or("bson-truncated")?;
            (
                json!({"$binary": {
                    "base64": base64::engine::general_purpose::STANDARD.encode(data),
                    "subType": format!("{sub:02x}"),
                }}),
                5 + n,
                at + 5..at + 5 + n,
            )
        }
        0x06 => (json!({"$undefined": true}), 0, at..at),
        0x07 => (
            json!({ "$oid": hex(fixed(b, at, end, 12)?) }),
            12,
            whole(12),
        ),
        0x08 => match fixed(b, at, end, 1)?[0] {
            0 => (Value::Bool(false), 1, whole(1)),
            1 => (Value::Bool(true), 1, whole(1)),
            _ => return Err("bson-bad-bool"),
        },
        0x09 => {
            fixed(b, at, end, 8)?;
            (date_json(i64_at(b, at).unwrap_or(0)), 8, whole(8))
        }
        0x0A => (Value::Null, 0, at..at),
        0x0B => {
            let (pattern, n1) = cstring_at(b, at, end)?;
            let (options, n2) = cstring_at(b, at + n1, end)?;
            (
                json!({"$regularExpression": {"pattern": pattern, "options": options}}),
                n1 + n2,
                whole(n1 + n2),
            )
        }
        0x0C => {
            let (ns, n, _) = string_at(b, at, end)?;
            let oid = hex(fixed(b, at + n, end, 12)?);
            (
                json!({"$dbPointer": {"$ref": ns, "$id": {"$oid": oid}}}),
                n + 12,
                whole(n + 12),
            )
        }
        0x0D => {
            let (s, n, r) = string_at(b, at, end)?;
            (json!({ "$code": s }), n, r)
        }
        0x0E => {
            let (s, n, r) = string_at(b, at, end)?;
            (json!({ "$symbol": s }), n, r)
        }
        0x0F => {
            let total = usize::try_from(i32_at(b, at).ok_or("bson-truncated")?)
                .map_err(|_| "bson-bad-code")?;
            if total < 14 || at + total > end {
                return Err("bson-bad-code");
            }
            let (code, n, _) = string_at(b, at + 4, at + total)?;
            let (scope, m) = doc(b, at + 4 + n, depth + 1, ctx, false, sasl)?;
            if 4 + n + m != total {
                return Err("bson-bad-code");
            }
            (json!({"$code": code, "$scope": scope}), total, whole(total))
        }
        0x10 => {
            fixed(b, at, end, 4)?;
            (json!(i32_at(b, at).unwrap_or(0)), 4, whole(4))
        }
        0x11 => {
            fixed(b, at, end, 8)?;
            let v = u64_at(b, at).unwrap_or(0);
            (
                json!({"$timestamp": {"t": v >> 32, "i": v & 0xffff_ffff}}),
                8,
                whole(8),
            )
        }
        0x12 => {
            fixed(b, at, end, 8)?;
            (json!(i64_at(b, at).unwrap_or(0)), 8, whole(8))
        }
        0x13 => {
            let d = fixed(b, at, end, 16)?;
            let lo = u64::from_le_bytes(d[..8].try_into().map_err(|_| "bson-truncated")?);
            let hi = u64::from_le_bytes(d[8..].try_into().map_err(|_| "bson-truncated")?);
            (
                json!({ "$numberDecimal": decimal128(hi, lo) }),
                16,
                whole(16),
            )
        }
        0xFF => (json!({"$minKey": 1}), 0, at..at),
        0x7F => (json!({"$maxKey": 1}), 0, at..at),
        _ => return Err("bson-bad-type"),
    })
}

fn double_json(f: f64) -> Value {
    if f.is_nan() {
        json!({"$numberDouble": "NaN"})
    } else if f.is_infinite() {
        json!({"$numberDouble": if f > 0.0 { "Infinity" } else { "-Infinity" }})
    } else if f == 0.0 && f.is_sign_negative() {
        json!({"$numberDouble": "-0.0"})
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// `{"$date": ISO-8601}` for years 1970-9999 (milliseconds only when not zero, as pymongo
/// prints them), else `{"$date": {"$numberLong": ms}}`.
fn date_json(ms: i64) -> Value {
    if !(0..253_402_300_800_000).contains(&ms) {
        return json!({"$date": {"$numberLong": ms.to_string()}});
    }
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = if milli == 0 {
        String::new()
    } else {
        format!(".{milli:03}")
    };
    json!({"$date": format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )})
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// IEEE 754-2008 decimal128 (BID) to the string form of the Extended JSON / BSON spec.
#[must_use]
pub fn decimal128(hi: u64, lo: u64) -> String {
    let neg = hi >> 63 == 1;
    let sign = if neg { "-" } else { "" };
    let combination = (hi >> 58) & 0x1f;
    let (exp_biased, coeff) = if combination >> 3 == 3 {
        match combination {
            0x1e => return format!("{sign}Infinity"),
            0x1f => return "NaN".into(),
            // Non-canonical (coefficient too large): zero.
            _ => ((hi >> 47) & 0x3fff, 0u128),
        }
    } else {
        let c = (u128::from(hi & 0x1_ffff_ffff_ffff) << 64) | u128::from(lo);
        (
            (hi >> 49) & 0x3fff,
            if c > 9_999_999_999_999_999_999_999_999_999_999_999 {
                0
            } else {
                c
            },
        )
    };
    let exponent = exp_biased as i64 - 6176;
    let digits = coeff.to_string();
    let nd = digits.len() as i64;
    let sci_exp = nd - 1 + exponent;
    if sci_exp < -6 || exponent > 0 {
        let mut s = String::from(sign);
        s.push_str(&digits[..1]);
        if nd > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        s.push('E');
        if sci_exp >= 0 {
            s.push('+');
        }
        s.push_str(&sci_exp.to_string());
        return s;
    }
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let radix = nd + exponent;
    if radix > 0 {
        let r = usize::try_from(radix).unwrap_or(0);
        format!("{sign}{}.{}", &digits[..r], &digits[r..])
    } else {
        let zeros = "0".repeat(usize::try_from(-radix).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(hi: u64, lo: u64) -> String {
        decimal128(hi, lo)
    }

    #[test]
    fn decimal128_strings() {
        // From the BSON corpus (decimal128-1.json).
        assert_eq!(dec(0x3040_0000_0000_0000, 0), "0");
        assert_eq!(dec(0xb040_0000_0000_0000, 0), "-0");
        assert_eq!(dec(0x3040_0000_0000_0000, 1), "1");
        assert_eq!(dec(0x303e_0000_0000_0000, 0x0c), "1.2");
        assert_eq!(dec(0x3034_0000_0000_0000, 0x3039), "0.012345");
        assert_eq!(dec(0x3030_0000_0000_0000, 0x3039), "0.00012345");
        assert_eq!(dec(0x3040_0000_0000_0000, 0x000f_4240), "1000000");
        assert_eq!(dec(0x3042_0000_0000_0000, 1), "1E+1");
        assert_eq!(dec(0x7800_0000_0000_0000, 0), "Infinity");
        assert_eq!(dec(0xf800_0000_0000_0000, 0), "-Infinity");
        assert_eq!(dec(0x7c00_0000_0000_0000, 0), "NaN");
        assert_eq!(dec(0x3032_0000_0000_0000, 1), "1E-7");
    }

    #[test]
    fn dates() {
        assert_eq!(date_json(0), json!({"$date": "1970-01-01T00:00:00Z"}));
        assert_eq!(
            date_json(1_704_164_645_123),
            json!({"$date": "2024-01-02T03:04:05.123Z"})
        );
        assert_eq!(date_json(-1), json!({"$date": {"$numberLong": "-1"}}));
    }

    #[test]
    fn malformed_never_panics() {
        let mut ctx = Ctx::default();
        for b in [
            &b""[..],
            b"\x05\x00\x00\x00",
            b"\x05\x00\x00\x00\x01",
            b"\x0c\x00\x00\x00\x02a\x00\xff\xff\xff\x7f\x00",
            b"\x0d\x00\x00\x00\x03a\x00\x05\x00\x00\x00\x00\x00",
            b"\xff\xff\xff\xff",
        ] {
            let _ = decode_doc(b, &mut ctx);
        }
    }
}
