//! The replay cgroup and its BPF programs: every TCP connect from the app goes to a mock
//! listener (or is let through for live destinations, or refused and counted), and
//! `getpeername` shows the app the address it asked for. No LD_PRELOAD.
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use timetracer_common::{
    DestKey, MAP_REPLAY_BLOCKED, MAP_REPLAY_RULES, RULE_LIVE, RULE_REDIRECT, Rule,
};

/// The compiled replay object (empty when built without eBPF, see build.rs).
static REPLAY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/timetracer-replay"));

const PROGRAMS: [&str; 4] = [
    "replay_connect4",
    "replay_connect6",
    "replay_getpeername4",
    "replay_getpeername6",
];

/// The cgroup v2 mount (it is not always `/sys/fs/cgroup`: hybrid hierarchies mount it at
/// `/sys/fs/cgroup/unified`).
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    crate::k8s::cgroup::host_v2_mount().ok()
}

/// A cgroup with the replay programs attached. Dropping it kills what is left in the cgroup
/// and removes it.
pub struct Redirect {
    ebpf: Ebpf,
    cgroup: PathBuf,
    /// We mounted cgroup2 ourselves (no mount existed): unmount on drop.
    own_mount: Option<PathBuf>,
}

impl std::fmt::Debug for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirect")
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

fn key_of(addr: SocketAddr) -> DestKey {
    match addr.ip() {
        IpAddr::V4(v4) => DestKey::v4(v4.octets(), addr.port()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => DestKey::v4(v4.octets(), addr.port()),
            None => DestKey {
                addr: v6.octets(),
                port: addr.port(),
                _pad: [0; 6],
            },
        },
    }
}

fn addr_of(k: &DestKey) -> SocketAddr {
    match k.as_v4() {
        Some(v4) => SocketAddr::from((v4, k.port)),
        None => SocketAddr::from((k.addr, k.port)),
    }
}

impl Redirect {
    /// Creates the cgroup `name` and attaches the programs to it.
    ///
    /// # Errors
    /// Not root, a binary built without eBPF, no cgroup v2, or the kernel refusing the
    /// programs; each message names the fix.
    pub fn setup(name: &str) -> anyhow::Result<Self> {
        if REPLAY_OBJECT.is_empty() {
            bail!(
                "this binary was built without eBPF (bpf-linker was missing at build time); run `cargo xtask install` then `cargo xtask build`"
            );
        }
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "replay needs root to redirect the app's connections (CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN); run it with sudo"
            );
        }
        let (mount, own_mount) = match cgroup2_mount() {
            Some(m) => (m, None),
            None => {
                let m = PathBuf::from("/run/timetracer/cgroup2");
                fs::create_dir_all(&m)?;
                nix::mount::mount(
                    Some("cgroup2"),
                    &m,
                    Some("cgroup2"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .with_context(|| {
                    format!(
                        "no cgroup v2 hierarchy is mounted and mounting one at {} failed; replay needs cgroup v2 (kernel >= 4.10, `mount -t cgroup2 none /sys/fs/cgroup/unified`)",
                        m.display()
                    )
                })?;
                (m.clone(), Some(m))
            }
        };
        let cgroup = mount.join(name);
        fs::create_dir(&cgroup)
            .with_context(|| format!("cannot create the replay cgroup {}", cgroup.display()))?;
        let mut me = Self {
            ebpf: EbpfLoader::new()
                .load(REPLAY_OBJECT)
                .context("loading the replay eBPF object failed")?,
            cgroup,
            own_mount,
        };
        let cg = fs::File::open(&me.cgroup)?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = me
                .ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the replay object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            prog.attach(&cg, CgroupAttachMode::Single)
                .with_context(|| format!("cannot attach {name} to {}", me.cgroup.display()))?;
        }
        Ok(me)
    }

    /// The cgroup directory (`cgroup.procs` inside takes the app).
    #[must_use]
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    fn rules(&mut self) -> anyhow::Result<HashMap<&mut MapData, DestKey, Rule>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(MAP_REPLAY_RULES)
                .context("map RULES missing")?,
        )?)
    }

    /// Sends connects to `dest` to the mock listening on `mock` (127.0.0.1).
    ///
    /// # Errors
    /// The map is full (4096 destinations).
    pub fn redirect(&mut self, dest: SocketAddr, mock: SocketAddr) -> anyhow::Result<()> {
        let IpAddr::V4(ip) = mock.ip() else {
            bail!("mock listeners must be IPv4 ({mock})");
        };
        let rule = Rule {
            action: RULE_REDIRECT,
            mock_ip4: ip.octets(),
            mock_port: mock.port(),
            _pad: [0; 6],
        };
        self.rules()?.insert(key_of(dest), rule, 0)?;
        Ok(())
    }

    /// Lets connects to `dest` through (hybrid replay).
    ///
    /// # Errors
    /// The map is full.
    pub fn allow(&mut self, dest: SocketAddr) -> anyhow::Result<()> {
        let rule = Rule {
            action: RULE_LIVE,
            ..Rule::default()
        };
        self.rules()?.insert(key_of(dest), rule, 0)?;
        Ok(())
    }

    /// Destinations the app tried to reach that no rule covered (refused with `EPERM`).
    #[must_use]
    pub fn blocked(&self) -> Vec<(SocketAddr, u64)> {
        let Some(map) = self.ebpf.map(MAP_REPLAY_BLOCKED) else {
            return Vec::new();
        };
        let Ok(m) = HashMap::<&MapData, DestKey, u64>::try_from(map) else {
            return Vec::new();
        };
        let mut v: Vec<(SocketAddr, u64)> = m
            .iter()
            .filter_map(Result::ok)
            .map(|(k, n)| (addr_of(&k), n))
            .collect();
        v.sort();
        v
    }

    /// Pids still in the cgroup.
    #[must_use]
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills everything in the cgroup (SIGKILL) and waits up to `timeout` for it to empty.
    pub fn kill_all(&self, timeout: Duration) {
        let kill_file = self.cgroup.join("cgroup.kill");
        if kill_file.exists() {
            let _ = fs::write(&kill_file, "1");
        } else {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = std::time::Instant::now() + timeout;
        while !self.pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(5));
        // Programs detach when `ebpf` drops; the directory can go once the cgroup is empty.
        let _ = fs::remove_dir(&self.cgroup);
        if let Some(m) = &self.own_mount {
            let _ = nix::mount::umount(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for a in ["10.0.0.9:8443", "[::1]:5432", "[::ffff:127.0.0.1]:80"] {
            let s: SocketAddr = a.parse().unwrap();
            let back = addr_of(&key_of(s));
            assert_eq!(back.port(), s.port());
        }
        assert_eq!(
            addr_of(&key_of("[::ffff:127.0.0.1]:80".parse().unwrap())),
            "127.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
    }
}
