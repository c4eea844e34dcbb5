//! Redis parser tests: real `redis-server` 7.0 traffic driven by redis-py 8.1 (see
//! `tests/fixtures/redis/README.md`), hand-made frames, segmentation / attach / gap /
//! garbage properties.
use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{RedisOptions, RedisParser};
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::reassembly::{Chunk, Segment};

const PASSWORD: &str = "s3cret-Pa55word";

/// One recorded syscall's bytes.
#[derive(Clone, Debug)]
struct Rec {
    egress: bool,
    ts: u64,
    data: Vec<u8>,
}

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/redis")
}

fn load(name: &str) -> Vec<Rec> {
    let text = std::fs::read_to_string(fixture_dir().join(format!("{name}.jsonl")))
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

fn truth() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("truth.json")).expect("truth.json"),
    )
    .expect("truth parses")
}

/// Feeds records in order (positions computed per direction) and closes.
fn run_with(recs: &[Rec], opts: RedisOptions) -> Vec<DbEvent> {
    let mut p = RedisParser::new(opts);
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
                tid: 7,
            }),
            &mut out,
        );
        pos[d] += r.data.len() as u64;
    }
    p.close(&mut out);
    out
}

fn run(recs: &[Rec]) -> Vec<DbEvent> {
    run_with(recs, RedisOptions::default())
}

fn calls(evs: &[DbEvent]) -> Vec<&DbCall> {
    evs.iter()
        .filter_map(|e| match e {
            DbEvent::Call(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

/// Calls the application asked for (not session-level, not pushes).
fn work(evs: &[DbEvent]) -> Vec<&DbCall> {
    calls(evs)
        .into_iter()
        .filter(|c| !c.session_level && c.method != "PUSH")
        .collect()
}

fn skipped(evs: &[DbEvent]) -> u64 {
    evs.iter()
        .map(|e| match e {
            DbEvent::Skipped { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum()
}

/// `command args...` as one string, for compact assertions.
fn line(c: &DbCall) -> String {
    let mut s = c.method.clone();
    for a in c.detail["args"].as_array().into_iter().flatten() {
        s.push(' ');
        match a {
            Value::String(t) => s.push_str(t),
            other => s.push_str(&other.to_string()),
        }
    }
    s
}

fn no_secret(evs: &[DbEvent]) {
    for c in calls(evs) {
        let hay = [
            c.detail.to_string().into_bytes(),
            c.raw_request.to_vec(),
            c.raw_response.to_vec(),
        ];
        for h in hay {
            assert!(
                !h.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "password leaked in {c:?}"
            );
        }
    }
    for e in evs {
        if let DbEvent::Session { facts, .. } = e {
            assert!(!facts.to_string().contains(PASSWORD));
        }
    }
}

/// redis-py's view of a reply compared with ours: `True` stands for `+OK`, errors lose their
/// code prefix.
fn same_reply(ours: &Value, python: &Value) -> bool {
    match (ours, python) {
        (Value::String(s), Value::Bool(true)) => s == "OK" || s == "PONG",
        (Value::Object(o), Value::Object(p)) if p.contains_key("error") => o["error"]
            .as_str()
            .zip(p["error"].as_str())
            .is_some_and(|(a, b)| a.ends_with(b)),
        (Value::Array(a), Value::Object(p)) => {
            // RESP2 HGETALL: flat array; RESP3: [[k, v]] pairs.
            let flat: Vec<Value> = p.iter().flat_map(|(k, v)| [json!(k), v.clone()]).collect();
            let pairs: Vec<Value> = p.iter().map(|(k, v)| json!([k, v])).collect();
            *a == flat || *a == pairs
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_reply(x, y))
        }
        _ => ours == python,
    }
}

#[test]
fn resp2_basic_matches_redis_py() {
    let evs = run(&load("resp2_basic-0"));
    no_secret(&evs);
    assert_eq!(skipped(&evs), 0);
    let all = calls(&evs);
    let session: Vec<String> = all
        .iter()
        .filter(|c| c.session_level)
        .map(|c| line(c))
        .collect();
    assert_eq!(
        session,
        [
            "AUTH [REDACTED]",
            "CLIENT SETINFO LIB-NAME redis-py",
            "CLIENT SETINFO LIB-VER 8.1.0",
            "SELECT 1"
        ]
    );
    let auth = all[0];
    assert_eq!(
        &auth.raw_request[..],
        b"*2\r\n$4\r\nAUTH\r\n$10\r\n[REDACTED]\r\n"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, DbEvent::Session { facts, .. } if facts["auth"] == "ok"))
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, DbEvent::Session { facts, .. } if facts["db"] == 1))
    );
    let w = work(&evs);
    let t = truth();
    let want = t["resp2_basic"].as_array().expect("truth");
    assert_eq!(w.len(), want.len());
    for (c, t) in w.iter().zip(want) {
        let targs = t["args"].as_array().expect("args");
        assert_eq!(c.method, targs[0].as_str().expect("name"), "{c:?}");
        if c.method == "SET" && targs[1] == "big" {
            assert_eq!(c.detail["args"][1].as_str().map(str::len), Some(70_000));
            continue;
        }
        if c.method == "GET" && targs[1] == "big" {
            assert_eq!(c.detail["reply"].as_str().map(str::len), Some(70_000));
            continue;
        }
        let args: Vec<Value> = targs[1..]
            .iter()
            .map(|a| {
                if let Some(n) = a.as_i64() {
                    json!(n.to_string())
                } else {
                    a.clone()
                }
            })
            .collect();
        assert_eq!(c.detail["args"], Value::Array(args), "{c:?}");
        assert!(same_reply(&c.detail["reply"], &t["result"]), "{c:?} vs {t}");
        assert_eq!(c.detail["resp"], 2);
        assert_eq!(
            c.error.is_some(),
            t["result"].get("error").is_some(),
            "{c:?}"
        );
    }
    // Indexes are request order, marks carry the recorded syscall times.
    let idx: Vec<u64> = all.iter().map(|c| c.index).collect();
    assert_eq!(idx, (0..all.len() as u64).collect::<Vec<_>>());
    assert!(all.iter().all(|c| {
        c.response_first
            .is_some_and(|r| r.ts_ns >= c.request_first.ts_ns)
    }));
}

#[test]
fn resp2_pipeline() {
    let evs = run(&load("resp2_pipeline-0"));
    let w = work(&evs);
    let lines: Vec<String> = w.iter().map(|c| line(c)).collect();
    assert_eq!(
        lines,
        [
            "SET p1 one",
            "GET p1",
            "INCRBY pn 1",
            "INCRBY pn 5",
            "LPUSH pl z",
            "DEL p1 pn pl"
        ]
    );
    let replies: Vec<Value> = w.iter().map(|c| c.detail["reply"].clone()).collect();
    assert_eq!(Value::Array(replies), json!(["OK", "one", 1, 6, 1, 3]));
    // Each call has exactly its own reply bytes.
    assert_eq!(&w[1].raw_response[..], b"$3\r\none\r\n");
    assert_eq!(&w[1].raw_request[..], b"*2\r\n$3\r\nGET\r\n$2\r\np1\r\n");
}

#[test]
fn resp2_transactions() {
    let evs = run(&load("resp2_multi-0"));
    let w = work(&evs);
    let got: Vec<(String, Value, bool)> = w
        .iter()
        .map(|c| {
            (
                line(c),
                c.detail["reply"].clone(),
                c.detail["queued"] == true,
            )
        })
        .collect();
    let want = vec![
        ("MULTI", json!("OK"), false),
        ("SET t1 a", json!("OK"), true),
        ("GET t1", json!("a"), true),
        ("INCRBY tn 1", json!(1), true),
        ("DEL t1 tn", json!(2), true),
        ("EXEC", json!(["OK", "a", 1, 2]), false),
        ("MULTI", json!("OK"), false),
        ("SET t2 x", json!("OK"), true),
        (
            "INCRBY t2 1",
            json!({"error": "ERR value is not an integer or out of range"}),
            true,
        ),
        ("GET t2", json!("x"), true),
        (
            "EXEC",
            json!(["OK", {"error": "ERR value is not an integer or out of range"}, "x"]),
            false,
        ),
        ("MULTI", json!("OK"), false),
        ("SET t3 y", Value::Null, true),
        ("DISCARD", json!("OK"), false),
        ("WATCH w", json!("OK"), false),
        ("MULTI", json!("OK"), false),
        ("SET w 1", Value::Null, true),
        ("EXEC", Value::Null, false),
        ("DEL t2 w", json!(2), false),
    ];
    let want: Vec<(String, Value, bool)> = want
        .into_iter()
        .map(|(a, b, c)| (a.to_owned(), b, c))
        .collect();
    assert_eq!(got, want);
    // Queued calls keep their own wire reply; the distributed error is the call's error.
    assert_eq!(&w[1].raw_response[..], b"+QUEUED\r\n");
    assert_eq!(
        w[8].error.as_deref(),
        Some("ERR value is not an integer or out of range")
    );
    assert!(w[10].error.is_none());
    assert_eq!(w[12].detail["discarded"], true);
    assert_eq!(w[16].detail["aborted"], true);
    let idx: Vec<u64> = calls(&evs).iter().map(|c| c.index).collect();
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    assert_eq!(idx, sorted, "calls are emitted in command order");
}

fn pubsub(name: &str, resp: u8) {
    let evs = run(&load(name));
    no_secret(&evs);
    let w = work(&evs);
    let lines: Vec<String> = w.iter().map(|c| line(c)).collect();
    assert_eq!(
        lines,
        [
            "SUBSCRIBE ch1 ch2",
            "PSUBSCRIBE news.*",
            "PING",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE"
        ]
    );
    assert_eq!(
        w[0].detail["reply"],
        json!([["subscribe", "ch1", 1], ["subscribe", "ch2", 2]])
    );
    assert_eq!(w[1].detail["reply"], json!([["psubscribe", "news.*", 3]]));
    // RESP2 answers PING in subscribed mode with an array, RESP3 with +PONG.
    let pong = if resp == 2 {
        json!(["pong", ""])
    } else {
        json!("PONG")
    };
    assert_eq!(w[2].detail["reply"], pong);
    assert_eq!(
        w[3].detail["reply"],
        json!([["unsubscribe", "ch2", 2], ["unsubscribe", "ch1", 1]])
    );
    assert_eq!(w[4].detail["reply"], json!([["punsubscribe", "news.*", 0]]));
    let pushes: Vec<&Value> = calls(&evs)
        .into_iter()
        .filter(|c| c.method == "PUSH")
        .map(|c| &c.detail["reply"])
        .collect();
    assert_eq!(
        pushes,
        [
            &json!(["message", "ch1", "m1"]),
            &json!(["pmessage", "news.*", "news.x", "m2"]),
            &json!(["message", "ch2", {"base64": "/w=="}]),
        ]
    );
    for c in calls(&evs).iter().filter(|c| c.method == "PUSH") {
        assert!(c.raw_request.is_empty());
        assert_eq!(c.detail["resp"], resp);
    }
}

#[test]
fn resp2_pubsub() {
    pubsub("resp2_pubsub-0", 2);
}

#[test]
fn resp3_pubsub() {
    pubsub("resp3_pubsub-0", 3);
}

#[test]
fn resp3_types() {
    let evs = run(&load("resp3_basic-0"));
    no_secret(&evs);
    let all = calls(&evs);
    assert_eq!(line(all[0]), "HELLO 3 AUTH default [REDACTED]");
    assert!(all[0].session_level);
    assert!(
        !all[0]
            .raw_request
            .windows(15)
            .any(|w| w == PASSWORD.as_bytes())
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, DbEvent::Session { facts, .. }
        if facts["hello"]["version"] == "7.0.15" && facts["resp"] == 3 && facts["auth"] == "ok"))
    );
    let w = work(&evs);
    let reply = |l: &str| -> Value {
        w.iter()
            .find(|c| line(c) == l)
            .map(|c| c.detail["reply"].clone())
            .unwrap_or_else(|| panic!("no call {l}"))
    };
    assert_eq!(reply("HGETALL h3"), json!([["a", "1"], ["b", "2"]]));
    assert_eq!(reply("SMEMBERS s3"), json!(["x", "y"]));
    assert_eq!(reply("ZSCORE z3 m"), json!(1.5));
    assert_eq!(reply("GET nope"), Value::Null);
    assert_eq!(
        reply("DEBUG PROTOCOL bignum"),
        json!({"bignum": "1234567999999999999999999999999999999"})
    );
    assert_eq!(
        reply("DEBUG PROTOCOL map"),
        json!([[0, false], [1, true], [2, false]])
    );
    assert_eq!(
        reply("DEBUG PROTOCOL verbatim"),
        json!({"verbatim": "txt", "text": "This is a verbatim\nstring"})
    );
    assert_eq!(reply("DEBUG PROTOCOL true"), json!(true));
    assert_eq!(
        reply("DEBUG PROTOCOL push"),
        json!("Some real reply following the push reply")
    );
    assert_eq!(
        reply("DEBUG PROTOCOL attrib"),
        json!({"attributes": [["key-popularity", ["key:123", 90]]],
               "value": "Some real reply following the attribute"})
    );
    assert!(w.iter().all(|c| c.detail["resp"] == 3));
    let push: Vec<&DbCall> = calls(&evs)
        .into_iter()
        .filter(|c| c.method == "PUSH")
        .collect();
    assert_eq!(push.len(), 1);
    assert_eq!(push[0].detail["push"], "server-cpu-usage");
    assert_eq!(push[0].detail["reply"], json!(["server-cpu-usage", 42]));
}

#[test]
fn resp3_tracking_invalidation() {
    let evs = run(&load("resp3_tracking-0"));
    let push: Vec<&DbCall> = calls(&evs)
        .into_iter()
        .filter(|c| c.method == "PUSH")
        .collect();
    // After the other client's SET, and after our own DEL.
    assert_eq!(push.len(), 2);
    assert_eq!(push[0].detail["reply"], json!(["invalidate", ["tk"]]));
    let gets: Vec<Value> = work(&evs)
        .iter()
        .filter(|c| c.method == "GET")
        .map(|c| c.detail["reply"].clone())
        .collect();
    assert_eq!(gets, [json!("v1"), json!("v2")]);
    assert!(
        calls(&evs)
            .iter()
            .any(|c| line(c) == "CLIENT TRACKING on" && c.session_level)
    );
}

#[test]
fn asyncio_client() {
    let evs = run(&load("asyncio-0"));
    let w = work(&evs);
    let got: Vec<(String, Value)> = w
        .iter()
        .map(|c| (line(c), c.detail["reply"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("SET a1 async".to_owned(), json!("OK")),
            ("GET a1".to_owned(), json!("async")),
            ("INCRBY an 1".to_owned(), json!(1)),
            ("GET a1".to_owned(), json!("async")),
            ("DEL a1 an".to_owned(), json!(2)),
        ]
    );
}

#[test]
fn auth_failure() {
    let evs = run(&load("auth_fail-0"));
    no_secret(&evs);
    let all = calls(&evs);
    assert_eq!(line(all[0]), "AUTH [REDACTED]");
    assert!(
        all[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("WRONGPASS"))
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, DbEvent::Session { facts, .. } if facts["auth"] == "failed"))
    );
}

#[test]
fn inline_commands() {
    let evs = run(&load("inline-0"));
    no_secret(&evs);
    let all = calls(&evs);
    let got: Vec<(String, Value)> = all
        .iter()
        .map(|c| (line(c), c.detail["reply"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("AUTH [REDACTED]".to_owned(), json!("OK")),
            ("PING".to_owned(), json!("PONG")),
            ("SET k a b".to_owned(), json!("OK")),
            ("GET k".to_owned(), json!("a b")),
            ("DEL k".to_owned(), json!(1)),
        ]
    );
    assert_eq!(&all[0].raw_request[..], b"AUTH [REDACTED]\r\n");
    assert_eq!(all[2].detail["args"], json!(["k", "a b"]));
}

#[test]
fn redaction_rules() {
    let cmd = |args: &[&str]| {
        let parts: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        super::resp::encode_command(&parts)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (cmd(&["AUTH", "user", "pw1"]), "AUTH user [REDACTED]"),
        (
            cmd(&["hello", "3", "auth", "u", "pw1", "SETNAME", "n"]),
            "HELLO 3 auth u [REDACTED] SETNAME n",
        ),
        (
            cmd(&["CONFIG", "SET", "requirepass", "pw1", "maxmemory", "1"]),
            "CONFIG SET requirepass [REDACTED] maxmemory 1",
        ),
        (
            cmd(&["ACL", "SETUSER", "bob", "on", ">pw1", "~*"]),
            "ACL SETUSER bob on [REDACTED] ~*",
        ),
        (
            cmd(&["MIGRATE", "h", "1", "k", "0", "5", "AUTH2", "u", "pw1"]),
            "MIGRATE h 1 k 0 5 AUTH2 u [REDACTED]",
        ),
    ];
    for (wire, want) in cases {
        let evs = run(&[
            Rec {
                egress: true,
                ts: 1,
                data: wire,
            },
            Rec {
                egress: false,
                ts: 2,
                data: b"+OK\r\n".to_vec(),
            },
        ]);
        let c = calls(&evs)[0];
        assert_eq!(line(c), want);
        assert!(!c.raw_request.windows(3).any(|w| w == b"pw1"), "{c:?}");
        // The rewritten frame is valid RESP with the same arguments.
        let evs2 = run(&[
            Rec {
                egress: true,
                ts: 1,
                data: c.raw_request.to_vec(),
            },
            Rec {
                egress: false,
                ts: 2,
                data: b"+OK\r\n".to_vec(),
            },
        ]);
        assert_eq!(line(calls(&evs2)[0]), want);
    }
}

#[test]
fn caps_truncate_with_markers() {
    let evs = run_with(&load("resp2_basic-0"), RedisOptions { max_bytes: 1000 });
    let w = work(&evs);
    let get_big = w.iter().find(|c| line(c) == "GET big").expect("GET big");
    assert_eq!(get_big.detail["reply"]["truncated"], true);
    assert_eq!(get_big.detail["reply"]["size"], 70_000);
    assert_eq!(get_big.detail["truncated"], true);
    assert!(get_big.raw_truncated);
    assert_eq!(get_big.raw_response.len(), 1000);
    // Calls after the big value are still right.
    assert_eq!(w.last().map(|c| line(c)), Some("NOSUCHCOMMAND x".into()));
}

fn cmp_key(c: &DbCall) -> (String, String, String) {
    (
        c.method.clone(),
        c.detail.to_string(),
        format!("{:?}{:?}{}", c.raw_request, c.raw_response, c.session_level),
    )
}

const ALL: &[&str] = &[
    "resp2_basic-0",
    "resp2_pipeline-0",
    "resp2_multi-0",
    "resp2_pubsub-0",
    "resp3_pubsub-0",
    "resp3_basic-0",
    "resp3_tracking-0",
    "asyncio-0",
    "auth_fail-0",
    "inline-0",
];

/// Re-chunks both directions at `cuts` (fractions), all at ts 0, egress first then ingress
/// or interleaved.
fn resegment(recs: &[Rec], cuts: &[usize], ingress_first: bool) -> Vec<Rec> {
    let mut out = Vec::new();
    let dirs = if ingress_first {
        [false, true]
    } else {
        [true, false]
    };
    for egress in dirs {
        let bytes: Vec<u8> = recs
            .iter()
            .filter(|r| r.egress == egress)
            .flat_map(|r| r.data.clone())
            .collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            out.push(Rec {
                egress,
                ts: 0,
                data: bytes[w[0]..w[1]].to_vec(),
            });
        }
    }
    out
}

fn flat_ts(recs: &[Rec]) -> Vec<Rec> {
    recs.iter().map(|r| Rec { ts: 0, ..r.clone() }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any segmentation, either direction first: the same calls.
    #[test]
    fn segmentation_does_not_matter(
        which in 0..ALL.len(),
        cuts in proptest::collection::vec(0usize..100_000, 0..40),
        ingress_first in any::<bool>(),
    ) {
        let recs = load(ALL[which]);
        let base = run(&flat_ts(&recs));
        let other = run(&resegment(&recs, &cuts, ingress_first));
        // Pushes are reported when read, calls when answered: compare as sorted lists.
        let mut a: Vec<_> = calls(&base).into_iter().map(cmp_key).collect();
        let mut b: Vec<_> = calls(&other).into_iter().map(cmp_key).collect();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    /// Joining mid-session (tracing starts at an arbitrary record, both directions) and losing
    /// records: never a wrong pair — every answered call is one of the full run's calls.
    #[test]
    fn attach_and_gaps_never_mispair(
        which in 0..ALL.len(),
        attach_at in 0usize..30,
        lose in proptest::collection::vec(0usize..200, 0..3),
    ) {
        let recs = load(ALL[which]);
        let full = run(&recs);
        let known: Vec<(String, String)> = calls(&full)
            .iter()
            .map(|c| (line(c), c.detail["reply"].to_string()))
            .collect();
        let mut p = RedisParser::default();
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        for (k, r) in recs.iter().enumerate() {
            let d = usize::from(!r.egress);
            let n = r.data.len() as u64;
            if k < attach_at {
                pos[d] += n;
                continue;
            }
            let seg = if lose.contains(&k) {
                Segment::Gap { pos: pos[d], len: n }
            } else {
                Segment::Data(Chunk { pos: pos[d], data: Bytes::from(r.data.clone()), ts_ns: r.ts, tid: 1 })
            };
            p.feed(r.egress, seg, &mut out);
            pos[d] += n;
        }
        p.close(&mut out);
        for c in calls(&out) {
            if c.response_first.is_none() || c.method == "PUSH" || c.detail["queued"] == true {
                continue;
            }
            let key = (line(c), c.detail["reply"].to_string());
            prop_assert!(known.contains(&key), "mispaired {:?}", key);
        }
    }

    /// Arbitrary bytes never panic, in any segmentation.
    #[test]
    fn garbage_never_panics(
        chunks in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..40),
        resp_like in any::<bool>(),
    ) {
        let mut p = RedisParser::default();
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        for (i, (egress, mut data)) in chunks.into_iter().enumerate() {
            if resp_like && !data.is_empty() {
                // Bias towards RESP-ish bytes.
                const ALPHABET: &[u8] = b"*$:+-%>~_#,(!=|\r\n0123456789abc";
                for b in &mut data {
                    *b = ALPHABET[usize::from(*b) % ALPHABET.len()];
                }
            }
            let d = usize::from(!egress);
            let n = data.len() as u64;
            let seg = if i % 7 == 6 {
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

#[test]
fn mid_session_attach_reports_missing_and_resyncs() {
    let recs = load("resp2_basic-0");
    // Skip the handshake: the first 4 commands and their replies.
    let mut pos = [0u64; 2];
    let mut p = RedisParser::default();
    let mut out = Vec::new();
    let (mut e, mut i) = (0, 0);
    for r in &recs {
        let d = usize::from(!r.egress);
        let skip = if r.egress {
            e += 1;
            e <= 4
        } else {
            i += 1;
            i <= 4
        };
        if !skip {
            p.feed(
                r.egress,
                Segment::Data(Chunk {
                    pos: pos[d],
                    data: Bytes::from(r.data.clone()),
                    ts_ns: r.ts,
                    tid: 1,
                }),
                &mut out,
            );
        }
        pos[d] += r.data.len() as u64;
    }
    p.close(&mut out);
    assert!(out.iter().any(
        |ev| matches!(ev, DbEvent::Session { missing, .. } if missing.iter().any(|m| m == "auth"))
    ));
    let full = run(&recs);
    let want: Vec<String> = work(&full).iter().map(|c| line(c)).collect();
    let got: Vec<String> = work(&out).iter().map(|c| line(c)).collect();
    assert_eq!(got, want);
}

#[test]
fn lost_reply_bytes_do_not_shift_pairs() {
    // Pipeline of 3, the ingress chunk holding the first two replies is lost.
    let mut p = RedisParser::default();
    let mut out = Vec::new();
    let cmds = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n*2\r\n$3\r\nGET\r\n$1\r\nc\r\n";
    p.feed(
        true,
        Segment::Data(Chunk {
            pos: 0,
            data: Bytes::from_static(cmds),
            ts_ns: 10,
            tid: 1,
        }),
        &mut out,
    );
    p.feed(false, Segment::Gap { pos: 0, len: 14 }, &mut out);
    p.feed(
        false,
        Segment::Data(Chunk {
            pos: 14,
            data: Bytes::from_static(b"$1\r\nC\r\n"),
            ts_ns: 20,
            tid: 1,
        }),
        &mut out,
    );
    p.feed(
        true,
        Segment::Data(Chunk {
            pos: cmds.len() as u64,
            data: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            ts_ns: 30,
            tid: 1,
        }),
        &mut out,
    );
    p.feed(
        false,
        Segment::Data(Chunk {
            pos: 21,
            data: Bytes::from_static(b"+PONG\r\n"),
            ts_ns: 40,
            tid: 1,
        }),
        &mut out,
    );
    p.close(&mut out);
    let got: Vec<(String, Value)> = calls(&out)
        .iter()
        .map(|c| (line(c), c.detail["reply"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET a".to_owned(), Value::Null),
            ("GET b".to_owned(), Value::Null),
            ("GET c".to_owned(), Value::Null),
            ("PING".to_owned(), json!("PONG")),
        ]
    );
}
