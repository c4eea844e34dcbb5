//! Agent cost: CPU per 10,000 captured messages/s and peak RSS at fixed request rates on the
//! FastAPI app, then the message rate at which drops begin (synthetic server sweep).

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Plan, check_interrupted,
    load::{RateResult, fixed_rate},
    rig::{Agent, AgentSummary, AppKind, Rig, Scheme},
    sys::{Noise, Window, bpf_map_rss_kib, clk_tck, cpu_ticks, round, status_kib},
};

/// Keep-alive connections of the fixed-rate generator.
const CONNS: usize = 8;
/// Connections for the sweep (enough parallelism for ~30k req/s with thread-per-connection).
const SWEEP_CONNS: usize = 16;
/// Captured messages per request of the synthetic server (see `load`): request read, upstream
/// write + read, response head + body writes.
pub(crate) const SYNTH_MSGS_PER_REQUEST: f64 = 5.0;

struct Step {
    load: RateResult,
    agent: AgentSummary,
    agent_cpu_pct: f64,
    /// RSS right after attaching (BPF object loaded, nothing captured yet).
    attached_kib: u64,
    /// Agent CPU with no load, % of one core.
    idle_cpu_pct: Option<f64>,
    hwm_kib: u64,
    rss_kib: u64,
    /// Private memory (heap) at the end of the window.
    anon_kib: u64,
    /// Resident BPF map mappings (the ring buffer, mapped twice).
    ring_kib: u64,
    noise: Noise,
}

impl Step {
    /// Messages that reached the agent, per second.
    fn msgs_per_s(&self) -> f64 {
        self.agent.events as f64 / self.load.secs
    }

    /// Messages the traced process produced (reached the agent or dropped), per second.
    fn offered_msgs_per_s(&self) -> f64 {
        let dropped: u64 = self.agent.kernel_drops.iter().map(|(_, n)| n).sum();
        (self.agent.events + dropped) as f64 / self.load.secs
    }

    fn to_json(&self) -> Value {
        let per10k = self.agent_cpu_pct / (self.msgs_per_s() / 10_000.0).max(1e-9);
        json!({
            "load": self.load.to_json(),
            "messages_per_s": round(self.msgs_per_s(), 0),
            "offered_messages_per_s": round(self.offered_msgs_per_s(), 0),
            "cassettes_per_s": round(self.agent.cassettes as f64 / self.load.secs, 0),
            "agent_cpu_pct": round(self.agent_cpu_pct, 2),
            "agent_cpu_pct_per_10k_msgs": round(per10k, 2),
            "agent_idle_cpu_pct": self.idle_cpu_pct.map(|v| round(v, 2)),
            // Above the idle cost: what each additional 10k messages/s costs.
            "agent_cpu_pct_per_10k_msgs_marginal": self.idle_cpu_pct.map(|i| {
                round((self.agent_cpu_pct - i) / (self.msgs_per_s() / 10_000.0).max(1e-9), 2)
            }),
            "agent_peak_rss_mib": round(self.hwm_kib as f64 / 1024.0, 1),
            "agent_rss_mib": round(self.rss_kib as f64 / 1024.0, 1),
            "agent_rss_after_attach_mib": round(self.attached_kib as f64 / 1024.0, 1),
            "agent_rss_anon_mib": round(self.anon_kib as f64 / 1024.0, 1),
            "agent_rss_bpf_maps_mib": round(self.ring_kib as f64 / 1024.0, 1),
            "agent": self.agent.to_json(),
            "noise": self.noise.to_json(),
        })
    }
}

/// A fixed-rate window: which process, which load, which agent options.
struct Spec<'a> {
    name: String,
    pid: u32,
    port: u16,
    path: &'a str,
    rate: f64,
    conns: usize,
    secs: f64,
    /// Idle window before the load (0 = none).
    idle_secs: f64,
    extra: &'a [&'a str],
}

/// One fixed-rate window with a freshly attached agent.
fn step(rig: &Rig, sp: &Spec<'_>) -> Result<Step> {
    let (port, path, rate, conns, secs) = (sp.port, sp.path, sp.rate, sp.conns, sp.secs);
    // (CPU is divided by the load's real duration: the agent's work for the window's
    // messages, finished during the short settle below, is what the rate costs.)
    let out = rig.env.work.join("agent-cost-cassettes");
    let agent = Agent::attach(&rig.env, &sp.name, sp.pid, &out, sp.extra)?;
    let attached_kib = status_kib(agent.pid(), "VmRSS").unwrap_or(0);
    // The agent's fixed cost (its 10 ms drain loop, the TLS library rescan every second).
    let idle_cpu_pct = (sp.idle_secs > 0.0).then(|| {
        let i0 = cpu_ticks(agent.pid()).unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_secs_f64(sp.idle_secs));
        let i1 = cpu_ticks(agent.pid()).unwrap_or(0);
        i1.saturating_sub(i0) as f64 / clk_tck() / sp.idle_secs * 100.0
    });
    let mut pids = rig.pids();
    pids.push(agent.pid());
    let w = Window::begin(&pids);
    let c0 = cpu_ticks(agent.pid()).unwrap_or(0);
    let load = fixed_rate(port, path, rate, conns, secs, &rig.env.cpus.load)?;
    // Requests are written 300 ms after their last byte: let the agent finish the window's work.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let c1 = cpu_ticks(agent.pid()).unwrap_or(0);
    let noise = w.end(rig.env.noise_threshold);
    let hwm_kib = status_kib(agent.pid(), "VmHWM").unwrap_or(0);
    let rss_kib = status_kib(agent.pid(), "VmRSS").unwrap_or(0);
    let anon_kib = status_kib(agent.pid(), "RssAnon").unwrap_or(0);
    let ring_kib = bpf_map_rss_kib(agent.pid()).unwrap_or(0);
    let summary = agent.stop()?;
    super::sys::retire(&out);
    Ok(Step {
        agent_cpu_pct: c1.saturating_sub(c0) as f64 / clk_tck() / load.secs * 100.0,
        attached_kib,
        idle_cpu_pct,
        load,
        agent: summary,
        hwm_kib,
        rss_kib,
        anon_kib,
        ring_kib,
        noise,
    })
}

pub(crate) fn run(rig: &mut Rig, plan: &Plan) -> Result<Value> {
    // 1. The FastAPI app at fixed rates (the "1k req/s"; one uvicorn worker serves
    //    ~600 /dep requests/s at most on a 2-vCPU VM, so /dep runs at 250/s).
    let app = rig.app(Scheme::Http, AppKind::Plain)?;
    let mut fixed = Vec::new();
    for (path, rate) in [("/plain", 1000.0), ("/dep", 250.0)] {
        check_interrupted()?;
        let s = step(
            rig,
            &Spec {
                name: format!("agent-fixed{}", path.replace('/', "-")),
                pid: app.pid,
                port: app.port,
                path,
                rate,
                conns: CONNS,
                secs: plan.agent_secs,
                idle_secs: 2.0,
                extra: &[],
            },
        )?;
        eprintln!(
            "bench: agent at {rate} req/s {path}: {:.0} msgs/s, agent {:.1}% CPU, peak RSS {:.1} MiB, drops {}",
            s.msgs_per_s(),
            s.agent_cpu_pct,
            s.hwm_kib as f64 / 1024.0,
            s.agent.drops()
        );
        let mut v = s.to_json();
        v["path"] = json!(path);
        fixed.push(v);
    }
    // 2. Drop onset: the synthetic server, traced, at increasing message rates; once with full
    //    recording and once capturing and parsing only (`--sample-rate 0`: no cassettes).
    let (_, up) = rig.synthetic("synthetic-upstream", &rig.env.cpus.upstream.clone(), None)?;
    let (pid, port) = rig.synthetic("synthetic-server", &rig.env.cpus.app.clone(), Some(up))?;
    let mut sweeps = Vec::new();
    for (mode, extra) in [
        ("record", &[][..]),
        ("capture-only", &["--sample-rate", "0"][..]),
    ] {
        let mut steps = Vec::new();
        let mut onset = None;
        let mut max_clean: Option<f64> = None;
        let mut saturated = None;
        for &msgs in &plan.sweep_msgs {
            check_interrupted()?;
            let rate = msgs / SYNTH_MSGS_PER_REQUEST;
            let s = step(
                rig,
                &Spec {
                    name: format!("agent-sweep-{mode}-{msgs}"),
                    pid,
                    port,
                    path: "/dep",
                    rate,
                    conns: SWEEP_CONNS,
                    secs: plan.sweep_secs,
                    idle_secs: 0.0,
                    extra,
                },
            )?;
            let achieved = s.load.achieved_rps() / rate;
            let held = s.load.held();
            eprintln!(
                "bench: sweep {mode} target {msgs} msgs/s: {:.0} msgs/s offered, {:.0} captured, {:.0}% of the target rate served, agent {:.1}% CPU, drops {}",
                s.offered_msgs_per_s(),
                s.msgs_per_s(),
                achieved * 100.0,
                s.agent_cpu_pct,
                s.agent.drops()
            );
            let drops = s.agent.drops();
            let rate_captured = s.offered_msgs_per_s();
            steps.push(s.to_json());
            if drops > 0 {
                onset = Some((rate_captured, held));
                break;
            }
            max_clean = Some(max_clean.map_or(rate_captured, |m: f64| m.max(rate_captured)));
            if !held {
                saturated = Some(rate_captured);
                break;
            }
        }
        sweeps.push(json!({
            "mode": mode,
            "steps": steps,
            "drops_begin_at_msgs_per_s": onset.map(|(v, _)| round(v, 0)),
            // False: the step that dropped did not hold its rate either (the machine was
            // saturated), so the onset is the machine's limit as much as the agent's.
            "drop_step_rate_held": onset.map(|(_, h)| h),
            "max_msgs_per_s_without_drops": max_clean.map(|v| round(v, 0)),
            "load_saturated_at_msgs_per_s": saturated.map(|v| round(v, 0)),
        }));
    }
    Ok(json!({
        "fixed_rate": fixed,
        "sweep": sweeps,
        "synthetic_messages_per_request": SYNTH_MSGS_PER_REQUEST,
    }))
}
