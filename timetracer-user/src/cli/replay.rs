//! `timetracer-agent replay` and `timetracer-agent replay-server`.
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::replay::junit;
use crate::replay::plan::Selection;
use crate::replay::run::{RecordedCommand, ReplayOptions, run};
use crate::replay::service;
use crate::replay::verdict::EXIT_ERROR;

/// Default socket of the replay service.
pub const DEFAULT_SOCKET: &str = "/run/timetracer/replay.sock";

/// `replay` options.
#[derive(Debug, Args, Clone)]
#[command(after_help = "\
Examples:
  sudo timetracer-agent replay cassettes/ -- uvicorn app:app --port 8000
  sudo timetracer-agent replay cassettes/2026-11-22/GET__users_42__e92ca5c8.json --run-recorded-command
  sudo timetracer-agent replay c.json --mock postgres,redis      # HTTP stays live
  sudo timetracer-agent replay c.json --live auth.internal:443 --keep-running
  sudo timetracer-agent replay cassettes/ --junit replay-junit.xml -- gunicorn app:app  # CI

Exit status: 0 same responses, 1 a response differs, 2 a dependency call did not match (or was
not made, or the app now fails), 3 the replay could not run.")]
pub struct ReplayArgs {
    /// Cassette files or directories (replayed in recorded order).
    #[arg(required = true, value_name = "CASSETTE|DIR")]
    pub cassettes: Vec<PathBuf>,
    /// Mock only these protocols (http, postgres, mysql, redis, mongodb) or destinations
    /// (HOST:PORT); the rest stays live. Comma-separated, repeatable. Default:
    /// TIMETRACER_MOCK_PLUGINS, else everything.
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
    /// Also write the verdict as a JUnit XML report to FILE (one test case per replayed
    /// request), for CI systems to show.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run the app as USER[:GROUP] (a name or numeric id). Default: the user who ran `sudo`
    /// (`SUDO_UID`/`SUDO_GID`). The app never runs as root unless told: `--user root`.
    #[arg(long, env = "TIMETRACER_USER", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Without `-- CMD`, run the command line recorded in the cassette (shown first). Without
    /// this flag it is shown and refused, or asked about when stdin is a terminal: a cassette
    /// is a file anyone may have written, not a command you gave.
    #[arg(long)]
    pub run_recorded_command: bool,
    /// The app's command, after `--` (default: the recorded command line, with
    /// --run-recorded-command).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

/// Shows the recorded command and asks whether to run it (stdin and stderr are a terminal).
fn confirm_on_terminal(rec: &RecordedCommand) -> bool {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return false;
    }
    eprint!(
        "timetracer-agent: the cassette recorded this command:\n  {}\n  in {}\nRun it? [y/N] ",
        crate::replay::run::shell_line(&rec.argv),
        rec.cwd.as_deref().map_or_else(
            || "the current directory".to_owned(),
            |d| d.display().to_string()
        )
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
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
            run_as: crate::privilege::resolve(self.user.as_deref(), |k| std::env::var(k).ok())?,
            run_recorded_command: self.run_recorded_command,
            confirm_recorded: Some(confirm_on_terminal),
        })
    }
}

/// Runs `replay`: prints the verdict and returns its exit code (3 when it could not run).
pub fn replay(args: &ReplayArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("timetracer-agent replay: error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match run(&opts) {
        Ok(v) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if !args.keep_running {
                print!("{}", v.report);
            }
            if let Some(p) = &args.json_out
                && let Err(e) = {
                    // The invoking user's file, written with their access rights.
                    let json = serde_json::to_vec_pretty(&v).unwrap_or_default();
                    let write = || crate::atomic_file::write(p, &json);
                    match &opts.run_as {
                        Some(user) => user.with_fs(write),
                        None => write(),
                    }
                }
            {
                eprintln!("timetracer-agent: {:#}", anyhow::Error::from(e));
            }
            if let Some(p) = &args.junit
                && let Err(e) = {
                    // Likewise the invoking user's file.
                    let write = || junit::write(&v, p);
                    match &opts.run_as {
                        Some(user) => user.with_fs(write),
                        None => write(),
                    }
                }
            {
                eprintln!("timetracer-agent: --junit: {e:#}");
                return ExitCode::from(EXIT_ERROR);
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
\"summary\" when the replay could not run).

Trust: each client is identified by the kernel (SO_PEERCRED); its replay runs as its uid, reads
only cassettes that uid can read, and runs only a command allowed here (docs/replay.md).

Example:
  sudo timetracer-agent replay-server --group developers \\
      --allow-cmd 'uvicorn app:app --port 8000'")]
pub struct ReplayServerArgs {
    /// Unix socket to listen on.
    #[arg(long, env = "TIMETRACER_REPLAY_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Let members of this group use the socket (mode 0660); default: root only (0600).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// A command line replays may run (POSIX shell words, matched word for word against the
    /// request's command or the one recorded in the cassette). Repeatable. Without it no
    /// replay runs.
    #[arg(long = "allow-cmd", value_name = "CMD")]
    pub allow_cmd: Vec<String>,
    /// Replays running at once, all clients together.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_clients: u16,
    /// Replays running at once per client user.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub per_user: u16,
    /// Seconds a client may take to send its request.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub read_timeout: u64,
}

/// Runs the replay service until killed; clients are served concurrently
/// ([`crate::replay::service`]).
///
/// # Errors
/// The socket cannot be created, or an `--allow-cmd` cannot be parsed.
pub fn server(args: &ReplayServerArgs) -> anyhow::Result<ExitCode> {
    let allow_cmds = service::parse_allowed(&args.allow_cmd)?;
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
    if allow_cmds.is_empty() {
        eprintln!(
            "timetracer-agent: no --allow-cmd: every replay will be refused until a command is allowed"
        );
    }
    eprintln!(
        "timetracer-agent: replay service on {} (mode {mode:o}); Ctrl-C to stop",
        args.socket.display()
    );
    let opts = service::ServiceOptions {
        allow_cmds,
        max_clients: usize::from(args.max_clients),
        per_uid: usize::from(args.per_user),
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        ..service::ServiceOptions::default()
    };
    service::serve(&listener, &opts);
    Ok(ExitCode::SUCCESS)
}
