//! The container image (issue #20 item 4): `cargo xtask image`'s tarball imported into a
//! containerd from Debian (a private daemon: its own root, state and socket), and run with
//! `ctr run` as the chart's DaemonSet runs it: the node's PID namespace, every capability
//! dropped but the chart's, a read-only root file system, the runtime's default seccomp
//! profile, no new privileges, the node's cgroup hierarchy and tracefs mounted read-only and
//! one writable cassette directory. The agent inside (`attach --cgroup`, what node mode does
//! for a selected container) records a FastAPI app running outside the container in a cgroup
//! of its own, whose calls go to an HTTPS upstream (a test CA's certificate, verified by the
//! app): the cassettes appear on the host with every call, read through the OpenSSL uprobes
//! the agent attaches from inside the container.
//!
//! Needs `containerd` and `ctr` (Debian `containerd`, `runc`) and the tarball
//! (`TIMETRACER_IMAGE`, default `target/image/timetracer-VERSION.tar`); `cargo xtask test`
//! installs and builds both.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::scenario::{App, Harness, Req, VerifyOpts};
use crate::require_root;
use crate::util::{self, ProcGuard, TestCgroup};

/// Every capability name runc knows (`capability(7)`), to drop all but the granted ones:
/// ctr 1.6 has no `--cap-drop ALL`.
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities the chart adds (`deploy/manifests/daemonset.yaml`, the chart's default
/// rendering, whose `add:` list the chart test also checks).
fn chart_capabilities(repo: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(repo.join("deploy/manifests/daemonset.yaml"))
        .expect("deploy/manifests/daemonset.yaml");
    let mut caps = Vec::new();
    let mut in_add = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "add:" {
            in_add = true;
        } else if in_add && t.starts_with("- ") {
            caps.push(t[2..].trim_matches('"').to_owned());
        } else if in_add && !t.starts_with('#') {
            in_add = false;
        }
    }
    assert!(
        !caps.is_empty(),
        "no capabilities found in the chart's manifest"
    );
    caps
}

/// The capability bits in `/proc/PID/status` field `field` (`CapEff`, `CapBnd`).
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn cap_bit(name: &str) -> u64 {
    let i = ALL_CAPS
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("unknown capability {name}"));
    1 << i
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A containerd of this test only.
struct Containerd {
    sock: PathBuf,
    daemon: ProcGuard,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let sock = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 # Not a Kubernetes node: no CRI.\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = sock.display(),
            ),
        )
        .unwrap();
        let cmd = util::command("containerd", [OsString::from("--config"), config.into()]);
        let daemon = ProcGuard::spawn("containerd", cmd, dir).expect("spawn containerd");
        let c = Self { sock, daemon };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 30 s\n{}",
                c.daemon.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn ctr_cmd(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.sock)
            .args(["-n", "timetracer-e2e"]);
        c
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        self.ctr_cmd().args(args).output().expect("run ctr")
    }
}

#[test]
fn image_runs_with_the_charts_privileges() {
    let paths = require_root!();
    for tool in ["containerd", "ctr", "runc"] {
        if util::which(tool).is_none() {
            util::skip_or_fail(&format!(
                "{tool} not found: `cargo xtask test` installs Debian's containerd and runc"
            ));
            return;
        }
    }
    let tarball = std::env::var_os("TIMETRACER_IMAGE").map_or_else(
        || {
            paths.repo.join(format!(
                "target/image/timetracer-{}.tar",
                env!("CARGO_PKG_VERSION")
            ))
        },
        PathBuf::from,
    );
    if !tarball.is_file() {
        util::skip_or_fail(&format!(
            "{} not found: run `cargo xtask image`",
            tarball.display()
        ));
        return;
    }
    let started = Instant::now();
    let cg = match TestCgroup::create("image") {
        Ok(cg) => cg,
        Err(e) => {
            util::skip_or_fail(&format!("cannot make a cgroup v2 directory: {e:#}"));
            return;
        }
    };
    // The app's upstream speaks HTTPS: its calls are only seen through the uprobes.
    let mut h = Harness::with_tls(paths.clone(), "image", true);
    let ctd = Containerd::start(&h.root());

    // Import: the tarball names the image (no --base-name needed).
    let reference = format!("localhost/timetracer:{}", env!("CARGO_PKG_VERSION"));
    let o = ctd.ctr(&["images", "import", tarball.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "ctr images import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed = String::from_utf8_lossy(&ctd.ctr(&["images", "ls", "-q"]).stdout).into_owned();
    assert!(listed.lines().any(|l| l == reference), "{listed}");

    h.start_app(App::FastApi);
    let app = h.app.as_ref().expect("app").pid();
    TestCgroup::move_into(&cg.dir, app).expect("move the app into the cgroup");

    // The chart's capabilities, less those this machine cannot grant at all (not in our own
    // bounding set: a sandboxed CI may lack one); said, never silent.
    let bounding = cap_mask(std::process::id(), "CapBnd");
    let wanted = chart_capabilities(&paths.repo);
    let (granted, lacking): (Vec<String>, Vec<String>) = wanted
        .iter()
        .cloned()
        .partition(|c| bounding & cap_bit(c) != 0);
    if !lacking.is_empty() {
        eprintln!(
            "[image] this machine's bounding set lacks {lacking:?}: the container runs without \
             them (the agent needs none of them on this kernel)"
        );
    }
    std::fs::create_dir_all(&h.out).unwrap();
    let mut cmd = ctd.ctr_cmd();
    cmd.args(["run", "--rm", "--read-only", "--seccomp"]);
    for c in ALL_CAPS.iter().filter(|c| !granted.iter().any(|g| g == *c)) {
        cmd.arg("--cap-drop").arg(format!("CAP_{c}"));
    }
    for c in &granted {
        cmd.arg("--cap-add").arg(format!("CAP_{c}"));
    }
    // hostPID: the PID namespace of this test (the node's).
    cmd.arg("--with-ns")
        .arg(format!("pid:/proc/{}/ns/pid", std::process::id()));
    for (src, dst, mode) in [
        (Path::new("/sys/fs/cgroup"), "/sys/fs/cgroup", "ro"),
        (
            Path::new("/sys/kernel/tracing"),
            "/sys/kernel/tracing",
            "ro",
        ),
        (h.out.as_path(), "/var/lib/timetracer", "rw"),
    ] {
        cmd.arg("--mount").arg(format!(
            "type=bind,src={},dst={dst},options=rbind:{mode}",
            src.display()
        ));
    }
    cmd.arg(&reference)
        .arg(format!("tt-e2e-{}", std::process::id()))
        .args(["/usr/local/bin/timetracer-agent", "attach", "--cgroup"])
        .arg(&cg.dir)
        .args(["--out", "/var/lib/timetracer"]);
    let agent = ProcGuard::spawn("agent", cmd, &h.root()).expect("spawn ctr run");
    let agent = h.agent.insert(agent);
    if let Err(e) = agent.wait_for_stderr("attached", Duration::from_secs(60)) {
        let d = ctd.daemon.diagnostics();
        h.fail(
            &[format!("agent in the container did not attach: {e:#}\n{d}")],
            None,
        );
    }

    // The agent process, seen from the host: exactly the granted capabilities, no new
    // privileges, a seccomp filter.
    let agent_pid = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("/usr/local/bin/timetracer-agent\0attach")
                    && c.contains(&*cg.dir.to_string_lossy())
            })
        });
    let mut errs = Vec::new();
    match agent_pid {
        None => errs.push("the agent's process was not found in /proc".to_owned()),
        Some(pid) => {
            let want: u64 = granted.iter().map(|c| cap_bit(c)).sum();
            let eff = cap_mask(pid, "CapEff");
            if eff != want || cap_mask(pid, "CapBnd") != want {
                errs.push(format!(
                    "agent capabilities {eff:#x} (bounding {:#x}), expected {want:#x} ({granted:?})",
                    cap_mask(pid, "CapBnd")
                ));
            }
            if status_field(pid, "NoNewPrivs") != "1" {
                errs.push("agent may gain privileges (NoNewPrivs is not 1)".into());
            }
            if status_field(pid, "Seccomp") != "2" {
                errs.push("agent runs without a seccomp filter".into());
            }
        }
    }

    let mut sent = Vec::new();
    for (i, ep) in ["users/7001", "multi", "chunked"].iter().enumerate() {
        sent.push(h.send_fresh(&Req::new(ep, &format!("img{i}"))));
    }
    std::thread::sleep(Duration::from_secs(3));
    h.stop_agent();
    // One cassette per request, each with its HTTPS calls (the upstream's log is the ground
    // truth), attributed (the CPython uprobes worked too).
    let (dir, problems) = h.verify(&sent, VerifyOpts::default());
    errs.extend(problems);
    let stderr = h
        .agent
        .as_ref()
        .map(ProcGuard::stderr_text)
        .unwrap_or_default();
    // A probe that did not attach ("attaching … failed: …"), e.g. a uprobe the kernel refused.
    for l in stderr.lines().filter(|l| l.contains(" failed: ")) {
        errs.push(format!("agent: {l}"));
    }
    if !errs.is_empty() {
        h.fail(&errs, Some(&dir));
    }
    eprintln!(
        "[image] imported, ran and recorded {} requests in {:.1}s",
        sent.len(),
        started.elapsed().as_secs_f64()
    );
    drop(ctd);
}
