//! MySQL's redaction hook: values bound to secret columns, in `detail` and in the wire.
//!
//! - SQL literals in secret positions of `COM_QUERY` / `COM_STMT_PREPARE` texts and of
//!   `detail.sql` (PyMySQL and mysqlclient interpolate parameters into the text);
//! - `COM_STMT_EXECUTE` parameters at the `?` in secret positions (`password = ?`), in the
//!   packet and in `detail.params[i].value`;
//! - row values of result columns whose name is secret: text and binary result rows, and
//!   `detail.rows` / `detail.results[*].rows`.
//!
//! Wire values are overwritten in place, same length (`*` for strings, `0` bytes for binary
//! numbers and dates): every packet keeps its length and sequence. `detail.redacted` as for
//! PostgreSQL (`docs/protocols/mysql.md`).
use std::collections::BTreeSet;

use serde_json::Value;

use super::parse::{self, ColumnDef, Reader};
use crate::protocols::ProtoEvent;
use crate::protocols::redact::sql::{self, Dialect};
use crate::protocols::redact::{Applied, blank, db_call, rewrite, sql_detail};
use crate::redact::RedactionPolicy;

const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;

/// Packets of `b`: `(payload start, payload end)`; the last one may be cut.
fn packets(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 4 <= b.len() {
        let len = usize::from(b[i]) | usize::from(b[i + 1]) << 8 | usize::from(b[i + 2]) << 16;
        out.push((i + 4, (i + 4 + len).min(b.len())));
        i += 4 + len;
    }
    out
}

/// Where the value of a binary-protocol type `t` at `pos` is: `(start, len, next)`, where
/// `start..start+len` are the value's own bytes (a string's content, not its length) and
/// `next` is where the next value begins. `None` when the bytes end first.
fn binary_span(b: &[u8], pos: usize, t: u8) -> Option<(usize, usize, usize)> {
    let fixed = |n: usize| (pos + n <= b.len()).then_some((pos, n, pos + n));
    match t {
        0x01 => fixed(1),
        0x02 | 0x0d => fixed(2),
        0x03 | 0x09 | 0x04 => fixed(4),
        0x08 | 0x05 => fixed(8),
        0x06 => Some((pos, 0, pos)),
        0x07 | 0x0a | 0x0c | 0x0b => {
            let n = usize::from(*b.get(pos)?);
            (pos + 1 + n <= b.len()).then_some((pos + 1, n, pos + 1 + n))
        }
        _ => {
            let mut r = Reader::new(b.get(pos..)?);
            let n = usize::try_from(r.lenenc()?).ok()?;
            let start = b.len() - r.rest().len();
            Some((start, n.min(b.len() - start), start.saturating_add(n)))
        }
    }
}

/// Is a binary value of type `t` text (blanked with `*`) rather than a number (zeroed)?
fn is_text_type(t: u8) -> bool {
    !matches!(t, 0x01..=0x05 | 0x07..=0x0d)
}

/// Blanks the parameters `secret` of a `COM_STMT_EXECUTE` payload `s..e`; `types` are the
/// ones `detail.params` recorded (used when the packet does not carry them).
fn execute_params(b: &mut [u8], s: usize, e: usize, types: &[u8], secret: &BTreeSet<usize>) -> u64 {
    let n = types.len();
    // cmd, statement id, flags, iteration count.
    let mut i = s + 10;
    if n == 0 || i > e {
        return 0;
    }
    let bitmap = i;
    i += n.div_ceil(8);
    let Some(&bound) = b.get(i) else { return 0 };
    i += 1;
    let mut tys = types.to_vec();
    if bound == 1 {
        for (k, t) in tys.iter_mut().enumerate() {
            let Some(&x) = b.get(i + 2 * k) else { return 0 };
            *t = x;
        }
        i += 2 * n;
    }
    let mut done = 0;
    for (k, &t) in tys.iter().enumerate() {
        if b.get(bitmap + k / 8)
            .is_none_or(|m| m & (1 << (k % 8)) != 0)
        {
            continue; // NULL
        }
        let Some((vs, len, next)) = binary_span(&b[..e], i, t) else {
            break;
        };
        if secret.contains(&k) {
            blank(b, vs, len, if is_text_type(t) { b'*' } else { 0 });
            done += 1;
        }
        i = next;
    }
    done
}

/// Blanks the values of secret columns in the result sets of a response (`binary`: rows of
/// a `COM_STMT_EXECUTE`). Result sets are walked as the protocol lays them out: a column
/// count, its definitions, an optional EOF, rows up to a terminator; OK / ERR packets end a
/// result without rows.
fn result_rows(b: &mut [u8], binary: bool, key: &dyn Fn(&str) -> bool) -> u64 {
    enum St {
        Header,
        Columns(usize),
        /// Right after the definitions: an EOF here closes them (no `CLIENT_DEPRECATE_EOF`)
        /// when rows or the final terminator follow it; else it ends an empty result.
        AfterColumns,
        Rows,
    }
    let mut st = St::Header;
    let mut cols: Vec<ColumnDef> = Vec::new();
    let mut done = 0;
    let pkts = packets(b);
    for (n, &(s, e)) in pkts.iter().enumerate() {
        let p = &b[s..e];
        let terminator = p.first() == Some(&0xff) || parse::is_terminator(p);
        match st {
            St::Header => {
                if matches!(p.first(), Some(0x00 | 0xff | 0xfb | 0xfe) | None) {
                    continue;
                }
                let Some(n) = Reader::new(p)
                    .lenenc()
                    .and_then(|n| usize::try_from(n).ok())
                else {
                    return done;
                };
                cols.clear();
                st = if n == 0 { St::Header } else { St::Columns(n) };
            }
            St::Columns(left) => {
                if let Some(c) = parse::parse_column_def(p) {
                    cols.push(c);
                }
                st = if left <= 1 {
                    St::AfterColumns
                } else {
                    St::Columns(left - 1)
                };
            }
            St::AfterColumns if terminator => {
                let eof_of_columns = p.len() == 5 && pkts.get(n + 1).is_some();
                st = if eof_of_columns { St::Rows } else { St::Header };
            }
            St::Rows if terminator => st = St::Header,
            St::AfterColumns | St::Rows => {
                st = St::Rows;
                let secret: Vec<bool> = cols.iter().map(|c| key(&c.name)).collect();
                if secret.contains(&true) {
                    done += row(b, s, e, &cols, &secret, binary);
                }
            }
        }
    }
    done
}

/// Blanks the secret values of one result row `s..e`.
fn row(b: &mut [u8], s: usize, e: usize, cols: &[ColumnDef], secret: &[bool], binary: bool) -> u64 {
    let mut done = 0;
    if binary {
        let bitmap = s + 1;
        let mut i = bitmap + (cols.len() + 9) / 8;
        for (k, c) in cols.iter().enumerate() {
            let bit = k + 2;
            if b.get(bitmap + bit / 8)
                .is_none_or(|m| m & (1 << (bit % 8)) != 0)
            {
                continue;
            }
            let Some((vs, len, next)) = binary_span(&b[..e], i, c.type_code) else {
                break;
            };
            if secret[k] {
                blank(b, vs, len, if is_text_type(c.type_code) { b'*' } else { 0 });
                done += 1;
            }
            i = next;
        }
    } else {
        let mut i = s;
        for &sec in secret {
            if b.get(i) == Some(&0xfb) {
                i += 1;
                continue;
            }
            // Any type: the text protocol sends every value as a length-encoded string.
            let Some((vs, len, next)) = binary_span(&b[..e], i, 0xfe) else {
                break;
            };
            if sec {
                blank(b, vs, len, b'*');
                done += 1;
            }
            i = next;
        }
    }
    done
}

/// The hook of the registry's MySQL entry.
pub fn redact(e: &mut ProtoEvent, p: &RedactionPolicy) -> Applied {
    let Some(call) = db_call(e) else {
        return Applied::default();
    };
    let command = call
        .detail
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !matches!(
        command.as_str(),
        "COM_QUERY" | "COM_STMT_PREPARE" | "COM_STMT_EXECUTE"
    ) {
        return Applied::default();
    }
    let key = |k: &str| p.key_matches(k);
    let detail_sql = call
        .detail
        .get("sql")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let secrets = detail_sql
        .as_deref()
        .map(|s| sql::analyse(s.as_bytes(), Dialect::Mysql, &key))
        .unwrap_or_default();
    let types: Vec<u8> = call
        .detail
        .get("params")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.get("type_code")
                        .and_then(Value::as_u64)
                        .and_then(|t| u8::try_from(t).ok())
                        .unwrap_or(0xfe)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut values = 0u64;
    rewrite(&mut call.raw_request, |b| {
        for (s, e) in packets(b) {
            match b.get(s) {
                Some(&(COM_QUERY | COM_STMT_PREPARE)) => {
                    let found = sql::analyse(&b[s + 1..e], Dialect::Mysql, &key);
                    sql::fill(b, s + 1, &found.literals);
                }
                Some(&COM_STMT_EXECUTE) => {
                    values += execute_params(b, s, e, &types, &secrets.params);
                }
                _ => {}
            }
        }
    });
    let binary = command == "COM_STMT_EXECUTE";
    if command != "COM_STMT_PREPARE" {
        rewrite(&mut call.raw_response, |b| {
            result_rows(b, binary, &key);
        });
    }
    let values = sql_detail(
        &mut call.detail,
        detail_sql,
        &secrets,
        &secrets.params,
        p,
        values,
    );
    Applied { values }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocols::Protocol;
    use crate::protocols::redact::{REDACTED, absent, test_call, test_parts};

    const PW: &str = "Pw-7Qx2Lm9Rz4Kv8";
    const TOK: &str = "Tok-5Hd3Wy6Pb0Js";

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut v = vec![
            u8::try_from(n & 0xff).unwrap(),
            u8::try_from((n >> 8) & 0xff).unwrap(),
            u8::try_from(n >> 16).unwrap(),
            seq,
        ];
        v.extend_from_slice(payload);
        v
    }

    fn lenenc(s: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::try_from(s.len()).unwrap()];
        v.extend_from_slice(s);
        v
    }

    fn column(name: &str, type_code: u8) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "app", "accounts", "accounts", name, name] {
            p.extend_from_slice(&lenenc(s.as_bytes()));
        }
        p.push(0x0c);
        p.extend_from_slice(&33u16.to_le_bytes());
        p.extend_from_slice(&255u32.to_le_bytes());
        p.push(type_code);
        p.extend_from_slice(&[0, 0, 0, 0, 0]);
        p
    }

    fn eof() -> Vec<u8> {
        vec![0xfe, 0, 0, 0x22, 0]
    }

    #[test]
    fn literals_and_text_rows_pymysql() {
        let sql = format!("SELECT name, password, token FROM accounts WHERE password = '{PW}'");
        let req = pkt(0, &[&[COM_QUERY][..], sql.as_bytes()].concat());
        let resp = [
            pkt(1, &[3]),
            pkt(2, &column("name", 0xfd)),
            pkt(3, &column("password", 0xfd)),
            pkt(4, &column("token", 0xfd)),
            pkt(5, &eof()),
            pkt(
                6,
                &[lenenc(b"alice"), lenenc(PW.as_bytes()), vec![0xfb]].concat(),
            ),
            pkt(
                7,
                &[
                    lenenc(b"bob"),
                    lenenc(PW.as_bytes()),
                    lenenc(TOK.as_bytes()),
                ]
                .concat(),
            ),
            pkt(8, &eof()),
        ]
        .concat();
        let detail = json!({
            "command": "COM_QUERY", "sql": sql,
            "columns": [{"name": "name"}, {"name": "password"}, {"name": "token"}],
            "rows": [["alice", PW, null], ["bob", PW, TOK]],
        });
        let mut e = test_call(Protocol::Mysql, "SELECT", detail, &req, &resp);
        let a = redact(&mut e, &RedactionPolicy::default());
        let (d, rq, rs) = test_parts(&e);
        assert_eq!((rq.len(), rs.len()), (req.len(), resp.len()));
        for hay in [rq, rs, d.to_string().as_bytes()] {
            assert!(
                absent(hay, PW) && absent(hay, TOK),
                "{}",
                String::from_utf8_lossy(hay)
            );
        }
        assert!(!absent(rs, "alice") && !absent(rs, "bob"));
        assert_eq!(d["rows"][1], json!(["bob", REDACTED, REDACTED]));
        assert_eq!(d["rows"][0][2], Value::Null);
        assert_eq!(a.values, 1 + 3, "the literal and three row values");
        let red = crate::protocols::postgres::redact::RecordedRedaction::of(Some(d));
        assert!(red.sql_matches(
            d["sql"].as_str().unwrap(),
            &sql.replace(PW, "x"),
            Dialect::Mysql
        ));
    }

    #[test]
    fn prepared_statement_parameters_and_binary_rows() {
        let sql = "SELECT id, token FROM accounts WHERE name = ? AND password = ?";
        // COM_STMT_EXECUTE: id 1, flags 0, iterations 1, null bitmap, bound, types, values.
        let mut p = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0xfe, 0, 0xfe, 0]);
        p.extend_from_slice(&lenenc(b"alice"));
        p.extend_from_slice(&lenenc(PW.as_bytes()));
        let req = pkt(0, &p);
        let mut row = vec![0, 0]; // header, null bitmap (2 columns + 2 bits)
        row.extend_from_slice(&7u32.to_le_bytes());
        row.extend_from_slice(&lenenc(TOK.as_bytes()));
        let resp = [
            pkt(1, &[2]),
            pkt(2, &column("id", 0x03)),
            pkt(3, &column("token", 0xfd)),
            pkt(4, &eof()),
            pkt(5, &row),
            pkt(6, &eof()),
        ]
        .concat();
        let detail = json!({
            "command": "COM_STMT_EXECUTE", "sql": sql,
            "params": [{"type_code": 254, "value": "alice"}, {"type_code": 254, "value": PW}],
            "columns": [{"name": "id"}, {"name": "token"}], "rows": [[7, TOK]],
        });
        let mut e = test_call(Protocol::Mysql, "SELECT", detail, &req, &resp);
        redact(&mut e, &RedactionPolicy::default());
        let (d, rq, rs) = test_parts(&e);
        assert_eq!((rq.len(), rs.len()), (req.len(), resp.len()));
        for hay in [rq, rs, d.to_string().as_bytes()] {
            assert!(
                absent(hay, PW) && absent(hay, TOK),
                "{}",
                String::from_utf8_lossy(hay)
            );
        }
        assert!(!absent(rq, "alice"));
        assert_eq!(d["params"][1]["value"], REDACTED);
        assert_eq!(d["redacted"]["params"], json!([1]));
        assert_eq!(d["rows"][0], json!([7, REDACTED]));
        // The id (not secret) is intact in the binary row.
        assert!(rs.windows(4).any(|w| w == 7u32.to_le_bytes()));
    }

    #[test]
    fn cut_packets_never_panic() {
        let sql = "INSERT INTO u (password) VALUES (?)";
        let mut p = vec![COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0xfe, 0];
        p.extend_from_slice(&lenenc(PW.as_bytes()));
        let full = pkt(0, &p);
        for cut in 0..full.len() {
            let detail = json!({"command": "COM_STMT_EXECUTE", "sql": sql,
                                "params": [{"type_code": 254, "value": PW}]});
            let mut e = test_call(
                Protocol::Mysql,
                "INSERT",
                detail,
                &full[..cut],
                &full[..cut],
            );
            redact(&mut e, &RedactionPolicy::default());
        }
    }
}
