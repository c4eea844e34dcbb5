//! `timetracer-agent replay` and `timetracer-agent replay-server`.
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

use crate::replay::plan::Selection;
use crate::replay::run::{ReplayOptions, run};
use crate::replay::verdict::{EXIT_ERROR, Verdict};

/// Default socket of the replay service.
pub const DEFAULT_SOCKET: &str = "/run/timetracer/replay.sock";

/// `replay` options.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  sudo timetracer-agent replay cassettes/2026-11-22/GET__users_42__e92ca5c8.json
  sudo timetracer-agent replay cassettes/ -- uvicorn app:app --port 8000
  sudo timetracer-agent replay c.json --mock postgres,redis      # HTTP stays live
  sudo timetracer-agent replay c.json --live auth.internal:443 --keep-running

Exit status: 0 same responses, 1 a response differs, 2 a dependency call did not match (or was
not made, or the app now fails), 3 the replay could not run.")]
pub struct ReplayArgs {
    /// Cassette files or directories (replayed in recorded order).
    #[arg(required = true, value_name = "CASSETTE|DIR")]
    pub cassettes: Vec<PathBuf>,
    /// Mock only these protocols (http, postgres, mysql, redis) or destinations (HOST:PORT);
    /// the rest stays live. Comma-separated, repeatable. Default: TIMETRACER_MOCK_PLUGINS,
    /// else everything.
    #[arg(long, value_name = "LIST")]
    pub mock: Vec<String>,
    /// Keep these protocols or destinations live (not mocked). Comma-separated, repeatable.
    /// Default: TIMETRACER_LIVE_PLUGINS.
    #[arg(long, value_name = "LIST")]
    pub live: Vec<String>,
    /// After the verdict, leave the app running with its dependencies mocked until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Start the app's clock (time.time, datetime.now ...) at the recording's.
    #[arg(long)]
    pub freeze_time: bool,
    /// Port the app listens on (default: the recorded one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Working directory of the app (default: the recorded one).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Response header not to compare (repeatable; date, server and framing headers never are).
    #[arg(long, value_name = "NAME")]
    pub ignore_header: Vec<String>,
    /// Seconds the app may take to start listening.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub startup_timeout: u64,
    /// Seconds one request may take.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub request_timeout: u64,
    /// Show the app's output (by default it is kept and shown only when the app fails to start).
    #[arg(long)]
    pub show_app_output: bool,
    /// Print the verdict as JSON (to stdout, or to FILE with --json-out).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON verdict to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// The app's command, after `--` (default: the recorded command line).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| vec![v])
        .unwrap_or_default()
}

impl ReplayArgs {
    fn options(&self) -> anyhow::Result<ReplayOptions> {
        let mock = if self.mock.is_empty() {
            env_list("TIMETRACER_MOCK_PLUGINS")
        } else {
            self.mock.clone()
        };
        let live = if self.live.is_empty() {
            env_list("TIMETRACER_LIVE_PLUGINS")
        } else {
            self.live.clone()
        };
        Ok(ReplayOptions {
            inputs: self.cassettes.clone(),
            selection: Selection::parse(&mock, &live)?,
            keep_running: self.keep_running,
            freeze_time: self.freeze_time,
            port: self.port,
            cmd: self.cmd.clone(),
            cwd: self.cwd.clone(),
            ignore_headers: self.ignore_header.clone(),
            startup_timeout: Duration::from_secs(self.startup_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            show_app_output: self.show_app_output,
        })
    }
}

/// Runs `replay`: prints the verdict and returns its exit code (3 when it could not run).
pub fn replay(args: &ReplayArgs) -> ExitCode {
    let res = args.options().and_then(|o| run(&o));
    match res {
        Ok(v) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if !args.keep_running {
                print!("{}", v.report);
            }
            if let Some(p) = &args.json_out
                && let Err(e) = std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap_or_default())
            {
                eprintln!("timetracer-agent: cannot write {}: {e}", p.display());
            }
            ExitCode::from(v.exit_code)
        }
        Err(e) => {
            eprintln!("timetracer-agent replay: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `replay-server` options.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Protocol: a client writes one JSON line {\"cassettes\": [\"/abs/c.json\"], \"cmd\": null}
(`cmd` null = the recorded command; optional \"mock\", \"live\": [..], \"port\": N) and reads one
JSON line back: the verdict, as `replay --json` prints it (\"verdict\": \"error\" with
\"summary\" when the replay could not run).")]
pub struct ReplayServerArgs {
    /// Unix socket to listen on.
    #[arg(long, env = "TIMETRACER_REPLAY_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Let members of this group use the socket (mode 0660); default: root only (0600).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

/// One replay asked of the service.
#[derive(Debug, Deserialize)]
struct Job {
    cassettes: Vec<PathBuf>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    mock: Vec<String>,
    #[serde(default)]
    live: Vec<String>,
    #[serde(default)]
    port: Option<u16>,
}

fn error_verdict(msg: &str) -> serde_json::Value {
    serde_json::json!({
        "verdict": "error", "exit_code": EXIT_ERROR, "summary": msg, "requests": [],
        "startup_misses": [], "blocked": [], "notes": [], "report": format!("timetracer replay — error: {msg}\n"),
    })
}

fn run_job(line: &str) -> serde_json::Value {
    let job: Job = match serde_json::from_str(line) {
        Ok(j) => j,
        Err(e) => return error_verdict(&format!("bad request line: {e}")),
    };
    let opts = (|| -> anyhow::Result<Verdict> {
        let selection = Selection::parse(&job.mock, &job.live)?;
        let opts = ReplayOptions {
            inputs: job.cassettes.clone(),
            selection,
            port: job.port,
            cmd: job
                .cmd
                .unwrap_or_default()
                .into_iter()
                .map(OsString::from)
                .collect(),
            startup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..ReplayOptions::default()
        };
        run(&opts)
    })();
    match opts {
        Ok(v) => serde_json::to_value(&v).unwrap_or_else(|e| error_verdict(&e.to_string())),
        Err(e) => error_verdict(&format!("{e:#}")),
    }
}

/// Runs the replay service until killed. Replays run one at a time.
///
/// # Errors
/// The socket cannot be created.
pub fn server(args: &ReplayServerArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if args.socket.exists() {
        // A stale socket of a previous run: refuse if something still answers on it.
        if std::os::unix::net::UnixStream::connect(&args.socket).is_ok() {
            anyhow::bail!(
                "a replay service already listens on {}",
                args.socket.display()
            );
        }
        std::fs::remove_file(&args.socket)?;
    }
    let listener = UnixListener::bind(&args.socket)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    let mode = if let Some(g) = &args.group {
        let group =
            nix::unistd::Group::from_name(g)?.with_context(|| format!("no group named {g:?}"))?;
        nix::unistd::chown(&args.socket, None, Some(group.gid))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(mode))?;
    eprintln!(
        "timetracer-agent: replay service on {} (mode {mode:o}); Ctrl-C to stop",
        args.socket.display()
    );
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        let mut reader = BufReader::new(match conn.try_clone() {
            Ok(c) => c,
            Err(_) => continue,
        });
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let verdict = run_job(line.trim());
        eprintln!(
            "timetracer-agent: replayed {}: {}",
            line.trim(),
            verdict["summary"].as_str().unwrap_or("")
        );
        let _ = writeln!(conn, "{verdict}");
    }
    Ok(ExitCode::SUCCESS)
}
