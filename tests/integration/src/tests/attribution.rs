//! Issue #7: every outbound call attributed to the inbound request that caused it, under
//! concurrency, for asyncio (uvicorn × {asyncio, uvloop} × {h11, httptools}, and
//! `--reset-contextvars`) and threads (gunicorn sync and gthread with keep-alive).
//!
//! Ground truth: every dependency call carries the inbound request's own id in its query
//! (`tests/apps/attr_app.py`, `attr_flask_app.py`). Load: 50 concurrent connections, random
//! delays in the handlers and random think time in the clients, keep-alive sequences of 2-5
//! requests, pipelined pairs, a > 64 KiB POST followed by a GET on the same connection.
//! Pass: precision 100 % (no exact event in a cassette of another request), recall 100 % (every
//! supported call exact in its own cassette), the raw-executor call (`pool`) only ever
//! `ambiguous/pool-thread`, and a time-window attribution scored on the same recording makes
//! mistakes (the test can fail).
//!
//! Requests per configuration: `TIMETRACER_ATTR_REQUESTS` (default 150, so the whole set stays
//! within a few minutes on a 2-core CI machine; `cargo xtask test --long` runs 3000).

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use super::scenario::Harness;
use crate::require_root;

const CONNS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Uvicorn {
        uvloop: bool,
        httptools: bool,
        reset: bool,
    },
    Gunicorn {
        gthread: bool,
    },
    /// `attr_stdlib_app.py` under the interpreter at this path (no third-party packages).
    Stdlib(&'static str),
    /// `attr_aiohttp_app.py`: aiohttp.web (a task per connection, request tasks created
    /// inside it) with aiohttp client, redis.asyncio, asyncpg and aiomysql calls (issue #18).
    Aiohttp,
    /// `attr_app.py` (FastAPI) under hypercorn (a task per connection from
    /// `asyncio.start_server`, an app task per request from its task group; issue #18).
    Hypercorn,
    /// `attr_unknown_app.py`: a hand-written `asyncio.start_server` server whose connection
    /// handlers and startup worker pool serve every request: no wrong `exact` (issue #18).
    Unknown,
    /// `attr_app.py` (FastAPI) under daphne (Twisted on the asyncio reactor; issue #18).
    Daphne,
    /// `attr_sanic_app.py` under Sanic's own server, `--single-process` (issue #18).
    Sanic,
    /// `attr_quart_app.py` under hypercorn (Quart's handler task inside hypercorn's app task).
    Quart,
    /// `attr_django_app.py` as ASGI under uvicorn: an async view (issue #18).
    DjangoAsgi,
    /// `attr_django_app.py` under Django's threaded `runserver`: a sync view (issue #18).
    DjangoRunserver,
    /// `attr_flask_app.py` under waitress (a thread pool; the main thread's asyncore loop reads
    /// requests and sends responses for the worker threads; issue #18).
    Waitress,
}

impl Server {
    /// The calls a plain `/r/<rid>` request of this server's app makes (besides the FastAPI
    /// app's extras).
    fn plain_expect(self) -> Vec<&'static str> {
        match self {
            Self::Aiohttp => vec!["a", "b", "r", "p", "m"],
            Self::Unknown => vec!["h", "w1", "w2"],
            Self::Uvicorn { .. }
            | Self::Hypercorn
            | Self::Daphne
            | Self::Sanic
            | Self::Quart
            | Self::DjangoAsgi
            | Self::Stdlib(_) => vec!["a", "b", "c", "t"],
            Self::Gunicorn { .. } | Self::Waitress | Self::DjangoRunserver => vec!["a", "b"],
        }
    }
}

/// One inbound request the client sends.
#[derive(Clone, Debug)]
struct Call {
    rid: String,
    method: &'static str,
    target: String,
    body: Vec<u8>,
    /// Dependency tags that must be attributed exactly to this request.
    expect: Vec<&'static str>,
    /// The raw-executor call: must be ambiguous.
    pool: bool,
}

/// What one client connection does.
#[derive(Clone, Debug)]
enum Session {
    /// Requests one after the other on one keep-alive connection (1 = single request).
    Seq(Vec<Call>),
    /// Two requests written in one `write`.
    Pipelined(Box<(Call, Call)>),
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn make_call(server: Server, rid: String, rng: &mut Rng, kind: u64) -> Call {
    let fastapi = matches!(
        server,
        Server::Uvicorn { .. } | Server::Hypercorn | Server::Daphne
    );
    if let Server::Aiohttp | Server::Unknown = server {
        let bg = server == Server::Aiohttp && rng.below(3) == 0;
        let mut expect = server.plain_expect();
        if bg {
            expect.push("bg");
        }
        return Call {
            target: format!("/r/{rid}?bg={}", u8::from(bg)),
            rid,
            method: "GET",
            body: Vec::new(),
            expect,
            pool: false,
        };
    }
    let mut c = Call {
        target: format!("/r/{rid}"),
        rid,
        method: "GET",
        body: Vec::new(),
        expect: server.plain_expect(),
        pool: false,
    };
    // Apps with only the plain route.
    if !fastapi && !matches!(server, Server::Gunicorn { .. } | Server::Waitress) {
        return c;
    }
    match kind {
        // Raw executor without context copy.
        0 => {
            c.target = format!("/pool/{}", c.rid);
            c.expect.clear();
            c.pool = true;
        }
        // FastAPI sync endpoint (anyio worker thread).
        1 if fastapi => {
            c.target = format!("/s/{}", c.rid);
            c.expect = vec!["s"];
        }
        _ if fastapi => {
            let (bg, later) = (rng.below(3) == 0, rng.below(4) == 0);
            c.target = format!("{}?bg={}&later={}", c.target, u8::from(bg), u8::from(later));
            if bg {
                c.expect.push("bg");
            }
            if later {
                c.expect.push("later");
            }
        }
        _ => {}
    }
    c
}

fn plan(server: Server, total: usize, rng: &mut Rng) -> Vec<Session> {
    let mut sessions = Vec::new();
    let mut n = 0;
    let next_call = |rng: &mut Rng, n: &mut usize| {
        *n += 1;
        // A few raw-executor calls, ~10 % sync endpoints, the rest async with random extras.
        let kind = if *n % 40 == 7 { 0 } else { 1 + rng.below(10) };
        make_call(server, format!("q{}", *n), rng, kind)
    };
    let keepalive = !matches!(server, Server::Gunicorn { gthread: false });
    if let Server::Stdlib(_) | Server::DjangoRunserver = server {
        // Singles and keep-alive sequences (its responses are not ordered for pipelining).
        while n < total {
            let k = 1 + rng.below(3) as usize;
            sessions.push(Session::Seq(
                (0..k).map(|_| next_call(rng, &mut n)).collect(),
            ));
        }
        return sessions;
    }
    // The > 64 KiB POST, then a GET on the same connection (CPython #140947 path).
    let mut big = next_call(rng, &mut n);
    big.method = "POST";
    big.target = format!("/r/{}", big.rid);
    big.pool = false;
    big.expect = server.plain_expect();
    big.body = vec![b'x'; 100_000];
    let mut first = vec![big];
    if keepalive {
        let mut after = next_call(rng, &mut n);
        if after.pool {
            after = next_call(rng, &mut n);
        }
        first.push(after);
    }
    sessions.push(Session::Seq(first));
    while n < total {
        match rng.below(if keepalive { 4 } else { 1 }) {
            1 => {
                let k = 2 + rng.below(4) as usize;
                sessions.push(Session::Seq(
                    (0..k).map(|_| next_call(rng, &mut n)).collect(),
                ));
            }
            2 => {
                let a = next_call(rng, &mut n);
                let b = next_call(rng, &mut n);
                sessions.push(Session::Pipelined(Box::new((a, b))));
            }
            _ => sessions.push(Session::Seq(vec![next_call(rng, &mut n)])),
        }
    }
    sessions
}

fn request_bytes(c: &Call) -> Vec<u8> {
    let mut v = format!(
        "{} {} HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n",
        c.method,
        c.target,
        c.body.len()
    )
    .into_bytes();
    v.extend_from_slice(&c.body);
    v
}

/// Reads one response; returns (status, body).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

fn run_session(port: u16, s: &Session, think: u64) -> Result<(), String> {
    let conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut w = conn.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(conn);
    let calls: Vec<&Call> = match s {
        Session::Seq(v) => {
            for (i, c) in v.iter().enumerate() {
                if i > 0 {
                    thread::sleep(Duration::from_millis(think));
                }
                w.write_all(&request_bytes(c)).map_err(|e| e.to_string())?;
                let (st, _) = read_response(&mut r).map_err(|e| format!("{}: {e}", c.rid))?;
                if st != 200 {
                    return Err(format!("{}: status {st}", c.rid));
                }
            }
            return Ok(());
        }
        Session::Pipelined(p) => vec![&p.0, &p.1],
    };
    let mut both = request_bytes(calls[0]);
    both.extend(request_bytes(calls[1]));
    w.write_all(&both).map_err(|e| e.to_string())?;
    for c in calls {
        let (st, _) = read_response(&mut r).map_err(|e| format!("{}: {e}", c.rid))?;
        if st != 200 {
            return Err(format!("{}: status {st}", c.rid));
        }
    }
    Ok(())
}

fn argv(h: &Harness, server: Server) -> Vec<OsString> {
    let port = h.app_port.to_string();
    match server {
        Server::Uvicorn {
            uvloop,
            httptools,
            reset,
        } => {
            let mut v: Vec<OsString> = vec![
                h.paths.venv_bin("uvicorn").into(),
                "attr_app:app".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.into(),
                "--no-access-log".into(),
                "--loop".into(),
                if uvloop { "uvloop" } else { "asyncio" }.into(),
                "--http".into(),
                if httptools { "httptools" } else { "h11" }.into(),
                "--backlog".into(),
                "512".into(),
            ];
            if reset {
                v.push("--reset-contextvars".into());
            }
            v
        }
        Server::Stdlib(python) => vec![
            python.into(),
            h.paths.apps.join("attr_stdlib_app.py").into(),
            port.into(),
            "127.0.0.1".into(),
            h.upstream_port.to_string().into(),
        ],
        Server::Hypercorn => vec![
            h.paths.venv_bin("hypercorn").into(),
            "attr_app:app".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}").into(),
            "--backlog".into(),
            "512".into(),
        ],
        Server::Aiohttp => vec![
            h.paths.venv_bin("python").into(),
            h.paths.apps.join("attr_aiohttp_app.py").into(),
            port.into(),
        ],
        Server::Unknown => vec![
            h.paths.venv_bin("python").into(),
            h.paths.apps.join("attr_unknown_app.py").into(),
            port.into(),
            "127.0.0.1".into(),
            h.upstream_port.to_string().into(),
        ],
        Server::Daphne => vec![
            h.paths.venv_bin("daphne").into(),
            "-b".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.into(),
            "attr_app:app".into(),
        ],
        Server::Sanic => vec![
            h.paths.venv_bin("sanic").into(),
            "attr_sanic_app:app".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.into(),
            "--single-process".into(),
            "--no-access-logs".into(),
            "--no-motd".into(),
        ],
        Server::Quart => vec![
            h.paths.venv_bin("hypercorn").into(),
            "attr_quart_app:app".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}").into(),
            "--backlog".into(),
            "512".into(),
        ],
        Server::DjangoAsgi => vec![
            h.paths.venv_bin("uvicorn").into(),
            "attr_django_app:application".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.into(),
            "--no-access-log".into(),
            "--backlog".into(),
            "512".into(),
        ],
        Server::DjangoRunserver => vec![
            h.paths.venv_bin("python").into(),
            h.paths.apps.join("attr_django_app.py").into(),
            "runserver".into(),
            format!("127.0.0.1:{port}").into(),
            "--noreload".into(),
            "--skip-checks".into(),
        ],
        Server::Waitress => vec![
            h.paths.venv_bin("waitress-serve").into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--threads".into(),
            "8".into(),
            "--backlog".into(),
            "512".into(),
            "attr_flask_app:app".into(),
        ],
        Server::Gunicorn { gthread } => {
            let mut v: Vec<OsString> = vec![h.paths.venv_bin("gunicorn").into(), "-w".into()];
            if gthread {
                v.extend(
                    ["1", "-k", "gthread", "--threads", "8", "--keep-alive", "5"].map(Into::into),
                );
            } else {
                // sync: one request at a time per worker; a few workers.
                v.extend(["4", "-k", "sync"].map(Into::into));
            }
            v.extend(["--graceful-timeout", "3", "--backlog", "512", "--chdir"].map(Into::into));
            v.push(h.paths.apps.clone().into());
            v.push("-b".into());
            v.push(format!("127.0.0.1:{port}").into());
            if super::scenario::gunicorn_has_control_socket(&h.paths) {
                v.push("--no-control-socket".into());
            }
            v.push("attr_flask_app:app".into());
            v
        }
    }
}

/// Path segment after the route: `/r/q12?bg=1` → `q12`.
fn rid_of_target(t: &str) -> Option<String> {
    let path = t.split('?').next()?;
    path.rsplit('/').next().map(str::to_owned)
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-11-22T23:28:08.792058+00:00`).
fn epoch_s(t: &str) -> Option<f64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let time = time.trim_end_matches("+00:00").trim_end_matches('Z');
    let mut p = time.split(':');
    let (hh, mm, ss) = (
        p.next()?.parse::<f64>().ok()?,
        p.next()?.parse::<f64>().ok()?,
        p.next()?.parse::<f64>().ok()?,
    );
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// The (rid, tag) ground truth an event carries: an HTTP call's query (`?rid=&tag=`), a
/// Redis key `tt:<rid>:<tag>`, or a SQL text literal `'<rid>:<tag>'`.
fn truth_of(e: &serde_json::Value) -> Option<(String, String)> {
    let q = &e["signature"]["query"];
    if let (Some(rid), Some(tag)) = (q["rid"].as_str(), q["tag"].as_str()) {
        return Some((rid.to_owned(), tag.to_owned()));
    }
    let db = &e["db"];
    if let Some(key) = db["args"][0].as_str().and_then(|k| k.strip_prefix("tt:"))
        && let Some((rid, tag)) = key.split_once(':')
    {
        return Some((rid.to_owned(), tag.to_owned()));
    }
    let sql = db["sql"].as_str()?;
    let lit = sql.split('\'').nth(1)?;
    let (rid, tag) = lit.split_once(':')?;
    Some((rid.to_owned(), tag.to_owned()))
}

/// What a run must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Precision and recall 100 %, raw executor ambiguous, time-window control wrong somewhere.
    Exact,
    /// Precision 100 % (no `exact` call in another request's cassette; an `ambiguous` call is
    /// listed in the cassette of every request open when it started, as a candidate, not a
    /// claim), recall at least 99 %, every miss present in its own cassette as `ambiguous`
    /// with a reason.
    Recall99,
    /// A layout the agent cannot prove: no `exact` call in another request's cassette.
    NoWrongExact,
    /// An interpreter the agent cannot follow: every call `ambiguous/unsupported-runtime`.
    Unsupported,
}

fn attribution(server: Server, name: &str) {
    let paths = require_root!();
    run(paths, server, name, requests(), Expect::Exact);
}

/// Requests per configuration (`TIMETRACER_ATTR_REQUESTS`, default 150).
fn requests() -> usize {
    std::env::var("TIMETRACER_ATTR_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn run(paths: crate::util::Paths, server: Server, name: &str, total: usize, want: Expect) {
    let needs = crate::dbservers::Needs {
        postgres: true,
        mariadb: true,
        redis: true,
        tls: false,
    };
    if server == Server::Aiohttp {
        crate::require!(crate::dbservers::missing_prerequisite(needs));
    }
    let mut h = Harness::new(paths, name);
    // The database servers live until the run is scored.
    let _servers = (server == Server::Aiohttp).then(|| {
        let root = h.out.parent().expect("temp dir").join("db");
        std::fs::create_dir_all(&root).expect("database servers' directory");
        let servers = crate::dbservers::start(needs, &root)
            .unwrap_or_else(|e| panic!("[{name}] database servers: {e:#}"));
        h.extra_env = servers.app_env();
        servers
    });
    if server == Server::DjangoRunserver {
        h.extra_env
            .push(("ATTR_DJANGO_MODE".to_owned(), "wsgi".to_owned()));
    }
    h.start_record_argv(argv(&h, server));
    // Discovery happens right after exec; give a slow start a moment more.
    thread::sleep(Duration::from_millis(300));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("[{name}] seed {seed}, {total} requests");
    let mut rng = Rng(seed);
    let sessions = plan(server, total, &mut rng);
    let calls: Vec<Call> = sessions
        .iter()
        .flat_map(|s| match s {
            Session::Seq(v) => v.clone(),
            Session::Pipelined(p) => vec![p.0.clone(), p.1.clone()],
        })
        .collect();
    let queue = Arc::new(Mutex::new(sessions));
    let port = h.client_port;
    let errors: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..CONNS)
            .map(|i| {
                let queue = Arc::clone(&queue);
                s.spawn(move || {
                    let mut rng = Rng(seed.wrapping_mul(i as u64 + 3) | 1);
                    let mut errs = Vec::new();
                    loop {
                        let Some(sess) = queue.lock().expect("queue").pop() else {
                            break;
                        };
                        thread::sleep(Duration::from_millis(rng.below(20)));
                        if let Err(e) = run_session(port, &sess, rng.below(20)) {
                            errs.push(e);
                        }
                    }
                    errs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    });
    let started = std::time::Instant::now();
    // Let BackgroundTasks / call_later calls finish and the agent finalize.
    thread::sleep(Duration::from_millis(3000));
    h.stop_agent();
    let agent_err = h
        .agent
        .as_ref()
        .map(|a| a.stderr_text())
        .unwrap_or_default();
    let mut errs: Vec<String> = errors.into_iter().map(|e| format!("client: {e}")).collect();
    let dir = crate::util::load_cassettes(&h.out);
    errs.extend(h.common_problems(&dir));

    // rid -> cassette index; (rid, tag) attributed exactly; pool calls seen.
    let mut by_rid: BTreeMap<String, usize> = BTreeMap::new();
    let mut exact: BTreeSet<(String, String)> = BTreeSet::new();
    let mut pool_ambiguous: BTreeSet<String> = BTreeSet::new();
    let (mut n_exact, mut n_amb) = (0usize, 0usize);
    // Expect::Recall99 / NoWrongExact: calls present as ambiguous in their own cassette, and
    // the reasons given.
    let mut ambiguous_own: BTreeSet<(String, String)> = BTreeSet::new();
    let mut amb_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut evidence: BTreeMap<String, usize> = BTreeMap::new();
    // For the time-window control: (abs start s, rid, tag) of every call; request windows.
    let mut call_times: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut windows: Vec<(f64, f64, String)> = Vec::new();
    for (ci, c) in dir.cassettes.iter().enumerate() {
        let target = c.json["request"]["target"].as_str().unwrap_or("");
        let Some(rid) = rid_of_target(target) else {
            errs.push(format!("{}: no rid in {target:?}", c.path.display()));
            continue;
        };
        if by_rid.insert(rid.clone(), ci).is_some() {
            errs.push(format!("{rid}: two cassettes"));
        }
        // Issue #18: the server address in every cassette, short-lived connections included
        // (a cassette without it cannot be replayed alone).
        let local = c.json["connection"]["local"].as_str().unwrap_or("");
        if local != format!("127.0.0.1:{}", h.app_port) {
            errs.push(format!(
                "{rid}: inbound connection local address {local:?}, want 127.0.0.1:{}",
                h.app_port
            ));
        }
        let t0 = c.json["session"]["recorded_at"].as_str().and_then(epoch_s);
        let dur = c.json["duration_ms"]
            .as_f64()
            .or_else(|| c.json["timing"]["response_end"].as_f64())
            .unwrap_or(0.0);
        if let Some(t0) = t0 {
            windows.push((t0, t0 + dur / 1000.0, rid.clone()));
        }
        let events = c.json["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let Some((erid, tag)) = truth_of(e) else {
                continue;
            };
            let (erid, tag) = (erid.as_str(), tag.as_str());
            if let (Some(t0), Some(off)) = (t0, e["start_offset_ms"].as_f64()) {
                call_times.insert((erid.to_owned(), tag.to_owned()), t0 + off / 1000.0);
            }
            match e["attribution"]["status"].as_str() {
                Some("exact") if want == Expect::Unsupported => {
                    errs.push(format!(
                        "rid={erid} tag={tag}: exact ({}) although the runtime is unsupported",
                        e["attribution"]["evidence"]
                    ));
                }
                Some("ambiguous")
                    if want == Expect::Unsupported
                        && e["attribution"]["reason"] == "unsupported-runtime" =>
                {
                    n_amb += 1;
                    exact.insert((erid.to_owned(), tag.to_owned()));
                }
                Some("exact") => {
                    n_exact += 1;
                    *evidence
                        .entry(
                            e["attribution"]["evidence"]
                                .as_str()
                                .unwrap_or("?")
                                .to_owned(),
                        )
                        .or_default() += 1;
                    if erid != rid {
                        errs.push(format!(
                            "PRECISION: call rid={erid} tag={tag} exact ({}) in the cassette of {rid}",
                            e["attribution"]["evidence"]
                        ));
                    } else if tag == "pool" {
                        errs.push(format!("{rid}: raw-executor call attributed exactly"));
                    } else {
                        exact.insert((rid.clone(), tag.to_owned()));
                    }
                }
                Some("ambiguous") => {
                    n_amb += 1;
                    let reason = e["attribution"]["reason"].as_str().unwrap_or("");
                    if tag == "pool" && reason == "pool-thread" {
                        pool_ambiguous.insert(erid.to_owned());
                    } else if want != Expect::Exact {
                        // Allowed (counted against recall below) when it carries a reason.
                        if reason.is_empty() {
                            errs.push(format!(
                                "rid={erid} tag={tag}: ambiguous without a reason in the cassette of {rid}"
                            ));
                        }
                        if erid == rid {
                            *amb_reasons.entry(reason.to_owned()).or_default() += 1;
                            ambiguous_own.insert((erid.to_owned(), tag.to_owned()));
                        }
                    } else {
                        errs.push(format!(
                            "RECALL: call rid={erid} tag={tag} ambiguous ({reason}) in the cassette of {rid}"
                        ));
                    }
                }
                other => errs.push(format!("{rid}: attribution status {other:?}")),
            }
        }
    }
    let mut missing = 0;
    let mut explained = 0usize;
    for c in &calls {
        if !by_rid.contains_key(&c.rid) {
            errs.push(format!(
                "{}: no cassette ({} {})",
                c.rid, c.method, c.target
            ));
            continue;
        }
        for t in &c.expect {
            if want == Expect::NoWrongExact {
                // Nothing is provable in this layout: right, ambiguous or not written.
                break;
            }
            let key = (c.rid.clone(), (*t).to_owned());
            if !exact.contains(&key) {
                if want != Expect::Exact && ambiguous_own.contains(&key) {
                    // An explained miss (`ambiguous` with its reason, in its own cassette).
                    explained += 1;
                    continue;
                }
                missing += 1;
                if missing <= 30 {
                    errs.push(format!(
                        "RECALL: {} {}: call {t} not attributed",
                        c.rid, c.target
                    ));
                }
            }
        }
        if c.pool && !pool_ambiguous.contains(&c.rid) {
            errs.push(format!(
                "{}: raw-executor call not reported ambiguous/pool-thread",
                c.rid
            ));
        }
    }
    if missing > 30 {
        errs.push(format!("RECALL: {missing} calls not attributed in all"));
    }
    // Negative control: time-window attribution (the latest request started before the call
    // and still open) scored on the same recording must make mistakes.
    let mut tw_wrong = 0;
    for ((rid, _), t) in &call_times {
        let pick = windows
            .iter()
            .filter(|(s, e, _)| *s <= *t && *t <= *e)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if pick.is_none_or(|(_, _, r)| r != rid) {
            tw_wrong += 1;
        }
    }
    let expected: usize = calls.iter().map(|c| c.expect.len()).sum();
    let recall = exact.len() as f64 / expected.max(1) as f64;
    match want {
        Expect::Recall99 if recall < 0.99 => errs.push(format!(
            "RECALL: {} of {expected} calls exact ({:.2} %), below 99 %; ambiguous reasons: {amb_reasons:?}",
            exact.len(),
            recall * 100.0
        )),
        _ => {}
    }
    let py = agent_err
        .lines()
        .filter(|l| {
            l.contains("python probes")
                || l.contains("python rules")
                || l.contains("unsupported-runtime")
        })
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!(
        "[{name}] {} requests, {} cassettes; {n_exact} exact events ({evidence:?}), {n_amb} ambiguous ({amb_reasons:?}); expected {expected} exact calls, {} found, {explained} explained misses; time-window: {tw_wrong}/{} wrong; scored in {:.1}s\n{py}",
        calls.len(),
        dir.cassettes.len(),
        exact.len(),
        call_times.len(),
        started.elapsed().as_secs_f64()
    );
    if tw_wrong == 0
        && !call_times.is_empty()
        && matches!(
            server,
            Server::Uvicorn { .. } | Server::Hypercorn | Server::Aiohttp
        )
    {
        errs.push(
            "negative control: time-window attribution made no mistake (the test cannot fail?)"
                .into(),
        );
    }
    h.assert_ok(&errs, &dir);
}

#[test]
fn attr_uvicorn_asyncio_h11() {
    attribution(
        Server::Uvicorn {
            uvloop: false,
            httptools: false,
            reset: false,
        },
        "attr_uvicorn_asyncio_h11",
    );
}

#[test]
fn attr_uvicorn_asyncio_httptools() {
    attribution(
        Server::Uvicorn {
            uvloop: false,
            httptools: true,
            reset: false,
        },
        "attr_uvicorn_asyncio_httptools",
    );
}

#[test]
fn attr_uvicorn_uvloop_h11() {
    attribution(
        Server::Uvicorn {
            uvloop: true,
            httptools: false,
            reset: false,
        },
        "attr_uvicorn_uvloop_h11",
    );
}

#[test]
fn attr_uvicorn_uvloop_httptools() {
    attribution(
        Server::Uvicorn {
            uvloop: true,
            httptools: true,
            reset: false,
        },
        "attr_uvicorn_uvloop_httptools",
    );
}

#[test]
fn attr_uvicorn_reset_contextvars() {
    attribution(
        Server::Uvicorn {
            uvloop: false,
            httptools: false,
            reset: true,
        },
        "attr_uvicorn_reset_contextvars",
    );
}

/// Issue #18: aiohttp.web (request tasks created inside per-connection tasks) with aiohttp
/// client, redis.asyncio, asyncpg and aiomysql calls, gather fan-out, background tasks that outlive the
/// request, keep-alive sequences, pipelined pairs and single-request connections.
#[test]
fn attr_aiohttp() {
    let paths = require_root!();
    run(
        paths,
        Server::Aiohttp,
        "attr_aiohttp",
        requests(),
        Expect::Recall99,
    );
}

/// Issue #18: FastAPI under hypercorn (asyncio loop, h11).
#[test]
fn attr_hypercorn() {
    let paths = require_root!();
    run(
        paths,
        Server::Hypercorn,
        "attr_hypercorn",
        requests(),
        Expect::Recall99,
    );
}

/// Issue #18: a hand-written asyncio server whose tasks serve many requests each (connection
/// handlers created at accept, a worker pool created at startup): no wrong `exact`.
#[test]
fn attr_unknown_layout() {
    let paths = require_root!();
    run(
        paths,
        Server::Unknown,
        "attr_unknown_layout",
        requests(),
        Expect::NoWrongExact,
    );
}

/// Issue #18: the servers in the issue's list beyond uvicorn, hypercorn, aiohttp and gunicorn.
/// Each runs the whole mix; what each must show is what its layout lets the kernel prove
/// (docs/attribution.md, "Servers").
#[test]
fn attr_daphne() {
    let paths = require_root!();
    run(
        paths,
        Server::Daphne,
        "attr_daphne",
        requests(),
        Expect::Recall99,
    );
}

/// Sanic serves every request of a connection from one task created at accept (before any
/// request byte): nothing ties a call to one of that task's requests, so every call must be
/// `ambiguous` (root-before-request / task-served-several-requests), never a wrong `exact`.
#[test]
fn attr_sanic() {
    let paths = require_root!();
    run(
        paths,
        Server::Sanic,
        "attr_sanic",
        requests(),
        Expect::NoWrongExact,
    );
}

/// Quart on CPython 3.11 sends the response from a task of its own (`asyncio.wait_for`
/// wraps `_send_response` in a task) that is a sibling of the view's calls, not their
/// ancestor: every call must be `ambiguous/no-response-writer`, never a wrong `exact`.
#[test]
fn attr_quart() {
    let paths = require_root!();
    run(
        paths,
        Server::Quart,
        "attr_quart",
        requests(),
        Expect::NoWrongExact,
    );
}

#[test]
fn attr_django_asgi() {
    let paths = require_root!();
    run(
        paths,
        Server::DjangoAsgi,
        "attr_django_asgi",
        requests(),
        Expect::Recall99,
    );
}

#[test]
fn attr_django_runserver() {
    let paths = require_root!();
    run(
        paths,
        Server::DjangoRunserver,
        "attr_django_runserver",
        requests(),
        Expect::Recall99,
    );
}

#[test]
fn attr_waitress() {
    let paths = require_root!();
    run(
        paths,
        Server::Waitress,
        "attr_waitress",
        requests(),
        Expect::Recall99,
    );
}

#[test]
fn attr_gunicorn_sync() {
    attribution(Server::Gunicorn { gthread: false }, "attr_gunicorn_sync");
}

#[test]
fn attr_gunicorn_gthread() {
    attribution(Server::Gunicorn { gthread: true }, "attr_gunicorn_gthread");
}

/// The stdlib app under the CPython builds attribution supports and refuses: pyenv/uv-style
/// builds (with `.symtab`) of 3.11, 3.12 and 3.13 and the distribution's static, stripped,
/// non-PIE `/usr/bin/python3` (Debian's 3.11; symbol-free path: `tp_init` of the
/// `_asyncio.Task` type) must attribute everything exactly; 3.9 and 3.10 (no
/// `native_thread_id`) must flag every call `unsupported-runtime`. Each is searched where it
/// is usually installed (see `prereq::find_cpython`); any one missing skips the test, which
/// is a failure under `TIMETRACER_REQUIRE_PRIVILEGED=1`.
#[test]
fn attr_stdlib_pythons() {
    let paths = require_root!();
    let leak = |p: &std::path::Path| -> &'static str {
        Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
    };
    let by_version = |minor: u32| {
        if minor >= 11 {
            Expect::Exact
        } else {
            Expect::Unsupported
        }
    };
    let mut pythons: Vec<(&'static str, Expect)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    match crate::prereq::distro_python() {
        Some((p, minor)) => pythons.push((leak(&p), by_version(minor))),
        None => missing.push(
            "the distribution's /usr/bin/python3 (Debian package python3-minimal)".to_owned(),
        ),
    }
    for minor in [11, 12, 13, 10, 9] {
        match crate::prereq::find_cpython(minor) {
            Some(p) => pythons.push((leak(&p), by_version(minor))),
            None => missing.push(format!("CPython 3.{minor}")),
        }
    }
    if !missing.is_empty() {
        // Without the flag: say so, then run the interpreters that are here.
        crate::util::skip_or_fail(&format!(
            "attr_stdlib_pythons covers 3.9-3.13 and the distribution's python3, but found no {} \
             (searched {})",
            missing.join(", no "),
            crate::prereq::CPYTHON_SEARCH
        ));
    }
    for (python, want) in pythons {
        let name = format!(
            "attr_stdlib_{}",
            python
                .rsplit('/')
                .next()
                .unwrap_or("python")
                .replace('.', "_")
        );
        let name = if python.starts_with("/usr/bin/") {
            format!("{name}_distro")
        } else {
            name
        };
        eprintln!("[{name}] {python}: want {want:?}");
        run(paths.clone(), Server::Stdlib(python), &name, 40, want);
    }
}
