//! PostgreSQL values to JSON: text format as strings, binary format decoded for the common
//! built-in types, anything else as `{"base64": "..."}`.
use base64::Engine as _;
use serde_json::{Value, json};

/// Built-in type OIDs (`pg_type.oid`) the decoder knows.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Bytes as `{"base64": "..."}`.
#[must_use]
pub fn b64(b: &[u8]) -> Value {
    json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
}

/// A value as JSON. `format` 0 = text, 1 = binary; `None` = SQL NULL.
#[must_use]
pub fn decode_value(type_oid: u32, format: i16, data: Option<&[u8]>) -> Value {
    let Some(b) = data else {
        return Value::Null;
    };
    if format == 0 {
        return match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => b64(b),
        };
    }
    decode_binary(type_oid, b).unwrap_or_else(|| b64(b))
}

fn utf8(b: &[u8]) -> Option<Value> {
    std::str::from_utf8(b)
        .ok()
        .map(|s| Value::String(s.to_owned()))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

fn decode_binary(type_oid: u32, b: &[u8]) -> Option<Value> {
    use oid::*;
    Some(match type_oid {
        BOOL if b.len() == 1 => Value::Bool(b[0] != 0),
        BYTEA => b64(b),
        CHAR | NAME | TEXT | JSON | XML | UNKNOWN | BPCHAR | VARCHAR => utf8(b)?,
        JSONB => match b.split_first() {
            Some((1, rest)) => utf8(rest)?,
            _ => return None,
        },
        INT2 => json!(i16::from_be_bytes(b.try_into().ok()?)),
        INT4 => json!(i32::from_be_bytes(b.try_into().ok()?)),
        OID => json!(u32::from_be_bytes(b.try_into().ok()?)),
        INT8 => json!(i64::from_be_bytes(b.try_into().ok()?)),
        FLOAT4 => float(f64::from(f32::from_be_bytes(b.try_into().ok()?))),
        FLOAT8 => float(f64::from_be_bytes(b.try_into().ok()?)),
        UUID if b.len() == 16 => Value::String(uuid_str(b)),
        DATE => Value::String(date_str(i32::from_be_bytes(b.try_into().ok()?))),
        TIME => Value::String(time_str(i64::from_be_bytes(b.try_into().ok()?))),
        TIMESTAMP => Value::String(timestamp_str(i64::from_be_bytes(b.try_into().ok()?), false)),
        TIMESTAMPTZ => Value::String(timestamp_str(i64::from_be_bytes(b.try_into().ok()?), true)),
        NUMERIC => Value::String(numeric_str(b)?),
        _ => return None,
    })
}

fn uuid_str(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days between 1970-01-01 and the PostgreSQL epoch 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

fn date_str(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => {
            let (y, m, d) = civil(i64::from(d) + PG_EPOCH_DAYS);
            format!("{y:04}-{m:02}-{d:02}")
        }
    }
}

fn time_str(us: i64) -> String {
    let s = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let base = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

fn timestamp_str(us: i64, tz: bool) -> String {
    match us {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = us.div_euclid(86_400_000_000);
    let rest = us.rem_euclid(86_400_000_000);
    let (y, m, d) = civil(days + PG_EPOCH_DAYS);
    let t = time_str(rest);
    format!("{y:04}-{m:02}-{d:02}T{t}{}", if tz { "+00:00" } else { "" })
}

/// Binary `numeric`: ndigits, weight, sign, dscale, base-10000 digits.
fn numeric_str(b: &[u8]) -> Option<String> {
    let rd =
        |i: usize| -> Option<i16> { Some(i16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)) };
    let ndigits = usize::try_from(rd(0)?).ok()?;
    let weight = i32::from(rd(2)?);
    let sign = rd(4)? as u16;
    let dscale = usize::try_from(rd(6)?).ok()?;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<i16> = (0..ndigits).map(|i| rd(8 + 2 * i)).collect::<Option<_>>()?;
    if digits.iter().any(|d| !(0..10_000).contains(d)) {
        return None;
    }
    let mut int = String::new();
    if weight < 0 {
        int.push('0');
    } else {
        for i in 0..=weight {
            let d = usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(i))
                .copied()
                .unwrap_or(0);
            if int.is_empty() {
                int.push_str(&d.to_string());
            } else {
                int.push_str(&format!("{d:04}"));
            }
        }
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        let d = if i < 0 {
            0
        } else {
            usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(i))
                .copied()
                .unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        i += 1;
    }
    frac.truncate(dscale);
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    s.push_str(&int);
    if dscale > 0 {
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values() {
        assert_eq!(
            decode_value(oid::INT4, 1, Some(&42i32.to_be_bytes())),
            json!(42)
        );
        assert_eq!(
            decode_value(oid::INT8, 1, Some(&(-7i64).to_be_bytes())),
            json!(-7)
        );
        assert_eq!(
            decode_value(oid::INT2, 1, Some(&3i16.to_be_bytes())),
            json!(3)
        );
        assert_eq!(decode_value(oid::BOOL, 1, Some(&[1])), json!(true));
        assert_eq!(
            decode_value(oid::FLOAT8, 1, Some(&1.5f64.to_be_bytes())),
            json!(1.5)
        );
        assert_eq!(
            decode_value(oid::FLOAT8, 1, Some(&f64::NAN.to_be_bytes())),
            json!("NaN")
        );
        assert_eq!(decode_value(oid::TEXT, 1, Some(b"hi")), json!("hi"));
        assert_eq!(decode_value(oid::JSONB, 1, Some(b"\x01{}")), json!("{}"));
        assert_eq!(
            decode_value(oid::BYTEA, 1, Some(b"\x00\x01")),
            json!({"base64": "AAE="})
        );
        assert_eq!(
            decode_value(999_999, 1, Some(b"\xff")),
            json!({"base64": "/w=="})
        );
        assert_eq!(
            decode_value(oid::INT4, 1, Some(b"\x01")),
            json!({"base64": "AQ=="})
        );
        assert_eq!(decode_value(oid::INT4, 1, None), Value::Null);
        assert_eq!(decode_value(oid::INT4, 0, Some(b"42")), json!("42"));
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
        ];
        assert_eq!(
            decode_value(oid::UUID, 1, Some(&u)),
            json!("12345678-9abc-def0-0001-020304050607")
        );
        assert_eq!(
            decode_value(oid::DATE, 1, Some(&0i32.to_be_bytes())),
            json!("2000-01-01")
        );
        assert_eq!(
            decode_value(oid::DATE, 1, Some(&8766i32.to_be_bytes())),
            json!("2024-01-01")
        );
        let ts: i64 = 8766 * 86_400_000_000 + 3_723_000_001;
        assert_eq!(
            decode_value(oid::TIMESTAMP, 1, Some(&ts.to_be_bytes())),
            json!("2024-01-01T01:02:03.000001")
        );
        assert_eq!(
            decode_value(oid::TIMESTAMPTZ, 1, Some(&(-1i64).to_be_bytes())),
            json!("1999-12-31T23:59:59.999999+00:00")
        );
        // numeric 12345.678: ndigits 3, weight 1, sign 0, dscale 3, digits 1 2345 6780
        let mut n = Vec::new();
        for v in [3i16, 1, 0, 3, 1, 2345, 6780] {
            n.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(decode_value(oid::NUMERIC, 1, Some(&n)), json!("12345.678"));
        // -0.05: ndigits 1, weight -1, sign 0x4000, dscale 2, digits 500
        let mut n = Vec::new();
        for v in [1i16, -1, 0x4000, 2, 500] {
            n.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(decode_value(oid::NUMERIC, 1, Some(&n)), json!("-0.05"));
        assert_eq!(
            decode_value(oid::NUMERIC, 1, Some(&[0, 1])),
            json!({"base64": "AAE="})
        );
    }
}
