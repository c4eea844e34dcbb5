//! Client of the privileged replay service (`sudo timetracer-agent replay-server`).
//!
//! Protocol (one request per connection, over a Unix socket, default
//! `/run/timetracer/replay.sock`, `TIMETRACER_REPLAY_SOCKET` overrides it): the client writes
//! one JSON line `{"cassettes": ["/abs/path.json"], "cmd": null}` and reads one JSON line
//! back, the verdict, which is the JSON of `timetracer-agent replay --json`:
//!
//! ```json
//! {"verdict": "same"|"differs"|"dependency-mismatch"|"error", "exit_code": 0,
//!  "summary": "one line", "requests": [{"cassette": "...", "method": "GET", "target": "/x",
//!  "outcome": "same", "expected_status": 200, "actual_status": 200,
//!  "differences": [{"field": "body.items[0].id", "expected": 1, "actual": 2}],
//!  "dependencies": {"matched": 3, "missed": 0, "unused": 0},
//!  "misses": [{"protocol": "http", "destination": "host:port", "call": "GET /x?y=2",
//!              "expected": "GET /x?y=1", "field": "query.y"}]}],
//!  "notes": ["..."], "report": "the human-readable text verdict"}
//! ```
//!
//! `cmd` is always `null` here: the service replays the command line recorded in the
//! cassette — only when its operator allowed that command (`replay-server --allow-cmd`), as
//! the uid of the process that connects (this server's), and only with cassettes that uid can
//! read (`replay::service`). The web UI never sends a command of its own; a refused command
//! comes back as an `error` verdict that names it.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

/// Where the service listens unless `TIMETRACER_REPLAY_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/timetracer/replay.sock";
/// Longest verdict line accepted.
const MAX_VERDICT_BYTES: u64 = 16 * 1024 * 1024;

/// The socket to use: `TIMETRACER_REPLAY_SOCKET`, else [`DEFAULT_SOCKET`].
#[must_use]
pub fn default_socket() -> PathBuf {
    std::env::var_os("TIMETRACER_REPLAY_SOCKET")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// The one command that starts the service on `socket`.
#[must_use]
pub fn start_command(socket: &Path) -> String {
    if socket == Path::new(DEFAULT_SOCKET) {
        "sudo timetracer-agent replay-server".to_owned()
    } else {
        format!(
            "sudo timetracer-agent replay-server --socket {}",
            crate::analysis::format::shell_quote(&socket.to_string_lossy())
        )
    }
}

/// What the client sends.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayRequest {
    pub cassettes: Vec<String>,
    pub cmd: Option<Vec<String>>,
}

/// The service's answer (unknown fields are ignored, missing ones default).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    pub verdict: String,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub requests: Vec<RequestVerdict>,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub report: String,
}

/// The verdict for one replayed request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestVerdict {
    #[serde(default)]
    pub cassette: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub expected_status: Option<i64>,
    #[serde(default)]
    pub actual_status: Option<i64>,
    #[serde(default)]
    pub differences: Vec<Difference>,
    #[serde(default)]
    pub dependencies: Option<DependencyCounts>,
    #[serde(default)]
    pub misses: Vec<Miss>,
}

/// A field of the response that differs from the recording.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Difference {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub expected: Value,
    #[serde(default)]
    pub actual: Value,
}

/// How the replayed dependency calls matched the recorded ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DependencyCounts {
    #[serde(default)]
    pub matched: u64,
    #[serde(default)]
    pub missed: u64,
    #[serde(default)]
    pub unused: u64,
}

/// A dependency call made during replay that matched no recorded call.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Miss {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub call: String,
    #[serde(default)]
    pub expected: String,
    #[serde(default)]
    pub field: String,
}

/// Why no verdict came back.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Nothing listens on the socket (the service is not started).
    #[error("the replay service is not running (no socket at {})", socket.display())]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not allowed to connect to the replay service at {}", socket.display())]
    Permission {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the replay service at {} failed", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the replay service closed the connection without a verdict")]
    Closed,
    #[error("the replay service gave no verdict within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the replay service answered something that is not a verdict")]
    BadAnswer(#[source] serde_json::Error),
}

impl ReplayError {
    /// Whether the fix is to start the service.
    #[must_use]
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::NotRunning { .. })
    }
}

/// Asks the service at `socket` to replay `cassette` (an absolute path) and waits up to
/// `timeout` for the verdict.
pub async fn replay(
    socket: &Path,
    cassette: &Path,
    timeout: Duration,
) -> Result<Verdict, ReplayError> {
    let io = |source: std::io::Error| ReplayError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ReplayError::NotRunning {
                socket: socket.to_path_buf(),
                source: e,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ReplayError::Permission {
                socket: socket.to_path_buf(),
                source: e,
            });
        }
        Err(e) => return Err(io(e)),
    };
    let req = ReplayRequest {
        cassettes: vec![cassette.to_string_lossy().into_owned()],
        cmd: None,
    };
    let mut line = serde_json::to_vec(&req).map_err(ReplayError::BadAnswer)?;
    line.push(b'\n');
    let exchange = async {
        let (rd, mut wr) = stream.into_split();
        wr.write_all(&line).await.map_err(io)?;
        wr.flush().await.map_err(io)?;
        let mut answer = Vec::new();
        BufReader::new(rd)
            .take(MAX_VERDICT_BYTES)
            .read_until(b'\n', &mut answer)
            .await
            .map_err(io)?;
        if answer.iter().all(u8::is_ascii_whitespace) {
            return Err(ReplayError::Closed);
        }
        serde_json::from_slice::<Verdict>(&answer).map_err(ReplayError::BadAnswer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ReplayError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    fn sample() -> Verdict {
        serde_json::from_value(serde_json::json!({
            "verdict": "differs", "exit_code": 1, "summary": "1 of 1 request differs",
            "requests": [{"cassette": "/c/x.json", "method": "GET", "target": "/x?y=1",
                "outcome": "differs", "expected_status": 200, "actual_status": 200,
                "differences": [{"field": "body.items[0].id", "expected": 1, "actual": 2}],
                "dependencies": {"matched": 3, "missed": 1, "unused": 0},
                "misses": [{"protocol": "http", "destination": "up:80", "call": "GET /x?y=2",
                            "expected": "GET /x?y=1", "field": "query.y"}]}],
            "notes": ["n"], "report": "text", "extra_field_from_a_newer_service": true
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn sends_one_line_and_reads_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("replay.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut line = String::new();
            BufReader::new(rd).read_line(&mut line).await.unwrap();
            let req: ReplayRequest = serde_json::from_str(&line).unwrap();
            let mut out = serde_json::to_vec(&sample()).unwrap();
            out.push(b'\n');
            wr.write_all(&out).await.unwrap();
            req
        });
        let v = replay(&sock, Path::new("/c/x.json"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v, sample());
        assert_eq!(v.requests[0].differences[0].field, "body.items[0].id");
        let req = server.await.unwrap();
        assert_eq!(
            req,
            ReplayRequest {
                cassettes: vec!["/c/x.json".into()],
                cmd: None
            }
        );
    }

    #[tokio::test]
    async fn tells_when_the_service_is_absent_silent_or_confused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let e = replay(&sock, Path::new("/x.json"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.is_not_running(), "{e:?}");
        assert_eq!(
            start_command(Path::new(DEFAULT_SOCKET)),
            "sudo timetracer-agent replay-server"
        );
        assert_eq!(
            start_command(&sock),
            format!(
                "sudo timetracer-agent replay-server --socket '{}'",
                sock.display()
            )
        );

        // Closes without answering.
        let l = UnixListener::bind(&sock).unwrap();
        let t = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
            l
        });
        let e = replay(&sock, Path::new("/x.json"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ReplayError::Closed | ReplayError::Io { .. }),
            "{e:?}"
        );
        let l = t.await.unwrap();

        // Answers garbage.
        let t = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut line = String::new();
            BufReader::new(rd).read_line(&mut line).await.unwrap();
            wr.write_all(b"<html>\n").await.unwrap();
            l
        });
        let e = replay(&sock, Path::new("/x.json"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ReplayError::BadAnswer(_)), "{e:?}");
        let l = t.await.unwrap();

        // Never answers.
        let _t = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let e = replay(&sock, Path::new("/x.json"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, ReplayError::Timeout(_)), "{e:?}");
    }
}
