//! Fingerprints of dependency calls: what N+1 detection (`timetracer stats`) counts as "the
//! same call". Written by hand because no maintained crate normalises SQL of every dialect the
//! agent records (PostgreSQL, MySQL, MongoDB's commands aside) into a fingerprint: `sqlparser`
//! parses (and rejects what it does not know); the fingerprint must never fail.
//!
//! - SQL: comments (`--`, `#` in MySQL, nested `/* */`) removed; string literals (`'…'` with
//!   `''`, `E'…'` with backslashes, `$tag$…$tag$`), numbers (`42`, `-1.5e3`, `0x1F`), `TRUE`,
//!   `FALSE`, `NULL` and placeholders (`$1`, `%s`, `%(name)s`, `?`, `:name`) become `?`;
//!   unquoted words are upper-cased, quoted identifiers kept; whitespace collapsed; every
//!   `IN (…)` list of placeholders, whatever its length, becomes `IN (…)`, and so do the rows
//!   of a multi-row `VALUES (…), (…)`.
//! - Redis: the command word(s) and the key pattern (the first argument; runs of digits, UUIDs
//!   and hex ids of 8+ digits become `?`), e.g. `GET user:?:profile`.
//! - HTTP: method and URL with ids in the path replaced by `{id}`.
//!
//! Calls that are never N+1 ([`is_session_level`]): the session-level traffic the recorder
//! marks (`session_level`: handshakes, `SET`, pings, type introspection), transaction control
//! and session statements (`BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`,
//! `RELEASE`, `SET`, `SHOW`, `RESET`, `DISCARD`, `DEALLOCATE`, `USE`), Redis `PING`, `ECHO`,
//! `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, `SELECT`, `AUTH`, `HELLO` and commands queued
//! in a transaction.
use serde_json::Value;

use crate::cassette::format::Event;

/// The fingerprint of `e` (see the module doc).
#[must_use]
pub fn of(e: &Event) -> String {
    let db = e.db.as_ref();
    if e.kind == "redis" {
        let key = db
            .and_then(|d| d.get("args"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(redis_key)
            .unwrap_or_default();
        return format!("redis {} {key}", e.signature.method.to_ascii_uppercase())
            .trim_end()
            .to_owned();
    }
    if let Some(sql) = db.and_then(|d| d.get("sql")).and_then(Value::as_str) {
        return format!("{} {}", e.signature.lib, sql_fingerprint(sql));
    }
    if let Some(t) = super::summary::db_text(e) {
        return format!("{} {} {}", e.kind, e.signature.method, sql_fingerprint(&t));
    }
    let url = e.signature.url.as_deref().unwrap_or("");
    let url = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!("{scheme}://{host}{}", super::summary::normalize_path(path))
        }
        None => super::summary::normalize_path(url),
    };
    format!("{} {} {url}", e.kind, e.signature.method)
}

/// True for calls that are never N+1 (see the module doc).
#[must_use]
pub fn is_session_level(e: &Event) -> bool {
    if e.session_level {
        return true;
    }
    let db = e.db.as_ref();
    if e.kind == "redis" {
        if db
            .and_then(|d| d.get("queued"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return true;
        }
        let m = e.signature.method.to_ascii_uppercase();
        let first = m.split(' ').next().unwrap_or("");
        return matches!(
            first,
            "PING"
                | "ECHO"
                | "MULTI"
                | "EXEC"
                | "DISCARD"
                | "WATCH"
                | "UNWATCH"
                | "SELECT"
                | "AUTH"
                | "HELLO"
                | "QUIT"
                | "RESET"
                | "CLIENT"
                | "READONLY"
                | "READWRITE"
        );
    }
    if e.kind != "db.query" {
        return false;
    }
    let Some(sql) = db.and_then(|d| d.get("sql")).and_then(Value::as_str) else {
        return false;
    };
    let fp = sql_fingerprint(sql);
    let mut words = fp.split([' ', ';']).filter(|w| !w.is_empty());
    let first = words.next().unwrap_or("");
    matches!(
        first,
        "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "SAVEPOINT"
            | "RELEASE"
            | "SET"
            | "SHOW"
            | "RESET"
            | "DISCARD"
            | "DEALLOCATE"
            | "USE"
            | "LISTEN"
            | "UNLISTEN"
    ) || fp.is_empty()
        || fp == "SELECT ?"
}

/// A Redis key with its ids replaced by `?`: runs of digits, UUIDs, hex runs of 8+ digits.
#[must_use]
pub fn redis_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    // Split on the separators keys use; each part is an id or a word.
    let mut part = String::new();
    let flush = |part: &mut String, out: &mut String| {
        if !part.is_empty() {
            out.push_str(&id_or_word(part));
            part.clear();
        }
    };
    for c in key.chars() {
        if matches!(c, ':' | '/' | '.' | '|' | '#' | '_' | '{' | '}' | '=' | ',') {
            flush(&mut part, &mut out);
            out.push(c);
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out);
    out
}

fn id_or_word(part: &str) -> String {
    let is_uuid = part.len() == 36
        && part.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let hex = part.len() >= 8 && part.chars().all(|c| c.is_ascii_hexdigit());
    if is_uuid || hex || part.chars().all(|c| c.is_ascii_digit()) {
        return "?".to_owned();
    }
    // `user42`, `order-17`: the digit runs inside a word.
    let mut out = String::with_capacity(part.len());
    let mut in_digits = false;
    for c in part.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('?');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    /// `?`: a literal or a placeholder.
    Value,
    Word(String),
    Punct(char),
}

/// SQL text as its fingerprint (see the module doc).
#[must_use]
pub fn sql_fingerprint(sql: &str) -> String {
    render(&fold_lists(tokens(sql)))
}

#[expect(
    clippy::too_many_lines,
    reason = "one tokenizer: each arm is one lexical rule"
)]
fn tokens(sql: &str) -> Vec<Tok> {
    let s: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |j: usize| s.get(j).copied().unwrap_or('\0');
    while i < s.len() {
        let c = s[i];
        // Comments.
        if c == '-' && at(i + 1) == '-' || c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && at(i + 1) == '*' {
            let mut depth = 0usize;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // String literals: '…' ('' inside), E'…' / e'…' (backslash escapes), N'…', B'…', X'…'.
        let prefixed =
            matches!(c, 'E' | 'e' | 'N' | 'n' | 'B' | 'b' | 'X' | 'x') && at(i + 1) == '\'';
        if c == '\'' || prefixed {
            // Backslash escapes: E'…' (PostgreSQL) and plain '…' (MySQL's default).
            let backslash = !prefixed || matches!(c, 'E' | 'e');
            i += if prefixed { 2 } else { 1 };
            while i < s.len() {
                if backslash && s[i] == '\\' {
                    i += 2;
                } else if s[i] == '\'' {
                    if at(i + 1) == '\'' {
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(Tok::Value);
            continue;
        }
        // Dollar quoting ($$…$$, $tag$…$tag$) and $1 placeholders.
        if c == '$' {
            if at(i + 1).is_ascii_digit() {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::Value);
                continue;
            }
            let mut j = i + 1;
            while at(j).is_alphanumeric() || at(j) == '_' {
                j += 1;
            }
            if at(j) == '$' {
                let tag: String = s[i..=j].iter().collect();
                let body_start = j + 1;
                let rest: String = s[body_start..].iter().collect();
                let end = rest.find(&tag).map_or(s.len(), |k| {
                    body_start + rest[..k].chars().count() + tag.chars().count()
                });
                i = end;
                out.push(Tok::Value);
                continue;
            }
        }
        // %s, %(name)s placeholders (psycopg, PyMySQL).
        if c == '%' && (at(i + 1) == 's' || at(i + 1) == '(') {
            if at(i + 1) == '(' {
                while i < s.len() && s[i] != ')' {
                    i += 1;
                }
            }
            i += 2;
            out.push(Tok::Value);
            continue;
        }
        if c == '?' {
            i += 1;
            out.push(Tok::Value);
            continue;
        }
        // :name placeholders, not `::type` casts.
        if c == ':'
            && at(i + 1) != ':'
            && (at(i + 1).is_alphabetic() || at(i + 1) == '_')
            && (i == 0 || s[i - 1] != ':')
        {
            i += 1;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            out.push(Tok::Value);
            continue;
        }
        // Numbers (a sign directly before one is part of the literal after an operator or `(`).
        let signed = (c == '-' || c == '+')
            && at(i + 1).is_ascii_digit()
            && matches!(out.last(), None | Some(Tok::Punct(_)));
        if c.is_ascii_digit() || signed || c == '.' && at(i + 1).is_ascii_digit() {
            let hex = c == '0' && matches!(at(i + 1), 'x' | 'X');
            i += 1;
            loop {
                let d = at(i);
                let exponent_sign = matches!(d, '-' | '+') && !hex && matches!(s[i - 1], 'e' | 'E');
                if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Value);
            continue;
        }
        // Quoted identifiers: kept as written.
        if c == '"' || c == '`' {
            let start = i;
            i += 1;
            while i < s.len() && s[i] != c {
                i += 1;
            }
            i += 1;
            out.push(Tok::Word(s[start..i.min(s.len())].iter().collect()));
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' || at(i) == '$' {
                i += 1;
            }
            let w: String = s[start..i].iter().collect::<String>().to_uppercase();
            out.push(match w.as_str() {
                "TRUE" | "FALSE" | "NULL" => Tok::Value,
                _ => Tok::Word(w),
            });
            continue;
        }
        out.push(Tok::Punct(c));
        i += 1;
    }
    // A trailing `;` says nothing.
    while out.last() == Some(&Tok::Punct(';')) {
        out.pop();
    }
    out
}

/// `IN ( ? , ? … )` → `IN (…)`; `VALUES (…), (…)` rows → one `(…)`.
fn fold_lists(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let after_in = matches!(out.last(), Some(Tok::Word(w)) if w == "IN");
        let after_values = matches!(out.last(), Some(Tok::Word(w)) if w == "VALUES");
        if (after_in || after_values) && toks[i] == Tok::Punct('(') {
            // A parenthesised list of values only (no sub-select).
            let list_end = |from: usize| -> Option<usize> {
                let mut j = from + 1;
                let mut expect_value = true;
                while j < toks.len() {
                    match (&toks[j], expect_value) {
                        (Tok::Value, true) => expect_value = false,
                        (Tok::Punct(','), false) => expect_value = true,
                        (Tok::Punct(')'), false) => return Some(j),
                        _ => return None,
                    }
                    j += 1;
                }
                None
            };
            if let Some(mut end) = list_end(i) {
                out.push(Tok::Punct('('));
                out.push(Tok::Word("…".to_owned()));
                out.push(Tok::Punct(')'));
                // More rows of a VALUES list.
                while after_values
                    && toks.get(end + 1) == Some(&Tok::Punct(','))
                    && toks.get(end + 2) == Some(&Tok::Punct('('))
                {
                    match list_end(end + 2) {
                        Some(e) => end = e,
                        None => break,
                    }
                }
                i = end + 1;
                continue;
            }
        }
        out.push(match &toks[i] {
            Tok::Value => Tok::Value,
            Tok::Word(w) => Tok::Word(w.clone()),
            Tok::Punct(p) => Tok::Punct(*p),
        });
        i += 1;
    }
    out
}

fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    let mut prev: Option<&Tok> = None;
    for t in toks {
        // `f(a, b)`, `t.c`, `x::int`: no space inside calls, names and casts.
        let glue = matches!(t, Tok::Punct(',' | ')' | '.' | ';' | ':'))
            || matches!(prev, Some(Tok::Punct('(' | '.' | ':')) | None);
        if !glue {
            s.push(' ');
        }
        match t {
            Tok::Value => s.push('?'),
            Tok::Word(w) => s.push_str(w),
            Tok::Punct(p) => s.push(*p),
        }
        prev = Some(t);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_literals_placeholders_whitespace_and_comments() {
        let want = "SELECT * FROM T WHERE ID = ? AND NAME = ?";
        for sql in [
            "SELECT * FROM t WHERE id = 42 AND name = 'bob'",
            "select *\n  from t\twhere id=$1 and name=$2;",
            "SELECT * FROM t WHERE id = %s AND name = %(name)s",
            "SELECT * FROM t WHERE id = ? AND name = ?",
            "SELECT * FROM t /* a comment */ WHERE id = -7 -- trailing\n AND name = E'o\\'k'",
            "SELECT * FROM t WHERE id = 1.5e-3 AND name = 'it''s'",
            "SELECT * FROM t WHERE id = :id AND name = $$x$$",
            "SELECT * FROM t WHERE id = NULL AND name = true",
            "SELECT * FROM t WHERE id = 0x1F AND name = $tag$ a $ b $tag$",
        ] {
            assert_eq!(sql_fingerprint(sql), want, "{sql}");
        }
        // Casts stay; quoted identifiers keep their case.
        assert_eq!(
            sql_fingerprint("SELECT \"Id\"::int FROM `T` WHERE x = '1'::text"),
            "SELECT \"Id\"::INT FROM `T` WHERE X = ?::TEXT"
        );
        // Nested block comments (PostgreSQL).
        assert_eq!(sql_fingerprint("SELECT /* a /* b */ c */ 1"), "SELECT ?");
    }

    #[test]
    fn in_lists_of_any_length_fold() {
        let want = "SELECT A FROM T WHERE X IN (…)";
        for sql in [
            "select a from t where x in (1)",
            "select a from t where x in (1, 2,3)",
            "select a from t where x IN ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
            "select a from t where x in ('a', 'b')",
            "select a from t where x in (%s, %s)",
        ] {
            assert_eq!(sql_fingerprint(sql), want, "{sql}");
        }
        // A sub-select is not a list.
        assert_eq!(
            sql_fingerprint("select a from t where x in (select y from u where z = 3)"),
            "SELECT A FROM T WHERE X IN (SELECT Y FROM U WHERE Z = ?)"
        );
        assert_eq!(
            sql_fingerprint("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')"),
            sql_fingerprint("insert into t (a, b) values ($1, $2)")
        );
        assert_eq!(
            sql_fingerprint("INSERT INTO t (a, b) VALUES (1, 'x')"),
            "INSERT INTO T (A, B) VALUES (…)"
        );
    }

    #[test]
    fn redis_keys() {
        assert_eq!(redis_key("user:42:profile"), "user:?:profile");
        assert_eq!(redis_key("user:43:profile"), "user:?:profile");
        assert_eq!(
            redis_key("session:0b6c1f0e-7a43-4c1e-9a51-3f5d2a0c9e11"),
            "session:?"
        );
        assert_eq!(redis_key("cache:deadbeef01"), "cache:?");
        assert_eq!(redis_key("order-17"), "order-?");
        assert_eq!(redis_key("config"), "config");
    }
}
