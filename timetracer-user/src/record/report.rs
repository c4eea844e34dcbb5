//! What a recording shows of its counters: the status line, the live view's stats, each
//! cassette's `stats.drops`, and the exit summary. Each iterates [`Counter::ALL`] by
//! [`Group`], so a new counter is shown without touching this file.
use std::path::PathBuf;
use std::time::Duration;

use crate::analysis::format::fmt_bytes;
use crate::live::LiveStats;
use crate::telemetry::{Counter, Group, Snapshot};

/// The kernel's drop counters summed over CPUs: (reason, events, bytes).
pub type KernelDrops = Vec<(&'static str, u64, u64)>;

/// Drops by reason: every kernel reason (events) and every agent [`Group::Drop`] counter, zero
/// or not. This is each cassette's `stats.drops`.
#[must_use]
pub fn drops(counters: &Snapshot, kernel: &KernelDrops) -> Vec<(String, u64)> {
    kernel
        .iter()
        .map(|(n, ev, _)| ((*n).to_owned(), *ev))
        .chain(
            counters
                .group(Group::Drop)
                .map(|(c, n)| (c.name().to_owned(), n)),
        )
        .collect()
}

/// The one-line status shown on a terminal while recording.
#[must_use]
pub fn status_line(counters: &Snapshot, kernel: &KernelDrops, open_connections: usize) -> String {
    let mut s = String::from("timetracer:");
    for (c, n) in counters.group(Group::Total) {
        s.push_str(&format!(" {} |", total(c, n)));
    }
    let dropped: u64 = drops(counters, kernel).iter().map(|(_, n)| n).sum();
    s.push_str(&format!(" {open_connections} conns | drops {dropped}"));
    let lost = counters.get(Counter::WriteErrors);
    if lost > 0 {
        s.push_str(&format!(
            " | lost {lost} cassettes ({} no space, {} other)",
            counters.get(Counter::WriteErrorsNoSpace),
            counters.get(Counter::WriteErrorsOther)
        ));
    }
    if counters.group(Group::Upload).any(|(_, n)| n > 0) {
        let g = |c| counters.get(c);
        s.push_str(&format!(
            " | s3 {} up, {} waiting ({}), {} dropped",
            g(Counter::S3Uploaded),
            g(Counter::S3BacklogFiles),
            fmt_bytes(g(Counter::S3BacklogBytes)),
            g(Counter::S3Dropped),
        ));
        if g(Counter::S3Errors) > 0 {
            s.push_str(&format!(", {} failed attempts", g(Counter::S3Errors)));
        }
    }
    s
}

/// A total as the status line shows it (`12 requests`, `1.2 MiB`).
fn total(c: Counter, n: u64) -> String {
    match c {
        Counter::Bytes => fmt_bytes(n),
        _ => format!("{n} {}", c.name()),
    }
}

/// The live view's periodic update.
#[must_use]
pub fn live_stats(
    target: &str,
    uptime: Duration,
    counters: &Snapshot,
    kernel: &KernelDrops,
) -> LiveStats {
    LiveStats {
        target: target.to_owned(),
        uptime_ms: uptime.as_millis() as u64,
        requests: counters.get(Counter::Requests),
        events: counters.get(Counter::Events),
        bytes: counters.get(Counter::Bytes),
        cassettes: counters.get(Counter::Cassettes),
        drops: drops(counters, kernel)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect(),
        skipped_updates: counters.group(Group::Viewer).map(|(_, n)| n).sum(),
    }
}

/// What a finished recording reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub elapsed: Duration,
    /// Where cassettes went.
    pub out: PathBuf,
    pub counters: Snapshot,
    pub kernel_drops: KernelDrops,
    /// CPython probe hits by name (kernel side).
    pub python_probes: Vec<(&'static str, u64)>,
    /// CPython attribution engine: tasks, roots, context copies, stamps.
    pub python_engine: [u64; 4],
    /// CPython attribution engine: how often each rule decided a call.
    pub python_rules: Vec<(String, u64)>,
}

impl Summary {
    /// The lines printed when the agent stops (the benchmark, bench/src/rig.rs, parses them: keep
    /// their shape).
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let c = &self.counters;
        let mut out = vec![format!(
            "timetracer-agent: done after {:.1}s: {} requests seen, {} cassettes written to {}, {} events, {} payload",
            self.elapsed.as_secs_f64(),
            c.get(Counter::Requests),
            c.get(Counter::Cassettes),
            self.out.display(),
            c.get(Counter::Events),
            fmt_bytes(c.get(Counter::Bytes)),
        )];
        let lost: Vec<String> = self
            .kernel_drops
            .iter()
            .filter(|(_, ev, by)| *ev > 0 || *by > 0)
            .map(|(n, ev, by)| format!("{n}={ev} ({})", fmt_bytes(*by)))
            .collect();
        out.push(format!(
            "timetracer-agent: kernel drops: {}",
            if lost.is_empty() {
                "none".to_owned()
            } else {
                lost.join(", ")
            }
        ));
        let py: Vec<String> = self
            .python_probes
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !py.is_empty() {
            let [tasks, roots, copies, stamps] = self.python_engine;
            out.push(format!(
                "timetracer-agent: python probes: {}, tasks={tasks} roots={roots} copies={copies} stamps={stamps}",
                py.join(", "),
            ));
        }
        if !self.python_rules.is_empty() {
            let rules: Vec<String> = self
                .python_rules
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            out.push(format!(
                "timetracer-agent: python rules: {}",
                rules.join(", ")
            ));
        }
        let lost = c.get(Counter::WriteErrors);
        if lost > 0 {
            out.push(format!(
                "timetracer-agent: lost {lost} cassettes that could not be written to {} (no space left: {}, other errors: {})",
                self.out.display(),
                c.get(Counter::WriteErrorsNoSpace),
                c.get(Counter::WriteErrorsOther),
            ));
        }
        // Uploads: every counter, zeros included (`s3_dropped=0` is the point), once S3 did
        // anything.
        if c.group(Group::Upload).any(|(_, n)| n > 0) {
            let s3: Vec<String> = c
                .group(Group::Upload)
                .map(|(k, n)| format!("{}={n}", k.name()))
                .collect();
            out.push(format!("timetracer-agent: s3: {}", s3.join(", ")));
        }
        let agent: Vec<String> = Counter::ALL
            .iter()
            .filter(|k| k.group() != Group::Total && k.group() != Group::Upload)
            .map(|&k| (k, c.get(k)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect();
        if !agent.is_empty() {
            out.push(format!(
                "timetracer-agent: agent counters: {}",
                agent.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-second recording into `/c` with these counters.
    fn summary_of(counters: Snapshot, kernel_drops: KernelDrops) -> Summary {
        Summary {
            elapsed: Duration::from_secs(1),
            out: PathBuf::from("/c"),
            counters,
            kernel_drops,
            python_probes: Vec::new(),
            python_engine: [0; 4],
            python_rules: Vec::new(),
        }
    }

    fn everything(counters: Snapshot) -> String {
        let kernel: KernelDrops = vec![("ring_full", 0, 0)];
        let summary = summary_of(counters, kernel.clone());
        format!(
            "{}\n{:?}\n{:?}\n{}",
            status_line(&counters, &kernel, 3),
            live_stats("pid 1", Duration::from_secs(1), &counters, &kernel),
            drops(&counters, &kernel),
            summary.lines().join("\n"),
        )
    }

    /// Every counter changes what the agent shows: a counter that is incremented but shown
    /// nowhere (as `live_skipped` was outside the live view) fails here.
    #[test]
    fn every_counter_is_shown() {
        let zero = everything(Snapshot::default());
        let hidden: Vec<&str> = Counter::ALL
            .iter()
            .filter(|&&c| {
                let mut s = Snapshot::default();
                s.set(c, 7_654_321);
                everything(s) == zero
            })
            .map(|c| c.name())
            .collect();
        assert!(hidden.is_empty(), "never shown: {hidden:?}");
    }

    /// Every non-total counter appears by name in the exit summary when it is not zero.
    #[test]
    fn summary_names_every_nonzero_counter() {
        let mut s = Snapshot::default();
        for (i, c) in Counter::ALL.iter().enumerate() {
            s.set(*c, i as u64 + 1);
        }
        let text = everything(s);
        for c in Counter::ALL {
            if c.group() != Group::Total {
                assert!(
                    text.contains(&format!("{}={}", c.name(), s.get(*c))),
                    "{c:?}"
                );
            }
        }
    }

    /// The S3 part of the status line and its summary line, which shows zeros too.
    #[test]
    fn s3_status_and_summary() {
        let mut s = Snapshot::default();
        s.set(Counter::S3Uploaded, 40);
        s.set(Counter::S3Errors, 3);
        s.set(Counter::S3BacklogFiles, 2);
        s.set(Counter::S3BacklogBytes, 2048);
        s.set(Counter::S3BacklogPeakFiles, 25);
        let kernel: KernelDrops = Vec::new();
        assert!(
            status_line(&s, &kernel, 0)
                .ends_with("| s3 40 up, 2 waiting (2.0 KiB), 0 dropped, 3 failed attempts"),
            "{}",
            status_line(&s, &kernel, 0)
        );
        let summary = summary_of(s, kernel);
        let lines = summary.lines();
        assert_eq!(
            lines[2],
            "timetracer-agent: s3: s3_uploaded=40, s3_errors=3, s3_backlog_files=2, \
             s3_backlog_bytes=2048, s3_backlog_peak_files=25, s3_backlog_peak_bytes=0, \
             s3_dropped=0, s3_recovered=0"
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
    }

    /// The shapes the benchmark (bench/) and the tests read.
    #[test]
    fn summary_and_status_shapes() {
        let mut s = Snapshot::default();
        s.set(Counter::Requests, 120);
        s.set(Counter::Cassettes, 118);
        s.set(Counter::Events, 4567);
        s.set(Counter::Bytes, 1024 * 1024 * 12 / 10);
        s.set(Counter::UndecodableRecords, 2);
        s.set(Counter::BackgroundCalls, 3);
        let kernel: KernelDrops = vec![("ring_full", 12, 3482), ("cap_reached", 0, 0)];
        let summary = Summary {
            elapsed: Duration::from_millis(3200),
            out: PathBuf::from("/tmp/a b"),
            counters: s,
            kernel_drops: kernel.clone(),
            python_probes: vec![("task", 0)],
            python_engine: [0; 4],
            python_rules: Vec::new(),
        };
        assert_eq!(
            summary.lines(),
            [
                "timetracer-agent: done after 3.2s: 120 requests seen, 118 cassettes written to /tmp/a b, 4567 events, 1.2 MiB payload",
                "timetracer-agent: kernel drops: ring_full=12 (3.4 KiB)",
                "timetracer-agent: agent counters: undecodable_records=2, background_calls=3",
            ]
        );
        assert_eq!(
            status_line(&s, &kernel, 4),
            "timetracer: 120 requests | 118 cassettes | 4567 events | 1.2 MiB | 4 conns | drops 14"
        );
        assert_eq!(
            drops(&s, &kernel),
            [
                ("ring_full".to_owned(), 12),
                ("cap_reached".to_owned(), 0),
                ("undecodable_records".to_owned(), 2),
                ("data_unknown_conn".to_owned(), 0),
            ]
        );
    }

    /// Lost cassettes: in the status line and a summary line of their own, by reason.
    #[test]
    fn lost_cassettes_are_shown_by_reason() {
        let mut s = Snapshot::default();
        s.set(Counter::Requests, 50);
        s.set(Counter::Cassettes, 20);
        s.set(Counter::WriteErrors, 30);
        s.set(Counter::WriteErrorsNoSpace, 29);
        s.set(Counter::WriteErrorsOther, 1);
        let kernel: KernelDrops = Vec::new();
        assert!(
            status_line(&s, &kernel, 0).ends_with("| lost 30 cassettes (29 no space, 1 other)"),
            "{}",
            status_line(&s, &kernel, 0)
        );
        let summary = summary_of(s, kernel);
        assert_eq!(
            summary.lines()[2],
            "timetracer-agent: lost 30 cassettes that could not be written to /c (no space left: 29, other errors: 1)"
        );
    }
}
