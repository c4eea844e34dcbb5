//! What the fuzz targets (`fuzz_targets/*.rs`) share: the input framings, each entry point
//! driven the way the product drives it, and the seed corpora made from the repository's
//! recorded fixtures (`fuzz-seeds`, run by `cargo xtask fuzz`).
//!
//! Every target is a thin `fuzz_target!` over one function here, so a crash input found by
//! libFuzzer replays in a plain unit test of the crate the bug lives in (docs/reliability.md).
//!
//! The input framing of the protocol targets is ours, not `arbitrary`'s, so that the seeds are
//! the real captures (`tests/fixtures/<proto>/`) byte for byte: a recorded exchange is a valid
//! input, and libFuzzer mutates from there.
#![expect(
    unused_crate_dependencies,
    reason = "libfuzzer-sys is for the targets only: the seed writer links this library, and \
              with libfuzzer-sys it would get libFuzzer's main"
)]
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use timetracer::cassette::format::Cassette;
use timetracer::cassette::reader;
use timetracer::protocols::http::types::{HttpEvent, HttpMessage, Side, StartLine};
use timetracer::protocols::{Limits, ProtoEvent, Protocol};
use timetracer::reassembly::{Chunk, Segment, Stream};
use timetracer::redact::RedactionPolicy;
use timetracer::replay::ledger::{Destination, Journal, RecordedCall, mocked_protocol};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub mod seeds;

/// Bytes kept of each body by the protocol targets: small, so that the truncation paths run
/// as often as the complete ones.
pub const FUZZ_MAX_BODY: usize = 4096;

/// Largest decompressed cassette the reader target accepts (the CLI's cap is 256 MiB; a
/// smaller one keeps each execution fast and inside libFuzzer's RSS limit, and exercises the
/// same "too large" path).
pub const FUZZ_MAX_CASSETTE: u64 = 4 << 20;

/// One step of a protocol target's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Bytes of one direction; `egress` = written by the traced process.
    Data { egress: bool, bytes: &'a [u8] },
    /// `len` bytes of one direction the capture lost.
    Gap { egress: bool, len: u64 },
}

/// Frame header flags: bit 0 egress, bit 1 gap.
const EGRESS: u8 = 1;
const GAP: u8 = 2;

/// Splits a protocol target's input: `[flags: u8][len: u16 LE][len bytes]`, repeated; a gap
/// frame has no bytes (its length is the lost byte count). A short last frame takes what is
/// left, so every input means something.
#[must_use]
pub fn frames(mut data: &[u8]) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    while let [flags, rest @ ..] = data {
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &rest[..0]),
        };
        let egress = flags & EGRESS != 0;
        if flags & GAP != 0 {
            out.push(Frame::Gap {
                egress,
                len: len as u64,
            });
            data = rest;
        } else {
            let n = len.min(rest.len());
            out.push(Frame::Data {
                egress,
                bytes: &rest[..n],
            });
            data = &rest[n..];
        }
    }
    out
}

/// The inverse of [`frames`] for data frames (the seeds): one frame per recorded read.
pub fn push_frame(out: &mut Vec<u8>, egress: bool, bytes: &[u8]) {
    for part in bytes.chunks(usize::from(u16::MAX)) {
        out.push(if egress { EGRESS } else { 0 });
        out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(part);
    }
}

/// The redaction policy the protocol targets run: the defaults plus a configured key and
/// Redis pattern, as `timetracer.toml` would add them, so every hook has work to do.
fn policy() -> &'static RedactionPolicy {
    static P: OnceLock<RedactionPolicy> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = RedactionPolicy::default();
        p.add_configured("name,score", "session:*,user:*", &["*token*".to_owned()]);
        p
    })
}

/// Feeds one connection's frames to `protocol`'s parser as the connection layer does: the
/// registry's detection on the first bytes of each direction, the spec's parser built with
/// the recording's limits, in-order segments (data and gaps, positions continuous per
/// direction), then close; every event goes through the protocol's redaction hook (the
/// database protocols) or the cassette builder's header/target/body redaction (HTTP).
/// The first input byte picks the side for protocols parsed on both (HTTP).
pub fn run_protocol(protocol: Protocol, data: &[u8]) {
    let spec = protocol.spec();
    let (side, data) = match (spec.sides, data) {
        ([only], d) => (*only, d),
        (_, [b, rest @ ..]) => (
            if b & 1 == 0 {
                Side::Server
            } else {
                Side::Client
            },
            rest,
        ),
        (_, []) => return,
    };
    let frames = frames(data);
    // Detection reads the first bytes seen of each direction; its answer does not gate the
    // parser here (the parser must survive any bytes, whatever detection would say).
    let first = |eg: bool| {
        frames
            .iter()
            .find_map(|f| match f {
                Frame::Data { egress, bytes } if *egress == eg => Some(*bytes),
                _ => None,
            })
            .unwrap_or_default()
    };
    let _ = (spec.detect)(first(true), first(false), side);
    let _ = timetracer::protocols::detect(first(true), first(false), side);

    let mut parser = (spec.parser)(
        side,
        &Limits {
            max_body: FUZZ_MAX_BODY,
        },
    );
    let mut pos = [0u64; 2];
    let mut events = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let ts_ns = i as u64 * 1000;
        let (egress, seg) = match *f {
            Frame::Data { egress, bytes } => {
                let p = &mut pos[usize::from(egress)];
                let seg = Segment::Data(Chunk {
                    pos: *p,
                    data: Bytes::copy_from_slice(bytes),
                    ts_ns,
                    tid: 7,
                });
                *p += bytes.len() as u64;
                (egress, seg)
            }
            Frame::Gap { egress, len } => {
                let p = &mut pos[usize::from(egress)];
                let seg = Segment::Gap { pos: *p, len };
                *p += len;
                (egress, seg)
            }
        };
        parser.feed(egress, seg, &mut events);
        drain(&mut events);
    }
    parser.close(frames.len() as u64 * 1000, &mut events);
    drain(&mut events);
}

/// What leaves the connection layer: each event redacted.
fn drain(events: &mut Vec<ProtoEvent>) {
    for mut e in events.drain(..) {
        match &mut e {
            ProtoEvent::Db(timetracer::protocols::db::DbEvent::Call(call)) => {
                let hook = call.protocol.spec().redact;
                hook.apply(&mut e, policy());
            }
            ProtoEvent::Http(HttpEvent::Exchange(x)) => {
                redact_http(&x.request);
                for m in x.interim.iter().chain(&x.response) {
                    redact_http(m);
                }
            }
            _ => {}
        }
        // Every event is serialisable into the cassette's detail.
        let _ = format!("{e:?}");
    }
}

/// The cassette builder's redaction of one HTTP message (`cassette/build.rs`).
fn redact_http(m: &HttpMessage) {
    let p = policy();
    let mut list: Vec<(String, String)> = m
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    p.redact_headers(&mut list);
    if let StartLine::Request { target, .. } = &m.start {
        let _ = p.redact_target(target);
    }
    let _ = p.redact_body(&m.body, m.header_str("content-type"));
}

/// One operation on a reassembly stream.
#[derive(Arbitrary, Clone, Debug)]
pub enum StreamOp {
    /// A chunk at `base + offset` of `len` bytes (contents derived from the position).
    Push { offset: u16, len: u16, ts: u16 },
    /// The kernel reports `len` bytes at `base + offset` lost.
    Lost { offset: u16, len: u16 },
    /// The consumer's periodic drain.
    PopReady { now: u16, timeout: u16 },
    /// The connection closed.
    Flush,
}

/// How a reassembly run starts.
#[derive(Arbitrary, Clone, Debug)]
pub struct StreamCase {
    /// `Some(offset)`: a connection seen from its start (`Stream::starting_at`); `None`: a
    /// stream attached mid-way.
    pub start: Option<u16>,
    /// Memory cap (small, so the cap's paths run).
    pub limit: u16,
    /// Start of every position: near `u64::MAX` too (positions are the kernel's u64 counters).
    pub base_high: bool,
    pub ops: Vec<StreamOp>,
}

/// The byte the kernel would have seen at position `p` in the reassembly target: a function of
/// the position, so that every delivered byte can be checked to be the one at its position.
fn byte_at(p: u64) -> u8 {
    (p ^ (p >> 8) ^ (p >> 16)) as u8
}

/// Drives a [`Stream`] with arbitrary positioned chunks, overlaps, duplicates, losses and
/// drains, and checks what it hands the parser: segments strictly in position order without
/// holes or overlaps, every data byte the one pushed at its position, and the memory held back
/// bounded by the cap.
pub fn run_reassembly(case: &StreamCase) {
    let base = if case.base_high {
        u64::MAX - (1 << 20)
    } else {
        0
    };
    let limit = usize::from(case.limit);
    let mut s = match case.start {
        Some(o) => Stream::starting_at(base + u64::from(o), limit),
        None => Stream::with_limit(limit),
    };
    let mut out = Vec::new();
    let mut next: Option<u64> = None;
    let mut check = |out: &mut Vec<Segment>| {
        for seg in out.drain(..) {
            let (pos, len) = match &seg {
                Segment::Data(c) => {
                    assert!(!c.data.is_empty(), "empty data segment at {}", c.pos);
                    for (i, b) in c.data.iter().enumerate() {
                        assert_eq!(*b, byte_at(c.pos + i as u64), "wrong byte at {}", c.pos);
                    }
                    (c.pos, c.data.len() as u64)
                }
                Segment::Gap { pos, len } => {
                    assert!(*len > 0, "empty gap at {pos}");
                    (*pos, *len)
                }
            };
            if let Some(n) = next {
                assert_eq!(pos, n, "segment at {pos}, expected {n}: {seg:?}");
            }
            next = Some(pos.checked_add(len).expect("segment past u64::MAX"));
        }
    };
    for op in &case.ops {
        match *op {
            StreamOp::Push { offset, len, ts } => {
                let pos = base + u64::from(offset);
                let data: Vec<u8> = (0..u64::from(len)).map(|i| byte_at(pos + i)).collect();
                s.push(Chunk {
                    pos,
                    data: Bytes::from(data),
                    ts_ns: u64::from(ts),
                    tid: 1,
                });
            }
            StreamOp::Lost { offset, len } => s.lost(base + u64::from(offset), u64::from(len)),
            StreamOp::PopReady { now, timeout } => {
                s.pop_ready(u64::from(now), u64::from(timeout), &mut out);
                check(&mut out);
            }
            StreamOp::Flush => {
                s.flush(&mut out);
                check(&mut out);
            }
        }
        // Twice the cap plus one chunk: `push` drops beyond twice the limit.
        assert!(
            s.buffered_bytes() <= 2 * limit + usize::from(u16::MAX),
            "{} bytes held back with a cap of {limit}",
            s.buffered_bytes()
        );
    }
    s.flush(&mut out);
    check(&mut out);
    assert_eq!(s.buffered_bytes(), 0, "bytes left after flush");
}

/// Decodes one ring record as the capture loop does; a record that decodes re-encodes to
/// bytes that decode to the same record (the probes' layout and the agent's agree).
pub fn run_record(data: &[u8]) {
    let Ok(r) = timetracer_common::record::decode(data) else {
        return;
    };
    let enc = r.encode().expect("a decoded record re-encodes");
    let again = timetracer_common::record::decode(&enc).expect("a re-encoded record decodes");
    assert_eq!(r, again, "decode(encode(r)) != r");
}

/// The fixed, test-only age identity the encrypted seeds are encrypted to (never a real key:
/// it is public, in this repository).
pub const TEST_IDENTITY: &str =
    "AGE-SECRET-KEY-1JAAFCEHSLHVGSVTWGVXSZLSYVWZ95270VYXWVH2UVMQNVH3Y3E4SLM46EV";

/// Points the cassette reader at [`TEST_IDENTITY`] (once per process).
fn use_test_identity() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("timetracer-fuzz-{}.key", std::process::id()));
        std::fs::write(&path, format!("{TEST_IDENTITY}\n")).expect("write the test identity");
        timetracer::cassette::crypt::set_identity_file(&path);
    });
}

/// Reads a cassette file's bytes as every command does (sniffed: plain, gzip, zstd, age of
/// any of them; capped; schema probe; typed parse); a cassette that reads serialises again
/// and reads back equal.
pub fn run_cassette(data: &[u8]) {
    use_test_identity();
    let path = Path::new("fuzz.json");
    let Ok(bytes) = reader::decompress(path, Cursor::new(data), FUZZ_MAX_CASSETTE) else {
        return;
    };
    let Ok(c) = reader::parse(path, &bytes) else {
        return;
    };
    roundtrip(&c);
}

fn roundtrip(c: &Cassette) {
    let json = serde_json::to_vec(c).expect("a cassette serialises");
    let again = reader::parse(Path::new("again.json"), &json).expect("a written cassette reads");
    assert_eq!(
        serde_json::to_value(c).ok(),
        serde_json::to_value(&again).ok(),
        "cassette changed through write + read"
    );
}

/// `timetracer import --from py`: a Python-tool cassette (1.0 / 0.1) upgraded to schema 2.
pub fn run_import_py(data: &[u8]) {
    let Ok(c) = reader::parse(Path::new("py.json"), data) else {
        return;
    };
    if c.is_python_legacy() {
        let up = timetracer::cli::tools::import::upgrade(c);
        roundtrip(&up);
    }
}

/// `timetracer import --from har`: every entry of a HAR document to a schema 2 cassette.
pub fn run_import_har(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(cs) = timetracer::cli::tools::import::from_har(&v, "fuzz") {
        for c in &cs {
            roundtrip(c);
        }
    }
}

/// The recorded calls of one protocol in the replay fixtures (`tests/fixtures/replay/`), as
/// `replay` plans them: the destination a mock answers from.
fn destination(protocol: Protocol) -> Arc<Destination> {
    let journal = Arc::new(Journal::default());
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let d = Destination::new(addr, protocol, journal);
    for (i, c) in seeds::replay_cassettes().into_iter().enumerate() {
        for e in c.events {
            if mocked_protocol(&e) == Some(protocol)
                && let Ok(call) = RecordedCall::new(i, protocol, e)
            {
                d.push(call);
            }
        }
    }
    Arc::new(d)
}

/// Sends a mock the app's side of a connection (the input, in the frames' pieces, ingress
/// frames ignored) and reads its answers until it closes: the request decoders and matching of
/// `replay::mock` over a real (in-memory) connection.
pub fn run_mock(protocol: Protocol, data: &[u8]) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
    // A fresh destination per input: a mock consumes recorded calls as it answers them.
    let dest = destination(protocol);
    let pieces: Vec<&[u8]> = frames(data)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Data { bytes, .. } => Some(bytes),
            Frame::Gap { .. } => None,
        })
        .collect();
    rt.block_on(async move {
        let (mut app, mock) = tokio::io::duplex(64 << 10);
        let server = tokio::spawn(timetracer::replay::mock::serve(dest, mock, None));
        let (mut rd, mut wr) = tokio::io::split(&mut app);
        let write = async {
            for p in pieces {
                if wr.write_all(p).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = wr.shutdown().await;
        };
        let read = async {
            let mut sink = BytesMut::with_capacity(64 << 10);
            while let Ok(n) = rd.read_buf(&mut sink).await {
                if n == 0 {
                    break;
                }
                sink.clear();
            }
        };
        tokio::join!(write, read);
        drop(app);
        // A mock error (the app's bytes were not its protocol) is an answer, not a crash; a
        // panic in the mock is.
        if let Err(e) = server.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}
