//! Containers from cgroup paths: which container (and pod) a process runs in, as the kubelet's
//! container runtimes lay their cgroups out, and where the cgroup v2 hierarchy is mounted.
//!
//! Written by hand because it is ours: no crate knows the kubelet's naming schemes. The layouts
//! (all found below any prefix, so nested kind / systemd-in-container paths work too):
//! - systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/
//!   cri-containerd-<ID>.scope` (also `crio-<ID>.scope`, `docker-<ID>.scope`); guaranteed pods
//!   have no QoS level (`kubepods-pod<UID>.slice`); the pod UID's dashes are underscores;
//! - cgroupfs driver: `kubepods/<qos>/pod<UID>/<ID>` (guaranteed: `kubepods/pod<UID>/<ID>`);
//! - a container's own sub-cgroups (systemd inside it, `init.scope`) below any of these.
use std::path::{Path, PathBuf};

/// The container runtime a cgroup name says made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A cgroupfs-driver path: the name is the bare id, the runtime is not told.
    Unknown,
}

impl Runtime {
    /// The scheme of `containerStatuses[].containerID` (`containerd://<id>`).
    #[must_use]
    pub fn scheme(self) -> Option<&'static str> {
        match self {
            Self::Containerd => Some("containerd"),
            Self::CriO => Some("cri-o"),
            Self::Docker => Some("docker"),
            Self::Unknown => None,
        }
    }
}

/// The container (and pod) a cgroup path belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub runtime: Runtime,
    /// The container id (64 hex digits for containerd, CRI-O and docker).
    pub id: String,
    /// The pod's UID with dashes (`0b7c…-…`), when the path names the pod.
    pub pod_uid: Option<String>,
    /// The container's cgroup: the path up to and including the container's component, relative
    /// to the hierarchy's root (sub-cgroups below it belong to the same container).
    pub cgroup: String,
}

/// The container a cgroup path (as in `/proc/PID/cgroup`) belongs to, if any.
#[must_use]
pub fn container_of(path: &str) -> Option<ContainerRef> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The innermost container component wins (a kind node is itself a container).
    for i in (0..parts.len()).rev() {
        let (runtime, id) = match scope_id(parts[i]) {
            Some(found) => found,
            None if is_container_id(parts[i]) && i > 0 && pod_uid(parts[i - 1]).is_some() => {
                (Runtime::Unknown, parts[i])
            }
            None => continue,
        };
        let pod_uid = i
            .checked_sub(1)
            .and_then(|p| pod_uid(parts[p]))
            .map(|u| u.replace('_', "-"));
        return Some(ContainerRef {
            runtime,
            id: id.to_string(),
            pod_uid,
            cgroup: format!("/{}", parts[..=i].join("/")),
        });
    }
    None
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`.
fn scope_id(name: &str) -> Option<(Runtime, &str)> {
    let stem = name.strip_suffix(".scope")?;
    let (runtime, id) = if let Some(id) = stem.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = stem.strip_prefix("crio-") {
        // `crio-conmon-<id>.scope` is CRI-O's monitor process, not the container.
        (Runtime::CriO, id)
    } else if let Some(id) = stem.strip_prefix("docker-") {
        (Runtime::Docker, id)
    } else {
        return None;
    };
    is_container_id(id).then_some((runtime, id))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID a pod-level component names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd, also `kubelet-kubepods-…`).
fn pod_uid(name: &str) -> Option<&str> {
    let uid = if let Some(stem) = name.strip_suffix(".slice") {
        let at = stem.rfind("-pod")?;
        if !stem[..at].contains("kubepods") {
            return None;
        }
        &stem[at + 4..]
    } else {
        name.strip_prefix("pod")?
    };
    let ok = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then_some(uid)
}

/// The id part of `containerStatuses[].containerID` (`containerd://<id>`), with its runtime.
#[must_use]
pub fn parse_container_id(status_id: &str) -> Option<(Runtime, &str)> {
    let (scheme, id) = status_id.split_once("://")?;
    let runtime = match scheme {
        "containerd" => Runtime::Containerd,
        "cri-o" => Runtime::CriO,
        "docker" => Runtime::Docker,
        _ => return None,
    };
    is_container_id(id).then_some((runtime, id))
}

/// The cgroup v2 path of a process from its `/proc/PID/cgroup` (the `0::` line; on a hybrid
/// host the v1 lines are ignored).
#[must_use]
pub fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`: `/sys/fs/cgroup` on
/// a unified host, `/sys/fs/cgroup/unified` on a hybrid one (the first `cgroup2` mount).
#[must_use]
pub fn v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // `36 35 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw`
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount of this host (reads `/proc/self/mountinfo`).
pub fn host_v2_mount() -> std::io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    v2_mount(&info).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no cgroup2 file system is mounted (node mode needs the cgroup v2 hierarchy, \
             unified or hybrid: mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`)",
        )
    })
}

/// The cgroup id the kernel reports for tasks in `dir` (`bpf_get_current_cgroup_id`): the
/// inode number of the cgroup v2 directory.
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(dir)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a0c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";
    const UID: &str = "0b7c5a3e-1d2f-4a6b-8c9d-0e1f2a3b4c5d";
    const UID_: &str = "0b7c5a3e_1d2f_4a6b_8c9d_0e1f2a3b4c5d";

    fn expect(path: &str, runtime: Runtime, cgroup_end: &str) {
        let c = container_of(path).unwrap_or_else(|| panic!("no container in {path}"));
        assert_eq!(c.runtime, runtime, "{path}");
        assert_eq!(c.id, ID, "{path}");
        assert_eq!(c.pod_uid.as_deref(), Some(UID), "{path}");
        assert!(c.cgroup.ends_with(cgroup_end), "{path}: {}", c.cgroup);
    }

    #[test]
    fn systemd_layouts() {
        for (qos, rt, scope) in [
            (
                "burstable",
                Runtime::Containerd,
                format!("cri-containerd-{ID}.scope"),
            ),
            ("besteffort", Runtime::CriO, format!("crio-{ID}.scope")),
            ("burstable", Runtime::Docker, format!("docker-{ID}.scope")),
        ] {
            let p = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{scope}"
            );
            expect(&p, rt, &scope);
        }
        // Guaranteed: no QoS level.
        let scope = format!("cri-containerd-{ID}.scope");
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/{scope}"),
            Runtime::Containerd,
            &scope,
        );
    }

    #[test]
    fn cgroupfs_layouts() {
        for p in [
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
        ] {
            expect(&p, Runtime::Unknown, ID);
        }
    }

    #[test]
    fn nested_and_sub_cgroups() {
        // kind: the node is a container, the pod's containers are nested inside it.
        let kind_systemd = format!(
            "/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/\
             cri-containerd-{ID}.scope",
            "a".repeat(64)
        );
        expect(&kind_systemd, Runtime::Containerd, &format!("{ID}.scope"));
        let kind_cgroupfs = format!(
            "/docker/{}/kubelet/kubepods/burstable/pod{UID}/{ID}",
            "b".repeat(64)
        );
        expect(&kind_cgroupfs, Runtime::Unknown, ID);
        // systemd running inside the container.
        let sub = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/\
             cri-containerd-{ID}.scope/init.scope"
        );
        let c = container_of(&sub).expect("container");
        assert_eq!(c.id, ID);
        assert!(c.cgroup.ends_with(&format!("cri-containerd-{ID}.scope")));
    }

    #[test]
    fn not_containers() {
        for p in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/containerd.service",
            // conmon is CRI-O's monitor, not a container.
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"),
            // A pod-level cgroup: no container yet.
            &format!("/kubepods/burstable/pod{UID}"),
            // A bare id without a pod parent is not a kubelet layout.
            &format!("/other/{ID}"),
            &format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{}.scope",
                &ID[..12]
            ),
        ] {
            assert_eq!(container_of(p), None, "{p}");
        }
        // A docker container outside Kubernetes: found, without a pod.
        let c = container_of(&format!("/system.slice/docker-{ID}.scope")).expect("docker");
        assert_eq!((c.runtime, c.pod_uid), (Runtime::Docker, None));
    }

    #[test]
    fn status_ids() {
        assert_eq!(
            parse_container_id(&format!("containerd://{ID}")),
            Some((Runtime::Containerd, ID))
        );
        assert_eq!(
            parse_container_id(&format!("cri-o://{ID}")),
            Some((Runtime::CriO, ID))
        );
        assert_eq!(parse_container_id(&format!("rkt://{ID}")), None);
        assert_eq!(parse_container_id("containerd://short"), None);
        assert_eq!(Runtime::CriO.scheme(), Some("cri-o"));
    }

    #[test]
    fn proc_cgroup_files() {
        let unified = "0::/kubepods.slice/x.scope\n";
        assert_eq!(v2_path(unified), Some("/kubepods.slice/x.scope"));
        let hybrid = "12:memory:/kubepods/burstable/podx/y\n1:name=systemd:/a\n0::/kubepods/burstable/podx/y\n";
        assert_eq!(v2_path(hybrid), Some("/kubepods/burstable/podx/y"));
        assert_eq!(v2_path("12:memory:/a\n"), None);
    }

    #[test]
    fn mounts() {
        let unified = "25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(v2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let hybrid = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:6 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(
            v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            v2_mount("25 1 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
        let spaced = "26 25 0:24 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn this_host() {
        // The machine the tests run on has a cgroup v2 hierarchy (unified or hybrid), and the
        // id of its root is the inode of that directory.
        let m = host_v2_mount().expect("cgroup2 mounted");
        assert!(m.join("cgroup.procs").exists(), "{}", m.display());
        assert!(cgroup_id(&m).expect("stat") > 0);
    }
}
