//! The shared scenario machinery: upstream + app + agent, requests with their ground truth,
//! and the cassette checks.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    self, Cassette, CassetteDir, HttpConn, HttpResponse, Paths, ProcGuard, check_body,
    check_body_digest,
};

/// Bodies up to this size must be captured whole (the upstream's `/big` is 300 KiB).
pub(crate) const MAX_BODY: usize = 1 << 20;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The app under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum App {
    /// `uvicorn fastapi_app:app` (asyncio, one shared `httpx.AsyncClient`).
    FastApi,
    /// `gunicorn -k gthread flask_app:app` (threads, one shared `requests.Session`).
    Flask,
    /// `python lazy_ssl_app.py` (stdlib server that imports `ssl` only at its first request).
    LazySsl,
}

impl App {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FastApi => "uvicorn",
            Self::Flask => "gunicorn",
            Self::LazySsl => "lazy_ssl_app",
        }
    }

    /// Program and arguments that serve the app on 127.0.0.1:`port`.
    pub(crate) fn argv(self, paths: &Paths, port: u16) -> Vec<OsString> {
        let port = port.to_string();
        match self {
            Self::LazySsl => vec![
                paths.venv_bin("python").into(),
                paths.apps.join("lazy_ssl_app.py").into(),
                port.into(),
            ],
            Self::FastApi => vec![
                paths.venv_bin("uvicorn").into(),
                "fastapi_app:app".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.into(),
            ],
            Self::Flask => {
                let mut v: Vec<OsString> = vec![
                    paths.venv_bin("gunicorn").into(),
                    "-w".into(),
                    "1".into(),
                    "-k".into(),
                    "gthread".into(),
                    "--threads".into(),
                    "4".into(),
                    "--keep-alive".into(),
                    "5".into(),
                    // gthread workers with idle keep-alive connections sometimes wait the
                    // whole graceful timeout (30 s) on SIGINT, with or without tracing.
                    "--graceful-timeout".into(),
                    "3".into(),
                    "--chdir".into(),
                    paths.apps.clone().into(),
                    "-b".into(),
                    format!("127.0.0.1:{port}").into(),
                ];
                if gunicorn_has_control_socket(paths) {
                    // gunicorn >= 24 listens on ~/.gunicorn/gunicorn.ctl by default; tests must
                    // not share (or leave behind) a socket in root's home.
                    v.push("--no-control-socket".into());
                }
                v.push("flask_app:app".into());
                v
            }
        }
    }
}

pub(crate) fn gunicorn_has_control_socket(paths: &Paths) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new(paths.venv_bin("gunicorn"))
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-control-socket"))
    })
}

/// One request to send, with what the app is expected to do for it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: &'static str,
    /// Raw target, always with a unique `?req=` query so cassettes match one request.
    pub(crate) target: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) status: u16,
    /// Upstream paths the app calls, in order.
    pub(crate) calls: Vec<String>,
    /// The app raises; the cassette must carry the traceback.
    pub(crate) traceback: bool,
}

impl Req {
    /// The request for app endpoint `endpoint` (`users/ID`, `text`, `big`, `chunked`, `fail`,
    /// `multi`, `plain`, `boom`, `echo`), tagged `tag` in its query.
    pub(crate) fn new(endpoint: &str, tag: &str) -> Self {
        let target = format!("/{endpoint}?req={tag}");
        let mut r = Self {
            method: "GET",
            target,
            body: None,
            status: 200,
            calls: vec![format!("/{endpoint}")],
            traceback: false,
        };
        match endpoint {
            e if e.starts_with("users/") => r.calls = vec![format!("/json/{}", &e[6..])],
            "text" | "big" | "chunked" => {}
            "fail" => r.status = 502,
            "multi" => r.calls = vec!["/json/1".into(), "/text".into(), "/json/2".into()],
            "plain" => r.calls = vec![],
            "boom" => {
                r.status = 500;
                r.calls = vec![];
                r.traceback = true;
            }
            "echo" => {
                r.method = "POST";
                r.body = Some(format!(r#"{{"msg":"hello {tag}","n":42,"ok":true}}"#).into_bytes());
            }
            // Flask only: a call to a port nothing listens on, answered 503 with its errno.
            "refused" => {
                r.status = 503;
                r.calls = vec![];
            }
            other => panic!("unknown endpoint {other}"),
        }
        r
    }

    /// The target's path (no query).
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
}

/// One outbound call as the app reported it in its JSON response.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) url: String,
    /// URL path without query.
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) sha256: String,
    pub(crate) len: usize,
}

/// A request that was sent and the response the client got.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) req: Req,
    pub(crate) resp: HttpResponse,
    /// The app's own report of its upstream calls (empty when it did not return JSON).
    pub(crate) calls: Vec<Call>,
}

fn parse_calls(body: &[u8]) -> Vec<Call> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    v["calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let url = c["url"].as_str().unwrap_or_default().to_owned();
                    let after_scheme = url.split_once("://").map(|x| x.1).unwrap_or(&url);
                    let path = after_scheme
                        .find('/')
                        .map(|i| &after_scheme[i..])
                        .unwrap_or("/")
                        .split('?')
                        .next()
                        .unwrap_or("/")
                        .to_owned();
                    Call {
                        url,
                        path,
                        status: c["status"].as_u64().unwrap_or(0) as u16,
                        sha256: c["sha256"].as_str().unwrap_or_default().to_owned(),
                        len: c["len"].as_u64().unwrap_or(0) as usize,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `req` on `conn`.
pub(crate) fn send(conn: &mut HttpConn, req: &Req) -> std::io::Result<Sent> {
    let body = req.body.as_deref().map(|b| ("application/json", b));
    let resp = conn.request(req.method, &req.target, body)?;
    let calls = parse_calls(&resp.body);
    Ok(Sent {
        req: req.clone(),
        resp,
        calls,
    })
}

/// Options for [`Harness::verify`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VerifyOpts {
    /// Accept `attribution.status == "ambiguous"` (the event may then sit in any cassette).
    pub(crate) allow_ambiguous: bool,
}

/// One test's world: temp dir, upstream, app, agent.
pub(crate) struct Harness {
    pub(crate) paths: Paths,
    pub(crate) name: String,
    dir: Option<TempDir>,
    pub(crate) out: PathBuf,
    pub(crate) upstream_port: u16,
    pub(crate) upstream_log: PathBuf,
    pub(crate) app_port: u16,
    pub(crate) agent: Option<ProcGuard>,
    pub(crate) app: Option<ProcGuard>,
    pub(crate) upstream: Option<ProcGuard>,
    /// Test PKI when the upstream or the app speak TLS.
    pub(crate) pki: Option<util::Pki>,
    /// The upstream serves HTTPS.
    pub(crate) upstream_tls: bool,
    /// The app serves HTTPS itself; clients go through a plaintext→TLS tunnel.
    pub(crate) app_tls: bool,
    /// Port the test client connects to (the app, or the tunnel in front of it).
    pub(crate) client_port: u16,
    tunnel: Option<ProcGuard>,
    /// More environment for the app (database servers' `PG_*`, `REDIS_*`, ...).
    pub(crate) extra_env: Vec<(String, String)>,
}

impl Harness {
    /// Temp dir + a running upstream.
    pub(crate) fn new(paths: Paths, name: &str) -> Self {
        Self::with_tls(paths, name, false)
    }

    /// Temp dir + a running upstream that serves HTTPS with a certificate of a test CA made for
    /// this test (`upstream_tls`).
    pub(crate) fn with_tls(paths: Paths, name: &str, upstream_tls: bool) -> Self {
        let dir = util::temp_dir(name);
        let root = dir.path().to_path_buf();
        let pki = upstream_tls.then(|| util::make_test_pki(&root).expect("test PKI (openssl)"));
        let out = root.join("cassettes");
        let upstream_log = root.join("upstream.jsonl");
        let upstream_port = util::free_port();
        let mut cmd = util::command(
            paths.venv_bin("python"),
            [
                OsString::from(paths.apps.join("upstream.py")),
                upstream_port.to_string().into(),
                upstream_log.clone().into(),
            ],
        );
        cmd.current_dir(&paths.apps);
        if let Some(p) = &pki {
            cmd.env("UPSTREAM_TLS_CERT", &p.cert)
                .env("UPSTREAM_TLS_KEY", &p.key);
        }
        let mut upstream = ProcGuard::spawn("upstream", cmd, &root).expect("spawn upstream");
        if let Err(e) = upstream.wait_for_port(upstream_port, START_TIMEOUT) {
            panic!("{e:#}\n{}", upstream.diagnostics());
        }
        let app_port = util::free_port();
        Self {
            paths,
            name: name.to_owned(),
            dir: Some(dir),
            out,
            upstream_port,
            upstream_log,
            app_port,
            agent: None,
            app: None,
            upstream: Some(upstream),
            pki,
            upstream_tls,
            app_tls: false,
            client_port: app_port,
            extra_env: Vec::new(),
            tunnel: None,
        }
    }

    /// The app serves HTTPS itself (uvicorn `--ssl-*`, gunicorn `--certfile/--keyfile`) with a
    /// certificate of the test CA; test clients reach it through a plaintext→TLS tunnel.
    pub(crate) fn serve_tls(&mut self) {
        if self.pki.is_none() {
            self.pki = Some(util::make_test_pki(&self.root()).expect("test PKI (openssl)"));
        }
        self.app_tls = true;
    }

    /// Extra app arguments for serving TLS.
    fn tls_args(&self, app: App) -> Vec<OsString> {
        let Some(p) = self.pki.as_ref().filter(|_| self.app_tls) else {
            return Vec::new();
        };
        let (k, c) = match app {
            App::FastApi => ("--ssl-keyfile", "--ssl-certfile"),
            App::Flask => ("--keyfile", "--certfile"),
            App::LazySsl => return Vec::new(),
        };
        vec![
            k.into(),
            p.key.clone().into(),
            c.into(),
            p.cert.clone().into(),
        ]
    }

    /// Starts the plaintext→TLS tunnel in front of an app that serves TLS.
    fn start_tunnel(&mut self) {
        let Some(p) = self.pki.as_ref().filter(|_| self.app_tls) else {
            return;
        };
        let port = util::free_port();
        let cmd = util::command(
            self.paths.venv_bin("python"),
            [
                OsString::from(self.paths.apps.join("tls_tunnel.py")),
                port.to_string().into(),
                self.app_port.to_string().into(),
                p.ca.clone().into(),
            ],
        );
        let mut t = ProcGuard::spawn("tunnel", cmd, &self.root()).expect("spawn tunnel");
        if let Err(e) = t.wait_for_port(port, START_TIMEOUT) {
            self.fail(&[format!("tls tunnel did not start: {e:#}")], None);
        }
        self.tunnel = Some(t);
        self.client_port = port;
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.as_ref().expect("temp dir").path().to_path_buf()
    }

    /// The app's working directory and environment (upstream URL and CA), as recorded.
    pub(crate) fn app_env(&self, cmd: &mut Command) {
        cmd.current_dir(&self.paths.apps)
            .env("PWD", &self.paths.apps)
            .env("UPSTREAM_URL", self.upstream_url(""));
        if let Some(p) = &self.pki {
            cmd.env("UPSTREAM_CA", &p.ca);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
    }

    /// `timetracer-agent record --out D --max-body N -- <app>`; waits for the app's port.
    pub(crate) fn start_record(&mut self, app: App) {
        let mut argv = app.argv(&self.paths, self.app_port);
        argv.extend(self.tls_args(app));
        self.start_record_argv(argv);
    }

    /// `timetracer-agent record --out D --max-body N -- <argv>`; waits for `app_port`.
    pub(crate) fn start_record_argv(&mut self, argv: Vec<OsString>) {
        let mut args: Vec<OsString> = vec![
            "record".into(),
            "--out".into(),
            self.out.clone().into(),
            "--max-body".into(),
            MAX_BODY.to_string().into(),
            "--".into(),
        ];
        args.extend(argv);
        let mut cmd = util::command(&self.paths.agent, args);
        self.app_env(&mut cmd);
        let agent = ProcGuard::spawn("agent", cmd, &self.root()).expect("spawn agent");
        let agent = self.agent.insert(agent);
        if let Err(e) = agent.wait_for_port(self.app_port, START_TIMEOUT) {
            self.fail(&[format!("app under `record` did not start: {e:#}")], None);
        }
        self.start_tunnel();
    }

    /// Starts the app without the agent; waits for its port.
    pub(crate) fn start_app(&mut self, app: App) {
        let mut argv = app.argv(&self.paths, self.app_port);
        argv.extend(self.tls_args(app));
        let mut cmd = util::command(&argv[0], &argv[1..]);
        self.app_env(&mut cmd);
        let guard = ProcGuard::spawn(app.name(), cmd, &self.root()).expect("spawn app");
        let guard = self.app.insert(guard);
        if let Err(e) = guard.wait_for_port(self.app_port, START_TIMEOUT) {
            self.fail(&[format!("app did not start: {e:#}")], None);
        }
        self.start_tunnel();
    }

    /// `timetracer-agent attach --pid <app> --out D --max-body N`; waits for "attached".
    pub(crate) fn attach(&mut self) {
        let pid = self.app.as_ref().expect("start_app first").pid();
        self.attach_to(&["--pid".into(), pid.to_string().into()], &[]);
    }

    /// `timetracer-agent attach <selection> --out D --max-body N` with `env` added; waits for
    /// "attached".
    pub(crate) fn attach_to(&mut self, selection: &[OsString], env: &[(&str, &str)]) {
        let mut args: Vec<OsString> = vec!["attach".into()];
        args.extend_from_slice(selection);
        args.extend([
            "--out".into(),
            self.out.clone().into(),
            "--max-body".into(),
            MAX_BODY.to_string().into(),
        ]);
        let mut cmd = util::command(&self.paths.agent, args);
        cmd.envs(env.iter().copied());
        let agent = ProcGuard::spawn("agent", cmd, &self.root()).expect("spawn agent");
        let agent = self.agent.insert(agent);
        if let Err(e) = agent.wait_for_stderr("attached", ATTACH_TIMEOUT) {
            self.fail(&[format!("agent attach not ready: {e:#}")], None);
        }
    }

    /// SIGINT to the agent only (it forwards to its command under `record`), then waits.
    pub(crate) fn stop_agent(&mut self) -> ExitStatus {
        let agent = self.agent.as_mut().expect("agent running");
        if let Err(e) = agent.signal(Signal::SIGINT) {
            let msg = format!("{e:#}");
            self.fail(&[msg], None);
        }
        match agent.wait_timeout(STOP_TIMEOUT) {
            Some(s) => {
                eprintln!("[{}] agent exited: {s}", self.name);
                s
            }
            None => self.fail(
                &[format!(
                    "agent did not exit within {STOP_TIMEOUT:?} of SIGINT"
                )],
                None,
            ),
        }
    }

    /// Opens a keep-alive connection to the app.
    pub(crate) fn connect(&self) -> HttpConn {
        HttpConn::connect(self.client_port)
            .unwrap_or_else(|e| self.fail(&[format!("connect to app: {e}")], None))
    }

    /// Sends `req` on `conn`; I/O errors fail the test with diagnostics.
    pub(crate) fn send(&self, conn: &mut HttpConn, req: &Req) -> Sent {
        send(conn, req).unwrap_or_else(|e| {
            self.fail(
                &[format!(
                    "{} {} (conn :{}) failed: {e}",
                    req.method,
                    req.target,
                    conn.local_port()
                )],
                None,
            )
        })
    }

    /// Sends `req` on a fresh connection.
    pub(crate) fn send_fresh(&self, req: &Req) -> Sent {
        let mut c = self.connect();
        let s = self.send(&mut c, req);
        c.close();
        s
    }

    /// Everything useful to read when a test fails.
    pub(crate) fn diagnostics(&self, dir: Option<&CassetteDir>) -> String {
        let mut s = String::new();
        for g in [&self.agent, &self.app, &self.upstream, &self.tunnel]
            .into_iter()
            .flatten()
        {
            s.push_str(&g.diagnostics());
        }
        let loaded;
        let dir = match dir {
            Some(d) => d,
            None => {
                loaded = util::load_cassettes(&self.out);
                &loaded
            }
        };
        let _ = writeln!(
            s,
            "----- cassettes under {} -----\n{}",
            self.out.display(),
            dir.listing()
        );
        let log = std::fs::read_to_string(&self.upstream_log).unwrap_or_default();
        let _ = writeln!(
            s,
            "----- upstream log (tail) -----\n{}",
            util::tail(&log, 30)
        );
        s
    }

    /// Prints diagnostics and panics with all `errors`.
    pub(crate) fn fail(&self, errors: &[String], dir: Option<&CassetteDir>) -> ! {
        eprintln!("{}", self.diagnostics(dir));
        if std::env::var("TIMETRACER_KEEP_ARTIFACTS").is_ok_and(|v| v == "1") {
            eprintln!("artifacts kept in {}", self.root().display());
        }
        panic!(
            "[{}] {} problem(s):\n  - {}",
            self.name,
            errors.len(),
            errors.join("\n  - ")
        );
    }

    /// Panics with diagnostics if `errors` is not empty.
    pub(crate) fn assert_ok(&self, errors: &[String], dir: &CassetteDir) {
        if !errors.is_empty() {
            self.fail(errors, Some(dir));
        }
        eprintln!(
            "[{}] OK: {}",
            self.name,
            dir.listing().lines().next().unwrap_or_default()
        );
    }

    /// Problems every cassette directory must be free of: unparseable files, bad modes, left-over
    /// temp files, schema violations, non-zero drop counters.
    pub(crate) fn common_problems(&self, dir: &CassetteDir) -> Vec<String> {
        let mut errs = dir.problems.clone();
        for t in &dir.temp_files {
            errs.push(format!(
                "temp file left after a clean exit: {}",
                t.display()
            ));
        }
        for c in &dir.cassettes {
            errs.extend(util::schema_problems(&self.paths, c));
            errs.extend(drop_problems(c));
            let name = c
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.starts_with(&format!("{}__", c.method())) {
                errs.push(format!(
                    "{}: file name does not start with `{}__`",
                    c.path.display(),
                    c.method()
                ));
            }
            let parent = c
                .path
                .parent()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !is_date_dir(&parent) {
                errs.push(format!(
                    "{}: parent dir is not YYYY-MM-DD",
                    c.path.display()
                ));
            }
        }
        errs
    }

    /// Stops the upstream (replay must not need it).
    pub(crate) fn stop_upstream(&mut self) {
        if let Some(mut u) = self.upstream.take() {
            let _ = u.signal(Signal::SIGTERM);
            let _ = u.wait_timeout(STOP_TIMEOUT);
        }
    }

    /// Directory the agent writes cassettes to.
    pub(crate) fn out_dir(&self) -> PathBuf {
        self.out.clone()
    }

    /// Port the app listens on.
    pub(crate) fn app_port(&self) -> u16 {
        self.app_port
    }

    /// `timetracer-agent replay --json --run-recorded-command <args>` with the app's
    /// environment (the recorded command line is used unless `args` has `-- CMD`). Returns the exit code, the JSON
    /// verdict and stderr.
    pub(crate) fn replay(&self, args: &[OsString], env: &[(&str, &str)]) -> Replayed {
        // The cassettes are this test's own recording: their command is the one it launched.
        let mut all: Vec<OsString> = vec![
            "replay".into(),
            "--json".into(),
            "--run-recorded-command".into(),
        ];
        all.extend(args.iter().cloned());
        let mut cmd = util::command(&self.paths.agent, all);
        self.app_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run timetracer-agent replay");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let verdict: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Replayed {
            code: out.status.code().unwrap_or(-1),
            verdict,
            stderr,
        }
    }

    /// The upstream's URL for `path` as the app's client sees it.
    pub(crate) fn upstream_url(&self, path: &str) -> String {
        if self.upstream_tls {
            format!("https://localhost:{}{path}", self.upstream_port)
        } else {
            format!("http://127.0.0.1:{}{path}", self.upstream_port)
        }
    }

    /// Checks the cassettes under `out` against `sent` (exactly one cassette per request, no
    /// others) and the upstream log. Returns every problem found.
    pub(crate) fn verify(&self, sent: &[Sent], opts: VerifyOpts) -> (CassetteDir, Vec<String>) {
        let dir = util::load_cassettes(&self.out);
        let mut errs = self.common_problems(&dir);
        let upstream_log = util::read_json_lines(&self.upstream_log);
        let mut used = HashSet::new();
        for s in sent {
            errs.extend(self.check_sent(s, &dir, &upstream_log, opts, &mut used));
        }
        for (i, c) in dir.cassettes.iter().enumerate() {
            if !used.contains(&i) {
                errs.push(format!(
                    "unexpected cassette (no such request sent after tracing began): {}",
                    c.summary()
                ));
            }
        }
        (dir, errs)
    }

    fn check_sent(
        &self,
        s: &Sent,
        dir: &CassetteDir,
        upstream_log: &[Value],
        opts: VerifyOpts,
        used: &mut HashSet<usize>,
    ) -> Vec<String> {
        let mut errs = Vec::new();
        let r = &s.req;
        let who = format!("{} {}", r.method, r.target);
        // The app itself must have behaved (else the agent disturbed it, or the app is broken).
        if s.resp.status != r.status {
            errs.push(format!(
                "{who}: client got status {} (want {})",
                s.resp.status, r.status
            ));
        }
        let got_paths: Vec<&str> = s.calls.iter().map(|c| c.path.as_str()).collect();
        if got_paths != r.calls {
            errs.push(format!(
                "{who}: app reports calls {got_paths:?} (want {:?})",
                r.calls
            ));
        }
        // Upstream ground truth: the app received exactly what the upstream sent.
        for c in &s.calls {
            let found = upstream_log.iter().any(|l| {
                l["path"] == c.path.as_str()
                    && l["sha256"] == c.sha256.as_str()
                    && l["status"] == c.status
            });
            if !found {
                errs.push(format!(
                    "{who}: app call {} ({} sha {}) not in the upstream log",
                    c.url, c.status, c.sha256
                ));
            }
        }

        let matches: Vec<usize> = dir
            .cassettes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.json["request"]["target"].as_str() == Some(r.target.as_str()))
            .map(|(i, _)| i)
            .collect();
        let c = match matches.as_slice() {
            [i] => {
                used.insert(*i);
                &dir.cassettes[*i]
            }
            [] => {
                errs.push(format!(
                    "{who}: no cassette with request.target == {:?}",
                    r.target
                ));
                return errs;
            }
            many => {
                used.extend(many.iter().copied());
                errs.push(format!("{who}: {} cassettes for one request", many.len()));
                return errs;
            }
        };
        let cp = c.path.display();
        if self.app_tls && c.json["connection"]["tls"] != true {
            errs.push(format!(
                "{cp}: connection.tls {} (the app served TLS)",
                c.json["connection"]["tls"]
            ));
        }
        let req = &c.json["request"];
        let resp = &c.json["response"];
        if req["method"] != r.method {
            errs.push(format!(
                "{cp}: request.method {} (want {})",
                req["method"], r.method
            ));
        }
        if req["path"] != r.path() {
            errs.push(format!(
                "{cp}: request.path {} (want {:?})",
                req["path"],
                r.path()
            ));
        }
        if req["query"].is_null() {
            errs.push(format!("{cp}: request.query missing (target has `?req=`)"));
        }
        if let Some(b) = &r.body {
            errs.extend(check_body(&format!("{cp}: request.body"), &req["body"], b));
        }
        if resp["status"] != s.resp.status {
            errs.push(format!(
                "{cp}: response.status {} (client got {})",
                resp["status"], s.resp.status
            ));
        }
        errs.extend(check_body(
            &format!("{cp}: response.body"),
            &resp["body"],
            &s.resp.body,
        ));

        let error = &c.json["error"];
        if s.resp.status >= 500 && error["status"] != s.resp.status {
            errs.push(format!(
                "{cp}: error.status {} (want {})",
                error["status"], s.resp.status
            ));
        }
        if r.traceback {
            let tb = error["traceback"].as_str().unwrap_or_default();
            if !tb.contains("ZeroDivisionError") || !tb.contains("Traceback") {
                errs.push(format!(
                    "{cp}: error.traceback lacks the ZeroDivisionError traceback: {:?}",
                    error
                ));
            }
        }

        let events = c.http_events();
        if events.len() != s.calls.len() {
            errs.push(format!(
                "{cp}: {} http.client events, app made {} calls ({:?})",
                events.len(),
                s.calls.len(),
                s.calls.iter().map(|c| &c.path).collect::<Vec<_>>()
            ));
        }
        for (i, (e, call)) in events.iter().zip(&s.calls).enumerate() {
            let w = format!("{cp}: events[{i}] ({})", call.path);
            let want_url = self.upstream_url(&call.path);
            if e["signature"]["url"] != want_url.as_str() {
                errs.push(format!(
                    "{w}: signature.url {} (want {want_url:?})",
                    e["signature"]["url"]
                ));
            }
            let want_method = if call.path == "/echo" { "POST" } else { "GET" };
            if e["signature"]["method"] != want_method {
                errs.push(format!(
                    "{w}: signature.method {} (want {want_method})",
                    e["signature"]["method"]
                ));
            }
            if call.url.contains('?') && e["signature"]["query"].is_null() {
                errs.push(format!("{w}: signature.query missing for {}", call.url));
            }
            if e["result"]["status"] != call.status {
                errs.push(format!(
                    "{w}: result.status {} (app saw {})",
                    e["result"]["status"], call.status
                ));
            }
            errs.extend(check_body_digest(
                &format!("{w}: result.body"),
                &e["result"]["body"],
                &call.sha256,
                call.len,
            ));
            if let (Some(b), "/echo") = (&r.body, call.path.as_str()) {
                errs.extend(check_body(
                    &format!("{w}: request.body"),
                    &e["request"]["body"],
                    b,
                ));
            }
            if self.upstream_tls {
                if e["connection"]["tls"] != true {
                    errs.push(format!(
                        "{w}: connection.tls {} (want true)",
                        e["connection"]["tls"]
                    ));
                }
                if e["connection"]["server_name"] != "localhost" {
                    errs.push(format!(
                        "{w}: connection.server_name {} (want \"localhost\", the SNI)",
                        e["connection"]["server_name"]
                    ));
                }
            }
            let attr = e["attribution"]["status"].as_str();
            let ok = attr == Some("exact") || (opts.allow_ambiguous && attr == Some("ambiguous"));
            if !ok {
                errs.push(format!(
                    "{w}: attribution {} (want exact)",
                    e["attribution"]
                ));
            }
        }
        errs
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Agent first (it may be tracing the app), then app, then upstream.
        drop(self.agent.take());
        drop(self.tunnel.take());
        drop(self.app.take());
        drop(self.upstream.take());
        if std::env::var("TIMETRACER_KEEP_ARTIFACTS").is_ok_and(|v| v == "1")
            && let Some(d) = self.dir.take()
        {
            eprintln!("[{}] artifacts kept in {}", self.name, d.keep().display());
        }
    }
}

/// `stats.drops` must exist and every counter must be 0.
pub(crate) fn drop_problems(c: &Cassette) -> Vec<String> {
    match c.json["stats"]["drops"].as_object() {
        None => vec![format!("{}: stats.drops missing", c.path.display())],
        Some(m) => m
            .iter()
            .filter(|(_, v)| v.as_u64() != Some(0))
            .map(|(k, v)| format!("{}: stats.drops.{k} = {v}", c.path.display()))
            .collect(),
    }
}

fn is_date_dir(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// What `timetracer-agent replay --json` did.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) code: i32,
    pub(crate) verdict: Value,
    pub(crate) stderr: String,
}

impl Replayed {
    /// The human-readable report and stderr, for assertion messages.
    pub(crate) fn explain(&self) -> String {
        format!(
            "exit {}\n{}\n--- stderr ---\n{}",
            self.code,
            self.verdict["report"].as_str().unwrap_or("(no verdict)"),
            util::tail(&self.stderr, 40)
        )
    }

    /// Every miss of every request (and of app startup), as JSON.
    pub(crate) fn misses(&self) -> Vec<Value> {
        let mut v: Vec<Value> = self.verdict["startup_misses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in self.verdict["requests"].as_array().into_iter().flatten() {
            v.extend(r["misses"].as_array().cloned().unwrap_or_default());
        }
        v
    }

    /// Every request came back the same, byte for byte, with every recorded call used.
    pub(crate) fn assert_all_same(&self, expected_requests: usize) {
        assert_eq!(self.code, 0, "replay should match:\n{}", self.explain());
        let reqs = self.verdict["requests"].as_array().expect("requests");
        assert_eq!(reqs.len(), expected_requests, "{}", self.explain());
        for q in reqs {
            assert_eq!(q["outcome"], "same", "{}", self.explain());
            assert_eq!(q["identical_body"], true, "{}", self.explain());
            assert_eq!(q["dependencies"]["missed"], 0, "{}", self.explain());
            assert_eq!(q["dependencies"]["unused"], 0, "{}", self.explain());
        }
    }

    /// Exit 2, and a miss names a field ending in `field` with the recorded and new values.
    pub(crate) fn assert_field_miss(&self, field: &str, expected: &str, actual: &str) {
        assert_eq!(
            self.code,
            2,
            "replay should report a dependency mismatch:\n{}",
            self.explain()
        );
        let misses = self.misses();
        let hit = misses.iter().any(|m| {
            m["field"].as_str().is_some_and(|f| f.ends_with(field))
                && m["expected_value"]
                    .as_str()
                    .is_some_and(|v| v.contains(expected))
                && m["actual_value"]
                    .as_str()
                    .is_some_and(|v| v.contains(actual))
        });
        assert!(
            hit,
            "no miss names {field} ({expected} → {actual}); misses: {misses:#?}\n{}",
            self.explain()
        );
    }
}
