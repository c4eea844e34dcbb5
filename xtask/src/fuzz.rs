//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/` with coverage instrumentation on
//! the pinned nightly, seeds their corpora from the recorded fixtures, runs each for a time and
//! prints executions and coverage per target; a crash fails the command and names its input.
//!
//! The build is cargo-fuzz's (`cargo fuzz build`), done here directly: the same SanitizerCoverage
//! flags (`-Cpasses=sancov-module`, inline 8-bit counters, PC table, comparison tracing,
//! `--cfg fuzzing`), plus debug assertions and overflow checks, with `--target` so that build
//! scripts and proc macros stay uninstrumented. Doing it here needs no extra tool (cargo-fuzz
//! would be one more crate to compile in every CI run) and no `-Zsanitizer=address`: the code
//! under test is safe Rust, where AddressSanitizer finds nothing the bounds checks do not, at
//! about twice the cost per execution. The layout stays cargo-fuzz's, so `cargo fuzz run
//! TARGET` works for those who have it.
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{root, run, toolchain};

/// Instrumentation flags (cargo-fuzz 0.12 `project.rs`, without ASan; see the module doc).
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// Seconds per target of the smoke run in `cargo xtask test` (and the default of `fuzz`)
/// (docs/reliability.md has the smoke's measured times).
pub(crate) const SMOKE_SECS: u64 = 20;

/// `--long`: at least ten minutes per target (issue #24).
pub(crate) const LONG_SECS: u64 = 600;

/// What one target's run did.
struct Outcome {
    target: String,
    execs: u64,
    secs: f64,
    cov: u64,
    features: u64,
    corpus: u64,
    crash: Option<String>,
}

fn host_triple(channel: &str) -> Result<String> {
    let out = Command::new("rustup")
        .args(["run", channel, "rustc", "-vV"])
        .output()
        .context("cannot run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host")
}

/// The fuzz targets (the `[[bin]]`s of `fuzz/` but the seed writer), from the harness's list.
fn all_targets() -> Result<Vec<String>> {
    let manifest = fs::read_to_string(root().join("fuzz/Cargo.toml"))?;
    let v: toml::Table = toml::from_str(&manifest).context("fuzz/Cargo.toml")?;
    Ok(v.get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name")?.as_str())
        .filter(|n| *n != "fuzz-seeds")
        .map(str::to_owned)
        .collect())
}

/// `cargo xtask fuzz --time SECS [--smoke] [TARGET...]`: with `smoke`, built with the
/// `fuzz-smoke` profile (unoptimised dependencies: a cold build a fraction of `release`'s, see
/// the workspace `Cargo.toml`), else with `release`.
pub(crate) fn fuzz(secs: u64, smoke: bool, only: &[String]) -> Result<()> {
    let profile = if smoke { "fuzz-smoke" } else { "release" };
    let started = Instant::now();
    let pin = toolchain::load()?;
    toolchain::install_rust(&pin)?;
    let triple = host_triple(&pin.channel)?;
    let all = all_targets()?;
    for t in only {
        if !all.contains(t) {
            bail!("no fuzz target {t:?}: the targets are {}", all.join(", "));
        }
    }
    let targets: Vec<String> = if only.is_empty() { all } else { only.to_vec() };
    let dir = root().join("target/fuzz");
    run(Command::new("rustup")
        .current_dir(root())
        .args(["run", &pin.channel, "cargo", "build", "--profile", profile])
        .args(["-p", "timetracer-fuzz", "--bins", "--target", &triple])
        .arg("--target-dir")
        .arg(&dir)
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        // Parsers need no eBPF object.
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    let built = started.elapsed().as_secs_f64();
    let bin = dir.join(&triple).join(profile);
    let corpus = dir.join("corpus");
    run(Command::new(bin.join("fuzz-seeds"))
        .arg(&corpus)
        .args(&targets))?;
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_one(&bin, &dir, t, secs)?);
    }
    let total = started.elapsed().as_secs_f64();
    print!("{}", table(&outcomes, built, total));
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if !crashed.is_empty() {
        let mut msg = String::new();
        for o in crashed {
            let _ = write!(
                msg,
                "\n  {}: {} (reproduce: {} {})",
                o.target,
                o.crash.as_deref().unwrap_or(""),
                bin.join(&o.target).display(),
                o.crash.as_deref().unwrap_or("")
            );
        }
        bail!(
            "fuzzing crashed:{msg}\nmake each input a regression test in its crate (docs/reliability.md)"
        );
    }
    Ok(())
}

fn run_one(bin: &Path, dir: &Path, target: &str, secs: u64) -> Result<Outcome> {
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let logs = dir.join("logs");
    fs::create_dir_all(&artifacts)?;
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    eprintln!(
        "xtask: fuzzing {target} for {secs} s (log: {})",
        log_path.display()
    );
    let st = Command::new(bin.join(target))
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        // A hang of 10 s on one input is a bug; 2 GiB is libFuzzer's default RSS limit, said
        // aloud: every reader here caps what it allocates far below it.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("cannot run {}", bin.join(target).display()))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let mut o = parse_log(target, &text);
    if !st.success() {
        let input = text
            .lines()
            .rev()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map_or_else(
                || format!("exit {st}, see {}", log_path.display()),
                str::to_owned,
            );
        o.crash = Some(input);
    }
    Ok(o)
}

/// Executions and coverage from libFuzzer's log: the last status line (`#N ... cov: C ft: F
/// corp: K/..`) and the final stats (`stat::number_of_executed_units`,
/// `stat::average_exec_per_sec`).
fn parse_log(target: &str, text: &str) -> Outcome {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        let n: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        n.parse().ok()
    };
    let mut o = Outcome {
        target: target.to_owned(),
        execs: 0,
        secs: 0.0,
        cov: 0,
        features: 0,
        corpus: 0,
        crash: None,
    };
    let mut rate = 0;
    for line in text.lines() {
        if line.starts_with('#') && line.contains("cov: ") {
            o.cov = field(line, "cov:").unwrap_or(o.cov);
            o.features = field(line, "ft:").unwrap_or(o.features);
            o.corpus = field(line, "corp:").unwrap_or(o.corpus);
            o.execs = field(line, "#").unwrap_or(o.execs);
        }
        if let Some(n) = field(line, "stat::number_of_executed_units:") {
            o.execs = n;
        }
        if let Some(n) = field(line, "stat::average_exec_per_sec:") {
            rate = n;
        }
    }
    if rate > 0 {
        o.secs = o.execs as f64 / rate as f64;
    }
    o
}

fn table(outcomes: &[Outcome], built: f64, total: f64) -> String {
    let mut s = format!(
        "\n{:<16} {:>12} {:>9} {:>7} {:>8} {:>7}  result\n",
        "target", "executions", "exec/s", "cov", "features", "corpus"
    );
    for o in outcomes {
        let rate = if o.secs > 0.0 {
            (o.execs as f64 / o.secs).round()
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "{:<16} {:>12} {:>9} {:>7} {:>8} {:>7}  {}",
            o.target,
            o.execs,
            rate,
            o.cov,
            o.features,
            o.corpus,
            o.crash.as_deref().map_or("ok", |_| "CRASH")
        );
    }
    let _ = writeln!(
        s,
        "build {built:.0} s, total {total:.0} s (cov = instrumented edges reached, features = libFuzzer's coverage features)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_stats() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 120 ft: 130 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #52311\tDONE   cov: 812 ft: 2201 corp: 95/3120b lim: 4096 exec/s: 5231 rss: 61Mb\n\
                   Done 52311 runs in 11 second(s)\n\
                   stat::number_of_executed_units: 52311\nstat::average_exec_per_sec:     4755\n";
        let o = parse_log("t", log);
        assert_eq!(
            (o.execs, o.cov, o.features, o.corpus),
            (52311, 812, 2201, 95)
        );
        assert!((o.secs - 11.0).abs() < 0.1, "{}", o.secs);
    }

    /// Every protocol of the registry (`protocols::REGISTRY`) has its parser target, and every
    /// target is in the harness's list (`seeds::TARGETS`, which the seed writer walks).
    #[test]
    fn every_registered_protocol_has_a_target() {
        let t = all_targets().expect("fuzz/Cargo.toml");
        let src = fs::read_to_string(root().join("timetracer-user/src/protocols/mod.rs")).unwrap();
        let registry = src.split("pub static REGISTRY").nth(1).unwrap();
        let registry = &registry[registry.find("= [").unwrap()..registry.find("];").unwrap()];
        let protocols: Vec<&str> = registry
            .split('&')
            .skip(1)
            .filter_map(|s| s.split("::SPEC").next())
            .collect();
        assert!(protocols.len() >= 5, "{protocols:?}");
        for p in protocols {
            assert!(
                t.contains(&format!("proto_{p}")),
                "no fuzz target proto_{p}: {t:?}"
            );
        }
        let seeds = fs::read_to_string(root().join("fuzz/src/seeds.rs")).unwrap();
        for name in &t {
            assert!(
                seeds.contains(&format!("\"{name}\",")),
                "{name} is not in seeds::TARGETS"
            );
        }
    }
}
