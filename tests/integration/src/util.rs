//! Shared helpers for the privileged end-to-end tests: paths, skip policy, process guards,
//! ports, a tiny HTTP/1.1 client and cassette loading.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Where the binaries, the venv and the apps live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Repository root.
    pub repo: PathBuf,
    /// `TIMETRACER_AGENT`, default `<repo>/target/release/timetracer-agent`.
    pub agent: PathBuf,
    /// `TIMETRACER_CLI`, default `<repo>/target/release/timetracer`.
    pub cli: PathBuf,
    /// `TIMETRACER_VENV`, default `<repo>/.venv`.
    pub venv: PathBuf,
    /// `<repo>/tests/apps`.
    pub apps: PathBuf,
}

impl Paths {
    /// Resolves every path from the environment (with the documented defaults).
    pub fn from_env() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        let from = |var: &str, default: PathBuf| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or(default)
        };
        Self {
            agent: from(
                "TIMETRACER_AGENT",
                repo.join("target/release/timetracer-agent"),
            ),
            cli: from("TIMETRACER_CLI", repo.join("target/release/timetracer")),
            venv: crate::prereq::venv(&repo),
            apps: repo.join("tests/apps"),
            repo,
        }
    }

    /// `<venv>/bin/<name>`.
    pub fn venv_bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }
}

pub use crate::prereq::{privileged_required, skip_or_fail, which};

/// Why a privileged end-to-end test cannot run here, if it cannot.
pub fn missing_prerequisite(paths: &Paths) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (needs root for eBPF)".to_owned());
    }
    if !paths.agent.is_file() {
        return Some(format!(
            "agent binary {} not found (build it or set TIMETRACER_AGENT)",
            paths.agent.display()
        ));
    }
    for bin in ["python", "uvicorn", "gunicorn"] {
        let p = paths.venv_bin(bin);
        if !p.exists() {
            return Some(format!(
                "{} not found (create the venv from tests/apps/requirements.txt or set \
                 TIMETRACER_VENV)",
                p.display()
            ));
        }
    }
    None
}

/// Returns from the calling test when `$missing` (an `Option<String>`: why the test cannot run)
/// is `Some`, after [`skip_or_fail`] printed it (or failed the test under
/// `TIMETRACER_REQUIRE_PRIVILEGED=1`). `require!(missing, value)` returns `value` instead.
#[macro_export]
macro_rules! require {
    ($missing:expr) => {
        if let Some(reason) = $missing {
            $crate::util::skip_or_fail(&reason);
            return;
        }
    };
    ($missing:expr, $ret:expr) => {
        if let Some(reason) = $missing {
            $crate::util::skip_or_fail(&reason);
            return $ret;
        }
    };
}

/// Returns the resolved [`Paths`], or skips the calling test (returns from it) with a printed
/// reason. With `TIMETRACER_REQUIRE_PRIVILEGED=1` a missing prerequisite is a failure.
#[macro_export]
macro_rules! require_root {
    () => {{
        let paths = $crate::util::Paths::from_env();
        $crate::require!($crate::util::missing_prerequisite(&paths));
        $crate::util::wait_probes_released(&paths);
        paths
    }};
}

/// Waits (at most 15 s) until no process runs the agent's binary: an agent of an earlier test
/// still detaching its probes holds the kernel's tracing mutex, and a test starting its agent
/// meanwhile would attach its probes late and see its first requests without them.
pub fn wait_probes_released(paths: &Paths) {
    let agent = paths
        .agent
        .canonicalize()
        .unwrap_or_else(|_| paths.agent.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let running = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe == agent));
        if !running {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh temp dir named after the test (kept if `TIMETRACER_KEEP_ARTIFACTS=1`, see the
/// scenario harness).
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tt-e2e-{name}-"))
        .tempdir()
        .expect("tempdir")
}

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process started in its own process group, with stdout/stderr in files. Dropping it
/// kills the process group and every descendant still alive, then reaps the child.
#[derive(Debug)]
pub struct ProcGuard {
    /// Short name for diagnostics.
    pub name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl ProcGuard {
    /// Spawns `cmd` (stdin null, own process group, output to `<log_dir>/<name>.{out,err}`).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let stdout = log_dir.join(format!("{name}.out"));
        let stderr = log_dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&stderr)?)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the child only (not its group).
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.pid() as i32), sig)
            .with_context(|| format!("kill({}, {sig})", self.name))
    }

    /// `Some(status)` once the child exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Stdout and stderr tails, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "----- {} (pid {}) stdout (tail) -----\n{}\n----- {} stderr (tail) -----\n{}\n",
            self.name,
            self.pid(),
            tail(&self.stdout_text(), 40),
            self.name,
            tail(&self.stderr_text(), 150)
        )
    }

    /// Waits until a line of stderr contains `needle`; fails early if the child exits.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().lines().any(|l| l.contains(needle)) {
                return Ok(());
            }
            if let Some(s) = self.try_status() {
                bail!("{} exited ({s}) before printing {needle:?}", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} did not print {needle:?} within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until 127.0.0.1:`port` accepts connections; fails early if the child exits.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(s) = self.try_status() {
                bail!("{} exited ({s}) before port {port} opened", self.name);
            }
            if Instant::now() >= deadline {
                bail!("port {port} ({}) not open within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let pid = self.pid() as i32;
        let descendants = descendants_of(pid);
        if self.try_status().is_none() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Children that moved to their own group/session (or outlived the leader).
        for d in descendants {
            let _ = kill(Pid::from_raw(d), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// All live descendants of `pid` (from `/proc/*/stat`).
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // comm may contain spaces/parens: fields resume after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// Builds a command from a program and arguments.
pub fn command<I, S>(program: impl Into<OsString>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let program: OsString = program.into();
    let mut c = Command::new(&program);
    c.args(args.into_iter().map(Into::into));
    // The suite runs as root, and so did the apps it records and replays before the agent
    // learnt to run them as the invoking user (#19): a root caller says so explicitly, as a
    // user must. The tests of that rule (`privilege.rs`) remove it.
    if Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "timetracer-agent")
    {
        c.env("TIMETRACER_USER", "root");
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A response as the client received it (body de-chunked).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header (name lower-cased, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes after de-chunking.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header value named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP/1.1 connection to 127.0.0.1.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl HttpConn {
    /// Connects to 127.0.0.1:`port` (30 s read timeout).
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            port,
        })
    }

    /// Local port of this connection (for diagnostics).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends one request and reads its response; the connection stays open.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<(&str, &[u8])>,
    ) -> io::Result<HttpResponse> {
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: tt-e2e/1\r\n\
             Accept: */*\r\n",
            self.port
        );
        if let Some((ctype, b)) = body {
            head.push_str(&format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        if let Some((_, b)) = body {
            msg.extend_from_slice(b);
        }
        self.stream.write_all(&msg)?;
        self.read_response(method == "HEAD")
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in body"));
            }
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in line"));
            }
        }
    }

    fn read_response(&mut self, head_only: bool) -> io::Result<HttpResponse> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let status_line = String::from_utf8_lossy(&self.read_line()?).into_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let size_line = String::from_utf8_lossy(&self.read_line()?).into_owned();
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // Trailers until the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                self.need(size + 2)?;
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(cl) = get("content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| bad(format!("bad content-length {cl:?}")))?;
            self.need(n)?;
            body = self.buf.drain(..n).collect();
        } else {
            while self.fill()? > 0 {}
            body = std::mem::take(&mut self.buf);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// Closes both directions.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// Cassettes
// ---------------------------------------------------------------------------------------------

/// One loaded cassette.
#[derive(Debug, Clone)]
pub struct Cassette {
    /// File path.
    pub path: PathBuf,
    /// Parsed JSON.
    pub json: Value,
}

impl Cassette {
    /// `request.target` (raw), falling back to `request.path` + `?query` when absent.
    pub fn target(&self) -> String {
        let req = &self.json["request"];
        if let Some(t) = req["target"].as_str() {
            return t.to_owned();
        }
        req["path"].as_str().unwrap_or("?").to_owned()
    }

    /// `request.method`.
    pub fn method(&self) -> &str {
        self.json["request"]["method"].as_str().unwrap_or("?")
    }

    /// `http.client` events in file order.
    pub fn http_events(&self) -> Vec<&Value> {
        self.json["events"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["type"] == "http.client").collect())
            .unwrap_or_default()
    }

    /// One-line summary for diagnostics.
    pub fn summary(&self) -> String {
        let events: Vec<String> = self
            .http_events()
            .iter()
            .map(|e| {
                format!(
                    "{} {} -> {} [{}]",
                    e["signature"]["method"].as_str().unwrap_or("?"),
                    e["signature"]["url"].as_str().unwrap_or("?"),
                    e["result"]["status"],
                    e["attribution"]["status"].as_str().unwrap_or("?")
                )
            })
            .collect();
        format!(
            "{}: {} {} -> {} events=[{}] drops={}",
            self.path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            self.method(),
            self.target(),
            self.json["response"]["status"],
            events.join("; "),
            self.json["stats"]["drops"]
        )
    }
}

/// What [`load_cassettes`] found under an output directory.
#[derive(Debug, Default)]
pub struct CassetteDir {
    /// Parsed `*.json` cassettes.
    pub cassettes: Vec<Cassette>,
    /// Parsed startup cassettes (those with a `startup` object, under `.startup/`).
    pub startup: Vec<Cassette>,
    /// Problems: unparseable `.json`, wrong mode, unexpected files.
    pub problems: Vec<String>,
    /// Leftover temp files (names starting with `.tmp-`).
    pub temp_files: Vec<PathBuf>,
}

impl CassetteDir {
    /// Multi-line listing for diagnostics.
    pub fn listing(&self) -> String {
        let mut s = format!("{} cassette(s):\n", self.cassettes.len());
        for c in &self.cassettes {
            s.push_str(&format!("  {}\n", c.summary()));
        }
        for p in &self.problems {
            s.push_str(&format!("  PROBLEM: {p}\n"));
        }
        for t in &self.temp_files {
            s.push_str(&format!("  temp file: {}\n", t.display()));
        }
        s
    }
}

/// Loads every cassette under `dir` (recursively), checking names and modes.
pub fn load_cassettes(dir: &Path) -> CassetteDir {
    let mut out = CassetteDir::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                // The agent's S3 backlog (hard links of cassettes waiting for upload), hidden
                // from every cassette listing.
                if !p.ends_with(".s3-backlog") {
                    stack.push(p);
                }
                continue;
            }
            let name = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with(".tmp-") {
                out.temp_files.push(p);
                continue;
            }
            // The embedded search index the agent keeps next to the cassettes (and its WAL).
            if name.starts_with(".timetracer-index.sqlite3") {
                continue;
            }
            if !name.ends_with(".json") {
                out.problems
                    .push(format!("unexpected file {}", p.display()));
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode != 0o600 {
                out.problems
                    .push(format!("{} has mode {mode:o}, want 600", p.display()));
            }
            match fs::read(&p)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(anyhow::Error::from))
            {
                // Startup cassettes (`.startup/`, issue 26): a process's calls before its
                // first request, not a request.
                Ok(json) if json.get("startup").is_some() => {
                    out.startup.push(Cassette { path: p, json });
                }
                Ok(json) => out.cassettes.push(Cassette { path: p, json }),
                Err(e) => out
                    .problems
                    .push(format!("{}: does not parse: {e}", p.display())),
            }
        }
    }
    out.cassettes.sort_by(|a, b| a.path.cmp(&b.path));
    out.startup.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The exact bytes a captured body object stands for, or an error saying why not.
///
/// `json` → compact `serde_json` serialization (byte-exact with `preserve_order` and
/// `arbitrary_precision` for compact input); `text` → UTF-8 bytes; `base64` → decoded.
pub fn body_bytes(body: &Value) -> anyhow::Result<Vec<u8>> {
    if body.is_null() {
        bail!("no body object");
    }
    if body["_captured"] != Value::Bool(true) {
        bail!("body not captured: {body}");
    }
    let data = &body["data"];
    match body["encoding"].as_str() {
        Some("json") => Ok(serde_json::to_vec(data)?),
        Some("text") => Ok(data
            .as_str()
            .context("text body data is not a string")?
            .as_bytes()
            .to_vec()),
        Some("base64") => Ok(base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("base64 body data is not a string")?)?),
        other => bail!("unknown body encoding {other:?}"),
    }
}

/// The hex digest of a body object's `hash` (`"sha256:<hex>"`).
pub fn body_hash(body: &Value) -> Option<&str> {
    body["hash"]
        .as_str()
        .and_then(|h| h.strip_prefix("sha256:"))
}

/// Checks that `body` (a cassette body object) stands for exactly `expected` bytes: `hash`,
/// `size_bytes`, `truncated == false` and the reconstructed bytes. Returns problems found.
pub fn check_body(what: &str, body: &Value, expected: &[u8]) -> Vec<String> {
    check_body_digest(what, body, &sha256_hex(expected), expected.len())
}

/// Like [`check_body`] with only the digest and length of the expected bytes.
pub fn check_body_digest(what: &str, body: &Value, sha: &str, len: usize) -> Vec<String> {
    let mut errs = Vec::new();
    if body.is_null() {
        return vec![format!(
            "{what}: body missing (want {len} bytes sha256 {sha})"
        )];
    }
    if body_hash(body) != Some(sha) {
        errs.push(format!("{what}: hash {:?} != sha256:{sha}", body["hash"]));
    }
    if body["size_bytes"].as_u64() != Some(len as u64) {
        errs.push(format!(
            "{what}: size_bytes {} != {len}",
            body["size_bytes"]
        ));
    }
    if body["truncated"] != Value::Bool(false) {
        errs.push(format!(
            "{what}: truncated = {} (want false)",
            body["truncated"]
        ));
    }
    match body_bytes(body) {
        Ok(b) if sha256_hex(&b) == sha => {}
        Ok(b) => errs.push(format!(
            "{what}: reconstructed {} bytes (encoding {}) hash {} != {sha} (len {len}); \
             first bytes {:?}",
            b.len(),
            body["encoding"],
            sha256_hex(&b),
            String::from_utf8_lossy(&b[..b.len().min(80)])
        )),
        Err(e) => errs.push(format!("{what}: {e:#}")),
    }
    errs
}

/// Reads the upstream's JSON-lines log.
pub fn read_json_lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Validates `cassette` against the cassette JSON Schema: `TIMETRACER_CASSETTE_SCHEMA` or, if
/// unset, `<repo>/docs/cassette.schema.json`. Returns the problems.
///
/// # Panics
/// When the schema cannot be read or parsed: it is part of the repository, so validation is
/// never skipped (with or without `TIMETRACER_REQUIRE_PRIVILEGED`).
pub fn schema_problems(paths: &Paths, cassette: &Cassette) -> Vec<String> {
    static SCHEMA: OnceLock<(PathBuf, Value)> = OnceLock::new();
    let (path, schema) = SCHEMA.get_or_init(|| {
        let path = std::env::var_os("TIMETRACER_CASSETTE_SCHEMA")
            .filter(|v| !v.is_empty())
            .map_or_else(
                || paths.repo.join("docs/cassette.schema.json"),
                PathBuf::from,
            );
        let text = fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cassette JSON Schema {}: {e} (every written cassette is validated against it; \
                 set TIMETRACER_CASSETTE_SCHEMA or restore docs/cassette.schema.json)",
                path.display()
            )
        });
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parse schema {}: {e}", path.display()));
        (path, v)
    });
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return vec![format!("schema {} does not compile: {e}", path.display())],
    };
    validator
        .iter_errors(&cassette.json)
        .take(10)
        .map(|e| {
            format!(
                "{}: schema violation at {}: {e}",
                cassette.path.display(),
                e.instance_path
            )
        })
        .collect()
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 made for one test (keys live in
/// the test's temp dir only; nothing is committed).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a test PKI in `dir` with the `openssl` command.
pub fn make_test_pki(dir: &Path) -> anyhow::Result<Pki> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=timetracer test CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ])?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

/// A cgroup v2 directory made for one test (under the v2 mount: `/sys/fs/cgroup` or the
/// `unified` mount of a hybrid host), removed with everything below it on drop (its processes
/// are killed first with `cgroup.kill`).
pub struct TestCgroup {
    pub dir: PathBuf,
}

impl TestCgroup {
    /// `<v2 mount>/timetracer-test-<name>-<our pid>`, or why it cannot be made.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        // Fields: id parent major:minor root mountpoint options... - fstype source superopts.
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split(' ').next() == Some("cgroup2"))
                    .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
            })
            .context("no cgroup2 file system is mounted")?;
        let dir = mount.join(format!("timetracer-test-{name}-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Makes the sub-cgroup `name`.
    pub fn child(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.dir.join(name);
        fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        Ok(d)
    }

    /// Moves process `pid` into cgroup directory `dir`.
    pub fn move_into(dir: &Path, pid: u32) -> anyhow::Result<()> {
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("move pid {pid} into {}", dir.display()))
    }

    /// Kills every process below the cgroup and removes its directories (deepest first).
    pub fn remove(&self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && fs::remove_dir(&self.dir).is_err() {
            let mut dirs = Vec::new();
            let mut stack = vec![self.dir.clone()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                        dirs.push(e.path());
                    }
                }
            }
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}
