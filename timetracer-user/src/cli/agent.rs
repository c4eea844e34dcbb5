//! `timetracer-agent`: the command line. `attach`, `top` and `record` are [`super::record`]
//! (the recording itself is [`crate::record`]); `replay` and `replay-server` are
//! [`super::replay`].
use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

use super::record::{RecordArgs, Selection, attach, launch, top};
use crate::{config::Config, record::target::HELD_EXEC};

/// Record every inbound HTTP request of an unmodified Python process, with each dependency
/// call it made, into one cassette per request — from the kernel, with eBPF. Needs root.
#[derive(Debug, Parser)]
#[command(name = "timetracer-agent", version, about, long_about = None)]
pub struct Cli {
    /// Identity file (age) that opens encrypted cassettes (`replay`); also
    /// TIMETRACER_IDENTITY.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a running process and its descendants, or every process of some cgroups (a
    /// container), until Ctrl-C / SIGTERM.
    ///
    /// Example: sudo timetracer-agent attach --pid $(pgrep -f 'uvicorn app:app') --out ./cassettes
    Attach {
        #[command(flatten)]
        sel: Selection,
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
        #[command(flatten)]
        sel: Selection,
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
    /// Kubernetes node mode (a DaemonSet): record the selected pods of this node, including
    /// pods started later, until SIGTERM. Cassettes go to `OUT/NAMESPACE/POD/YYYY-MM-DD/`
    /// and carry the pod's facts (`session.k8s`).
    ///
    /// Example: timetracer-agent node -n shop -l 'app=api,tier in (web,edge),!canary' --out /var/lib/timetracer
    Node {
        #[command(flatten)]
        node: super::node::NodeArgs,
        #[command(flatten)]
        opts: RecordArgs,
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

/// Entry point of the `timetracer-agent` binary.
pub fn main() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == HELD_EXEC) {
        return crate::record::target::exec_held(&raw[2..]);
    }
    let cli = Cli::parse();
    if let Some(id) = &cli.identity {
        crate::cassette::crypt::set_identity_file(id);
    }
    // The same configuration as `timetracer` (and `timetracer config` shows it); an invalid
    // file or variable stops the agent with a message naming it and the key.
    let cfg = match Config::load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("timetracer-agent: error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(crate::capture::ebpf_log::log_filter(cfg.str("log")))
        .with_writer(crate::stderr::Writer)
        // Colours only on a terminal: logs redirected to a file or a pod's log stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let res = match cli.command {
        Command::Attach { sel, tui, opts } => opts.plan(cfg.clone()).and_then(|p| {
            if tui {
                top(&sel, p, true)
            } else {
                attach(&sel, &p)
            }
        }),
        Command::Top { sel, no_save, opts } => {
            opts.plan(cfg.clone()).and_then(|p| top(&sel, p, !no_save))
        }
        Command::Record { opts, cmd } => opts.plan(cfg.clone()).and_then(|p| launch(&cmd, &p)),
        Command::Node { node, opts } => super::node::run(&node, &opts, cfg),
        Command::Replay(args) => Ok(super::replay::replay(&args)),
        Command::ReplayServer(args) => super::replay::server(&args),
    };
    let code = match res {
        Ok(code) => code,
        Err(e) => {
            crate::say!("timetracer-agent: error: {e:#}");
            ExitCode::from(2)
        }
    };
    // What is still queued for stderr (the exit summary), for a moment at most: a stderr
    // nobody reads must not keep the agent alive (crate::stderr).
    let _ = crate::stderr::flush(std::time::Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(
            c.command,
            Command::Attach {
                sel: Selection { pid: Some(12), .. },
                ..
            }
        ));
        let c = Cli::try_parse_from([
            "timetracer-agent",
            "attach",
            "--cgroup",
            "/sys/fs/cgroup/a",
            "--cgroup",
            "/sys/fs/cgroup/b",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::Attach { sel: Selection { pid: None, ref cgroup }, .. } if cgroup.len() == 2)
        );
        // One of --pid / --cgroup, not both, not neither.
        assert!(Cli::try_parse_from(["timetracer-agent", "attach"]).is_err());
        assert!(
            Cli::try_parse_from([
                "timetracer-agent",
                "attach",
                "--pid",
                "1",
                "--cgroup",
                "/sys/fs/cgroup/a"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["timetracer-agent", "record"]).is_err());
        let c = Cli::try_parse_from([
            "timetracer-agent",
            "node",
            "-n",
            "shop,pay",
            "-n",
            "ops",
            "-l",
            "app=api,tier in (web,edge),!canary",
            "--node-name",
            "n1",
            "--out",
            "/tmp/x",
            "--sample-rate",
            "0.5",
        ])
        .unwrap();
        let Command::Node { node, opts } = c.command else {
            panic!("node");
        };
        let o = node.options().unwrap();
        assert_eq!(o.selection.namespaces, ["ops", "pay", "shop"]);
        assert_eq!(o.node, "n1");
        assert_eq!(
            o.metrics_addr.to_string(),
            super::super::node::DEFAULT_METRICS_ADDR
        );
        assert_eq!(opts.sample_rate, Some(0.5));
        let bad = Cli::try_parse_from(["timetracer-agent", "node", "-l", "tier in web"]).unwrap();
        let Command::Node { node, .. } = bad.command else {
            panic!("node");
        };
        let e = node.options().unwrap_err().to_string();
        assert!(
            e.contains("character 9") && e.contains("expected `(`"),
            "{e}"
        );
        assert!(
            Cli::try_parse_from([
                "timetracer-agent",
                "top",
                "--pid",
                "1",
                "--errors-only=maybe"
            ])
            .is_err()
        );
    }
}
