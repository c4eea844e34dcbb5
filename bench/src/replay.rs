//! Replay latency per mocked dependency call, when this build has `timetracer-agent replay`.
//!
//! The check is made at run time: if `timetracer-agent replay --help` fails, the row says "not
//! measured" with the reason. Otherwise `N` sequential `/dep` requests are timed against the
//! live app with a fast real upstream (the synthetic Rust server, so the upstream's own service
//! time does not hide the mock's), the same requests are recorded with `attach`, and
//! `timetracer-agent replay DIR --json-out F -- uvicorn ...` replays them with the upstream
//! mocked; the verdict gives each replayed request's duration and when it was sent. The live
//! baseline is then measured again **paced like replay**: a fresh connection per request (as
//! replay's client opens) and the same idle gap between one response and the next request as
//! the replay left (the median of the verdict's gaps) — an idle gap alone makes the app slower
//! on these VMs, so a back-to-back baseline would charge that to the mock (issue #26 item 6).
//! The difference of the medians is the latency replay adds per mocked call (one call per
//! request); its spread is the min–max of the same estimate over five consecutive blocks of
//! the rounds.
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
/// Blocks of consecutive rounds over which the per-call estimate's spread is taken.
const BLOCKS: usize = 5;

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

/// `n` rounds of GET `/plain` then GET `/dep` paced like replay sends them: each on a fresh
/// connection, `gap` after the previous response; latencies (ms, connect included as replay's
/// durations include it) of each.
fn paced(port: u16, n: usize, gap: Duration) -> Result<(Vec<f64>, Vec<f64>)> {
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let (plain, dep) = (req("/plain"), req("/dep"));
    let (mut lp, mut ld) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (r, lat) in [(&plain, &mut lp), (&dep, &mut ld)] {
            std::thread::sleep(gap);
            let t = Instant::now();
            let mut c = Client::connect(port)?;
            c.get(r.as_bytes())?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((lp, ld))
}

/// The per-call estimate `(replayed − live)/dep − (replayed − live)/plain` in µs, from medians.
fn added_us(live: (&[f64], &[f64]), replayed: (&[f64], &[f64])) -> Option<f64> {
    let p50 = |v: &[f64]| Spread::of(v).map(|s| s.median);
    let (lp, ld) = (p50(live.0)?, p50(live.1)?);
    let (mp, md) = (p50(replayed.0)?, p50(replayed.1)?);
    Some(((md - ld) - (mp - lp)) * 1000.0)
}

/// [`added_us`] over `BLOCKS` consecutive blocks of each sample: its spread.
fn block_spread(live: (&[f64], &[f64]), replayed: (&[f64], &[f64])) -> Option<Spread> {
    let chunk = |v: &[f64], i: usize| -> Vec<f64> {
        let size = v.len().div_ceil(BLOCKS).max(1);
        v.chunks(size)
            .nth(i)
            .map(<[f64]>::to_vec)
            .unwrap_or_default()
    };
    let per_block: Vec<f64> = (0..BLOCKS)
        .filter_map(|i| {
            added_us(
                (&chunk(live.0, i), &chunk(live.1, i)),
                (&chunk(replayed.0, i), &chunk(replayed.1, i)),
            )
        })
        .collect();
    Spread::of(&per_block)
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
    // The idle gap replay left between a response and the next request (median).
    let gaps: Vec<f64> = requests
        .windows(2)
        .filter_map(|w| {
            let end = w[0]["sent_at_ms"].as_f64()? + w[0]["duration_ms"].as_f64()?;
            Some(w[1]["sent_at_ms"].as_f64()? - end)
        })
        .filter(|g| *g >= 0.0)
        .collect();
    let gap_ms = Spread::of(&gaps).map_or(0.0, |s| s.median);
    // 3. The live baseline again, paced like the replay (the live app is still warm).
    let (paced_plain, paced_dep) = paced(app.port, N, Duration::from_secs_f64(gap_ms / 1000.0))?;
    let p50 = |v: &[f64]| Spread::of(v).map(|s| s.median);
    let (replayed_plain, replayed_dep) = (durations("/plain"), durations("/dep"));
    let (Some(lp), Some(ld), Some(mp), Some(md)) = (
        p50(&paced_plain),
        p50(&paced_dep),
        p50(&replayed_plain),
        p50(&replayed_dep),
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
    let added = ((md - ld) - (mp - lp)) * 1000.0;
    let spread = block_spread(
        (&paced_plain[WARMUP / 2..], &paced_dep[WARMUP / 2..]),
        (&replayed_plain, &replayed_dep),
    );
    // The old, back-to-back baseline, for comparison.
    let back_to_back = added_us((&live_plain, &live_dep), (&replayed_plain, &replayed_dep));
    eprintln!(
        "bench: replay: gap {gap_ms:.2} ms; /plain p50 live (paced) {lp:.2} ms, replayed {mp:.2} ms; /dep p50 live (paced) {ld:.2} ms, replayed {md:.2} ms: {added:.0} µs per mocked call (blocks {:?}; back-to-back baseline: {back_to_back:?} µs)",
        spread.map(|s| (s.min.round(), s.max.round()))
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
        "replay_gap_ms": round(gap_ms, 3),
        "live_plain_p50_ms": round(lp, 3),
        "replay_plain_p50_ms": round(mp, 3),
        "live_p50_ms": round(ld, 3),
        "replay_p50_ms": round(md, 3),
        "added_us_per_request": round(per_request_us, 0),
        "added_us_per_mocked_call": round(added, 0),
        "added_us_per_mocked_call_blocks": spread.map_or(Value::Null, |s| s.to_json(0)),
        "added_us_per_mocked_call_back_to_back": back_to_back.map(|v| round(v, 0)),
        "note": "(replayed − live) p50 of /dep minus (replayed − live) p50 of /plain: the replayed durations are the verdict's (first 20 requests skipped as warm-up, only requests replayed as \"same\"), the live ones the same requests against the app with a fast real upstream (the synthetic Rust server) paced like replay (a fresh connection each, the replay's median gap between a response and the next request); /dep makes one dependency call, /plain none; blocks: the same estimate over 5 consecutive blocks (min–max); back_to_back: against the earlier back-to-back, one-connection baseline",
    }))
}
