//! MySQL parser tests: real captures (`tests/fixtures/mysql/*.bin`), hand-made packets,
//! segmentation invariance, gaps, mid-session attach, redaction.
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::protocols::db::{DbEvent, DbParser};
use crate::protocols::postgres::tests::{
    PASSWORD, Rec, assert_no_secret, calls, load, run, run_with, skipped,
};
use crate::reassembly::{Chunk, Segment};
use parse::{cap, com};

fn my(path: &str) -> (Vec<Rec>, Vec<DbEvent>) {
    let recs = load(path);
    let ev = run(&mut MysqlParser::default(), &recs);
    (recs, ev)
}

#[test]
fn dump_fixtures() {
    for f in [
        "mysql/my_pymysql.bin",
        "mysql/my_connector_prepared.bin",
        "mysql/my_authfail.bin",
    ] {
        let (_, ev) = my(f);
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

const MY_FIXTURES: &[&str] = &[
    "mysql/my_pymysql.bin",
    "mysql/my_connector_prepared.bin",
    "mysql/my_authfail.bin",
];

fn facts(ev: &[DbEvent]) -> serde_json::Value {
    ev.iter()
        .rev()
        .find_map(|e| match e {
            DbEvent::Session { facts, .. } => Some(facts.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn pymysql_capture() {
    let (_, ev) = my("mysql/my_pymysql.bin");
    assert_eq!(skipped(&ev), 0);
    let c = calls(&ev);
    assert_eq!(c[0].method, "HANDSHAKE");
    assert!(c[0].session_level);
    assert_eq!(c[0].detail["auth"]["outcome"], "ok");
    assert_eq!(c[0].detail["response"]["user"], "app");
    assert_eq!(c[0].detail["response"]["database"], "app");
    assert!(c[1].session_level, "SET NAMES");
    let sel = c.iter().find(|c| c.method == "SELECT").unwrap();
    assert!(!sel.session_level);
    assert_eq!(
        sel.detail["rows"],
        json!([["1", "alice", "1.5", "2024-01-02 03:04:05", "12.34", {"base64": "AAH/"}]])
    );
    assert_eq!(sel.detail["columns"][1]["name"], "name");
    let e = c.iter().find(|c| c.error.is_some()).unwrap();
    assert_eq!(
        e.error.as_deref(),
        Some("MySQL 1146 (42S02): Table 'app.missing_table' doesn't exist")
    );
    let ins = c.iter().find(|c| c.method == "INSERT").unwrap();
    assert_eq!(ins.detail["ok"]["affected_rows"], 1);
    let multi = c
        .iter()
        .find(|c| c.detail["sql"] == "SELECT 1 AS a; SELECT 'x' AS b, 2 AS c")
        .unwrap();
    assert_eq!(multi.detail["results"][0]["rows"], json!([["1"]]));
    assert_eq!(multi.detail["results"][1]["rows"], json!([["x", "2"]]));
    let methods: Vec<&str> = c.iter().map(|c| c.method.as_str()).collect();
    assert!(methods.ends_with(&["PING", "INIT_DB"]));
    let f = facts(&ev);
    assert!(f["server_version"].as_str().unwrap().contains("MariaDB"));
    assert_eq!(f["auth"]["plugin"], "mysql_native_password");
}

#[test]
fn prepared_statements_capture() {
    let (_, ev) = my("mysql/my_connector_prepared.bin");
    assert_eq!(skipped(&ev), 0);
    let c = calls(&ev);
    let ex: Vec<_> = c
        .iter()
        .filter(|c| c.detail["command"] == "COM_STMT_EXECUTE")
        .collect();
    assert_eq!(ex.len(), 4);
    assert_eq!(ex[0].method, "SELECT");
    assert_eq!(ex[0].detail["params"][0]["value"], 1);
    assert_eq!(ex[0].detail["params"][1]["value"], "alice");
    assert_eq!(
        ex[0].detail["rows"],
        json!([[1, "alice", 1.5, "2024-01-02T03:04:05", "12.34", {"base64": "AAH/"}]])
    );
    assert_eq!(
        ex[1].detail["rows"],
        json!([[2, "bob", null, null, "-0.05", null]])
    );
    assert_eq!(ex[2].detail["params"][1]["value"], 3.5);
    assert_eq!(ex[2].detail["ok"]["affected_rows"], 1);
    let prep: Vec<_> = c
        .iter()
        .filter(|c| c.detail["command"] == "COM_STMT_PREPARE")
        .collect();
    assert_eq!(prep.len(), 3);
    assert!(prep.iter().all(|p| p.session_level));
    assert_eq!(prep[0].detail["prepared"]["num_params"], 2);
    assert_eq!(
        prep[0].detail["prepared"]["columns"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let close: Vec<_> = c
        .iter()
        .filter(|c| c.detail["command"] == "COM_STMT_CLOSE")
        .collect();
    assert_eq!(close.len(), 3);
    assert!(close[0].response_first.is_none());
}

#[test]
fn auth_failure() {
    let (_, ev) = my("mysql/my_authfail.bin");
    let c = calls(&ev);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].detail["auth"]["outcome"], "error");
    assert!(
        c[0].error
            .as_deref()
            .unwrap()
            .starts_with("MySQL 1045 (28000): Access denied")
    );
}

/// Auth response bytes of the HandshakeResponse in a capture.
fn auth_responses(recs: &[Rec]) -> Vec<Vec<u8>> {
    recs.iter()
        .filter(|r| r.0 && r.1.get(3) == Some(&1))
        .filter_map(|r| {
            let h = parse::parse_handshake_response(&r.1[4..])?;
            Some(r.1[4 + h.auth_range.0..4 + h.auth_range.1].to_vec())
        })
        .collect()
}

#[test]
fn no_password_anywhere() {
    for f in MY_FIXTURES {
        let (recs, ev) = my(f);
        let mut secrets = vec![PASSWORD.to_vec()];
        let a = auth_responses(&recs);
        assert_eq!(a.len(), 1, "{f}");
        assert_eq!(a[0].len(), 20);
        secrets.extend(a);
        assert_no_secret(&ev, &secrets);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_segmentation_same_calls(seed in proptest::num::u64::ANY, fixture in 0..MY_FIXTURES.len()) {
        let recs = load(MY_FIXTURES[fixture]);
        let whole = run(&mut MysqlParser::default(), &recs);
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
        let pieces = run_with(&mut MysqlParser::default(), &recs, &split);
        prop_assert_eq!(calls(&whole), calls(&pieces));
        prop_assert_eq!(facts(&whole), facts(&pieces));
        prop_assert_eq!(skipped(&whole), skipped(&pieces));
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                            cut in 0usize..512, eg in proptest::bool::ANY) {
        let cut = cut.min(data.len());
        let recs = vec![(eg, data[..cut].to_vec()), (!eg, data[cut..].to_vec())];
        let _ = run(&mut MysqlParser::default(), &recs);
    }
}

// ---- hand-made packets --------------------------------------------------------------------

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}
fn lenenc_str(s: &[u8]) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s);
    v
}
fn coldef(name: &str, t: u8, charset: u16) -> Vec<u8> {
    let mut v = lenenc_str(b"def");
    for s in ["db", "t", "t", name, name] {
        v.extend(lenenc_str(s.as_bytes()));
    }
    v.push(0x0c);
    v.extend_from_slice(&charset.to_le_bytes());
    v.extend_from_slice(&11u32.to_le_bytes());
    v.push(t);
    v.extend_from_slice(&0u16.to_le_bytes());
    v.push(0);
    v.extend_from_slice(&[0, 0]);
    v
}
fn ok_pkt(header: u8, status: u16) -> Vec<u8> {
    let mut v = vec![header, 0, 0];
    v.extend_from_slice(&status.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v
}

#[test]
fn mid_session_query_deprecate_eof_and_unknown_statement() {
    let mut q = vec![com::QUERY];
    q.extend_from_slice(b"SELECT name FROM t");
    let recs = vec![
        // Tail of an earlier response, before the attach.
        (false, pkt(3, &ok_pkt(0xfe, 2))),
        (true, pkt(0, &q)),
        (
            false,
            [
                pkt(1, &[1]),
                pkt(2, &coldef("name", 0xfd, 45)),
                pkt(3, &lenenc_str(b"ann")),
                pkt(4, &[0xfb]),
                pkt(5, &ok_pkt(0xfe, 2)),
            ]
            .concat(),
        ),
        // Execute of a statement prepared before tracing.
        (
            true,
            pkt(
                0,
                &[
                    com::STMT_EXECUTE,
                    7,
                    0,
                    0,
                    0,
                    0,
                    1,
                    0,
                    0,
                    0,
                    0,
                    1,
                    3,
                    0,
                    5,
                    0,
                    0,
                    0,
                ],
            ),
        ),
        (false, pkt(1, &ok_pkt(0x00, 2))),
    ];
    let ev = run(&mut MysqlParser::default(), &recs);
    let c = calls(&ev);
    assert_eq!(c.len(), 2, "{c:#?}");
    assert_eq!(c[0].detail["rows"], json!([["ann"], [null]]));
    assert_eq!(c[0].detail["ok"]["status_flags"], 2);
    assert_eq!(
        c[1].detail["sql_missing"],
        crate::protocols::postgres::MISSING_SQL
    );
    assert_eq!(c[1].detail["statement_id"], 7);
    let missing = ev
        .iter()
        .rev()
        .find_map(|e| match e {
            DbEvent::Session { missing, .. } => Some(missing.clone()),
            _ => None,
        })
        .unwrap();
    assert!(missing.contains(&"handshake".to_owned()));
    assert!(missing.contains(&"prepared:7".to_owned()));
    assert!(skipped(&ev) > 0);
}

#[test]
fn auth_switch_redacted() {
    let mut greet = vec![10u8];
    greet.extend_from_slice(b"10.11.0-MariaDB\0");
    greet.extend_from_slice(&5u32.to_le_bytes());
    greet.extend_from_slice(b"abcdefgh\0");
    let caps: u32 =
        cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH | cap::CONNECT_WITH_DB;
    greet.extend_from_slice(&(caps as u16).to_le_bytes());
    greet.push(45);
    greet.extend_from_slice(&2u16.to_le_bytes());
    greet.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    greet.push(21);
    greet.extend_from_slice(&[0; 10]);
    greet.extend_from_slice(b"ijklmnopqrst\0");
    greet.extend_from_slice(b"mysql_native_password\0");
    let mut resp = caps.to_le_bytes().to_vec();
    resp.extend_from_slice(&(1u32 << 24).to_le_bytes());
    resp.push(45);
    resp.extend_from_slice(&[0; 23]);
    resp.extend_from_slice(b"bob\0");
    resp.push(20);
    resp.extend_from_slice(b"SCRAMBLEDSECRET12345");
    resp.extend_from_slice(b"app\0mysql_native_password\0");
    let mut switch = vec![0xfe];
    switch.extend_from_slice(b"client_ed25519\0NONCE-NONCE-NONCE-NONCE\0");
    let recs = vec![
        (false, pkt(0, &greet)),
        (true, pkt(1, &resp)),
        (false, pkt(2, &switch)),
        (true, pkt(3, b"ED25519-SIGNATURE-SECRET-BYTES-0123456789")),
        (false, pkt(4, &ok_pkt(0, 2))),
    ];
    let ev = run(&mut MysqlParser::default(), &recs);
    assert_no_secret(
        &ev,
        &[
            b"SCRAMBLEDSECRET12345".to_vec(),
            b"ED25519-SIGNATURE-SECRET".to_vec(),
        ],
    );
    let c = calls(&ev);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].detail["auth"]["switched_to"], "client_ed25519");
    assert_eq!(c[0].detail["auth"]["outcome"], "ok");
    assert_eq!(c[0].detail["response"]["user"], "bob");
    assert_eq!(c[0].raw_request.len(), recs[1].1.len() + recs[3].1.len());
    assert_eq!(facts(&ev)["server_version"], "10.11.0-MariaDB");
}

#[test]
fn packet_over_16_mib_is_joined() {
    let mut sql = b"SELECT '".to_vec();
    sql.resize(0xff_ffff + 100, b'x');
    sql.extend_from_slice(b"'");
    let mut payload = vec![com::QUERY];
    payload.extend_from_slice(&sql);
    let mut wire = Vec::new();
    wire.extend_from_slice(&[0xff, 0xff, 0xff, 0]);
    wire.extend_from_slice(&payload[..0xff_ffff]);
    wire.extend(pkt(1, &payload[0xff_ffff..]));
    let recs = vec![
        (true, wire),
        (
            false,
            pkt(
                1,
                &[
                    0xff, 0x28, 0x04, b'#', b'4', b'2', b'0', b'0', b'0', b'b', b'a', b'd',
                ],
            ),
        ),
    ];
    let ev = run(&mut MysqlParser::default(), &recs);
    let c = calls(&ev);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].method, "SELECT");
    assert_eq!(c[0].detail["sql"].as_str().unwrap().len(), sql.len());
    assert!(c[0].raw_truncated);
    assert_eq!(c[0].raw_request.len(), 1 << 20);
    assert_eq!(c[0].error.as_deref(), Some("MySQL 1064 (42000): bad"));
    assert_eq!(skipped(&ev), 0);
}

#[test]
fn server_gap_resyncs_at_next_response() {
    let recs = load("mysql/my_pymysql.bin");
    let idx = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.0)
        .nth(4)
        .unwrap()
        .0;
    let mut out = Vec::new();
    let mut p = MysqlParser::default();
    let mut pos = [0u64; 2];
    for (i, (eg, data)) in recs.iter().enumerate() {
        let d = usize::from(*eg);
        if i == idx {
            p.feed(
                false,
                Segment::Gap {
                    pos: pos[d],
                    len: 3,
                },
                &mut out,
            );
            p.feed(
                false,
                Segment::Data(Chunk {
                    pos: pos[d] + 3,
                    data: Bytes::copy_from_slice(&data[3..]),
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
    let whole = calls(&run(&mut MysqlParser::default(), &recs)).len();
    assert_eq!(c.len(), whole);
    let inc: Vec<_> = c
        .iter()
        .filter(|c| c.detail["incomplete"] == true)
        .map(|c| (&c.method, c.index))
        .collect();
    assert_eq!(
        inc.len(),
        1,
        "{inc:?} {:?}",
        out.iter()
            .filter(|e| matches!(e, DbEvent::Skipped { .. }))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.last().unwrap().method, "INIT_DB");
    assert_eq!(c.last().unwrap().detail["incomplete"], false);
}

/// Found by `cargo xtask fuzz` (target `proto_mysql`, issue #24): an empty packet answering
/// `COM_STMT_PREPARE` (its missing header byte reads as 0x00, "OK") sliced past its end.
#[test]
fn empty_answer_to_stmt_prepare() {
    let mut prep = vec![com::STMT_PREPARE];
    prep.extend_from_slice(b"SELECT ?");
    let recs = vec![
        (true, pkt(0, &prep)),
        (false, pkt(1, &[])),
        (true, pkt(0, &[com::QUIT])),
    ];
    let ev = run(&mut MysqlParser::default(), &recs);
    assert_eq!(calls(&ev).len(), 1, "{ev:?}");
}
