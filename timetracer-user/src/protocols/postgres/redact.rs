//! PostgreSQL's redaction hook: values bound to secret columns, in `detail` and in the wire.
//!
//! - SQL literals in secret positions (`password = 'x'`, `INSERT … (password) VALUES ('x')`)
//!   of `Query` and `Parse` texts and of `detail.sql` (psycopg2 interpolates parameters into
//!   the text);
//! - `Bind` parameters at the placeholders in secret positions (`password = $1`: asyncpg,
//!   psycopg 3), and `detail.params[i].value`;
//! - row values of result columns whose name is secret: `DataRow` values (by the call's
//!   `RowDescription`, else `detail.columns`) and `detail.rows` / `detail.results[*].rows`.
//!
//! Wire values are overwritten in place, same length (`*`; `0` for numeric literals): every
//! message keeps its length and framing. `detail.redacted` = `{"sql": [[start, end], …],
//! "params": [i, …], "columns": [name, …], "values": n}` (byte ranges of `detail.sql`; only
//! the keys that apply); the replay mock lets those match any value.
use std::collections::BTreeSet;

use serde_json::Value;

use crate::protocols::ProtoEvent;
use crate::protocols::redact::sql::{self, Dialect};
use crate::protocols::redact::{Applied, blank, db_call, rewrite, sql_detail};
use crate::redact::RedactionPolicy;

/// Call kinds whose bytes are typed messages with SQL (not the startup phase).
fn is_statement_kind(kind: &str) -> bool {
    !matches!(
        kind,
        "startup" | "ssl_request" | "gssenc_request" | "cancel"
    )
}

/// Typed messages of `b`: `(type, payload start, payload end)`; the last one may be cut (its
/// end is then the end of `b`).
pub(crate) fn messages(b: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 5 <= b.len() {
        let len = u32::from_be_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as usize;
        if len < 4 {
            break;
        }
        out.push((b[i], i + 5, (i + 1 + len).min(b.len())));
        i = i.saturating_add(1 + len);
    }
    out
}

/// A bounded cursor over one message's payload that tolerates a cut message.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
    end: usize,
}

impl Cur<'_> {
    fn cstr(&mut self) -> Option<std::ops::Range<usize>> {
        let s = self.i;
        let n = self
            .b
            .get(s..self.end.min(self.b.len()))?
            .iter()
            .position(|&c| c == 0)?;
        self.i = s + n + 1;
        Some(s..s + n)
    }
    fn i16(&mut self) -> Option<i16> {
        let v = self
            .b
            .get(self.i..self.i + 2)
            .filter(|_| self.i + 2 <= self.end)?;
        self.i += 2;
        Some(i16::from_be_bytes([v[0], v[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        let v = self
            .b
            .get(self.i..self.i + 4)
            .filter(|_| self.i + 4 <= self.end)?;
        self.i += 4;
        Some(i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
}

/// Values of a `Bind` (payload `s..e`): `(parameter index, value start, length)`, non-null.
fn bind_values(b: &[u8], s: usize, e: usize) -> Vec<(usize, usize, usize)> {
    let mut c = Cur { b, i: s, end: e };
    let mut out = Vec::new();
    let Some(_) = c.cstr().and_then(|_| c.cstr()) else {
        return out;
    };
    let Some(nf) = c.i16() else { return out };
    c.i = c.i.saturating_add(2 * usize::try_from(nf).unwrap_or(0));
    let Some(np) = c.i16() else { return out };
    for k in 0..usize::try_from(np).unwrap_or(0) {
        let Some(len) = c.i32() else { break };
        let Ok(len) = usize::try_from(len) else {
            continue; // NULL
        };
        out.push((k, c.i, len.min(e.saturating_sub(c.i))));
        c.i = c.i.saturating_add(len);
        if c.i >= e {
            break;
        }
    }
    out
}

/// Column names of a `RowDescription` (payload `s..e`).
fn row_description(b: &[u8], s: usize, e: usize) -> Vec<String> {
    let mut c = Cur { b, i: s, end: e };
    let mut out = Vec::new();
    let Some(n) = c.i16() else { return out };
    for _ in 0..n {
        let Some(r) = c.cstr() else { break };
        out.push(String::from_utf8_lossy(&b[r]).into_owned());
        c.i += 18;
    }
    out
}

/// Values of a `DataRow`: `(column, value start, length)`, non-null.
fn data_row(b: &[u8], s: usize, e: usize) -> Vec<(usize, usize, usize)> {
    let mut c = Cur { b, i: s, end: e };
    let mut out = Vec::new();
    let Some(n) = c.i16() else { return out };
    for k in 0..usize::try_from(n).unwrap_or(0) {
        let Some(len) = c.i32() else { break };
        let Ok(len) = usize::try_from(len) else {
            continue;
        };
        out.push((k, c.i, len.min(e.saturating_sub(c.i))));
        c.i = c.i.saturating_add(len);
        if c.i >= e {
            break;
        }
    }
    out
}

/// The hook of the registry's PostgreSQL entry.
pub fn redact(e: &mut ProtoEvent, p: &RedactionPolicy) -> Applied {
    let Some(call) = db_call(e) else {
        return Applied::default();
    };
    let kind = call
        .detail
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !is_statement_kind(kind) {
        return Applied::default();
    }
    let key = |k: &str| p.key_matches(k);
    let mut values = 0u64;
    // The statement of the call, as recorded in `detail` (also for a cached statement).
    let detail_sql = call
        .detail
        .get("sql")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let secrets = detail_sql
        .as_deref()
        .map(|s| sql::analyse(s.as_bytes(), Dialect::Postgres, &key))
        .unwrap_or_default();
    let mut params: BTreeSet<usize> = secrets.params.clone();

    // Frontend: Query / Parse texts, Bind values.
    rewrite(&mut call.raw_request, |b| {
        let msgs = messages(b);
        for &(t, s, e) in &msgs {
            let text = match t {
                b'Q' => Some(s..e),
                b'P' => {
                    let mut c = Cur { b, i: s, end: e };
                    c.cstr().and_then(|_| c.cstr().or(Some(c.i.min(e)..e)))
                }
                _ => None,
            };
            if let Some(r) = text {
                let text = &b[r.clone()];
                let text = &text[..text.iter().position(|&c| c == 0).unwrap_or(text.len())];
                let found = sql::analyse(text, Dialect::Postgres, &key);
                params.extend(found.params.iter().copied());
                sql::fill(b, r.start, &found.literals);
            }
        }
        for &(t, s, e) in &msgs {
            if t == b'B' {
                for (k, vs, len) in bind_values(b, s, e) {
                    if params.contains(&k) {
                        blank(b, vs, len, b'*');
                        values += 1;
                    }
                }
            }
        }
    });

    // Backend: DataRow values of secret columns.
    let detail_cols: Vec<bool> = call
        .detail
        .get("columns")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| c.get("name").and_then(Value::as_str).is_some_and(key))
                .collect()
        })
        .unwrap_or_default();
    rewrite(&mut call.raw_response, |b| {
        let mut cols = detail_cols.clone();
        for (t, s, e) in messages(b) {
            match t {
                b'T' => cols = row_description(b, s, e).iter().map(|n| key(n)).collect(),
                b'D' => {
                    for (k, vs, len) in data_row(b, s, e) {
                        if cols.get(k) == Some(&true) {
                            blank(b, vs, len, b'*');
                        }
                    }
                }
                _ => {}
            }
        }
    });

    let values = sql_detail(&mut call.detail, detail_sql, &secrets, &params, p, values);
    Applied { values }
}

/// What a recorded call's `detail.redacted` says (for replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedRedaction {
    /// Byte ranges of redacted literals in `detail.sql`.
    pub sql: Vec<std::ops::Range<usize>>,
    /// Redacted parameter indices.
    pub params: BTreeSet<usize>,
}

impl RecordedRedaction {
    /// From a recorded `detail` (empty when nothing was redacted).
    #[must_use]
    pub fn of(detail: Option<&Value>) -> Self {
        let Some(r) = detail.and_then(|d| d.get("redacted")) else {
            return Self::default();
        };
        let num = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        let sql = r
            .get("sql")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some(num(s.get(0)?)?..num(s.get(1)?)?))
                    .collect()
            })
            .unwrap_or_default();
        let params = r
            .get("params")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(num).collect())
            .unwrap_or_default();
        Self { sql, params }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sql.is_empty() && self.params.is_empty()
    }

    /// The app's SQL matches the recorded (redacted) one.
    #[must_use]
    pub fn sql_matches(&self, recorded: &str, actual: &str, d: Dialect) -> bool {
        if self.sql.is_empty() {
            recorded == actual
        } else {
            sql::matches_redacted(recorded, &self.sql, actual, d)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocols::Protocol;
    use crate::protocols::redact::{REDACTED, absent, test_call, test_parts};

    fn msg(t: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&u32::try_from(payload.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn values(vals: &[&str]) -> Vec<u8> {
        let mut p = i16::try_from(vals.len()).unwrap().to_be_bytes().to_vec();
        for v in vals {
            p.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
            p.extend_from_slice(v.as_bytes());
        }
        p
    }

    fn bind(vals: &[&str]) -> Vec<u8> {
        let mut p = [cstr(""), cstr("stmt1")].concat();
        p.extend_from_slice(&1i16.to_be_bytes());
        p.extend_from_slice(&1i16.to_be_bytes()); // binary
        p.extend_from_slice(&values(vals));
        p.extend_from_slice(&0i16.to_be_bytes());
        msg(b'B', &p)
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut p = i16::try_from(names.len()).unwrap().to_be_bytes().to_vec();
        for n in names {
            p.extend_from_slice(&cstr(n));
            p.extend_from_slice(&[0; 18]);
        }
        msg(b'T', &p)
    }

    const PW: &str = "Pw-7Qx2Lm9Rz4Kv8";
    const TOK: &str = "Tok-5Hd3Wy6Pb0Js";

    #[test]
    fn literals_of_a_simple_query_psycopg2() {
        let sql = format!(
            "INSERT INTO accounts (name, password, token) VALUES ('alice', '{PW}', '{TOK}')"
        );
        let req = msg(b'Q', &cstr(&sql));
        let resp = [msg(b'C', &cstr("INSERT 0 1")), msg(b'Z', b"I")].concat();
        let mut e = test_call(
            Protocol::Postgres,
            "INSERT",
            json!({"kind": "query", "sql": sql}),
            &req,
            &resp,
        );
        let a = redact(&mut e, &RedactionPolicy::default());
        assert_eq!(a.values, 2);
        let (d, rq, rs) = test_parts(&e);
        assert_eq!(rq.len(), req.len(), "same length");
        assert_eq!(rs, resp.as_slice());
        for hay in [rq, d.to_string().as_bytes()] {
            assert!(absent(hay, PW) && absent(hay, TOK));
        }
        assert!(!absent(rq, "'alice'"), "other literals kept");
        // Replay: the recorded statement matches the live one whatever the secrets.
        let red = RecordedRedaction::of(Some(d));
        let recorded = d["sql"].as_str().unwrap();
        let live = sql.replace(PW, "another-password");
        assert!(red.sql_matches(recorded, &live, Dialect::Postgres));
        assert!(!red.sql_matches(recorded, &live.replace("alice", "bob"), Dialect::Postgres));
    }

    #[test]
    fn bound_parameters_and_binary_rows_asyncpg() {
        let sql = "SELECT name, password FROM accounts WHERE name = $1 AND password = $2";
        let req = [
            bind(&["alice", PW]),
            msg(b'E', &[0, 0, 0, 0, 0]),
            msg(b'S', b""),
        ]
        .concat();
        let resp = [
            msg(b'2', b""),
            row_description(&["name", "password"]),
            msg(b'D', &values(&["alice", PW])),
            msg(b'C', &cstr("SELECT 1")),
            msg(b'Z', b"I"),
        ]
        .concat();
        let detail = json!({
            "kind": "extended", "sql": sql,
            "params": [{"value": "alice"}, {"value": PW}],
            "columns": [{"name": "name"}, {"name": "password"}],
            "rows": [["alice", PW]],
        });
        let mut e = test_call(Protocol::Postgres, "SELECT", detail, &req, &resp);
        let a = redact(&mut e, &RedactionPolicy::default());
        let (d, rq, rs) = test_parts(&e);
        assert_eq!((rq.len(), rs.len()), (req.len(), resp.len()));
        for hay in [rq, rs, d.to_string().as_bytes()] {
            assert!(absent(hay, PW), "{}", String::from_utf8_lossy(hay));
        }
        assert!(!absent(rq, "alice") && !absent(rs, "alice"));
        assert_eq!(d["params"][1]["value"], REDACTED);
        assert_eq!(d["rows"][0], json!(["alice", REDACTED]));
        assert_eq!(d["redacted"]["params"], json!([1]));
        assert_eq!(d["redacted"]["columns"], json!(["password"]));
        assert_eq!(a.values, 1 + 1, "one row value and one parameter");
        // Redacting twice changes nothing more.
        let again = e.clone();
        redact(&mut e, &RedactionPolicy::default());
        assert_eq!(test_parts(&e).1, test_parts(&again).1);
    }

    #[test]
    fn rows_by_the_detail_columns_when_the_description_was_earlier() {
        // asyncpg: the RowDescription came with the prepare; the execution has DataRows only.
        let resp = [msg(b'D', &values(&[TOK])), msg(b'C', &cstr("SELECT 1"))].concat();
        let detail = json!({"kind": "extended", "sql": "SELECT token FROM s",
                            "columns": [{"name": "token"}], "rows": [[TOK]]});
        let mut e = test_call(Protocol::Postgres, "SELECT", detail, &[], &resp);
        redact(&mut e, &RedactionPolicy::default());
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && absent(d.to_string().as_bytes(), TOK));
    }

    #[test]
    fn startup_and_cut_messages_are_left_alone_without_panicking() {
        let mut e = test_call(
            Protocol::Postgres,
            "STARTUP",
            json!({"kind": "startup"}),
            b"\0\0\0\x08\x04\xd2\x16\x2f",
            b"N",
        );
        assert_eq!(redact(&mut e, &RedactionPolicy::default()).values, 0);
        let full = [bind(&["alice", PW]), msg(b'E', &[0; 5])].concat();
        for cut in 0..full.len() {
            let mut e = test_call(
                Protocol::Postgres,
                "SELECT",
                json!({"kind": "extended", "sql": "SELECT 1 WHERE password = $2"}),
                &full[..cut],
                &[],
            );
            redact(&mut e, &RedactionPolicy::default());
            assert_eq!(test_parts(&e).1.len(), cut);
        }
    }
}
