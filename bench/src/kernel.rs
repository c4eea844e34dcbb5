//! Kernel hook cost: with `kernel.bpf_stats_enabled=1`, the run time and run count of every BPF
//! program the agent loaded (from `/proc/AGENT/fdinfo`), per request of the app, and the hook
//! machinery around them estimated from perf-anchors §2.3 (which the throughput noise floor
//! cannot resolve). The tracepoint programs run for every process's syscalls (and return at
//! once for untraced ones); an idle window before the loaded one measures that background rate,
//! which is subtracted.
use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Plan, check_interrupted,
    overhead::GROUPS,
    rig::{Agent, AppKind, Rig},
    sys::{Window, clk_tck, cpu_ticks, round},
    wrk,
};

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Per-hit cost of the hook machinery outside the BPF program, measured on this kind of VM
/// (shared/reference/perf-anchors.md §2.3): a syscall tracepoint adds ~183 ns of which the
/// program is ~65 ns; a uprobe on an emulated instruction (`push`) ~769 ns of which the program
/// is ~165 ns. (A uprobe on a single-stepped instruction costs ~10 µs instead.)
const TRACEPOINT_MACHINERY_NS: f64 = 118.0;
const UPROBE_MACHINERY_NS: f64 = 604.0;

/// `bpf_prog_type` values.
const PROG_TYPE_KPROBE: u64 = 2;
const PROG_TYPE_TRACEPOINT: u64 = 5;

/// Turns `kernel.bpf_stats_enabled` on and restores the previous value when dropped.
pub(crate) struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub(crate) fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("reading {BPF_STATS}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.previous);
    }
}

/// Counters of one loaded program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgStats {
    pub(crate) prog_type: u64,
    pub(crate) run_time_ns: u64,
    pub(crate) run_cnt: u64,
}

/// Programs held by `pid` (by prog id), from `/proc/PID/fdinfo`.
pub(crate) fn prog_stats(pid: u32) -> BTreeMap<u64, ProgStats> {
    let mut out = BTreeMap::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in rd.flatten() {
        let is_prog =
            fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = Path::new("/proc")
            .join(pid.to_string())
            .join("fdinfo")
            .join(e.file_name());
        if let Some((id, s)) = fs::read_to_string(info).ok().and_then(|t| parse_fdinfo(&t)) {
            out.insert(id, s);
        }
    }
    out
}

fn parse_fdinfo(text: &str) -> Option<(u64, ProgStats)> {
    let get = |k: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((
        get("prog_id")?,
        ProgStats {
            prog_type: get("prog_type").unwrap_or(0),
            run_time_ns: get("run_time_ns").unwrap_or(0),
            run_cnt: get("run_cnt").unwrap_or(0),
        },
    ))
}

/// Program names by id (`bpftool prog show --json`), empty without bpftool.
fn prog_names() -> BTreeMap<u64, String> {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect()
}

pub(crate) fn run(rig: &mut Rig, plan: &Plan) -> Result<Value> {
    let _stats = BpfStats::enable()?;
    let mut rows = Vec::new();
    for (scheme, endpoint) in GROUPS {
        check_interrupted()?;
        let app = rig.app(scheme, AppKind::Plain)?;
        let url = scheme.url(app.port, endpoint.path());
        let out = rig.env.work.join("kernel-cassettes");
        let name = format!(
            "agent-kernel-{}-{}",
            scheme.name(),
            endpoint.path().trim_start_matches('/')
        );
        let agent = Agent::attach(&rig.env, &name, app.pid, &out, &[])?;
        wrk::run(&rig.env.cpus.load, &url, plan.warmup)?;
        // Background: the programs also run (and filter) for other processes' syscalls; an
        // idle window measures their rate, subtracted below.
        let i0 = prog_stats(agent.pid());
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(plan.secs.min(3.0)));
        let idle_secs = t.elapsed().as_secs_f64();
        let i1 = prog_stats(agent.pid());
        let mut pids = rig.pids();
        pids.push(agent.pid());
        let w = Window::begin(&pids);
        let s0 = prog_stats(agent.pid());
        let c0 = cpu_ticks(app.pid);
        let res = wrk::run(&rig.env.cpus.load, &url, plan.secs)?;
        let s1 = prog_stats(agent.pid());
        let c1 = cpu_ticks(app.pid);
        let noise = w.end(rig.env.noise_threshold);
        let bg_scale = res.secs / idle_secs.max(1e-3);
        let names = prog_names();
        agent.stop()?;
        super::sys::retire(&out);
        let reqs = res.requests.max(1) as f64;
        let mut progs = Vec::new();
        let (mut bpf_ns, mut est_ns, mut tp_hits, mut up_hits) = (0.0, 0.0, 0.0, 0.0);
        let (mut all_raw, mut all_bg) = (0.0, 0.0);
        for (id, b) in &s1 {
            let delta = |x: &BTreeMap<u64, ProgStats>, y: &BTreeMap<u64, ProgStats>| {
                let (a, b) = (
                    x.get(id).copied().unwrap_or_default(),
                    y.get(id).copied().unwrap_or_default(),
                );
                (
                    b.run_cnt.saturating_sub(a.run_cnt) as f64,
                    b.run_time_ns.saturating_sub(a.run_time_ns) as f64,
                )
            };
            let (raw_runs, raw_ns) = delta(&s0, &s1);
            let (bg_runs, bg_ns) = delta(&i0, &i1);
            let runs = (raw_runs - bg_runs * bg_scale).max(0.0);
            let ns = (raw_ns - bg_ns * bg_scale).max(0.0);
            if raw_runs == 0.0 {
                continue;
            }
            all_raw += raw_runs;
            all_bg += (bg_runs * bg_scale).min(raw_runs);
            let machinery = match b.prog_type {
                PROG_TYPE_TRACEPOINT => {
                    tp_hits += runs / reqs;
                    TRACEPOINT_MACHINERY_NS
                }
                PROG_TYPE_KPROBE => {
                    up_hits += runs / reqs;
                    UPROBE_MACHINERY_NS
                }
                _ => 0.0,
            };
            bpf_ns += ns / reqs;
            est_ns += (ns + runs * machinery) / reqs;
            progs.push(json!({
                "id": id,
                "name": names.get(id).cloned().unwrap_or_else(|| format!("prog{id}")),
                "type": match b.prog_type {
                    PROG_TYPE_TRACEPOINT => "tracepoint",
                    PROG_TYPE_KPROBE => "uprobe",
                    _ => "other",
                },
                "runs_per_request": round(runs / reqs, 2),
                "ns_per_run": round(raw_ns / raw_runs, 0),
                "ns_per_request": round(ns / reqs, 0),
                "raw_runs_per_request": round(raw_runs / reqs, 2),
                "background_runs_per_s": round(bg_runs / idle_secs.max(1e-3), 1),
            }));
        }
        let app_cpu_us = c0
            .zip(c1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / clk_tck() * 1e6 / reqs);
        eprintln!(
            "bench: kernel {} {}: {tp_hits:.1} tracepoint + {up_hits:.1} uprobe hits/request, BPF {:.2} µs/request, estimated hooks {:.2} µs/request",
            scheme.name(),
            endpoint.path(),
            bpf_ns / 1000.0,
            est_ns / 1000.0
        );
        rows.push(json!({
            "scheme": scheme.name(),
            "endpoint": endpoint.path(),
            "requests": res.requests,
            "tracepoint_hits_per_request": round(tp_hits, 2),
            "uprobe_hits_per_request": round(up_hits, 2),
            "bpf_us_per_request": round(bpf_ns / 1000.0, 3),
            "estimated_hook_us_per_request": round(est_ns / 1000.0, 3),
            "app_cpu_us_per_request": app_cpu_us.map(|v| round(v, 1)),
            "estimated_hook_share_pct": app_cpu_us.map(|c| round(est_ns / 1000.0 / (c - est_ns / 1000.0).max(1e-9) * 100.0, 2)),
            "programs": progs,
            // Share of the loaded window's runs attributed to the background: when large, the
            // per-request figures depend on a background that may have changed in between.
            "background_share_pct": round(all_bg / all_raw.max(1.0) * 100.0, 1),
            "noise": noise.to_json(),
            "unreliable": noise.noisy || all_bg > 0.2 * all_raw,
        }));
    }
    Ok(json!({
        "rows": rows,
        "machinery_ns": {
            "tracepoint": TRACEPOINT_MACHINERY_NS,
            "uprobe_emulated": UPROBE_MACHINERY_NS,
            "source": "shared/reference/perf-anchors.md §2.3",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prog_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\t7a3c...\nmemlock:\t4096\nprog_id:\t321\nrun_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t42\n";
        let (id, s) = parse_fdinfo(t).unwrap();
        assert_eq!(id, 321);
        assert_eq!(
            s,
            ProgStats {
                prog_type: 5,
                run_time_ns: 123_456,
                run_cnt: 789
            }
        );
        assert!(parse_fdinfo("pos: 0\n").is_none());
    }
}
