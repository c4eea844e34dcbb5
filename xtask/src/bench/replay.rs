//! Replay latency per mocked dependency call, when this build has `timetracer-agent replay`.
//!
//! The check is made at run time: if `timetracer-agent replay --help` fails, the row says "not
//! measured" with the reason. Otherwise `/dep` cassettes are recorded, the app is started under
//! `replay --keep-running` (its dependency call answered by the mock), and the same sequential
//! `/dep` requests are timed there and against the live app with its real upstream; the
//! difference is the latency replay adds per mocked call (one call per request).
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

/// Requests recorded and then replayed.
const N: usize = 200;

fn not_measured(reason: &str) -> Value {
    json!({"measured": false, "reason": reason})
}

/// Latencies (ms) of `n` sequential GETs on one connection.
fn timed(port: u16, path: &str, n: usize) -> Result<(Vec<f64>, usize)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut c = Client::connect(port)?;
    let mut lat = Vec::new();
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        match c.get(req.as_bytes()) {
            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(_) => {
                errors += 1;
                c = Client::connect(port)?;
            }
        }
    }
    Ok((lat, errors))
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
    if !help.contains("--keep-running") {
        return Ok(not_measured(
            "replay has no --keep-running in this build, so the app cannot be driven under replay",
        ));
    }
    // 1. Live baseline and recording.
    let app = rig.app(Scheme::Http, AppKind::Plain)?;
    timed(app.port, "/dep", 50)?;
    let (live, live_errors) = timed(app.port, "/dep", N)?;
    let out = rig.env.work.join("replay-cassettes");
    let agent = Agent::attach(&rig.env, "agent-replay-record", app.pid, &out, &[])?;
    timed(app.port, "/dep", N)?;
    std::thread::sleep(Duration::from_millis(500));
    agent.stop()?;
    check_interrupted()?;
    // 2. The app under replay, every cassette loaded, left running.
    let port = free_port()?;
    let mut cmd = pinned(&rig.env.cpus.agent, &rig.env.agent);
    cmd.current_dir(rig.env.root.join("tests/apps/bench"))
        .arg("replay")
        .arg(&out)
        .arg("--keep-running")
        .arg("--")
        .arg(rig.env.venv.join("bin/uvicorn"))
        .args([
            "bench_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--no-access-log")
        .env(
            "UPSTREAM_URL",
            format!("http://127.0.0.1:{}", rig.upstream_port()?),
        );
    let mut replay = Proc::spawn("agent-replay", cmd, &rig.env.work)?;
    if let Err(e) = replay.wait_port(port, Duration::from_secs(60)) {
        return Ok(not_measured(&format!(
            "the app did not start under replay: {e:#}"
        )));
    }
    let (mocked, errors) = match timed(port, "/dep", N) {
        Ok(r) => r,
        Err(e) => {
            return Ok(not_measured(&format!(
                "requests under replay failed: {e:#}"
            )));
        }
    };
    drop(replay);
    let _ = fs::remove_dir_all(&out);
    if errors > 0 {
        return Ok(not_measured(&format!(
            "{errors} of {N} requests under replay failed (a call was not matched?)"
        )));
    }
    let (Some(l), Some(m)) = (Spread::of(&live), Spread::of(&mocked)) else {
        return Ok(not_measured("no latencies"));
    };
    let added_us = (m.median - l.median) * 1000.0;
    Ok(json!({
        "measured": true,
        "requests": N,
        "live_p50_ms": round(l.median, 3),
        "live_errors": live_errors,
        "replay_p50_ms": round(m.median, 3),
        "added_us_per_mocked_call": round(added_us, 0),
        "note": "p50 of sequential /dep requests under replay (mocked upstream) minus the same against the live app and its real upstream; one dependency call per request",
    }))
}
