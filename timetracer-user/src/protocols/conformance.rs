//! The protocol conformance suite: every protocol in [`REGISTRY`] goes through the same
//! properties, over real captured conversations (`tests/fixtures/<protocol>/`; HTTP's are
//! written out below):
//! - the registry detects it from the first bytes (and no other protocol is chosen);
//! - any split of the same bytes into segments gives the same events;
//! - a gap or garbage never panics and never goes unseen: the events differ from the clean
//!   run's (a `Skipped` count, a call without its response, a message marked incomplete);
//! - arbitrary bytes and gaps never panic;
//! - the recording's limits are honoured: nothing stored grows past `max_body`, and what was
//!   cut is marked truncated.
//!
//! The host tests run in the `hosttest` profile (overflow checks and debug assertions on), so
//! arithmetic overflow in a parser fails these properties too.
use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;

use super::db::DbEvent;
use super::http::types::{HttpEvent, HttpMessage, Side};
use super::{Limits, ProtoEvent, Protocol, REGISTRY, Spec};
use crate::reassembly::{Chunk, Segment};

/// One direction's message as it was written: (egress, bytes).
type Msg = (bool, Vec<u8>);

struct Conversation {
    name: String,
    side: Side,
    msgs: Vec<Msg>,
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `.bin` captures: `>`/`<`, u32 big-endian length, bytes.
fn load_bin(path: &str) -> Vec<Msg> {
    let b = std::fs::read(fixtures().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= b.len() {
        let n = u32::from_be_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as usize;
        out.push((b[i] == b'>', b[i + 5..i + 5 + n].to_vec()));
        i += 5 + n;
    }
    out
}

/// `.jsonl` captures: `{"egress": bool, "b64": ...}` per write/read.
fn load_jsonl(path: &str) -> Vec<Msg> {
    let text =
        std::fs::read_to_string(fixtures().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let data = base64::engine::general_purpose::STANDARD
                .decode(v["b64"].as_str().expect("b64"))
                .expect("base64");
            (v["egress"].as_bool().expect("egress"), data)
        })
        .collect()
}

/// HTTP/1.1 keep-alive with a `Content-Length` body, a chunked response, a pipelined pair and
/// a body larger than the limits below; seen from the client and from the server.
fn http_conversations() -> Vec<Conversation> {
    let big = "x".repeat(3000);
    let requests: Vec<Vec<u8>> = vec![
        b"GET /users/1 HTTP/1.1\r\nHost: api\r\nAccept: */*\r\n\r\n".to_vec(),
        format!(
            "POST /echo HTTP/1.1\r\nHost: api\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .into_bytes(),
        b"GET /a HTTP/1.1\r\nHost: api\r\n\r\nGET /b HTTP/1.1\r\nHost: api\r\n\r\n".to_vec(),
    ];
    let responses: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\": 1234}\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
            .to_vec(),
    ];
    let mut out = Vec::new();
    for side in [Side::Client, Side::Server] {
        // The client writes requests; the server reads them.
        let req_egress = side == Side::Client;
        let msgs = requests
            .iter()
            .zip(&responses)
            .flat_map(|(q, r)| [(req_egress, q.clone()), (!req_egress, r.clone())])
            .collect();
        out.push(Conversation {
            name: format!("http-{side:?}"),
            side,
            msgs,
        });
    }
    out
}

fn conversations(p: Protocol) -> Vec<Conversation> {
    let client = |name: &str, msgs| Conversation {
        name: name.to_owned(),
        side: Side::Client,
        msgs,
    };
    match p {
        Protocol::Http => http_conversations(),
        Protocol::Postgres => ["pg_asyncpg", "pg_psycopg2", "pg_psycopg3"]
            .iter()
            .map(|n| client(n, load_bin(&format!("postgres/{n}.bin"))))
            .collect(),
        Protocol::Mysql => ["my_pymysql", "my_connector_prepared"]
            .iter()
            .map(|n| client(n, load_bin(&format!("mysql/{n}.bin"))))
            .collect(),
        Protocol::Redis => [
            "resp2_pipeline-0",
            "resp2_basic-0",
            "resp3_basic-0",
            "asyncio-0",
        ]
        .iter()
        .map(|n| client(n, load_jsonl(&format!("redis/{n}.jsonl"))))
        .collect(),
        Protocol::Mongodb => ["crud-1", "auth-1", "compressed-1"]
            .iter()
            .map(|n| client(n, load_jsonl(&format!("mongodb/{n}.jsonl"))))
            .collect(),
    }
}

/// What is fed for one message: its bytes cut at `cuts`, or a gap over `gap` (start, len).
struct Feed<'a> {
    cuts: &'a dyn Fn(usize, usize) -> Vec<usize>,
    /// (message index, offset, length) replaced by a gap.
    gap: Option<(usize, usize, usize)>,
    /// (message index, bytes) inserted before that message, in its direction.
    garbage: Option<(usize, Vec<u8>)>,
}

fn run(spec: &Spec, limits: &Limits, c: &Conversation, f: &Feed<'_>) -> Vec<ProtoEvent> {
    let mut parser = (spec.parser)(c.side, limits);
    let mut out = Vec::new();
    let mut pos = [0u64; 2];
    for (i, (egress, data)) in c.msgs.iter().enumerate() {
        let d = usize::from(*egress);
        // Every message has its own time and thread: marks are the same whatever the split.
        let ts_ns = 1_000 * (i as u64 + 1);
        let tid = 100 + u32::from(*egress);
        let mut data = data.clone();
        if let Some((gi, g)) = &f.garbage
            && *gi == i
        {
            let mut with = g.clone();
            with.extend_from_slice(&data);
            data = with;
        }
        let mut cuts = (f.cuts)(i, data.len());
        let gap = f.gap.filter(|g| g.0 == i && g.1 < data.len()).map(|g| {
            let len = g.2.clamp(1, data.len() - g.1);
            (g.1, g.1 + len)
        });
        if let Some((a, b)) = gap {
            cuts.extend([a, b]);
        }
        cuts.retain(|x| *x > 0 && *x < data.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        for end in cuts.into_iter().chain([data.len()]) {
            let seg = if gap.is_some_and(|(a, _)| a == start) {
                Segment::Gap {
                    pos: pos[d],
                    len: (end - start) as u64,
                }
            } else {
                Segment::Data(Chunk {
                    pos: pos[d],
                    data: Bytes::copy_from_slice(&data[start..end]),
                    ts_ns,
                    tid,
                })
            };
            parser.feed(*egress, seg, &mut out);
            pos[d] += (end - start) as u64;
            start = end;
        }
    }
    parser.close(1_000_000_000, &mut out);
    out
}

fn whole(_: usize, _: usize) -> Vec<usize> {
    Vec::new()
}

fn clean(spec: &Spec, limits: &Limits, c: &Conversation) -> Vec<ProtoEvent> {
    run(
        spec,
        limits,
        c,
        &Feed {
            cuts: &whole,
            gap: None,
            garbage: None,
        },
    )
}

fn all() -> Vec<(&'static Spec, Conversation)> {
    REGISTRY
        .iter()
        .flat_map(|s| conversations(s.protocol).into_iter().map(move |c| (*s, c)))
        .collect()
}

#[test]
fn every_protocol_has_conversations_that_produce_calls() {
    for spec in REGISTRY {
        let convs = conversations(spec.protocol);
        assert!(!convs.is_empty(), "{}: no conversation", spec.name);
        for c in &convs {
            let ev = clean(spec, &Limits::default(), c);
            let calls = ev
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        ProtoEvent::Http(HttpEvent::Exchange(_)) | ProtoEvent::Db(DbEvent::Call(_))
                    )
                })
                .count();
            assert!(
                calls >= 2,
                "{}: {} calls from {:?}",
                spec.name,
                calls,
                c.name
            );
            let skipped: u64 = ev.iter().filter_map(ProtoEvent::skipped_bytes).sum();
            assert_eq!(skipped, 0, "{}: a clean capture skipped bytes", c.name);
        }
    }
}

#[test]
fn the_registry_detects_each_protocol_from_its_first_bytes() {
    for (spec, c) in all() {
        let first = |egress: bool| -> Vec<u8> {
            let mut b: Vec<u8> = c
                .msgs
                .iter()
                .filter(|m| m.0 == egress)
                .flat_map(|m| m.1.iter().copied())
                .collect();
            b.truncate(4096);
            b
        };
        let got = super::detect(&first(true), &first(false), c.side);
        assert_eq!(got, super::Detection::Found(spec), "{}", c.name);
    }
}

/// Every stored byte of an event: HTTP bodies, database raw wire bytes.
fn stored(e: &ProtoEvent) -> Vec<(usize, bool)> {
    let msg = |m: &HttpMessage| (m.body.len(), m.truncated);
    match e {
        ProtoEvent::Http(HttpEvent::Exchange(x)) => std::iter::once(msg(&x.request))
            .chain(x.response.as_ref().map(msg))
            .collect(),
        ProtoEvent::Db(DbEvent::Call(c)) => vec![
            (c.raw_request.len(), c.raw_truncated),
            (c.raw_response.len(), c.raw_truncated),
        ],
        _ => Vec::new(),
    }
}

#[test]
fn limits_are_honoured_and_cuts_are_marked() {
    let limits = Limits { max_body: 64 };
    for spec in REGISTRY {
        let mut over = 0;
        for c in conversations(spec.protocol) {
            let full = clean(spec, &Limits::default(), &c);
            let cut = clean(spec, &limits, &c);
            for (e, f) in cut.iter().zip(&full) {
                for ((n, truncated), (was, _)) in stored(e).into_iter().zip(stored(f)) {
                    assert!(n <= 64, "{}: {n} bytes stored over a 64-byte limit", c.name);
                    assert!(
                        was <= 64 || truncated,
                        "{}: a {was}-byte message cut to {n} bytes is not marked truncated",
                        c.name
                    );
                    over += usize::from(was > 64);
                }
            }
        }
        assert!(over > 0, "{}: no message bigger than the limit", spec.name);
    }
}

/// The raw bytes of a database call.
fn raw(e: &ProtoEvent) -> Option<(usize, usize)> {
    match e {
        ProtoEvent::Db(DbEvent::Call(c)) => Some((c.raw_request.len(), c.raw_response.len())),
        _ => None,
    }
}

/// The wire bytes of a database call.
fn wire(e: &ProtoEvent) -> Option<(Bytes, Bytes)> {
    match e {
        ProtoEvent::Db(DbEvent::Call(c)) => Some((c.raw_request.clone(), c.raw_response.clone())),
        _ => None,
    }
}

/// Redaction hooks on real conversations: with a broad policy (common column / field names
/// secret, every Redis key matching), each hook redacts something, keeps every wire message's
/// length, changes no more bytes when run again, and a disabled policy changes nothing. Also
/// when the bytes were cut at a small capture cap.
#[test]
fn redaction_hooks_keep_lengths_and_are_idempotent() {
    use super::redact::Redaction;
    let mut broad = crate::redact::RedactionPolicy::default();
    broad.add_configured(
        "id,name,value,note,title,email,v,k,x,n,a,b,c,count,data,body,msg,key,field,val",
        "*",
        &[],
    );
    for spec in REGISTRY {
        let Redaction::Hook(_) = spec.redact else {
            continue;
        };
        let mut applied = 0;
        for c in conversations(spec.protocol) {
            for limits in [Limits::default(), Limits { max_body: 64 }] {
                for e in clean(spec, &limits, &c) {
                    let mut once = e.clone();
                    applied += spec.redact.apply(&mut once, &broad).values;
                    // A compressed MongoDB message holding a secret cannot be changed in place:
                    // it keeps only its header (documented).
                    let compressed = matches!(&once, ProtoEvent::Db(DbEvent::Call(c))
                        if c.detail.get("compressed").is_some());
                    if !compressed {
                        assert_eq!(raw(&once), raw(&e), "{}: lengths changed", c.name);
                    }
                    let mut twice = once.clone();
                    spec.redact.apply(&mut twice, &broad);
                    assert_eq!(
                        wire(&twice),
                        wire(&once),
                        "{}: a second run changed more bytes",
                        c.name
                    );
                    let mut off = e.clone();
                    spec.redact
                        .apply(&mut off, &crate::redact::RedactionPolicy::disabled());
                    assert_eq!(off, e, "{}: --no-redact changed an event", c.name);
                }
            }
        }
        assert!(
            applied > 0,
            "{}: no value redacted in any conversation",
            spec.name
        );
    }
}

fn cut_strategy() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..4096, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_events(which in 0usize..64, cuts in proptest::collection::vec(cut_strategy(), 64)) {
        let convs = all();
        let (spec, c) = &convs[which % convs.len()];
        let expected = clean(spec, &Limits::default(), c);
        let split = |i: usize, len: usize| -> Vec<usize> {
            cuts[i % cuts.len()].iter().map(|x| x % len.max(1)).collect()
        };
        let got = run(spec, &Limits::default(), c, &Feed { cuts: &split, gap: None, garbage: None });
        prop_assert_eq!(got, expected, "{}", c.name);
    }

    #[test]
    fn a_gap_is_never_unseen(which in 0usize..64, msg in 0usize..1000, off in 0usize..4096, len in 1usize..512) {
        let convs = all();
        let (spec, c) = &convs[which % convs.len()];
        let i = msg % c.msgs.len();
        let off = off % c.msgs[i].1.len().max(1);
        let expected = clean(spec, &Limits::default(), c);
        let got = run(spec, &Limits::default(), c, &Feed { cuts: &whole, gap: Some((i, off, len)), garbage: None });
        prop_assert_ne!(got, expected, "{}: a gap in message {} went unseen", c.name, i);
    }

    #[test]
    fn garbage_is_never_unseen(which in 0usize..64, msg in 0usize..1000, junk in proptest::collection::vec(any::<u8>(), 1..300)) {
        let convs = all();
        let (spec, c) = &convs[which % convs.len()];
        let i = msg % c.msgs.len();
        let expected = clean(spec, &Limits::default(), c);
        let got = run(spec, &Limits::default(), c, &Feed { cuts: &whole, gap: None, garbage: Some((i, junk)) });
        prop_assert_ne!(got, expected, "{}: garbage before message {} went unseen", c.name, i);
    }

    #[test]
    fn arbitrary_bytes_and_gaps_never_panic(
        which in 0usize..8,
        side in any::<bool>(),
        segs in proptest::collection::vec((any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200)), 0..40),
    ) {
        let spec = REGISTRY[which % REGISTRY.len()];
        let side = if side { Side::Client } else { Side::Server };
        let mut p = (spec.parser)(side, &Limits { max_body: 50 });
        let mut out = Vec::new();
        let mut pos = [0u64; 2];
        for (egress, gap, data) in segs {
            let d = usize::from(egress);
            let n = if gap { data.len().max(1) } else { data.len() } as u64;
            let seg = if gap {
                Segment::Gap { pos: pos[d], len: n }
            } else {
                Segment::Data(Chunk { pos: pos[d], data: Bytes::from(data), ts_ns: 1, tid: 1 })
            };
            p.feed(egress, seg, &mut out);
            pos[d] += n;
        }
        p.close(2, &mut out);
        for e in &out {
            for (n, _) in stored(e) {
                prop_assert!(n <= 50);
            }
        }
    }
}
