//! The replay service (`timetracer-agent replay-server`): replays for other users over a Unix
//! socket, for the dashboard's Replay button (`timetracer serve`).
//!
//! Trust model (docs/replay.md): the service is root; its clients are not. Each connection is
//! authenticated by the kernel (`SO_PEERCRED`: the client's uid and gid, which it cannot
//! forge), and everything the replay does on the client's behalf is done *as that uid*:
//! - the cassettes are listed and read on a thread holding only the client's credentials, so
//!   a client replays only what it could read itself; the replay runs on private copies of
//!   those bytes (no path is opened twice, so nothing can be swapped in between);
//! - the app runs as the client's uid (root only for a root client);
//! - the command — given in the request or recorded in the cassette — must be one the
//!   operator allowed with `--allow-cmd`, word for word: a cassette's command line is data.
//!
//! Clients are served concurrently, each on its own thread; a client must send its request
//! within the read timeout, in at most [`MAX_REQUEST`] bytes, and may have at most
//! `per_uid` replays running at once (`max_clients` in all).
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Uid};
use serde::Deserialize;

use super::plan::{self, Selection};
use super::run::{ReplayOptions, recorded_command, shell_line};
use super::verdict::{EXIT_ERROR, Verdict};
use crate::privilege::Identity;

/// Largest request line accepted (the cassette list and options of one replay).
pub const MAX_REQUEST: u64 = 64 * 1024;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The only command lines replays may run (argv, word for word).
    pub allow_cmds: Vec<Vec<String>>,
    /// Replays running at once, all clients together.
    pub max_clients: usize,
    /// Replays running at once per client uid.
    pub per_uid: usize,
    /// How long a client may take to send its request.
    pub read_timeout: Duration,
    /// How long the app may take to start, and one request.
    pub startup_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            allow_cmds: Vec::new(),
            max_clients: 8,
            per_uid: 1,
            read_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Parses `--allow-cmd` values (POSIX shell words: `"uvicorn app:app --port 8000"`).
///
/// # Errors
/// Unbalanced quotes, or an empty command.
pub fn parse_allowed(cmds: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    cmds.iter()
        .map(|c| {
            let words =
                shlex::split(c).with_context(|| format!("--allow-cmd {c:?}: unbalanced quotes"))?;
            if words.is_empty() {
                bail!("--allow-cmd {c:?}: empty command");
            }
            Ok(words)
        })
        .collect()
}

/// One replay asked of the service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    cassettes: Vec<PathBuf>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    mock: Vec<String>,
    #[serde(default)]
    live: Vec<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// The client of a connection, as the kernel saw it connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of `conn`.
///
/// # Errors
/// The socket gives no credentials.
pub fn peer_of(conn: &UnixStream) -> nix::Result<Peer> {
    let c = getsockopt(conn, PeerCredentials)?;
    Ok(Peer {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// The verdict line for a replay that could not run.
#[must_use]
pub fn error_verdict(msg: &str) -> serde_json::Value {
    serde_json::json!({
        "verdict": "error", "exit_code": EXIT_ERROR, "summary": msg, "requests": [],
        "startup_misses": [], "blocked": [], "notes": [], "report": format!("timetracer replay — error: {msg}\n"),
    })
}

/// Connections (or replays) open now, in all and per uid.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// A slot held for a client; released on drop.
#[derive(Debug)]
struct Slot<'a> {
    slots: &'a Mutex<Slots>,
    uid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_uid.remove(&self.uid);
            }
        }
    }
}

/// The two limits of a [`Slots`]: per uid and in all, and what is counted (for messages).
#[derive(Clone, Copy, Debug)]
struct Limit {
    per_uid: usize,
    total: usize,
    what: &'static str,
}

impl Limit {
    /// Replays running at once.
    fn running(opts: &ServiceOptions) -> Self {
        Self {
            per_uid: opts.per_uid,
            total: opts.max_clients,
            what: "replay(s) running",
        }
    }

    /// Connections open at once (running or still sending their request): a few more than
    /// the replays, so an idle connection does not make the same user's next one wait.
    fn connected(opts: &ServiceOptions) -> Self {
        Self {
            per_uid: opts.per_uid + 3,
            total: opts.max_clients * 4,
            what: "connection(s) open",
        }
    }
}

fn take_slot(slots: &Mutex<Slots>, uid: u32, limit: Limit) -> Result<Slot<'_>, String> {
    let mut s = slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mine = s.per_uid.get(&uid).copied().unwrap_or(0);
    if mine >= limit.per_uid {
        return Err(format!(
            "uid {uid} already has {mine} {} (the limit per user is {}); try again when one is done",
            limit.what, limit.per_uid
        ));
    }
    if s.total >= limit.total {
        return Err(format!(
            "the replay service is busy ({} {}); try again later",
            s.total, limit.what
        ));
    }
    s.total += 1;
    *s.per_uid.entry(uid).or_default() += 1;
    Ok(Slot { slots, uid })
}

/// Serves `listener` until it fails: one thread per client.
pub fn serve(listener: &UnixListener, opts: &ServiceOptions) {
    let running = Mutex::new(Slots::default());
    let connected = Mutex::new(Slots::default());
    let opts = Arc::new(opts.clone());
    std::thread::scope(|s| {
        for conn in listener.incoming() {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("timetracer-agent: replay service: accept failed: {e}");
                    continue;
                }
            };
            let (opts, running, connected) = (Arc::clone(&opts), &running, &connected);
            let spawned = std::thread::Builder::new()
                .name("tt-replay-client".into())
                .spawn_scoped(s, move || handle(conn, &opts, running, connected));
            if let Err(e) = spawned {
                eprintln!("timetracer-agent: replay service: cannot start a client thread: {e}");
            }
        }
    });
}

/// One client: who it is, its request (within the timeout and size limit), the replay as that
/// client, the verdict line back.
fn handle(
    mut conn: UnixStream,
    opts: &ServiceOptions,
    running: &Mutex<Slots>,
    connected: &Mutex<Slots>,
) {
    let reply = |conn: &mut UnixStream, v: &serde_json::Value| {
        let _ = writeln!(conn, "{v}");
    };
    let peer = match peer_of(&conn) {
        Ok(p) => p,
        Err(e) => {
            reply(
                &mut conn,
                &error_verdict(&format!("cannot identify the client: {e}")),
            );
            return;
        }
    };
    let _connection = match take_slot(connected, peer.uid, Limit::connected(opts)) {
        Ok(s) => s,
        Err(msg) => {
            reply(&mut conn, &error_verdict(&msg));
            return;
        }
    };
    let _ = conn.set_read_timeout(Some(opts.read_timeout));
    let _ = conn.set_write_timeout(Some(opts.read_timeout));
    let line = match read_request(&conn) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!(
                "timetracer-agent: replay service: uid {} pid {}: {msg}",
                peer.uid, peer.pid
            );
            reply(&mut conn, &error_verdict(&msg));
            return;
        }
    };
    let _slot = match take_slot(running, peer.uid, Limit::running(opts)) {
        Ok(s) => s,
        Err(msg) => {
            reply(&mut conn, &error_verdict(&msg));
            return;
        }
    };
    let _ = conn.set_write_timeout(None);
    let verdict = match run_job(&line, peer, opts) {
        Ok(v) => serde_json::to_value(&v).unwrap_or_else(|e| error_verdict(&e.to_string())),
        Err(e) => error_verdict(&format!("{e:#}")),
    };
    eprintln!(
        "timetracer-agent: replay service: uid {} pid {}: {}",
        peer.uid,
        peer.pid,
        verdict["summary"].as_str().unwrap_or("")
    );
    reply(&mut conn, &verdict);
}

/// The request line, within the read timeout and [`MAX_REQUEST`].
fn read_request(conn: &UnixStream) -> Result<String, String> {
    let mut line = String::new();
    let mut reader = BufReader::new(conn.take(MAX_REQUEST + 1));
    match reader.read_line(&mut line) {
        Ok(_) if line.len() as u64 > MAX_REQUEST => {
            Err(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(_) if !line.ends_with('\n') => Err("incomplete request (no end of line)".to_owned()),
        Ok(_) => Ok(line.trim().to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err("no request within the read timeout".to_owned())
        }
        Err(e) => Err(format!("cannot read the request: {e}")),
    }
}

/// Runs one request as `peer`.
fn run_job(line: &str, peer: Peer, opts: &ServiceOptions) -> anyhow::Result<Verdict> {
    let job: Job = serde_json::from_str(line).context("bad request line")?;
    if job.cassettes.is_empty() {
        bail!("the request names no cassette");
    }
    if let Some(p) = job.cassettes.iter().find(|p| !p.is_absolute()) {
        bail!("{}: cassette paths must be absolute", p.display());
    }
    let user = Identity::from_uid(Uid::from_raw(peer.uid), Some(Gid::from_raw(peer.gid)))?;
    // The client's cassettes, listed and read with the client's credentials only.
    let copies = PrivateDir(std::env::temp_dir().join(format!(
        "timetracer-service-{}",
        uuid::Uuid::new_v4().simple()
    )));
    let read = user
        .as_user(|| -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
            plan::cassette_files(&job.cassettes)?
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(&f).with_context(|| f.display().to_string())?;
                    Ok((f, bytes))
                })
                .collect()
        })
        .context("cannot take the client's credentials")?
        .with_context(|| format!("uid {} cannot read the cassettes", peer.uid))?;
    let inputs = copy_private(&copies.0, &read)?;
    // The command: the request's, else the recorded one — either way one the operator allowed.
    let loaded = plan::load_inputs(&inputs)?;
    let (argv, cwd) = match &job.cmd {
        Some(c) if !c.is_empty() => (c.clone(), None),
        _ => {
            let rec = recorded_command(&loaded)
                .context("the cassettes hold no command line: send the app's command in `cmd`")?;
            let argv = rec
                .argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (argv, rec.cwd)
        }
    };
    if !opts.allow_cmds.contains(&argv) {
        let shown: Vec<OsString> = argv.iter().map(OsString::from).collect();
        bail!(
            "command `{}` is not allowed by this replay service: its operator allows {} \
             (replay-server --allow-cmd)",
            shell_line(&shown),
            if opts.allow_cmds.is_empty() {
                "no command".to_owned()
            } else {
                opts.allow_cmds
                    .iter()
                    .map(|c| {
                        format!(
                            "`{}`",
                            shell_line(&c.iter().map(OsString::from).collect::<Vec<_>>())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    let options = ReplayOptions {
        inputs,
        selection: Selection::parse(&job.mock, &job.live)?,
        port: job.port,
        cmd: argv.into_iter().map(OsString::from).collect(),
        cwd: cwd.filter(|d| d.is_dir()),
        startup_timeout: opts.startup_timeout,
        request_timeout: opts.request_timeout,
        run_as: (!user.is_root()).then_some(user),
        ..ReplayOptions::default()
    };
    super::run::run(&options)
}

/// The service's copy of a client's cassettes, removed when the replay is done.
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the client's cassettes into `dir` (private to the service) and returns their paths.
fn copy_private(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    files
        .iter()
        .enumerate()
        .map(|(i, (src, bytes))| {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dest = dir.join(format!("{i:05}-{name}"));
            crate::atomic_file::write(&dest, bytes)?;
            Ok(dest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_commands_are_shell_words() {
        let a = parse_allowed(&["uvicorn app:app --port '80 00'".to_owned()]).unwrap();
        assert_eq!(a, [vec!["uvicorn", "app:app", "--port", "80 00"]]);
        assert!(parse_allowed(&["'open".to_owned()]).is_err());
        assert!(parse_allowed(&[String::new()]).is_err());
    }

    #[test]
    fn slots_limit_per_uid_and_in_all() {
        let slots = Mutex::new(Slots::default());
        let opts = ServiceOptions {
            max_clients: 2,
            per_uid: 1,
            ..ServiceOptions::default()
        };
        let limit = Limit::running(&opts);
        let a = take_slot(&slots, 1000, limit).unwrap();
        assert!(
            take_slot(&slots, 1000, limit)
                .unwrap_err()
                .contains("limit per user")
        );
        let b = take_slot(&slots, 1001, limit).unwrap();
        assert!(take_slot(&slots, 1002, limit).unwrap_err().contains("busy"));
        drop(a);
        let _c = take_slot(&slots, 1000, limit).unwrap();
        drop(b);
        assert_eq!(slots.lock().unwrap().total, 1);
        // Connections: an idle one leaves room for the same user's next ones.
        let conns = Mutex::new(Slots::default());
        let limit = Limit::connected(&opts);
        let held: Vec<_> = (0..4)
            .map(|_| take_slot(&conns, 7, limit).unwrap())
            .collect();
        assert!(take_slot(&conns, 7, limit).is_err());
        drop(held);
        assert_eq!(conns.lock().unwrap().total, 0);
    }

    #[test]
    fn requests_are_bounded_and_timed() {
        let (client, server) = UnixStream::pair().unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // Silent client: the read times out instead of blocking the service.
        assert!(read_request(&server).unwrap_err().contains("timeout"));
        let mut c = &client;
        c.write_all(&vec![b'x'; usize::try_from(MAX_REQUEST).unwrap() + 10])
            .unwrap();
        assert!(read_request(&server).unwrap_err().contains("longer"));
        let (client, server) = UnixStream::pair().unwrap();
        let mut c = &client;
        c.write_all(b"{\"cassettes\": []}\n").unwrap();
        assert_eq!(read_request(&server).unwrap(), "{\"cassettes\": []}");
        assert_eq!(peer_of(&server).unwrap().uid, Uid::current().as_raw());
    }
}
