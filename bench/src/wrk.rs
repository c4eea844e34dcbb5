//! Closed-loop load with `wrk --latency` (one thread, a fixed number of keep-alive connections).
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::sys::{pinned, round};

/// One `wrk` run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct WrkResult {
    pub(crate) requests: u64,
    pub(crate) secs: f64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Socket errors plus non-2xx/3xx responses.
    pub(crate) errors: u64,
}

impl WrkResult {
    pub(crate) fn to_json(self) -> Value {
        json!({
            "requests": self.requests,
            "secs": round(self.secs, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
        })
    }
}

/// Connections wrk keeps open (as in the Python tool's study and perf-anchors).
pub(crate) const CONNS: u32 = 8;

/// `taskset -c CPUS wrk -t1 -cCONNS -dSECS --latency URL`.
pub(crate) fn run(cpus: &str, url: &str, secs: f64) -> Result<WrkResult> {
    let mut cmd = pinned(cpus, "wrk");
    cmd.args(["-t1", &format!("-c{CONNS}")])
        // wrk takes whole seconds.
        .arg(format!("-d{}s", secs.round().max(1.0) as u64))
        .args(["--timeout", "10s", "--latency", url]);
    wrk_output(&mut cmd)
}

fn wrk_output(cmd: &mut Command) -> Result<WrkResult> {
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`, `1.00m`) in milliseconds.
fn parse_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

pub(crate) fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have = (false, false, false);
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["50%", v] => {
                r.p50_ms = parse_ms(v).context("50%")?;
                have.0 = true;
            }
            ["99%", v] => {
                r.p99_ms = parse_ms(v).context("99%")?;
                have.1 = true;
            }
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().context("requests")?;
                r.secs = parse_ms(secs.trim_end_matches(',')).context("duration")? / 1000.0;
                have.2 = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        r.errors += n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }
    if !(have.0 && have.1 && have.2) {
        bail!("missing latency distribution or request count");
    }
    r.rps = r.requests as f64 / r.secs.max(1e-9);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 5s test @ http://127.0.0.1:8000/plain
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  300.00us   8.00ms   90.00%
    Req/Sec     6.50k   200.00     7.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.30ms
     90%    1.60ms
     99%    2.03ms
  32500 requests in 5.00s, 4.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6500.00
Transfer/sec:      0.90MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 32500);
        assert!((r.secs - 5.0).abs() < 1e-9);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 2.03).abs() < 1e-9);
        assert_eq!(r.errors, 7);
        assert!((r.rps - 6500.0).abs() < 1e-6);
        assert!(parse("garbage").is_err());
    }
}
