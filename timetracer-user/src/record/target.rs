//! Which processes a recording traces: a [`Target`].
//!
//! [`Pid`] is a running process and its descendants (`attach`, `top`); [`Launched`] is a
//! command started by the agent and held until its pid is traced, so tracing starts at its
//! first syscall (`record`). A target seeds the kernel's target set through a [`Seeder`] and
//! says when it is gone; the kernel follows the processes it forks. A set of cgroups (node
//! mode) is one more implementation: it seeds the processes it finds and keeps seeding new
//! ones from [`Target::poll`].
use std::ffi::OsString;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ExitCode, ExitStatus};

use crate::capture::procfs;
use crate::privilege::Identity;

use super::Error;
use super::session::Session;

/// What a recording traces.
pub trait Target {
    /// For the live view's header, e.g. `pid 1234 (uvicorn app:app)`.
    fn describe(&self) -> String;
    /// Adds the processes to trace before the recording starts.
    fn seed(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error>;
    /// Tracing is in place (probes attached): let the target run.
    fn start(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// What the agent prints once tracing is in place.
    fn ready_message(&self, out: &Path) -> String;
    /// Called every drain (10 ms): add processes that joined the target (processes forked by a
    /// traced process are followed by the kernel and need nothing here).
    fn poll(&mut self, _seeder: &mut Seeder<'_>) -> Result<(), Error> {
        Ok(())
    }
    /// The target is gone: the recording flushes and stops.
    fn finished(&mut self) -> bool;
}

/// Adds processes to a recording's target set.
pub struct Seeder<'a> {
    pub(super) session: &'a mut Session,
}

impl Seeder<'_> {
    /// Traces `pid`; with `open_connections`, also registers the TCP connections it already
    /// has (attach to a running process).
    pub fn add_process(&mut self, pid: u32, open_connections: bool) -> Result<(), Error> {
        self.session.add_process(pid, open_connections)
    }

    /// Traces every process that calls `exec` in the cgroup v2 `id` from now on (the kernel
    /// adds it before its first syscall after `exec`).
    pub fn add_cgroup(&mut self, id: u64, dir: &Path) -> Result<(), Error> {
        self.session
            .capture
            .add_cgroup(id)
            .map_err(|source| Error::AddCgroup {
                dir: dir.to_path_buf(),
                source: Box::new(source),
            })
    }

    /// Stops following cgroup `id` (its directory is gone).
    pub fn remove_cgroup(&mut self, id: u64) {
        self.session.capture.remove_cgroup(id);
    }

    /// Stops tracing `pid` (it left the target: node mode's pod was released); the correlator
    /// ends it as if it had exited.
    pub fn remove_process(&mut self, pid: u32) {
        self.session.capture.remove_target(pid);
        self.session.correlator.release_process(pid);
    }

    /// The recording's counters (node mode's `/metrics`).
    #[must_use]
    pub fn counters(&self) -> crate::telemetry::Counters {
        self.session.counters.clone()
    }

    /// The kernel's drop counters now: (reason, events, bytes).
    pub fn kernel_drops(&mut self) -> super::report::KernelDrops {
        self.session.capture.drops()
    }
}

/// `pid 1234 (uvicorn app:app --port 8000)`.
fn describe_pid(pid: u32) -> String {
    let info = procfs::process_info(pid);
    let cmd: Vec<&str> = info.cmdline.iter().map(String::as_str).take(4).collect();
    format!("pid {pid} ({})", cmd.join(" "))
}

/// A running process and its descendants.
#[derive(Debug)]
pub struct Pid(u32);

impl Pid {
    /// The process `pid`, which must exist.
    pub fn new(pid: u32) -> Result<Self, Error> {
        if procfs::exists(pid) {
            Ok(Self(pid))
        } else {
            Err(Error::NoProcess { pid })
        }
    }

    /// The process has exited.
    #[must_use]
    pub fn gone(&self) -> bool {
        !procfs::exists(self.0)
    }
}

impl Target for Pid {
    fn describe(&self) -> String {
        describe_pid(self.0)
    }
    fn seed(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error> {
        for p in procfs::with_descendants(self.0) {
            seeder.add_process(p, true)?;
        }
        Ok(())
    }
    fn ready_message(&self, out: &Path) -> String {
        format!(
            "attached to pid {}; writing cassettes to {}; Ctrl-C to stop",
            self.0,
            out.display()
        )
    }
    fn finished(&mut self) -> bool {
        self.gone()
    }
}

/// Hidden first argument of the held child (see [`Launched`]).
pub const HELD_EXEC: &str = "__exec-held";

/// A command launched under tracing. The child is this binary in a hidden [`HELD_EXEC`] mode:
/// it waits on a pipe until its pid is in the kernel's target set, then execs the command
/// under the same pid, so tracing starts at the command's very first syscall. (A `pre_exec`
/// hook cannot wait: `spawn` itself blocks until the child has exec'd.) Dropped before
/// [`Target::start`], the held child is killed without running the command.
#[derive(Debug)]
pub struct Launched {
    child: Child,
    /// The write end of the hold pipe, until the child is released.
    hold: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Launched {
    /// Starts the held child for `cmd` (not running `cmd` yet); `user`: the command runs as
    /// that user (the held child drops root's privileges right before `exec`).
    pub fn spawn(cmd: &[OsString], user: Option<&Identity>) -> Result<Self, Error> {
        let hold_err = |call| move |source| Error::Hold { call, source };
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(hold_err("pipe2"))?;
        let rd_fd = rd.as_raw_fd();
        nix::fcntl::fcntl(
            rd_fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(hold_err("fcntl"))?;
        let me = std::env::current_exe().map_err(Error::CurrentExe)?;
        let program = cmd.first().cloned().unwrap_or_default();
        let child = std::process::Command::new(me)
            .arg(HELD_EXEC)
            .arg(held_arg(rd_fd, user))
            .arg("--")
            .args(cmd)
            .spawn()
            .map_err(|source| Error::Spawn { program, source })?;
        drop(rd);
        Ok(Self {
            child,
            hold: Some(wr),
            status: None,
        })
    }

    /// The child's pid (the command's, once released).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the command to exit.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self.status {
            Some(s) => Ok(s),
            None => self.child.wait(),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.hold.is_some() {
            // Never released: the command must not run untraced.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Target for Launched {
    fn describe(&self) -> String {
        describe_pid(self.pid())
    }
    fn seed(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error> {
        seeder.add_process(self.pid(), false)
    }
    fn start(&mut self) -> Result<(), Error> {
        if let Some(wr) = self.hold.take() {
            nix::unistd::write(&wr, b"g").map_err(|source| Error::Hold {
                call: "write",
                source,
            })?;
        }
        Ok(())
    }
    fn ready_message(&self, out: &Path) -> String {
        format!(
            "recording pid {}; writing cassettes to {}",
            self.pid(),
            out.display()
        )
    }
    fn finished(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }
}

/// The held child's first argument: the pipe's fd, then the user to become (`FD[,UID,GID]`;
/// one argument, so the command line keeps its shape for `procfs::strip_exec_held`).
fn held_arg(fd: i32, user: Option<&Identity>) -> String {
    match user {
        Some(u) => format!("{fd},{},{}", u.uid, u.gid),
        None => fd.to_string(),
    }
}

/// The held child's side (`timetracer-agent __exec-held FD[,UID,GID] -- CMD...`): waits for
/// the agent's go (one byte on `FD`), becomes the user UID (group GID, the user's supplementary
/// groups, `HOME`/`USER`/`LOGNAME`) when given, then becomes CMD.
#[must_use]
pub fn exec_held(args: &[OsString]) -> ExitCode {
    let mut held = args
        .first()
        .and_then(|a| a.to_str())
        .unwrap_or("")
        .split(',')
        .map(|s| s.parse::<u32>().ok());
    let fd: i32 = held
        .next()
        .flatten()
        .and_then(|f| i32::try_from(f).ok())
        .unwrap_or(-1);
    let user = match (held.next(), held.next()) {
        (Some(Some(uid)), Some(Some(gid))) => Some((uid, gid)),
        _ => None,
    };
    let cmd = args.get(2..).unwrap_or_default();
    if fd < 0 || cmd.is_empty() {
        eprintln!("timetracer-agent: {HELD_EXEC} is internal to `record`");
        return ExitCode::from(2);
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer from an inherited fd, then closing it.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    if n != 1 {
        eprintln!(
            "timetracer-agent: the agent went away before tracing started; not running {:?}",
            cmd[0]
        );
        return ExitCode::from(125);
    }
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    if let Some((uid, gid)) = user {
        let id = Identity::from_uid(
            nix::unistd::Uid::from_raw(uid),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        let dropped = id.map_err(anyhow::Error::from).and_then(|id| {
            id.drop_privileges()?;
            Ok(id)
        });
        match dropped {
            Ok(id) => {
                command.envs(id.env());
            }
            Err(e) => {
                eprintln!(
                    "timetracer-agent: cannot become uid {uid} gid {gid}: {e:#}; not running {:?}",
                    cmd[0]
                );
                return ExitCode::from(126);
            }
        }
    }
    let err = command.exec();
    eprintln!(
        "timetracer-agent: cannot run {:?}: {err} (is it on PATH?)",
        cmd[0]
    );
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Every process in a set of cgroup v2 directories and their sub-cgroups (node mode: the
/// selected pods' containers; `attach --cgroup`). Processes already there are seeded; processes
/// that `exec` there later are added by the kernel before their first syscall after `exec`
/// (`sched_process_exec` and the `TARGET_CGROUPS` map); processes forked by traced ones follow
/// as always. A rescan every second adds sub-cgroups created later and any process that entered
/// without `exec`. Finished when every directory is gone (the containers were removed).
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<std::path::PathBuf>,
    /// Followed cgroups: id -> directory.
    followed: std::collections::HashMap<u64, std::path::PathBuf>,
    /// Processes already added.
    seen: std::collections::HashSet<u32>,
    last_scan: Option<std::time::Instant>,
}

impl Cgroups {
    /// The cgroup v2 directories `dirs` (each must exist under the v2 mount).
    pub fn new(dirs: Vec<std::path::PathBuf>) -> Result<Self, Error> {
        let mount = crate::k8s::cgroup::host_v2_mount().map_err(Error::CgroupFs)?;
        for d in &dirs {
            let canon = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            if !canon.starts_with(&mount) || !canon.join("cgroup.procs").is_file() {
                return Err(Error::NotACgroup {
                    dir: d.clone(),
                    mount,
                });
            }
        }
        Ok(Self {
            dirs,
            followed: std::collections::HashMap::new(),
            seen: std::collections::HashSet::new(),
            last_scan: None,
        })
    }

    /// No directory yet (node mode adds and removes them as pods come and go); checks that
    /// the cgroup v2 hierarchy is mounted.
    pub fn empty() -> Result<Self, Error> {
        crate::k8s::cgroup::host_v2_mount().map_err(Error::CgroupFs)?;
        Ok(Self {
            dirs: Vec::new(),
            followed: std::collections::HashMap::new(),
            seen: std::collections::HashSet::new(),
            last_scan: None,
        })
    }

    /// The directories followed.
    #[must_use]
    pub fn dirs(&self) -> &[std::path::PathBuf] {
        &self.dirs
    }

    /// Follows `dir` (and the cgroups below it) from the next poll on.
    pub fn add_dir(&mut self, dir: std::path::PathBuf) {
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
            // Seed it at the next poll, not up to a second later.
            self.last_scan = None;
        }
    }

    /// Stops following `dir`: its cgroups leave the kernel's `TARGET_CGROUPS` and the
    /// processes in them leave `TARGETS` (a released pod whose processes still run).
    pub fn remove_dir(&mut self, dir: &Path, seeder: &mut Seeder<'_>) {
        let Some(i) = self.dirs.iter().position(|d| d == dir) else {
            return;
        };
        self.dirs.remove(i);
        let mut gone = std::collections::HashMap::new();
        walk_cgroups(dir, &mut gone);
        for (id, d) in &gone {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
            {
                seeder.remove_process(pid);
                self.seen.remove(&pid);
            }
            if self.followed.remove(id).is_some() {
                seeder.remove_cgroup(*id);
            }
        }
        // Cgroups already deleted are no longer walkable: forget what was under the path.
        self.followed.retain(|id, d| {
            let keep = !d.starts_with(dir);
            if !keep {
                seeder.remove_cgroup(*id);
            }
            keep
        });
    }

    /// Follows new cgroups, adds new processes and forgets removed cgroups.
    fn scan(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error> {
        self.last_scan = Some(std::time::Instant::now());
        let mut present = std::collections::HashMap::new();
        for d in &self.dirs {
            walk_cgroups(d, &mut present);
        }
        for (id, dir) in &present {
            if !self.followed.contains_key(id) {
                seeder.add_cgroup(*id, dir)?;
                tracing::debug!(cgroup = %dir.display(), id, "Following cgroup");
                self.followed.insert(*id, dir.clone());
            }
        }
        self.followed.retain(|id, dir| {
            let keep = present.contains_key(id);
            if !keep {
                tracing::debug!(cgroup = %dir.display(), "Cgroup removed");
                seeder.remove_cgroup(*id);
            }
            keep
        });
        let mut live = std::collections::HashSet::new();
        for dir in present.values() {
            let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
                continue;
            };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                live.insert(pid);
                if self.seen.insert(pid) {
                    // A process that exited since the read is not an error.
                    if procfs::exists(pid) {
                        seeder.add_process(pid, true)?;
                    }
                }
            }
        }
        // Forget exited processes so a reused pid is seeded again.
        self.seen.retain(|p| live.contains(p));
        Ok(())
    }
}

/// `dir` and every cgroup below it, by id.
fn walk_cgroups(dir: &Path, out: &mut std::collections::HashMap<u64, std::path::PathBuf>) {
    let Ok(id) = crate::k8s::cgroup::cgroup_id(dir) else {
        return;
    };
    out.insert(id, dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_cgroups(&e.path(), out);
        }
    }
}

impl Target for Cgroups {
    fn describe(&self) -> String {
        match self.dirs.as_slice() {
            [one] => format!("cgroup {}", one.display()),
            many => format!("{} cgroups", many.len()),
        }
    }
    fn seed(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error> {
        self.scan(seeder)
    }
    fn ready_message(&self, out: &Path) -> String {
        format!(
            "attached to {}; writing cassettes to {}; Ctrl-C to stop",
            self.describe(),
            out.display()
        )
    }
    fn poll(&mut self, seeder: &mut Seeder<'_>) -> Result<(), Error> {
        if self
            .last_scan
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            self.scan(seeder)?;
        }
        Ok(())
    }
    fn finished(&mut self) -> bool {
        self.dirs.iter().all(|d| !d.exists())
    }
}
