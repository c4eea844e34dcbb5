//! A fixed-rate HTTP/1.1 load generator and a synthetic HTTP server.
//!
//! `wrk` only runs closed loops (as fast as the server answers) and Debian has no `wrk2`, so the
//! agent-cost runs, which need a *fixed* request rate, use this generator: `conns` keep-alive
//! connections, one thread each, each sending on its own schedule (request `k` of connection `i`
//! is due at `start + (k + i/conns) · conns/rate`). Latency is measured from the due time, not
//! from the send, so a server that falls behind shows it (no coordinated omission, as wrk2).
//!
//! The synthetic server (the `bench-server` binary, [`serve`]) is the traced process of the
//! drop-onset sweep: one CPython worker cannot produce more than ~20k messages/s on a 2-vCPU
//! VM, this one can. It has the syscall shape of the FastAPI `/dep` endpoint (perf-anchors §2.4):
//! per request it reads the request, writes one request to its upstream and reads the answer,
//! then writes the response head and body separately: 5 captured messages per request.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::sys::round;

/// Result of a fixed-rate run.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateResult {
    pub(crate) target_rps: f64,
    /// Planned duration.
    pub(crate) planned_secs: f64,
    /// From the first due time to the last response: longer than planned when the server (or
    /// the generator) could not keep up.
    pub(crate) secs: f64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl RateResult {
    pub(crate) fn achieved_rps(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    /// The rate was held: served at ≥ 95 % of the target and the median request not late by
    /// more than 100 ms.
    pub(crate) fn held(&self) -> bool {
        self.achieved_rps() >= 0.95 * self.target_rps && self.p50_ms < 100.0
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "target_rps": round(self.target_rps, 1),
            "achieved_rps": round(self.achieved_rps(), 1),
            "planned_secs": round(self.planned_secs, 3),
            "secs": round(self.secs, 3),
            "rate_held": self.held(),
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
        })
    }
}

/// Pins the calling thread to the CPUs of a taskset list like `1` or `0,2` (best effort).
pub(crate) fn pin_thread(cpus: &str) {
    let mut set = nix::sched::CpuSet::new();
    for c in cpus
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        let _ = set.set(c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// Sends GET `path` to 127.0.0.1:`port` at `rate` requests/s for `secs`.
pub(crate) fn fixed_rate(
    port: u16,
    path: &str,
    rate: f64,
    conns: usize,
    secs: f64,
    cpus: &str,
) -> Result<RateResult> {
    let conns = conns.max(1);
    let period = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(secs);
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").into_bytes();
    let mut handles = Vec::new();
    for i in 0..conns {
        let req = req.clone();
        let cpus = cpus.to_owned();
        handles.push(thread::spawn(move || {
            pin_thread(&cpus);
            let offset = period.mul_f64(i as f64 / conns as f64);
            conn_loop(port, &req, start + offset, period, end)
        }));
    }
    let mut lat = Vec::new();
    let (mut ok, mut errors, mut last) = (0, 0, start);
    for h in handles {
        let (l, e, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))?;
        ok += l.len() as u64;
        errors += e;
        lat.extend(l);
        last = last.max(t);
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    Ok(RateResult {
        target_rps: rate,
        planned_secs: secs,
        secs: last.duration_since(start).as_secs_f64().max(secs),
        ok,
        errors,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// One connection's schedule; returns latencies (µs, from the due time), the error count and
/// when the last response arrived.
fn conn_loop(
    port: u16,
    req: &[u8],
    first: Instant,
    period: Duration,
    end: Instant,
) -> (Vec<u32>, u64, Instant) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut conn: Option<Client> = None;
    let mut due = first;
    while due < end {
        // Sleep, never spin: the generator shares a CPU with the agent on small machines, and
        // the timer slack (~50 µs) is far below the latencies measured.
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let c = match conn.take() {
            Some(c) => Ok(c),
            None => Client::connect(port),
        };
        match c.and_then(|mut c| c.get(req).map(|()| c)) {
            Ok(c) => {
                lat.push(due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                conn = Some(c);
            }
            Err(_) => {
                errors += 1;
                thread::sleep(Duration::from_millis(10));
            }
        }
        due += period;
    }
    (lat, errors, Instant::now())
}

/// A keep-alive HTTP/1.1 client connection.
pub(crate) struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub(crate) fn connect(port: u16) -> Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            s,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends a request and reads one complete response (Content-Length framed); errors on a
    /// status other than 2xx.
    pub(crate) fn get(&mut self, req: &[u8]) -> Result<()> {
        self.s.write_all(req)?;
        let status = read_response(&mut self.s, &mut self.buf)?;
        if !(200..300).contains(&status) {
            bail!("status {status}");
        }
        Ok(())
    }
}

/// Reads one Content-Length-framed response (leftover bytes stay in `buf`); returns its status.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(h) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..h]).context("response head")?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("no Content-Length")?;
            let total = h + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    bail!("connection closed mid-response");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Arguments of `bench-server`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "bench-server",
    about = "The synthetic HTTP server that timetracer-bench traces in its drop-onset runs \
             (5 captured messages per request with --upstream); runs until killed."
)]
pub struct ServeArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// Call this upstream (GET /json/42) once per request, `/dep`-style.
    #[arg(long)]
    upstream: Option<u16>,
}

const BODY: &[u8] = br#"{"upstream_status":200,"len":106}"#;

/// Runs the synthetic server until killed.
pub fn serve(a: &ServeArgs) -> Result<()> {
    let l = TcpListener::bind(("127.0.0.1", a.port)).context("bind")?;
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let upstream = a.upstream;
        thread::spawn(move || {
            let _ = serve_conn(s, upstream);
        });
    }
    Ok(())
}

fn serve_conn(mut s: TcpStream, upstream: Option<u16>) -> Result<()> {
    s.set_nodelay(true)?;
    let mut up = None;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    );
    let up_req = b"GET /json/42 HTTP/1.1\r\nHost: upstream\r\n\r\n";
    loop {
        while let Some(h) = find(&buf, b"\r\n\r\n") {
            buf.drain(..h + 4);
            match upstream {
                Some(port) => {
                    if up.is_none() {
                        up = Some(Client::connect(port)?);
                    }
                    if let Some(c) = up.as_mut() {
                        c.get(up_req)?;
                    }
                    // Head and body in two writes, as uvicorn does.
                    s.write_all(head.as_bytes())?;
                    s.write_all(BODY)?;
                }
                None => {
                    let mut all = head.clone().into_bytes();
                    all.extend_from_slice(BODY);
                    s.write_all(&all)?;
                }
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_against_the_synthetic_server() {
        let port = super::super::sys::free_port().unwrap();
        let up = super::super::sys::free_port().unwrap();
        for (p, u) in [(up, None), (port, Some(up))] {
            thread::spawn(move || {
                serve(&ServeArgs {
                    port: p,
                    upstream: u,
                })
            });
        }
        thread::sleep(Duration::from_millis(200));
        let r = fixed_rate(port, "/dep", 400.0, 2, 0.5, "0").unwrap();
        assert_eq!(r.errors, 0);
        assert!(r.ok >= 150, "{r:?}");
        assert!(r.p50_ms > 0.0);
    }
}
