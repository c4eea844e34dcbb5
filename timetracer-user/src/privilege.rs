//! Least privilege: only the agent is privileged. The app it launches (`record`, `replay`) runs
//! as the *invoking* user, and what the agent writes for that user (cassette directories,
//! cassettes, the index) belongs to them.
//!
//! Who that is ([`resolve`]): `--user USER[:GROUP]` (or `TIMETRACER_USER`), else the user
//! `sudo` (`SUDO_UID`/`SUDO_GID`), `pkexec` (`PKEXEC_UID`) or `doas` (`DOAS_USER`) ran the agent
//! for. Root is never chosen implicitly: an agent running as root with none of these refuses
//! to start the app until `--user root` says so. An agent that is not root (capabilities on the
//! binary) runs the app as itself.
//!
//! Three ways an [`Identity`] is applied, each where it fits:
//! - a launched app: [`Identity::drop_privileges`] in the child before `exec` (supplementary
//!   groups, then the group, then the user — the order in which each call is still allowed);
//! - the recorder's writer thread: [`Identity::enter_fs`] (`setfsuid`/`setfsgid`, per thread on
//!   Linux): every file and directory it creates is the user's, and the kernel checks its
//!   access as the user's, so `--out` cannot write where the user could not;
//! - the replay service reading a client's cassettes: [`Identity::as_user`] on a thread
//!   whose credentials are entirely the client's, so the kernel (modes, ACLs, groups) decides.
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

/// The user could not be resolved or applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--user NAME` names no user.
    #[error("no user named {name:?} (--user takes USER[:GROUP], a name or a numeric id)")]
    NoUser { name: String },
    /// `--user USER:GROUP` names no group.
    #[error("no group named {name:?} (--user takes USER[:GROUP])")]
    NoGroup { name: String },
    /// `SUDO_UID` & co. are not numbers.
    #[error("{var}={value:?} is not a numeric id")]
    BadEnv { var: &'static str, value: String },
    /// The agent is root and nothing said which user the app runs as.
    #[error(
        "refusing to run the app as root: run the agent with sudo (the app then runs as you), \
         or pass --user USER (TIMETRACER_USER), or --user root to really run it as root"
    )]
    ImplicitRoot,
    /// Switching users needs root.
    #[error("--user {name:?}: switching to another user needs the agent to run as root")]
    NotRoot { name: String },
    /// The user database could not be read.
    #[error("cannot read the user database")]
    Lookup(#[source] nix::Error),
}

/// A user the agent acts as: ids, supplementary groups, name and home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups (from the group database, as a login would have them).
    pub groups: Vec<Gid>,
    pub name: String,
    pub home: PathBuf,
}

impl Identity {
    /// The user with id `uid` (primary group `gid`, else the user's own). A uid with no entry
    /// in the user database is still a user: no supplementary groups, home `/`.
    ///
    /// # Errors
    /// The user database could not be read.
    pub fn from_uid(uid: Uid, gid: Option<Gid>) -> Result<Self, Error> {
        let user = User::from_uid(uid).map_err(Error::Lookup)?;
        Ok(Self::of(uid, gid, user))
    }

    fn of(uid: Uid, gid: Option<Gid>, user: Option<User>) -> Self {
        match user {
            Some(u) => {
                let gid = gid.unwrap_or(u.gid);
                let groups = CString::new(u.name.clone())
                    .ok()
                    .and_then(|n| nix::unistd::getgrouplist(&n, gid).ok())
                    .unwrap_or_else(|| vec![gid]);
                Self {
                    uid,
                    gid,
                    groups,
                    name: u.name,
                    home: u.dir,
                }
            }
            None => {
                let gid = gid.unwrap_or_else(|| Gid::from_raw(uid.as_raw()));
                Self {
                    uid,
                    gid,
                    groups: vec![gid],
                    name: uid.to_string(),
                    home: PathBuf::from("/"),
                }
            }
        }
    }

    /// Parses `USER[:GROUP]` (names or numeric ids).
    ///
    /// # Errors
    /// No such user or group.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let gid = match group.filter(|g| !g.is_empty()) {
            None => None,
            Some(g) => Some(match g.parse::<u32>() {
                Ok(n) => Gid::from_raw(n),
                Err(_) => {
                    Group::from_name(g)
                        .map_err(Error::Lookup)?
                        .ok_or_else(|| Error::NoGroup { name: g.to_owned() })?
                        .gid
                }
            }),
        };
        match user.parse::<u32>() {
            Ok(n) => Self::from_uid(Uid::from_raw(n), gid),
            Err(_) => {
                let u = User::from_name(user)
                    .map_err(Error::Lookup)?
                    .ok_or_else(|| Error::NoUser {
                        name: user.to_owned(),
                    })?;
                Ok(Self::of(u.uid, gid, Some(u)))
            }
        }
    }

    /// Root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.uid.is_root()
    }

    /// `HOME`, `USER` and `LOGNAME` for a process running as this user (`sudo` may have left
    /// root's `HOME`, where the app's caches would then be written, or fail to be).
    #[must_use]
    pub fn env(&self) -> [(&'static str, std::ffi::OsString); 3] {
        [
            ("HOME", self.home.clone().into_os_string()),
            ("USER", self.name.clone().into()),
            ("LOGNAME", self.name.clone().into()),
        ]
    }

    /// Becomes this user for good: supplementary groups, group, then user (after `setuid` the
    /// others are no longer allowed). Only in a single-threaded process about to `exec` (the
    /// held child of `record`, a `pre_exec` hook): it allocates nothing.
    ///
    /// # Errors
    /// A call failed (the caller must then not exec).
    pub fn drop_privileges(&self) -> nix::Result<()> {
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)
    }

    /// Makes this thread's file-system identity this user's (`setfsuid`/`setfsgid` change only
    /// the calling thread on Linux; threads it spawns inherit it). Files and directories it
    /// creates belong to the user, and its access is checked as the user's (the file-system
    /// capabilities are cleared). Other threads keep the agent's privileges.
    ///
    /// The thread's supplementary groups become the user's too (root's would otherwise still
    /// open group-readable files of `root`, `disk`, … for it): set first, with the raw system
    /// call that changes only this thread ([`become_on_this_thread`] explains why not nix's).
    pub fn enter_fs(&self) {
        let groups: Vec<libc::gid_t> = self.groups.iter().map(|g| g.as_raw()).collect();
        if let Err(e) = set_thread_groups(&groups) {
            tracing::warn!(error = %e, user = %self.name, "Cannot give the writer thread the user's groups; it keeps the agent's");
        }
        nix::unistd::setfsgid(self.gid);
        nix::unistd::setfsuid(self.uid);
    }

    /// Runs `f` on a new thread that has this user's file-system identity ([`Self::enter_fs`]),
    /// e.g. to create a directory the user will own.
    ///
    /// # Panics
    /// `f` panicked.
    pub fn with_fs<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_fs();
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `f` on a new thread that has this user's credentials and nothing else (user,
    /// group, supplementary groups, no capabilities): what it reads, the kernel lets it read
    /// exactly as it would let the user's own process (modes, ACLs, groups). Other threads keep
    /// the agent's privileges.
    ///
    /// # Errors
    /// The thread could not take the user's credentials (`f` did not run).
    ///
    /// # Panics
    /// `f` panicked.
    pub fn as_user<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        let groups: Vec<libc::gid_t> = self.groups.iter().map(|g| g.as_raw()).collect();
        let (uid, gid) = (self.uid.as_raw(), self.gid.as_raw());
        std::thread::scope(|s| {
            s.spawn(|| {
                become_on_this_thread(uid, gid, &groups)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// Gives the calling thread (only) the credentials `uid`/`gid`/`groups`, for good.
///
/// The glibc wrappers (and nix, which calls them) change every thread of the process (they
/// broadcast the change, as POSIX requires); the kernel's system calls change only the
/// calling thread, which is what a server handling one client per thread needs. Hence the raw
/// `syscall`s.
fn become_on_this_thread(uid: u32, gid: u32, groups: &[libc::gid_t]) -> std::io::Result<()> {
    let check = |rc: libc::c_long| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set_thread_groups(groups)?;
    // SAFETY: integer arguments only; this thread's credentials only.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

/// Sets the calling thread's (only) supplementary groups.
fn set_thread_groups(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` ids from a valid slice; it changes this thread's
    // credentials only.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Who launched apps run as and who owns what is written: `Some(identity)` to switch to,
/// `None` to stay as the agent is (not root, or `--user root` / the agent's own user).
///
/// `flag` is `--user` (or `TIMETRACER_USER`); `env` reads the variables `sudo`, `pkexec` and
/// `doas` set.
///
/// # Errors
/// The agent is root and nothing names a user other than root; a named user or group does
/// not exist; switching users without root.
pub fn resolve(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Identity>, Error> {
    resolve_as(Uid::current(), flag, env)
}

fn resolve_as(
    me: Uid,
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Identity>, Error> {
    let id = match flag.map(str::trim).filter(|f| !f.is_empty()) {
        Some(spec) => {
            let id = Identity::parse(spec)?;
            if !me.is_root() && id.uid != me {
                return Err(Error::NotRoot {
                    name: spec.to_owned(),
                });
            }
            id
        }
        None if !me.is_root() => return Ok(None),
        None => invoking_user(&env)?.ok_or(Error::ImplicitRoot)?,
    };
    // Already that user and group: nothing to switch.
    Ok((id.uid != me || id.gid != Gid::current()).then_some(id))
}

/// The non-root user `sudo`, `pkexec` or `doas` ran the agent for.
fn invoking_user(env: &impl Fn(&str) -> Option<String>) -> Result<Option<Identity>, Error> {
    let num = |var: &'static str| -> Result<Option<u32>, Error> {
        env(var)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().map_err(|_| Error::BadEnv { var, value: v }))
            .transpose()
    };
    let id = if let Some(uid) = num("SUDO_UID")? {
        Identity::from_uid(Uid::from_raw(uid), num("SUDO_GID")?.map(Gid::from_raw))?
    } else if let Some(uid) = num("PKEXEC_UID")? {
        Identity::from_uid(Uid::from_raw(uid), None)?
    } else if let Some(name) = env("DOAS_USER").filter(|n| !n.is_empty()) {
        Identity::parse(&name)?
    } else {
        return Ok(None);
    };
    // `sudo` run by root names root: that is not an explicit `--user root`.
    Ok((!id.is_root()).then_some(id))
}

/// Whether this thread can create files in `dir`, checked with its effective and file-system
/// ids (`AT_EACCESS`; plain `access` would check the real uid, root's in a thread that took a
/// user's file-system ids with [`Identity::enter_fs`]).
#[must_use]
pub fn writable_dir(dir: &Path) -> bool {
    nix::unistd::faccessat(
        None,
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn root_needs_a_user() {
        let root = Uid::from_raw(0);
        assert!(matches!(
            resolve_as(root, None, env_of(&[])),
            Err(Error::ImplicitRoot)
        ));
        // `sudo` from root names root: still implicit.
        assert!(matches!(
            resolve_as(root, None, env_of(&[("SUDO_UID", "0"), ("SUDO_GID", "0")])),
            Err(Error::ImplicitRoot)
        ));
        // Explicit root: stay as we are (when we are root with gid 0).
        if Uid::current().is_root() && Gid::current().as_raw() == 0 {
            assert_eq!(resolve_as(root, Some("root"), env_of(&[])).unwrap(), None);
            assert_eq!(resolve_as(root, Some("0"), env_of(&[])).unwrap(), None);
        }
    }

    #[test]
    fn sudo_user_is_the_invoking_user() {
        let root = Uid::from_raw(0);
        let id = resolve_as(
            root,
            None,
            env_of(&[("SUDO_UID", "65534"), ("SUDO_GID", "65533")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(id.uid.as_raw(), 65534);
        assert_eq!(id.gid.as_raw(), 65533);
        // The flag wins over sudo's variables.
        let id = resolve_as(root, Some("65534:12345"), env_of(&[("SUDO_UID", "1")]))
            .unwrap()
            .unwrap();
        assert_eq!((id.uid.as_raw(), id.gid.as_raw()), (65534, 12345));
        assert!(matches!(
            resolve_as(root, None, env_of(&[("SUDO_UID", "bob")])),
            Err(Error::BadEnv {
                var: "SUDO_UID",
                ..
            })
        ));
        assert!(matches!(
            resolve_as(root, Some("no-such-user-tt"), env_of(&[])),
            Err(Error::NoUser { .. })
        ));
        assert!(matches!(
            resolve_as(root, Some("root:no-such-group-tt"), env_of(&[])),
            Err(Error::NoGroup { .. })
        ));
    }

    #[test]
    fn unprivileged_agent_runs_the_app_as_itself() {
        let me = Uid::from_raw(4321);
        assert_eq!(
            resolve_as(me, None, env_of(&[("SUDO_UID", "1")])).unwrap(),
            None
        );
        assert!(matches!(
            resolve_as(me, Some("0"), env_of(&[])),
            Err(Error::NotRoot { .. })
        ));
    }
}
