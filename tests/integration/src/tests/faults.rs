//! Faults around a running agent (issue #24, item 3), each with its bounds asserted: the disk
//! fills up, the cassette directory is removed, the OOM killer kills the agent, nobody reads
//! the agent's output. In every case the traced app keeps serving, and the agent says exactly
//! what it lost and resumes when the fault clears (or, killed, leaves nothing behind: no
//! partial cassette, no BPF program, map or link). Bounds and measured values:
//! docs/reliability.md, "Faults".

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::scenario::{App, Harness, Req};
use crate::require_root;
use crate::util::{self, HttpConn};

/// No request may take longer than this while a fault is on (the app is never blocked; this is
/// the scheduling noise of a loaded 2-core VM with margin).
const MAX_LATENCY: Duration = Duration::from_secs(2);
/// The median latency during a fault stays within this factor (plus [`MEDIAN_SLACK`]) of the
/// median before it.
const MEDIAN_FACTOR: u32 = 3;
const MEDIAN_SLACK: Duration = Duration::from_millis(20);

/// The exit summary's numbers: `requests` and `cassettes` of its first line, and every
/// `name=value` of its `agent counters:` line.
fn summary_counters(stderr: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in stderr.lines() {
        if let Some(rest) = line.split("timetracer-agent: done after ").nth(1) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                if let (Some(n), Some(name)) = (
                    i.checked_sub(1).and_then(|j| words[j].parse::<u64>().ok()),
                    ["requests", "cassettes"].iter().find(|n| w == *n),
                ) {
                    out.insert((*name).to_owned(), n);
                }
            }
        }
        if let Some(rest) = line.split("timetracer-agent: agent counters: ").nth(1) {
            for kv in rest.split(", ") {
                if let Some((k, v)) = kv.split_once('=')
                    && let Ok(v) = v.trim().parse()
                {
                    out.insert(k.to_owned(), v);
                }
            }
        }
    }
    out
}

/// Stops the agent (SIGINT; a failed exit is an error): its stderr and summary counters.
fn stop_and_count(h: &mut Harness, errs: &mut Vec<String>) -> (String, BTreeMap<String, u64>) {
    let status = h.stop_agent();
    if !status.success() {
        errs.push(format!("agent exit: {status}"));
    }
    let stderr = h.agent.as_ref().expect("agent").stderr_text();
    let got = summary_counters(&stderr);
    (stderr, got)
}

/// Problems where the summary's counters differ from `want` (a missing counter is 0).
fn counter_problems(got: &BTreeMap<String, u64>, want: &[(&str, u64)]) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| got.get(*k).copied().unwrap_or(0) != *v)
        .map(|(k, v)| format!("counter {k} is {:?}, want {v}: {got:?}", got.get(*k)))
        .collect()
}

/// Request cassettes under `dir` (startup cassettes and the index excluded).
fn cassette_count(dir: &Path) -> usize {
    util::load_cassettes(dir).cassettes.len()
}

/// Waits until `dir` holds at least `n` request cassettes; the count.
fn wait_cassettes(dir: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let c = cassette_count(dir);
        if c >= n || Instant::now() >= deadline {
            return c;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `n` requests (`plain`, and every fourth one calling the upstream), each on a fresh
/// connection; their latencies, and every failure.
fn phase(h: &Harness, tag: &str, n: usize, errors: &mut Vec<String>) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let ep = if i % 4 == 3 {
            format!("users/{i}")
        } else {
            "plain".to_owned()
        };
        let req = Req::new(&ep, &format!("{tag}{i}"));
        let t = Instant::now();
        let r =
            HttpConn::connect(h.client_port).and_then(|mut c| super::scenario::send(&mut c, &req));
        lat.push(t.elapsed());
        match r {
            Ok(s) if s.resp.status == req.status => {}
            Ok(s) => errors.push(format!("{tag}: {} answered {}", req.target, s.resp.status)),
            Err(e) => errors.push(format!("{tag}: {}: {e}", req.target)),
        }
    }
    lat
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The latency bounds of a phase under a fault against the phase before it.
fn latency_problems(what: &str, before: &[Duration], during: &[Duration]) -> Vec<String> {
    let mut errs = Vec::new();
    let max = during.iter().max().copied().unwrap_or_default();
    if max > MAX_LATENCY {
        errs.push(format!(
            "{what}: a request took {max:?} (bound {MAX_LATENCY:?})"
        ));
    }
    let (b, d) = (median(before), median(during));
    if d > b * MEDIAN_FACTOR + MEDIAN_SLACK {
        errs.push(format!(
            "{what}: median latency {d:?}, before {b:?} (bound {MEDIAN_FACTOR}× + {MEDIAN_SLACK:?})"
        ));
    }
    eprintln!("[{what}] median latency before {b:?}, during {d:?}, max during {max:?}");
    errs
}

/// A tmpfs of a given size mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        fs::create_dir_all(dir).expect("mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {}: {st}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = fs::File::create(path).expect("create filler");
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Small writes fill what the 64 KiB ones left.
    while f.write(&[0u8; 512]).is_ok_and(|k| k > 0) {
        n += 512;
    }
    n
}

/// (a) The disk fills up: every request is still answered at the same speed, each cassette
/// that cannot be written is counted (`write_errors_no_space`, exactly the requests made while
/// it was full) and reported once, and writing resumes when space is freed.
#[test]
fn disk_full_loses_counted_cassettes_and_resumes() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "faults_disk_full");
    let fs_guard = Tmpfs::mount(&h.root().join("small"), "4m");
    h.out = fs_guard.0.join("cassettes");
    h.start_app(App::Flask);
    h.attach();
    let mut errs = Vec::new();
    let (n1, n2, n3) = (20, 30, 20);

    let before = phase(&h, "before", n1, &mut errs);
    let c1 = wait_cassettes(&h.out, n1, Duration::from_secs(20));
    if c1 != n1 {
        errs.push(format!("before the disk filled: {c1} cassettes, want {n1}"));
    }
    let filler = fs_guard.0.join("filler");
    let filled = fill(&filler);
    let full = phase(&h, "full", n2, &mut errs);
    // The last request is finished (and its write failed) a grace period after its response.
    thread::sleep(Duration::from_secs(2));
    let c2 = cassette_count(&h.out);
    if c2 != n1 {
        errs.push(format!("while full: {c2} cassettes, want {n1}"));
    }
    fs::remove_file(&filler).expect("free the space");
    let after = phase(&h, "after", n3, &mut errs);
    let c3 = wait_cassettes(&h.out, n1 + n3, Duration::from_secs(20));
    if c3 != n1 + n3 {
        errs.push(format!(
            "after space was freed: {c3} cassettes, want {}",
            n1 + n3
        ));
    }
    let (stderr, got) = stop_and_count(&mut h, &mut errs);
    errs.extend(counter_problems(
        &got,
        &[
            ("requests", (n1 + n2 + n3) as u64),
            ("cassettes", (n1 + n3) as u64),
            ("write_errors", n2 as u64),
            ("write_errors_no_space", n2 as u64),
            ("write_errors_other", 0),
        ],
    ));
    // Reported once, not once per cassette; the end of the outage says how many were lost.
    let full_msgs = stderr
        .lines()
        .filter(|l| l.contains("cannot write cassettes to") && l.contains("No space left"))
        .count();
    if full_msgs != 1 {
        errs.push(format!(
            "{full_msgs} 'cannot write cassettes … No space left' lines, want 1"
        ));
    }
    let resumed =
        format!("again; {n2} lost while it failed (no space left: {n2}, other errors: 0)");
    if !stderr.contains(&resumed) {
        errs.push(format!("no '{resumed}' line"));
    }
    let lost = format!("lost {n2} cassettes that could not be written to");
    if !stderr.contains(&lost) {
        errs.push(format!("no '{lost}' summary line"));
    }
    errs.extend(latency_problems("disk full", &before, &full));
    errs.extend(latency_problems("space freed", &before, &after));
    let dir = util::load_cassettes(&h.out);
    errs.extend(dir.problems.iter().cloned());
    if !dir.temp_files.is_empty() {
        errs.push(format!("partial files left: {:?}", dir.temp_files));
    }
    eprintln!(
        "[faults_disk_full] filler {filled} bytes; counters {got:?}; {} cassettes on disk",
        dir.cassettes.len()
    );
    h.assert_ok(&errs, &dir);
}

/// (b) The cassette directory is removed while recording: the agent says so, recreates it
/// (0700) and writes the next cassettes there; nothing is lost (`write_errors` 0), the removal
/// is counted (`out_dir_removed`), and the new directory gets a new index.
#[test]
fn removed_out_dir_is_recreated() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "faults_out_dir_removed");
    h.start_app(App::Flask);
    h.attach();
    let mut errs = Vec::new();
    let before = phase(&h, "before", 10, &mut errs);
    let c1 = wait_cassettes(&h.out, 10, Duration::from_secs(20));
    if c1 != 10 {
        errs.push(format!("before the removal: {c1} cassettes, want 10"));
    }
    fs::remove_dir_all(&h.out).expect("remove the cassette directory");
    let after = phase(&h, "after", 10, &mut errs);
    let c2 = wait_cassettes(&h.out, 10, Duration::from_secs(20));
    if c2 != 10 {
        errs.push(format!("after the removal: {c2} cassettes, want 10"));
    }
    // The index is written when the writer is idle.
    thread::sleep(Duration::from_millis(1500));
    let (stderr, got) = stop_and_count(&mut h, &mut errs);
    errs.extend(counter_problems(
        &got,
        &[
            ("requests", 20),
            ("cassettes", 20),
            ("write_errors", 0),
            ("out_dir_removed", 1),
        ],
    ));
    let msgs = stderr
        .lines()
        .filter(|l| l.contains("was removed") && l.contains(&*h.out.to_string_lossy()))
        .count();
    if msgs != 1 {
        errs.push(format!(
            "{msgs} 'was removed' lines naming the directory, want 1"
        ));
    }
    match fs::metadata(&h.out) {
        Ok(m) if m.permissions().mode() & 0o777 == 0o700 => {}
        Ok(m) => errs.push(format!("recreated with mode {:o}", m.permissions().mode())),
        Err(e) => errs.push(format!("not recreated: {e}")),
    }
    if !h.out.join(".timetracer-index.sqlite3").is_file() {
        errs.push("the recreated directory has no index".to_owned());
    }
    errs.extend(latency_problems("directory removed", &before, &after));
    let dir = util::load_cassettes(&h.out);
    h.assert_ok(&errs, &dir);
}

/// BPF object ids an agent holds open: (`prog_id`s, `map_id`s, `link_id`s) from its fdinfo.
fn bpf_ids(pid: u32) -> [Vec<u64>; 3] {
    let mut out: [Vec<u64>; 3] = Default::default();
    for e in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            for (i, key) in ["prog_id:", "map_id:", "link_id:"].iter().enumerate() {
                if let Some(v) = line.strip_prefix(key).and_then(|v| v.trim().parse().ok()) {
                    out[i].push(v);
                }
            }
        }
    }
    for v in &mut out {
        v.sort_unstable();
        v.dedup();
    }
    out
}

/// The ids `bpftool -j KIND show` lists now.
fn bpftool_ids(kind: &str) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool (cargo xtask install installs it)");
    assert!(out.status.success(), "bpftool {kind} show: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// A cgroup v1 memory controller directory for one test (`/sys/fs/cgroup/memory/...`), or the
/// v2 cgroup with the memory controller; removed on drop.
struct MemCg {
    dir: PathBuf,
    v1: bool,
}

impl MemCg {
    fn create(name: &str) -> Self {
        let name = format!("timetracer-test-{name}-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        let (dir, v1) = if v1.exists() {
            (PathBuf::from("/sys/fs/cgroup/memory").join(&name), true)
        } else {
            (PathBuf::from("/sys/fs/cgroup").join(&name), false)
        };
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir, v1 }
    }

    fn file(&self, v1: &str, v2: &str) -> PathBuf {
        self.dir.join(if self.v1 { v1 } else { v2 })
    }

    /// Sets the limit; false when the kernel refuses (v1: below what it can reclaim).
    fn limit(&self, bytes: u64) -> bool {
        fs::write(
            self.file("memory.limit_in_bytes", "memory.max"),
            bytes.to_string(),
        )
        .is_ok()
    }

    /// What the cgroup uses now (anonymous memory, kernel memory such as the BPF ring
    /// buffer, page cache).
    fn usage(&self) -> u64 {
        fs::read_to_string(self.file("memory.usage_in_bytes", "memory.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn oom_kills(&self) -> u64 {
        let text = fs::read_to_string(self.file("memory.oom_control", "memory.events"))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemCg {
    fn drop(&mut self) {
        let procs = self.dir.join("cgroup.procs");
        for p in fs::read_to_string(&procs).unwrap_or_default().lines() {
            if let Ok(pid) = p.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How long the squeeze may take to get the agent OOM-killed.
const OOM_WITHIN: Duration = Duration::from_secs(90);

/// (c) The OOM killer kills the agent (its memory cgroup's limit is lowered under load): the
/// app keeps serving, no partial cassette is left, and every BPF program, map and link the
/// agent held is gone once it is.
///
/// Ignored (`cargo test -- --ignored` runs it): on a host whose memory controller is on cgroup
/// v1, as these VMs', the kill comes late or not at all (1 of 4 runs; docs/reliability.md), and
/// a test that fails by chance would hide real failures. A cgroup v2 `memory.max` makes it
/// deterministic.
#[test]
#[ignore = "not deterministic with a cgroup-v1 memory controller (docs/reliability.md)"]
fn oom_killed_agent_leaves_no_bpf_objects() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "faults_oom");
    h.start_app(App::Flask);
    let cg = MemCg::create("oom");
    // The agent is in the cgroup before it loads anything: a wrapper moves itself there and
    // execs the real agent.
    let wrapper = h.root().join("agent-in-cgroup.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > '{}/cgroup.procs' || exit 97\nexec '{}' \"$@\"\n",
            cg.dir.display(),
            h.paths.agent.display()
        ),
    )
    .expect("wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    h.paths.agent = wrapper;
    h.attach();
    let agent_pid = h.agent.as_ref().expect("agent").pid();
    let held = bpf_ids(agent_pid);
    let mut errs = Vec::new();
    if held[0].is_empty() || held[1].is_empty() {
        errs.push(format!("the agent holds no BPF programs or maps? {held:?}"));
    }
    let before = phase(&h, "before", 10, &mut errs);
    // Recording works before the fault: these cassettes must survive it whole.
    let c0 = wait_cassettes(&h.out, 10, Duration::from_secs(20));
    if c0 != 10 {
        errs.push(format!("before the squeeze: {c0} cassettes, want 10"));
    }

    // Load: keep-alive clients with 300 KiB bodies (`big`) and small requests, until the agent
    // is gone and a little after.
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let lat = Mutex::new(Vec::<Duration>::new());
    let mut killed_after = None;
    thread::scope(|s| {
        for t in 0..3 {
            let (stop, failures, lat, port) = (&stop, &failures, &lat, h.client_port);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ep = if (n + t) % 3 == 0 { "big" } else { "plain" };
                    let req = Req::new(ep, &format!("oom{t}-{n}"));
                    let t0 = Instant::now();
                    match HttpConn::connect(port)
                        .and_then(|mut c| super::scenario::send(&mut c, &req))
                    {
                        Ok(sent) if sent.resp.status == 200 => {}
                        Ok(sent) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {}", req.target, sent.resp.status)),
                        Err(e) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e}", req.target)),
                    }
                    lat.lock().unwrap().push(t0.elapsed());
                    n += 1;
                }
            });
        }
        // Squeeze: every 100 ms the limit is set a little above what the cgroup uses, the
        // margin shrinking to 64 KiB, while the load makes the agent allocate, until the OOM
        // killer acts. Slow and load-sensitive (the kernel reclaims the page cache first and
        // the agent thrashes on it; a limit under what it cannot reclaim is refused, and the
        // BPF ring buffer is charged kernel memory): docs/reliability.md.
        let t0 = Instant::now();
        let agent = h.agent.as_mut().expect("agent");
        let mut margin: i64 = 4 << 20;
        while t0.elapsed() < OOM_WITHIN {
            if agent.try_status().is_some() {
                killed_after = Some(t0.elapsed());
                break;
            }
            let floor = cg.usage() as i64;
            let _ = cg.limit((floor + margin).max(1 << 20) as u64);
            margin = (margin - (256 << 10)).max(64 << 10);
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
    });
    let status = h
        .agent
        .as_mut()
        .expect("agent")
        .wait_timeout(Duration::from_secs(10));
    match status {
        Some(s) if s.signal() == Some(9) => {}
        other => errs.push(format!(
            "the agent was not killed by the OOM killer within {OOM_WITHIN:?}: {other:?}"
        )),
    }
    let ooms = cg.oom_kills();
    if ooms == 0 {
        errs.push("the cgroup counted no OOM kill".to_owned());
    }
    errs.extend(failures.into_inner().unwrap());
    let during = lat.into_inner().unwrap();
    errs.extend(latency_problems("agent OOM-killed", &before, &during));
    // The app still serves after the agent is gone.
    let after = phase(&h, "after", 10, &mut errs);
    errs.extend(latency_problems("after the OOM kill", &before, &after));

    // Every BPF object the agent held is released (the kernel frees them asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<String>;
    loop {
        left = Vec::new();
        for (i, kind) in ["prog", "map", "link"].iter().enumerate() {
            let now = bpftool_ids(kind);
            left.extend(
                held[i]
                    .iter()
                    .filter(|id| now.contains(id))
                    .map(|id| format!("{kind} {id}")),
            );
        }
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    if !left.is_empty() {
        errs.push(format!("BPF objects left after the agent died: {left:?}"));
    }
    let dir = util::load_cassettes(&h.out);
    errs.extend(dir.problems.iter().cloned());
    if !dir.temp_files.is_empty() {
        errs.push(format!("partial files left: {:?}", dir.temp_files));
    }
    eprintln!(
        "[faults_oom] killed {killed_after:?} after the squeeze began; oom_kill={ooms}; held {} progs, {} maps, {} links; {} requests under load; {} cassettes",
        held[0].len(),
        held[1].len(),
        held[2].len(),
        during.len(),
        dir.cassettes.len()
    );
    h.assert_ok(&errs, &dir);
}

/// The agent's child, killed (process group) and reaped on drop.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

/// (d) A slow consumer: the agent's stdout and stderr are a pipe that is already full and that
/// nobody reads. Recording and cassette writing go on, nothing slows the app, and once a reader
/// comes, what the agent said (ready, the exit summary with the exact counts) arrives.
#[test]
fn stuck_output_pipe_blocks_nothing() {
    use std::io::Read as _;
    use std::os::fd::AsRawFd as _;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let paths = require_root!();
    let mut h = Harness::new(paths, "faults_stuck_pipe");
    h.start_app(App::Flask);
    let mut errs = Vec::new();
    let before = phase(&h, "untraced", 20, &mut errs);

    let (mut reader, mut writer) = std::io::pipe().expect("pipe");
    fcntl(writer.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK");
    let mut prefilled = 0usize;
    while let Ok(n) = writer.write(&[b'x'; 4096]) {
        prefilled += n;
    }
    fcntl(writer.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty())).expect("blocking again");
    let pid = h.app.as_ref().expect("app").pid();
    let mut cmd = util::command(
        &h.paths.agent,
        [
            "attach".to_owned(),
            "--pid".to_owned(),
            pid.to_string(),
            "--out".to_owned(),
            h.out.to_string_lossy().into_owned(),
        ],
    );
    cmd.stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().expect("dup"))
        .stderr(writer)
        .process_group(0);
    use std::os::unix::process::CommandExt as _;
    let mut agent = Spawned(cmd.spawn().expect("spawn agent"));
    // The command holds its copies of the pipe's write end: closed, the pipe ends when the
    // agent does.
    drop(cmd);

    // Ready without printing anything we can read: a request is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    while cassette_count(&h.out) == 0 {
        if Instant::now() >= deadline {
            h.fail(
                &["no cassette within 30 s with stderr a full pipe nobody reads".to_owned()],
                None,
            );
        }
        let _ = HttpConn::connect(h.client_port).and_then(|mut c| {
            super::scenario::send(&mut c, &Req::new("plain", &format!("probe{probes}")))
        });
        probes += 1;
        thread::sleep(Duration::from_millis(300));
    }
    // Probes sent before the agent was attached are not recorded: count from here.
    thread::sleep(Duration::from_secs(1));
    let ready = cassette_count(&h.out);
    let during = phase(&h, "stuck", 40, &mut errs);
    wait_cassettes(&h.out, ready + 40, Duration::from_secs(20));
    let c = cassette_count(&h.out);
    if c != ready + 40 {
        errs.push(format!(
            "{c} cassettes with stderr stuck, want {}",
            ready + 40
        ));
    }
    // Still stuck: SIGINT; the agent must exit anyway (its summary waits for a reader at most
    // a moment), and its programs go with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().expect("wait") {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let exit_after = t0.elapsed();
    match status {
        Some(s) if s.success() => {}
        other => errs.push(format!(
            "agent with a stuck stderr, after SIGINT: {other:?}"
        )),
    }
    // The agent is gone: the pipe ends (EOF) after what it holds.
    let mut text = Vec::new();
    let _ = reader.read_to_end(&mut text);
    let text = String::from_utf8_lossy(text.get(prefilled..).unwrap_or_default()).into_owned();
    if exit_after > Duration::from_secs(10) {
        errs.push(format!(
            "the agent took {exit_after:?} to exit after SIGINT (bound 10 s)"
        ));
    }
    errs.extend(latency_problems("stuck pipe", &before, &during));
    eprintln!(
        "[faults_stuck_pipe] prefilled {prefilled} bytes; {probes} probes until ready; agent exited {exit_after:?} after SIGINT; then read:\n{}",
        util::tail(&text, 10)
    );
    let dir = util::load_cassettes(&h.out);
    h.assert_ok(&errs, &dir);
}

/// A stdlib HTTP server: `/plain`; `/fork?n=N` forks N children that exit at once (each
/// reaped); `/spawn` runs `/bin/true` (fork + exec).
const FORK_APP: &str = r#"
import os, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        u = urlparse(self.path)
        if u.path == "/fork":
            n = int(parse_qs(u.query).get("n", ["1"])[0])
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
            body = b"forked %d" % n
        elif u.path == "/spawn":
            subprocess.run(["/bin/true"], check=True)
            body = b"spawned"
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// `VmRSS` of a process, bytes.
fn rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Entries of the agent's kernel map named `name` (`bpftool map dump`).
fn map_entries(held_maps: &[u64], name: &str) -> Option<usize> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let id = v.as_array()?.iter().find_map(|m| {
        let id = m["id"].as_u64()?;
        (held_maps.contains(&id) && m["name"].as_str() == Some(name)).then_some(id)
    })?;
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.as_array()?.len())
}

/// Agent RSS growth allowed over hundreds of short-lived children.
const FORK_RSS_GROWTH: u64 = 32 << 20;

/// (e) The traced app forks hundreds of short-lived children (bare forks and fork + exec):
/// the app answers as fast as before, the agent follows and then frees every child
/// (`processes_forgotten`; the kernel's target set holds the app alone again), its memory
/// grows less than [`FORK_RSS_GROWTH`], and every request is recorded.
#[test]
fn forking_app_children_are_followed_and_freed() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "faults_fork");
    let app = h.root().join("fork_app.py");
    fs::write(&app, FORK_APP).expect("app");
    let cmd = util::command(
        h.paths.venv_bin("python"),
        [app.into_os_string(), h.app_port.to_string().into()],
    );
    let mut guard = util::ProcGuard::spawn("forkapp", cmd, &h.root()).expect("spawn app");
    guard
        .wait_for_port(h.app_port, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", guard.diagnostics()));
    h.app = Some(guard);
    h.client_port = h.app_port;
    h.attach();
    let agent_pid = h.agent.as_ref().expect("agent").pid();
    let mut errs = Vec::new();
    let get = |target: &str, errs: &mut Vec<String>| -> Duration {
        let t = Instant::now();
        match HttpConn::connect(h.client_port).and_then(|mut c| c.request("GET", target, None)) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => errs.push(format!("{target}: {}", r.status)),
            Err(e) => errs.push(format!("{target}: {e}")),
        }
        t.elapsed()
    };
    let before: Vec<Duration> = (0..20)
        .map(|i| get(&format!("/plain?b={i}"), &mut errs))
        .collect();
    let rss0 = rss(agent_pid);
    let (forks, spawns, per) = (10usize, 50usize, 50usize);
    let mut during = Vec::new();
    for i in 0..spawns {
        if i < forks {
            get(&format!("/fork?n={per}&i={i}"), &mut errs);
        }
        get(&format!("/spawn?i={i}"), &mut errs);
        during.push(get(&format!("/plain?d={i}"), &mut errs));
    }
    let children = (forks * per + spawns) as u64;
    let requests = (20 + forks + 2 * spawns) as u64;
    let c = wait_cassettes(&h.out, requests as usize, Duration::from_secs(30));
    // Exits are handled once nothing of the process is pending.
    thread::sleep(Duration::from_secs(2));
    let rss1 = rss(agent_pid);
    let held = bpf_ids(agent_pid);
    let targets = map_entries(&held[1], "TARGETS");
    let (_, got) = stop_and_count(&mut h, &mut errs);
    errs.extend(counter_problems(
        &got,
        &[
            ("requests", requests),
            ("cassettes", requests),
            ("write_errors", 0),
        ],
    ));
    let started = got.get("processes_started").copied().unwrap_or(0);
    let forgotten = got.get("processes_forgotten").copied().unwrap_or(0);
    if started < children || forgotten < children {
        errs.push(format!(
            "{children} children: processes_started={started}, processes_forgotten={forgotten}"
        ));
    }
    if c != requests as usize {
        errs.push(format!("{c} cassettes, want {requests}"));
    }
    match targets {
        Some(n) if n <= 1 => {}
        other => errs.push(format!(
            "the kernel's TARGETS map holds {other:?} entries after the children exited, want the app alone"
        )),
    }
    let growth = rss1.saturating_sub(rss0);
    if growth > FORK_RSS_GROWTH {
        errs.push(format!(
            "agent RSS grew {} MiB over {children} children (bound {} MiB)",
            growth >> 20,
            FORK_RSS_GROWTH >> 20
        ));
    }
    errs.extend(latency_problems("forking app", &before, &during));
    eprintln!(
        "[faults_fork] {children} children; agent RSS {} → {} MiB; processes_started={started} processes_forgotten={forgotten}; TARGETS entries {targets:?}",
        rss0 >> 20,
        rss1 >> 20
    );
    let dir = util::load_cassettes(&h.out);
    h.assert_ok(&errs, &dir);
}
