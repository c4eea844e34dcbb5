//! The one JSON comparison: `timetracer diff` (and the web compare view) and replay's verdicts
//! use it, so a body or a query that "did not change" means the same thing in both.
//!
//! # What counts as equal
//!
//! - **Numbers by decimal value.** `1`, `1.0`, `1e0` and `10E-1` are equal, and so are `0` and
//!   `-0`: JSON does not tell integers from floats, and neither do the Python apps we record
//!   (`json.loads("1.0") == 1`), so a serializer switching between them is not a change. No
//!   value goes through `f64`: ids above 2^53 that differ in their last digit differ, and `0.1`
//!   differs from `0.10000000000000001`.
//! - **Objects by key**, whatever the key order; **arrays element by element**, then by length.
//! - **`"[REDACTED]"` on either side matches any value**: what was there is unknown.
//! - Strings, booleans and `null` only equal themselves; a change of type is a difference.
use serde_json::{Number, Value};

use crate::redact::REDACTED;

/// Where and how two JSON values differ.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference<'a> {
    /// `$.items[1].id`-style path below the root name the caller gave (`$`, `body`, `query`);
    /// `PATH.length` for [`Kind::Length`].
    pub path: String,
    pub kind: Kind<'a>,
}

/// How a value differs.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind<'a> {
    /// Different values (or types) at the same place.
    Changed {
        expected: &'a Value,
        actual: &'a Value,
    },
    /// A key only the expected side has.
    Removed(&'a Value),
    /// A key only the actual side has.
    Added(&'a Value),
    /// Arrays of different lengths (their common prefix is compared first).
    Length { expected: usize, actual: usize },
}

/// Whether `a` and `b` are equal under the rules above.
#[must_use]
pub fn equal(a: &Value, b: &Value) -> bool {
    first_difference("$", a, b).is_none()
}

/// The first difference between `expected` and `actual`, paths starting at `root`.
#[must_use]
pub fn first_difference<'a>(
    root: &str,
    expected: &'a Value,
    actual: &'a Value,
) -> Option<Difference<'a>> {
    differences(root, expected, actual, 1).into_iter().next()
}

/// Up to `max` differences between `expected` and `actual`, in document order (keys of
/// `expected` first, then keys only `actual` has), paths starting at `root`.
#[must_use]
pub fn differences<'a>(
    root: &str,
    expected: &'a Value,
    actual: &'a Value,
    max: usize,
) -> Vec<Difference<'a>> {
    let mut out = Vec::new();
    walk(root, expected, actual, &mut out, max);
    out
}

fn walk<'a>(path: &str, e: &'a Value, a: &'a Value, out: &mut Vec<Difference<'a>>, max: usize) {
    if out.len() >= max || e.as_str() == Some(REDACTED) || a.as_str() == Some(REDACTED) {
        return;
    }
    match (e, a) {
        (Value::Object(eo), Value::Object(ao)) => {
            for (k, ev) in eo {
                let p = format!("{path}.{k}");
                match ao.get(k) {
                    Some(av) => walk(&p, ev, av, out, max),
                    None if out.len() < max => out.push(Difference {
                        path: p,
                        kind: Kind::Removed(ev),
                    }),
                    None => return,
                }
            }
            for (k, av) in ao.iter().filter(|(k, _)| !eo.contains_key(*k)) {
                if out.len() >= max {
                    return;
                }
                out.push(Difference {
                    path: format!("{path}.{k}"),
                    kind: Kind::Added(av),
                });
            }
        }
        (Value::Array(ea), Value::Array(aa)) => {
            for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                walk(&format!("{path}[{i}]"), ev, av, out, max);
            }
            if ea.len() != aa.len() && out.len() < max {
                out.push(Difference {
                    path: format!("{path}.length"),
                    kind: Kind::Length {
                        expected: ea.len(),
                        actual: aa.len(),
                    },
                });
            }
        }
        (Value::Number(x), Value::Number(y)) if numbers_equal(x, y) => {}
        _ if e == a => {}
        _ => out.push(Difference {
            path: path.to_owned(),
            kind: Kind::Changed {
                expected: e,
                actual: a,
            },
        }),
    }
}

/// Whether two JSON numbers have the same decimal value (`1` = `1.0` = `1e0`; no `f64`).
#[must_use]
pub fn numbers_equal(a: &Number, b: &Number) -> bool {
    if a == b {
        return true;
    }
    let (sa, sb) = (a.to_string(), b.to_string());
    match (Decimal::parse(&sa), Decimal::parse(&sb)) {
        (Some(x), Some(y)) => x == y,
        _ => sa == sb,
    }
}

/// A JSON number as sign × digits × 10^exponent with no leading or trailing zero digit (zero
/// has no digits and no sign), so equal values have equal forms.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i128,
}

impl Decimal {
    /// Parses JSON number text (`-?digits(.digits)?([eE][+-]?digits)?`).
    fn parse(s: &str) -> Option<Self> {
        let (negative, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let (mantissa, exp) = s.split_once(['e', 'E']).unwrap_or((s, "0"));
        let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // An exponent too long for i128 saturates: such numbers only need to compare.
        let magnitude = exp_digits.parse::<i128>().unwrap_or(i128::MAX / 4);
        let exp = if exp.starts_with('-') {
            -magnitude
        } else {
            magnitude
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all = format!("{int}{frac}");
        let digits = all.trim_start_matches('0').trim_end_matches('0');
        if digits.is_empty() {
            return Some(Self {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        let trailing = all.len() - all.trim_end_matches('0').len();
        Some(Self {
            negative,
            digits: digits.to_owned(),
            exponent: exp - frac.len() as i128 + trailing as i128,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn num(s: &str) -> Number {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn numbers_compare_by_decimal_value() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("1", "10E-1"),
            ("100", "1e2"),
            ("100", "1.00e+2"),
            ("0", "-0"),
            ("0", "0.000"),
            ("0", "0e7"),
            ("-2.50", "-2.5"),
            ("0.05", "5e-2"),
            ("120.0", "12e1"),
        ] {
            assert!(numbers_equal(&num(a), &num(b)), "{a} = {b}");
            assert!(numbers_equal(&num(b), &num(a)), "{b} = {a}");
        }
        for (a, b) in [
            ("1", "2"),
            ("1", "-1"),
            ("1.5", "15"),
            ("10", "1"),
            ("0.1", "0.01"),
            // Would be equal through f64.
            ("9007199254740993", "9007199254740992"),
            ("0.1", "0.10000000000000001"),
            ("12345678901234567890123", "12345678901234567890124"),
        ] {
            assert!(!numbers_equal(&num(a), &num(b)), "{a} ≠ {b}");
        }
    }

    #[test]
    fn structure_redaction_and_order() {
        let e = json!({"items": [{"id": 1}, {"id": 2}], "token": "[REDACTED]", "gone": 1});
        let a = json!({"items": [{"id": 1.0}, {"id": 3}], "token": "abc", "new": true});
        let d = differences("$", &e, &a, 8);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["$.items[1].id", "$.gone", "$.new"]);
        assert!(matches!(d[1].kind, Kind::Removed(_)));
        assert!(matches!(d[2].kind, Kind::Added(_)));
        assert_eq!(differences("$", &e, &a, 2).len(), 2);
        assert_eq!(
            first_difference("body", &e, &a).unwrap().path,
            "body.items[1].id"
        );

        let (short, long) = (json!([1, {"x": 1}]), json!([1.0, {"x": 1}, 3]));
        let d = first_difference("b", &short, &long).unwrap();
        assert_eq!(
            (d.path.as_str(), d.kind),
            (
                "b.length",
                Kind::Length {
                    expected: 2,
                    actual: 3
                }
            )
        );
        // Redacted on either side matches; a type change is a difference.
        assert!(equal(&json!({"k": "[REDACTED]"}), &json!({"k": 5})));
        assert!(equal(&json!({"k": [1]}), &json!({"k": "[REDACTED]"})));
        assert!(!equal(&json!("1"), &json!(1)));
        assert!(!equal(&json!(null), &json!(0)));
        assert!(equal(&json!({"a": 1, "b": 2}), &json!({"b": 2.0, "a": 1})));
    }
}
