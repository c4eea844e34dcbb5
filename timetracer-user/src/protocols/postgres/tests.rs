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
    let fe: Vec<u8> = recs.iter().filter(|r| r.0).flat_map(|r| r.1.clone()).collect();
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
