//! Cassette round trips: build → write → read, exact bodies, redaction, JSON Schema validation,
//! Python 1.0 cassettes, compression, corrupt files, file modes, naming.
//!
//! Regenerate the checked-in fixture `tests/fixtures/cassettes/ours/` with
//! `TIMETRACER_BLESS=1 cargo test -p timetracer-user --test cassette_schema`.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use timetracer::cassette::format::{
    AttributionFacts, AttributionInfo, BodyEncoding, Cassette, ErrorKind,
};
use timetracer::cassette::{self, BuildOptions, Compression, Error, body_bytes, sha256_tagged};
use timetracer::correlate::model::{
    Attribution, ConnFacts, DepCall, DepKind, ProcessInfo, RecordedRequest, Timings,
};
use timetracer::correlate::python::Proof;
use timetracer::protocols::http::types::{Exchange, Framing, HttpMessage, Mark, StartLine};
use timetracer::redact::{REDACTED, RedactionPolicy};

const T0: u64 = 1_000_000_000_000;
/// Makes T0 2026-11-22T23:28:08.792058Z.
const MONO_TO_UNIX: i128 = 1_795_390_088_792_058_000 - T0 as i128;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn mark(ts_ns: u64) -> Mark {
    Mark {
        ts_ns,
        tid: 7,
        pos: 0,
    }
}

fn msg(start: StartLine, headers: &[(&str, &[u8])], body: &[u8], t: (u64, u64)) -> HttpMessage {
    HttpMessage {
        start,
        version: 1,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v)))
            .collect(),
        body: Bytes::copy_from_slice(body),
        body_size: body.len() as u64,
        truncated: false,
        lost_bytes: 0,
        framing: if body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        },
        trailers: Vec::new(),
        first: mark(t.0),
        head_done: mark(t.0),
        last: mark(t.1),
        wire_size: 0,
        incomplete: false,
    }
}

fn req(
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    t: (u64, u64),
) -> HttpMessage {
    msg(
        StartLine::Request {
            method: method.into(),
            target: target.into(),
        },
        headers,
        body,
        t,
    )
}

fn resp(status: u16, headers: &[(&str, &[u8])], body: &[u8], t: (u64, u64)) -> HttpMessage {
    let reason = match status {
        200 => "OK",
        500 => "Internal Server Error",
        _ => "Whatever",
    };
    msg(
        StartLine::Response {
            status,
            reason: reason.into(),
        },
        headers,
        body,
        t,
    )
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn inbound_conn() -> ConnFacts {
    ConnFacts {
        pid: 4242,
        fd: 12,
        conn_id: 99,
        local: addr("127.0.0.1:9000"),
        remote: addr("127.0.0.1:51234"),
        tls: false,
        server_name: None,
        preexisting: false,
    }
}

fn recorded(inbound: Exchange, deps: Vec<DepCall>, traceback: Option<&str>) -> RecordedRequest {
    RecordedRequest {
        db_sessions: Vec::new(),
        id: uuid::Uuid::parse_str("e92ca5c8-474d-408a-82e3-0a1420f6e065").unwrap(),
        process: ProcessInfo {
            pid: 4242,
            cmdline: vec![
                "python".into(),
                "-m".into(),
                "uvicorn".into(),
                "app:app".into(),
            ],
            cwd: Some("/srv/app".into()),
            exe: "/usr/bin/python3.11".into(),
            python_version: Some("3.11.7".into()),
            framework: Some("uvicorn".into()),
            cgroup: None,
        },
        inbound,
        conn: inbound_conn(),
        timings: Timings::default(),
        deps,
        traceback: traceback.map(str::to_owned),
        mono_to_unix_ns: MONO_TO_UNIX,
        drops: vec![("ringbuf_full".into(), 0)],
    }
}

/// POST /login with a JSON body (secrets), one httpx dependency call, JSON response.
fn login_request() -> RecordedRequest {
    let in_body = br#"{"username":"alice","password":"hunter2","message":"hi there","page":3,"passwordless_enabled":false}"#;
    let out_body = br#"{"ok":true,"token":"tok-123","usage":{"count":2},"items":[{"id":1,"access_token":"a"}]}"#;
    let inbound = Exchange {
        request: req(
            "POST",
            "/login/caf%C3%A9?next=%2Fhome&tag=a&tag=b&api_key=K",
            &[
                ("Host", b"127.0.0.1:9000"),
                ("User-Agent", b"curl/8.5.0"),
                ("Content-Type", b"application/json"),
                ("Authorization", b"Bearer secret"),
                ("Accept", b"*/*"),
                ("accept", b"text/plain"),
            ],
            in_body,
            (T0, T0 + 100_000),
        ),
        response: Some(resp(
            200,
            &[
                ("Content-Type", b"application/json"),
                ("Set-Cookie", b"sid=abc"),
            ],
            out_body,
            (T0 + 9_000_000, T0 + 9_500_000),
        )),
        interim: Vec::new(),
        index: 0,
    };
    let dep_resp_body = br#"{"user":"alice","refresh_token":"r1","message":"fine"}"#;
    let dep = DepCall {
        kind: DepKind::Http(Exchange {
            request: req(
                "GET",
                "/auth/verify?user=alice&token=T&page=2",
                &[
                    ("Host", b"auth.internal:8443"),
                    ("User-Agent", b"python-httpx/0.28.1"),
                    ("X-Api-Key", b"k"),
                    ("Accept", b"application/json"),
                ],
                b"",
                (T0 + 1_000_000, T0 + 1_100_000),
            ),
            response: Some(resp(
                200,
                &[("Content-Type", b"application/json")],
                dep_resp_body,
                (T0 + 5_000_000, T0 + 5_250_000),
            )),
            interim: Vec::new(),
            index: 0,
        }),
        conn: ConnFacts {
            pid: 4242,
            fd: 15,
            conn_id: 100,
            local: addr("10.0.0.2:40000"),
            remote: addr("10.0.0.9:8443"),
            tls: true,
            server_name: Some("auth.internal".into()),
            preexisting: false,
        },
        attribution: Attribution::Exact {
            evidence: "asyncio/response-writer",
            proof: Some(Box::new(Proof {
                tid: 4243,
                task: 0x7f00_0000_1a00,
                root_task: 0x7f00_0000_1000,
                root_coro: Some("RequestHandler._handle_request".into()),
                hops: 1,
                request_read_ns: T0,
                response_write_ns: T0 + 4_750_000,
                held: false,
            })),
        },
        timings: Timings::default(),
    };
    recorded(inbound, vec![dep], None)
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join("docs/cassette.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).expect("the schema itself is valid")
}

fn assert_valid(path: &Path) {
    let bytes =
        cassette::reader::read_decompressed(path, cassette::reader::MAX_CASSETTE_BYTES).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let v = schema_validator();
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{} does not validate:\n{}",
        path.display(),
        errors.join("\n")
    );
}

/// build → write → read; checks the schema, file mode, no temp leftovers and equality.
fn round_trip(c: &Cassette, compression: Compression) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = cassette::write(dir.path(), c, compression).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cassette mode");
    let dmode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700, "directory mode");
    for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "leftover temp file {name}");
    }
    assert_valid(&path);
    let back = cassette::read(&path).unwrap();
    assert_eq!(&back, c);
    (dir, path)
}

fn sha(b: &[u8]) -> String {
    sha256_tagged(b)
}

#[test]
fn json_request_with_dependency_round_trips() {
    let rec = login_request();
    let c = cassette::build(&rec, &BuildOptions::default());
    let (_dir, path) = round_trip(&c, Compression::None);
    assert!(
        path.ends_with("2026-11-22/POST__login_caf__e92ca5c8.json"),
        "{}",
        path.display()
    );

    // Top-level key order is the contract's.
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "schema_version",
            "generator",
            "session",
            "request",
            "response",
            "events",
            "connection",
            "timing",
            "policies",
            "stats"
        ]
    );
    assert_eq!(
        doc["session"]["recorded_at"],
        "2026-11-22T23:28:08.792058+00:00"
    );
    assert_eq!(doc["session"]["git_sha"], Value::Null);

    // Request.
    let r = &c.request;
    assert_eq!(r.path, "/login/café");
    assert_eq!(
        r.target.as_deref(),
        Some("/login/caf%C3%A9?next=%2Fhome&tag=a&tag=b&api_key=[REDACTED]")
    );
    assert_eq!(
        Value::Object(r.query.clone()),
        json!({"next": "/home", "tag": ["a", "b"], "api_key": REDACTED})
    );
    assert_eq!(r.headers["authorization"], REDACTED);
    assert_eq!(r.headers["accept"], "*/*, text/plain");
    let hl = r.header_list.as_ref().unwrap();
    assert_eq!(hl[3], ("Authorization".to_owned(), REDACTED.to_owned()));
    assert_eq!(hl[5].0, "accept");
    assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.user_agent.as_deref(), Some("curl/8.5.0"));
    assert_eq!(r.http_version.as_deref(), Some("1.1"));
    let body = r.body.as_ref().unwrap();
    assert_eq!(body.encoding, Some(BodyEncoding::Json));
    assert_eq!(body.redacted, vec!["$.password"]);
    assert_eq!(body.data.as_ref().unwrap()["message"], "hi there");
    assert_eq!(body.data.as_ref().unwrap()["page"], 3);
    assert_eq!(body.data.as_ref().unwrap()["passwordless_enabled"], false);
    let stored = body_bytes(body);
    assert_eq!(
        stored,
        br#"{"username":"alice","password":"[REDACTED]","message":"hi there","page":3,"passwordless_enabled":false}"#
    );
    assert_eq!(body.hash.as_deref(), Some(sha(&stored).as_str()));
    assert_eq!(body.size_bytes, Some(rec.inbound.request.body_size));

    // Response.
    assert_eq!(c.response.status, 200);
    assert_eq!(c.response.reason.as_deref(), Some("OK"));
    assert!((c.response.duration_ms - 9.5).abs() < 1e-9);
    assert_eq!(c.response.headers["set-cookie"], REDACTED);
    let rb = c.response.body.as_ref().unwrap();
    assert_eq!(rb.redacted, vec!["$.token", "$.items[0].access_token"]);
    assert_eq!(rb.data.as_ref().unwrap()["usage"], json!({"count": 2}));
    assert!(c.error.is_none());

    // Event.
    assert_eq!(c.events.len(), 1);
    let e = &c.events[0];
    assert_eq!((e.eid, e.kind.as_str()), (1, "http.client"));
    assert!((e.start_offset_ms - 1.0).abs() < 1e-9);
    assert!((e.duration_ms - 4.25).abs() < 1e-9);
    assert_eq!(e.signature.lib, "httpx");
    assert_eq!(e.signature.method, "GET");
    assert_eq!(
        e.signature.url.as_deref(),
        Some("https://auth.internal:8443/auth/verify")
    );
    assert_eq!(
        Value::Object(e.signature.query.clone().unwrap()),
        json!({"user": "alice", "token": REDACTED, "page": "2"})
    );
    let ereq = e.request.as_ref().unwrap();
    assert_eq!(ereq.headers["x-api-key"], REDACTED);
    assert!(ereq.body.is_none());
    assert!(e.signature.body_hash.is_none());
    let lines = "accept:application/json\nhost:auth.internal:8443\nuser-agent:python-httpx/0.28.1\nx-api-key:[REDACTED]";
    assert_eq!(
        e.signature.headers_hash.as_deref(),
        Some(sha(lines.as_bytes()).as_str())
    );
    let eb = e.result.body.as_ref().unwrap();
    assert_eq!(eb.redacted, vec!["$.refresh_token"]);
    assert_eq!(eb.data.as_ref().unwrap()["message"], "fine");
    assert_eq!(e.result.status, Some(200));
    assert_eq!(
        e.attribution,
        Some(AttributionInfo::Exact {
            evidence: "asyncio/response-writer".into(),
            facts: Some(AttributionFacts {
                thread: 4243,
                task: Some("0x7f0000001a00".into()),
                root_task: Some("0x7f0000001000".into()),
                root_coro: Some("RequestHandler._handle_request".into()),
                hops: Some(1),
                request_read_ms: Some(0.0),
                response_write_ms: Some(4.75),
                ..AttributionFacts::default()
            })
        })
    );
    let conn = e.connection.as_ref().unwrap();
    assert_eq!(conn.remote.as_deref(), Some("10.0.0.9:8443"));
    assert!(conn.tls);
    let t = e.timing.unwrap();
    assert_eq!(t.request_start, Some(1.0));
    assert_eq!(t.response_end, Some(5.25));

    // Policies and stats are truthful.
    let red = &c.policies.redaction;
    assert_eq!(red.mode, "default");
    // authorization, set-cookie, x-api-key headers; api_key, token queries; 4 body values.
    assert_eq!(red.applied, Some(9));
    assert!(
        red.header_names
            .as_ref()
            .unwrap()
            .contains(&"proxy-authorization".to_owned())
    );
    assert_eq!(c.policies.capture.max_body_bytes, Some(1024 * 1024));
    assert_eq!(c.stats.total_events, 1);
    assert_eq!(c.stats.event_counts["http.client"], 1);
    assert_eq!(c.stats.drops.as_ref().unwrap()["ringbuf_full"], 0);
    assert!(
        !text.contains("hunter2") && !text.contains("tok-123") && !text.contains("Bearer secret")
    );
    assert!(!text.contains("\"r1\"") && !text.contains("sid=abc"));
}

/// Node mode's `session.k8s` validates, round-trips, and puts the file under its pod.
#[test]
fn k8s_facts_validate_and_name_the_directory() {
    let mut c = cassette::build(&login_request(), &BuildOptions::default());
    c.session.k8s = Some(cassette::format::K8s {
        namespace: "shop".into(),
        pod: "api-7d9f".into(),
        pod_uid: "0b7c5a3e-1d2f-4a6b-8c9d-0e1f2a3b4c5d".into(),
        container: "web".into(),
        node: "node-1".into(),
        labels: [("app".to_owned(), "api".to_owned())].into(),
    });
    let (d, path) = round_trip(&c, Compression::None);
    let rel = path.strip_prefix(d.path()).unwrap();
    assert!(rel.starts_with("shop/api-7d9f/"), "{}", rel.display());
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["session"]["k8s"]["labels"]["app"], "api");
    assert_eq!(doc["session"]["k8s"]["container"], "web");
    // Without it the key is absent (not null).
    let plain = cassette::build(&login_request(), &BuildOptions::default());
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("\"k8s\""), "{text}");
}

#[test]
fn no_redact_keeps_everything() {
    let opts = BuildOptions {
        redaction: RedactionPolicy::disabled(),
        ..BuildOptions::default()
    };
    let c = cassette::build(&login_request(), &opts);
    let (_d, path) = round_trip(&c, Compression::None);
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("hunter2") && text.contains("Bearer secret"));
    assert_eq!(c.policies.redaction.mode, "off");
    assert_eq!(c.policies.redaction.applied, Some(0));
    // Unredacted bodies are stored byte-exactly.
    let body = c.request.body.as_ref().unwrap();
    assert!(matches!(&login_request().deps[0].kind, DepKind::Http(_)));
    assert_eq!(
        body_bytes(body),
        login_request().inbound.request.body.to_vec()
    );
}

#[test]
fn text_binary_and_chunked_bodies_are_exact() {
    let text_body = "line one\nlíne two\t{not json";
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let mut response = resp(
        200,
        &[
            ("Transfer-Encoding", b"chunked"),
            ("Content-Type", b"image/png"),
        ],
        &binary,
        (T0 + 2_000, T0 + 3_000),
    );
    response.framing = Framing::Chunked;
    response.trailers = vec![("X-Checksum".into(), Bytes::from_static(b"1"))];
    let inbound = Exchange {
        request: req(
            "PUT",
            "/upload",
            &[("Content-Type", b"text/plain")],
            text_body.as_bytes(),
            (T0, T0 + 1_000),
        ),
        response: Some(response),
        interim: Vec::new(),
        index: 3,
    };
    let c = cassette::build(
        &recorded(inbound, Vec::new(), None),
        &BuildOptions::default(),
    );
    round_trip(&c, Compression::Zstd);

    let rb = c.request.body.as_ref().unwrap();
    assert_eq!(rb.encoding, Some(BodyEncoding::Text));
    assert_eq!(body_bytes(rb), text_body.as_bytes());
    assert_eq!(rb.hash.as_deref(), Some(sha(text_body.as_bytes()).as_str()));

    let pb = c.response.body.as_ref().unwrap();
    assert_eq!(pb.encoding, Some(BodyEncoding::Base64));
    assert_eq!(body_bytes(pb), binary);
    assert_eq!(pb.hash.as_deref(), Some(sha(&binary).as_str()));
    assert!(c.request.query.is_empty());
}

#[test]
fn truncation_marks_and_hashes_stored_prefix() {
    let body = br#"{"data":"0123456789","password":"abc","more":"xxxxxxxxxxxxxxxxxxxx"}"#;
    let inbound = Exchange {
        request: req(
            "POST",
            "/big",
            &[("Content-Type", b"application/json")],
            body,
            (T0, T0 + 1_000),
        ),
        response: Some(resp(200, &[], b"", (T0 + 2_000, T0 + 3_000))),
        interim: Vec::new(),
        index: 0,
    };
    let opts = BuildOptions {
        max_body: 45,
        ..BuildOptions::default()
    };
    let c = cassette::build(&recorded(inbound, Vec::new(), None), &opts);
    round_trip(&c, Compression::None);
    let b = c.request.body.as_ref().unwrap();
    assert!(b.truncated);
    assert_eq!(b.size_bytes, Some(body.len() as u64));
    let stored = body_bytes(b);
    // Cut JSON cannot be parsed; the secret is still redacted lexically.
    assert_eq!(
        stored,
        br#"{"data":"0123456789","password":"[REDACTED]","more":"#
    );
    assert_eq!(b.redacted, vec!["$..password"]);
    assert_eq!(b.hash.as_deref(), Some(sha(&stored).as_str()));
    assert!(c.response.body.is_none(), "empty body is omitted");
}

#[test]
fn form_body_and_exact_key_rules() {
    let body = b"username=a&password=p&message=m&page=1&usage=2&passwordless_enabled=1&pwd=x";
    let inbound = Exchange {
        request: req(
            "POST",
            "/form",
            &[("Content-Type", b"application/x-www-form-urlencoded")],
            body,
            (T0, T0 + 1),
        ),
        response: Some(resp(200, &[], b"ok", (T0 + 2, T0 + 3))),
        interim: Vec::new(),
        index: 0,
    };
    let c = cassette::build(
        &recorded(inbound, Vec::new(), None),
        &BuildOptions::default(),
    );
    round_trip(&c, Compression::None);
    let b = c.request.body.as_ref().unwrap();
    assert_eq!(
        body_bytes(b),
        b"username=a&password=[REDACTED]&message=m&page=1&usage=2&passwordless_enabled=1&pwd=[REDACTED]"
    );
    assert_eq!(b.redacted, vec!["$.password", "$.pwd"]);
}

#[test]
fn server_error_with_traceback() {
    let tb = "Traceback (most recent call last):\n  File \"/app/main.py\", line 12, in boom\n    return 1 / n\nZeroDivisionError: division by zero";
    let inbound = Exchange {
        request: req("GET", "/boom/0", &[("Host", b"x")], b"", (T0, T0 + 10)),
        response: Some(resp(
            500,
            &[("Content-Type", b"text/plain")],
            b"Internal Server Error",
            (T0 + 4_000_000, T0 + 4_200_000),
        )),
        interim: Vec::new(),
        index: 0,
    };
    let c = cassette::build(
        &recorded(inbound, Vec::new(), Some(tb)),
        &BuildOptions::default(),
    );
    let (_d, path) = round_trip(&c, Compression::None);
    let e = c.error.as_ref().unwrap();
    assert_eq!((e.status, e.kind), (500, ErrorKind::Exception));
    assert_eq!(e.traceback.as_deref(), Some(tb));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys[5], "error");

    let mut out = Vec::new();
    timetracer::cli::show::run(&path, true, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("[ERR] Status: 500 Internal Server Error"),
        "{out}"
    );
    assert!(out.contains("Error: exception (status 500)"), "{out}");
    assert!(out.contains("ZeroDivisionError: division by zero"), "{out}");
}

#[test]
fn missing_response_and_failed_dependency() {
    let dep = DepCall {
        kind: DepKind::Http(Exchange {
            request: req(
                "POST",
                "/x",
                &[("User-Agent", b"python-requests/2.32")],
                b"{}",
                (T0 + 10, T0 + 20),
            ),
            response: None,
            interim: Vec::new(),
            index: 0,
        }),
        conn: ConnFacts {
            remote: addr("[::1]:80"),
            ..ConnFacts::default()
        },
        attribution: Attribution::Ambiguous {
            reason: "concurrent-requests",
        },
        timings: Timings::default(),
    };
    let inbound = Exchange {
        request: req("GET", "/", &[], b"", (T0, T0 + 1_000)),
        response: None,
        interim: Vec::new(),
        index: 0,
    };
    let c = cassette::build(
        &recorded(inbound, vec![dep], None),
        &BuildOptions::default(),
    );
    let (_d, path) = round_trip(&c, Compression::None);
    assert!(path.ends_with("GET__root__e92ca5c8.json"));
    assert_eq!(c.response.status, 0);
    assert_eq!(c.error.as_ref().unwrap().kind, ErrorKind::NoResponse);
    let e = &c.events[0];
    assert_eq!(e.signature.lib, "requests");
    assert_eq!(e.signature.url.as_deref(), Some("http://[::1]/x"));
    assert_eq!(e.result.error.as_deref(), Some("no-response"));
    assert_eq!(e.result.status, None);
    assert_eq!(e.signature.body_hash.as_deref(), Some(sha(b"{}").as_str()));
    assert_eq!(
        e.attribution,
        Some(AttributionInfo::Ambiguous {
            reason: "concurrent-requests".into()
        })
    );
    let t = e.timing.unwrap();
    assert_eq!(t.response_start, None);

    let mut out = Vec::new();
    timetracer::cli::show::run(&path, true, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("[ERR] Status: 0"), "{out}");
    assert!(
        out.contains("#1 [http.client] POST http://[::1]/x"),
        "{out}"
    );
    assert!(
        out.contains("Attribution: ambiguous (concurrent-requests)"),
        "{out}"
    );
}

#[test]
fn python_cassettes_read_and_validate() {
    let dir = repo_root().join("tests/fixtures/cassettes/py");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_valid(&path);
        let c = cassette::read(&path).unwrap();
        assert_eq!(c.schema_version, "1.0");
        assert!(c.is_python_legacy());
        assert!(c.generator.is_none() && c.connection.is_none());
        let mut out = Vec::new();
        timetracer::cli::show::run(&path, true, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Schema:   1.0"), "{out}");
        n += 1;
    }
    assert_eq!(n, 3);

    let c = cassette::read(&dir.join("GET__users_42__e92ca5c8.json")).unwrap();
    assert_eq!(c.session.timetracer_version.as_deref(), Some("1.4.0"));
    let body = c.response.body.as_ref().unwrap();
    assert!(!body.captured);
    assert_eq!(body.size_bytes, Some(168));
    assert!(body_bytes(body).is_empty());
    let e = &c.events[0];
    assert_eq!(e.signature.query.as_ref().unwrap()["verbose"], "1");
    let data = e.result.body.as_ref().unwrap();
    assert_eq!(data.encoding, Some(BodyEncoding::Json));
    assert_eq!(c.policies.redaction.rules.as_ref().unwrap().len(), 2);
    assert_eq!(c.policies.capture.max_body_kb, Some(64));

    let c = cassette::read(&dir.join("GET__db_then_http__a97386d6.json")).unwrap();
    assert_eq!(c.events[0].kind, "db.query");
    assert_eq!(c.events[0].result.status, Some(-1));

    let boom = dir.join("GET__boom_5__90588dcc.json");
    let c = cassette::read(&boom).unwrap();
    assert_eq!(c.response.status, 0);
    let mut out = Vec::new();
    timetracer::cli::show::run(&boom, false, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    for want in [
        "  GET /boom/5",
        "[ERR] Status: 0",
        "Duration: 4.21ms",
        "Events: 1 total",
        "  http.client: 1",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    // Same naming as the Python tool.
    let rel = cassette::naming::relative_path(&c, Compression::None);
    assert_eq!(rel, Path::new("2026-11-22/GET__boom_5__90588dcc.json"));
}

#[test]
fn gzip_and_zstd_are_read() {
    let py = repo_root().join("tests/fixtures/cassettes/py/GET__users_42__e92ca5c8.json");
    let plain = std::fs::read(&py).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let gz = dir.path().join("a.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&plain).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();

    let zst = dir.path().join("a.json.zst");
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.write_all(&plain).unwrap();
    std::fs::write(&zst, enc.finish().unwrap()).unwrap();

    let want = cassette::read(&py).unwrap();
    assert_eq!(cassette::read(&gz).unwrap(), want);
    assert_eq!(cassette::read(&zst).unwrap(), want);

    // Size cap.
    let err = cassette::reader::read_decompressed(&zst, 100).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 100, .. }), "{err}");
    assert!(err.to_string().contains("a.json.zst"));
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[test]
fn corrupt_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    let p = write(
        "garbage.json",
        b"{\"schema_version\": \"2.0\", \"session\": ",
    );
    let e = cassette::read(&p).unwrap_err();
    assert!(matches!(e, Error::NotJson { .. }));
    assert!(
        err_chain(&e).contains("garbage.json: not JSON: EOF"),
        "{}",
        err_chain(&e)
    );

    let p = write("v3.json", br#"{"schema_version":"3.0"}"#);
    let e = cassette::read(&p).unwrap_err();
    assert!(
        e.to_string()
            .contains(r#"unknown schema_version "3.0" (supported: 1.0, 2.0)"#),
        "{e}"
    );

    let p = write("none.json", br#"{"a":1}"#);
    assert!(matches!(
        cassette::read(&p).unwrap_err(),
        Error::MissingSchema { .. }
    ));

    let p = write(
        "shape.json",
        br#"{"schema_version":"2.0","session":{"id":1}}"#,
    );
    let e = cassette::read(&p).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(
        err_chain(&e).contains("shape.json: invalid cassette: invalid type"),
        "{}",
        err_chain(&e)
    );

    // Truncated zstd.
    let c = cassette::build(&login_request(), &BuildOptions::default());
    let good = cassette::write(dir.path(), &c, Compression::Zstd).unwrap();
    let full = std::fs::read(&good).unwrap();
    let p = write("cut.json.zst", &full[..full.len() / 2]);
    let e = cassette::read(&p).unwrap_err();
    assert!(
        matches!(e, Error::Decompress { format: "zstd", .. }),
        "{}",
        err_chain(&e)
    );
    assert!(
        err_chain(&e).contains("cut.json.zst: corrupt or truncated zstd data"),
        "{}",
        err_chain(&e)
    );

    // Corrupt gzip.
    let p = write(
        "bad.json.gz",
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3],
    );
    assert!(matches!(
        cassette::read(&p).unwrap_err(),
        Error::Decompress { format: "gzip", .. }
    ));

    let e = cassette::read(&dir.path().join("missing.json")).unwrap_err();
    assert!(err_chain(&e).contains("cannot read"), "{}", err_chain(&e));
}

#[test]
fn writes_are_atomic_and_private() {
    let c = cassette::build(&login_request(), &BuildOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let a = cassette::write(dir.path(), &c, Compression::None).unwrap();
    // Rewriting replaces the file in place and leaves nothing else behind.
    let b = cassette::write(dir.path(), &c, Compression::None).unwrap();
    assert_eq!(a, b);
    let z = cassette::write(dir.path(), &c, Compression::Zstd).unwrap();
    assert!(z.to_string_lossy().ends_with("__e92ca5c8.json.zst"));
    let names: Vec<String> = std::fs::read_dir(a.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        std::fs::metadata(&z).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The checked-in fixture equals what the builder writes today.
#[test]
fn our_fixture_is_current() {
    let c = cassette::build(&login_request(), &BuildOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let path = cassette::write(dir.path(), &c, Compression::None).unwrap();
    let mut out = Vec::new();
    timetracer::cli::show::run(&path, false, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("Query: next=/home&tag=a&tag=b&api_key=[REDACTED]"),
        "{out}"
    );
    let fixture = repo_root()
        .join("tests/fixtures/cassettes/ours")
        .join(path.file_name().unwrap());
    let fresh = std::fs::read_to_string(&path).unwrap();
    if std::env::var_os("TIMETRACER_BLESS").is_some() {
        std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
        std::fs::write(&fixture, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&fixture).unwrap_or_default();
    if checked_in != fresh {
        let first = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{} is stale (first difference at line {first:?}): rerun with TIMETRACER_BLESS=1",
            fixture.display()
        );
    }
    assert_valid(&fixture);
    assert_eq!(cassette::read(&fixture).unwrap(), c);
}

/// Issue #26: a startup cassette (a process's calls before its first request) is built by the
/// same builder (redaction included), written under `.startup/`, valid against the schema,
/// and reads back equal; request cassettes of the recording name the same `recording`.
#[test]
fn startup_cassette_round_trips() {
    use timetracer::correlate::model::{StartupEnd, StartupRecord};
    let login = login_request();
    let mut dep = login.deps[0].clone();
    dep.attribution = Attribution::Exact {
        evidence: "startup",
        proof: None,
    };
    let opts = BuildOptions {
        recording: Some("0b6f3c1e-2f7d-4c4e-9a55-5d1f0e7a9c10".into()),
        ..BuildOptions::default()
    };
    let rec = StartupRecord {
        id: uuid::Uuid::parse_str("6a1d5c1c-0b4e-4a8f-8f0e-2b1a9d3c4e5f").unwrap(),
        process: ProcessInfo {
            pid: 4242,
            cmdline: vec!["gunicorn".into(), "-w".into(), "2".into(), "app:app".into()],
            cwd: Some("/srv/app".into()),
            ..ProcessInfo::default()
        },
        started_ns: T0 - 2_000_000_000,
        first_request_ns: Some(T0),
        ended_by: StartupEnd::FirstRequest,
        deps: vec![dep],
        dropped_calls: 0,
        db_sessions: Vec::new(),
        mono_to_unix_ns: MONO_TO_UNIX,
        drops: vec![("ring_full".into(), 0)],
    };
    let c = cassette::build_startup(&rec, &opts);
    assert!(c.is_startup());
    let st = c.startup.as_ref().unwrap();
    assert_eq!(st.pid, 4242);
    assert_eq!(st.ended_by, "first-request");
    assert_eq!(st.started_at, "2026-11-22T23:28:06.792058+00:00");
    assert_eq!(
        st.first_request_at.as_deref(),
        Some("2026-11-22T23:28:08.792058+00:00")
    );
    assert_eq!(c.session.recording, opts.recording);
    assert_eq!(c.events.len(), 1);
    let e = &c.events[0];
    // Offsets from the process start; redaction as in any cassette.
    assert!(
        (e.start_offset_ms - 2001.0).abs() < 1e-6,
        "{}",
        e.start_offset_ms
    );
    assert_eq!(
        e.attribution,
        Some(AttributionInfo::Exact {
            evidence: "startup".into(),
            facts: None,
        })
    );
    let text = serde_json::to_string(&c).unwrap();
    assert!(!text.contains("\"T\"") && text.contains(REDACTED), "{text}");
    assert!(c.connection.is_none() && c.timing.is_none() && c.error.is_none());
    let (dir, path) = round_trip(&c, Compression::None);
    assert_eq!(
        path.strip_prefix(dir.path()).unwrap(),
        Path::new(".startup/STARTUP__pid4242__6a1d5c1c.json")
    );
    // The request cassettes of the same recording carry its id.
    let req = cassette::build(&login, &opts);
    assert_eq!(req.session.recording, opts.recording);
    assert!(!req.is_startup());
}
