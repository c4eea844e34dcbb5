//! What the pipeline hands to the cassette builder: one inbound request with everything that
//! was attributed to it. Pure data; no I/O.
use std::net::SocketAddr;

use crate::protocols::http::types::Exchange;

/// Facts about the connection a message travelled on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnFacts {
    pub pid: u32,
    pub fd: i32,
    /// Kernel connection id (unique per process, fd and open).
    pub conn_id: u64,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub tls: bool,
    /// TLS server name (SNI) when known.
    pub server_name: Option<String>,
    /// The connection was already open when tracing started.
    pub preexisting: bool,
}

/// How sure the agent is that a dependency call belongs to its request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribution {
    /// Proven; `evidence` says by which rule (`thread`, `sequential`,
    /// `asyncio/response-writer`, ...), `proof` the facts it used (Python processes).
    Exact {
        evidence: &'static str,
        proof: Option<Box<super::python::Proof>>,
    },
    /// Not provable; `reason` says why (`concurrent-requests`, `no-owner`, ...).
    Ambiguous { reason: &'static str },
}

/// Kernel timings of a request/response pair, as monotonic ns (0 = unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// First byte of the request.
    pub request_start_ns: u64,
    /// Last byte of the request.
    pub request_end_ns: u64,
    /// First byte of the response.
    pub response_start_ns: u64,
    /// Last byte of the response.
    pub response_end_ns: u64,
    /// `connect()` returned (outbound connections opened during this call).
    pub connect_ns: u64,
}

/// One dependency call.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "HTTP calls are the common case; boxing them would add an allocation per call"
)]
pub enum DepKind {
    /// An outbound HTTP/1.x exchange.
    Http(Exchange),
    /// A database or cache call (PostgreSQL, MySQL, Redis, MongoDB).
    Db(Box<crate::protocols::db::DbCall>),
    /// A `connect` that failed at once (no connection, no bytes): the destination is in
    /// [`DepCall::conn`]'s `remote`.
    ConnectFailed(FailedConnect),
}

/// A failed outbound `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedConnect {
    /// The kernel's error (`ECONNREFUSED` = 111, `ETIMEDOUT`, `ENETUNREACH`, ...).
    pub errno: i32,
    /// When `connect` returned (monotonic ns).
    pub ts_ns: u64,
}

/// A dependency call attributed to (or considered for) an inbound request.
#[derive(Clone, Debug, PartialEq)]
pub struct DepCall {
    pub kind: DepKind,
    pub conn: ConnFacts,
    pub attribution: Attribution,
    pub timings: Timings,
}

/// What a fresh database client would need at replay time, as seen on one connection
/// (handshake, server version, parameter statuses, ...), and what was not seen.
#[derive(Clone, Debug, PartialEq)]
pub struct DbSession {
    pub conn: ConnFacts,
    pub protocol: crate::protocols::Protocol,
    /// Accumulated `DbEvent::Session` facts.
    pub facts: serde_json::Value,
    /// What tracing did not see (attached mid-session).
    pub missing: Vec<String>,
}

/// The traced process, as read from /proc when tracing started (or when it forked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub cmdline: Vec<String>,
    /// Working directory (replay starts the recorded command there).
    pub cwd: Option<String>,
    pub exe: String,
    /// `3.11.7` style, when the process is a CPython.
    pub python_version: Option<String>,
    /// `uvicorn`, `gunicorn`, `flask`, ... guessed from the command line / loaded modules.
    pub framework: Option<String>,
    /// Its cgroup v2 path (`/proc/PID/cgroup`), read with the rest while it is alive: node
    /// mode finds the container and pod from it, also for a process gone by the time its
    /// request is written.
    pub cgroup: Option<String>,
}

/// One inbound request with everything attributed to it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// Unique id (uuid4); the file name carries its first 8 hex digits.
    pub id: uuid::Uuid,
    pub process: ProcessInfo,
    /// The inbound exchange (request + response as the app served it).
    pub inbound: Exchange,
    pub conn: ConnFacts,
    pub timings: Timings,
    /// Dependency calls in the order they started.
    pub deps: Vec<DepCall>,
    /// A Python traceback the process wrote to stdout/stderr while serving this request.
    pub traceback: Option<String>,
    /// Offset to add to a monotonic ns timestamp to get Unix-epoch ns.
    pub mono_to_unix_ns: i128,
    /// Kernel + agent drop counters when the request was written (name -> count).
    pub drops: Vec<(String, u64)>,
    /// Session facts of the database connections this request used.
    pub db_sessions: Vec<DbSession>,
}

/// Why a process's startup phase ended (`startup.ended_by` in the startup cassette).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupEnd {
    /// Its first inbound request arrived.
    FirstRequest,
    /// It exited without serving a request.
    Exit,
    /// The recording ended first.
    EndOfRecording,
}

impl StartupEnd {
    /// The name written to the cassette.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::FirstRequest => "first-request",
            Self::Exit => "exit",
            Self::EndOfRecording => "end-of-recording",
        }
    }
}

/// The dependency calls one process made before its first inbound request (pools opened at
/// import, ORM first-connect introspection, a lifespan's warm-up), seen because tracing saw the
/// process start (`record`, or a process forked / exec'd while traced). Becomes a startup
/// cassette (docs/cassette-format.md, "Startup cassettes").
#[derive(Clone, Debug, PartialEq)]
pub struct StartupRecord {
    /// Unique id (uuid4); the file name carries its first 8 hex digits.
    pub id: uuid::Uuid,
    pub process: ProcessInfo,
    /// When tracing saw the process start (monotonic ns; its fork, or its first call when the
    /// fork was not seen); the events' offsets count from here.
    pub started_ns: u64,
    /// The first inbound request's first byte, when there was one.
    pub first_request_ns: Option<u64>,
    pub ended_by: StartupEnd,
    /// Calls in the order they started.
    pub deps: Vec<DepCall>,
    /// Calls left out because the phase held [`StartupRecord::MAX_CALLS`] already.
    pub dropped_calls: u64,
    /// Session facts of the database connections the calls used.
    pub db_sessions: Vec<DbSession>,
    /// Offset to add to a monotonic ns timestamp to get Unix-epoch ns.
    pub mono_to_unix_ns: i128,
    /// Kernel + agent drop counters when the record was written (name -> count).
    pub drops: Vec<(String, u64)>,
}

impl StartupRecord {
    /// Most calls one process's startup keeps (a process that never serves a request and
    /// polls a dependency forever must not grow the agent without bound).
    pub const MAX_CALLS: usize = 10_000;
}
