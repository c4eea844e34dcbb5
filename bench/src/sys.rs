//! Processes and `/proc`: child guards, CPU time, peak RSS, and the noise of a window (CPU used
//! by processes that are not part of the benchmark).
use std::{
    fs,
    io::Read as _,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat` (`getconf CLK_TCK`, 100 on Linux).
pub(crate) fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of `/proc/PID/stat` after the command name (field 3 is index 0).
fn stat_fields(path: &Path) -> Option<Vec<u64>> {
    let text = fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1) // state
            .map(|f| f.parse::<i64>().map_or(0, |v| v.max(0) as u64))
            .collect(),
    )
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    // After `state`: ppid(4) pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime(14) stime(15): indexes 10 and 11 here.
    let f = stat_fields(Path::new(&format!("/proc/{pid}/stat")))?;
    Some(f.get(10)? + f.get(11)?)
}

/// This process's utime + stime plus those of its reaped children (wrk runs), in ticks.
fn self_and_children_ticks() -> u64 {
    stat_fields(Path::new("/proc/self/stat"))
        .map(|f| f.iter().skip(10).take(4).sum())
        .unwrap_or(0)
}

/// The value of a `Vm…:` line (`VmHWM`, `VmRSS`, …) of `/proc/PID/status`, in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident KiB of a process's BPF map mappings (the ring buffer the agent consumes; its data
/// pages are mapped twice, so they count double in RSS).
pub(crate) fn bpf_map_rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut in_map = false;
    let mut total = 0;
    for l in text.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("Rss:") if in_map => total += f.next()?.parse::<u64>().ok()?,
            Some(first)
                if first.contains('-') && first.ends_with(|c: char| c.is_ascii_hexdigit()) =>
            {
                in_map = l.ends_with("anon_inode:bpf-map");
            }
            _ => {}
        }
    }
    Some(total)
}

/// The aggregate `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
struct CpuLine {
    /// user + nice + system (what processes use).
    tasks: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

fn proc_stat() -> CpuLine {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return CpuLine::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is in user).
    CpuLine {
        tasks: g(0) + g(1) + g(2),
        irq: g(5),
        softirq: g(6),
        steal: g(7),
    }
}

/// A measured window: CPU used by the machine and by the benchmark's own processes.
pub(crate) struct Window {
    t0: Instant,
    stat: CpuLine,
    known: u64,
    pids: Vec<u32>,
}

/// What else the machine did during a window, in percent of one CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Noise {
    pub(crate) secs: f64,
    /// CPU used by processes that are not the benchmark's (user + system of the machine minus
    /// that of the app, upstream, load generator, agent and this process).
    pub(crate) unrelated_pct: f64,
    pub(crate) known_pct: f64,
    pub(crate) softirq_pct: f64,
    pub(crate) steal_pct: f64,
    pub(crate) noisy: bool,
}

impl Noise {
    pub(crate) fn to_json(self) -> Value {
        json!({
            "secs": round(self.secs, 3),
            "unrelated_cpu_pct": round(self.unrelated_pct, 1),
            "benchmark_cpu_pct": round(self.known_pct, 1),
            "softirq_cpu_pct": round(self.softirq_pct, 1),
            "steal_cpu_pct": round(self.steal_pct, 1),
            "noisy": self.noisy,
        })
    }
}

impl Window {
    /// Starts a window; `pids` are the benchmark's long-lived processes (this process and the
    /// children it reaps during the window are counted too).
    pub(crate) fn begin(pids: &[u32]) -> Self {
        let pids = pids.to_vec();
        let known = known_ticks(&pids);
        Self {
            t0: Instant::now(),
            stat: proc_stat(),
            known,
            pids,
        }
    }

    /// Ends the window; it is noisy when unrelated CPU or steal exceeds `threshold_pct`.
    pub(crate) fn end(self, threshold_pct: f64) -> Noise {
        let stat = proc_stat();
        let known = known_ticks(&self.pids);
        let secs = self.t0.elapsed().as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / clk_tck() / secs.max(1e-3) * 100.0;
        let tasks = stat.tasks.saturating_sub(self.stat.tasks);
        let known = known.saturating_sub(self.known);
        let unrelated = pct(tasks.saturating_sub(known));
        let steal = pct(stat.steal.saturating_sub(self.stat.steal));
        Noise {
            secs,
            unrelated_pct: unrelated,
            known_pct: pct(known),
            softirq_pct: pct(
                (stat.softirq + stat.irq).saturating_sub(self.stat.softirq + self.stat.irq)
            ),
            steal_pct: steal,
            noisy: unrelated > threshold_pct || steal > threshold_pct,
        }
    }
}

fn known_ticks(pids: &[u32]) -> u64 {
    self_and_children_ticks() + pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>()
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// `taskset -c CPUS PROGRAM`: the program is pinned from its first instruction.
pub(crate) fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpus).arg(program);
    c
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process whose output goes to `<dir>/<name>.log`; dropping it kills it.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let f = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            status: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub(crate) fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
    }

    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub(crate) fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{} (log {}):\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// Waits until the log contains `needle`.
    pub(crate) fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(s) = self.exited() {
                bail!(
                    "{} exited ({s}) before printing {needle:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not print {needle:?} within {timeout:?}\n{}",
            self.name,
            self.log_tail()
        )
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`.
    pub(crate) fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(s) = self.exited() {
                bail!(
                    "{} exited ({s}) before listening on :{port}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} does not listen on :{port} after {timeout:?}\n{}",
            self.name,
            self.log_tail()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Cassette files and bytes under a directory (the index's SQLite files counted apart).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DirUsage {
    pub(crate) files: u64,
    /// Sum of file sizes.
    pub(crate) bytes: u64,
    /// Allocated blocks (what `du` reports).
    pub(crate) disk_bytes: u64,
    pub(crate) index_bytes: u64,
}

impl DirUsage {
    /// Usage of the cassettes under `dir` whose file name starts with `prefix` ("" = all).
    pub(crate) fn of(dir: &Path, prefix: &str) -> Self {
        let mut u = Self::default();
        walk(dir, prefix, &mut u);
        u
    }

    pub(crate) fn to_json(self) -> Value {
        let per = |v: u64| {
            if self.files == 0 {
                Value::Null
            } else {
                json!(round(v as f64 / self.files as f64, 0))
            }
        };
        json!({
            "files": self.files,
            "bytes": self.bytes,
            "disk_bytes": self.disk_bytes,
            "index_bytes": self.index_bytes,
            "bytes_per_cassette": per(self.bytes),
            "disk_bytes_per_cassette": per(self.disk_bytes),
            "index_bytes_per_cassette": per(self.index_bytes),
        })
    }
}

fn walk(dir: &Path, prefix: &str, u: &mut DirUsage) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if md.is_dir() {
            walk(&e.path(), prefix, u);
        } else if name.starts_with(".timetracer-index") {
            u.index_bytes += md.blocks() * 512;
        } else if !name.starts_with('.')
            && name.starts_with(prefix)
            && (name.ends_with(".json")
                || name.ends_with(".json.zst")
                || name.ends_with(".json.gz"))
        {
            u.files += 1;
            u.bytes += md.len();
            u.disk_bytes += md.blocks() * 512;
        }
    }
}

/// Moves `path` (a directory of the scratch directory) aside, to be deleted with the scratch
/// directory at the end of the run.
///
/// Deleting a window's cassettes right after it made the next windows' file creations slow:
/// on ext4 without a journal (these machines' root file system), the inode allocator skips
/// inodes deleted in the last 5 s (305 s while their inode-table block is dirty), reading
/// each one; after 10,000 deletions a cassette's `open(O_CREAT)` took most of the agent's CPU
/// (`recently_deleted` in a profile). That measures the deletions, not the recorder.
pub(crate) fn retire(path: &Path) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(name) = path.file_name() else { return };
    let mut to = name.to_os_string();
    to.push(format!(".retired-{n}"));
    let _ = fs::rename(path, path.with_file_name(to));
}

/// Empties `dir` (keeps it) by [`retire`]-ing it and making it again.
pub(crate) fn empty_dir(dir: &Path) {
    retire(dir);
    let _ = fs::create_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_status() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmHWM").is_some_and(|k| k > 0));
        assert_eq!(bpf_map_rss_kib(me), Some(0));
        let w = Window::begin(&[me]);
        let n = w.end(10.0);
        assert!(n.secs >= 0.0 && n.unrelated_pct >= 0.0);
    }
}
