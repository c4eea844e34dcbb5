//! Host-only pipeline tests (no root, no kernel): ring-buffer records encoded exactly as the
//! eBPF programs emit them (`script.rs`) → `timetracer_common::decode` → the correlator
//! (connection layer, protocol parsers, attribution) → the cassette builder, compared with the
//! golden cassettes in `tests/golden/`.
//!
//! The agent's loop is replayed on a virtual clock: records are handed over in ring order and
//! every 10 ms of record time the correlator is pumped and asked for finished requests, as
//! `record::session` does after each drain; after the last record the clock runs on for 10 s
//! (longer than every grace period and wait). /proc answers come from `FixedFacts`.
//!
//! A golden file holds what a run produced: the non-zero agent counters and every cassette
//! written (each valid against `docs/cassette.schema.json`), in the order their requests
//! started. The only inputs that are not deterministic in the agent are fixed before building
//! (each request's uuid, numbered in that order, and the monotonic-to-Unix clock offset), and
//! the version of the tool is written as `(version)`. Each scenario also runs three times
//! (fresh hash seeds) and must give the same document.
//!
//! Rewrite the goldens after a deliberate change with
//! `TIMETRACER_BLESS=1 cargo test -p timetracer-user --test pipeline`, then read the diff:
//! these files document what the agent records.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

mod script;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use timetracer::capture::procfs::FixedFacts;
use timetracer::cassette::{self, BuildOptions};
use timetracer::correlate::model::{ProcessInfo, RecordedRequest};
use timetracer::correlate::python::Runtime;
use timetracer::correlate::{CorrelateOptions, Correlator};
use timetracer::record::report;
use timetracer::telemetry::{Counter, Counters};
use timetracer_common::{Role, decode};

use script::{Emitted, Script, Ssl, T0, Thread};
use wire::{pg, resp, tls};

/// The agent drains the ring buffer every 10 ms.
const TICK_NS: u64 = 10_000_000;
/// Makes `T0` 2026-01-01T00:00:00Z.
const MONO_TO_UNIX: i128 = 1_767_225_600_000_000_000 - T0 as i128;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A traced process and what /proc says about it.
fn process(pid: u32, cmdline: &[&str], framework: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
        cwd: Some("/srv/app".to_owned()),
        exe: "/usr/bin/python3.12".to_owned(),
        python_version: Some("3.12".to_owned()),
        framework: Some(framework.to_owned()),
        cgroup: None,
    }
}

/// One scripted run.
struct Scenario {
    name: &'static str,
    what: &'static str,
    records: Vec<Emitted>,
    facts: FixedFacts,
    /// The processes traced from the start (others join through fork records).
    targets: Vec<u32>,
    /// CPython processes whose runtime was discovered (probes on before the first record).
    python: Vec<u32>,
}

/// What a run left: the golden document and the correlator.
struct Run {
    doc: Value,
    correlator: Correlator,
}

fn play(sc: &Scenario) -> Run {
    let counters = Counters::default();
    let mut c = Correlator::new(
        CorrelateOptions::default(),
        counters.clone(),
        Box::new(sc.facts.clone()),
    );
    // What `record` does at attach: describe every target, then CPython discovery.
    for &pid in &sc.targets {
        c.add_process(sc.facts.processes[&pid].clone());
    }
    for &pid in &sc.python {
        c.py.set_runtime(pid, Runtime::Supported);
        c.py.set_probes_on(pid, T0 - 1_000_000_000);
    }
    // The kernel's drop counters as of the last record handed over (only the cap is emulated).
    let kernel_drops = |cap_reached: (u64, u64)| -> report::KernelDrops {
        timetracer_common::Drop::ALL
            .iter()
            .map(|&d| match d {
                timetracer_common::Drop::CapReached => (d.name(), cap_reached.0, cap_reached.1),
                _ => (d.name(), 0, 0),
            })
            .collect()
    };
    let mut written: Vec<RecordedRequest> = Vec::new();
    let mut step = |c: &mut Correlator, now: u64, cap_reached: (u64, u64)| {
        c.pump(now);
        let drops = report::drops(&counters.snapshot(), &kernel_drops(cap_reached));
        for mut r in c.take_ready(now) {
            r.drops.clone_from(&drops);
            written.push(r);
        }
    };
    let mut tick = T0;
    let mut cap_reached = (0, 0);
    for e in &sc.records {
        let rec = decode(&e.bytes).expect("the agent decodes what the kernel emits");
        while tick < rec.origin().ts_ns {
            step(&mut c, tick, cap_reached);
            tick += TICK_NS;
        }
        c.handle(rec);
        cap_reached = e.cap_reached;
    }
    let end = tick + 10_000_000_000;
    while tick <= end {
        step(&mut c, tick, cap_reached);
        tick += TICK_NS;
    }
    written.sort_by_key(|r| (r.timings.request_start_ns, r.conn.conn_id));
    let schema = schema_validator();
    let cassettes: Vec<Value> = written
        .iter_mut()
        .enumerate()
        .map(|(i, r)| {
            r.id = uuid::Uuid::from_u128(i as u128 + 1);
            r.mono_to_unix_ns = MONO_TO_UNIX;
            let mut v = serde_json::to_value(cassette::build(r, &BuildOptions::default()))
                .expect("a cassette serializes");
            let errors: Vec<String> = schema
                .iter_errors(&v)
                .map(|e| format!("{e} at {}", e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", sc.name);
            v["generator"]["version"] = json!("(version)");
            v["session"]["timetracer_version"] = json!("(version)");
            v
        })
        .collect();
    let snap = counters.snapshot();
    let counters: Map<String, Value> = Counter::ALL
        .iter()
        .filter(|&&k| snap.get(k) != 0)
        .map(|&k| (k.name().to_owned(), json!(snap.get(k))))
        .collect();
    Run {
        doc: json!({
            "scenario": sc.name,
            "what": sc.what,
            "counters": counters,
            "cassettes": cassettes,
        }),
        correlator: c,
    }
}

/// `docs/cassette.schema.json`.
fn schema_validator() -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cassette.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("json");
    jsonschema::draft202012::new(&schema).expect("the schema itself is valid")
}

/// Plays `sc` three times, checks the runs agree and match `tests/golden/<name>.json`.
fn check(sc: &Scenario) -> Run {
    let run = play(sc);
    for _ in 0..2 {
        assert_eq!(
            play(sc).doc,
            run.doc,
            "{}: two runs of the same records differ",
            sc.name
        );
    }
    let text = serde_json::to_string_pretty(&run.doc).expect("json") + "\n";
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{}.json", sc.name));
    if std::env::var_os("TIMETRACER_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden.parent().expect("a directory")).expect("mkdir");
        std::fs::write(&golden, &text).expect("write golden");
        return run;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with TIMETRACER_BLESS=1 (and read it)",
            golden.display()
        )
    });
    if want != text {
        let actual = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.json", sc.name));
        std::fs::write(&actual, &text).expect("write actual");
        let diff: Vec<String> = want
            .lines()
            .zip(text.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(20)
            .map(|(i, (a, b))| format!("line {}:\n  golden: {a}\n  actual: {b}", i + 1))
            .collect();
        panic!(
            "{} differs from {} ({} vs {} lines); this run is in {}\n{}",
            sc.name,
            golden.display(),
            want.lines().count(),
            text.lines().count(),
            actual.display(),
            diff.join("\n")
        );
    }
    run
}

fn http_request(method: &str, target: &str, host: &str, extra: &str, body: &str) -> Vec<u8> {
    let len = if body.is_empty() && !matches!(method, "POST" | "PUT" | "PATCH") {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}{len}\r\n{body}").into_bytes()
}

fn http_response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A sync worker (gunicorn, forked by the traced master) serving requests one at a time on one
/// thread: a keep-alive
/// connection with an outbound HTTP call per request (the outbound connection kept alive too),
/// then two requests pipelined in one read; then the worker exits without closing its
/// connection (the kernel closes it).
#[test]
fn http_keepalive_and_pipelining() {
    let master = Thread { pid: 99, tid: 99 };
    let w = Thread { pid: 100, tid: 100 };
    let mut s = Script::new();
    let mut facts = FixedFacts::default();
    for pid in [99, 100] {
        facts.processes.insert(
            pid,
            process(
                pid,
                &["/srv/venv/bin/python", "/srv/venv/bin/gunicorn", "app:app"],
                "gunicorn",
            ),
        );
    }
    // The gunicorn master (the target) forks its worker.
    s.fork(master, 100);
    let inb = s.accept(w, 9, addr("127.0.0.1:41000"));
    facts
        .sockets
        .insert((100, 9), (addr("127.0.0.1:8000"), addr("127.0.0.1:41000")));
    facts
        .sockets
        .insert((100, 10), (addr("10.0.0.2:51000"), addr("10.0.0.7:8080")));

    s.read(
        w,
        inb,
        &http_request(
            "GET",
            "/users/1?fields=name",
            "api.local",
            "User-Agent: curl/8.5.0\r\nAccept: */*\r\n",
            "",
        ),
    );
    // The first replica refuses; the client tries the next one.
    s.connect_refused(w, 10, addr("10.0.0.6:8080"));
    let dep = s.connect(w, 10, addr("10.0.0.7:8080"), false);
    for (user, name) in [(1, "Ada"), (2, "Grace")] {
        if user == 2 {
            s.wait_ms(40);
            s.read(
                w,
                inb,
                &http_request(
                    "GET",
                    "/users/2",
                    "api.local",
                    "User-Agent: curl/8.5.0\r\nAccept: */*\r\n",
                    "",
                ),
            );
        }
        s.wait_ms(1);
        s.write(
            w,
            dep,
            &http_request(
                "GET",
                &format!("/profiles/{user}"),
                "profiles.internal:8080",
                "User-Agent: python-requests/2.32.3\r\nAccept: application/json\r\n",
                "",
            ),
        );
        s.wait_ms(3);
        s.read(
            w,
            dep,
            &http_response(
                "200 OK",
                "application/json",
                &format!(r#"{{"id":{user},"name":"{name}"}}"#),
            ),
        );
        s.wait_ms(1);
        s.respond(
            w,
            inb,
            &http_response(
                "200 OK",
                "application/json",
                &format!(r#"{{"user":{user},"profile":{{"name":"{name}"}}}}"#),
            ),
        );
    }
    // Pipelined: both requests arrive in one read; the worker answers them in order.
    s.wait_ms(40);
    let mut two = http_request("GET", "/health", "api.local", "", "");
    two.extend(http_request("HEAD", "/version", "api.local", "", ""));
    s.read(w, inb, &two);
    s.wait_ms(1);
    s.respond(w, inb, &http_response("200 OK", "text/plain", "ok"));
    s.respond(
        w,
        inb,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
    );
    s.wait_ms(5);
    s.close(w, dep);
    s.wait_ms(100);
    s.exit(100);
    let sc = Scenario {
        name: "http_keepalive_pipelining",
        what: "a sync worker: keep-alive requests each with one outbound HTTP call (the first connect refused), two pipelined requests, then the worker exits with its connection open",
        records: s.records(),
        facts,
        targets: vec![99],
        python: Vec::new(),
    };
    let run = check(&sc);
    // The exit ended the connection and, once its requests were written, the worker left;
    // the master stays.
    assert_eq!(run.correlator.open_connections(), 0);
    assert_eq!(run.correlator.pids(), [99]);
}

/// A request whose handler runs two statements through psycopg's extended protocol (Parse,
/// Bind, Describe, Execute, Sync pipelined in one write) on a fresh connection.
#[test]
fn postgres_extended_protocol() {
    let w = Thread { pid: 200, tid: 201 };
    let mut s = Script::new();
    let mut facts = FixedFacts::default();
    facts.processes.insert(
        200,
        process(
            200,
            &["/srv/venv/bin/python", "-m", "flask", "run"],
            "flask",
        ),
    );
    facts
        .sockets
        .insert((200, 7), (addr("127.0.0.1:5000"), addr("127.0.0.1:42000")));
    facts
        .sockets
        .insert((200, 8), (addr("10.0.0.2:52000"), addr("10.0.0.9:5432")));
    let inb = s.accept(w, 7, addr("127.0.0.1:42000"));
    s.read(
        w,
        inb,
        &http_request(
            "POST",
            "/orders/7/ship",
            "shop.local",
            "Content-Type: application/json\r\n",
            r#"{"carrier":"dhl"}"#,
        ),
    );
    let db = s.connect(w, 8, addr("10.0.0.9:5432"), false);
    s.write(
        w,
        db,
        &pg::startup(&[
            ("user", "shop"),
            ("database", "shop"),
            ("application_name", "psycopg"),
            ("client_encoding", "UTF8"),
        ]),
    );
    s.wait_ms(2);
    s.read(
        w,
        db,
        &[
            pg::auth_ok(),
            pg::parameter_status("server_version", "16.2"),
            pg::parameter_status("server_encoding", "UTF8"),
            pg::parameter_status("client_encoding", "UTF8"),
            pg::parameter_status("TimeZone", "UTC"),
            pg::backend_key(4711, 0x1234_5678),
            pg::ready(b'I'),
        ]
        .concat(),
    );
    s.wait_ms(1);
    s.write(
        w,
        db,
        &[
            pg::parse(
                "",
                "SELECT id, total, status FROM orders WHERE id = $1",
                &[23],
            ),
            pg::bind("", "", &[Some("7")]),
            pg::describe_portal(""),
            pg::execute(""),
            pg::sync(),
        ]
        .concat(),
    );
    s.wait_ms(2);
    s.read(
        w,
        db,
        &[
            pg::parse_complete(),
            pg::bind_complete(),
            pg::row_description(&[("id", 23, 4), ("total", 1700, -1), ("status", 25, -1)]),
            pg::data_row(&[Some("7"), Some("19.90"), Some("paid")]),
            pg::command_complete("SELECT 1"),
            pg::ready(b'I'),
        ]
        .concat(),
    );
    s.wait_ms(1);
    s.write(
        w,
        db,
        &[
            pg::parse(
                "",
                "UPDATE orders SET status = $1, carrier = $2 WHERE id = $3",
                &[25, 25, 23],
            ),
            pg::bind("", "", &[Some("shipped"), Some("dhl"), Some("7")]),
            pg::describe_portal(""),
            pg::execute(""),
            pg::sync(),
        ]
        .concat(),
    );
    s.wait_ms(3);
    s.read(
        w,
        db,
        &[
            pg::parse_complete(),
            pg::bind_complete(),
            pg::no_data(),
            pg::command_complete("UPDATE 1"),
            pg::ready(b'I'),
        ]
        .concat(),
    );
    s.wait_ms(1);
    s.respond(
        w,
        inb,
        &http_response(
            "200 OK",
            "application/json",
            r#"{"id":7,"status":"shipped"}"#,
        ),
    );
    s.wait_ms(20);
    s.write(w, db, &pg::terminate());
    s.close(w, db);
    s.close(w, inb);
    check(&Scenario {
        name: "postgres_extended",
        what: "one request, two PostgreSQL statements over the extended protocol on a connection opened for it",
        records: s.records(),
        facts,
        targets: vec![200],
        python: Vec::new(),
    });
}

/// A request whose handler sends three Redis commands in one write (a pipeline) and reads the
/// three replies in one read.
#[test]
fn redis_pipeline() {
    let w = Thread { pid: 300, tid: 300 };
    let mut s = Script::new();
    let mut facts = FixedFacts::default();
    facts.processes.insert(
        300,
        process(
            300,
            &["/srv/venv/bin/waitress-serve", "app:app"],
            "waitress",
        ),
    );
    facts
        .sockets
        .insert((300, 10), (addr("10.0.0.2:8080"), addr("10.0.0.50:33000")));
    facts
        .sockets
        .insert((300, 11), (addr("10.0.0.2:52100"), addr("10.0.0.10:6379")));
    let inb = s.accept(w, 10, addr("10.0.0.50:33000"));
    s.read(
        w,
        inb,
        &http_request(
            "POST",
            "/cart/42/items",
            "shop.local",
            "Content-Type: application/json\r\n",
            r#"{"sku":"sku-9","qty":1}"#,
        ),
    );
    let redis = s.connect(w, 11, addr("10.0.0.10:6379"), false);
    s.wait_ms(1);
    s.write(
        w,
        redis,
        &[
            resp::command(&["HINCRBY", "cart:42", "sku-9", "1"]),
            resp::command(&["EXPIRE", "cart:42", "3600"]),
            resp::command(&["HGETALL", "cart:42"]),
        ]
        .concat(),
    );
    s.wait_ms(1);
    s.read(
        w,
        redis,
        b":1\r\n:1\r\n*4\r\n$5\r\nsku-9\r\n$1\r\n1\r\n$5\r\nsku-3\r\n$1\r\n2\r\n",
    );
    s.respond(
        w,
        inb,
        &http_response(
            "201 Created",
            "application/json",
            r#"{"items":{"sku-3":2,"sku-9":1}}"#,
        ),
    );
    s.wait_ms(10);
    s.close(w, inb);
    s.close(w, redis);
    check(&Scenario {
        name: "redis_pipeline",
        what: "one request, three Redis commands pipelined in one write",
        records: s.records(),
        facts,
        targets: vec![300],
        python: Vec::new(),
    });
}

/// HTTPS in and out. Inbound (blocking socket, gunicorn): the handshake's ciphertext is
/// captured, then the socket read inside `SSL_read` ties the `SSL*` to the socket and the
/// plaintext flows. Outbound (asyncio `MemoryBIO`, httpx): the plaintext write comes first,
/// untied (`fd` -1), and the send of its ciphertext right after ties it. One ciphertext record
/// of the inbound socket was in flight on another CPU when the socket became TLS.
#[test]
fn tls_rebound_connection() {
    let w = Thread { pid: 400, tid: 400 };
    let mut s = Script::new();
    let mut facts = FixedFacts::default();
    facts.processes.insert(
        400,
        process(
            400,
            &[
                "/srv/venv/bin/python",
                "/srv/venv/bin/gunicorn",
                "--certfile",
                "cert.pem",
                "app:app",
            ],
            "gunicorn",
        ),
    );
    facts.sockets.insert(
        (400, 12),
        (addr("10.0.0.2:8443"), addr("203.0.113.9:50500")),
    );
    facts.sockets.insert(
        (400, 13),
        (addr("10.0.0.2:53000"), addr("198.51.100.20:443")),
    );
    let inb = s.accept(w, 12, addr("203.0.113.9:50500"));
    s.read(w, inb, &tls::client_hello("shop.example.com"));
    s.respond(
        w,
        inb,
        &[tls::opaque(22, 90), tls::opaque(20, 1), tls::opaque(23, 40)].concat(),
    );
    s.read(w, inb, &[tls::opaque(20, 1), tls::opaque(23, 60)].concat());
    let mut server_ssl = Ssl {
        ptr: 0x5555_0000_1000,
        fd: -1,
    };
    s.tls_bind(w, &mut server_ssl, inb, Role::Server);
    // A read of another thread that passed the kernel's TLS check just before the bind: its
    // ciphertext record follows the bind in the ring.
    s.read(Thread { pid: 400, tid: 402 }, inb, &tls::opaque(23, 31));
    s.ssl_read(
        w,
        server_ssl,
        &http_request(
            "GET",
            "/account/me",
            "shop.example.com",
            "Authorization: Bearer abc.def.ghi\r\nUser-Agent: Mozilla/5.0\r\n",
            "",
        ),
    );
    // The handler calls a partner API over HTTPS with httpx (MemoryBIO).
    let out = s.connect(w, 13, addr("198.51.100.20:443"), true);
    s.wait_ms(1);
    s.write(w, out, &tls::client_hello("api.partner.example"));
    s.wait_ms(2);
    s.read(
        w,
        out,
        &[
            tls::opaque(22, 120),
            tls::opaque(20, 1),
            tls::opaque(23, 50),
        ]
        .concat(),
    );
    s.write(w, out, &[tls::opaque(20, 1), tls::opaque(23, 53)].concat());
    let mut client_ssl = Ssl {
        ptr: 0x5555_0000_2000,
        fd: -1,
    };
    s.ssl_write(
        w,
        client_ssl,
        &http_request(
            "GET",
            "/v1/accounts/me",
            "api.partner.example",
            "Accept: application/json\r\nUser-Agent: python-httpx/0.28.1\r\n",
            "",
        ),
    );
    s.tls_bind(w, &mut client_ssl, out, Role::Client);
    s.wait_ms(4);
    s.ssl_read(
        w,
        client_ssl,
        &http_response("200 OK", "application/json", r#"{"tier":"gold"}"#),
    );
    s.wait_ms(1);
    s.ssl_write(
        w,
        server_ssl,
        &http_response(
            "200 OK",
            "application/json",
            r#"{"user":"ada","tier":"gold"}"#,
        ),
    );
    s.wait_ms(10);
    s.close(w, out);
    s.close(w, inb);
    check(&Scenario {
        name: "tls_rebound",
        what: "HTTPS in (bound by the socket read inside SSL_read) and out (MemoryBIO: plaintext before the bind), ciphertext first, plaintext after",
        records: s.records(),
        facts,
        targets: vec![400],
        python: Vec::new(),
    });
}

/// Two concurrent requests served by one asyncio event loop (uvicorn). Task lineage tells their
/// calls apart: A's call comes from a child task of A's root; B's from B's root task and from
/// a worker thread running in a copy of B's context (`asyncio.to_thread`). A periodic task
/// created outside any request makes a background call. The thread/time rule alone would call
/// every one of these calls ambiguous.
#[test]
fn asyncio_concurrent_requests_with_lineage() {
    let lp = Thread { pid: 500, tid: 500 };
    let worker = Thread { pid: 500, tid: 507 };
    let mut s = Script::new();
    s.follow_python(500);
    let (ts_loop, ts_worker) = (0x7f00_0000_a000, 0x7f00_0000_b000);
    s.enter_context(lp, 0, ts_loop);
    s.enter_context(worker, 0, ts_worker);
    let mut facts = FixedFacts::default();
    facts.processes.insert(
        500,
        process(
            500,
            &["/srv/venv/bin/python", "/srv/venv/bin/uvicorn", "app:app"],
            "uvicorn",
        ),
    );
    for (fd, local, remote) in [
        (20, "127.0.0.1:8000", "127.0.0.1:43000"),
        (21, "127.0.0.1:8000", "127.0.0.1:43001"),
        (22, "10.0.0.2:54000", "10.0.0.7:8080"),
        (23, "10.0.0.2:54001", "10.0.0.7:8080"),
        (24, "10.0.0.2:54002", "10.0.0.10:6379"),
        (25, "10.0.0.2:54003", "10.0.0.10:6379"),
    ] {
        facts.sockets.insert((500, fd), (addr(local), addr(remote)));
    }
    const ROOT: &str = "RequestResponseCycle.run_asgi";
    let (ctx_a, ctx_a_child, ctx_b, ctx_b_copy, ctx_bg) = (0xa100, 0xa200, 0xb100, 0xb200, 0xc100);

    let a = s.accept(lp, 20, addr("127.0.0.1:43000"));
    let b = s.accept(lp, 21, addr("127.0.0.1:43001"));
    s.read(
        lp,
        a,
        &http_request("GET", "/a", "app.local", "User-Agent: k6/0.52\r\n", ""),
    );
    s.task(lp, 0x1a, ctx_a, ROOT);
    s.read(
        lp,
        b,
        &http_request("GET", "/b", "app.local", "User-Agent: k6/0.52\r\n", ""),
    );
    s.task(lp, 0x1b, ctx_b, ROOT);
    // A's handler gathers a child task, which calls the profile service.
    s.enter_context(lp, ctx_a, ts_loop);
    s.task(lp, 0x2a, ctx_a_child, "fetch_profile");
    s.enter_context(lp, ctx_a_child, ts_loop);
    let dep_a = s.connect(lp, 22, addr("10.0.0.7:8080"), true);
    s.write(
        lp,
        dep_a,
        &http_request("GET", "/profiles/a", "profiles.internal:8080", "", ""),
    );
    // B's handler calls the profile service itself, then runs a blocking Redis call in a
    // worker thread (asyncio.to_thread copies its context).
    s.enter_context(lp, ctx_b, ts_loop);
    let dep_b = s.connect(lp, 23, addr("10.0.0.7:8080"), true);
    s.write(
        lp,
        dep_b,
        &http_request("GET", "/profiles/b", "profiles.internal:8080", "", ""),
    );
    s.copy_context(lp, ctx_b_copy);
    s.enter_context(worker, ctx_b_copy, ts_worker);
    let redis = s.connect(worker, 24, addr("10.0.0.10:6379"), false);
    s.write(worker, redis, &resp::command(&["GET", "session:b"]));
    // A periodic task outside any request refreshes a cache.
    s.enter_context(lp, 0, ts_loop);
    s.task(lp, 0x3c, ctx_bg, "refresh_cache");
    s.enter_context(lp, ctx_bg, ts_loop);
    let bg = s.connect(lp, 25, addr("10.0.0.10:6379"), true);
    s.write(lp, bg, &resp::command(&["GET", "config:flags"]));
    s.wait_ms(2);
    s.read(worker, redis, b"$7\r\nuser-17\r\n");
    s.read(lp, bg, b"$2\r\n{}\r\n");
    s.read(
        lp,
        dep_b,
        &http_response("200 OK", "application/json", r#"{"name":"B"}"#),
    );
    s.read(
        lp,
        dep_a,
        &http_response("200 OK", "application/json", r#"{"name":"A"}"#),
    );
    s.wait_ms(1);
    s.enter_context(lp, ctx_b, ts_loop);
    s.respond(
        lp,
        b,
        &http_response(
            "200 OK",
            "application/json",
            r#"{"b":"B","session":"user-17"}"#,
        ),
    );
    s.enter_context(lp, ctx_a, ts_loop);
    s.respond(
        lp,
        a,
        &http_response("200 OK", "application/json", r#"{"a":"A"}"#),
    );
    s.enter_context(lp, 0, ts_loop);
    s.wait_ms(5);
    for (t, c) in [
        (lp, a),
        (lp, b),
        (lp, dep_a),
        (lp, dep_b),
        (worker, redis),
        (lp, bg),
    ] {
        s.close(t, c);
    }
    let run = check(&Scenario {
        name: "asyncio_lineage",
        what: "two concurrent requests on one event loop: calls from a child task, from a root task, and from a to_thread worker; a background task's call",
        records: s.records(),
        facts,
        targets: vec![500],
        python: vec![500],
    });
    assert_eq!(run.correlator.py.roots, 2);
}

/// A response whose body is written in three `sendto`s, the second larger than the kernel's
/// per-syscall cap (1 KiB here): its tail is reported lost (`DataLost`), the body has a gap,
/// and the next response on the connection is still parsed.
#[test]
fn gap_mid_body() {
    let w = Thread { pid: 600, tid: 600 };
    let mut s = Script::new().with_cap(1024);
    let mut facts = FixedFacts::default();
    facts.processes.insert(
        600,
        process(
            600,
            &["/srv/venv/bin/python", "/srv/venv/bin/gunicorn", "app:app"],
            "gunicorn",
        ),
    );
    facts
        .sockets
        .insert((600, 14), (addr("127.0.0.1:8000"), addr("127.0.0.1:44000")));
    let inb = s.accept(w, 14, addr("127.0.0.1:44000"));
    s.read(
        w,
        inb,
        &http_request("GET", "/report.csv", "reports.local", "", ""),
    );
    let rows: String = (0..100)
        .map(|i| format!("{i:04},item-{i:04},{:>6}\n", i * 37 % 1000))
        .collect();
    assert_eq!(rows.len(), 2200);
    s.wait_ms(1);
    s.respond(
        w,
        inb,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            rows.len()
        )
        .as_bytes(),
    );
    s.respond(w, inb, &rows.as_bytes()[..500]);
    s.respond(w, inb, &rows.as_bytes()[500..2000]);
    s.respond(w, inb, &rows.as_bytes()[2000..]);
    s.wait_ms(30);
    s.read(
        w,
        inb,
        &http_request("GET", "/ping", "reports.local", "", ""),
    );
    s.respond(w, inb, &http_response("200 OK", "text/plain", "pong"));
    s.wait_ms(5);
    s.close(w, inb);
    check(&Scenario {
        name: "gap_mid_body",
        what: "a response body with 476 bytes lost mid-body (beyond the per-syscall cap), then a keep-alive request",
        records: s.records(),
        facts,
        targets: vec![600],
        python: Vec::new(),
    });
}
