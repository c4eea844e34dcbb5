//! Seed corpora from the repository's recorded fixtures: real client/server captures, real
//! cassettes (plain, gzip, zstd, age), the HAR export of those cassettes, and the requests the
//! replay fixtures recorded. Made at run time (`fuzz-seeds`), never checked in.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use timetracer::cassette::format::Cassette;
use timetracer::cassette::{body_bytes, reader};
use timetracer::protocols::Protocol;
use timetracer::replay::ledger::{RecordedCall, mocked_protocol};

use crate::push_frame;

/// Every fuzz target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "proto_http",
    "proto_postgres",
    "proto_mysql",
    "proto_redis",
    "proto_mongodb",
    "reassembly",
    "record",
    "cassette",
    "import_py",
    "import_har",
    "mock_http",
    "mock_postgres",
    "mock_mysql",
    "mock_redis",
    "mock_mongodb",
];

/// `tests/fixtures` of this checkout.
#[must_use]
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The files of `dir` (sorted) whose name ends with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A `.bin` capture (`'>'`/`'<'`, u32 BE length, bytes; `tests/fixtures/postgres/README.md`)
/// as frames; `>` (client to server) is egress: the traced process is the client.
fn bin_capture(p: &Path) -> Vec<u8> {
    let raw = std::fs::read(p).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = raw.as_slice();
    while let [dir, a, b, c, d, tail @ ..] = rest {
        let n = (u32::from_be_bytes([*a, *b, *c, *d]) as usize).min(tail.len());
        push_frame(&mut out, *dir == b'>', &tail[..n]);
        rest = &tail[n..];
    }
    out
}

/// A `.jsonl` capture (`{"egress", "b64"}` per read; `tests/fixtures/redis/README.md`).
fn jsonl_capture(p: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let egress = v["egress"].as_bool().unwrap_or(false);
        if let Some(bytes) = v["b64"].as_str().and_then(|s| b64.decode(s).ok()) {
            push_frame(&mut out, egress, &bytes);
        }
    }
    out
}

/// HTTP/1.x exchanges (no HTTP capture is checked in: the HTTP parser's fixtures are inline):
/// Content-Length, chunked with trailers, pipelining, `100 Continue`, an upgrade, a response
/// read to close, a JSON body with a secret.
const HTTP_EXCHANGES: &[(&[u8], &[u8])] = &[
    (
        b"GET /users/42?token=abc HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"id\":42,\"password\":\"hunt\"}",
    ),
    (
        b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nuser=bob\r\nc\r\n&password=xy\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nLocation: /\r\nSet-Cookie: s=1\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        b"PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
    ),
    (
        b"HEAD /x HTTP/1.0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n",
    ),
    (
        b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the connection closes",
    ),
];

/// The seed corpus of `target`: (file name, bytes).
#[must_use]
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let fx = fixtures();
    let captures = |dir: &str, ext: &str, f: fn(&Path) -> Vec<u8>| {
        files(&fx.join(dir), ext)
            .into_iter()
            .map(|p| (name_of(&p), f(&p)))
            .collect::<Vec<_>>()
    };
    match target {
        "proto_http" => http_seeds(),
        "proto_postgres" => captures("postgres", ".bin", bin_capture),
        "proto_mysql" => captures("mysql", ".bin", bin_capture),
        "proto_redis" => captures("redis", ".jsonl", jsonl_capture),
        "proto_mongodb" => captures("mongodb", ".jsonl", jsonl_capture),
        "cassette" => cassette_seeds(),
        "import_py" => files(&fx.join("cassettes/py"), ".json")
            .into_iter()
            .map(|p| (name_of(&p), std::fs::read(&p).unwrap_or_default()))
            .collect(),
        "import_har" => har_seeds(),
        "mock_http" => mock_http_seeds(),
        "mock_postgres" => mock_seeds(Protocol::Postgres),
        "mock_mysql" => mock_seeds(Protocol::Mysql),
        "mock_redis" => mock_seeds(Protocol::Redis),
        "mock_mongodb" => mock_seeds(Protocol::Mongodb),
        // Structured (`arbitrary`) or raw kernel records: libFuzzer starts from nothing and
        // finds the layout through its comparison tracing.
        _ => Vec::new(),
    }
}

fn http_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, (req, resp)) in HTTP_EXCHANGES.iter().enumerate() {
        // Both sides: the traced server reads requests (ingress) and writes responses; the
        // traced client the other way round. First byte: bit 0 set = client side.
        for client in [false, true] {
            let mut b = vec![u8::from(client)];
            push_frame(&mut b, client, req);
            push_frame(&mut b, !client, resp);
            out.push((
                format!("exchange-{i}-{}", if client { "client" } else { "server" }),
                b,
            ));
        }
    }
    out
}

/// Every cassette fixture (ours, the Python tool's, replay's, the dashboard's).
fn cassette_files() -> Vec<PathBuf> {
    let fx = fixtures();
    let mut v = Vec::new();
    for d in [
        "cassettes/ours",
        "cassettes/py",
        "replay/fastapi",
        "replay/flask",
        "replay/mongo",
        "ui",
    ] {
        v.extend(files(&fx.join(d), ".json"));
    }
    v
}

fn cassette_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let recipient = crate::TEST_IDENTITY
        .parse::<age::x25519::Identity>()
        .expect("the test identity parses")
        .to_public();
    for (i, p) in cassette_files().iter().enumerate() {
        let plain = std::fs::read(p).unwrap_or_default();
        let name = name_of(p);
        out.push((name.clone(), plain.clone()));
        // Every fourth also compressed and encrypted: enough to reach each decoder without
        // multiplying the corpus.
        if i % 4 != 0 {
            continue;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let gz = gz.write_all(&plain).and_then(|()| gz.finish());
        let zst = zstd::stream::encode_all(plain.as_slice(), 3);
        if let (Ok(gz), Ok(zst)) = (gz, zst) {
            out.push((format!("{name}.gz"), gz));
            out.push((format!("{name}.age"), encrypt(&recipient, &plain)));
            out.push((format!("{name}.zst.age"), encrypt(&recipient, &zst)));
            out.push((format!("{name}.zst"), zst));
        }
    }
    out
}

fn encrypt(to: &age::x25519::Recipient, plain: &[u8]) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(std::iter::once(to as &dyn age::Recipient))
        .expect("one recipient");
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).expect("age writer");
    w.write_all(plain).expect("encrypt");
    w.finish().expect("encrypt");
    out
}

/// The replay fixtures' cassettes (read once per process).
#[must_use]
pub fn replay_cassettes() -> Vec<Cassette> {
    static C: OnceLock<Vec<Cassette>> = OnceLock::new();
    C.get_or_init(|| {
        let fx = fixtures();
        ["replay/fastapi", "replay/flask", "replay/mongo"]
            .iter()
            .flat_map(|d| files(&fx.join(d), ".json"))
            .filter_map(|p| reader::read(&p).ok())
            .collect()
    })
    .clone()
}

fn har_seeds() -> Vec<(String, Vec<u8>)> {
    let cs: Vec<(PathBuf, Cassette)> = cassette_files()
        .into_iter()
        .filter_map(|p| reader::read(&p).ok().map(|c| (p, c)))
        .collect();
    let har = timetracer::analysis::export::to_har(&cs, true);
    let mut out = vec![(
        "all.har".to_owned(),
        serde_json::to_vec(&har).unwrap_or_default(),
    )];
    for (p, c) in cs.into_iter().take(4) {
        let one = timetracer::analysis::export::to_har(&[(p.clone(), c)], false);
        out.push((
            format!("{}.har", name_of(&p)),
            serde_json::to_vec(&one).unwrap_or_default(),
        ));
    }
    out
}

/// Per replay cassette, the app's side of its connections to a `protocol` server: every
/// recorded request's wire bytes in order (what the app sends the mock in a replay).
fn mock_seeds(protocol: Protocol) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, c) in replay_cassettes().into_iter().enumerate() {
        let mut b = Vec::new();
        for e in c.events {
            if mocked_protocol(&e) == Some(protocol)
                && let Ok(call) = RecordedCall::new(i, protocol, e)
            {
                push_frame(&mut b, true, &call.request);
            }
        }
        if !b.is_empty() {
            out.push((format!("replay-{i}"), b));
        }
    }
    out
}

/// Per replay cassette, its HTTP calls as the app would send them again.
fn mock_http_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, c) in replay_cassettes().into_iter().enumerate() {
        let mut b = Vec::new();
        for e in &c.events {
            if mocked_protocol(e) != Some(Protocol::Http) {
                continue;
            }
            let Some(url) = e.signature.url.as_deref() else {
                continue;
            };
            let path = url.splitn(4, '/').nth(3).unwrap_or("");
            let body = e
                .request
                .as_ref()
                .and_then(|r| r.body.as_ref())
                .map(body_bytes)
                .unwrap_or_default();
            let mut req = format!("{} /{path} HTTP/1.1\r\n", e.signature.method).into_bytes();
            for (n, v) in e.request.iter().flat_map(|r| &r.header_list) {
                if !n.eq_ignore_ascii_case("content-length") {
                    req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
            }
            req.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            req.extend_from_slice(&body);
            push_frame(&mut b, true, &req);
        }
        if !b.is_empty() {
            out.push((format!("replay-{i}"), b));
        }
    }
    if out.is_empty() {
        let mut b = Vec::new();
        push_frame(&mut b, true, HTTP_EXCHANGES[0].0);
        out.push(("get".to_owned(), b));
    }
    out
}
