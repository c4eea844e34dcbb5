//! `timetracer serve`'s audit log: one JSON line per action on a cassette (replay, export,
//! download, view), saying who, what and when.
//!
//! ```json
//! {"time":"2026-12-07T20:15:03.512Z","action":"download","cassette":"2026-12-07/GET__x__1a2b3c4d.json",
//!  "result":"ok","status":200,"peer":"127.0.0.1:51234","uid":1000,"user":"alice","dir":"/home/alice/cassettes"}
//! ```
//!
//! - **who**: `peer`, the client's address; for a client on this host, `uid`/`user`, the owner
//!   of the client's socket (from `/proc/net/tcp{,6}`: the row whose local address is the
//!   peer's); absent when unknown (a remote client). Every audited request has already passed
//!   the run's token check.
//! - **what**: `action`, `cassette` (as requested, relative to `dir`; `b` too for a
//!   comparison), `result` (`ok`, `refused`, `error`, or a replay's verdict: `same`,
//!   `differs`, `dependency-mismatch`), `status` (HTTP), `detail` (why, when not `ok`).
//! - **when**: `time`, RFC 3339 in UTC with milliseconds.
//!
//! The file is opened for appending (never truncated), created 0600 in a 0700 directory, and
//! each line is one `write` followed by `fdatasync`, so a line is on disk before the response
//! that it describes is sent; when the line cannot be written, a download or export is refused
//! (503) rather than served unaudited.
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// The audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "cannot open the audit log {}: give a writable file with --audit-log FILE",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no directory for the audit log (neither XDG_STATE_HOME nor HOME is set): give one with \
         --audit-log FILE"
    )]
    NoStateDir,
}

/// What was done to a cassette.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Replay,
    Export,
    Download,
    /// The timeline page, the detail pane or a comparison read the cassette.
    View,
    /// Its tags and note were changed (`POST /api/notes`).
    Annotate,
}

/// What was done, and how it ended.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct What<'a> {
    pub action: Action,
    pub cassette: &'a str,
    /// The second cassette of a comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<&'a str>,
    pub result: &'a str,
    /// The HTTP status answered.
    pub status: u16,
    /// Why, when the result is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// One line of the log.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    time: String,
    #[serde(flatten)]
    what: &'a What<'a>,
    peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    dir: &'a str,
}

/// Who asked: the peer's address, and on this host the owner of its socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub peer: SocketAddr,
    pub uid: Option<u32>,
    pub user: Option<String>,
}

impl Who {
    /// The client at `peer` of the server listening on `server`.
    #[must_use]
    pub fn of(peer: SocketAddr, server: SocketAddr) -> Self {
        let uid = crate::capture::procfs::tcp_peer_uid(peer, server.port());
        let user = uid.and_then(|u| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                .ok()
                .flatten()
                .map(|u| u.name)
        });
        Self { peer, uid, user }
    }
}

/// The open log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    dir: String,
    file: Mutex<File>,
}

/// The default log of the served directory `dir` (canonical):
/// `$XDG_STATE_HOME/timetracer/audit/<name>-<hash>.jsonl`, else under `~/.local/state`; the
/// hash (of the full path) keeps two directories of the same name apart.
///
/// # Errors
/// Neither variable is set.
pub fn default_path(
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PathBuf, AuditError> {
    let state = env("XDG_STATE_HOME")
        .filter(|s| s.starts_with('/'))
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/state")))
        .ok_or(AuditError::NoStateDir)?;
    let name = super::paths::plain_name(
        &dir.file_name()
            .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned()),
    );
    let hash = crate::cassette::sha256_tagged(dir.as_os_str().as_encoded_bytes());
    let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
    Ok(state
        .join("timetracer/audit")
        .join(format!("{name}-{}.jsonl", &hex[..12.min(hex.len())])))
}

impl AuditLog {
    /// Opens (creates 0600, parents 0700) `path` for appending; the lines will name `dir`.
    ///
    /// # Errors
    /// The file or its directory cannot be created or opened for appending.
    pub fn open(path: &Path, dir: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(err)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if !meta.is_file() {
            return Err(err(std::io::Error::other("not a regular file")));
        }
        // A log made by hand with a wider mode: narrow it (ours), it names who read what.
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(err)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            dir: dir.display().to_string(),
            file: Mutex::new(file),
        })
    }

    /// Where the log is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and waits until it is on disk.
    ///
    /// # Errors
    /// The line could not be written or synced.
    pub fn record(&self, who: &Who, what: &What<'_>) -> std::io::Result<()> {
        let entry = Entry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            what,
            peer: who.peer.to_string(),
            uid: who.uid,
            user: who.user.as_deref(),
            dir: &self.dir,
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write of the whole line on an O_APPEND file: lines never interleave.
        (&*f).write_all(&line)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_in_the_state_dir() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let d = Path::new("/srv/my cassettes");
        let p = default_path(d, env(&[("HOME", "/home/a")])).unwrap();
        assert!(
            p.starts_with("/home/a/.local/state/timetracer/audit"),
            "{}",
            p.display()
        );
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("my_cassettes-") && name.ends_with(".jsonl"),
            "{name}"
        );
        let p2 = default_path(d, env(&[("HOME", "/home/a"), ("XDG_STATE_HOME", "/st")])).unwrap();
        assert!(p2.starts_with("/st/timetracer/audit"));
        let other =
            default_path(Path::new("/x/my cassettes"), env(&[("HOME", "/home/a")])).unwrap();
        assert_ne!(p, other, "same name, other directory");
        assert!(matches!(
            default_path(d, env(&[])),
            Err(AuditError::NoStateDir)
        ));
    }

    #[test]
    fn appends_private_lines() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state/audit.jsonl");
        std::fs::create_dir(t.path().join("state")).unwrap();
        std::fs::write(&path, b"{\"earlier\":1}\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let log = AuditLog::open(&path, Path::new("/c")).unwrap();
        let who = Who {
            peer: "127.0.0.1:4000".parse().unwrap(),
            uid: Some(1000),
            user: Some("alice".into()),
        };
        let what = What {
            action: Action::Download,
            cassette: "a.json",
            other: None,
            result: "ok",
            status: 200,
            detail: None,
        };
        log.record(&who, &what).unwrap();
        log.record(
            &who,
            &What {
                action: Action::Replay,
                cassette: "b.json",
                result: "refused",
                status: 403,
                detail: Some("outside"),
                ..what
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "appended, not truncated");
        assert_eq!(lines[1]["action"], "download");
        assert_eq!(lines[1]["user"], "alice");
        assert_eq!(lines[2]["detail"], "outside");
        assert!(lines[2]["time"].as_str().unwrap().ends_with('Z'));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A symlink is not followed.
        let link = t.path().join("link.jsonl");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(AuditLog::open(&link, Path::new("/c")).is_err());
    }
}
