//! The benchmark's harness (issue #11), shared by the runner (`src/main.rs`, `timetracer-bench`)
//! and the synthetic server it traces (`src/bin/bench-server.rs`, `bench-server`): the groups,
//! the rig that starts and pins the processes, the load generators, the statistics and the
//! report. [`run`] is the runner; [`load::serve`] is the server.
//!
//! Results: `bench-results/<timestamp>.json` and `.md`; the Markdown is printed too. The method
//! is described in docs/performance.md.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

mod agent_cost;
mod kernel;
pub mod load;
mod overhead;
mod replay;
mod report;
mod rig;
mod stats;
mod sys;
mod tools;
mod wrk;

use rig::{Cpus, Env, Rig};

/// Arguments of the runner (`timetracer-bench`, also `cargo xtask bench`).
#[derive(Debug, Parser)]
#[command(
    name = "timetracer-bench",
    about = "Benchmarks timetracer (issue #11): overhead vs untraced and vs the Python tool, agent \
             and kernel cost, tools. Needs root; results go to bench-results/. Run it with \
             `sudo cargo xtask bench`, which installs and builds what it needs first. See \
             docs/performance.md."
)]
pub struct BenchArgs {
    /// Short validation run (1 round × 2 s windows, shorter sweeps, 20,000 cassettes for the
    /// search): checks the harness, its numbers are indicative only.
    #[arg(long)]
    quick: bool,
    /// Run only these groups (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,
    /// Rounds of the overhead group [default: 5; quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per measured window, whole seconds [default: 5; quick: 2].
    #[arg(long)]
    secs: Option<f64>,
    /// Cassettes generated for the search benchmark [default: 100000; quick: 20000].
    #[arg(long)]
    cassettes: Option<usize>,
    /// A window is noisy when processes outside the benchmark use more than this share of one
    /// CPU, in percent.
    #[arg(long, default_value_t = 10.0)]
    noise_threshold: f64,
    /// Use timetracer-agent and timetracer in target/release as they are: `cargo xtask bench`
    /// does not build them (the runner itself never builds anything).
    #[arg(long)]
    no_build: bool,
    /// Keep the scratch directory (logs, cassettes) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Print the Markdown report of an existing results file (bench-results/*.json) and exit.
    #[arg(long, value_name = "JSON")]
    report_from: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Group {
    Overhead,
    Agent,
    Kernel,
    Tools,
    Replay,
}

impl Group {
    /// In run order: `tools` last, its corpus (100,000 files) is deleted in the background.
    const ALL: [Self; 5] = [
        Self::Overhead,
        Self::Agent,
        Self::Kernel,
        Self::Replay,
        Self::Tools,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::Overhead => "overhead",
            Self::Agent => "agent",
            Self::Kernel => "kernel",
            Self::Tools => "tools",
            Self::Replay => "replay",
        }
    }
}

/// Durations and sizes of a run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    /// Measured window of a closed-loop run.
    pub(crate) secs: f64,
    pub(crate) warmup: f64,
    /// Fixed-rate windows of the agent-cost group.
    pub(crate) agent_secs: f64,
    pub(crate) sweep_secs: f64,
    /// Message rates of the drop-onset sweep.
    pub(crate) sweep_msgs: Vec<f64>,
    pub(crate) cassettes: usize,
}

impl Plan {
    fn new(a: &BenchArgs) -> Self {
        let q = a.quick;
        Self {
            quick: q,
            rounds: a.rounds.unwrap_or(if q { 1 } else { 5 }).max(1),
            secs: a.secs.unwrap_or(if q { 2.0 } else { 5.0 }),
            warmup: 1.0,
            agent_secs: if q { 3.0 } else { 6.0 },
            sweep_secs: if q { 2.0 } else { 3.0 },
            sweep_msgs: if q {
                vec![10_000.0, 25_000.0, 50_000.0, 100_000.0]
            } else {
                vec![10_000.0, 20_000.0, 35_000.0, 50_000.0, 70_000.0, 100_000.0]
            },
            cassettes: a.cassettes.unwrap_or(if q { 20_000 } else { 100_000 }),
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once Ctrl-C was pressed, so guards run (apps stopped, `bpf_stats` restored).
pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

fn meta(env: &Env, plan: &Plan, ts: &str) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    json!({
        "timestamp": ts,
        "quick": plan.quick,
        "rounds": plan.rounds,
        "secs": plan.secs,
        "warmup_secs": plan.warmup,
        "agent_fixed_secs": plan.agent_secs,
        "sweep_secs": plan.sweep_secs,
        "sweep_msgs_per_s": plan.sweep_msgs,
        "cassettes": plan.cassettes,
        "noise_threshold_pct": env.noise_threshold,
        "pinning": env.cpus.to_json(),
        "cpu_model": model,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "python": first_line(Command::new(env.venv.join("bin/python")).arg("--version")),
        "wrk": first_line(Command::new("wrk").arg("-v")),
        "agent_version": first_line(Command::new(&env.agent).arg("--version")),
        "commit": first_line(Command::new("git").current_dir(&env.root).args(["rev-parse", "--short", "HEAD"])),
        "dirty": !first_line(Command::new("git").current_dir(&env.root).args(["status", "--porcelain", "--untracked-files=no"])).is_empty(),
    })
}

/// The workspace root: the benchmark runs the workspace's apps (tests/apps), agent and CLI
/// (target/release) and writes bench-results/ there.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The synthetic server's binary: `bench-server`, built beside the runner (target/release).
fn bench_server() -> Result<PathBuf> {
    let me = env::current_exe().context("locating the timetracer-bench binary")?;
    let path = me
        .parent()
        .context("the timetracer-bench binary has no directory")?
        .join("bench-server");
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p timetracer-bench` \
             (`cargo xtask bench` does)",
            path.display()
        );
    }
    Ok(path)
}

/// Whether `prog` is an executable file in a directory of PATH.
fn on_path(prog: &str) -> bool {
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Runs the benchmark (or, with `--report-from`, only prints a report). What it runs must be
/// there already: `cargo xtask bench` installs the tools and the venv and builds the agent and
/// this crate, then calls this.
pub fn run(a: &BenchArgs) -> Result<()> {
    if let Some(p) = &a.report_from {
        let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let mut results: Value = serde_json::from_str(&text).context("results JSON")?;
        results["targets"] = report::targets_json(&results);
        println!("{}", report::markdown(&results));
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark loads eBPF programs and pins processes: run it as root");
    }
    let root = root();
    let plan = Plan::new(a);
    let now = time::OffsetDateTime::now_utc();
    let ts = now
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]-[minute]-[second]Z"
        ))
        .context("timestamp")?;
    let results_dir = root.join("bench-results");
    let (json_path, md_path) = (
        results_dir.join(format!("{ts}.json")),
        results_dir.join(format!("{ts}.md")),
    );
    eprintln!(
        "bench: {} run; results will be written to {} and {}",
        if plan.quick { "quick" } else { "full" },
        json_path.display(),
        md_path.display()
    );
    // Prerequisites, installed and built by `cargo xtask bench`: load generator, bpftool,
    // openssl, taskset, the agent and the CLI, the synthetic server, the bench venv.
    let missing: Vec<&str> = ["wrk", "bpftool", "openssl", "taskset"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if !missing.is_empty() {
        bail!("{missing:?} not found on PATH: `sudo cargo xtask bench` installs them");
    }
    let server = bench_server()?;
    let venv = root.join("target/bench-venv");
    if !venv.join("bin/python").is_file() {
        bail!(
            "no bench venv at {}: `sudo cargo xtask bench` creates it",
            venv.display()
        );
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::Handler(on_sigint),
        )
    }
    .context("installing the SIGINT handler")?;
    let work = env::temp_dir().join(format!("timetracer-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    let env = Env {
        agent: root.join("target/release/timetracer-agent"),
        cli: root.join("target/release/timetracer"),
        server,
        root: root.clone(),
        venv,
        work: work.clone(),
        cpus: Cpus::for_machine(n),
        noise_threshold: a.noise_threshold,
    };
    for b in [&env.agent, &env.cli] {
        if !b.is_file() {
            bail!(
                "{} is missing: build it with `cargo xtask build` (`cargo xtask bench` does, \
                 unless --no-build)",
                b.display()
            );
        }
    }
    let mut results = json!({"meta": meta(&env, &plan, &ts)});
    let mut rig = Rig::new(env);
    let groups: Vec<Group> = if a.only.is_empty() {
        Group::ALL.to_vec()
    } else {
        a.only.clone()
    };
    let started = Instant::now();
    for g in Group::ALL.into_iter().filter(|g| groups.contains(g)) {
        if check_interrupted().is_err() {
            break;
        }
        eprintln!("bench: --- {} ---", g.key());
        let t = Instant::now();
        let r = match g {
            Group::Overhead => overhead::run(&mut rig, &plan),
            Group::Agent => agent_cost::run(&mut rig, &plan),
            Group::Kernel => kernel::run(&mut rig, &plan),
            Group::Tools => tools::run(&mut rig, &plan),
            Group::Replay => replay::run(&mut rig),
        };
        results[g.key()] = match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("bench: {} failed: {e:#}", g.key());
                json!({"error": format!("{e:#}")})
            }
        };
        results["meta"]["group_secs"][g.key()] = json!(sys::round(t.elapsed().as_secs_f64(), 1));
    }
    results["meta"]["total_secs"] = json!(sys::round(started.elapsed().as_secs_f64(), 1));
    drop(rig);
    results["targets"] = report::targets_json(&results);
    let md = report::markdown(&results);
    fs::create_dir_all(&results_dir)?;
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    fs::write(&md_path, &md)?;
    if a.keep {
        eprintln!("bench: scratch directory kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    println!("{md}");
    eprintln!(
        "bench: done in {:.0}s; results: {} and {}",
        started.elapsed().as_secs_f64(),
        json_path.display(),
        md_path.display()
    );
    check_interrupted()?;
    Ok(())
}
