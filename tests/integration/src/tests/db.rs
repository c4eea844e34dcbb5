//! Issue 5 end to end: real PostgreSQL, MariaDB and Redis servers ([`crate::dbservers`]),
//! unmodified apps using asyncpg + redis.asyncio (FastAPI/uvicorn) and psycopg2, psycopg 3,
//! PyMySQL + sync redis (Flask/gunicorn gthread), recorded with `timetracer-agent record`.
//!
//! Every endpoint reports, in its JSON body, exactly the statements / commands it executed, in
//! order, with parameters, and what came back (rows, replies, SQLSTATE / MySQL error codes).
//! For every request, the cassette's `db.query` and `redis` events (session-level ones
//! skipped) must be exactly those, in that order, with those parameters, rows, replies and
//! error codes; every event must be attributed exactly; and the database / Redis password
//! must appear nowhere in any cassette file (plain or base64).
//!
//! The cassette field names used for the comparison are all in [`shape`], in one place.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::scenario::{Replayed, drop_problems};
use crate::dbservers::{self, APP_PASSWORD, DbServers, Needs};
use crate::require_root;
use crate::util::{self, Cassette, CassetteDir, HttpConn, Paths, ProcGuard};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the comparison reads the cassette: event types, the `db` object (the parsers'
/// `DbCall.detail`) and its field names. Adjust here when a parser's detail shape changes.
mod shape {
    /// `events[].type` of SQL calls and of Redis commands.
    pub(super) const SQL_EVENT: &str = "db.query";
    pub(super) const REDIS_EVENT: &str = "redis";
    /// `events[].db`: the parser's detail object.
    pub(super) const DETAIL: &str = "db";
    /// Session-level calls (handshake, auth, `CLIENT SETINFO`, ...) are skipped when this is
    /// `true` at the top level of the event (or inside `db`).
    pub(super) const SESSION_LEVEL: &str = "session_level";
    /// SQL detail: statement text as sent, bound parameters, result rows, error object.
    pub(super) const SQL: &str = "sql";
    pub(super) const PARAMS: &str = "params";
    /// A bound parameter's decoded value inside `params[i]` (`{"type_oid","format","value"}`).
    pub(super) const PARAM_VALUE: &str = "value";
    pub(super) const ROWS: &str = "rows";
    pub(super) const ERROR: &str = "error";
    /// PostgreSQL SQLSTATE inside `error`.
    pub(super) const PG_SQLSTATE: &str = "code";
    /// MySQL error number inside `error`.
    pub(super) const MYSQL_CODE: &str = "code";
    /// Redis detail: command name (two-word for `CLIENT SETINFO`...), arguments, reply.
    pub(super) const COMMAND: &str = "command";
    pub(super) const ARGS: &str = "args";
    pub(super) const REPLY: &str = "reply";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DbApp {
    /// `uvicorn db_fastapi_app:app` (asyncpg pool, redis.asyncio).
    FastApi,
    /// `gunicorn -k gthread db_flask_app:app` (psycopg2, psycopg 3, PyMySQL, redis).
    Flask,
    /// `gunicorn -k gthread secrets_app:app` (psycopg2, PyMySQL, redis; the redaction
    /// test, `redact.rs`).
    Secrets,
    /// `uvicorn secrets_async_app:app` (asyncpg, redis.asyncio; `redact.rs`).
    SecretsAsync,
    /// `gunicorn -w 2 startup_flask_app:app` (SQLAlchemy + psycopg2, a psycopg2 pool, PyMySQL,
    /// redis, all opened at import; `startup.rs`).
    StartupFlask,
    /// `uvicorn startup_fastapi_app:app` (an asyncpg pool made in the lifespan; `startup.rs`).
    StartupFastApi,
}

impl DbApp {
    fn needs(self) -> Needs {
        Needs {
            postgres: true,
            mariadb: matches!(self, Self::Flask | Self::Secrets | Self::StartupFlask),
            redis: true,
            tls: false,
        }
    }

    fn argv(self, paths: &Paths, port: u16) -> Vec<OsString> {
        match self {
            Self::FastApi | Self::SecretsAsync | Self::StartupFastApi => vec![
                paths.venv_bin("uvicorn").into(),
                match self {
                    Self::FastApi => "db_fastapi_app:app".into(),
                    Self::StartupFastApi => "startup_fastapi_app:app".into(),
                    _ => "secrets_async_app:app".into(),
                },
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string().into(),
            ],
            Self::Flask | Self::Secrets | Self::StartupFlask => {
                let workers: &[&str] = if self == Self::StartupFlask {
                    // Two sync workers, each importing the app (and opening its pools) after
                    // fork.
                    &["-w", "2"]
                } else {
                    &["-w", "1", "-k", "gthread", "--threads", "4"]
                };
                let mut v: Vec<OsString> = vec![paths.venv_bin("gunicorn").into()];
                v.extend(workers.iter().map(OsString::from));
                v.extend::<[OsString; 6]>([
                    "--graceful-timeout".into(),
                    "3".into(),
                    "--chdir".into(),
                    paths.apps.clone().into(),
                    "-b".into(),
                    format!("127.0.0.1:{port}").into(),
                ]);
                if gunicorn_has_control_socket(paths) {
                    v.push("--no-control-socket".into());
                }
                v.push(match self {
                    Self::Flask => "db_flask_app:app".into(),
                    Self::StartupFlask => "startup_flask_app:app".into(),
                    _ => "secrets_app:app".into(),
                });
                v
            }
        }
    }
}

fn gunicorn_has_control_socket(paths: &Paths) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new(paths.venv_bin("gunicorn"))
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-control-socket"))
    })
}

/// One request and what the app says it did.
struct Sent {
    target: String,
    status: u16,
    ops: Vec<Value>,
    body: String,
}

/// Servers + agent recording the app, for one test.
pub(super) struct DbRun {
    name: String,
    paths: Paths,
    dir: Option<tempfile::TempDir>,
    pub(super) out: PathBuf,
    pub(super) port: u16,
    agent: Option<ProcGuard>,
    /// The app, when it runs on its own and the agent attaches to it ([`DbRun::start_attached`]).
    app: Option<ProcGuard>,
    servers: Option<DbServers>,
}

impl DbRun {
    /// Starts the servers and `timetracer-agent record --out D -- <app>`, or returns `None`
    /// (test skipped, reason printed) when the servers cannot be provided here.
    pub(super) fn start(paths: Paths, app: DbApp, name: &str) -> Option<Self> {
        Self::start_with_env(paths, app, name, &[])
    }

    /// [`DbRun::start`] with extra environment for the app.
    pub(super) fn start_with_env(
        paths: Paths,
        app: DbApp,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Option<Self> {
        Self::start_with(paths, app, name, extra, 1 << 20)
    }

    /// [`DbRun::start`] with the SQL servers serving TLS and the app verifying them
    /// ([`Needs::tls`]).
    pub(super) fn start_tls(paths: Paths, app: DbApp, name: &str) -> Option<Self> {
        let needs = Needs {
            tls: true,
            ..app.needs()
        };
        Self::start_needs(paths, app, name, &[], 1 << 20, needs)
    }

    /// [`DbRun::start_with_env`] with `--max-body max_body`.
    fn start_with(
        paths: Paths,
        app: DbApp,
        name: &str,
        extra: &[(&str, &str)],
        max_body: usize,
    ) -> Option<Self> {
        Self::start_needs(paths, app, name, extra, max_body, app.needs())
    }

    fn start_needs(
        paths: Paths,
        app: DbApp,
        name: &str,
        extra: &[(&str, &str)],
        max_body: usize,
        needs: Needs,
    ) -> Option<Self> {
        let mut run = Self::prepare_needs(paths, needs, name)?;
        let mut argv: Vec<OsString> = vec![
            run.paths.agent.clone().into(),
            "record".into(),
            "--out".into(),
            run.out.clone().into(),
            "--max-body".into(),
            max_body.to_string().into(),
            "--".into(),
        ];
        argv.extend(app.argv(&run.paths, run.port));
        let agent = run.spawn_app("agent", &argv, extra);
        let agent = run.agent.insert(agent);
        if let Err(e) = agent.wait_for_port(run.port, START_TIMEOUT) {
            run.fail(&[format!("app under `record` did not start: {e:#}")], None);
        }
        Some(run)
    }

    /// Starts the servers and the app on its own; once it printed `ready` on `count` lines,
    /// `timetracer-agent attach --pid APP --out D`: the recording does not see the app's
    /// startup (issue #26 item 2).
    pub(super) fn start_attached(
        paths: Paths,
        app: DbApp,
        name: &str,
        extra: &[(&str, &str)],
        ready: (&str, usize),
    ) -> Option<Self> {
        let mut run = Self::prepare(paths, app, name)?;
        let argv = app.argv(&run.paths, run.port);
        let app_guard = run.spawn_app("app", &argv, extra);
        let pid = app_guard.pid();
        let app_guard = run.app.insert(app_guard);
        if let Err(e) = app_guard.wait_for_port(run.port, START_TIMEOUT) {
            run.fail(&[format!("app did not start: {e:#}")], None);
        }
        run.wait_for_lines(ready.0, ready.1);
        let cmd = util::command(
            &run.paths.agent,
            [
                OsString::from("attach"),
                "--pid".into(),
                pid.to_string().into(),
                "--out".into(),
                run.out.clone().into(),
            ],
        );
        let agent = ProcGuard::spawn("agent", cmd, &run.root()).expect("spawn agent");
        let agent = run.agent.insert(agent);
        if let Err(e) = agent.wait_for_stderr("attached", START_TIMEOUT) {
            run.fail(&[format!("agent attach not ready: {e:#}")], None);
        }
        Some(run)
    }

    /// The test's directory and database servers, nothing running yet; `None` (test skipped,
    /// reason printed) when the servers cannot be provided here.
    fn prepare(paths: Paths, app: DbApp, name: &str) -> Option<Self> {
        Self::prepare_needs(paths, app.needs(), name)
    }

    fn prepare_needs(paths: Paths, needs: Needs, name: &str) -> Option<Self> {
        crate::require!(dbservers::missing_prerequisite(needs), None);
        let dir = util::temp_dir(name);
        let servers = dbservers::start(needs, dir.path())
            .unwrap_or_else(|e| panic!("[{name}] database servers: {e:#}"));
        Some(Self {
            name: name.to_owned(),
            out: dir.path().join("cassettes"),
            paths,
            dir: Some(dir),
            port: util::free_port(),
            agent: None,
            app: None,
            servers: Some(servers),
        })
    }

    /// Spawns `argv` in the apps' directory with the servers' environment and `extra`.
    fn spawn_app(&self, what: &str, argv: &[OsString], extra: &[(&str, &str)]) -> ProcGuard {
        let mut cmd = util::command(&argv[0], &argv[1..]);
        cmd.current_dir(&self.paths.apps)
            .env("PWD", &self.paths.apps);
        for (k, v) in self
            .servers
            .as_ref()
            .map(DbServers::app_env)
            .unwrap_or_default()
        {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        ProcGuard::spawn(what, cmd, &self.root()).expect("spawn")
    }

    fn root(&self) -> PathBuf {
        self.dir.as_ref().expect("temp dir").path().to_path_buf()
    }

    fn send(&self, conn: &mut HttpConn, endpoint: &str, tag: &str) -> Sent {
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let target = format!("/{endpoint}{sep}req={tag}");
        let resp = conn
            .request("GET", &target, None)
            .unwrap_or_else(|e| self.fail(&[format!("GET {target}: {e}")], None));
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        let ops = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["ops"].as_array().cloned())
            .unwrap_or_default();
        Sent {
            target,
            status: resp.status,
            ops,
            body,
        }
    }

    /// Waits until the app (through the agent's stderr) printed `needle` on `count` lines.
    pub(super) fn wait_for_lines(&mut self, needle: &str, count: usize) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            // The app's output: its own, or through `record`'s.
            let agent = self
                .app
                .as_ref()
                .or(self.agent.as_ref())
                .expect("app running");
            if agent
                .stderr_text()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
                >= count
            {
                return;
            }
            if std::time::Instant::now() >= deadline {
                self.fail(
                    &[format!(
                        "the app did not print {needle:?} {count} times within {START_TIMEOUT:?}"
                    )],
                    None,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn stop_agent(&mut self) {
        let agent = self.agent.as_mut().expect("agent running");
        if let Err(e) = agent.signal(Signal::SIGINT) {
            let msg = format!("{e:#}");
            self.fail(&[msg], None);
        }
        if agent.wait_timeout(STOP_TIMEOUT).is_none() {
            self.fail(
                &[format!(
                    "agent did not exit within {STOP_TIMEOUT:?} of SIGINT"
                )],
                None,
            );
        }
    }

    pub(super) fn fail(&self, errors: &[String], dir: Option<&CassetteDir>) -> ! {
        for a in self.app.iter().chain(&self.agent) {
            eprintln!("{}", a.diagnostics());
        }
        let loaded;
        let dir = match dir {
            Some(d) => d,
            None => {
                loaded = util::load_cassettes(&self.out);
                &loaded
            }
        };
        eprintln!("----- cassettes -----\n{}", dir.listing());
        for c in &dir.cassettes {
            eprintln!(
                "----- {} db events -----\n{}",
                c.path.display(),
                db_events(c)
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
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
}

impl DbRun {
    /// Stops the database servers (replay must not need them); returns the app's environment.
    pub(super) fn stop_servers(&mut self) -> Vec<(String, String)> {
        let env = self
            .servers
            .as_ref()
            .map(DbServers::app_env)
            .unwrap_or_default();
        // An app the agent attached to goes too: replay starts its own.
        drop(self.app.take());
        drop(self.servers.take());
        env
    }

    /// `timetracer-agent replay --json OUT <args>` (recorded command line) with `env`.
    pub(super) fn replay(
        &self,
        env: &[(String, String)],
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Replayed {
        self.replay_input(&self.out, env, args, extra)
    }

    /// [`DbRun::replay`] of `input` (a cassette file or directory) instead of the whole output.
    pub(super) fn replay_input(
        &self,
        input: &Path,
        env: &[(String, String)],
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Replayed {
        let mut all: Vec<OsString> = vec![
            "replay".into(),
            "--json".into(),
            "--run-recorded-command".into(),
            input.into(),
        ];
        all.extend(args.iter().map(OsString::from));
        let mut cmd = util::command(&self.paths.agent, all);
        cmd.current_dir(&self.paths.apps)
            .env("PWD", &self.paths.apps);
        for (k, v) in env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run timetracer-agent replay");
        Replayed {
            code: out.status.code().unwrap_or(-1),
            verdict: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for DbRun {
    fn drop(&mut self) {
        drop(self.agent.take());
        drop(self.app.take());
        drop(self.servers.take());
        if std::env::var("TIMETRACER_KEEP_ARTIFACTS").is_ok_and(|v| v == "1")
            && let Some(d) = self.dir.take()
        {
            eprintln!("[{}] artifacts kept in {}", self.name, d.keep().display());
        }
    }
}

fn is_session_level(e: &Value) -> bool {
    e[shape::SESSION_LEVEL] == true || e[shape::DETAIL][shape::SESSION_LEVEL] == true
}

/// The cassette's SQL and Redis events that are the app's own work, in file order.
fn db_events(c: &Cassette) -> Vec<&Value> {
    c.json["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == shape::SQL_EVENT || e["type"] == shape::REDIS_EVENT)
                .filter(|e| !is_session_level(e))
                .collect()
        })
        .unwrap_or_default()
}

/// A value as text for comparison: numbers and strings compare by their text, so a parser
/// may decode `int4` to `1` or keep the text `"1"`.
fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        other => other.clone(),
    }
}

/// A Redis reply in the cassette vs what redis-py returned: `True` stands for `+OK`, error
/// replies lose nothing but their prefix, arrays compare element-wise.
fn same_reply(ours: &Value, python: &Value) -> bool {
    match (ours, python) {
        (Value::String(s), Value::Bool(true)) => s == "OK",
        (Value::Object(o), Value::Object(p)) if p.contains_key("error") => o["error"]
            .as_str()
            .zip(p["error"].as_str())
            .is_some_and(|(a, b)| a.ends_with(b)),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_reply(x, y))
        }
        (Value::Number(a), Value::Number(b)) => a.to_string() == b.to_string(),
        _ => ours == python,
    }
}

/// Problems between one cassette event and the app's report of the same operation.
fn compare(w: &str, e: &Value, op: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let d = &e[shape::DETAIL];
    match op["kind"].as_str() {
        Some("sql") => {
            let lib = op["lib"].as_str().unwrap_or("?");
            if e["type"] != shape::SQL_EVENT || e["signature"]["lib"] != lib {
                errs.push(format!(
                    "{w}: event {} / lib {} (want {} / {lib})",
                    e["type"],
                    e["signature"]["lib"],
                    shape::SQL_EVENT
                ));
                return errs;
            }
            if d[shape::SQL] != op["sql"] {
                errs.push(format!(
                    "{w}: sql {} (app sent {})",
                    d[shape::SQL],
                    op["sql"]
                ));
            }
            let want_params: Vec<Value> = op["params"]
                .as_array()
                .map(|a| a.iter().map(norm).collect())
                .unwrap_or_default();
            let got_params: Vec<Value> = d[shape::PARAMS]
                .as_array()
                .map(|a| a.iter().map(|p| norm(&p[shape::PARAM_VALUE])).collect())
                .unwrap_or_default();
            // A statement the server rejected at Parse never gets a Bind (asyncpg prepares
            // first): its parameters never reach the wire, so none can be recorded.
            let rejected_before_bind =
                op["error"].is_object() && d["messages"].as_str().is_some_and(|m| !m.contains('B'));
            if got_params != want_params && !(rejected_before_bind && got_params.is_empty()) {
                errs.push(format!(
                    "{w}: params {got_params:?} (app bound {want_params:?})"
                ));
            }
            match op["error"].as_object() {
                None => {
                    let want_rows = norm(&op["rows"]);
                    let got_rows = if d[shape::ROWS].is_null() {
                        Value::Array(Vec::new())
                    } else {
                        norm(&d[shape::ROWS])
                    };
                    if got_rows != want_rows {
                        errs.push(format!("{w}: rows {got_rows} (app got {want_rows})"));
                    }
                    if !d[shape::ERROR].is_null() || !e["result"]["error"].is_null() {
                        errs.push(format!(
                            "{w}: error {} but the app saw none",
                            d[shape::ERROR]
                        ));
                    }
                }
                Some(err) => {
                    let (field, want) = if lib == "mysql" {
                        (shape::MYSQL_CODE, norm(&err["code"]))
                    } else {
                        (shape::PG_SQLSTATE, norm(&err["sqlstate"]))
                    };
                    let got = norm(&d[shape::ERROR][field]);
                    if got != want {
                        errs.push(format!(
                            "{w}: error.{field} {got} (app saw {want}: {})",
                            err["message"]
                        ));
                    }
                    if e["result"]["error"].is_null() {
                        errs.push(format!("{w}: result.error missing"));
                    }
                }
            }
        }
        Some("redis") => {
            if e["type"] != shape::REDIS_EVENT || e["signature"]["lib"] != "redis" {
                errs.push(format!(
                    "{w}: event {} / lib {} (want redis)",
                    e["type"], e["signature"]["lib"]
                ));
                return errs;
            }
            let mut got: Vec<Value> = d[shape::COMMAND]
                .as_str()
                .unwrap_or("")
                .split(' ')
                .map(|s| Value::String(s.to_owned()))
                .collect();
            got.extend(d[shape::ARGS].as_array().cloned().unwrap_or_default());
            let want: Vec<Value> = op["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, x)| match (i, x.as_str()) {
                            (0, Some(s)) => Value::String(s.to_ascii_uppercase()),
                            _ => norm(x),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if got != want {
                errs.push(format!("{w}: command {got:?} (app ran {want:?})"));
            }
            if !same_reply(&d[shape::REPLY], &op["reply"]) {
                errs.push(format!(
                    "{w}: reply {} (app got {})",
                    d[shape::REPLY],
                    op["reply"]
                ));
            }
            let app_error = op["reply"]["error"].as_str();
            let ev_error = e["result"]["error"].as_str();
            match (app_error, ev_error) {
                (Some(a), Some(b)) if b.ends_with(a) => {}
                (None, None) => {}
                _ => errs.push(format!(
                    "{w}: result.error {:?} (app saw {:?})",
                    ev_error, app_error
                )),
            }
        }
        other => errs.push(format!("{w}: app reported an op of kind {other:?}")),
    }
    if e["attribution"]["status"] != "exact" {
        errs.push(format!(
            "{w}: attribution {} (want exact)",
            e["attribution"]
        ));
    }
    errs
}

/// The password, and every base64 rendering of it (three alignments), in any file under `dir`.
fn secret_problems(dir: &Path) -> Vec<String> {
    let mut needles: Vec<Vec<u8>> = vec![APP_PASSWORD.as_bytes().to_vec()];
    let b64 = base64::engine::general_purpose::STANDARD;
    for pad in 0..3 {
        let mut s = vec![b'x'; pad];
        s.extend_from_slice(APP_PASSWORD.as_bytes());
        let enc = b64.encode(&s);
        // Only the groups of 3 bytes made of password bytes alone, whatever surrounds them.
        let from = pad.div_ceil(3) * 4;
        let to = (pad + APP_PASSWORD.len()) / 3 * 4;
        if to >= from + 8 {
            needles.push(enc.as_bytes()[from..to].to_vec());
        }
    }
    let mut errs = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let data = fs::read(&p).unwrap_or_default();
            for n in &needles {
                if data.windows(n.len()).any(|w| w == n.as_slice()) {
                    errs.push(format!(
                        "{}: contains the database password ({})",
                        p.display(),
                        String::from_utf8_lossy(n)
                    ));
                }
            }
        }
    }
    errs
}

fn verify(run: &DbRun, sent: &[Sent]) {
    let dir = util::load_cassettes(&run.out);
    let mut errs = dir.problems.clone();
    for c in &dir.cassettes {
        errs.extend(util::schema_problems(&run.paths, c));
        errs.extend(drop_problems(c));
    }
    errs.extend(secret_problems(&run.out));
    for s in sent {
        let who = &s.target;
        if s.status != 200 || s.ops.is_empty() {
            errs.push(format!(
                "{who}: app answered {} with no ops (the app itself failed): {}",
                s.status,
                util::tail(&s.body, 5)
            ));
            continue;
        }
        let matches: Vec<&Cassette> = dir
            .cassettes
            .iter()
            .filter(|c| c.json["request"]["target"].as_str() == Some(who.as_str()))
            .collect();
        let [c] = matches.as_slice() else {
            errs.push(format!("{who}: {} cassettes (want 1)", matches.len()));
            continue;
        };
        let events = db_events(c);
        if events.len() != s.ops.len() {
            errs.push(format!(
                "{who}: {} db/redis events, the app executed {} operations",
                events.len(),
                s.ops.len()
            ));
        }
        for (i, (e, op)) in events.iter().zip(&s.ops).enumerate() {
            errs.extend(compare(&format!("{who}: events[{i}]"), e, op));
        }
    }
    if !errs.is_empty() {
        run.fail(&errs, Some(&dir));
    }
    eprintln!(
        "[{}] OK: {} cassettes checked against {} requests",
        run.name,
        dir.cassettes.len(),
        sent.len()
    );
}

fn db_record(app: DbApp, name: &str, endpoints: &[&str]) {
    let paths = require_root!();
    let Some(mut run) = DbRun::start(paths, app, name) else {
        return;
    };
    record_endpoints(&mut run, endpoints);
}

/// Records `endpoints` and checks the cassettes against what the app reports.
fn record_endpoints(run: &mut DbRun, endpoints: &[&str]) {
    let mut sent = Vec::new();
    // One keep-alive connection for most requests, a fresh one for the last.
    let mut conn = HttpConn::connect(run.port).expect("connect to app");
    for (i, ep) in endpoints.iter().enumerate() {
        if i + 1 == endpoints.len() {
            let mut fresh = HttpConn::connect(run.port).expect("connect to app");
            sent.push(run.send(&mut fresh, ep, &format!("d{i}")));
            fresh.close();
        } else {
            sent.push(run.send(&mut conn, ep, &format!("d{i}")));
        }
    }
    conn.close();
    run.stop_agent();
    verify(run, &sent);
}

/// Issue #6: record, stop every database server, replay: same responses byte for byte; then
/// make the app send something else and check the verdict names the field.
fn db_replay(
    app: DbApp,
    name: &str,
    endpoints: &[&str],
    changes: &[(&str, &str, &str, &str, &str)],
) {
    let paths = require_root!();
    let Some(mut run) = DbRun::start(paths, app, name) else {
        return;
    };
    record_endpoints(&mut run, endpoints);
    let env = run.stop_servers();
    let r = run.replay(&env, &[], &[]);
    r.assert_all_same(endpoints.len());
    for (var, value, field, expected, actual) in changes {
        let r = run.replay(&env, &[], &[(var, value)]);
        r.assert_field_miss(field, expected, actual);
    }
}

#[test]
fn fastapi_asyncpg_redis_replay() {
    db_replay(
        DbApp::FastApi,
        "db_fastapi_replay",
        &[
            "pg/select?id=1",
            "pg/insert?note=first",
            "pg/fail",
            "redis/basic?tag=a",
            "redis/pipeline?tag=b",
            "mixed?tag=c",
        ],
        &[
            ("NAME_FILTER", "yyy", "params[1]", "zzz", "yyy"),
            ("REDIS_KEY_PREFIX", "fz:", "args[0]", "fa:a", "fz:a"),
        ],
    );
}

#[test]
fn flask_psycopg_pymysql_redis_replay() {
    db_replay(
        DbApp::Flask,
        "db_flask_replay",
        &[
            "pg2/select",
            "pg2/fail",
            "pg3/select",
            "mysql/select",
            "mysql/insert",
            "mysql/fail",
            "redis/pipeline",
            "redis/multi",
            "redis/fail",
        ],
        // PyMySQL interpolates parameters into the SQL text on the client.
        &[("MYSQL_ID", "2", "sql", "WHERE id = 1", "WHERE id = 2")],
    );
}

/// Issue #26 item 4: PostgreSQL over TLS (psycopg2 and psycopg 3: libpq `sslmode=verify-full`
/// against the test CA), recorded (the plaintext through the OpenSSL probes), every server
/// stopped, replayed: the mock accepts the upgrade with the mock CA, which the hook makes
/// libpq trust (`verify-full` refuses a server that answers `N` or a certificate it does not
/// trust). Every response says which connections were TLS (`tls`), so a replay whose mock did
/// not upgrade differs. MySQL stays plaintext here (see [`Needs::tls`]).
#[test]
#[ignore = "regressed in the stop-32 merge: the recording holds 0 PostgreSQL-over-TLS events per request (db_calls=8, db_skipped_bytes=9191); passes on branch tls-replay; issue #26"]
fn flask_postgres_over_tls_replay() {
    let paths = require_root!();
    let Some(mut run) = DbRun::start_tls(paths, DbApp::Flask, "db_tls_replay") else {
        return;
    };
    let endpoints = ["pg2/select", "pg3/select", "mysql/select", "mysql/fail"];
    record_endpoints(&mut run, &endpoints);
    let dir = util::load_cassettes(&run.out);
    let mut errs = Vec::new();
    for c in &dir.cassettes {
        let body = util::body_bytes(&c.json["response"]["body"]).unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        if !body.contains(r#""tls": {"pg2": true, "pg3": true, "mysql": false}"#) {
            errs.push(format!(
                "{}: PostgreSQL connections not TLS: {body}",
                c.path.display()
            ));
        }
        for e in db_events(c) {
            let pg = e["signature"]["lib"] == "postgres";
            if e["connection"]["tls"].as_bool().unwrap_or(false) != pg {
                errs.push(format!(
                    "{}: recorded TLS flag wrong (want {pg}): {e}",
                    c.path.display()
                ));
            }
        }
    }
    if !errs.is_empty() {
        run.fail(&errs, Some(&dir));
    }
    let env = run.stop_servers();
    let r = run.replay(&env, &[], &[]);
    r.assert_all_same(endpoints.len());
}

/// Hybrid replay: PostgreSQL and Redis mocked, HTTP live against a running upstream.
#[test]
fn hybrid_replay_http_live() {
    let paths = require_root!();
    let dir = util::temp_dir("db_hybrid_upstream");
    let up_port = util::free_port();
    let up_log = dir.path().join("upstream.jsonl");
    let mut cmd = util::command(
        paths.venv_bin("python"),
        [
            OsString::from(paths.apps.join("upstream.py")),
            up_port.to_string().into(),
            up_log.clone().into(),
        ],
    );
    cmd.current_dir(&paths.apps);
    let mut upstream = ProcGuard::spawn("upstream", cmd, dir.path()).expect("spawn upstream");
    upstream
        .wait_for_port(up_port, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", upstream.diagnostics()));
    let up_url = format!("http://127.0.0.1:{up_port}");
    let Some(mut run) = DbRun::start_with_env(
        paths,
        DbApp::FastApi,
        "db_hybrid",
        &[("UPSTREAM_URL", &up_url)],
    ) else {
        return;
    };
    let mut conn = HttpConn::connect(run.port).expect("connect to app");
    let sent = run.send(&mut conn, "pg_http", "h0");
    conn.close();
    assert_eq!(sent.status, 200, "{}", sent.body);
    run.stop_agent();
    let mut env = run.stop_servers();
    env.push(("UPSTREAM_URL".into(), up_url.clone()));
    let before = util::read_json_lines(&up_log).len();
    let r = run.replay(&env, &["--mock", "postgres,redis"], &[]);
    r.assert_all_same(1);
    let after = util::read_json_lines(&up_log).len();
    assert_eq!(
        after,
        before + 1,
        "the HTTP call must reach the live upstream in hybrid replay:\n{}",
        r.explain()
    );
    assert!(
        r.verdict["notes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n.as_str().is_some_and(|n| n.contains("stayed live"))),
        "{}",
        r.explain()
    );
}

#[test]
fn fastapi_asyncpg_redis_record() {
    db_record(
        DbApp::FastApi,
        "db_fastapi",
        &[
            "pg/select?id=1",
            "pg/insert?note=first",
            "pg/fail",
            "redis/basic?tag=a",
            "redis/pipeline?tag=b",
            "mixed?tag=c",
            "pg/select?id=3",
        ],
    );
}

#[test]
fn flask_psycopg_pymysql_redis_record() {
    db_record(
        DbApp::Flask,
        "db_flask",
        &[
            "pg2/select",
            "pg2/fail",
            "pg3/select",
            "mysql/select",
            "mysql/insert",
            "mysql/fail",
            "redis/pipeline",
            "redis/multi",
            "redis/fail",
        ],
    );
}

/// Issue #22 item 5: `timetracer stats` finds the N+1 patterns of a real recording (psycopg2 and
/// redis-py against real servers, `/n1` of db_flask_app.py) and only those: the lazy load
/// (six `SELECT … WHERE id = <literal>`, one after the other) and six sequential Redis `GET`s
/// of ids are reported; the six pipelined `GET`s (one round trip), the repeated `SET` (a
/// session statement) are not; the two IN lists of different lengths have one fingerprint.
#[test]
fn stats_finds_n_plus_one_in_a_recording() {
    let paths = require_root!();
    let cli = paths.cli.clone();
    let Some(mut run) = DbRun::start(paths, DbApp::Flask, "db_n1") else {
        return;
    };
    record_endpoints(&mut run, &["n1"]);
    let stats = |n: &str| -> Value {
        let out = Command::new(&cli)
            .args(["stats", "--json", "--n-plus-one", n, "--dir"])
            .arg(&run.out)
            .output()
            .expect("run timetracer stats");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats --json")
    };
    let found = |j: &Value| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = j["n_plus_one"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (
                    n["shape"].as_str().unwrap_or_default().to_owned(),
                    n["max_repeats"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let j = stats("5");
    assert_eq!(j["cassettes"], 1, "{j:#}");
    assert_eq!(
        found(&j),
        vec![
            (
                "postgres SELECT ID, NAME FROM ITEMS WHERE ID = ?".to_owned(),
                6
            ),
            // Digits in keys are ids, wherever they are.
            ("redis GET n?:user:?".to_owned(), 6),
        ],
        "{j:#}"
    );
    // At 2: the IN lists (3 and 2 values) are one fingerprint; the pipeline still counts once.
    let two = found(&stats("2"));
    assert!(
        two.contains(&(
            "postgres SELECT ID, NAME FROM ITEMS WHERE ID IN (…)".to_owned(),
            2
        )),
        "{two:?}"
    );
    assert!(
        !two.iter()
            .any(|(s, _)| s.contains(":item:") || s.contains("SET ")),
        "{two:?}"
    );
}

/// The apps and servers alone (no agent): every endpoint answers 200 with the operations it
/// ran, so a failure of the recorded tests is the recorder's, not the apps'.
/// Issue #17: `--max-body` reaches the database parsers. A 5,000-byte Redis value and a
/// 200-row PostgreSQL result recorded with `--max-body 1024` are stored cut, marked truncated,
/// with their exact sizes (the value's `size`, `rows_total`).
#[test]
fn max_body_truncates_redis_values_and_pg_rows() {
    const MAX: usize = 1024;
    let paths = require_root!();
    let Some(mut run) = DbRun::start_with(paths, DbApp::FastApi, "db_max_body", &[], MAX) else {
        return;
    };
    let mut conn = HttpConn::connect(run.port).expect("connect to app");
    let sent = run.send(&mut conn, "big?size=5000&rows=200", "m0");
    conn.close();
    run.stop_agent();
    let dir = util::load_cassettes(&run.out);
    let mut errs = dir.problems.clone();
    if sent.status != 200 || sent.ops.len() != 4 {
        errs.push(format!(
            "the app failed: {} {}",
            sent.status,
            util::tail(&sent.body, 5)
        ));
    }
    let cassettes: Vec<&Cassette> = dir
        .cassettes
        .iter()
        .filter(|c| c.json["request"]["target"].as_str() == Some(sent.target.as_str()))
        .collect();
    let [c] = cassettes.as_slice() else {
        run.fail(
            &[format!("{} cassettes for {}", cassettes.len(), sent.target)],
            Some(&dir),
        );
    };
    let events = db_events(c);
    let find = |method: &str| {
        events
            .iter()
            .find(|e| e["signature"]["method"] == method)
            .copied()
    };
    // A cut value: `{"text": prefix, "truncated": true, "size": 5000}`.
    let cut_value = |what: &str, v: &Value, errs: &mut Vec<String>| {
        let text = v["text"].as_str().unwrap_or("");
        if v["truncated"] != true
            || v["size"] != 5000
            || text.is_empty()
            || text.len() > MAX
            || !text.bytes().all(|b| b == b'v')
        {
            errs.push(format!(
                "{what}: {v} (want a prefix of at most {MAX} 'v's, truncated, size 5000)"
            ));
        }
    };
    match find("SET") {
        Some(e) => {
            cut_value("SET value", &e[shape::DETAIL][shape::ARGS][1], &mut errs);
            if e["wire"]["truncated"] != true {
                errs.push(format!(
                    "SET: wire not marked truncated: {}",
                    e["wire"]["truncated"]
                ));
            }
        }
        None => errs.push("no SET event".into()),
    }
    match find("GET") {
        Some(e) => {
            cut_value("GET reply", &e[shape::DETAIL][shape::REPLY], &mut errs);
            if e["wire"]["truncated"] != true {
                errs.push("GET: wire not marked truncated".into());
            }
        }
        None => errs.push("no GET event".into()),
    }
    match events
        .iter()
        .find(|e| e["type"] == shape::SQL_EVENT && e["signature"]["method"] == "SELECT")
    {
        Some(e) => {
            let d = &e[shape::DETAIL];
            let kept = d[shape::ROWS].as_array().map_or(0, Vec::len);
            if d["rows_total"] != 200 || d["rows_truncated"] != true || kept == 0 || kept >= 200 {
                errs.push(format!(
                    "SELECT: rows_total {} rows_truncated {} with {kept} rows kept (want 200, true, 1..200)",
                    d["rows_total"], d["rows_truncated"]
                ));
            }
            let wire = |k: &str| {
                e["wire"][k]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map_or(0, |b| b.len())
            };
            if e["wire"]["truncated"] != true || wire("response_b64") > MAX {
                errs.push(format!(
                    "SELECT: wire truncated {} with {} response bytes (limit {MAX})",
                    e["wire"]["truncated"],
                    wire("response_b64")
                ));
            }
        }
        None => errs.push("no SELECT event".into()),
    }
    if !errs.is_empty() {
        run.fail(&errs, Some(&dir));
    }
}

#[test]
fn db_apps_work_without_agent() {
    // Root (to install and run the servers) and the venv; the agent is not needed.
    let paths = Paths::from_env();
    let venv_missing = ["python", "uvicorn", "gunicorn"]
        .iter()
        .map(|b| paths.venv_bin(b))
        .find(|p| !p.exists())
        .map(|p| {
            format!(
                "{} not found (create the venv from tests/apps/requirements.txt or set \
                 TIMETRACER_VENV)",
                p.display()
            )
        });
    crate::require!(
        (!nix::unistd::geteuid().is_root())
            .then(|| "not running as root (the database servers need it)".to_owned())
            .or(venv_missing)
    );
    for (app, eps) in [
        (
            DbApp::FastApi,
            &[
                "pg/select?id=1",
                "pg/insert",
                "pg/fail",
                "redis/basic",
                "redis/pipeline",
                "mixed",
            ][..],
        ),
        (
            DbApp::Flask,
            &[
                "pg2/select",
                "pg2/fail",
                "pg3/select",
                "mysql/select",
                "mysql/insert",
                "mysql/fail",
                "redis/pipeline",
                "redis/multi",
                "redis/fail",
            ][..],
        ),
    ] {
        crate::require!(dbservers::missing_prerequisite(app.needs()));
        let dir = util::temp_dir("db_apps");
        let servers = dbservers::start(app.needs(), dir.path()).expect("servers");
        let port = util::free_port();
        let argv = app.argv(&paths, port);
        let mut cmd = util::command(&argv[0], &argv[1..]);
        cmd.current_dir(&paths.apps).env("PWD", &paths.apps);
        for (k, v) in servers.app_env() {
            cmd.env(k, v);
        }
        let mut guard = ProcGuard::spawn("app", cmd, dir.path()).expect("spawn app");
        if let Err(e) = guard.wait_for_port(port, START_TIMEOUT) {
            panic!("{e:#}\n{}", guard.diagnostics());
        }
        let mut conn = HttpConn::connect(port).expect("connect");
        for ep in eps {
            let r = conn
                .request("GET", &format!("/{ep}"), None)
                .expect("request");
            let body = String::from_utf8_lossy(&r.body).into_owned();
            eprintln!("{app:?} /{ep} -> {} {body}", r.status);
            let ops = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["ops"].as_array().cloned());
            assert!(
                r.status == 200 && ops.is_some_and(|o| !o.is_empty()),
                "{app:?} /{ep}: {} {body}\n{}",
                r.status,
                guard.diagnostics()
            );
        }
        conn.close();
        drop(guard);
        drop(servers);
    }
}

#[cfg(test)]
mod unit {
    use serde_json::json;

    use super::*;

    #[test]
    fn comparison_accepts_matching_events() {
        let e = json!({"type": "redis", "signature": {"lib": "redis", "method": "SET"},
            "db": {"command": "SET", "args": ["k", "v"], "reply": "OK", "resp": 2},
            "result": {}, "attribution": {"status": "exact"}});
        let op = json!({"kind": "redis", "args": ["SET", "k", "v"], "reply": true});
        assert!(compare("t", &e, &op).is_empty());
        let e = json!({"type": "db.query", "signature": {"lib": "postgres", "method": "SELECT"},
            "db": {"sql": "SELECT $1", "params": [{"type_oid": 23, "format": 1, "value": 1}],
                   "rows": [["1"]]},
            "result": {}, "attribution": {"status": "exact"}});
        let op = json!({"kind": "sql", "lib": "postgres", "sql": "SELECT $1", "params": [1],
            "rows": [[1]], "error": null});
        assert!(compare("t", &e, &op).is_empty());
        let bad = json!({"kind": "sql", "lib": "postgres", "sql": "SELECT $1", "params": [2],
            "rows": [[1]], "error": null});
        assert_eq!(compare("t", &e, &bad).len(), 1);
    }

    #[test]
    fn password_scan_finds_base64() {
        let dir = tempfile::tempdir().expect("tempdir");
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("ab{APP_PASSWORD}cd"));
        fs::write(dir.path().join("c.json"), format!("{{\"raw\": \"{enc}\"}}")).expect("write");
        assert_eq!(secret_problems(dir.path()).len(), 1);
        fs::write(dir.path().join("c.json"), "{}").expect("write");
        assert!(secret_problems(dir.path()).is_empty());
    }
}
