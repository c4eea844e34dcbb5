//! The replay verdict: per request, what changed; overall, the exit code. Printed as text
//! and as JSON (`--json`, the replay service, the dashboard's Replay button).
use std::fmt::Write as _;

use serde::Serialize;

use super::ledger::{Diff, Miss, RuleAnswer};

/// Exit status: same.
pub const EXIT_SAME: u8 = 0;
/// Exit status: a response differs (dependencies all matched).
pub const EXIT_DIFFERS: u8 = 1;
/// Exit status: a dependency call did not match, or a regression (the app now fails).
pub const EXIT_MISMATCH: u8 = 2;
/// Exit status: the replay could not run (setup, the app did not start).
pub const EXIT_ERROR: u8 = 3;

/// Outcome of one replayed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Same,
    Differs,
    DependencyMismatch,
    Error,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Same => "same",
            Outcome::Differs => "differs",
            Outcome::DependencyMismatch => "dependency mismatch",
            Outcome::Error => "error",
        }
    }
}

/// Dependency calls of one request.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DepCounts {
    pub matched: u32,
    /// Of `matched`: recorded with redacted values, matched whatever the app sent there.
    pub redacted: u32,
    pub missed: u32,
    pub unused: u32,
}

/// One replayed request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestVerdict {
    pub cassette: String,
    pub method: String,
    pub target: String,
    pub outcome: Outcome,
    /// The app's answer became a failure (5xx, no response) where it succeeded when recorded.
    pub regression: bool,
    pub expected_status: i64,
    pub actual_status: Option<u16>,
    pub differences: Vec<Diff>,
    /// The response body is byte-for-byte the recorded one.
    pub identical_body: bool,
    pub dependencies: DepCounts,
    /// Calls the app made that no recorded call answered, and recorded calls it did not make.
    pub misses: Vec<Miss>,
    /// Sending the request failed (connection refused, reset, timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not sent at all: the app had crashed more often than replay restarts it (a JUnit
    /// `skipped` test case).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_sent: bool,
    /// The recording (`session.recording`) the cassette belongs to, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// When it was sent, ms after the replay's first request was (absent when not sent):
    /// with `duration_ms`, the gap replay leaves between requests (`cargo xtask bench` paces
    /// its live baseline by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<f64>,
    pub duration_ms: f64,
}

/// The app exited (or stopped listening) during replay: a finding, not a cascade.
#[derive(Clone, Debug, Serialize)]
pub struct Crash {
    /// The request after which it happened (`GET /x` and its cassette), or `startup`.
    pub after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cassette: Option<String>,
    /// `exit status: 3`, `signal: 9 (SIGKILL)`, or `stopped listening`.
    pub status: String,
    /// The last lines the app wrote (its log), when replay kept it.
    pub output_tail: String,
    /// The app was started again to judge the remaining requests.
    pub restarted: bool,
}

/// A connect to a destination that is neither recorded nor live (refused with `EPERM`).
#[derive(Clone, Debug, Serialize)]
pub struct Blocked {
    pub destination: String,
    pub connects: u64,
}

/// The whole verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// `same`, `differs`, `dependency-mismatch` or `error`.
    pub verdict: Outcome,
    pub exit_code: u8,
    pub summary: String,
    pub requests: Vec<RequestVerdict>,
    /// Dependency calls made before the first request was sent (app startup) that no
    /// recorded call answered.
    pub startup_misses: Vec<Miss>,
    pub blocked: Vec<Blocked>,
    /// Times the app exited or stopped listening during replay (issue #26): each names the
    /// request after which it happened, the exit status and the app's last output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crashes: Vec<Crash>,
    /// Calls no recorded call held that a mock answered by a protocol rule (issue #26:
    /// connect-time statements of a recording made with `attach`; docs/replay.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answered_by_rule: Vec<RuleAnswer>,
    pub notes: Vec<String>,
    /// The text verdict, as printed.
    pub report: String,
}

impl Verdict {
    /// Computes the overall outcome, exit code, summary and text report.
    #[must_use]
    pub fn new(
        requests: Vec<RequestVerdict>,
        startup_misses: Vec<Miss>,
        blocked: Vec<Blocked>,
        notes: Vec<String>,
    ) -> Self {
        let mut exit = EXIT_SAME;
        for r in &requests {
            let e = match r.outcome {
                Outcome::Same => EXIT_SAME,
                Outcome::Differs if !r.regression => EXIT_DIFFERS,
                _ => EXIT_MISMATCH,
            };
            exit = exit.max(e);
        }
        if !startup_misses.is_empty() || !blocked.is_empty() {
            exit = exit.max(EXIT_MISMATCH);
        }
        let verdict = match exit {
            EXIT_SAME => Outcome::Same,
            EXIT_DIFFERS => Outcome::Differs,
            _ if requests.iter().any(|r| r.outcome == Outcome::Error) => Outcome::Error,
            _ => Outcome::DependencyMismatch,
        };
        let count = |o: Outcome| requests.iter().filter(|r| r.outcome == o).count();
        let mut parts = vec![format!("{} same", count(Outcome::Same))];
        for (o, n) in [
            (Outcome::Differs, count(Outcome::Differs)),
            (
                Outcome::DependencyMismatch,
                count(Outcome::DependencyMismatch),
            ),
            (Outcome::Error, count(Outcome::Error)),
        ] {
            if n > 0 {
                parts.push(format!("{n} {}", o.label()));
            }
        }
        let summary = format!(
            "{} request{} replayed: {}",
            requests.len(),
            if requests.len() == 1 { "" } else { "s" },
            parts.join(", ")
        );
        let mut v = Self {
            verdict,
            exit_code: exit,
            summary,
            requests,
            startup_misses,
            blocked,
            crashes: Vec::new(),
            answered_by_rule: Vec::new(),
            notes,
            report: String::new(),
        };
        v.report = v.render();
        v
    }

    /// Adds the app's crashes: the verdict is at least a mismatch, and they are reported at
    /// the top.
    #[must_use]
    pub fn with_crashes(mut self, crashes: Vec<Crash>) -> Self {
        if crashes.is_empty() {
            return self;
        }
        self.crashes = crashes;
        self.exit_code = self.exit_code.max(EXIT_MISMATCH);
        if self.verdict == Outcome::Same || self.verdict == Outcome::Differs {
            self.verdict = Outcome::Error;
        }
        self.summary = format!(
            "{}; the app crashed {} time{}",
            self.summary,
            self.crashes.len(),
            if self.crashes.len() == 1 { "" } else { "s" }
        );
        self.report = self.render();
        self
    }

    /// Adds the calls answered by rule (listed, they do not change the outcome).
    #[must_use]
    pub fn with_rules(mut self, rules: Vec<RuleAnswer>) -> Self {
        self.answered_by_rule = rules;
        self.report = self.render();
        self
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "timetracer replay — {} (exit {})",
            self.summary, self.exit_code
        );
        for c in &self.crashes {
            s.push('\n');
            render_crash(&mut s, c);
        }
        for r in &self.requests {
            s.push('\n');
            render_request(&mut s, r);
        }
        if !self.startup_misses.is_empty() {
            let _ = writeln!(s, "\nbefore the first request (app startup):");
            for m in &self.startup_misses {
                render_miss(&mut s, m);
            }
            let _ = writeln!(
                s,
                "    the recording does not hold what the app does at startup: record it with \
                 `timetracer-agent record -- CMD` (which sees the app start) rather than `attach`"
            );
        }
        if !self.answered_by_rule.is_empty() {
            let _ = writeln!(
                s,
                "\nanswered by rule (not in the recording; docs/replay.md \"Answered by rule\"):"
            );
            for r in &self.answered_by_rule {
                let _ = writeln!(
                    s,
                    "    · {} {}: {} → {}{}",
                    r.protocol,
                    r.destination,
                    r.call,
                    r.rule,
                    if r.count > 1 {
                        format!(" (×{})", r.count)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if !self.blocked.is_empty() {
            let _ = writeln!(
                s,
                "\nconnections refused (destination not in the recording; add --live HOST:PORT to let them through):"
            );
            for b in &self.blocked {
                let _ = writeln!(
                    s,
                    "    {} ({} connect{})",
                    b.destination,
                    b.connects,
                    if b.connects == 1 { "" } else { "s" }
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for n in &self.notes {
                let _ = writeln!(s, "  - {n}");
            }
        }
        s
    }
}

/// The lines of one crash in the text verdict (also a JUnit failure's text).
pub(crate) fn render_crash(s: &mut String, c: &Crash) {
    let _ = writeln!(
        s,
        "✗ THE APP CRASHED after {} ({}){}",
        c.after,
        c.status,
        if c.restarted {
            "; restarted to judge the remaining requests"
        } else {
            ""
        }
    );
    if let Some(p) = &c.cassette {
        let _ = writeln!(s, "    {p}");
    }
    for l in c.output_tail.lines() {
        let _ = writeln!(s, "    | {l}");
    }
}

/// The lines of one request in the text verdict (also a JUnit test case's failure text).
pub(crate) fn render_request(s: &mut String, r: &RequestVerdict) {
    let mark = match r.outcome {
        Outcome::Same => "✓",
        Outcome::Differs => "~",
        _ => "✗",
    };
    let status = r
        .actual_status
        .map_or_else(|| "---".to_owned(), |s| s.to_string());
    let _ = writeln!(
        s,
        "{mark} {} {}  → {status} (recorded {})  {}{}",
        r.method,
        r.target,
        r.expected_status,
        r.outcome.label(),
        if r.regression { ", regression" } else { "" }
    );
    let _ = writeln!(
        s,
        "    {}  ·  dependencies: {} matched{}, {} missed, {} not made  ·  {:.1} ms",
        r.cassette,
        r.dependencies.matched,
        if r.dependencies.redacted > 0 {
            // Of the matched: recorded with redacted values, any live value accepted.
            format!(", of which {} matched (redacted)", r.dependencies.redacted)
        } else {
            String::new()
        },
        r.dependencies.missed,
        r.dependencies.unused,
        r.duration_ms
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "    error: {e}");
    }
    for d in &r.differences {
        let _ = writeln!(s, "    response {}: {} → {}", d.field, d.expected, d.actual);
    }
    for m in &r.misses {
        render_miss(s, m);
    }
}

pub(crate) fn render_miss(s: &mut String, m: &Miss) {
    let _ = writeln!(s, "    ✗ {} {}: {}", m.protocol, m.destination, m.call);
    if let Some(e) = &m.expected {
        let _ = writeln!(s, "        expected  {e}");
    }
    if let Some(f) = &m.field {
        let _ = writeln!(
            s,
            "        differs   {f}: {} → {}",
            m.expected_value.as_deref().unwrap_or("?"),
            m.actual_value.as_deref().unwrap_or("?")
        );
    }
    if let Some(r) = &m.reason {
        let _ = writeln!(s, "        {r}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn same(target: &str) -> RequestVerdict {
        RequestVerdict {
            cassette: format!("c/{target}.json"),
            method: "GET".into(),
            target: target.into(),
            outcome: Outcome::Same,
            regression: false,
            expected_status: 200,
            actual_status: Some(200),
            differences: Vec::new(),
            identical_body: true,
            dependencies: DepCounts::default(),
            misses: Vec::new(),
            error: None,
            not_sent: false,
            recording: None,
            sent_at_ms: Some(0.0),
            duration_ms: 1.0,
        }
    }

    /// Issue #26 item 3: a crash fails the verdict and is reported first, with the request,
    /// the status and the app's last output.
    #[test]
    fn crashes_fail_the_verdict_and_come_first() {
        let v = Verdict::new(vec![same("/a"), same("/b")], vec![], vec![], vec![]);
        assert_eq!(v.exit_code, EXIT_SAME);
        let v = v.with_crashes(vec![Crash {
            after: "GET /a".into(),
            cassette: Some("c/a.json".into()),
            status: "exit status: 3".into(),
            output_tail: "fatal: boom".into(),
            restarted: true,
        }]);
        assert_eq!(v.exit_code, EXIT_MISMATCH);
        assert_eq!(v.verdict, Outcome::Error);
        assert!(
            v.summary.ends_with("the app crashed 1 time"),
            "{}",
            v.summary
        );
        let lines: Vec<&str> = v.report.lines().collect();
        assert!(
            lines[2].starts_with("✗ THE APP CRASHED after GET /a (exit status: 3); restarted"),
            "{}",
            v.report
        );
        assert!(v.report.contains("    | fatal: boom"), "{}", v.report);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["crashes"][0]["status"], "exit status: 3");
        // No crash: no `crashes` key.
        let v = Verdict::new(vec![same("/a")], vec![], vec![], vec![]).with_crashes(vec![]);
        assert!(serde_json::to_value(&v).unwrap().get("crashes").is_none());
    }
}
