//! PostgreSQL statements the mock answers by rule when no recorded call holds them (issue
//! #26 item 2; docs/replay.md "Answered by rule"): what drivers and ORMs send when they open
//! a connection — session settings, transaction control, the server version, the current
//! schema, `SHOW`, and type lookups in `pg_type`. A recording made with `attach` started after
//! the app's pools connected, so none of it is in any cassette; a fresh app sends it at
//! replay. Each answer is journaled and named in the verdict.
//!
//! Written by hand: these are the server's fixed answers (command tags, the recorded
//! `ParameterStatus` values, "no such type"), not a SQL engine; anything else stays a miss.

/// One column of a rule's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// The answer a rule gives a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// The rule, as the verdict names it.
    pub rule: &'static str,
    /// Empty: the statement returns no data (`NoData`).
    pub columns: Vec<Column>,
    /// Text values (every column is `text` or `name`: the same bytes in both formats).
    pub rows: Vec<Vec<String>>,
    /// `CommandComplete` tag.
    pub tag: String,
    /// The transaction status after it (`ReadyForQuery`), when it changes it.
    pub tx: Option<u8>,
}

const TEXT: u32 = 25;
const NAME: u32 = 19;
const OID: u32 = 26;

/// Type names every PostgreSQL has (a lookup of one of them must find it: not answered).
const BUILTIN_TYPES: &[&str] = &[
    "bool",
    "bytea",
    "char",
    "name",
    "int8",
    "int2",
    "int4",
    "text",
    "oid",
    "json",
    "xml",
    "float4",
    "float8",
    "money",
    "bpchar",
    "varchar",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
    "timetz",
    "bit",
    "varbit",
    "numeric",
    "uuid",
    "jsonb",
    "inet",
    "cidr",
    "macaddr",
    "record",
    "void",
    "regtype",
    "regclass",
];

/// The statement's answer by rule, or `None` (the recording must answer it). `server`: the
/// parameters the mock announced (`ParameterStatus`, recorded or defaulted); `client`: the
/// app's startup parameters (`user`, `database`); `bound`: the statement's parameter values
/// (extended protocol), as text.
pub(super) fn answer(
    sql: &str,
    server: &[(String, String)],
    client: &[(String, String)],
    bound: &[String],
) -> Option<Answer> {
    let s = single_statement(sql)?;
    let lower = s.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let w = |i: usize| words.get(i).copied().unwrap_or("");
    let no_data = |rule: &'static str, tag: &str, tx: Option<u8>| Answer {
        rule,
        columns: Vec::new(),
        rows: Vec::new(),
        tag: tag.to_owned(),
        tx,
    };
    const SESSION: &str = "command tag, no data (session setting)";
    const TX: &str = "command tag (transaction control)";
    Some(match w(0) {
        "set" => no_data(SESSION, "SET", None),
        "reset" => no_data(SESSION, "RESET", None),
        "discard" => match w(1) {
            "all" | "plans" | "sequences" => no_data(
                SESSION,
                &format!("DISCARD {}", w(1).to_ascii_uppercase()),
                None,
            ),
            "temp" | "temporary" => no_data(SESSION, "DISCARD TEMP", None),
            _ => return None,
        },
        "deallocate" if w(1) == "all" || (w(1) == "prepare" && w(2) == "all") => {
            no_data(SESSION, "DEALLOCATE ALL", None)
        }
        "deallocate" => no_data(SESSION, "DEALLOCATE", None),
        "begin" => no_data(TX, "BEGIN", Some(b'T')),
        "start" if w(1) == "transaction" => no_data(TX, "START TRANSACTION", Some(b'T')),
        "commit" | "end" => no_data(TX, "COMMIT", Some(b'I')),
        "rollback" | "abort" if w(1) == "to" => no_data(TX, "ROLLBACK", None),
        "rollback" | "abort" => no_data(TX, "ROLLBACK", Some(b'I')),
        "savepoint" => no_data(TX, "SAVEPOINT", None),
        "release" => no_data(TX, "RELEASE", None),
        "show" => show(&words[1..], server)?,
        "select" | "with" => select(s, &lower, server, client, bound)?,
        _ => return None,
    })
}

/// `SHOW name`: the announced parameter, else the server's default for a few settings
/// drivers read at connect.
fn show(words: &[&str], server: &[(String, String)]) -> Option<Answer> {
    let name = match words {
        ["transaction", "isolation", "level"] => "transaction_isolation".to_owned(),
        [one] => one.trim_matches('"').to_owned(),
        _ => return None,
    };
    let announced = server
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&name))
        .map(|(_, v)| v.clone());
    let value = match announced {
        Some(v) => v,
        None => match name.as_str() {
            "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
            "transaction_read_only" | "default_transaction_read_only" => "off".into(),
            "standard_conforming_strings" => "on".into(),
            "search_path" => "\"$user\", public".into(),
            "max_identifier_length" => "63".into(),
            "server_version_num" => version_num(&param(server, "server_version")?)?,
            _ => return None,
        },
    };
    Some(Answer {
        rule: "the server's setting (recorded parameter status or PostgreSQL's default)",
        columns: vec![Column {
            name,
            type_oid: TEXT,
        }],
        rows: vec![vec![value]],
        tag: "SHOW".into(),
        tx: None,
    })
}

/// `SELECT version()`, `current_schema()`, `current_database()`, `current_user`, and
/// `pg_type` lookups of a type the recording never saw.
fn select(
    s: &str,
    lower: &str,
    server: &[(String, String)],
    client: &[(String, String)],
    bound: &[String],
) -> Option<Answer> {
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    let compact = compact.replace("pg_catalog.", "");
    let one = |rule: &'static str, name: &str, type_oid: u32, value: String| Answer {
        rule,
        columns: vec![Column {
            name: name.to_owned(),
            type_oid,
        }],
        rows: vec![vec![value]],
        tag: "SELECT 1".into(),
        tx: None,
    };
    let client_param = |k: &str| client.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match compact.as_str() {
        "selectversion()" => {
            let v = param(server, "server_version")?;
            return Some(one(
                "the recorded server version",
                "version",
                TEXT,
                format!("PostgreSQL {v} (answered by timetracer replay)"),
            ));
        }
        "selectcurrent_schema()" | "selectcurrent_schema" => {
            return Some(one(
                "the default schema",
                "current_schema",
                NAME,
                "public".into(),
            ));
        }
        "selectcurrent_database()" => {
            let db = client_param("database").or_else(|| client_param("user"))?;
            return Some(one(
                "the database the app connected to",
                "current_database",
                NAME,
                db,
            ));
        }
        "selectcurrent_user" | "selectsession_user" | "selectuser" => {
            let user = client_param("user")?;
            let name = compact.trim_start_matches("select");
            return Some(one("the user the app connected as", name, NAME, user));
        }
        _ => {}
    }
    type_lookup(s, lower, bound)
}

/// A lookup in `pg_type` by name of a type that is not built in (an extension's: `hstore`,
/// `citext`, `vector`, ...): no row, as on a database without that extension. The app then
/// goes on without it, as it would against such a database.
fn type_lookup(s: &str, lower: &str, bound: &[String]) -> Option<Answer> {
    // A lookup by name: its last `WHERE` compares `typname`, or a name cast to a type
    // (`to_regtype`, `::regtype`). A lookup by oid (asyncpg's introspection of the types a
    // statement uses) must find what the server has: not a rule's.
    let at = lower.rfind("where")?;
    let filter = &lower[at..];
    if !lower.contains("pg_type") || !(filter.contains("typname") || filter.contains("regtype")) {
        return None;
    }
    // The names it looks for: `typname = 'x'`, `to_regtype('x')`, `'x'::regtype`, or a
    // bound parameter. A built-in type is found on every server: not a rule's to answer.
    let names: Vec<String> = s[at..]
        .split('\'')
        .skip(1)
        .step_by(2)
        .chain(bound.iter().map(String::as_str))
        .map(|n| n.trim_start_matches("pg_catalog.").to_ascii_lowercase())
        .collect();
    if names.is_empty() || names.iter().any(|q| BUILTIN_TYPES.contains(&q.as_str())) {
        return None;
    }
    Some(Answer {
        rule: "no row: a type the recording never saw (as on a database without that extension)",
        columns: select_list(s)?,
        rows: Vec::new(),
        tag: "SELECT 0".into(),
        tx: None,
    })
}

/// The result columns of `SELECT a, t.b AS c, f(x) ... FROM`: their names as PostgreSQL
/// reports them; `oid` / `*oid` / `typarray` / `typelem` columns are `oid`, the rest `text`
/// (no row is sent, only the description).
fn select_list(s: &str) -> Option<Vec<Column>> {
    let lower = s.to_ascii_lowercase();
    let start = lower.find("select")? + "select".len();
    let mut depth = 0i32;
    let mut end = None;
    let mut items = Vec::new();
    let mut item_start = start;
    let bytes = lower.as_bytes();
    let mut i = start;
    let mut in_quote = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            in_quote = !in_quote;
        } else if !in_quote {
            match c {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b',' if depth == 0 => {
                    items.push(&s[item_start..i]);
                    item_start = i + 1;
                }
                _ if depth == 0
                    && lower[i..].starts_with("from")
                    && i > 0
                    && bytes[i - 1].is_ascii_whitespace()
                    && bytes.get(i + 4).is_none_or(u8::is_ascii_whitespace) =>
                {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        i += 1;
    }
    items.push(&s[item_start..end?]);
    let columns: Vec<Column> = items
        .iter()
        .map(|item| {
            let item = item.trim();
            let l = item.to_ascii_lowercase();
            let name = match l.rfind(" as ") {
                Some(k) => item[k + 4..].trim().trim_matches('"').to_owned(),
                None => {
                    let base = item.split("::").next().unwrap_or(item).trim();
                    let base = base.split('(').next().unwrap_or(base);
                    base.rsplit('.')
                        .next()
                        .unwrap_or(base)
                        .trim()
                        .trim_matches('"')
                        .to_owned()
                }
            };
            let name = if name.is_empty() {
                "?column?".to_owned()
            } else {
                name
            };
            let n = name.to_ascii_lowercase();
            let type_oid = if n == "oid" || n.ends_with("oid") || n == "typarray" || n == "typelem"
            {
                OID
            } else {
                TEXT
            };
            Column { name, type_oid }
        })
        .collect();
    (!columns.is_empty() && columns.iter().all(|c| c.name != "*")).then_some(columns)
}

fn param(server: &[(String, String)], k: &str) -> Option<String> {
    server.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// `server_version_num` from `server_version` (`15.4 (Debian …)` → `150004`).
fn version_num(v: &str) -> Option<String> {
    let head = v.split_whitespace().next()?;
    let mut parts = head.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    Some(if major >= 10 {
        (major * 10000 + minor).to_string()
    } else {
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        (major * 10000 + minor * 100 + patch).to_string()
    })
}

/// The statement without its trailing `;`, if `sql` is one statement without comments.
fn single_statement(sql: &str) -> Option<&str> {
    let s = sql.trim().trim_end_matches(';').trim();
    // Quotes do not hide a `;` here: a statement with one in a literal is not a rule's.
    (!s.is_empty() && !s.contains(';') && !s.contains("--") && !s.contains("/*")).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Vec<(String, String)> {
        vec![
            (
                "server_version".into(),
                "15.14 (Debian 15.14-0+deb12u1)".into(),
            ),
            ("standard_conforming_strings".into(), "on".into()),
        ]
    }

    fn client() -> Vec<(String, String)> {
        vec![
            ("user".into(), "app".into()),
            ("database".into(), "shop".into()),
        ]
    }

    fn ans(sql: &str) -> Option<Answer> {
        answer(sql, &server(), &client(), &[])
    }

    /// What SQLAlchemy (psycopg2 and psycopg 3) and psycopg2's hstore support send when a
    /// connection opens, answered as PostgreSQL would.
    #[test]
    fn sqlalchemy_first_connect() {
        let v = ans("select pg_catalog.version()").unwrap();
        assert_eq!(v.columns[0].name, "version");
        assert!(v.rows[0][0].starts_with("PostgreSQL 15.14 "), "{v:?}");
        let s = ans("select current_schema()").unwrap();
        assert_eq!(s.rows, vec![vec!["public".to_owned()]]);
        let i = ans("show transaction isolation level").unwrap();
        assert_eq!(i.columns[0].name, "transaction_isolation");
        assert_eq!(i.rows[0][0], "read committed");
        assert_eq!(i.tag, "SHOW");
        assert_eq!(
            ans("show standard_conforming_strings").unwrap().rows[0][0],
            "on"
        );
        let h = ans(
            "SELECT t.oid, typarray\nFROM pg_type t JOIN pg_namespace ns\n    ON typnamespace = ns.oid\nWHERE typname = 'hstore';\n",
        )
        .unwrap();
        assert!(h.rows.is_empty());
        assert_eq!(h.tag, "SELECT 0");
        let names: Vec<_> = h
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid))
            .collect();
        assert_eq!(names, [("oid", OID), ("typarray", OID)]);
        // psycopg 3's TypeInfo.fetch (a parameter names the type).
        let typeinfo = "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, typdelim AS delimiter FROM pg_type t WHERE t.oid = to_regtype($1) ORDER BY t.oid";
        let p = answer(typeinfo, &server(), &client(), &["hstore".into()]).unwrap();
        let names: Vec<_> = p.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["name", "oid", "array_oid", "regtype", "delimiter"]);
        assert_eq!(ans("select current_database()").unwrap().rows[0][0], "shop");
        assert_eq!(ans("SELECT current_user").unwrap().rows[0][0], "app");
        assert_eq!(ans("show server_version_num").unwrap().rows[0][0], "150014");
    }

    #[test]
    fn transaction_control_and_session_settings() {
        assert_eq!(ans("BEGIN").unwrap().tx, Some(b'T'));
        assert_eq!(
            ans("start transaction isolation level serializable")
                .unwrap()
                .tag,
            "START TRANSACTION"
        );
        assert_eq!(ans("COMMIT").unwrap().tx, Some(b'I'));
        assert_eq!(ans("ROLLBACK").unwrap().tx, Some(b'I'));
        assert_eq!(ans("ROLLBACK TO SAVEPOINT sa_1").unwrap().tx, None);
        assert_eq!(ans("SET TIME ZONE 'UTC'").unwrap().tag, "SET");
        assert_eq!(ans("DISCARD ALL").unwrap().tag, "DISCARD ALL");
        assert_eq!(ans("DEALLOCATE pstmt_1").unwrap().tag, "DEALLOCATE");
    }

    /// Work of the app and lookups that must find something are the recording's to answer.
    #[test]
    fn not_answered() {
        assert!(ans("SELECT name FROM items WHERE id = $1").is_none());
        assert!(ans("select oid from pg_type where typname = 'int4'").is_none());
        assert!(ans("select * from pg_type where typname = 'hstore'").is_none());
        assert!(ans("SELECT 1; SELECT pg_catalog.version()").is_none());
        assert!(ans("show some_unknown_setting").is_none());
        assert!(ans("select typname from pg_type").is_none());
        assert!(
            answer("select version()", &[], &[], &[]).is_none(),
            "no recorded version"
        );
        // asyncpg's lookup of a built-in type by name (`set_type_codec('json')`).
        let by_name = "SELECT t.oid, t.typelem AS elemtype, t.typtype AS kind FROM pg_catalog.pg_type AS t INNER JOIN pg_catalog.pg_namespace AS ns ON (ns.oid = t.typnamespace) WHERE t.typname = $1 AND ns.nspname = $2";
        let bound = ["json".to_owned(), "pg_catalog".to_owned()];
        assert!(answer(by_name, &server(), &client(), &bound).is_none());
        assert!(
            answer(by_name, &server(), &client(), &[]).is_none(),
            "names unknown"
        );
        let hstore = ["hstore".to_owned(), "public".to_owned()];
        assert!(answer(by_name, &server(), &client(), &hstore).is_some());
        // asyncpg's introspection of the types a statement uses (by oid).
        let by_oid = "WITH RECURSIVE typeinfo_tree(oid, ns, name, kind) AS (SELECT ti.oid, ti.ns, ti.name, ti.kind FROM pg_catalog.pg_type ti WHERE ti.typtype = 'c' AND ti.oid = any($1::oid[])) SELECT * FROM typeinfo_tree WHERE kind <> 'x'";
        assert!(answer(by_oid, &server(), &client(), &["{16386}".into()]).is_none());
    }
}
