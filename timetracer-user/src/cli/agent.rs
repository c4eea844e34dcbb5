//! `timetracer-agent`: `attach --pid PID` and `record -- CMD`.
use std::{
    ffi::OsString,
    io::{IsTerminal as _, Write as _},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use timetracer_common::decode;

use crate::{
    capture::{Capture, CaptureOptions, procfs},
    cassette::{self, BuildOptions, Compression},
    correlate::{CorrelateOptions, Correlator, model::RecordedRequest, monotonic_ns},
    live::{LiveStats, LiveUpdate},
    redact::RedactionPolicy,
    telemetry::{Counters, human_bytes},
};

/// Record every inbound HTTP request of an unmodified Python process, with each dependency
/// call it made, into one cassette per request — from the kernel, with eBPF. Needs root.
#[derive(Debug, Parser)]
#[command(name = "timetracer-agent", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a running process and its descendants until Ctrl-C / SIGTERM.
    ///
    /// Example: sudo timetracer-agent attach --pid $(pgrep -f 'uvicorn app:app') --out ./cassettes
    Attach {
        /// Process id to trace (its child processes are traced too).
        #[arg(long)]
        pid: u32,
        /// Watch requests live in a terminal UI while recording (see `top`).
        #[arg(long)]
        tui: bool,
        #[command(flatten)]
        opts: RecordArgs,
    },
    /// Watch a running process' requests and their dependency calls live, in a terminal UI.
    ///
    /// Keys: ↑/↓ or j/k select, Enter details, / filter, p pause, e errors only, s save the
    /// selected request, ? help, q quit.
    ///
    /// Example: sudo timetracer-agent top --pid $(pgrep -of gunicorn) --no-save
    Top {
        /// Process id to trace (its child processes are traced too).
        #[arg(long)]
        pid: u32,
        /// Do not write cassettes; press `s` to save the selected request.
        #[arg(long)]
        no_save: bool,
        #[command(flatten)]
        opts: RecordArgs,
    },
    /// Launch a command under tracing from its first syscall; stops when it exits.
    ///
    /// Example: sudo timetracer-agent record --out ./cassettes -- uvicorn app:app --port 8000
    Record {
        #[command(flatten)]
        opts: RecordArgs,
        /// The command to run, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Replay cassettes: run the unmodified app with every dependency answered from the
    /// recording, send the recorded requests, and say what changed.
    ///
    /// Example: sudo timetracer-agent replay ./cassettes -- uvicorn app:app --port 8000
    Replay(super::replay::ReplayArgs),
    /// Run replays for the dashboard (`timetracer serve`) over a Unix socket.
    ///
    /// Example: sudo timetracer-agent replay-server --group developers
    ReplayServer(super::replay::ReplayServerArgs),
}

/// Options shared by `attach` and `record`.
#[derive(Debug, Args, Clone)]
pub struct RecordArgs {
    /// Directory cassettes are written to.
    #[arg(long, env = "TIMETRACER_DIR", default_value = "./cassettes")]
    pub out: PathBuf,
    /// Bytes of each message body kept (the rest is counted as truncated).
    /// Default 1 MiB, or TIMETRACER_MAX_BODY_KB × 1024.
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<u64>,
    /// Fraction of requests recorded, 0.0–1.0.
    #[arg(long, env = "TIMETRACER_SAMPLE_RATE", default_value_t = 1.0)]
    pub sample_rate: f64,
    /// Write only requests that failed (status >= 400, no response, or a traceback).
    #[arg(long, env = "TIMETRACER_ERRORS_ONLY", value_parser = parse_bool, default_missing_value = "true", num_args = 0..=1, default_value = "false")]
    pub errors_only: bool,
    /// Do not record requests to this path (exact, or prefix followed by `/`; `/admin/*` also
    /// works). Repeatable; TIMETRACER_EXCLUDE_PATHS takes a comma-separated list.
    #[arg(long = "exclude-path", value_name = "PATH")]
    pub exclude_paths: Vec<String>,
    /// Compress cassettes (`zstd`).
    #[arg(long, value_parser = ["zstd", "none"], env = "TIMETRACER_COMPRESSION")]
    pub compress: Option<String>,
    /// Do not redact secrets (headers such as Authorization, password/token fields).
    #[arg(long)]
    pub no_redact: bool,
    /// Extra header names to redact (repeatable).
    #[arg(long = "redact-header", value_name = "NAME")]
    pub redact_headers: Vec<String>,
    /// Extra body/query keys to redact, matched on the whole key (repeatable).
    #[arg(long = "redact-key", value_name = "KEY")]
    pub redact_keys: Vec<String>,
    /// Service name written in each cassette.
    #[arg(long, env = "TIMETRACER_SERVICE", default_value = "timetracer-service")]
    pub service: String,
    /// Environment name written in each cassette.
    #[arg(long, env = "TIMETRACER_ENV", default_value = "local")]
    pub env: String,
    /// Kernel-side diagnostics (why a socket or TLS call was skipped): off, error, warn, info,
    /// debug, trace. Also a `timetracer::ebpf=LEVEL` directive in TIMETRACER_LOG. Default off.
    #[arg(long, env = "TIMETRACER_EBPF_LOG", value_name = "LEVEL")]
    pub ebpf_log: Option<crate::capture::EbpfLogLevel>,
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!(
            "expected true/false (or 1/0, yes/no, on/off), got {s:?}"
        )),
    }
}

/// Validated options.
#[derive(Debug, Clone)]
struct RecordPlan {
    out: PathBuf,
    max_body: u64,
    sample_rate: f64,
    errors_only: bool,
    exclude: Vec<String>,
    compression: Compression,
    build: BuildOptions,
    /// Write cassettes (false for `top --no-save`).
    save: bool,
    ebpf_log: crate::capture::EbpfLogLevel,
}

impl RecordArgs {
    fn plan(&self) -> anyhow::Result<RecordPlan> {
        let max_body = match self.max_body {
            Some(b) => b,
            None => match std::env::var("TIMETRACER_MAX_BODY_KB") {
                Ok(kb) => kb
                    .trim()
                    .parse::<u64>()
                    .map(|k| k * 1024)
                    .with_context(|| {
                        format!("TIMETRACER_MAX_BODY_KB={kb:?} is not a number of KiB")
                    })?,
                Err(_) => 1 << 20,
            },
        };
        if !(0.0..=1.0).contains(&self.sample_rate) {
            bail!(
                "--sample-rate {} is out of range: use a value from 0.0 to 1.0",
                self.sample_rate
            );
        }
        let mut exclude = self.exclude_paths.clone();
        if let Ok(v) = std::env::var("TIMETRACER_EXCLUDE_PATHS") {
            exclude.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        let compression = match self.compress.as_deref() {
            Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        };
        let mut redaction = RedactionPolicy {
            enabled: !self.no_redact,
            ..RedactionPolicy::default()
        };
        redaction
            .header_names
            .extend(self.redact_headers.iter().map(|h| h.to_ascii_lowercase()));
        redaction
            .body_keys
            .extend(self.redact_keys.iter().map(|k| k.to_ascii_lowercase()));
        let build = BuildOptions {
            git_sha: std::env::var("TIMETRACER_GIT_SHA")
                .ok()
                .filter(|s| !s.is_empty()),
            service: self.service.clone(),
            env: self.env.clone(),
            max_body: max_body as usize,
            redaction,
            sample_rate: self.sample_rate,
            errors_only: self.errors_only,
        };
        Ok(RecordPlan {
            out: self.out.clone(),
            max_body,
            sample_rate: self.sample_rate,
            errors_only: self.errors_only,
            exclude,
            compression,
            build,
            save: true,
            ebpf_log: crate::capture::EbpfLogLevel::resolve(self.ebpf_log),
        })
    }
}

/// `true` when `path` is excluded by one of the patterns.
fn excluded(path: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.strip_suffix("/*").unwrap_or(p);
        path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
            || (p.ends_with('/') && path.starts_with(p))
    })
}

static STOP: AtomicBool = AtomicBool::new(false);
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let child = CHILD_PID.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls kill(2).
        unsafe { sigaction(s, &act) }.context("installing signal handlers")?;
    }
    Ok(())
}

/// Hidden first argument of the held child (see `record`).
const HELD_EXEC: &str = "__exec-held";

/// The held child: wait for the agent's go (one byte on `fd`), then become CMD.
fn exec_held(args: &[OsString]) -> ExitCode {
    let fd: i32 = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    let cmd = args.get(2..).unwrap_or_default();
    if fd < 0 || cmd.is_empty() {
        eprintln!("timetracer-agent: {HELD_EXEC} is internal to `record`");
        return ExitCode::from(2);
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer from an inherited fd, then closing it.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    if n != 1 {
        eprintln!(
            "timetracer-agent: the agent went away before tracing started; not running {:?}",
            cmd[0]
        );
        return ExitCode::from(125);
    }
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    eprintln!(
        "timetracer-agent: cannot run {:?}: {err} (is it on PATH?)",
        cmd[0]
    );
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Entry point of the `timetracer-agent` binary.
pub fn main() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == HELD_EXEC) {
        return exec_held(&raw[2..]);
    }
    tracing_subscriber::fmt()
        .with_env_filter(crate::capture::ebpf_log::env_filter())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Attach {
            pid,
            tui: false,
            opts,
        } => opts.plan().and_then(|p| attach(pid, &p)),
        Command::Attach {
            pid,
            tui: true,
            opts,
        } => opts.plan().and_then(|p| top(pid, p, true)),
        Command::Top { pid, no_save, opts } => opts.plan().and_then(|p| top(pid, p, !no_save)),
        Command::Record { opts, cmd } => opts.plan().and_then(|p| record(&cmd, &p)),
        Command::Replay(args) => return super::replay::replay(&args),
        Command::ReplayServer(args) => super::replay::server(&args),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("timetracer-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn attach(pid: u32, plan: &RecordPlan) -> anyhow::Result<ExitCode> {
    if !procfs::exists(pid) {
        bail!("no process with pid {pid} (check `ps -p {pid}`)");
    }
    crate::capture::preflight()?;
    let mut session = Session::start(plan)?;
    for p in procfs::with_descendants(pid) {
        session.add_process(p, true)?;
    }
    // The asyncio probes are in place before the caller is told tracing started.
    session.scan_python();
    eprintln!(
        "timetracer-agent: attached to pid {pid}; writing cassettes to {}; Ctrl-C to stop",
        plan.out.display()
    );
    install_signal_handlers()?;
    session.run(|| !procfs::exists(pid))?;
    if !procfs::exists(pid) {
        eprintln!("timetracer-agent: pid {pid} exited");
    }
    session.finish();
    Ok(ExitCode::SUCCESS)
}

/// `top` and `attach --tui`: the session runs on a worker thread and feeds the terminal UI,
/// which owns the terminal on this thread until the user quits (or a signal arrives).
fn top(pid: u32, mut plan: RecordPlan, save: bool) -> anyhow::Result<ExitCode> {
    if !procfs::exists(pid) {
        bail!("no process with pid {pid} (check `ps -p {pid}`)");
    }
    crate::capture::preflight()?;
    plan.save = save;
    let (tx, rx) = mpsc::sync_channel(4096);
    let mut session = Session::start(&plan)?;
    session.live = Some(LiveFeed {
        tx,
        target: describe_target(pid),
    });
    session.tty = false;
    for p in procfs::with_descendants(pid) {
        session.add_process(p, true)?;
    }
    install_signal_handlers()?;
    let worker = std::thread::Builder::new()
        .name("tt-session".into())
        .spawn(move || {
            let res = session.run(|| !procfs::exists(pid));
            // The UI is gone or going: drop the feed before the (blocking) final flush.
            session.live = None;
            session.finish();
            res
        })?;
    let opts = crate::tui::TuiOptions {
        out_dir: plan.out.clone(),
        save_enabled: save,
        compression: plan.compression,
    };
    let ui = crate::tui::run(rx, opts, &STOP);
    STOP.store(true, Ordering::SeqCst);
    let res = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the recording thread panicked"))?;
    ui.context("the terminal UI failed")?;
    res?;
    Ok(ExitCode::SUCCESS)
}

fn describe_target(pid: u32) -> String {
    let info = procfs::process_info(pid);
    let cmd: Vec<&str> = info.cmdline.iter().map(String::as_str).take(4).collect();
    format!("pid {pid} ({})", cmd.join(" "))
}

fn record(cmd: &[OsString], plan: &RecordPlan) -> anyhow::Result<ExitCode> {
    crate::capture::preflight()?;
    let mut session = Session::start(plan)?;
    // The child is our own binary in a hidden `__exec-held` mode: it waits on a pipe until its
    // pid is in the kernel's target set, then execs CMD under the same pid, so tracing starts
    // at CMD's very first syscall. (A `pre_exec` hook cannot wait: `spawn` itself blocks until
    // the child has exec'd.)
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let rd_fd = std::os::fd::AsRawFd::as_raw_fd(&rd);
    nix::fcntl::fcntl(
        rd_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("fcntl")?;
    let me = std::env::current_exe().context("locating timetracer-agent")?;
    let mut child = std::process::Command::new(me)
        .arg(HELD_EXEC)
        .arg(rd_fd.to_string())
        .arg("--")
        .args(cmd)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd[0]))?;
    drop(rd);
    let pid = child.id();
    CHILD_PID.store(pid as i32, Ordering::SeqCst);
    install_signal_handlers()?;
    session.add_process(pid, false)?;
    nix::unistd::write(&wr, b"g").context("releasing the child")?;
    drop(wr);
    eprintln!(
        "timetracer-agent: recording pid {pid}; writing cassettes to {}",
        plan.out.display()
    );
    let mut status = None;
    session.run(|| {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        status.is_some()
    })?;
    let status = match status {
        Some(s) => s,
        None => child.wait().context("waiting for the command")?,
    };
    session.finish();
    Ok(exit_code_of(status))
}

fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// A recording in progress: kernel capture, correlator, writer thread.
struct Session {
    capture: Capture,
    correlator: Correlator,
    counters: Counters,
    writer: Option<std::thread::JoinHandle<()>>,
    tx: Option<mpsc::SyncSender<(RecordedRequest, Option<mpsc::SyncSender<LiveUpdate>>)>>,
    plan: RecordPlan,
    preexisting_seq: u64,
    started: Instant,
    tty: bool,
    /// The live view's feed (`top`, `attach --tui`).
    live: Option<LiveFeed>,
    /// CPython discovery per process (issue #7).
    py_scans: std::collections::HashMap<u32, PyScan>,
}

/// Where CPython discovery stands for one process.
struct PyScan {
    /// The executable it was done for (a launched child is looked at before its `exec`).
    exe: PathBuf,
    /// Settled (probes attached, unsupported, or not a CPython).
    done: bool,
    /// The copy probe and `PY_PROCS` are in place; only the task probe is missing.
    copy_attached: bool,
    last: Instant,
    /// When discovery started for this executable (pending gives up after 10 s).
    first: Instant,
}

/// Where a session sends live updates.
struct LiveFeed {
    tx: mpsc::SyncSender<LiveUpdate>,
    target: String,
}

impl Session {
    fn start(plan: &RecordPlan) -> anyhow::Result<Self> {
        // Private when we make it (cassettes and index are 0600 in 0700 directories).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&plan.out)
            .with_context(|| {
                format!("cannot create the output directory {}", plan.out.display())
            })?;
        let per_syscall =
            u32::try_from(plan.max_body.saturating_add(64 * 1024)).unwrap_or(u32::MAX);
        let capture = Capture::load(CaptureOptions {
            max_bytes_per_syscall: per_syscall,
            ebpf_log: plan.ebpf_log,
        })?;
        let counters = Counters::default();
        let opts = CorrelateOptions {
            max_body: plan.max_body as usize,
            ..CorrelateOptions::default()
        };
        let correlator = Correlator::new(opts, counters.clone());
        let (tx, rx) =
            mpsc::sync_channel::<(RecordedRequest, Option<mpsc::SyncSender<LiveUpdate>>)>(1024);
        let wplan = plan.clone();
        let wcounters = counters.clone();
        let writer = std::thread::Builder::new()
            .name("tt-writer".into())
            .spawn(move || writer_loop(&rx, &wplan, &wcounters))
            .context("starting the writer thread")?;
        Ok(Self {
            capture,
            correlator,
            counters,
            writer: Some(writer),
            tx: Some(tx),
            plan: plan.clone(),
            preexisting_seq: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            live: None,
            py_scans: std::collections::HashMap::new(),
        })
    }

    /// Attaches TLS probes to OpenSSL libraries of traced processes not handled yet.
    fn scan_tls(&mut self) {
        for pid in self.correlator.pids() {
            if !procfs::exists(pid) {
                continue;
            }
            for r in self.capture.attach_tls(pid) {
                match r {
                    crate::capture::TlsReport::Attached { pid, lib, sites } => {
                        let what: Vec<String> = sites.iter().map(|s| s.what.clone()).collect();
                        tracing::info!(pid, lib = %lib.display(), sites = ?what, "TLS probes attached");
                    }
                    crate::capture::TlsReport::Unsupported { pid, lib, reason } => {
                        if self.live.is_some() {
                            tracing::warn!(pid, lib = %lib.display(), %reason, "TLS not recorded");
                        } else {
                            eprintln!("\ntimetracer-agent: pid {pid}: {}: {reason}", lib.display());
                        }
                    }
                }
            }
        }
    }

    /// Finds the CPython runtime of traced processes and attaches the asyncio probes (issue
    /// #7). Cheap when nothing changed: one `readlink` per process.
    fn scan_python(&mut self) {
        use crate::capture::python::{Discovery, discover};
        use crate::correlate::python::Runtime;
        for pid in self.correlator.pids() {
            let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
                continue;
            };
            if let Some(s) = self.py_scans.get(&pid)
                && s.exe == exe
                && (s.done || s.last.elapsed() < Duration::from_millis(50))
            {
                continue;
            }
            let prev = self.py_scans.get(&pid).filter(|s| s.exe == exe);
            let copy_attached = prev.is_some_and(|s| s.copy_attached);
            let first = prev.map_or_else(Instant::now, |s| s.first);
            let mut scan = PyScan {
                exe: exe.clone(),
                done: true,
                copy_attached,
                last: Instant::now(),
                first,
            };
            let found = match discover(pid) {
                Discovery::Pending(why) if first.elapsed() > Duration::from_secs(10) => {
                    Discovery::Unsupported {
                        version: "?".into(),
                        reason: format!("runtime not usable after 10 s: {why}"),
                    }
                }
                d => d,
            };
            match found {
                Discovery::NotPython => {}
                Discovery::Pending(why) => {
                    tracing::debug!(pid, %why, "CPython not ready yet");
                    self.correlator.py.set_runtime(pid, Runtime::Pending);
                    scan.done = false;
                }
                Discovery::Unsupported { version, reason } => {
                    self.correlator.py.set_runtime(pid, Runtime::Unsupported);
                    let msg = format!(
                        "pid {pid}: CPython {version}: unsupported-runtime: {reason}; its dependency calls are flagged ambiguous, not attributed"
                    );
                    if self.live.is_some() {
                        tracing::warn!("{msg}");
                    } else {
                        eprintln!("\ntimetracer-agent: {msg}");
                    }
                }
                Discovery::Supported(rt) => {
                    let mut rt = *rt;
                    if copy_attached {
                        // Only the task probe was missing.
                        rt.copy_site.offset = u64::MAX;
                    }
                    match self.capture.attach_python(pid, &rt) {
                        Ok(sites) => {
                            scan.copy_attached = true;
                            scan.done = rt.task_site.is_some();
                            if !copy_attached {
                                self.correlator.py.set_runtime(pid, Runtime::Supported);
                                self.correlator.py.set_probes_on(pid, monotonic_ns());
                            }
                            tracing::info!(
                                pid,
                                version = %rt.version,
                                interpreter = %rt.interpreter.display(),
                                ?sites,
                                task_missing = ?rt.task_missing,
                                "CPython asyncio attribution on"
                            );
                        }
                        Err(e) => {
                            self.correlator.py.set_runtime(pid, Runtime::Unsupported);
                            eprintln!(
                                "\ntimetracer-agent: pid {pid}: CPython {}: unsupported-runtime: {e}; its dependency calls are flagged ambiguous",
                                rt.version
                            );
                        }
                    }
                }
            }
            self.py_scans.insert(pid, scan);
        }
    }

    /// Adds a process to the target set; with `seed_sockets`, registers its open connections.
    fn add_process(&mut self, pid: u32, seed_sockets: bool) -> anyhow::Result<()> {
        self.capture.add_target(pid)?;
        self.correlator.add_process(procfs::process_info(pid));
        if seed_sockets {
            for s in procfs::open_sockets(pid) {
                self.preexisting_seq += 1;
                let added = self
                    .capture
                    .add_socket(pid, s.fd, s.server, self.preexisting_seq)?;
                tracing::debug!(pid, fd = s.fd, server = s.server, local = %s.local, remote = %s.remote, ?added, "Open connection at attach");
                if let Some(id) = added {
                    self.correlator
                        .add_preexisting(pid, s.fd, id, s.server, s.local, s.remote);
                }
            }
        }
        Ok(())
    }

    /// Drains and processes until `done()` says the target is gone or a signal arrives.
    fn run(&mut self, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
        let mut last_status = Instant::now();
        let mut last_tls_scan: Option<Instant> = None;
        let mut known_pids = 0;
        loop {
            // New worker processes get their TLS probes at once; libraries loaded later
            // (wheels bundling their own libssl) within a second.
            let pids = self.correlator.pids().len();
            if pids != known_pids
                || last_tls_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                known_pids = pids;
                last_tls_scan = Some(Instant::now());
                self.scan_tls();
            }
            self.scan_python();
            let stop = STOP.load(Ordering::SeqCst);
            let finished = done();
            self.step();
            if stop || finished {
                // Let in-flight syscalls of other CPUs land.
                std::thread::sleep(Duration::from_millis(50));
                self.step();
                return Ok(());
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                if self.tty {
                    eprint!("\r\x1b[2K{}", self.status_line());
                }
                self.send_live_stats();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn step(&mut self) {
        let correlator = &mut self.correlator;
        let counters = &self.counters;
        let n = self.capture.drain(|raw| match decode(raw) {
            Ok(rec) => correlator.handle(rec),
            Err(_) => counters.inc_named("undecodable_records"),
        });
        self.counters.inc_events(n as u64);
        let now = monotonic_ns();
        self.correlator.pump(now);
        let ready = self.correlator.take_ready(now);
        if ready.is_empty() {
            return;
        }
        // One read of the kernel's drop counters per drain (a map lookup per CPU and
        // counter), not per request: it was a tenth of the agent's CPU at 2k req/s.
        let drops = self.drops_snapshot();
        for mut r in ready {
            r.drops.clone_from(&drops);
            self.submit(r);
        }
    }

    fn submit(&mut self, r: RecordedRequest) {
        if let Some(tx) = &self.tx {
            // Blocking send: a slow disk slows the agent (and eventually the kernel counts
            // ring drops), it never blocks the traced app.
            let live = self.live.as_ref().map(|l| l.tx.clone());
            let _ = tx.send((r, live));
        }
    }

    fn drops_snapshot(&mut self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .capture
            .drops()
            .into_iter()
            .map(|(n, ev, _)| (n.to_owned(), ev))
            .collect();
        for name in ["undecodable_records", "data_unknown_conn"] {
            v.push((name.to_owned(), self.counters.named(name)));
        }
        v
    }

    fn send_live_stats(&mut self) {
        if self.live.is_none() {
            return;
        }
        let drops: Vec<(String, u64)> = self
            .drops_snapshot()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        let Some(live) = &self.live else { return };
        let stats = LiveStats {
            target: live.target.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            requests: self.counters.named("requests"),
            events: self.counters.events(),
            bytes: self.counters.bytes(),
            cassettes: self.counters.cassettes(),
            drops,
            skipped_updates: self.counters.named("live_skipped"),
        };
        if live.tx.try_send(LiveUpdate::Stats(stats)).is_err() {
            self.counters.inc_named("live_skipped");
        }
    }

    fn status_line(&mut self) -> String {
        let drops: u64 = self.drops_snapshot().iter().map(|(_, n)| n).sum();
        format!(
            "timetracer: {} requests | {} cassettes | {} events | {} | {} conns | drops {}",
            self.counters.named("requests"),
            self.counters.cassettes(),
            self.counters.events(),
            human_bytes(self.counters.bytes()),
            self.correlator.open_connections(),
            drops
        )
    }

    fn finish(mut self) {
        let drops = self.drops_snapshot();
        for mut r in self.correlator.finish() {
            r.drops.clone_from(&drops);
            self.submit(r);
        }
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        let drops = self.capture.drops();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "timetracer-agent: done after {:.1}s: {} requests seen, {} cassettes written to {}, {} events, {} payload",
            self.started.elapsed().as_secs_f64(),
            self.counters.named("requests"),
            self.counters.cassettes(),
            self.plan.out.display(),
            self.counters.events(),
            human_bytes(self.counters.bytes()),
        );
        let lost: Vec<String> = drops
            .iter()
            .filter(|(_, ev, by)| *ev > 0 || *by > 0)
            .map(|(n, ev, by)| format!("{n}={ev} ({})", human_bytes(*by)))
            .collect();
        let _ = writeln!(
            err,
            "timetracer-agent: kernel drops: {}",
            if lost.is_empty() {
                "none".to_owned()
            } else {
                lost.join(", ")
            }
        );
        let py: Vec<String> = self
            .capture
            .py_hits()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !py.is_empty() {
            let _ = writeln!(
                err,
                "timetracer-agent: python probes: {}, tasks={} roots={} copies={} stamps={}",
                py.join(", "),
                self.correlator.py.tasks,
                self.correlator.py.roots,
                self.correlator.py.copies,
                self.correlator.py.stamps,
            );
        }
        let snap = self.counters.snapshot();
        let interesting: Vec<String> = [
            "background_calls",
            "late_calls",
            "ambiguous_unpinned_calls",
            "sendfile_bytes",
            "db_calls",
            "tls_connections",
            "index_errors",
            "s3_uploaded",
            "s3_errors",
            "skipped_bytes",
            "non_http_bytes",
            "undecodable_records",
            "data_unknown_conn",
            "write_errors",
            "sampled_out",
            "excluded",
            "not_error",
        ]
        .iter()
        .filter_map(|k| snap.get(k).map(|v| format!("{k}={v}")))
        .collect();
        if !interesting.is_empty() {
            let _ = writeln!(
                err,
                "timetracer-agent: agent counters: {}",
                interesting.join(", ")
            );
        }
    }
}

fn writer_loop(
    rx: &mpsc::Receiver<(RecordedRequest, Option<mpsc::SyncSender<LiveUpdate>>)>,
    plan: &RecordPlan,
    counters: &Counters,
) {
    // The embedded index the `timetracer` tools search, kept up to date as cassettes land.
    let mut index = if plan.save {
        match crate::index::Index::open(&plan.out) {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(error = %e, "Cassette index unavailable; `timetracer index` rebuilds it");
                None
            }
        }
    } else {
        None
    };
    // Cassettes also go to a bucket when TIMETRACER_S3_BUCKET is set.
    let s3 = match crate::s3::Uploader::from_env() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("\ntimetracer-agent: S3 upload disabled: {e}");
            None
        }
    };
    // Written cassettes not indexed yet: indexed in one transaction whenever the queue is
    // empty (or 256 are waiting), so the index never lags more than one burst.
    let mut unindexed: Vec<(PathBuf, crate::index::Summary)> = Vec::new();
    loop {
        let (r, live) = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::TryRecvError::Empty) => {
                index_written(index.as_mut(), &mut unindexed, counters);
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        if unindexed.len() >= 256 {
            index_written(index.as_mut(), &mut unindexed, counters);
        }
        let path = request_path(&r);
        if excluded(&path, &plan.exclude) {
            counters.inc_named("excluded");
            continue;
        }
        let keep = if plan.sample_rate < 1.0 && rand_unit() >= plan.sample_rate {
            counters.inc_named("sampled_out");
            false
        } else if plan.errors_only && !is_error(&r) {
            counters.inc_named("not_error");
            false
        } else {
            true
        };
        if !keep && live.is_none() {
            continue;
        }
        let c = cassette::build(&r, &plan.build);
        let mut written = None;
        if keep && plan.save {
            match cassette::write(&plan.out, &c, plan.compression) {
                Ok(p) => {
                    counters.inc_cassettes();
                    if index.is_some() {
                        unindexed.push((p.clone(), crate::index::summarize(&c)));
                    }
                    if let Some(up) = &s3 {
                        upload(up, &plan.out, &p, counters);
                    }
                    written = Some(p);
                }
                Err(e) => {
                    counters.inc_named("write_errors");
                    if live.is_none() {
                        eprintln!("\ntimetracer-agent: cannot write a cassette: {e}");
                    } else {
                        tracing::warn!(error = %e, "Cannot write a cassette");
                    }
                }
            }
        }
        if let Some(tx) = live {
            // Never wait for the viewer: what does not fit is counted and shown.
            let update = LiveUpdate::Request {
                cassette: Box::new(c),
                path: written,
            };
            if tx.try_send(update).is_err() {
                counters.inc_named("live_skipped");
            }
        }
    }
    index_written(index.as_mut(), &mut unindexed, counters);
}

/// Adds the written cassettes in `pending` to the index, in one transaction.
fn index_written(
    index: Option<&mut crate::index::Index>,
    pending: &mut Vec<(PathBuf, crate::index::Summary)>,
    counters: &Counters,
) {
    if pending.is_empty() {
        return;
    }
    let items = std::mem::take(pending);
    let n = items.len() as u64;
    if let Some(idx) = index
        && let Err(e) = idx.add_all(items)
    {
        tracing::warn!(error = %e, "Cannot index cassettes; `timetracer index` rebuilds it");
        counters.add_named("index_errors", n);
    }
}

/// Uploads a written cassette under its path relative to the cassette directory.
fn upload(
    up: &crate::s3::Uploader,
    dir: &std::path::Path,
    path: &std::path::Path,
    counters: &Counters,
) {
    let key = path
        .strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| up.put(&key, b).map_err(|e| e.to_string()))
    {
        Ok(()) => counters.inc_named("s3_uploaded"),
        Err(e) => {
            counters.inc_named("s3_errors");
            tracing::warn!(key, error = %e, "S3 upload failed; the cassette stays on disk");
        }
    }
}

fn request_path(r: &RecordedRequest) -> String {
    match &r.inbound.request.start {
        crate::protocols::http::types::StartLine::Request { target, .. } => {
            target.split('?').next().unwrap_or("").to_owned()
        }
        crate::protocols::http::types::StartLine::Response { .. } => String::new(),
    }
}

fn is_error(r: &RecordedRequest) -> bool {
    let status = r.inbound.response.as_ref().and_then(|m| match m.start {
        crate::protocols::http::types::StartLine::Response { status, .. } => Some(status),
        crate::protocols::http::types::StartLine::Request { .. } => None,
    });
    r.traceback.is_some() || status.is_none_or(|s| s >= 400)
}

/// A uniform number in [0, 1) from the OS's randomness (sampling needs no crypto quality, but
/// getrandom is what is at hand without another dependency).
fn rand_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom_fill(&mut b);
    (u64::from_ne_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn getrandom_fill(b: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the buffer is valid for b.len() bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusion_rules() {
        let p = vec!["/health".to_owned(), "/admin/*".to_owned()];
        assert!(excluded("/health", &p));
        assert!(excluded("/health/live", &p));
        assert!(!excluded("/healthz", &p));
        assert!(excluded("/admin/users", &p));
        assert!(!excluded("/users", &p));
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool("YES"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "timetracer-agent",
            "record",
            "--out",
            "/tmp/x",
            "--",
            "uvicorn",
            "app:app",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Record { .. }));
        let c = Cli::try_parse_from(["timetracer-agent", "attach", "--pid", "12", "--errors-only"])
            .unwrap();
        assert!(matches!(c.command, Command::Attach { pid: 12, .. }));
        assert!(Cli::try_parse_from(["timetracer-agent", "record"]).is_err());
    }
}
