//! PostgreSQL parser tests: real captures (`tests/fixtures/postgres/*.bin`), hand-made
//! messages, segmentation invariance, gaps, mid-session attach, redaction.
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::reassembly::{Chunk, Segment};

/// One recorded `recv` of the capture proxy: `egress` = client to server.
pub(crate) type Rec = (bool, Vec<u8>);

/// Reads a capture: records of `>`/`<`, u32 BE length, bytes.
pub(crate) fn load(path: &str) -> Vec<Rec> {
    let p = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= b.len() {
        let n = u32::from_be_bytes(b[i + 1..i + 5].try_into().unwrap()) as usize;
        out.push((b[i] == b'>', b[i + 5..i + 5 + n].to_vec()));
        i += 5 + n;
    }
    out
}

/// Feeds records (each split into pieces at `splits` relative offsets) and closes.
pub(crate) fn run_with(
    p: &mut dyn DbParser,
    recs: &[Rec],
    split: &dyn Fn(usize, usize) -> Vec<usize>,
) -> Vec<DbEvent> {
    let mut out = Vec::new();
    let mut pos = [0u64; 2];
    for (i, (eg, data)) in recs.iter().enumerate() {
        let d = usize::from(*eg);
        let mut cuts = split(i, data.len());
        cuts.retain(|c| *c > 0 && *c < data.len());
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(data.len());
        let mut from = 0;
        for c in cuts {
            p.feed(
                *eg,
                Segment::Data(Chunk {
                    pos: pos[d] + from as u64,
                    data: Bytes::copy_from_slice(&data[from..c]),
                    ts_ns: 1000 * (i as u64 + 1),
                    tid: 7,
                }),
                &mut out,
            );
            from = c;
        }
        pos[d] += data.len() as u64;
    }
    p.close(&mut out);
    out
}

pub(crate) fn run(p: &mut dyn DbParser, recs: &[Rec]) -> Vec<DbEvent> {
    run_with(p, recs, &|_, _| Vec::new())
}

pub(crate) fn calls(ev: &[DbEvent]) -> Vec<&DbCall> {
    ev.iter()
        .filter_map(|e| match e {
            DbEvent::Call(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

pub(crate) fn skipped(ev: &[DbEvent]) -> u64 {
    ev.iter()
        .map(|e| match e {
            DbEvent::Skipped { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum()
}

/// Every byte string of `secrets` (at least 6 bytes) is absent from all output.
pub(crate) fn assert_no_secret(ev: &[DbEvent], secrets: &[Vec<u8>]) {
    for e in ev {
        let mut hay: Vec<Vec<u8>> = Vec::new();
        match e {
            DbEvent::Call(c) => {
                hay.push(c.raw_request.to_vec());
                hay.push(c.raw_response.to_vec());
                hay.push(c.detail.to_string().into_bytes());
                hay.push(c.error.clone().unwrap_or_default().into_bytes());
            }
            DbEvent::Session { facts, .. } => hay.push(facts.to_string().into_bytes()),
            DbEvent::Skipped { .. } => {}
        }
        for h in &hay {
            for s in secrets {
                assert!(s.len() >= 6);
                assert!(
                    !h.windows(s.len()).any(|w| w == s.as_slice()),
                    "secret {:?} leaked in {e:?}",
                    String::from_utf8_lossy(s)
                );
            }
        }
    }
}

pub(crate) const PASSWORD: &[u8] = b"tt-dummy-Pa55word";

/// Payloads of the frontend `p` messages in a capture (the password hash / SCRAM proofs).
fn password_payloads(recs: &[Rec]) -> Vec<Vec<u8>> {
    let fe: Vec<u8> = recs
        .iter()
        .filter(|r| r.0)
        .flat_map(|r| r.1.clone())
        .collect();
    let mut out = Vec::new();
    // Skip the startup message(s).
    let mut i = 0;
    while i + 8 <= fe.len() {
        let len = u32::from_be_bytes(fe[i..i + 4].try_into().unwrap()) as usize;
        let code = u32::from_be_bytes(fe[i + 4..i + 8].try_into().unwrap());
        if code == parse::SSL_REQUEST || code == parse::GSSENC_REQUEST {
            i += 8;
            continue;
        }
        i += len;
        break;
    }
    while i + 5 <= fe.len() {
        let len = u32::from_be_bytes(fe[i + 1..i + 5].try_into().unwrap()) as usize;
        if fe[i] == b'p' {
            let payload = fe[i + 5..i + 1 + len].to_vec();
            // SCRAM client-first carries the mechanism name first: take the tail.
            out.push(payload[payload.len().saturating_sub(24)..].to_vec());
        }
        i += 1 + len;
    }
    out
}

fn pg(path: &str) -> (Vec<Rec>, Vec<DbEvent>) {
    let recs = load(path);
    let ev = run(&mut PgParser::default(), &recs);
    (recs, ev)
}

fn session_facts(ev: &[DbEvent]) -> Value {
    ev.iter()
        .rev()
        .find_map(|e| match e {
            DbEvent::Session { facts, .. } => Some(facts.clone()),
            _ => None,
        })
        .unwrap_or(Value::Null)
}

#[test]
fn dump_fixtures() {
    for f in [
        "postgres/pg_asyncpg.bin",
        "postgres/pg_psycopg2.bin",
        "postgres/pg_psycopg3.bin",
        "postgres/pg_psql_cleartext.bin",
        "postgres/pg_asyncpg_authfail.bin",
    ] {
        let (_, ev) = pg(f);
        if std::env::var("PG_DUMP").is_ok() {
            println!("==== {f}");
            for e in &ev {
                match e {
                    DbEvent::Call(c) => println!(
                        "CALL {} {} sl={} err={:?} {}",
                        c.index, c.method, c.session_level, c.error, c.detail
                    ),
                    other => println!("{other:?}"),
                }
            }
        }
    }
}

const PG_FIXTURES: &[&str] = &[
    "postgres/pg_asyncpg.bin",
    "postgres/pg_psycopg2.bin",
    "postgres/pg_psycopg3.bin",
    "postgres/pg_psql_cleartext.bin",
    "postgres/pg_asyncpg_authfail.bin",
];

fn by_method<'a>(cs: &[&'a DbCall], m: &str) -> Vec<&'a DbCall> {
    cs.iter().copied().filter(|c| c.method == m).collect()
}

#[test]
fn asyncpg_capture() {
    let (_, ev) = pg("postgres/pg_asyncpg.bin");
    assert_eq!(skipped(&ev), 0);
    let cs = calls(&ev);
    assert_eq!(cs[0].method, "SSLREQUEST");
    assert_eq!(cs[0].detail["answer"], "N");
    assert_eq!(cs[1].method, "STARTUP");
    assert!(cs[1].session_level);
    assert_eq!(cs[1].detail["auth"]["method"], "scram-sha-256");
    assert_eq!(cs[1].detail["auth"]["outcome"], "ok");
    let sel = cs[2];
    assert_eq!(sel.method, "SELECT");
    assert!(!sel.session_level);
    assert_eq!(
        sel.detail["params"],
        json!([{"type_oid": 23, "format": "binary", "value": 1}])
    );
    assert_eq!(
        sel.detail["rows"],
        json!([[1, "alice", 1.5, true, "2024-01-02T03:04:05+00:00", "12.34",
               "12345678-9abc-def0-0001-020304050607", {"base64": "AAH/"}]])
    );
    assert_eq!(sel.detail["columns"][0]["name"], "id");
    assert_eq!(sel.detail["command_tag"], "SELECT 1");
    assert_eq!(sel.detail["transaction_status"], "I");
    // The transaction.
    let methods: Vec<&str> = cs.iter().map(|c| c.method.as_str()).collect();
    let b = methods.iter().position(|m| *m == "BEGIN").unwrap();
    assert_eq!(&methods[b..b + 3], &["BEGIN", "INSERT", "COMMIT"]);
    assert_eq!(cs[b + 1].detail["transaction_status"], "T");
    assert_eq!(cs[b + 1].detail["params"][0]["value"], "carol");
    assert_eq!(cs[b + 1].detail["rows"], json!([[8]]));
    // The failing query: error with SQLSTATE.
    let err: Vec<_> = cs.iter().filter(|c| c.error.is_some()).collect();
    assert_eq!(err.len(), 1);
    assert_eq!(
        err[0].error.as_deref(),
        Some("SQLSTATE 42P01: relation \"missing_table\" does not exist")
    );
    assert_eq!(err[0].detail["error"]["code"], "42P01");
    assert_eq!(err[0].detail["error"]["severity"], "ERROR");
    // Its preparation failed, so it never executed: the app's work, not session traffic.
    assert_eq!(err[0].detail["kind"], "prepare");
    assert!(!err[0].session_level);
    // executemany: one call per execution, in order.
    let ins = by_method(&cs, "INSERT");
    assert_eq!(ins.len(), 3);
    assert_eq!(ins[1].detail["params"][0]["value"], "d1");
    assert_eq!(ins[2].detail["params"][0]["value"], "d2");
    assert_eq!(ins[2].detail["messages"], "BES");
    assert_eq!(ins[2].detail["sql"], "INSERT INTO users(name) VALUES ($1)");
    // Type introspection is session-level.
    let intro: Vec<_> = cs
        .iter()
        .filter(|c| {
            c.detail["sql"]
                .as_str()
                .is_some_and(|s| s.contains("typeinfo_tree"))
        })
        .collect();
    assert_eq!(intro.len(), 1);
    assert!(intro[0].session_level);
    // Session facts.
    let f = session_facts(&ev);
    assert!(f["server_version"].as_str().unwrap().starts_with("15."));
    assert_eq!(f["auth"]["outcome"], "ok");
    assert!(f["backend_pid"].is_number());
    assert_eq!(f["parameters"]["TimeZone"], "Etc/UTC");
    // Indices are sequential; every call has a response.
    for (i, c) in cs.iter().enumerate() {
        assert_eq!(c.index, i as u64);
        assert!(c.response_first.is_some(), "{}", c.method);
        assert_eq!(c.detail["incomplete"], false, "{}", c.method);
    }
}

#[test]
fn psycopg2_capture() {
    let (_, ev) = pg("postgres/pg_psycopg2.bin");
    assert_eq!(skipped(&ev), 0);
    let cs = calls(&ev);
    assert_eq!(cs[0].detail["auth"]["method"], "md5");
    let multi = cs
        .iter()
        .find(|c| c.detail["sql"] == "SELECT 1 AS a; SELECT 'x' AS b, 2 AS c")
        .unwrap();
    let rs = multi.detail["results"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0]["rows"], json!([["1"]]));
    assert_eq!(rs[1]["rows"], json!([["x", "2"]]));
    assert_eq!(multi.detail["rows"], json!([["x", "2"]]));
    let err = cs.iter().find(|c| c.error.is_some()).unwrap();
    assert_eq!(err.detail["transaction_status"], "E");
    let copies = by_method(&cs, "COPY");
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0].detail["copy"]["direction"], "in");
    assert_eq!(copies[0].detail["copy"]["data_bytes"], 20);
    assert_eq!(copies[0].detail["command_tag"], "COPY 3");
    assert_eq!(copies[0].detail["messages"], "Qdc");
    assert_eq!(copies[1].detail["copy"]["direction"], "out");
    assert_eq!(copies[1].detail["copy"]["data_messages"], 3);
    // COPY data is counted, not stored.
    assert!(!copies[1].raw_response.windows(5).any(|w| w == b"three"));
}

#[test]
fn psycopg3_capture() {
    let (_, ev) = pg("postgres/pg_psycopg3.bin");
    assert_eq!(skipped(&ev), 0);
    let cs = calls(&ev);
    let bin = cs
        .iter()
        .find(|c| c.detail["sql"] == "SELECT $1::int8 + 1, $2::text")
        .unwrap();
    assert_eq!(
        bin.detail["params"][0],
        json!({"type_oid": 21, "format": "binary", "value": 41})
    );
    assert_eq!(bin.detail["rows"], json!([["42", "bin"]]));
    // Pipeline: three executions, Sync only after the last.
    let p: Vec<_> = cs
        .iter()
        .filter(|c| {
            c.detail["params"][0]["value"]
                .as_str()
                .is_some_and(|v| v.starts_with('p'))
        })
        .collect();
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].detail["messages"], "PBDE");
    assert_eq!(p[2].detail["rows"], json!([["2"]]));
    // Server-side prepared statement: one PARSE call, then executions by name.
    let prep = by_method(&cs, "PREPARE");
    assert_eq!(prep.len(), 1);
    assert!(prep[0].session_level);
    let named: Vec<_> = cs
        .iter()
        .filter(|c| c.detail["statement"] == "_pg3_0")
        .collect();
    assert!(named.len() >= 5);
    assert!(
        named
            .iter()
            .skip(1)
            .all(|c| c.detail["sql"] == "SELECT name FROM users WHERE id = $1")
    );
}

#[test]
fn auth_failure_and_cleartext() {
    let (_, ev) = pg("postgres/pg_asyncpg_authfail.bin");
    let cs = calls(&ev);
    assert_eq!(cs.len(), 2);
    assert_eq!(
        cs[1].error.as_deref(),
        Some("SQLSTATE 28P01: password authentication failed for user \"scramuser\"")
    );
    assert_eq!(session_facts(&ev)["auth"]["outcome"], "error");
    let (_, ev) = pg("postgres/pg_psql_cleartext.bin");
    let cs = calls(&ev);
    assert_eq!(cs[0].detail["auth"]["method"], "cleartext");
    assert_eq!(cs[1].detail["rows"], json!([["1"]]));
}

#[test]
fn no_password_anywhere() {
    for f in PG_FIXTURES {
        let (recs, ev) = pg(f);
        let mut secrets = vec![PASSWORD.to_vec()];
        secrets.extend(
            password_payloads(&recs)
                .into_iter()
                .filter(|p| p.len() >= 6),
        );
        assert!(secrets.len() >= 2, "{f}: no password message found");
        assert_no_secret(&ev, &secrets);
        // The redacted PasswordMessage keeps its length: raw bytes stay framed.
        for c in calls(&ev) {
            if c.method == "STARTUP" {
                assert!(c.raw_request.windows(1).any(|w| w == b"p"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_segmentation_same_events(seed in proptest::num::u64::ANY, fixture in 0..PG_FIXTURES.len()) {
        let recs = load(PG_FIXTURES[fixture]);
        let whole = run(&mut PgParser::default(), &recs);
        let split = move |i: usize, len: usize| -> Vec<usize> {
            let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut cuts = Vec::new();
            for _ in 0..(x % 6) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                if len > 1 {
                    cuts.push((x >> 33) as usize % len);
                }
            }
            cuts
        };
        let pieces = run_with(&mut PgParser::default(), &recs, &split);
        prop_assert_eq!(calls(&whole), calls(&pieces));
        prop_assert_eq!(session_facts(&whole), session_facts(&pieces));
        prop_assert_eq!(skipped(&whole), skipped(&pieces));
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                            cut in 0usize..512, eg in proptest::bool::ANY) {
        let cut = cut.min(data.len());
        let recs = vec![(eg, data[..cut].to_vec()), (!eg, data[cut..].to_vec())];
        let _ = run(&mut PgParser::default(), &recs);
    }
}

// ---- hand-made messages -------------------------------------------------------------------

fn msg(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}
fn cs(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}
fn bind(portal: &str, stmt: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut b = cs(portal);
    b.extend(cs(stmt));
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    msg(b'B', &b)
}
fn execute(portal: &str) -> Vec<u8> {
    let mut b = cs(portal);
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}
fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cs(name);
    b.extend(cs(sql));
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}
fn row_desc(cols: &[(&str, u32)]) -> Vec<u8> {
    let mut b = (cols.len() as i16).to_be_bytes().to_vec();
    for (n, oid) in cols {
        b.extend(cs(n));
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
    }
    msg(b'T', &b)
}
fn data_row(vals: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (vals.len() as i16).to_be_bytes().to_vec();
    for v in vals {
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    msg(b'D', &b)
}
fn z(s: u8) -> Vec<u8> {
    msg(b'Z', &[s])
}
fn cc(tag: &str) -> Vec<u8> {
    msg(b'C', &cs(tag))
}
fn err(code: &str, m: &str) -> Vec<u8> {
    let mut b = b"SERROR\0VERROR\0C".to_vec();
    b.extend(cs(code));
    b.push(b'M');
    b.extend(cs(m));
    b.push(0);
    msg(b'E', &b)
}
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn mid_session_named_statement_and_orphans() {
    let recs = vec![
        // Tail of a response to something sent before the attach.
        (
            false,
            cat(&[data_row(&[Some(b"9")]), cc("SELECT 1"), z(b'I')]),
        ),
        (
            true,
            cat(&[
                bind("", "s1", &[&7i32.to_be_bytes()]),
                execute(""),
                msg(b'S', &[]),
            ]),
        ),
        (
            false,
            cat(&[
                msg(b'2', &[]),
                data_row(&[Some(&5i32.to_be_bytes())]),
                cc("SELECT 1"),
                z(b'I'),
            ]),
        ),
        (true, cat(&[msg(b'Q', &cs("select 1"))])),
        (
            false,
            cat(&[
                row_desc(&[("x", 23)]),
                data_row(&[Some(b"1")]),
                cc("SELECT 1"),
                z(b'I'),
            ]),
        ),
    ];
    // Give the orphan response an earlier timestamp than the request (as in reality).
    let ev = run(&mut PgParser::default(), &recs);
    let c = calls(&ev);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].method, "EXECUTE");
    assert_eq!(c[0].detail["sql"], Value::Null);
    assert_eq!(c[0].detail["sql_missing"], MISSING_SQL);
    assert_eq!(c[0].detail["statement"], "s1");
    assert_eq!(c[0].detail["params"][0]["format"], "binary");
    assert_eq!(
        c[0].detail["params"][0]["value"],
        json!({"base64": "AAAABw=="})
    );
    assert_eq!(c[1].detail["rows"], json!([["1"]]));
    let missing = ev
        .iter()
        .rev()
        .find_map(|e| match e {
            DbEvent::Session { missing, .. } => Some(missing.clone()),
            _ => None,
        })
        .unwrap();
    assert!(missing.contains(&"startup".to_owned()));
    assert!(missing.contains(&"prepared:s1".to_owned()));
    assert!(skipped(&ev) > 0, "the orphan response is reported");
}

#[test]
fn pipelined_error_skips_to_sync() {
    let fe = cat(&[
        parse_msg("a", "SELECT * FROM nope"),
        bind("", "a", &[]),
        execute(""),
        parse_msg("b", "SELECT 2"),
        bind("", "b", &[]),
        execute(""),
        msg(b'S', &[]),
        msg(b'Q', &cs("SELECT 3")),
    ]);
    let be = cat(&[
        err("42P01", "relation \"nope\" does not exist"),
        z(b'I'),
        row_desc(&[("x", 23)]),
        data_row(&[Some(b"3")]),
        cc("SELECT 1"),
        z(b'I'),
    ]);
    let ev = run(&mut PgParser::default(), &[(true, fe), (false, be)]);
    let c = calls(&ev);
    assert_eq!(c.len(), 2, "{c:#?}");
    assert_eq!(
        c[0].error.as_deref(),
        Some("SQLSTATE 42P01: relation \"nope\" does not exist")
    );
    assert_eq!(c[0].detail["skipped_messages"], 3);
    assert_eq!(c[0].detail["transaction_status"], "I");
    assert_eq!(c[1].detail["rows"], json!([["3"]]));
}

#[test]
fn ssl_accepted_stops_parsing() {
    let ssl = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let recs = vec![
        (true, ssl),
        (false, b"S".to_vec()),
        (true, vec![0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]),
        (false, vec![0x16, 3, 3, 0, 2, 9, 9]),
    ];
    let ev = run(&mut PgParser::default(), &recs);
    let c = calls(&ev);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].detail["answer"], "S");
    assert!(
        ev.iter()
            .any(|e| matches!(e, DbEvent::Skipped { reason: "tls", .. }))
    );
    assert_eq!(session_facts(&ev)["tls"], true);
}

#[test]
fn startup_md5_redacted_and_notice() {
    let mut start = Vec::new();
    let body = cat(&[
        196_608u32.to_be_bytes().to_vec(),
        cs("user"),
        cs("u"),
        cs("database"),
        cs("d"),
        vec![0],
    ]);
    start.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    start.extend(body);
    let mut md5req = 5i32.to_be_bytes().to_vec();
    md5req.extend_from_slice(b"salt");
    let pw = msg(b'p', &cs("md5secretsecretsecret"));
    let recs = vec![
        (true, start),
        (false, msg(b'R', &md5req)),
        (true, pw),
        (
            false,
            cat(&[
                msg(b'R', &0i32.to_be_bytes()),
                msg(b'S', &cat(&[cs("server_version"), cs("16.1")])),
                msg(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]),
                z(b'I'),
            ]),
        ),
        (
            true,
            msg(b'Q', &cs("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")),
        ),
        (
            false,
            cat(&[msg(b'N', b"SNOTICE\0C00000\0Mhi\0\0"), cc("DO"), z(b'I')]),
        ),
    ];
    let ev = run(&mut PgParser::default(), &recs);
    assert_no_secret(&ev, &[b"md5secretsecretsecret".to_vec()]);
    let c = calls(&ev);
    assert_eq!(
        c[0].detail["auth"],
        json!({"method": "md5", "outcome": "ok"})
    );
    assert_eq!(c[0].detail["backend_pid"], 42);
    // Zeroed, same length.
    assert_eq!(c[0].raw_request.len(), recs[0].1.len() + recs[2].1.len());
    assert_eq!(c[1].detail["notices"][0]["message"], "hi");
    assert_eq!(c[1].detail["command_tag"], "DO");
    assert_eq!(session_facts(&ev)["server_version"], "16.1");
}

#[test]
fn rows_capped_and_counted() {
    let mut be = vec![row_desc(&[("n", 23)])];
    for i in 0..1005i32 {
        be.push(data_row(&[Some(&i.to_be_bytes())]));
    }
    be.push(cc("SELECT 1005"));
    be.push(z(b'I'));
    let fe = cat(&[
        parse_msg("", "SELECT n"),
        bind("", "", &[]),
        msg(b'D', &cat(&[vec![b'P'], cs("")])),
        execute(""),
        msg(b'S', &[]),
    ]);
    let mut be2 = cat(&[msg(b'1', &[]), msg(b'2', &[])]);
    be2.extend(cat(&be));
    let ev = run(&mut PgParser::default(), &[(true, fe), (false, be2)]);
    let c = calls(&ev);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].detail["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(c[0].detail["rows"][999], json!([999]));
    assert_eq!(c[0].detail["rows_total"], 1005);
    assert_eq!(c[0].detail["rows_truncated"], true);
}

#[test]
fn backend_gap_marks_call_incomplete_and_resyncs() {
    let recs = load("postgres/pg_psycopg3.bin");
    // Drop the middle of one backend record (a response).
    let idx = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.0)
        .nth(8)
        .unwrap()
        .0;
    let mut out = Vec::new();
    let mut p = PgParser::default();
    let mut pos = [0u64; 2];
    for (i, (eg, data)) in recs.iter().enumerate() {
        let d = usize::from(*eg);
        if i == idx && data.len() > 4 {
            p.feed(
                false,
                Segment::Gap {
                    pos: pos[d],
                    len: 4,
                },
                &mut out,
            );
            p.feed(
                false,
                Segment::Data(Chunk {
                    pos: pos[d] + 4,
                    data: Bytes::copy_from_slice(&data[4..]),
                    ts_ns: i as u64 + 1,
                    tid: 1,
                }),
                &mut out,
            );
        } else {
            p.feed(
                *eg,
                Segment::Data(Chunk {
                    pos: pos[d],
                    data: Bytes::copy_from_slice(data),
                    ts_ns: i as u64 + 1,
                    tid: 1,
                }),
                &mut out,
            );
        }
        pos[d] += data.len() as u64;
    }
    p.close(&mut out);
    let c = calls(&out);
    let whole = calls(&run(&mut PgParser::default(), &recs)).len();
    assert!(c.iter().any(|c| c.detail["incomplete"] == true));
    assert!(c.len() >= whole - 2, "{} vs {whole}", c.len());
    // The last calls are intact again.
    assert_eq!(c.last().unwrap().method, "COMMIT");
    assert_eq!(c.last().unwrap().detail["incomplete"], false);
}

#[test]
fn egress_gap_recovers() {
    let recs = load("postgres/pg_psycopg2.bin");
    let idx = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0)
        .nth(3)
        .unwrap()
        .0;
    let mut out = Vec::new();
    let mut p = PgParser::default();
    let mut pos = [0u64; 2];
    for (i, (eg, data)) in recs.iter().enumerate() {
        let d = usize::from(*eg);
        if i == idx {
            p.feed(
                true,
                Segment::Gap {
                    pos: pos[d],
                    len: data.len() as u64,
                },
                &mut out,
            );
        } else {
            p.feed(
                *eg,
                Segment::Data(Chunk {
                    pos: pos[d],
                    data: Bytes::copy_from_slice(data),
                    ts_ns: i as u64 + 1,
                    tid: 1,
                }),
                &mut out,
            );
        }
        pos[d] += data.len() as u64;
    }
    p.close(&mut out);
    let c = calls(&out);
    assert_eq!(c.last().unwrap().method, "COMMIT");
    assert!(
        c.iter()
            .all(|c| c.detail["incomplete"] == false || c.response_first.is_some())
    );
}

/// The correlator may hand over the server's first bytes (the `N` answering `SSLRequest`,
/// then the authentication request) before the client's `SSLRequest` and startup message of
/// the same drain. The answer byte must not be skipped as garbage: that paired every later
/// response with the call before it (e2e: `/pg/insert` showed `COMMIT`'s SQL with the
/// INSERT's rows, `/pg/fail` the wrong error).
#[test]
fn ssl_answer_fed_before_request_same_calls() {
    for f in ["postgres/pg_asyncpg.bin", "postgres/pg_psycopg3.bin"] {
        let recs = load(f);
        let whole = run(&mut PgParser::default(), &recs);
        // Server records of the handshake first (as the correlator fed a drain: ingress, then
        // egress), then the rest in order.
        let first_query = recs
            .iter()
            .position(|r| r.0 && matches!(r.1[0], b'P' | b'Q'))
            .unwrap();
        let head = &recs[..first_query.min(4)];
        let mut order: Vec<usize> = (0..head.len()).filter(|&i| !recs[i].0).collect();
        order.extend((0..head.len()).filter(|&i| recs[i].0));
        order.extend(head.len()..recs.len());
        let mut out = Vec::new();
        let mut p = PgParser::default();
        let mut pos = [0u64; 2];
        let mut starts = vec![0u64; recs.len()];
        for (i, (eg, d)) in recs.iter().enumerate() {
            starts[i] = pos[usize::from(*eg)];
            pos[usize::from(*eg)] += d.len() as u64;
        }
        for i in order {
            let (eg, d) = &recs[i];
            p.feed(
                *eg,
                Segment::Data(Chunk {
                    pos: starts[i],
                    data: Bytes::copy_from_slice(d),
                    ts_ns: 1000 * (i as u64 + 1),
                    tid: 7,
                }),
                &mut out,
            );
        }
        p.close(&mut out);
        assert_eq!(skipped(&out), 0, "{f}");
        let (cw, co) = (calls(&whole), calls(&out));
        assert_eq!(cw.len(), co.len(), "{f}");
        for (x, y) in cw.iter().zip(&co) {
            assert_eq!(x.detail, y.detail, "{f} call {}", x.index);
            assert_eq!(x.request_first, y.request_first, "{f} call {}", x.index);
        }
    }
}

/// asyncpg's statement cache: the `ParameterDescription`/`RowDescription` come in the first
/// exchange (`Parse`/`Describe`/`Flush`, then `Bind`/`Execute`/`Sync`); later executions send
/// only `Bind`/`Execute`/`Sync`, and their binary parameters and rows are decoded with what
/// was remembered for the named statement.
#[test]
fn cached_statement_decodes_later_binary_executions() {
    let mut describe = cs("S");
    describe.pop();
    describe.extend(cs("__asyncpg_stmt_1__"));
    let mut pdesc = 1i16.to_be_bytes().to_vec();
    pdesc.extend_from_slice(&23u32.to_be_bytes());
    let one = 1i32.to_be_bytes();
    let two = 2i32.to_be_bytes();
    let exec = |v: &[u8]| {
        cat(&[
            bind("", "__asyncpg_stmt_1__", &[v]),
            execute(""),
            msg(b'S', &[]),
        ])
    };
    let answer = |v: &[u8]| {
        cat(&[
            msg(b'2', &[]),
            data_row(&[Some(v), Some(b"ada")]),
            cc("SELECT 1"),
            z(b'I'),
        ])
    };
    let recs: Vec<Rec> = vec![
        (
            true,
            cat(&[
                parse_msg(
                    "__asyncpg_stmt_1__",
                    "SELECT id, name FROM items WHERE id = $1",
                ),
                msg(b'D', &describe),
                msg(b'H', &[]),
            ]),
        ),
        (
            false,
            cat(&[
                msg(b'1', &[]),
                msg(b't', &pdesc),
                row_desc(&[("id", 23), ("name", 25)]),
            ]),
        ),
        (true, exec(&one)),
        (false, answer(&one)),
        (true, exec(&two)),
        (false, answer(&two)),
    ];
    let ev = run(&mut PgParser::default(), &recs);
    let cs = calls(&ev);
    assert_eq!(cs.len(), 2);
    for (c, id) in cs.iter().zip([1, 2]) {
        assert_eq!(c.detail["sql"], "SELECT id, name FROM items WHERE id = $1");
        assert_eq!(
            c.detail["params"],
            json!([{"type_oid": 23, "format": "binary", "value": id}])
        );
        assert_eq!(c.detail["rows"], json!([[id, "ada"]]));
    }
    assert_eq!(cs[1].detail["messages"], "BES");
}
