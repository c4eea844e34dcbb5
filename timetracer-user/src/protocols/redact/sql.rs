//! Where the secrets of a SQL statement are: the literals and placeholders bound to a column
//! whose name is on the key list (`password = $1`, `SET token = %s`, `WHERE token IN ('a',
//! 'b')`, `INSERT INTO users (name, password) VALUES ('a', ?)`).
//!
//! Hand-written rather than a SQL parser crate: we need the byte range of each literal's
//! *content* (to overwrite it in the wire bytes without changing their length), and we must
//! cope with what drivers really send — several placeholder styles (`$n`, `?`, `%s`), both
//! dialects' quoting rules, statements cut at the capture cap or in a dialect a grammar does
//! not know. A token stream is enough for the shapes above; anything else is left alone.
use std::collections::BTreeSet;
use std::ops::Range;

/// Quoting rules of the statement's server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `'…'` with `''`, `E'…'` with backslash escapes, `$tag$…$tag$`, `"ident"`, `$n`.
    Postgres,
    /// `'…'` and `"…"` strings with backslash escapes, `` `ident` ``, `?`, `#` comments.
    Mysql,
}

/// The secrets found in one statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SqlSecrets {
    /// Byte ranges of literal contents (inside the quotes; a number whole), sorted, disjoint.
    pub literals: Vec<Range<usize>>,
    /// 0-based parameter indices (`$1` → 0; the k-th `?` / `%s` → k).
    pub params: BTreeSet<usize>,
}

impl SqlSecrets {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.params.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Identifier or keyword.
    Word,
    /// `"ident"` (PostgreSQL) or `` `ident` `` (MySQL).
    QuotedIdent,
    Str,
    Num,
    /// `$n` (n - 1), the k-th `?` / `%s` (k).
    Param(usize),
    /// `%(name)s`: interpolated by the driver, never on the wire.
    Named,
    Op,
    Punct(u8),
}

#[derive(Clone, Debug)]
struct Tok {
    kind: Kind,
    /// The whole token.
    span: Range<usize>,
    /// The name (identifiers) or the value (literals).
    content: Range<usize>,
}

const OP_CHARS: &[u8] = b"+-*/<>=~!@#%^&|:?";

/// End of the content of a string opened just before `start` by `quote`: `(content_end,
/// token_end)`. A doubled quote is a quote; with `backslash`, `\x` is one character.
fn string_end(b: &[u8], start: usize, quote: u8, backslash: bool) -> (usize, usize) {
    let mut j = start;
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
        } else if b[j] == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return (j, j + 1);
            }
        } else {
            j += 1;
        }
    }
    (b.len(), b.len())
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// End of a number starting at `i` (digits, `.`, exponent, `0x…` / `0b…`).
fn number_end(b: &[u8], mut i: usize) -> usize {
    let start = i;
    while i < b.len() {
        let c = b[i];
        let sign_after_exp =
            (c == b'+' || c == b'-') && i > start && matches!(b[i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || sign_after_exp {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// The `$tag$` opening a dollar-quoted string at `i`, as its length (`$$` → 2).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && b[j] != b'$' {
        if !(b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
            return None;
        }
        j += 1;
    }
    (j < b.len()).then_some(j + 1 - i)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn lex(b: &[u8], d: Dialect) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut positional = 0usize;
    let mut i = 0;
    let push = |out: &mut Vec<Tok>, kind, span: Range<usize>, content: Range<usize>| {
        out.push(Tok {
            kind,
            span,
            content,
        });
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && next == Some(b'-') || (c == b'#' && d == Dialect::Mysql) {
            i = find(b, b"\n", i).map_or(b.len(), |e| e + 1);
        } else if c == b'/' && next == Some(b'*') {
            i = find(b, b"*/", i + 2).map_or(b.len(), |e| e + 2);
        } else if c == b'\'' || (c == b'"' && d == Dialect::Mysql) {
            let (ce, te) = string_end(b, i + 1, c, d == Dialect::Mysql);
            push(&mut out, Kind::Str, i..te, i + 1..ce);
            i = te;
        } else if c == b'"' || (c == b'`' && d == Dialect::Mysql) {
            let (ce, te) = string_end(b, i + 1, c, false);
            push(&mut out, Kind::QuotedIdent, i..te, i + 1..ce);
            i = te;
        } else if c == b'$' && d == Dialect::Postgres {
            if next.is_some_and(|n| n.is_ascii_digit()) {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let n: usize = std::str::from_utf8(&b[i + 1..j])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                push(&mut out, Kind::Param(n.saturating_sub(1)), i..j, i..j);
                i = j;
            } else if let Some(tl) = dollar_tag(b, i) {
                let tag = &b[i..i + tl];
                let cs = i + tl;
                let (ce, te) = find(b, tag, cs).map_or((b.len(), b.len()), |e| (e, e + tl));
                push(&mut out, Kind::Str, i..te, cs..ce);
                i = te;
            } else {
                push(&mut out, Kind::Op, i..i + 1, i..i + 1);
                i += 1;
            }
        } else if c == b'?' && d == Dialect::Mysql {
            push(&mut out, Kind::Param(positional), i..i + 1, i..i + 1);
            positional += 1;
            i += 1;
        } else if c == b'%' && next == Some(b's') {
            push(&mut out, Kind::Param(positional), i..i + 2, i..i + 2);
            positional += 1;
            i += 2;
        } else if c == b'%' && next == Some(b'(') {
            let e = find(b, b")s", i).map_or(b.len(), |e| e + 2);
            push(&mut out, Kind::Named, i..e, i..e);
            i = e;
        } else if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let e = number_end(b, i);
            push(&mut out, Kind::Num, i..e, i..e);
            i = e;
        } else if is_ident_start(c) {
            let mut e = i;
            while e < b.len() && is_ident(b[e]) {
                e += 1;
            }
            let word = &b[i..e];
            // A prefixed string: E'…' / B'…' / X'…' / N'…', MySQL's `_charset'…'`.
            let prefix = matches!(
                word,
                [b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N']
            ) || (d == Dialect::Mysql && word.first() == Some(&b'_'));
            if prefix && b.get(e) == Some(&b'\'') {
                let backslash = d == Dialect::Mysql || matches!(word, [b'e' | b'E']);
                let (ce, te) = string_end(b, e + 1, b'\'', backslash);
                push(&mut out, Kind::Str, i..te, e + 1..ce);
                i = te;
            } else {
                push(&mut out, Kind::Word, i..e, i..e);
                i = e;
            }
        } else if matches!(c, b'(' | b')' | b',' | b';' | b'.' | b'[' | b']') {
            push(&mut out, Kind::Punct(c), i..i + 1, i..i + 1);
            i += 1;
        } else if OP_CHARS.contains(&c) {
            let mut e = i + 1;
            while e < b.len() && OP_CHARS.contains(&b[e]) {
                let placeholder = (b[e] == b'%' && matches!(b.get(e + 1), Some(b's' | b'(')))
                    || (b[e] == b'?' && d == Dialect::Mysql)
                    || (b[e] == b'-' && b.get(e + 1) == Some(&b'-'))
                    || (b[e] == b'#' && d == Dialect::Mysql);
                if placeholder {
                    break;
                }
                e += 1;
            }
            push(&mut out, Kind::Op, i..e, i..e);
            i = e;
        } else {
            push(&mut out, Kind::Op, i..i + 1, i..i + 1);
            i += 1;
        }
    }
    out
}

/// Finds the secrets of `sql`: values bound to a column `key` says is secret.
#[must_use]
pub fn analyse(sql: &[u8], d: Dialect, key: &dyn Fn(&str) -> bool) -> SqlSecrets {
    let toks = lex(sql, d);
    let text = |t: &Tok| String::from_utf8_lossy(&sql[t.content.clone()]).into_owned();
    let word_is = |t: &Tok, w: &str| t.kind == Kind::Word && text(t).eq_ignore_ascii_case(w);
    let is_name = |t: &Tok| matches!(t.kind, Kind::Word | Kind::QuotedIdent);
    let secret_name = |t: &Tok| is_name(t) && key(&text(t));
    let mut s = SqlSecrets::default();
    let mark = |t: &Tok, s: &mut SqlSecrets| match t.kind {
        Kind::Str | Kind::Num => s.literals.push(t.content.clone()),
        Kind::Param(n) => {
            s.params.insert(n);
        }
        _ => {}
    };
    // A value token at `i`: a literal or placeholder (a leading `-` of a number skipped).
    let value_at = |i: usize| -> Option<usize> {
        let t = toks.get(i)?;
        match t.kind {
            Kind::Str | Kind::Num | Kind::Param(_) => Some(i),
            Kind::Op if &sql[t.span.clone()] == b"-" || &sql[t.span.clone()] == b"+" => toks
                .get(i + 1)
                .is_some_and(|n| n.kind == Kind::Num)
                .then_some(i + 1),
            _ => None,
        }
    };
    for i in 0..toks.len() {
        let t = &toks[i];
        let comparison = (t.kind == Kind::Op
            && matches!(&sql[t.span.clone()], b"=" | b"<>" | b"!=" | b":=" | b"<=>"))
            || word_is(t, "like")
            || word_is(t, "ilike");
        if comparison && i > 0 {
            let left = &toks[i - 1];
            if secret_name(left) {
                if let Some(v) = value_at(i + 1) {
                    mark(&toks[v], &mut s);
                }
            } else if matches!(left.kind, Kind::Str | Kind::Num | Kind::Param(_))
                && toks.get(i + 1).is_some_and(&secret_name)
                && !toks.get(i + 2).is_some_and(|n| n.kind == Kind::Punct(b'.'))
            {
                mark(left, &mut s);
            }
        }
        if word_is(t, "in")
            && i > 0
            && secret_name(&toks[i - 1])
            && toks.get(i + 1).is_some_and(|n| n.kind == Kind::Punct(b'('))
        {
            let mut j = i + 2;
            while let Some(v) = value_at(j) {
                mark(&toks[v], &mut s);
                j = v + 1;
                if toks.get(j).is_some_and(|n| n.kind == Kind::Punct(b',')) {
                    j += 1;
                } else {
                    break;
                }
            }
        }
        if word_is(t, "insert") || word_is(t, "replace") || word_is(t, "upsert") {
            insert_values(&toks, i + 1, sql, &secret_name, &mut |t| mark(t, &mut s));
        }
    }
    s.literals.sort_by_key(|r| (r.start, r.end));
    s.literals.dedup();
    s
}

/// `INSERT [INTO] table (c1, c2, …) VALUES (v1, v2, …)[, (…)]`: the values in secret columns.
fn insert_values(
    toks: &[Tok],
    mut i: usize,
    sql: &[u8],
    secret_name: &dyn Fn(&Tok) -> bool,
    mark: &mut dyn FnMut(&Tok),
) {
    let word = |t: &Tok, w: &str| {
        t.kind == Kind::Word && sql[t.span.clone()].eq_ignore_ascii_case(w.as_bytes())
    };
    let at = |i: usize| toks.get(i);
    while at(i).is_some_and(|t| {
        ["into", "ignore", "low_priority", "delayed", "high_priority"]
            .iter()
            .any(|w| word(t, w))
    }) {
        i += 1;
    }
    // The table name: names and dots, then an optional alias.
    while at(i)
        .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Punct(b'.')))
    {
        i += 1;
    }
    if at(i).is_none_or(|t| t.kind != Kind::Punct(b'(')) {
        return;
    }
    i += 1;
    let mut cols: Vec<bool> = Vec::new();
    loop {
        match at(i) {
            Some(t) if matches!(t.kind, Kind::Word | Kind::QuotedIdent) => {
                cols.push(secret_name(t));
                i += 1;
            }
            _ => return,
        }
        match at(i).map(|t| t.kind) {
            Some(Kind::Punct(b',')) => i += 1,
            Some(Kind::Punct(b')')) => {
                i += 1;
                break;
            }
            _ => return,
        }
    }
    if !at(i).is_some_and(|t| word(t, "values") || word(t, "value")) || !cols.contains(&true) {
        return;
    }
    i += 1;
    // Tuples.
    while at(i).is_some_and(|t| t.kind == Kind::Punct(b'(')) {
        i += 1;
        let mut col = 0usize;
        loop {
            // One element: tokens up to the `,` or `)` at depth 0.
            let start = i;
            let mut depth = 0usize;
            while let Some(t) = at(i) {
                match t.kind {
                    Kind::Punct(b'(') => depth += 1,
                    Kind::Punct(b')') if depth == 0 => break,
                    Kind::Punct(b')') => depth -= 1,
                    Kind::Punct(b',') if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
            let elem = &toks[start..i];
            // A bare value, possibly signed or cast (`$1::text`).
            let value = match elem {
                [v, ..] if matches!(v.kind, Kind::Str | Kind::Num | Kind::Param(_)) => {
                    let rest_is_cast = elem.len() == 1
                        || (elem[1].kind == Kind::Op && &sql[elem[1].span.clone()] == b"::");
                    rest_is_cast.then_some(v)
                }
                [sign, v] if sign.kind == Kind::Op && v.kind == Kind::Num => Some(v),
                _ => None,
            };
            if let Some(v) = value
                && cols.get(col) == Some(&true)
            {
                mark(v);
            }
            col += 1;
            match at(i).map(|t| t.kind) {
                Some(Kind::Punct(b',')) => i += 1,
                Some(Kind::Punct(b')')) => {
                    i += 1;
                    break;
                }
                _ => return,
            }
        }
        if at(i).is_some_and(|t| t.kind == Kind::Punct(b',')) {
            i += 1;
        } else {
            return;
        }
    }
}

/// Overwrites each range of `buf` (shifted by `base`, clamped to `buf`) with `*`, keeping its
/// length: the wire's framing and lengths stay valid. A number becomes `0`s instead, so the
/// statement still lexes the same way.
pub fn fill(buf: &mut [u8], base: usize, ranges: &[Range<usize>]) {
    for r in ranges {
        let (s, e) = (
            (base + r.start).min(buf.len()),
            (base + r.end).min(buf.len()),
        );
        let number = buf[s..e].first().is_some_and(u8::is_ascii_digit)
            && (s == 0 || !matches!(buf[s - 1], b'\'' | b'"' | b'$'));
        buf[s..e].fill(if number { b'0' } else { b'*' });
    }
}

/// Does the app's statement `actual` match a recorded one whose literals at `spans` were
/// redacted? Everything outside the spans must be equal; a redacted literal matches any
/// literal of the same kind (a string of any length, any number).
#[must_use]
pub fn matches_redacted(recorded: &str, spans: &[Range<usize>], actual: &str, d: Dialect) -> bool {
    let (r, a) = (recorded.as_bytes(), actual.as_bytes());
    let (mut pr, mut pa) = (0usize, 0usize);
    for s in spans {
        if s.start < pr || s.end < s.start || s.end > r.len() {
            return recorded == actual;
        }
        let before = &r[pr..s.start];
        if a.get(pa..pa + before.len()) != Some(before) {
            return false;
        }
        pa += before.len();
        let opener = s.start.checked_sub(1).map(|k| r[k]);
        let end = match opener {
            Some(q @ (b'\'' | b'"')) => {
                let backslash = d == Dialect::Mysql
                    || (q == b'\'' && s.start >= 2 && matches!(r[s.start - 2], b'e' | b'E'));
                string_end(a, pa, q, backslash).0
            }
            Some(b'$') if d == Dialect::Postgres => {
                // The closing tag is the opening one: `$tag$` ending at s.start.
                let open = r[..s.start - 1]
                    .iter()
                    .rposition(|&c| c == b'$')
                    .unwrap_or(0);
                let tag = &r[open..s.start];
                find(a, tag, pa).unwrap_or(a.len())
            }
            _ => number_end(a, pa),
        };
        pa = end;
        pr = s.end;
    }
    r[pr..] == a[pa.min(a.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &str) -> bool {
        ["password", "token", "secret"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k))
    }

    /// The literal texts and parameter indices found.
    fn found(sql: &str, d: Dialect) -> (Vec<&str>, Vec<usize>) {
        let s = analyse(sql.as_bytes(), d, &keys);
        (
            s.literals.iter().map(|r| &sql[r.clone()]).collect(),
            s.params.into_iter().collect(),
        )
    }

    #[test]
    fn placeholders_of_every_style() {
        let pg = Dialect::Postgres;
        let my = Dialect::Mysql;
        assert_eq!(
            found("SELECT id FROM users WHERE name = $1 AND password = $2", pg),
            (vec![], vec![1])
        );
        assert_eq!(
            found("UPDATE users SET token = $3::text WHERE id = $1", pg),
            (vec![], vec![2])
        );
        assert_eq!(found("SET token = %s", pg), (vec![], vec![0]));
        assert_eq!(
            found(
                "SELECT * FROM t WHERE a = ? AND `Password` = ? AND b = ?",
                my
            ),
            (vec![], vec![1])
        );
        assert_eq!(
            found("SELECT * FROM t WHERE $2 = password", pg),
            (vec![], vec![1])
        );
        // `u.password`: the last part names the column.
        assert_eq!(
            found("SELECT 1 FROM users u WHERE u.password = $1", pg),
            (vec![], vec![0])
        );
        // A function of the value is not the value.
        assert_eq!(
            found("SELECT 1 FROM u WHERE password = crypt($1, salt)", pg),
            (vec![], vec![])
        );
        // `%(name)s` never reaches the wire; `passwords` is not `password`.
        assert_eq!(
            found("SELECT 1 WHERE passwords = %s AND token = %(t)s", pg),
            (vec![], vec![])
        );
    }

    #[test]
    fn literals_in_both_dialects() {
        let pg = Dialect::Postgres;
        let my = Dialect::Mysql;
        assert_eq!(
            found(
                "SELECT 1 FROM u WHERE password = 'it''s' AND name = 'password'",
                pg
            ),
            (vec!["it''s"], vec![])
        );
        assert_eq!(
            found(
                r"SELECT 1 FROM u WHERE password = E'a\'b' OR token = $$x'y$$",
                pg
            ),
            (vec![r"a\'b", "x'y"], vec![])
        );
        assert_eq!(
            found(
                r#"UPDATE u SET password = 'a\'b', token = "t1", n = 5 WHERE secret = 42"#,
                my
            ),
            (vec![r"a\'b", "t1", "42"], vec![])
        );
        assert_eq!(
            found(
                "SELECT 1 FROM u WHERE token IN ('a', 'b') AND x IN ('c')",
                pg
            ),
            (vec!["a", "b"], vec![])
        );
        // Comments and quoted identifiers.
        assert_eq!(
            found(
                "SELECT 1 -- password = 'no'\nFROM u WHERE \"Token\" = 'yes' /* secret = 'no' */",
                pg
            ),
            (vec!["yes"], vec![])
        );
        assert_eq!(
            found("SELECT 1 FROM u # password = 'no'\nWHERE token = -7", my),
            (vec!["7"], vec![])
        );
    }

    #[test]
    fn insert_column_lists() {
        let pg = Dialect::Postgres;
        let my = Dialect::Mysql;
        assert_eq!(
            found(
                "INSERT INTO users (name, password, token) VALUES ($1, $2, $3) RETURNING id",
                pg
            ),
            (vec![], vec![1, 2])
        );
        assert_eq!(
            found(
                "INSERT INTO app.users (name, password) VALUES ('a', 'p1'), ('b', 'p2') ON CONFLICT DO NOTHING",
                pg
            ),
            (vec!["p1", "p2"], vec![])
        );
        assert_eq!(
            found(
                "INSERT INTO `users` (`name`, `token`) VALUES ('a', _utf8mb4'tok'), (lower('B'), NULL)",
                my
            ),
            (vec!["tok"], vec![])
        );
        assert_eq!(
            found("INSERT INTO users (name, password) VALUES (?, ?)", my),
            (vec![], vec![1])
        );
        // A computed value is left alone; the next column still lines up.
        assert_eq!(
            found(
                "INSERT INTO u (password, token) VALUES (md5('x'), $2::text)",
                pg
            ),
            (vec![], vec![1])
        );
        assert_eq!(
            found("INSERT INTO u (name) VALUES ('password')", pg),
            (vec![], vec![])
        );
    }

    #[test]
    fn cut_statements_never_panic() {
        for sql in [
            "SELECT 1 WHERE password = '",
            "INSERT INTO u (password",
            "INSERT INTO u (password) VALUES ('x",
            "WHERE token = $",
            "password =",
            "$tag$ unterminated",
            "E'\\",
        ] {
            for d in [Dialect::Postgres, Dialect::Mysql] {
                for cut in 0..=sql.len() {
                    let _ = analyse(&sql.as_bytes()[..cut], d, &keys);
                }
            }
        }
        assert_eq!(
            found("SELECT 1 WHERE password = 'abc", Dialect::Postgres).0,
            ["abc"]
        );
    }

    #[test]
    fn fill_keeps_length_and_matching_ignores_the_values() {
        let pg = Dialect::Postgres;
        let sql = "UPDATE u SET password = 'hunter2', n = 1 WHERE token = 12345 AND name = 'x'";
        let s = analyse(sql.as_bytes(), pg, &keys);
        let mut b = sql.as_bytes().to_vec();
        fill(&mut b, 0, &s.literals);
        let red = String::from_utf8(b).unwrap();
        assert_eq!(
            red,
            "UPDATE u SET password = '*******', n = 1 WHERE token = 00000 AND name = 'x'"
        );
        // Redacting again finds the same places.
        assert_eq!(analyse(red.as_bytes(), pg, &keys).literals, s.literals);
        let live = "UPDATE u SET password = 'another one', n = 1 WHERE token = 7 AND name = 'x'";
        assert!(matches_redacted(&red, &s.literals, live, pg));
        let other = "UPDATE u SET password = 'a', n = 2 WHERE token = 7 AND name = 'x'";
        assert!(!matches_redacted(&red, &s.literals, other, pg));
        assert!(!matches_redacted(&red, &s.literals, "UPDATE u", pg));
        // Dollar quotes and MySQL backslashes.
        let sql = "SELECT 1 WHERE token = $q$abc$q$ AND 1 = 1";
        let s = analyse(sql.as_bytes(), pg, &keys);
        assert!(matches_redacted(
            sql,
            &s.literals,
            "SELECT 1 WHERE token = $q$zz$q$ AND 1 = 1",
            pg
        ));
        let sql = r"SELECT 1 WHERE token = 'a\'b' AND 1 = 1";
        let s = analyse(sql.as_bytes(), Dialect::Mysql, &keys);
        assert!(matches_redacted(
            sql,
            &s.literals,
            r"SELECT 1 WHERE token = 'x\'\'y' AND 1 = 1",
            Dialect::Mysql
        ));
    }
}
