//! Replay latency per mocked dependency call, when this build has `timetracer-agent replay`.
//!
//! The check is made at run time: if `timetracer-agent replay --help` fails, the row says "not
//! measured" with the reason. Otherwise `N` sequential `/dep` requests are timed against the
//! live app with a fast real upstream (the synthetic Rust server, so the upstream's own service
//! time does not hide the mock's), the same requests are recorded with `attach`, and
//! `timetracer-agent replay DIR --json-out F -- uvicorn ...` replays them with the upstream
//! mocked; the verdict gives each replayed request's duration. The difference of the medians
//! is the latency replay adds per mocked call (one call per request).
use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    check_interrupted,
    load::Client,
    rig::{Agent, AppKind, Rig, Scheme},
    stats::Spread,
    sys::{Proc, free_port, pinned, round},
};

/// Rounds of `/plain` + `/dep` recorded and then replayed.
const N: usize = 150;
/// Replayed requests left out as warm-up (the app has just started under replay).
const WARMUP: usize = 20;

fn not_measured(reason: &str) -> Value {
    json!({"measured": false, "reason": reason})
}

/// `n` rounds of sequential GET `/plain` then GET `/dep` on one connection; latencies (ms) of
/// each.
fn timed(port: u16, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let (plain, dep) = (req("/plain"), req("/dep"));
    let mut c = Client::connect(port)?;
    let (mut lp, mut ld) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (r, lat) in [(&plain, &mut lp), (&dep, &mut ld)] {
            let t = Instant::now();
            c.get(r.as_bytes())?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((lp, ld))
}

pub(crate) fn run(rig: &mut Rig) -> Result<Value> {
    let help = Command::new(&rig.env.agent)
        .args(["replay", "--help"])
        .output()
        .context("running timetracer-agent")?;
    if !help.status.success() {
        let why = String::from_utf8_lossy(&help.stderr);
        let first = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Ok(not_measured(&format!(
            "replay not available in this build (`timetracer-agent replay --help`: {})",
            first.trim()
        )));
    }
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for flag in ["--json-out", "--port", "--cwd"] {
        if !help.contains(flag) {
            return Ok(not_measured(&format!(
                "`timetracer-agent replay` has no {flag} in this build"
            )));
        }
    }
    // 1. Live baseline (warm app, fast real upstream), then the same requests recorded.
    let app = rig.app(Scheme::Http, AppKind::FastUpstream)?;
    let up = rig.fast_upstream_port()?;
    timed(app.port, 50)?;
    let (live_plain, live_dep) = timed(app.port, N)?;
    let out = rig.env.work.join("replay-cassettes");
    let agent = Agent::attach(&rig.env, "agent-replay-record", app.pid, &out, &[])?;
    timed(app.port, N)?;
    std::thread::sleep(Duration::from_millis(500));
    let rec = agent.stop()?;
    check_interrupted()?;
    // 2. Replay them all: a fresh app, the upstream mocked.
    let port = free_port()?;
    let verdict_path = rig.env.work.join("replay-verdict.json");
    let bench_dir = rig.env.root.join("tests/apps/bench");
    let mut cmd = pinned(&rig.env.cpus.agent, &rig.env.agent);
    cmd.current_dir(&bench_dir)
        .arg("replay")
        .arg(&out)
        // The benchmark's app runs as the benchmark does (root, with its venv), as when
        // recorded: said explicitly, as the agent requires (#19).
        .args(["--user", "root"])
        .args(["--port", &port.to_string(), "--startup-timeout", "120"])
        .arg("--cwd")
        .arg(&bench_dir)
        .arg("--json-out")
        .arg(&verdict_path)
        .arg("--")
        .args(["taskset", "-c", &rig.env.cpus.app])
        .arg(rig.env.venv.join("bin/uvicorn"))
        .args([
            "bench_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--no-access-log")
        .env("UPSTREAM_URL", format!("http://127.0.0.1:{up}"));
    let t = Instant::now();
    let mut replay = Proc::spawn("agent-replay", cmd, &rig.env.work)?;
    let status = replay.wait_timeout(Duration::from_secs(300));
    let replay_secs = t.elapsed().as_secs_f64();
    super::sys::retire(&out);
    let Some(status) = status else {
        return Ok(not_measured(&format!(
            "the replay did not finish within 300 s\n{}",
            replay.log_tail()
        )));
    };
    let verdict: Value = match fs::read_to_string(&verdict_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        Some(v) => v,
        None => {
            return Ok(not_measured(&format!(
                "the replay wrote no verdict (exit {status})\n{}",
                replay.log_tail()
            )));
        }
    };
    let requests = verdict["requests"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| -> u64 {
        requests
            .iter()
            .map(|r| r["dependencies"][k].as_u64().unwrap_or(0))
            .sum()
    };
    let (matched, missed) = (sum("matched"), sum("missed"));
    let durations = |path: &str| -> Vec<f64> {
        requests
            .iter()
            .skip(WARMUP)
            .filter(|r| r["target"].as_str() == Some(path) && r["outcome"] == "same")
            .filter_map(|r| r["duration_ms"].as_f64())
            .collect()
    };
    let p50 = |v: &[f64]| Spread::of(v).map(|s| s.median);
    let (Some(lp), Some(ld), Some(mp), Some(md)) = (
        p50(&live_plain),
        p50(&live_dep),
        p50(&durations("/plain")),
        p50(&durations("/dep")),
    ) else {
        return Ok(not_measured(&format!(
            "the verdict has no request durations (exit {status}, {} requests)",
            requests.len()
        )));
    };
    let not_same = requests.iter().filter(|r| r["outcome"] != "same").count();
    if matched == 0 || not_same * 2 > requests.len() {
        return Ok(not_measured(&format!(
            "replay matched {matched} and missed {missed} dependency calls for {} requests \
             (verdict: {})",
            requests.len(),
            verdict["summary"].as_str().unwrap_or("?")
        )));
    }
    // What replay adds to every request (its client, the hook, the cgroup), seen on /plain,
    // is taken out of what it adds to /dep: the rest is the mocked call.
    let per_request_us = (mp - lp) * 1000.0;
    let added_us = ((md - ld) - (mp - lp)) * 1000.0;
    eprintln!(
        "bench: replay: /plain p50 live {lp:.2} ms, replayed {mp:.2} ms; /dep p50 live {ld:.2} ms, replayed {md:.2} ms: {added_us:.0} µs per mocked call"
    );
    Ok(json!({
        "measured": true,
        "requests": requests.len(),
        "recorded_cassettes": rec.cassettes,
        "warmup_skipped": WARMUP,
        "dependency_calls_matched": matched,
        "dependency_calls_missed": missed,
        // Requests whose replay was not "same" (left out of the latencies).
        "requests_not_same": not_same,
        "summary": verdict["summary"],
        "exit_code": status.code(),
        "verdict": verdict["verdict"],
        "replay_secs": round(replay_secs, 1),
        "live_plain_p50_ms": round(lp, 3),
        "replay_plain_p50_ms": round(mp, 3),
        "live_p50_ms": round(ld, 3),
        "replay_p50_ms": round(md, 3),
        "added_us_per_request": round(per_request_us, 0),
        "added_us_per_mocked_call": round(added_us, 0),
        "note": "(replayed − live) p50 of /dep minus (replayed − live) p50 of /plain: the replayed durations are the verdict's (first 20 requests skipped as warm-up, only requests replayed as \"same\"), the live ones the same sequential requests against the app with a fast real upstream (the synthetic Rust server); /dep makes one dependency call, /plain none",
    }))
}
