//! What the groups share: paths, CPU pinning, the upstream, the FastAPI apps, a TLS certificate
//! made at run time, and the agent (`attach`, stop, exit summary).
use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use super::sys::{Proc, free_port, pinned};

/// Which CPUs (taskset lists) each participant runs on.
#[derive(Clone, Debug)]
pub(crate) struct Cpus {
    pub(crate) n: usize,
    pub(crate) app: String,
    pub(crate) upstream: String,
    pub(crate) load: String,
    pub(crate) agent: String,
}

impl Cpus {
    /// On 2 CPUs the agent shares the app's CPU and the load generator and upstream have the
    /// other: the recorder's whole cost then comes out of the app's core, as the Python tool's
    /// does (it runs inside the app), and never starves the load generator, which would distort
    /// the measurement. From 3 CPUs on the agent has a CPU of its own, from 4 on everyone does.
    pub(crate) fn for_machine(n: usize) -> Self {
        let (app, upstream, load, agent) = match n {
            0 | 1 => (0, 0, 0, 0),
            2 => (0, 1, 1, 0),
            3 => (0, 1, 1, 2),
            _ => (0, 1, 2, 3),
        };
        Self {
            n,
            app: app.to_string(),
            upstream: upstream.to_string(),
            load: load.to_string(),
            agent: agent.to_string(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "cpus": self.n,
            "app": self.app,
            "upstream": self.upstream,
            "load_generator": self.load,
            "agent": self.agent,
        })
    }
}

/// Paths and settings every group uses.
pub(crate) struct Env {
    pub(crate) root: PathBuf,
    pub(crate) venv: PathBuf,
    pub(crate) agent: PathBuf,
    pub(crate) cli: PathBuf,
    /// The synthetic server (`bench-server`, beside the runner).
    pub(crate) server: PathBuf,
    /// The run's scratch directory (logs, cassettes, certificate).
    pub(crate) work: PathBuf,
    pub(crate) cpus: Cpus,
    pub(crate) noise_threshold: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub(crate) fn url(self, port: u16, path: &str) -> String {
        format!("{}://127.0.0.1:{port}{path}", self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Plain,
    Dep,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Plain => "/plain",
            Self::Dep => "/dep",
        }
    }
}

/// The untouched app (measured untraced, and with the agent attached) or the same app with the
/// Python tool's middleware recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppKind {
    Plain,
    PythonTool,
    /// The untouched app whose upstream is the synthetic Rust server (answers in tens of µs):
    /// the baseline of the replay group, where the upstream's own time must not hide the mock's.
    FastUpstream,
}

/// A running app.
#[derive(Clone, Debug)]
pub(crate) struct AppRef {
    pub(crate) pid: u32,
    pub(crate) port: u16,
    /// The Python tool's cassette directory.
    pub(crate) py_dir: Option<PathBuf>,
}

struct App {
    scheme: Scheme,
    kind: AppKind,
    proc: Proc,
    r: AppRef,
}

/// Long-lived processes of a run, started on first use.
pub(crate) struct Rig {
    pub(crate) env: Env,
    upstream: Option<(Proc, u16)>,
    apps: Vec<App>,
    cert: Option<(PathBuf, PathBuf)>,
    /// Other long-lived processes (synthetic servers).
    extra: Vec<Proc>,
    /// Port of the synthetic upstream of [`AppKind::FastUpstream`].
    fast_upstream: Option<u16>,
}

impl Rig {
    pub(crate) fn new(env: Env) -> Self {
        Self {
            env,
            upstream: None,
            apps: Vec::new(),
            cert: None,
            extra: Vec::new(),
            fast_upstream: None,
        }
    }

    /// Pids of every long-lived benchmark process (for the noise accounting).
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.apps.iter().map(|a| a.r.pid).collect();
        v.extend(self.upstream.iter().map(|(p, _)| p.pid()));
        v.extend(self.extra.iter().map(Proc::pid));
        v
    }

    /// `tests/apps/upstream.py` (the end-to-end tests' upstream), pinned, without its log.
    pub(crate) fn upstream_port(&mut self) -> Result<u16> {
        if let Some((_, port)) = &self.upstream {
            return Ok(*port);
        }
        let port = free_port()?;
        let mut cmd = pinned(&self.env.cpus.upstream, self.env.venv.join("bin/python"));
        cmd.arg(self.env.root.join("tests/apps/upstream.py"))
            .arg(port.to_string())
            .env_remove("UPSTREAM_LOG");
        let mut p = Proc::spawn("upstream", cmd, &self.env.work)?;
        p.wait_port(port, Duration::from_secs(20))?;
        self.upstream = Some((p, port));
        Ok(port)
    }

    /// Self-signed certificate for 127.0.0.1, made now in the run's scratch directory.
    fn cert(&mut self) -> Result<(PathBuf, PathBuf)> {
        if let Some(c) = &self.cert {
            return Ok(c.clone());
        }
        let dir = self.env.work.join("tls");
        fs::create_dir_all(&dir)?;
        let (key, crt) = (dir.join("key.pem"), dir.join("cert.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!("openssl req: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.cert = Some((key.clone(), crt.clone()));
        Ok((key, crt))
    }

    /// The FastAPI bench app (`tests/apps/bench/bench_app.py`, one uvicorn worker), pinned.
    pub(crate) fn app(&mut self, scheme: Scheme, kind: AppKind) -> Result<AppRef> {
        if let Some(a) = self
            .apps
            .iter_mut()
            .find(|a| a.scheme == scheme && a.kind == kind)
        {
            if let Some(s) = a.proc.exited() {
                bail!("{} exited ({s})\n{}", a.proc.name, a.proc.log_tail());
            }
            return Ok(a.r.clone());
        }
        let up = match kind {
            AppKind::FastUpstream => self.fast_upstream_port()?,
            _ => self.upstream_port()?,
        };
        let port = free_port()?;
        let name = format!(
            "app-{}-{}",
            scheme.name(),
            match kind {
                AppKind::Plain => "plain",
                AppKind::PythonTool => "python-timetracer",
                AppKind::FastUpstream => "fast-upstream",
            }
        );
        let mut cmd = pinned(&self.env.cpus.app, self.env.venv.join("bin/uvicorn"));
        cmd.current_dir(self.env.root.join("tests/apps/bench"))
            .args(["bench_app:app", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--no-access-log")
            .env("UPSTREAM_URL", format!("http://127.0.0.1:{up}"));
        for k in [
            "TIMETRACER_MODE",
            "TIMETRACER_DIR",
            "BENCH_PYTHON_TIMETRACER",
        ] {
            cmd.env_remove(k);
        }
        if scheme == Scheme::Https {
            let (key, crt) = self.cert()?;
            cmd.arg("--ssl-keyfile")
                .arg(key)
                .arg("--ssl-certfile")
                .arg(crt);
        }
        let py_dir = (kind == AppKind::PythonTool).then(|| self.env.work.join(&name));
        if let Some(d) = &py_dir {
            fs::create_dir_all(d)?;
            cmd.env("BENCH_PYTHON_TIMETRACER", "1")
                .env("TIMETRACER_MODE", "record")
                .env("TIMETRACER_DIR", d);
        }
        let mut proc = Proc::spawn(&name, cmd, &self.env.work)?;
        proc.wait_port(port, Duration::from_secs(30))?;
        let r = AppRef {
            pid: proc.pid(),
            port,
            py_dir,
        };
        self.apps.push(App {
            scheme,
            kind,
            proc,
            r: r.clone(),
        });
        Ok(r)
    }

    /// The synthetic server as a plain upstream (any GET gets a small JSON body), pinned with
    /// the upstream.
    pub(crate) fn fast_upstream_port(&mut self) -> Result<u16> {
        if let Some(p) = self.fast_upstream {
            return Ok(p);
        }
        let cpus = self.env.cpus.upstream.clone();
        let (_, port) = self.synthetic("fast-upstream", &cpus, None)?;
        self.fast_upstream = Some(port);
        Ok(port)
    }

    /// Starts the synthetic server (the `bench-server` binary) pinned to `cpus`; returns its pid
    /// and port.
    pub(crate) fn synthetic(
        &mut self,
        name: &str,
        cpus: &str,
        upstream: Option<u16>,
    ) -> Result<(u32, u16)> {
        let port = free_port()?;
        let mut cmd = pinned(cpus, &self.env.server);
        cmd.args(["--port", &port.to_string()]);
        if let Some(u) = upstream {
            cmd.args(["--upstream", &u.to_string()]);
        }
        let mut p = Proc::spawn(name, cmd, &self.env.work)?;
        p.wait_port(port, Duration::from_secs(10))?;
        let pid = p.pid();
        self.extra.push(p);
        Ok((pid, port))
    }
}

/// A running `timetracer-agent attach`.
pub(crate) struct Agent {
    proc: Proc,
    pub(crate) out: PathBuf,
}

/// The agent's exit summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AgentSummary {
    pub(crate) requests: u64,
    pub(crate) cassettes: u64,
    pub(crate) events: u64,
    /// Kernel drop counters that are not zero (name, events).
    pub(crate) kernel_drops: Vec<(String, u64)>,
    /// Agent counters printed at exit (`write_errors`, `data_unknown_conn`, ...).
    pub(crate) counters: Vec<(String, u64)>,
}

/// Agent counters that mean a message or a cassette was lost.
const LOSS_COUNTERS: &[&str] = &["undecodable_records", "write_errors", "index_errors"];

impl AgentSummary {
    /// Everything lost: kernel drops (events) plus the agent's loss counters.
    pub(crate) fn drops(&self) -> u64 {
        self.kernel_drops.iter().map(|(_, n)| n).sum::<u64>()
            + self
                .counters
                .iter()
                .filter(|(k, _)| LOSS_COUNTERS.contains(&k.as_str()))
                .map(|(_, n)| n)
                .sum::<u64>()
    }

    pub(crate) fn to_json(&self) -> Value {
        let map = |v: &[(String, u64)]| {
            v.iter()
                .map(|(k, n)| (k.clone(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "requests": self.requests,
            "cassettes": self.cassettes,
            "events": self.events,
            "drops": self.drops(),
            "kernel_drops": map(&self.kernel_drops),
            "counters": map(&self.counters),
        })
    }

    /// Parses the lines `timetracer-agent` prints when it stops.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut s = Self::default();
        let mut done = false;
        // Anywhere in the line: a terminal status line may precede it.
        let after = |line: &'_ str, p: &str| -> Option<String> {
            line.find(p).map(|i| line[i + p.len()..].trim().to_owned())
        };
        for line in text.lines() {
            if let Some(rest) = after(line, "timetracer-agent: done after ") {
                // 3.2s: 120 requests seen, 118 cassettes written to DIR, 456 events, 1.2 MiB payload
                let num_before = |word: &str| -> Option<u64> {
                    let i = rest.find(word)?;
                    rest[..i].split_whitespace().last()?.parse().ok()
                };
                s.requests = num_before(" requests seen").context("requests")?;
                s.cassettes = num_before(" cassettes written").context("cassettes")?;
                let before_events = &rest[..rest.rfind(" events,").context("events")?];
                s.events = before_events
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .context("events")?;
                done = true;
            } else if let Some(rest) = after(line, "timetracer-agent: kernel drops: ") {
                if rest != "none" {
                    for part in rest.split(", ") {
                        if let Some((k, v)) = part.split_once('=') {
                            let n = v.split_whitespace().next().unwrap_or("0");
                            s.kernel_drops.push((k.to_owned(), n.parse().unwrap_or(0)));
                        }
                    }
                }
            } else if let Some(rest) = after(line, "timetracer-agent: agent counters: ") {
                for part in rest.split(", ") {
                    if let Some((k, v)) = part.split_once('=') {
                        s.counters.push((k.to_owned(), v.parse().unwrap_or(0)));
                    }
                }
            }
        }
        if !done {
            bail!("no exit summary in the agent's output");
        }
        Ok(s)
    }
}

impl Agent {
    /// `timetracer-agent attach --pid PID --out OUT [extra]`, pinned; returns once attached and
    /// the TLS probes had time to be placed.
    pub(crate) fn attach(
        env: &Env,
        name: &str,
        pid: u32,
        out: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        super::sys::retire(out);
        let mut cmd = pinned(&env.cpus.agent, &env.agent);
        cmd.args(["attach", "--pid", &pid.to_string(), "--out"])
            .arg(out)
            // The benchmark's own (root's) directory: under `sudo`, the agent would otherwise
            // write as the invoking user (#19).
            .args(["--user", "root"])
            .args(extra.iter().map(OsString::from))
            .env_remove("TIMETRACER_DIR")
            .env_remove("TIMETRACER_SAMPLE_RATE")
            .env_remove("TIMETRACER_S3_BUCKET")
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn(name, cmd, &env.work)?;
        proc.wait_log("attached to pid", Duration::from_secs(60))?;
        // The TLS library scan runs in the first turn of the agent's loop.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self {
            proc,
            out: out.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGINT, wait for the exit summary.
    pub(crate) fn stop(mut self) -> Result<AgentSummary> {
        self.proc.signal(Signal::SIGINT);
        match self.proc.wait_timeout(Duration::from_secs(120)) {
            Some(st) if st.success() => {
                AgentSummary::parse(&self.proc.log_text()).with_context(|| self.proc.log_tail())
            }
            Some(st) => bail!("the agent exited with {st}\n{}", self.proc.log_tail()),
            None => bail!(
                "the agent did not stop within 120 s of SIGINT\n{}",
                self.proc.log_tail()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_summary() {
        let text = "timetracer-agent: attached to pid 12; writing cassettes to /x; Ctrl-C to stop
\r\x1b[2Ktimetracer-agent: done after 3.2s: 120 requests seen, 118 cassettes written to /tmp/a b, 4567 events, 1.2 MiB payload
timetracer-agent: kernel drops: ring_full=12 (3.4 KiB), cap_reached=1 (64.0 KiB)
timetracer-agent: agent counters: background_calls=3, write_errors=2
";
        let s = AgentSummary::parse(text).unwrap();
        assert_eq!((s.requests, s.cassettes, s.events), (120, 118, 4567));
        assert_eq!(
            s.kernel_drops,
            vec![("ring_full".to_owned(), 12), ("cap_reached".to_owned(), 1)]
        );
        assert_eq!(s.drops(), 15);
        let none = AgentSummary::parse(
            "timetracer-agent: done after 1.0s: 0 requests seen, 0 cassettes written to x, 0 events, 0 B payload\ntimetracer-agent: kernel drops: none\n",
        )
        .unwrap();
        assert_eq!(none.drops(), 0);
        assert!(AgentSummary::parse("nothing").is_err());
    }

    #[test]
    fn cpu_plans() {
        let c = Cpus::for_machine(2);
        assert_eq!(
            (c.app.as_str(), c.load.as_str(), c.agent.as_str()),
            ("0", "1", "0")
        );
        let c = Cpus::for_machine(8);
        assert_eq!(
            (c.upstream.as_str(), c.load.as_str(), c.agent.as_str()),
            ("1", "2", "3")
        );
    }
}
