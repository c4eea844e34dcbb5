//! The Markdown report and the targets of issue #11, from the results JSON.
use std::fmt::Write as _;

use serde_json::{Value, json};

/// `v` as a number.
fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

/// `median (min–max)` of a spread object.
fn spread(v: &Value, digits: usize) -> String {
    match (num(&v["median"]), num(&v["min"]), num(&v["max"])) {
        (Some(m), Some(lo), Some(hi)) if v["n"].as_u64().unwrap_or(0) > 1 => {
            format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
        }
        (Some(m), ..) => format!("{m:.digits$}"),
        _ => "–".to_owned(),
    }
}

fn find(arr: &Value, pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    arr.as_array()?.iter().find(|v| pred(v))
}

fn ratio_row<'a>(res: &'a Value, scheme: &str, ep: &str, config: &str) -> Option<&'a Value> {
    find(&res["overhead"]["ratios"], |r| {
        r["scheme"] == scheme && r["endpoint"] == ep && r["config"] == config
    })
}

/// One target: what, the number, and whether it is met.
struct Target {
    what: String,
    measured: String,
    status: &'static str,
    note: Option<String>,
}

fn status(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn targets(res: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    let quick = res["meta"]["quick"].as_bool().unwrap_or(false);
    let noisy_tag = |r: &Value| {
        if r["all_noisy"].as_bool().unwrap_or(false) {
            " ⚠ every round noisy"
        } else {
            ""
        }
    };
    for (scheme, ep, min) in [
        ("http", "/dep", 0.97),
        ("http", "/plain", 0.95),
        ("https", "/plain", 0.90),
        ("https", "/dep", 0.90),
    ] {
        let what = format!("traced/untraced req/s, {scheme} `{ep}` ≥ {min:.2}");
        let Some(r) = ratio_row(res, scheme, ep, "timetracer-agent") else {
            out.push(Target {
                what,
                measured: "–".into(),
                status: status(None),
                note: None,
            });
            continue;
        };
        let m = num(&r["rps_ratio"]["median"]);
        let ok = m.map(|m| m >= min);
        let note = (ok == Some(false)).then(|| ratio_note(res, r, scheme, ep, quick));
        out.push(Target {
            what,
            measured: format!("{}{}", spread(&r["rps_ratio"], 3), noisy_tag(r)),
            status: status(ok),
            note,
        });
    }
    let fixed = find(&res["agent"]["fixed_rate"], |r| r["path"] == "/plain");
    let per10k = fixed.and_then(|r| num(&r["agent_cpu_pct_per_10k_msgs"]));
    let fixed_noisy = fixed.map_or("", |r| {
        if r["noise"]["noisy"].as_bool().unwrap_or(false) {
            " ⚠ noisy window"
        } else {
            ""
        }
    });
    out.push(Target {
        what: "agent CPU ≤ 5 % of one core per 10k messages/s (`/plain` at 1k req/s)".into(),
        measured: per10k.map_or("–".into(), |v| format!("{v:.2} %{fixed_noisy}")),
        status: status(per10k.map(|v| v <= 5.0)),
        note: per10k.filter(|v| *v > 5.0).map(|_| {
            let f = |k: &str| fmt(fixed.and_then(|r| num(&r[k])), 2);
            // Capture alone vs full recording, at the sweep's first (lowest) rate.
            let first = |mode: &str| {
                find(&res["agent"]["sweep"], |s| s["mode"] == mode)
                    .and_then(|s| num(&s["steps"][0]["agent_cpu_pct_per_10k_msgs"]))
            };
            let mut n = format!(
                "Idle, the agent uses {} % of a core (its 10 ms drain loop and the TLS library \
                 rescan every second); above that, each 10k messages/s cost {} %.",
                f("agent_idle_cpu_pct"),
                f("agent_cpu_pct_per_10k_msgs_marginal")
            );
            if let (Some(c), Some(r)) = (first("capture-only"), first("record")) {
                let _ = write!(
                    n,
                    " In the synthetic sweep's first step, capture + parsing + correlation alone \
                     cost {c:.1} % per 10k messages/s and full recording {r:.1} %, so writing \
                     cassettes is {:.0} % of the agent's work there.",
                    ((r - c) / r * 100.0).max(0.0)
                );
            }
            n.push_str(
                " Closing it: cheaper cassettes (one file and one directory entry per request \
                 is most of what is left: docs/performance.md, findings), then fewer ring \
                 records per request.",
            );
            n
        }),
    });
    let rss = fixed.and_then(|r| num(&r["agent_peak_rss_mib"]));
    out.push(Target {
        what: "agent peak RSS ≤ 64 MiB at 1k req/s".into(),
        measured: rss.map_or("–".into(), |v| format!("{v:.1} MiB{fixed_noisy}")),
        status: status(rss.map(|v| v <= 64.0)),
        note: rss.filter(|v| *v > 64.0).map(|_| {
            let f = |k: &str| fmt(fixed.and_then(|r| num(&r[k])), 1);
            format!(
                "{} MiB of it is the BPF ring buffer's mapping (RING_BYTES = 32 MiB, whose data \
                 pages are mapped twice for wrap-around and are resident from the attach: RSS \
                 is already {} MiB before anything is captured); the agent's own heap is {} \
                 MiB. Closing it: a ring buffer sized to the expected rate (the agent drains it \
                 every 10 ms) or a configurable size.",
                f("agent_rss_bpf_maps_mib"),
                f("agent_rss_after_attach_mib"),
                f("agent_rss_anon_mib")
            )
        }),
    });
    let sweep = find(&res["agent"]["sweep"], |s| s["mode"] == "record");
    let (drop_what, drop_status, drop_note) = match sweep {
        None => ("–".to_owned(), status(None), None),
        Some(s) => {
            let onset = num(&s["drops_begin_at_msgs_per_s"]);
            let max_clean = num(&s["max_msgs_per_s_without_drops"]);
            let sat = num(&s["load_saturated_at_msgs_per_s"]);
            let held = s["drop_step_rate_held"].as_bool().unwrap_or(true);
            let capture_only = find(&res["agent"]["sweep"], |s| s["mode"] == "capture-only")
                .unwrap_or(&Value::Null);
            match (onset, max_clean) {
                (Some(o), m) if o < 50_000.0 && !held => (
                    format!(
                        "no drops up to {} msgs/s; drops at {o:.0} msgs/s once the machine \
                         saturated",
                        fmt(m, 0)
                    ),
                    "inconclusive",
                    Some(format!(
                        "The only step with drops below 50k msgs/s ({o:.0} offered) did not \
                         hold its request rate: the traced server, the load generator, the \
                         upstream and the agent saturated this machine, so the agent was not \
                         the only limit. Highest rate without drops: {} msgs/s. Run on more \
                         CPUs (the agent then gets its own) to decide.",
                        fmt(m, 0)
                    )),
                ),
                (Some(o), _) if o < 50_000.0 => (
                    format!("drops begin at {o:.0} msgs/s"),
                    "**missed**",
                    Some(format!(
                        "Drops begin at {o:.0} msgs/s offered, with full recording (highest \
                         rate without drops: {} msgs/s). The agent drains the ring buffer \
                         every 10 ms; when it falls behind, the ring fills and the kernel \
                         counts `ring_full`. {} Closing it: a drain that does not stop at a \
                         fixed 10 ms tick under load, a faster writer, and a larger ring \
                         buffer.",
                        fmt(max_clean, 0),
                        match num(&capture_only["drops_begin_at_msgs_per_s"]) {
                            Some(c) => format!(
                                "Capture alone (no cassettes) drops from {c:.0} msgs/s too, so \
                                 the limit is before the writer."
                            ),
                            None if capture_only.is_object() => "Capture alone (no \
                                 cassettes) does not drop in the same sweep, so the writer is \
                                 the limit."
                                .to_owned(),
                            None => String::new(),
                        },
                    )),
                ),
                (Some(o), _) => (format!("drops begin at {o:.0} msgs/s"), "met", None),
                (None, Some(m)) if m >= 50_000.0 => {
                    (format!("no drops up to {m:.0} msgs/s"), "met", None)
                }
                (None, m) => (
                    format!(
                        "no drops up to {} msgs/s{}",
                        fmt(m, 0),
                        sat.map_or(String::new(), |s| format!(" (load saturated at {s:.0})"))
                    ),
                    "not reached",
                    Some(
                        "The load could not reach 50k messages/s on this machine, so the target \
                         is neither met nor missed here; run on more CPUs."
                            .to_owned(),
                    ),
                ),
            }
        }
    };
    out.push(Target {
        what: "0 drops below 50k messages/s (full recording)".into(),
        measured: drop_what,
        status: drop_status,
        note: drop_note,
    });
    let search = &res["tools"]["search"];
    let s = num(&search["indexed_search_secs"]["median"]);
    let n = search["cassettes"].as_u64().unwrap_or(0);
    out.push(Target {
        what: "`timetracer search` over 100,000 cassettes < 1 s".into(),
        measured: s.map_or("–".into(), |v| {
            format!(
                "{v:.3} s{}",
                if n == 100_000 {
                    String::new()
                } else {
                    format!(" ({n} cassettes)")
                }
            )
        }),
        status: status(s.map(|v| v < 1.0)),
        note: s.filter(|v| *v >= 1.0).map(|_| {
            "The default search walks and stats every file to refresh the index before the \
             query (see the --no-refresh row for the query alone). Closing it: an mtime check \
             per date directory instead of per file."
                .to_owned()
        }),
    });
    let rp = &res["replay"];
    let (m, st, note) = if rp["measured"].as_bool() == Some(true) {
        let us = num(&rp["added_us_per_mocked_call"]);
        (
            fmt(us, 0) + " µs",
            status(us.map(|v| v < 200.0)),
            us.filter(|v| *v >= 200.0).map(|_| {
                "Where the time goes is not broken down by this benchmark: the mocked call \
                 crosses the cgroup connect redirection and the mock server (see the replay \
                 section for the per-request cost without calls). Closing it needs a profile \
                 of the mock server's answer path."
                    .to_owned()
            }),
        )
    } else {
        (
            format!(
                "not measured: {}",
                rp["reason"].as_str().unwrap_or("replay group not run")
            ),
            "not measured",
            None,
        )
    };
    out.push(Target {
        what: "replay adds < 200 µs per mocked call".into(),
        measured: m,
        status: st,
        note,
    });
    out
}

/// Why a throughput ratio misses its target, from the run's own numbers.
fn ratio_note(res: &Value, r: &Value, scheme: &str, ep: &str, quick: bool) -> String {
    let cpu = num(&r["cpu_per_request_ratio"]["median"]);
    let hooks = find(&res["kernel"]["rows"], |k| {
        k["scheme"] == scheme && k["endpoint"] == ep
    })
    .and_then(|k| num(&k["estimated_hook_share_pct"]));
    let agent = find(&res["overhead"]["cells"], |c| {
        c["scheme"] == scheme && c["endpoint"] == ep && c["config"] == "timetracer-agent"
    })
    .and_then(|c| num(&c["agent_cpu_pct"]["median"]));
    let pin = &res["meta"]["pinning"];
    let shared = pin["agent"] == pin["app"];
    let own = !shared && pin["agent"] != pin["load_generator"] && pin["agent"] != pin["upstream"];
    let mut n = format!(
        "With the agent the app's CPU per request is ×{} (this includes the BPF programs, \
         which run in the app's context",
        fmt(cpu, 2)
    );
    if let Some(h) = hooks {
        let _ = write!(
            n,
            "; the kernel table puts the hooks at ~{h:.1} % of the app's CPU"
        );
    }
    n.push(')');
    if let Some(a) = agent {
        let _ = write!(
            n,
            ", and the agent process used {a:.0} % of a core{}",
            if shared {
                " on the app's own CPU (the 2-CPU layout), so all of it came out of the app's \
                 throughput"
            } else if own {
                " on a CPU of its own"
            } else {
                " on the load generator's CPU, competing with it"
            }
        );
    }
    n.push_str(if shared {
        ". On this layout the agent's own CPU is charged to the app, so the agent's CPU per \
         request is the term to cut; most of it is creating one cassette file per request \
         (docs/performance.md, findings)"
    } else if own {
        ". The agent runs on a CPU of its own here, so the loss is what happens in the app's \
         context (hooks, uprobe traps, cache effects); closing the gap needs fewer hook hits \
         per request and cheaper programs"
    } else {
        ". Sharing the load generator's CPU, the agent's CPU per message slows the load \
         itself; closing the gap needs that cost flat per message (docs/performance.md, \
         findings) and cheaper cassette writing"
    });
    n.push_str(if scheme == "https" {
        ", and fewer uprobe hits per request (4 SSL calls × entry and return now)."
    } else {
        "."
    });
    if r["all_noisy"].as_bool().unwrap_or(false) || quick {
        n.push_str(" This run was noisy: repeat it on a quiet machine before concluding.");
    }
    n
}

/// The targets as JSON (stored in the results file).
pub(crate) fn targets_json(res: &Value) -> Value {
    Value::Array(
        targets(res)
            .into_iter()
            .map(|t| json!({"target": t.what, "measured": t.measured, "status": t.status.trim_matches('*'), "note": t.note}))
            .collect(),
    )
}

pub(crate) fn markdown(res: &Value) -> String {
    let mut md = String::new();
    let meta = &res["meta"];
    let quick = meta["quick"].as_bool().unwrap_or(false);
    let _ = writeln!(
        md,
        "# timetracer benchmark — {}\n",
        meta["timestamp"].as_str().unwrap_or("?")
    );
    if quick {
        let _ = writeln!(
            md,
            "**Quick run: {} round(s) × {} s windows, smaller sweeps, {} cassettes for the \
             search. Indicative only, not a measurement of record.** Run time {} s.\n",
            meta["rounds"], meta["secs"], meta["cassettes"], meta["total_secs"]
        );
    } else {
        let _ = writeln!(
            md,
            "Full run: {} rounds × {} s windows (warm-up {} s each), configurations interleaved \
             with the order rotated every round. Run time {} s.\n",
            meta["rounds"], meta["secs"], meta["warmup_secs"], meta["total_secs"]
        );
    }
    let cpus = &meta["pinning"];
    let _ = writeln!(
        md,
        "Machine: {} CPUs ({}), kernel {}, {}. Pinning (taskset): app CPU {}, upstream CPU {}, \
         load generator CPU {}, agent CPU {}. Commit `{}`. Load: `wrk -t1 -c8 --latency` on \
         loopback (closed loop); fixed rates: the bench's generator (8 connections).\n",
        cpus["cpus"],
        meta["cpu_model"].as_str().unwrap_or("?"),
        meta["kernel"].as_str().unwrap_or("?"),
        meta["python"].as_str().unwrap_or("?"),
        cpus["app"].as_str().unwrap_or("?"),
        cpus["upstream"].as_str().unwrap_or("?"),
        cpus["load_generator"].as_str().unwrap_or("?"),
        cpus["agent"].as_str().unwrap_or("?"),
        meta["commit"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "Noise: a window is **noisy** when processes outside the benchmark used more than {}% \
         of one CPU (or steal exceeded it); medians and ratios use clean rounds only, or every \
         round (marked ⚠) when none was clean.\n",
        meta["noise_threshold_pct"]
    );
    let _ = writeln!(
        md,
        "## Targets\n\n| target | measured | status |\n|---|---|---|"
    );
    let ts = targets(res);
    for t in &ts {
        let _ = writeln!(md, "| {} | {} | {} |", t.what, t.measured, t.status);
    }
    md.push('\n');
    overhead_md(res, &mut md);
    agent_md(res, &mut md);
    kernel_md(res, &mut md);
    tools_md(res, &mut md);
    replay_md(res, &mut md);
    let notes: Vec<String> = ts
        .iter()
        .filter_map(|t| t.note.as_ref().map(|n| format!("- **{}**: {n}", t.what)))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "## Why targets are missed, and what would close them\n");
        for n in notes {
            let _ = writeln!(md, "{n}");
        }
        md.push('\n');
    }
    for g in ["overhead", "agent", "kernel", "tools", "replay"] {
        if let Some(e) = res[g]["error"].as_str() {
            let _ = writeln!(
                md,
                "**{g} group failed**: `{}`\n",
                e.lines().next().unwrap_or("")
            );
        }
    }
    md
}

fn overhead_md(res: &Value, md: &mut String) {
    let o = &res["overhead"];
    if o["ratios"].is_null() {
        return;
    }
    let _ = writeln!(
        md,
        "## Overhead: ratios to untraced (same round), median (min–max)\n\n\
         | service | endpoint | recorder | req/s | p50 | p99 | app CPU/request | clean rounds |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for r in o["ratios"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {}/{}{} |",
            r["scheme"].as_str().unwrap_or(""),
            r["endpoint"].as_str().unwrap_or(""),
            r["config"].as_str().unwrap_or(""),
            spread(&r["rps_ratio"], 3),
            spread(&r["p50_ratio"], 2),
            spread(&r["p99_ratio"], 2),
            spread(&r["cpu_per_request_ratio"], 2),
            r["clean_rounds"],
            r["rounds"],
            if r["all_noisy"].as_bool().unwrap_or(false) {
                " ⚠"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        md,
        "\n### Absolute values, median (min–max)\n\n\
         | service | endpoint | config | req/s | p50 ms | p99 ms | app CPU µs/req | agent CPU % | cassettes/s | bytes/cassette | clean windows |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in o["cells"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            c["scheme"].as_str().unwrap_or(""),
            c["endpoint"].as_str().unwrap_or(""),
            c["config"].as_str().unwrap_or(""),
            spread(&c["rps"], 0),
            spread(&c["p50_ms"], 2),
            spread(&c["p99_ms"], 2),
            spread(&c["app_cpu_us_per_request"], 0),
            spread(&c["agent_cpu_pct"], 0),
            spread(&c["cassettes_per_second"], 0),
            spread(&c["bytes_per_cassette"], 0),
            c["clean_windows"],
            c["windows"],
        );
    }
    let _ = writeln!(
        md,
        "\n### Noise per window (CPU % of one core used outside the benchmark)\n\n\
         | round | service | endpoint | config | unrelated | steal | softirq | flag |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for w in o["windows"].as_array().into_iter().flatten() {
        let n = &w["noise"];
        let _ = writeln!(
            md,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} |",
            w["round"].as_u64().unwrap_or(0) + 1,
            w["scheme"].as_str().unwrap_or(""),
            w["endpoint"].as_str().unwrap_or(""),
            w["config"].as_str().unwrap_or(""),
            fmt(num(&n["unrelated_cpu_pct"]), 0),
            fmt(num(&n["steal_cpu_pct"]), 0),
            fmt(num(&n["softirq_cpu_pct"]), 0),
            if n["noisy"].as_bool().unwrap_or(false) {
                "noisy"
            } else {
                "clean"
            }
        );
    }
    md.push('\n');
}

fn agent_md(res: &Value, md: &mut String) {
    let a = &res["agent"];
    if a["fixed_rate"].is_null() {
        return;
    }
    let _ = writeln!(
        md,
        "## Agent cost\n\nFixed request rates on the FastAPI app (agent attached, recording):\n\n\
         | load | served req/s | captured msgs/s | agent CPU % | idle agent CPU % | CPU % per 10k msgs/s (marginal) | peak RSS MiB | of which BPF maps / heap MiB | cassettes/s | drops | p50 / p99 ms | unrelated CPU % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in a["fixed_rate"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| `{}` at {} req/s | {} | {} | {} | {} | {} ({}) | {} | {} / {} | {} | {} | {} / {} | {} |",
            r["path"].as_str().unwrap_or(""),
            fmt(num(&r["load"]["target_rps"]), 0),
            fmt(num(&r["load"]["achieved_rps"]), 0)
                + if r["load"]["rate_held"].as_bool() == Some(false) {
                    " ⚠ not held"
                } else {
                    ""
                },
            fmt(num(&r["messages_per_s"]), 0),
            fmt(num(&r["agent_cpu_pct"]), 1),
            fmt(num(&r["agent_idle_cpu_pct"]), 1),
            fmt(num(&r["agent_cpu_pct_per_10k_msgs"]), 2),
            fmt(num(&r["agent_cpu_pct_per_10k_msgs_marginal"]), 2),
            fmt(num(&r["agent_peak_rss_mib"]), 1),
            fmt(num(&r["agent_rss_bpf_maps_mib"]), 1),
            fmt(num(&r["agent_rss_anon_mib"]), 1),
            fmt(num(&r["cassettes_per_s"]), 0),
            r["agent"]["drops"],
            fmt(num(&r["load"]["p50_ms"]), 2),
            fmt(num(&r["load"]["p99_ms"]), 2),
            fmt(num(&r["noise"]["unrelated_cpu_pct"]), 0),
        );
    }
    let _ = writeln!(
        md,
        "\nDrop onset: the synthetic `/dep`-shaped server (`bench-server`, {} \
         messages per request) traced at increasing rates; `record` writes every cassette, \
         `capture-only` is `--sample-rate 0` (capture, reassembly, parsing, correlation; no \
         cassette):\n\n\
         | mode | target msgs/s | offered msgs/s | captured msgs/s | served % | agent CPU % | CPU % per 10k captured msgs/s | peak RSS MiB | cassettes/s | drops | unrelated CPU % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        a["synthetic_messages_per_request"]
    );
    for s in a["sweep"].as_array().into_iter().flatten() {
        for st in s["steps"].as_array().into_iter().flatten() {
            let target = num(&st["load"]["target_rps"])
                .zip(num(&a["synthetic_messages_per_request"]))
                .map(|(r, m)| r * m);
            let served = num(&st["load"]["achieved_rps"])
                .zip(num(&st["load"]["target_rps"]))
                .map(|(a, t)| a / t * 100.0);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s["mode"].as_str().unwrap_or(""),
                fmt(target, 0),
                fmt(num(&st["offered_messages_per_s"]), 0),
                fmt(num(&st["messages_per_s"]), 0),
                fmt(served, 0),
                fmt(num(&st["agent_cpu_pct"]), 1),
                fmt(num(&st["agent_cpu_pct_per_10k_msgs"]), 2),
                fmt(num(&st["agent_peak_rss_mib"]), 1),
                fmt(num(&st["cassettes_per_s"]), 0),
                st["agent"]["drops"],
                fmt(num(&st["noise"]["unrelated_cpu_pct"]), 0),
            );
        }
    }
    md.push('\n');
}

fn kernel_md(res: &Value, md: &mut String) {
    let k = &res["kernel"];
    let Some(rows) = k["rows"].as_array() else {
        return;
    };
    let _ = writeln!(
        md,
        "## Kernel hooks (`bpf_stats`)\n\nBPF time is measured; the hook machinery around \
         each run (~{} ns per tracepoint hit, ~{} ns per emulated uprobe hit) is added from \
         perf-anchors §2.3. Tracepoint programs run for every process's syscalls of the \
         hooked kinds and filter by pid: the rate of an idle window just before (other \
         processes on the machine) is subtracted, the load generator's own syscalls are \
         included. A row is flagged noisy when its window was, or when more than 20 % of its \
         runs had to be attributed to that background.\n\n\
         | service | endpoint | tracepoint hits/req | uprobe hits/req | BPF µs/req | est. hooks µs/req | app CPU µs/req | est. share of app CPU | background share | flag |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        k["machinery_ns"]["tracepoint"], k["machinery_ns"]["uprobe_emulated"]
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} % | {} % | {} |",
            r["scheme"].as_str().unwrap_or(""),
            r["endpoint"].as_str().unwrap_or(""),
            fmt(num(&r["tracepoint_hits_per_request"]), 1),
            fmt(num(&r["uprobe_hits_per_request"]), 1),
            fmt(num(&r["bpf_us_per_request"]), 2),
            fmt(num(&r["estimated_hook_us_per_request"]), 2),
            fmt(num(&r["app_cpu_us_per_request"]), 0),
            fmt(num(&r["estimated_hook_share_pct"]), 1),
            fmt(num(&r["background_share_pct"]), 0),
            if r["unreliable"].as_bool().unwrap_or(false) {
                "noisy"
            } else {
                "clean"
            },
        );
    }
    let _ = writeln!(
        md,
        "\nPer program (runs per request × ns per run):\n\n| program | type | {} |\n|---|---|{}",
        rows.iter()
            .map(|r| format!(
                "{} `{}`",
                r["scheme"].as_str().unwrap_or(""),
                r["endpoint"].as_str().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(rows.len())
    );
    let mut names: Vec<(String, String)> = Vec::new();
    for r in rows {
        for p in r["programs"].as_array().into_iter().flatten() {
            let n = (
                p["name"].as_str().unwrap_or("").to_owned(),
                p["type"].as_str().unwrap_or("").to_owned(),
            );
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for (name, ty) in names {
        let cells: Vec<String> = rows
            .iter()
            .map(|r| {
                find(&r["programs"], |p| p["name"] == name.as_str()).map_or("–".into(), |p| {
                    format!(
                        "{} × {} ns",
                        fmt(num(&p["runs_per_request"]), 2),
                        fmt(num(&p["ns_per_run"]), 0)
                    )
                })
            })
            .collect();
        let _ = writeln!(md, "| `{name}` | {ty} | {} |", cells.join(" | "));
    }
    md.push('\n');
}

fn tools_md(res: &Value, md: &mut String) {
    let t = &res["tools"];
    if t["search"].is_null() && t["storage"].is_null() {
        return;
    }
    let _ = writeln!(
        md,
        "## Tools\n\nStorage, the same {} sequential requests per endpoint recorded by each tool \
         (`disk` = allocated blocks, what `du` counts):\n\n\
         | endpoint | tool | bytes/request | disk bytes/request | index bytes/request |\n|---|---|---|---|---|",
        t["storage"]["rows"][0]["usage"]["requests"]
    );
    for r in t["storage"]["rows"].as_array().into_iter().flatten() {
        let u = &r["usage"];
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            r["endpoint"].as_str().unwrap_or(""),
            r["tool"].as_str().unwrap_or(""),
            fmt(num(&u["bytes_per_request"]), 0),
            fmt(num(&u["disk_bytes_per_request"]), 0),
            if r["tool"] == "timetracer-agent" {
                fmt(
                    num(&t["storage"]["agent_index"]["index_bytes_per_request"]),
                    0,
                )
            } else {
                "(none)".to_owned()
            },
        );
    }
    let s = &t["search"];
    if !s.is_null() {
        let _ = writeln!(
            md,
            "\n`timetracer search` over {} generated cassettes ({} matches, `{}`), wall time \
             including process start, page cache warm:\n\n| operation | seconds |\n|---|---|\n\
             | full rescan (no index: read and parse every file) | {} |\n\
             | indexed search (refresh: walk + stat, then query) | {} |\n\
             | indexed search `--no-refresh` (query only) | {} |\n\
             | glob search `--endpoint '/users/1*'` | {} |\n\
             | `timetracer index` (nothing new) | {} |\n",
            s["cassettes"],
            s["matches"],
            s["query"].as_str().unwrap_or(""),
            fmt(num(&s["full_rescan_secs"]), 2),
            spread(&s["indexed_search_secs"], 3),
            spread(&s["indexed_search_no_refresh_secs"], 3),
            fmt(num(&s["glob_search_secs"]), 3),
            fmt(num(&s["index_update_secs"]), 3),
        );
    }
    // Cassettes written per second, from the other groups.
    let mut lines = Vec::new();
    for c in res["overhead"]["cells"].as_array().into_iter().flatten() {
        if c["config"] != "untraced" && c["scheme"] == "http" {
            lines.push(format!(
                "{} at the closed-loop maximum of http `{}`: {}",
                c["config"].as_str().unwrap_or(""),
                c["endpoint"].as_str().unwrap_or(""),
                spread(&c["cassettes_per_second"], 0)
            ));
        }
    }
    if let Some(s) = find(&res["agent"]["sweep"], |s| s["mode"] == "record") {
        let best = s["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|st| st["agent"]["drops"].as_u64() == Some(0))
            .filter_map(|st| num(&st["cassettes_per_s"]))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        lines.push(format!(
            "timetracer-agent, synthetic server sweep, highest rate without drops: {}",
            fmt(best, 0)
        ));
    }
    if !lines.is_empty() {
        let _ = writeln!(md, "Cassettes written per second:\n");
        for l in lines {
            let _ = writeln!(md, "- {l}");
        }
        md.push('\n');
    }
}

fn replay_md(res: &Value, md: &mut String) {
    let r = &res["replay"];
    if r.is_null() {
        return;
    }
    let _ = writeln!(md, "## Replay\n");
    if r["measured"].as_bool() == Some(true) {
        let _ = writeln!(
            md,
            "| | live p50 ms (paced like replay) | replayed p50 ms |\n|---|---|---|\n| `/plain` (no call) | {} | {} |\n\
             | `/dep` (one call) | {} | {} |\n\n\
             Replay adds {} µs to every request and **{} µs per mocked call** (over 5 blocks \
             of rounds: {} to {} µs; against a back-to-back baseline: {} µs); gap between \
             requests {} ms; {} requests replayed ({}). Method: {}.\n",
            fmt(num(&r["live_plain_p50_ms"]), 3),
            fmt(num(&r["replay_plain_p50_ms"]), 3),
            fmt(num(&r["live_p50_ms"]), 3),
            fmt(num(&r["replay_p50_ms"]), 3),
            fmt(num(&r["added_us_per_request"]), 0),
            fmt(num(&r["added_us_per_mocked_call"]), 0),
            fmt(num(&r["added_us_per_mocked_call_blocks"]["min"]), 0),
            fmt(num(&r["added_us_per_mocked_call_blocks"]["max"]), 0),
            fmt(num(&r["added_us_per_mocked_call_back_to_back"]), 0),
            fmt(num(&r["replay_gap_ms"]), 2),
            r["requests"],
            r["summary"].as_str().unwrap_or("?"),
            r["note"].as_str().unwrap_or("")
        );
    } else {
        let _ = writeln!(
            md,
            "Not measured: {}.\n",
            r["reason"].as_str().unwrap_or("?")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_results_render() {
        let res = json!({"meta": {"quick": true, "timestamp": "t"}, "replay": {"measured": false, "reason": "replay not available in this build"}});
        let md = markdown(&res);
        assert!(md.contains("| traced/untraced req/s, http `/dep` ≥ 0.97 | – | not measured |"));
        assert!(md.contains("not measured: replay not available in this build"));
        let t = targets_json(&res);
        assert_eq!(t.as_array().unwrap().len(), 9);
    }

    #[test]
    fn ratio_targets() {
        let res = json!({
            "meta": {"quick": false},
            "overhead": {"ratios": [
                {"scheme": "http", "endpoint": "/dep", "config": "timetracer-agent",
                 "rps_ratio": {"median": 0.99, "min": 0.98, "max": 1.0, "n": 3}, "all_noisy": false},
                {"scheme": "http", "endpoint": "/plain", "config": "timetracer-agent",
                 "rps_ratio": {"median": 0.90, "min": 0.88, "max": 0.93, "n": 3},
                 "cpu_per_request_ratio": {"median": 1.1}, "all_noisy": false},
            ]},
        });
        let t = targets(&res);
        assert_eq!(t[0].status, "met");
        assert_eq!(t[0].measured, "0.990 (0.980–1.000)");
        assert_eq!(t[1].status, "**missed**");
        assert!(t[1].note.as_deref().unwrap().contains("×1.10"));
    }
}
