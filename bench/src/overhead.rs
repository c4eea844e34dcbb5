//! Overhead: the FastAPI app untraced, with `timetracer-agent attach` recording, and with the
//! Python `timetracer` 1.6.0 middleware recording; `/plain` and `/dep`; HTTP and HTTPS. Each
//! round runs every configuration once per (scheme, endpoint), in an order rotated from round to
//! round, and ratios are taken against the untraced window of the same round.

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Plan, check_interrupted,
    rig::{Agent, AgentSummary, AppKind, Endpoint, Rig, Scheme},
    stats::spread_json,
    sys::{DirUsage, Noise, Window, clk_tck, cpu_ticks, empty_dir, round},
    wrk::{self, WrkResult},
};

pub(crate) const GROUPS: [(Scheme, Endpoint); 4] = [
    (Scheme::Http, Endpoint::Plain),
    (Scheme::Http, Endpoint::Dep),
    (Scheme::Https, Endpoint::Plain),
    (Scheme::Https, Endpoint::Dep),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Config {
    Untraced,
    Agent,
    PythonTool,
}

const CONFIGS: [Config; 3] = [Config::Untraced, Config::Agent, Config::PythonTool];

impl Config {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Agent => "timetracer-agent",
            Self::PythonTool => "python-timetracer",
        }
    }
}

struct Win {
    round: usize,
    scheme: Scheme,
    endpoint: Endpoint,
    config: Config,
    wrk: WrkResult,
    warmup_requests: u64,
    app_cpu_us: f64,
    agent_cpu_pct: Option<f64>,
    agent: Option<AgentSummary>,
    usage: Option<DirUsage>,
    noise: Noise,
}

impl Win {
    fn to_json(&self) -> Value {
        let cassettes_per_request = self.usage.map(|u| {
            round(
                u.files as f64 / (self.warmup_requests + self.wrk.requests).max(1) as f64,
                3,
            )
        });
        json!({
            "round": self.round,
            "scheme": self.scheme.name(),
            "endpoint": self.endpoint.path(),
            "config": self.config.name(),
            "wrk": self.wrk.to_json(),
            "warmup_requests": self.warmup_requests,
            "app_cpu_us_per_request": round(self.app_cpu_us, 1),
            "agent_cpu_pct": self.agent_cpu_pct.map(|v| round(v, 1)),
            "agent": self.agent.as_ref().map(AgentSummary::to_json),
            "cassettes": self.usage.map(DirUsage::to_json),
            "cassettes_per_request": cassettes_per_request,
            "noise": self.noise.to_json(),
        })
    }
}

pub(crate) fn run(rig: &mut Rig, plan: &Plan) -> Result<Value> {
    // Start every app before the first window so no startup falls inside one.
    for (scheme, _) in GROUPS {
        rig.app(scheme, AppKind::Plain)?;
        rig.app(scheme, AppKind::PythonTool)?;
    }
    let mut wins = Vec::new();
    let total = plan.rounds * GROUPS.len() * CONFIGS.len();
    for r in 0..plan.rounds {
        for (g, (scheme, endpoint)) in GROUPS.into_iter().enumerate() {
            for k in 0..CONFIGS.len() {
                check_interrupted()?;
                let config = CONFIGS[(k + r + g) % CONFIGS.len()];
                let w = window(rig, plan, r, scheme, endpoint, config)?;
                eprintln!(
                    "bench: overhead {}/{total} round {} {} {} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU/req, unrelated CPU {:.0}%{}",
                    wins.len() + 1,
                    r + 1,
                    scheme.name(),
                    endpoint.path(),
                    config.name(),
                    w.wrk.rps,
                    w.wrk.p50_ms,
                    w.wrk.p99_ms,
                    w.app_cpu_us,
                    w.noise.unrelated_pct,
                    if w.noise.noisy { " (noisy)" } else { "" }
                );
                wins.push(w);
            }
        }
    }
    Ok(summarise(&wins, plan.rounds))
}

fn window(
    rig: &mut Rig,
    plan: &Plan,
    round_no: usize,
    scheme: Scheme,
    endpoint: Endpoint,
    config: Config,
) -> Result<Win> {
    let kind = if config == Config::PythonTool {
        AppKind::PythonTool
    } else {
        AppKind::Plain
    };
    let app = rig.app(scheme, kind)?;
    let url = scheme.url(app.port, endpoint.path());
    let load = rig.env.cpus.load.clone();
    let agent = if config == Config::Agent {
        let out = rig.env.work.join("agent-cassettes");
        let name = format!(
            "agent-overhead-r{round_no}-{}-{}",
            scheme.name(),
            endpoint.path().trim_start_matches('/')
        );
        Some(Agent::attach(&rig.env, &name, app.pid, &out, &[])?)
    } else {
        None
    };
    let warm = wrk::run(&load, &url, plan.warmup)?;
    let mut pids = rig.pids();
    pids.extend(agent.as_ref().map(Agent::pid));
    let agent_cpu0 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
    let cpu0 = cpu_ticks(app.pid);
    let w = Window::begin(&pids);
    let res = wrk::run(&load, &url, plan.secs)?;
    let noise = w.end(rig.env.noise_threshold);
    let cpu1 = cpu_ticks(app.pid);
    let agent_cpu1 = agent.as_ref().and_then(|a| cpu_ticks(a.pid()));
    let ticks_to_s = |a: Option<u64>, b: Option<u64>| {
        a.zip(b)
            .map(|(a, b)| b.saturating_sub(a) as f64 / clk_tck())
    };
    let app_cpu_us = ticks_to_s(cpu0, cpu1).unwrap_or(f64::NAN) * 1e6 / res.requests.max(1) as f64;
    let agent_cpu_pct = ticks_to_s(agent_cpu0, agent_cpu1).map(|s| s / res.secs * 100.0);
    let (summary, usage) = match agent {
        Some(a) => {
            let out = a.out.clone();
            let s = a.stop()?;
            let u = DirUsage::of(&out, "");
            super::sys::retire(&out);
            (Some(s), Some(u))
        }
        None => match &app.py_dir {
            Some(d) => {
                let u = DirUsage::of(d, "");
                empty_dir(d);
                (None, Some(u))
            }
            None => (None, None),
        },
    };
    Ok(Win {
        round: round_no,
        scheme,
        endpoint,
        config,
        wrk: res,
        warmup_requests: warm.requests,
        app_cpu_us,
        agent_cpu_pct,
        agent: summary,
        usage,
        noise,
    })
}

/// Per configuration: medians and spreads; per traced configuration: ratios to the untraced
/// window of the same round. Clean rounds only, unless every round was noisy.
fn summarise(wins: &[Win], rounds: usize) -> Value {
    let mut cells = Vec::new();
    let mut ratios = Vec::new();
    for (scheme, endpoint) in GROUPS {
        let of = |c: Config| -> Vec<&Win> {
            wins.iter()
                .filter(|w| w.scheme == scheme && w.endpoint == endpoint && w.config == c)
                .collect()
        };
        for config in CONFIGS {
            let all = of(config);
            let clean: Vec<&Win> = all.iter().copied().filter(|w| !w.noise.noisy).collect();
            let used = if clean.is_empty() { &all } else { &clean };
            let col = |f: &dyn Fn(&Win) -> Option<f64>| -> Vec<f64> {
                used.iter().filter_map(|w| f(w)).collect()
            };
            cells.push(json!({
                "scheme": scheme.name(),
                "endpoint": endpoint.path(),
                "config": config.name(),
                "windows": all.len(),
                "clean_windows": clean.len(),
                "rps": spread_json(&col(&|w| Some(w.wrk.rps)), 1),
                "p50_ms": spread_json(&col(&|w| Some(w.wrk.p50_ms)), 3),
                "p99_ms": spread_json(&col(&|w| Some(w.wrk.p99_ms)), 3),
                "app_cpu_us_per_request": spread_json(&col(&|w| Some(w.app_cpu_us)), 1),
                "agent_cpu_pct": spread_json(&col(&|w| w.agent_cpu_pct), 1),
                // Files of warm-up + window, scaled to the window's share of the requests.
                "cassettes_per_second": spread_json(&col(&|w| {
                    let share = w.wrk.requests as f64
                        / (w.warmup_requests + w.wrk.requests).max(1) as f64;
                    w.usage.map(|u| u.files as f64 * share / w.wrk.secs.max(1e-9))
                }), 1),
                "bytes_per_cassette": spread_json(&col(&|w| {
                    w.usage.filter(|u| u.files > 0).map(|u| u.bytes as f64 / u.files as f64)
                }), 0),
                "disk_bytes_per_cassette": spread_json(&col(&|w| {
                    w.usage.filter(|u| u.files > 0).map(|u| u.disk_bytes as f64 / u.files as f64)
                }), 0),
                "drops": used.iter().filter_map(|w| w.agent.as_ref().map(AgentSummary::drops)).sum::<u64>(),
                "errors": used.iter().map(|w| w.wrk.errors).sum::<u64>(),
            }));
        }
        let base = of(Config::Untraced);
        for config in [Config::Agent, Config::PythonTool] {
            let mut pairs = Vec::new();
            for w in of(config) {
                if let Some(b) = base.iter().find(|b| b.round == w.round) {
                    pairs.push((b, w, b.noise.noisy || w.noise.noisy));
                }
            }
            let clean: Vec<_> = pairs.iter().filter(|p| !p.2).collect();
            let all: Vec<_> = pairs.iter().collect();
            let used = if clean.is_empty() { &all } else { &clean };
            let col = |f: &dyn Fn(&Win, &Win) -> f64| -> Vec<f64> {
                used.iter().map(|(b, w, _)| f(b, w)).collect()
            };
            ratios.push(json!({
                "scheme": scheme.name(),
                "endpoint": endpoint.path(),
                "config": config.name(),
                "rounds": pairs.len(),
                "clean_rounds": clean.len(),
                "all_noisy": clean.is_empty() && !pairs.is_empty(),
                "rps_ratio": spread_json(&col(&|b, w| w.wrk.rps / b.wrk.rps), 3),
                "p50_ratio": spread_json(&col(&|b, w| w.wrk.p50_ms / b.wrk.p50_ms), 3),
                "p99_ratio": spread_json(&col(&|b, w| w.wrk.p99_ms / b.wrk.p99_ms), 3),
                "cpu_per_request_ratio": spread_json(&col(&|b, w| w.app_cpu_us / b.app_cpu_us), 3),
            }));
        }
    }
    json!({
        "rounds": rounds,
        "windows": wins.iter().map(Win::to_json).collect::<Vec<_>>(),
        "cells": cells,
        "ratios": ratios,
    })
}
