//! Loading and attaching the kernel programs, seeding them with the traced processes and
//! their already-open sockets, and draining the ring buffer.
//!
//! The ring buffer is submitted to with `BPF_RB_NO_WAKEUP` (a wakeup inside the traced syscall
//! costs ~2.5 µs on our VMs, see docs/ARCHITECTURE.md), so [`Capture::drain`] is called on a
//! short timer instead of waiting on epoll.
pub mod ebpf_log;
pub mod procfs;
pub mod python;
pub mod tls;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, UProbe, uprobe::UProbeScope},
};
pub use ebpf_log::EbpfLogLevel;
use timetracer_common::{
    Config, DROP_SLOTS, Drop, MAP_CONFIG, MAP_DROPS, MAP_EVENTS, MAP_PY_HITS, MAP_PY_PROCS,
    MAP_SOCKS, MAP_TARGET_CGROUPS, MAP_TARGETS, PREEXISTING_CONN_ID_BASE, PY_HIT_SLOTS, PyHit,
    PyProc, ROLE_CLIENT, ROLE_SERVER, SockState,
};

/// The compiled kernel object (empty when built without eBPF, see build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/timetracer"));

/// Where tracefs must be for aya to find tracepoints.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Why tracing could not start. Each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this binary was built without eBPF (bpf-linker was missing at build time); run `cargo xtask install` then `cargo xtask build`"
    )]
    BuiltWithoutEbpf,
    #[error("tracing needs root (CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN); run it with sudo")]
    NotRoot,
    #[error(
        "tracefs is not mounted at {TRACEFS} and mounting it failed ({source}); run `mount -t tracefs tracefs {TRACEFS}`"
    )]
    NoTracefs {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel has no tracepoint {category}/{name} ({detail}); timetracer needs syscall tracepoints (CONFIG_FTRACE_SYSCALLS) and a kernel >= 5.17 (bpf_loop)"
    )]
    MissingTracepoint {
        category: String,
        name: String,
        detail: String,
    },
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("loading program {name} failed: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {0} is missing from the object (stale build? run `cargo xtask build`)")]
    MissingMap(&'static str),
    #[error("reading the kernel log map (--ebpf-log) failed: {0}")]
    EbpfLog(#[source] aya_log::Error),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Programs and the tracepoints each one is attached to.
const PROGRAMS: &[(&str, &[(&str, &str)])] = &[
    ("sys_enter_read", &[("syscalls", "sys_enter_read")]),
    ("sys_enter_write", &[("syscalls", "sys_enter_write")]),
    ("sys_enter_readv", &[("syscalls", "sys_enter_readv")]),
    ("sys_enter_writev", &[("syscalls", "sys_enter_writev")]),
    ("sys_enter_recvfrom", &[("syscalls", "sys_enter_recvfrom")]),
    ("sys_enter_sendto", &[("syscalls", "sys_enter_sendto")]),
    ("sys_enter_recvmsg", &[("syscalls", "sys_enter_recvmsg")]),
    ("sys_enter_sendmsg", &[("syscalls", "sys_enter_sendmsg")]),
    ("sys_enter_connect", &[("syscalls", "sys_enter_connect")]),
    (
        "sys_enter_accept",
        &[
            ("syscalls", "sys_enter_accept"),
            ("syscalls", "sys_enter_accept4"),
        ],
    ),
    ("sys_enter_close", &[("syscalls", "sys_enter_close")]),
    (
        "sys_enter_sendfile",
        &[("syscalls", "sys_enter_sendfile64")],
    ),
    (
        "sys_exit_any",
        &[
            ("syscalls", "sys_exit_read"),
            ("syscalls", "sys_exit_write"),
            ("syscalls", "sys_exit_readv"),
            ("syscalls", "sys_exit_writev"),
            ("syscalls", "sys_exit_recvfrom"),
            ("syscalls", "sys_exit_sendto"),
            ("syscalls", "sys_exit_recvmsg"),
            ("syscalls", "sys_exit_sendmsg"),
            ("syscalls", "sys_exit_connect"),
            ("syscalls", "sys_exit_accept"),
            ("syscalls", "sys_exit_accept4"),
            ("syscalls", "sys_exit_sendfile64"),
        ],
    ),
    ("task_newtask", &[("task", "task_newtask")]),
    ("sched_process_exit", &[("sched", "sched_process_exit")]),
    ("sched_process_exec", &[("sched", "sched_process_exec")]),
];

/// Capture options that reach the kernel.
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions {
    /// Max payload bytes copied per syscall.
    pub max_bytes_per_syscall: u32,
    /// Kernel-side diagnostics ([`ebpf_log`]); off costs nothing.
    pub ebpf_log: EbpfLogLevel,
}

/// Uprobe programs (entry programs are named by `tls::SiteKind::program`).
const UPROBES: &[&str] = &[
    "ssl_read_ex_enter",
    "ssl_read_enter",
    "ssl_write_ex_enter",
    "ssl_write_enter",
    "ssl_exit",
    "py_task_init",
    "py_task_init_ret",
    "py_ctx_copy_ret",
];

/// What happened when a process' OpenSSL libraries were looked at.
#[derive(Debug)]
pub enum TlsReport {
    /// Probes attached to `lib` of `pid`.
    Attached {
        pid: u32,
        lib: PathBuf,
        sites: Vec<tls::Site>,
    },
    /// `lib` of `pid` cannot be probed; the message says why and what still works.
    Unsupported {
        pid: u32,
        lib: PathBuf,
        reason: String,
    },
}

/// Loaded, attached kernel programs.
pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    /// The kernel log reader when `--ebpf-log` is on. Owns the log map's fd, so it lives as
    /// long as the programs.
    log: Option<ebpf_log::Reader>,
    /// (pid, device, inode) of libraries already handled.
    tls_seen: std::collections::HashSet<(u32, u64, u64)>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

/// Checks that tracing can start at all, before any process is launched.
pub fn preflight() -> Result<(), LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::BuiltWithoutEbpf);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(LoadError::NotRoot);
    }
    ensure_tracefs()
}

fn ensure_tracefs() -> Result<(), LoadError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| LoadError::NoTracefs { source: e.into() })
}

/// Reads `field`'s offset from a tracepoint format file.
fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Option<u32> {
    let text = fs::read_to_string(
        Path::new(TRACEFS)
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()?;
    text.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        let fname = decl.rsplit([' ', '*']).next()?;
        if fname != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

impl Capture {
    /// Loads and attaches everything. Call [`preflight`] first for friendlier errors.
    pub fn load(opts: CaptureOptions) -> Result<Self, LoadError> {
        preflight()?;
        let mut loader = EbpfLoader::new();
        ebpf_log::configure(&mut loader, opts.ebpf_log);
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        // Before any program is loaded: they refer to the log map by an fd the reader then owns.
        let log = match opts.ebpf_log {
            EbpfLogLevel::Off => None,
            level => {
                tracing::info!(target: ebpf_log::TARGET, %level, "Kernel-side logging on");
                Some(ebpf_log::Reader::new(&mut ebpf).map_err(LoadError::EbpfLog)?)
            }
        };
        let mut cfg = Config {
            max_bytes_per_syscall: opts.max_bytes_per_syscall,
            ..Config::default()
        };
        if let Some(o) = tracepoint_field_offset("task", "task_newtask", "pid") {
            cfg.newtask_pid_off = o;
        }
        if let Some(o) = tracepoint_field_offset("task", "task_newtask", "clone_flags") {
            cfg.newtask_flags_off = o;
        }
        {
            let map = ebpf
                .map_mut(MAP_CONFIG)
                .ok_or(LoadError::MissingMap(MAP_CONFIG))?;
            let mut arr: Array<_, Config> =
                Array::try_from(map).map_err(|source| LoadError::Map {
                    name: MAP_CONFIG,
                    source,
                })?;
            arr.set(0, cfg, 0).map_err(|source| LoadError::Map {
                name: MAP_CONFIG,
                source,
            })?;
        }
        for (prog, points) in PROGRAMS {
            let p: &mut TracePoint = ebpf
                .program_mut(prog)
                .ok_or(LoadError::MissingMap("program"))?
                .try_into()
                .map_err(|source| LoadError::Program { name: prog, source })?;
            p.load()
                .map_err(|source| LoadError::Program { name: prog, source })?;
            for (category, name) in *points {
                p.attach(category, name)
                    .map_err(|e| LoadError::MissingTracepoint {
                        category: (*category).to_owned(),
                        name: (*name).to_owned(),
                        detail: e.to_string(),
                    })?;
            }
        }
        for name in UPROBES {
            let p: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(LoadError::MissingMap("uprobe program"))?
                .try_into()
                .map_err(|source| LoadError::Program { name, source })?;
            p.load()
                .map_err(|source| LoadError::Program { name, source })?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map(MAP_EVENTS)
                .ok_or(LoadError::MissingMap(MAP_EVENTS))?,
        )
        .map_err(|source| LoadError::Map {
            name: MAP_EVENTS,
            source,
        })?;
        Ok(Self {
            ebpf,
            ring,
            log,
            tls_seen: std::collections::HashSet::new(),
        })
    }

    /// Attaches the TLS probes to every OpenSSL library `pid` maps that was not handled yet
    /// (call again later: `import ssl` and wheels with their own libssl load lazily). Probes
    /// are scoped to `pid`, so other processes using the same library pay nothing.
    pub fn attach_tls(&mut self, pid: u32) -> Vec<TlsReport> {
        let mut out = Vec::new();
        let Some(scope_pid) = std::num::NonZeroU32::new(pid) else {
            return out;
        };
        let mut libs = tls::mapped_ssl_libs(pid);
        libs.extend(tls::system_ssl_libs(pid));
        for lib in libs {
            let host_path = tls::in_process_root(pid, &lib);
            let Ok(meta) = fs::metadata(&host_path) else {
                continue;
            };
            let id = {
                use std::os::unix::fs::MetadataExt as _;
                (pid, meta.dev(), meta.ino())
            };
            if !self.tls_seen.insert(id) {
                continue;
            }
            let plan = match tls::plan(&host_path) {
                Ok(p) => p,
                Err(e) => {
                    out.push(TlsReport::Unsupported {
                        pid,
                        lib,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let mut failed = None;
            for site in &plan.sites {
                for prog in [site.kind.program(), "ssl_exit"] {
                    let attached = self
                        .ebpf
                        .program_mut(prog)
                        .and_then(|p| <&mut UProbe>::try_from(p).ok())
                        .map(|p| {
                            p.attach(site.offset, &host_path, UProbeScope::OneProcess(scope_pid))
                        });
                    match attached {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            failed = Some(format!(
                                "attaching {prog} at {} failed: {}",
                                site.what,
                                uprobe_failure(&e)
                            ));
                        }
                        None => failed = Some(format!("program {prog} missing (stale build)")),
                    }
                }
            }
            match failed {
                Some(reason) => out.push(TlsReport::Unsupported { pid, lib, reason }),
                None => out.push(TlsReport::Attached {
                    pid,
                    lib,
                    sites: plan.sites,
                }),
            }
        }
        out
    }

    /// Stops tracing now and leaves the detaching of the probes to the kernel, in the
    /// background: what the agent does last, after every cassette is written.
    ///
    /// Closing a tracepoint's perf event waits for an RCU grace period while holding the
    /// kernel's global `event_mutex` (`perf_trace_destroy` → `perf_trace_event_unreg` →
    /// `tracepoint_synchronize_unregister`), so the probes detach one after the other: 60 to
    /// 140 ms each on our VMs, 2.8 s for the agent's ~40 links, which was the agent's exit time
    /// after SIGINT (issue #22). Instead, the target sets are emptied (from then on every
    /// probe returns at its first map lookup: the traced app pays a lookup per syscall until
    /// the detach is done), and a child process forked here holds the last references to the
    /// programs, maps and links: it closes its standard streams (nobody waits on a pipe for
    /// it) and exits, and the kernel detaches everything during that exit while this process
    /// goes on at once. When the fork fails, the probes are detached here, slowly.
    pub fn release(mut self) {
        for name in [MAP_TARGETS, MAP_TARGET_CGROUPS] {
            if let Some(map) = self.ebpf.map_mut(name) {
                clear_map(map);
            }
        }
        // SAFETY: the child runs only async-signal-safe calls (close, _exit) before exiting:
        // nothing that could need a lock another thread of this process held at the fork.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                for fd in 0..3 {
                    // SAFETY: close(2) and _exit(2) are async-signal-safe; the child never
                    // returns into Rust code.
                    unsafe { libc::close(fd) };
                }
                // SAFETY: as above; _exit skips every destructor and atexit handler.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                tracing::debug!(%child, "Probes are detached by a child process");
            }
            Err(e) => tracing::debug!(error = %e, "Cannot fork; detaching the probes here"),
        }
        // This process's references go now; with the child holding them, quickly.
        drop(self);
    }

    /// Adds a process to the traced set (its children follow automatically).
    pub fn add_target(&mut self, tgid: u32) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut(MAP_TARGETS)
            .ok_or(LoadError::MissingMap(MAP_TARGETS))?;
        let mut m: HashMap<_, u32, u32> =
            HashMap::try_from(map).map_err(|source| LoadError::Map {
                name: MAP_TARGETS,
                source,
            })?;
        m.insert(tgid, 1, 0).map_err(|source| LoadError::Map {
            name: MAP_TARGETS,
            source,
        })
    }

    /// Stops tracing a process (node mode: its pod was deleted or is no longer selected; best
    /// effort: a process that already exited is no longer in the set).
    pub fn remove_target(&mut self, tgid: u32) {
        if let Some(map) = self.ebpf.map_mut(MAP_TARGETS)
            && let Ok(mut m) = HashMap::<_, u32, u32>::try_from(map)
        {
            let _ = m.remove(&tgid);
        }
    }

    /// Traces every process that calls `exec` in the cgroup v2 whose id is `cgroup` (node mode;
    /// processes already in it are added with [`Self::add_target`]).
    pub fn add_cgroup(&mut self, cgroup: u64) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut(MAP_TARGET_CGROUPS)
            .ok_or(LoadError::MissingMap(MAP_TARGET_CGROUPS))?;
        let mut m: HashMap<_, u64, u32> =
            HashMap::try_from(map).map_err(|source| LoadError::Map {
                name: MAP_TARGET_CGROUPS,
                source,
            })?;
        m.insert(cgroup, 1, 0).map_err(|source| LoadError::Map {
            name: MAP_TARGET_CGROUPS,
            source,
        })
    }

    /// Stops following cgroup `cgroup` (best effort: a missing entry is fine).
    pub fn remove_cgroup(&mut self, cgroup: u64) {
        if let Some(map) = self.ebpf.map_mut(MAP_TARGET_CGROUPS)
            && let Ok(mut m) = HashMap::<_, u64, u32>::try_from(map)
        {
            let _ = m.remove(&cgroup);
        }
    }

    /// Tells the kernel about a socket that was open before tracing started. Returns the
    /// connection id it was given. Does nothing if the kernel already tracks that fd (it saw
    /// the connect/accept after attach).
    pub fn add_socket(
        &mut self,
        tgid: u32,
        fd: i32,
        server: bool,
        seq: u64,
    ) -> Result<Option<u64>, LoadError> {
        let map = self
            .ebpf
            .map_mut(MAP_SOCKS)
            .ok_or(LoadError::MissingMap(MAP_SOCKS))?;
        let mut m: HashMap<_, u64, SockState> =
            HashMap::try_from(map).map_err(|source| LoadError::Map {
                name: MAP_SOCKS,
                source,
            })?;
        let key = (u64::from(tgid) << 32) | u64::from(fd as u32);
        if m.get(&key, 0).is_ok() {
            return Ok(None);
        }
        let conn_id = PREEXISTING_CONN_ID_BASE | seq;
        let st = SockState {
            conn_id,
            rx_pos: 0,
            tx_pos: 0,
            role: if server { ROLE_SERVER } else { ROLE_CLIENT },
            flags: 0,
            ssl: 0,
        };
        // Never overwrite an entry the kernel created in the meantime.
        const BPF_NOEXIST: u64 = 1;
        match m.insert(key, st, BPF_NOEXIST) {
            Ok(()) => Ok(Some(conn_id)),
            Err(e) => {
                tracing::debug!(tgid, fd, error = %e, "Socket not seeded");
                Ok(None)
            }
        }
    }

    /// Hands every pending ring-buffer record to `f`; returns how many there were. Forwards
    /// pending kernel log messages first (`--ebpf-log`).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        if let Some(log) = &mut self.log {
            log.flush();
        }
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }

    /// Attaches the asyncio probes of issue #7 to `pid` (scoped to it) and then tells the kernel
    /// to stamp its socket writes. Returns the sites attached, or why not.
    pub fn attach_python(&mut self, pid: u32, rt: &python::Runtime) -> Result<Vec<String>, String> {
        let scope = UProbeScope::OneProcess(
            std::num::NonZeroU32::new(pid).ok_or_else(|| "pid 0".to_owned())?,
        );
        // `copy_site.offset == u64::MAX`: attached before, only the task probe is new.
        let mut sites = Vec::new();
        if rt.copy_site.offset != u64::MAX {
            sites.push((
                "py_ctx_copy_ret",
                &rt.copy_site,
                "PyContext_CopyCurrent (return)",
            ));
        }
        if let Some(t) = &rt.task_site {
            sites.push(("py_task_init", t, "_asyncio.Task.__init__ (entry)"));
            sites.push(("py_task_init_ret", t, "_asyncio.Task.__init__ (return)"));
        }
        let mut done = Vec::new();
        for (prog, site, what) in sites {
            let p: &mut UProbe = self
                .ebpf
                .program_mut(prog)
                .and_then(|p| <&mut UProbe>::try_from(p).ok())
                .ok_or_else(|| format!("program {prog} missing (stale build)"))?;
            p.attach(site.offset, &site.path, scope).map_err(|e| {
                format!(
                    "attaching {what} at {}:{:#x} failed: {}",
                    site.path.display(),
                    site.offset,
                    uprobe_failure(&e)
                )
            })?;
            done.push(format!(
                "{what} at {:#x} ({}{})",
                site.offset,
                site.how,
                if site.emulated {
                    ", emulated"
                } else {
                    ", single-stepped"
                }
            ));
        }
        let map = self
            .ebpf
            .map_mut(MAP_PY_PROCS)
            .ok_or_else(|| "map PY_PROCS missing (stale build)".to_owned())?;
        let mut m: HashMap<_, u32, PyProc> = HashMap::try_from(map).map_err(|e| e.to_string())?;
        m.insert(pid, rt.proc, 0).map_err(|e| e.to_string())?;
        Ok(done)
    }

    /// Python probe counters summed over CPUs: (name, count).
    pub fn py_hits(&mut self) -> Vec<(&'static str, u64)> {
        let Some(map) = self.ebpf.map_mut(MAP_PY_HITS) else {
            return Vec::new();
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return Vec::new();
        };
        PyHit::ALL
            .iter()
            .filter(|h| (**h as u32) < PY_HIT_SLOTS)
            .map(|h| {
                (
                    h.name(),
                    arr.get(&(*h as u32), 0)
                        .map(|v| v.iter().sum())
                        .unwrap_or(0),
                )
            })
            .collect()
    }

    /// Kernel drop counters summed over CPUs: (reason, events, bytes).
    pub fn drops(&mut self) -> Vec<(&'static str, u64, u64)> {
        let Some(map) = self.ebpf.map_mut(MAP_DROPS) else {
            return Vec::new();
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(map) else {
            return Vec::new();
        };
        let sum = |slot: u32| -> u64 {
            if slot >= DROP_SLOTS {
                return 0;
            }
            arr.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
        };
        Drop::ALL
            .iter()
            .map(|d| (d.name(), sum(d.events_slot()), sum(d.bytes_slot())))
            .collect()
    }
}

/// Converts a kernel [`timetracer_common::SockAddr`] to a std address.
#[must_use]
pub fn to_socket_addr(a: &timetracer_common::SockAddr) -> Option<SocketAddr> {
    match a.family {
        2 => Some(SocketAddr::from((
            [a.addr[0], a.addr[1], a.addr[2], a.addr[3]],
            a.port,
        ))),
        10 => Some(SocketAddr::from((a.addr, a.port))),
        _ => None,
    }
}

/// Removes every entry of a hash map of the probes, whatever its key type (u32 tgids, u64
/// cgroup ids). Best effort: entries that vanish meanwhile are fine.
fn clear_map(map: &mut aya::maps::Map) {
    if let Ok(mut m) = HashMap::<_, u32, u32>::try_from(&mut *map) {
        let keys: Vec<u32> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
    } else if let Ok(mut m) = HashMap::<_, u64, u32>::try_from(map) {
        let keys: Vec<u64> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
    }
}

/// A uprobe attach error with its errno and, when the kernel refused it for want of a
/// capability, the fix: some kernels (6.18 here, measured) answer `perf_event_open` of a
/// uprobe with EACCES to CAP_PERFMON and accept only CAP_SYS_ADMIN.
fn uprobe_failure(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let refused = matches!(io.raw_os_error(), Some(libc::EACCES | libc::EPERM));
            return if refused && !has_sys_admin() {
                format!(
                    "{e}: {io} (this kernel opens uprobes only for CAP_SYS_ADMIN, CAP_PERFMON is \
                     not enough: grant CAP_SYS_ADMIN; the Helm chart does with \
                     uprobes.sysAdmin=true)"
                )
            } else {
                format!("{e}: {io}")
            };
        }
        cur = err.source();
    }
    e.to_string()
}

/// `CAP_SYS_ADMIN`'s bit (capability(7); libc does not export capability numbers).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process holds CAP_SYS_ADMIN (`CapEff` in /proc/self/status).
fn has_sys_admin() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}
