//! MongoDB parser tests on wire fixtures: real pymongo 4.20 clients talking to a fake server
//! built with pymongo's own BSON encoder (`tests/fixtures/mongodb/generate.py`); the expected
//! documents are pymongo's own relaxed Extended JSON of what the server decoded and sent.
use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{MongoOptions, MongoParser};
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::reassembly::{Chunk, Segment};

#[derive(Clone, Debug)]
struct Rec {
    egress: bool,
    ts: u64,
    data: Vec<u8>,
}

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mongodb")
}

fn load(name: &str) -> Vec<Rec> {
    let text = std::fs::read_to_string(dir().join(format!("{name}.jsonl")))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            Rec {
                egress: v["egress"].as_bool().expect("egress"),
                ts: v["ts"].as_u64().expect("ts"),
                data: base64::engine::general_purpose::STANDARD
                    .decode(v["b64"].as_str().expect("b64"))
                    .expect("base64"),
            }
        })
        .collect()
}

fn truth(scenario: &str) -> Vec<Value> {
    let t: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("truth.json")).expect("truth.json"),
    )
    .expect("truth parses");
    t[scenario].as_array().cloned().unwrap_or_default()
}

fn run_with(recs: &[Rec], opts: MongoOptions) -> Vec<DbEvent> {
    let mut p = MongoParser::new(opts);
    let mut pos = [0u64; 2];
    let mut out = Vec::new();
    for r in recs {
        let d = usize::from(!r.egress);
        p.feed(
            r.egress,
            Segment::Data(Chunk {
                pos: pos[d],
                data: Bytes::from(r.data.clone()),
                ts_ns: r.ts,
                tid: 3,
            }),
            &mut out,
        );
        pos[d] += r.data.len() as u64;
    }
    p.close(&mut out);
    out
}

fn run(recs: &[Rec]) -> Vec<DbEvent> {
    run_with(recs, MongoOptions::default())
}

fn calls(evs: &[DbEvent]) -> Vec<&DbCall> {
    evs.iter()
        .filter_map(|e| match e {
            DbEvent::Call(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

/// The truth documents with the parser's redaction rules applied.
fn redact(v: &Value, sasl: bool) -> Value {
    match v {
        Value::Object(m) => {
            let sasl_doc = sasl
                || ["conversationId", "mechanism", "saslStart", "saslContinue"]
                    .iter()
                    .any(|k| m.contains_key(*k));
            let mut out = Map::new();
            for (k, x) in m {
                let secret = k == "pwd" || (k == "payload" && sasl_doc);
                out.insert(
                    k.clone(),
                    if secret {
                        Value::String("[REDACTED]".into())
                    } else {
                        redact(x, sasl || k == "speculativeAuthenticate")
                    },
                );
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| redact(x, sasl)).collect()),
        other => other.clone(),
    }
}

/// Every request the fake server decoded appears as one call with the same command and (when
/// the server answered) the same reply, across the scenario's connections.
fn check_scenario(scenario: &str, conns: usize) -> Vec<DbCall> {
    let mut all: Vec<DbCall> = Vec::new();
    for n in 0..conns {
        let evs = run(&load(&format!("{scenario}-{n}")));
        for e in &evs {
            if let DbEvent::Skipped { bytes, reason, .. } = e {
                panic!("{scenario}-{n}: skipped {bytes} bytes ({reason})");
            }
        }
        all.extend(calls(&evs).into_iter().cloned());
    }
    let t = truth(scenario);
    assert_eq!(all.len(), t.len(), "{scenario}: calls vs requests");
    for want in &t {
        let cmd = redact(&want["command"], false);
        let c = all
            .iter()
            .find(|c| c.detail["command"] == cmd)
            .unwrap_or_else(|| panic!("{scenario}: no call with command {cmd}"));
        let more_to_come = want["flags"].as_u64().is_some_and(|f| f & 2 != 0);
        if more_to_come {
            assert!(c.response_first.is_none());
            assert_eq!(c.detail["more_to_come"], true);
        } else {
            let sasl = c.method.starts_with("sasl");
            assert_eq!(
                c.detail["reply"],
                redact(&want["reply"], sasl),
                "{scenario}: {}",
                c.method
            );
            assert_eq!(c.detail["ok"], want["reply"]["ok"]);
        }
        assert_eq!(c.detail["op"], want["op"]);
        let method = want["command"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        assert_eq!(c.method, method);
    }
    all
}

#[test]
fn crud_matches_pymongo() {
    let all = check_scenario("crud", 2);
    let by = |m: &str, coll: &str| -> Vec<&DbCall> {
        all.iter()
            .filter(|c| c.method == m && c.detail["collection"] == coll)
            .collect()
    };
    let bad = by("find", "bad");
    assert_eq!(
        bad[0].error.as_deref(),
        Some("BadValue (2): unknown operator: $bogus")
    );
    let dup = by("insert", "dup");
    assert!(
        dup[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("E11000"))
    );
    let many = by("insert", "people");
    assert_eq!(
        many[1].detail["sequences"],
        serde_json::json!(["documents"])
    );
    assert_eq!(many[1].detail["db"], "app");
    let get_more = all.iter().find(|c| c.method == "getMore").expect("getMore");
    assert_eq!(get_more.detail["collection"], "people");
    let typed = by("find", "typed");
    let doc = &typed[0].detail["reply"]["cursor"]["firstBatch"][0];
    assert_eq!(
        doc["dec"],
        serde_json::json!({"$numberDecimal": "1234.5678"})
    );
    assert_eq!(doc["old"]["$date"]["$numberLong"], "-315619200000");
    // Handshakes are session-level; the app's work is not.
    assert!(
        all.iter()
            .filter(|c| c.method == "ismaster")
            .all(|c| c.session_level)
    );
    assert!(
        all.iter()
            .filter(|c| c.method == "find")
            .all(|c| !c.session_level)
    );
    // Raw bytes are the wire bytes: the request's length prefix is its length.
    for c in &all {
        let len = i32::from_le_bytes([
            c.raw_request[0],
            c.raw_request[1],
            c.raw_request[2],
            c.raw_request[3],
        ]);
        assert_eq!(len as usize, c.raw_request.len());
        assert!(!c.raw_truncated);
    }
}

#[test]
fn auth_payloads_redacted() {
    let all = check_scenario("auth", 2);
    let start = all
        .iter()
        .find(|c| c.method == "saslStart")
        .expect("saslStart");
    assert_eq!(start.detail["command"]["payload"], "[REDACTED]");
    assert_eq!(start.detail["reply"]["payload"], "[REDACTED]");
    assert!(start.session_level);
    let cont = all
        .iter()
        .find(|c| c.method == "saslContinue")
        .expect("saslContinue");
    assert_eq!(cont.detail["command"]["payload"], "[REDACTED]");
    // The client proof (`p=...`) and nonce never reach the raw bytes.
    let t = truth("auth");
    for want in &t {
        for key in ["command", "reply"] {
            let p = &want[key]["payload"]["$binary"]["base64"];
            if let Some(b64) = p.as_str() {
                let secret = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("b64");
                for c in &all {
                    for raw in [&c.raw_request, &c.raw_response] {
                        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_slice()));
                    }
                }
            }
        }
    }
    let hello = all
        .iter()
        .find(|c| c.detail["command"].get("speculativeAuthenticate").is_some())
        .expect("speculative auth");
    assert_eq!(
        hello.detail["command"]["speculativeAuthenticate"]["payload"],
        "[REDACTED]"
    );
}

#[test]
fn compressed_zlib() {
    let all = check_scenario("compressed", 2);
    let insert = all.iter().find(|c| c.method == "insert").expect("insert");
    assert_eq!(insert.detail["compressed"], "zlib");
}

#[test]
fn server_api_and_legacy_handshake() {
    check_scenario("server_api", 2);
    let all = check_scenario("legacy", 1);
    assert_eq!(all[0].method, "isMaster");
    assert_eq!(all[0].detail["op"], "OP_QUERY");
    assert_eq!(all[0].detail["db"], "admin");
    assert_eq!(all[0].detail["reply"]["ismaster"], true);
}

#[test]
fn caps_mark_truncation() {
    let evs = run_with(&load("crud-1"), MongoOptions { max_bytes: 200 });
    let c = calls(&evs);
    assert!(c.iter().any(|c| c.raw_truncated));
    assert!(c.iter().all(|c| c.raw_request.len() <= 200));
    // Still paired: every call that had a reply has one.
    assert!(
        c.iter()
            .filter(|c| c.detail["more_to_come"] != true)
            .all(|c| c.response_first.is_some())
    );
}

#[test]
fn checksum_recomputed_after_masking() {
    // OP_MSG with checksumPresent: {saslContinue: 1, payload: BinData("secret")}.
    let mut doc = Vec::new();
    doc.extend_from_slice(&[0; 4]);
    doc.push(0x10);
    doc.extend_from_slice(b"saslContinue\0");
    doc.extend_from_slice(&1i32.to_le_bytes());
    doc.push(0x05);
    doc.extend_from_slice(b"payload\0");
    doc.extend_from_slice(&6i32.to_le_bytes());
    doc.push(0);
    doc.extend_from_slice(b"secret");
    doc.push(0);
    let n = doc.len() as i32;
    doc[..4].copy_from_slice(&n.to_le_bytes());
    let mut msg = Vec::new();
    let len = 16 + 4 + 1 + doc.len() + 4;
    msg.extend_from_slice(&(len as i32).to_le_bytes());
    msg.extend_from_slice(&5i32.to_le_bytes());
    msg.extend_from_slice(&0i32.to_le_bytes());
    msg.extend_from_slice(&2013i32.to_le_bytes());
    msg.extend_from_slice(&1u32.to_le_bytes());
    msg.push(0);
    msg.extend_from_slice(&doc);
    let crc = super::crc32c(&msg);
    msg.extend_from_slice(&crc.to_le_bytes());
    let mut p = MongoParser::default();
    let mut out = Vec::new();
    p.feed(
        true,
        Segment::Data(Chunk {
            pos: 0,
            data: Bytes::from(msg.clone()),
            ts_ns: 1,
            tid: 1,
        }),
        &mut out,
    );
    p.close(&mut out);
    let c = calls(&out)[0];
    assert_eq!(c.detail["command"]["payload"], "[REDACTED]");
    assert!(!c.raw_request.windows(6).any(|w| w == b"secret"));
    assert_eq!(c.raw_request.len(), msg.len());
    let n = c.raw_request.len() - 4;
    assert_eq!(
        super::crc32c(&c.raw_request[..n]).to_le_bytes(),
        c.raw_request[n..]
    );
}

const ALL: &[&str] = &[
    "crud-0",
    "crud-1",
    "auth-0",
    "auth-1",
    "compressed-0",
    "compressed-1",
    "server_api-0",
    "server_api-1",
    "legacy-0",
];

fn key(c: &DbCall) -> String {
    format!(
        "{} {} {:?} {:?}",
        c.index, c.detail, c.raw_request, c.raw_response
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any segmentation, either direction first: the same calls.
    #[test]
    fn segmentation_does_not_matter(
        which in 0..ALL.len(),
        cuts in proptest::collection::vec(0usize..20_000, 0..30),
        ingress_first in any::<bool>(),
    ) {
        let recs = load(ALL[which]);
        let base = run(&recs);
        let mut out = Vec::new();
        let mut p = MongoParser::default();
        let dirs = if ingress_first { [false, true] } else { [true, false] };
        for egress in dirs {
            let bytes: Vec<u8> = recs.iter().filter(|r| r.egress == egress).flat_map(|r| r.data.clone()).collect();
            let mut pts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            pts.extend([0, bytes.len()]);
            pts.sort_unstable();
            pts.dedup();
            for w in pts.windows(2) {
                p.feed(egress, Segment::Data(Chunk { pos: w[0] as u64, data: Bytes::from(bytes[w[0]..w[1]].to_vec()), ts_ns: 0, tid: 3 }), &mut out);
            }
        }
        p.close(&mut out);
        let mut a: Vec<String> = calls(&base).into_iter().map(key).collect();
        let mut b: Vec<String> = calls(&out).into_iter().map(key).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    /// Attaching at any record or losing records never pairs a command with another's reply.
    #[test]
    fn attach_and_gaps_never_mispair(
        which in 0..ALL.len(),
        attach_at in 0usize..20,
        lose in proptest::collection::vec(0usize..60, 0..3),
    ) {
        let recs = load(ALL[which]);
        let full = run(&recs);
        let known: Vec<(String, String)> = calls(&full)
            .iter()
            .map(|c| (c.detail["command"].to_string(), c.detail["reply"].to_string()))
            .collect();
        let mut p = MongoParser::default();
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        for (k, r) in recs.iter().enumerate() {
            let d = usize::from(!r.egress);
            let n = r.data.len() as u64;
            if k >= attach_at {
                let seg = if lose.contains(&k) {
                    Segment::Gap { pos: pos[d], len: n }
                } else {
                    Segment::Data(Chunk { pos: pos[d], data: Bytes::from(r.data.clone()), ts_ns: r.ts, tid: 1 })
                };
                p.feed(r.egress, seg, &mut out);
            }
            pos[d] += n;
        }
        p.close(&mut out);
        for c in calls(&out) {
            if c.response_first.is_none() || c.raw_request.is_empty() {
                continue;
            }
            let k = (c.detail["command"].to_string(), c.detail["reply"].to_string());
            prop_assert!(known.contains(&k), "mispaired {}", c.method);
        }
    }

    /// Arbitrary bytes (and header-shaped garbage) never panic.
    #[test]
    fn garbage_never_panics(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80)), 0..30),
        header_like in any::<bool>(),
    ) {
        let mut p = MongoParser::default();
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        for (i, (egress, mut data)) in chunks.into_iter().enumerate() {
            if header_like && data.len() >= 21 {
                let len = data.len() as i32;
                data[..4].copy_from_slice(&len.to_le_bytes());
                data[8..12].copy_from_slice(&(if egress { 0i32 } else { 1 }).to_le_bytes());
                data[12..16].copy_from_slice(&[2013i32, 2004, 1, 2012][i % 4].to_le_bytes());
                data[16..20].copy_from_slice(&0u32.to_le_bytes());
                data[20] = 0;
            }
            let d = usize::from(!egress);
            let n = data.len() as u64;
            let seg = if i % 5 == 4 {
                Segment::Gap { pos: pos[d], len: n.max(1) }
            } else {
                Segment::Data(Chunk { pos: pos[d], data: Bytes::from(data), ts_ns: i as u64, tid: 1 })
            };
            p.feed(egress, seg, &mut out);
            pos[d] += n.max(1);
        }
        p.close(&mut out);
    }
}
