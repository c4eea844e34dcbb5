//! Serde types of the cassette wire format (schema 2.0, a superset of the Python tool's 1.0).
//!
//! The full specification is `docs/cassette-format.md`; the JSON Schema is
//! `docs/cassette.schema.json`. Field order in these structs is the order written to disk.
//!
//! Reading is tolerant: every field that the Python tool's schema 1.0 (or 0.1) may omit has a
//! `#[serde(default)]`, so 1.0 cassettes deserialize into the same types with `None` / empty
//! values where they carry less. Unknown fields are ignored.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Schema version written by this crate.
pub const SCHEMA_VERSION: &str = "2.0";
/// Name of the generator written into `generator.name`.
pub const GENERATOR_NAME: &str = "timetracer-agent";

/// An ordered JSON object of strings (or, for `query`, strings and lists of strings).
pub type JsonMap = Map<String, Value>;
/// Header fields in wire order with their original case: `[[name, value], ...]`.
pub type HeaderList = Vec<(String, String)>;

/// One recorded inbound request with everything attributed to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    pub schema_version: String,
    /// Who wrote the file (absent in 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    pub session: Session,
    /// Present in a **startup cassette** (2.x, added): the dependency calls one process made
    /// before its first inbound request. Its `request` and `response` are empty, its `events`
    /// are those calls with offsets from the process's start. See docs/cassette-format.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<StartupInfo>,
    pub request: Request,
    pub response: Response,
    /// Present when the app errored (status >= 500, no response, or a traceback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Database sessions the events used (2.0): what a fresh client needs at replay time
    /// (handshake outcome, server version, parameter statuses) and what was not seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub db_sessions: Vec<DbSessionInfo>,
    /// The inbound connection (absent in 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// Kernel timings of the inbound exchange (absent in 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    #[serde(default)]
    pub policies: Policies,
    #[serde(default)]
    pub stats: Stats,
}

impl Cassette {
    /// The file was written by the Python tool (schema 1.0 or 0.1).
    #[must_use]
    pub fn is_python_legacy(&self) -> bool {
        !self.schema_version.starts_with("2.")
    }

    /// A startup cassette (the calls of a process's startup, no request).
    #[must_use]
    pub fn is_startup(&self) -> bool {
        self.startup.is_some()
    }
}

/// `startup`: what a startup cassette covers (2.x, added).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartupInfo {
    /// The process whose startup this is (also `session.pid`).
    pub pid: u32,
    /// When tracing saw it start (RFC 3339 UTC): the origin of the events' offsets.
    pub started_at: String,
    /// Its first inbound request's first byte, or null when it served none.
    #[serde(default)]
    pub first_request_at: Option<String>,
    /// `first-request`, `exit` or `end-of-recording`.
    pub ended_by: String,
    /// Calls left out past the per-process cap (10,000).
    #[serde(default)]
    pub dropped_calls: u64,
}

/// `generator`: the program that wrote the cassette.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generator {
    pub name: String,
    pub version: String,
}

/// `session`: when and where the request was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    /// RFC 3339, UTC (`2026-11-22T23:28:08.792058+00:00`).
    pub recorded_at: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub env: String,
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default, alias = "timetrace_version")]
    pub timetracer_version: Option<String>,
    #[serde(default)]
    pub python_version: Option<String>,
    #[serde(default)]
    pub git_sha: Option<String>,
    /// Traced process id (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Traced process command line (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Vec<String>>,
    /// Its working directory (2.0; `replay` starts the recorded command there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The recording (one agent run) this cassette belongs to (2.x, added): replay finds the
    /// recording's startup cassettes by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// The Kubernetes pod and container the process ran in (node mode; omitted elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s>,
}

/// `session.k8s`: where in the cluster the request was served (`timetracer-agent node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8s {
    pub namespace: String,
    pub pod: String,
    /// `metadata.uid` of the pod.
    #[serde(default)]
    pub pod_uid: String,
    /// The container's name in the pod spec.
    #[serde(default)]
    pub container: String,
    /// The node (`spec.nodeName`).
    #[serde(default)]
    pub node: String,
    /// The pod's labels when the request was recorded.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `request`: the inbound request as the app received it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path without the query (like ASGI `scope["path"]`).
    pub path: String,
    /// 1.0 only (never filled by the Python tool in practice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_template: Option<String>,
    /// Raw request-target as sent on the wire (query redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Query parameters: one value → string, several → list of strings.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub query: JsonMap,
    /// Lowercased names; duplicate values joined with `", "`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: JsonMap,
    /// Original names, order and duplicates (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_list: Option<HeaderList>,
    /// `"1.1"` / `"1.0"` (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// `response`: what the app answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// HTTP status; 0 when there was no response.
    #[serde(default)]
    pub status: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// First request byte → last response byte.
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: JsonMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_list: Option<HeaderList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

/// How `Body::data` holds the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// `data` is the parsed JSON; compact re-serialisation gives the stored bytes exactly.
    Json,
    /// `data` is the UTF-8 text.
    Text,
    /// `data` is standard base64 with padding.
    Base64,
    /// 1.0: not JSON, no data kept.
    Bytes,
    /// 1.0 (Motor/PyMongo): `data` is a decoded document.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Anything else (read tolerance).
    #[serde(other)]
    Unknown,
}

/// A message body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// `false` when only size and hash were kept (1.0 policy, or bytes lost).
    #[serde(rename = "_captured", default)]
    pub captured: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<BodyEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Full size of the body on the wire (after de-chunking), before truncation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The stored bytes are a prefix of the body (capture cap).
    #[serde(default)]
    pub truncated: bool,
    /// `sha256:<hex>` of the stored bytes (after truncation and redaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// JSON paths whose values were redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// `error`: why the request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub status: i64,
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// `error.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The process wrote a Python traceback while serving the request.
    Exception,
    /// Status >= 500 without a traceback.
    ServerError,
    /// The connection ended before a response.
    NoResponse,
    #[serde(other)]
    Unknown,
}

/// `type` of a failed outbound `connect` (2.x, added): no connection, no bytes; replay
/// reproduces the failure.
pub const CONNECT_EVENT: &str = "tcp.connect";

/// One dependency call (`events[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 1-based, in start order.
    pub eid: u64,
    /// `http.client` (1.0 also has `db.query`, `redis`).
    #[serde(rename = "type")]
    pub kind: String,
    /// From the inbound request start.
    #[serde(default)]
    pub start_offset_ms: f64,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub signature: Signature,
    /// The outbound request (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<EventRequest>,
    #[serde(default)]
    pub result: EventResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<AttributionInfo>,
    /// Database / cache calls (2.0): the protocol's own description of the call (SQL,
    /// parameters, rows, command tag; Redis arguments and reply ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<Value>,
    /// Database / cache calls (2.0): session-level traffic (handshake, authentication, `SET`,
    /// ping, `HELLO`, type introspection) rather than work the request asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_level: bool,
    /// Database / cache calls (2.0): the exact wire bytes, for byte-exact replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<Wire>,
}

/// `db_sessions[]`: one database connection's session facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DbSessionInfo {
    /// `postgres`, `mysql`, `redis`, `mongodb`.
    pub protocol: String,
    /// Connection id, as in `events[].connection.conn_id`.
    pub conn_id: u64,
    /// Server address (`ip:port`) when known.
    pub remote: Option<String>,
    /// Protocol-specific facts (see docs/protocols/).
    pub facts: Value,
    /// What tracing did not see (attached to an open session).
    #[serde(default)]
    pub missing: Vec<String>,
}

/// `events[].wire`: a call's bytes as they were on the wire (credentials removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// What the client sent, base64.
    pub request_b64: String,
    /// What the server answered, base64.
    pub response_b64: String,
    /// Cut at the capture cap.
    #[serde(default)]
    pub truncated: bool,
}

/// `events[].signature`: what replay matches on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub lib: String,
    #[serde(default)]
    pub method: String,
    /// `scheme://host[:port]/path`, without the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<JsonMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hash: Option<String>,
}

/// `events[].request` (2.0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRequest {
    #[serde(default)]
    pub headers: JsonMap,
    #[serde(default)]
    pub header_list: HeaderList,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

/// `events[].result`: the dependency's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    /// HTTP status (1.0 db events: rowcount / -1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: JsonMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_list: Option<HeaderList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    /// `no-response` / `incomplete` (1.0: the exception text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// 1.0: the exception class name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `tcp.connect` (2.x, added): the kernel's error number of the failed `connect`
    /// (`error` holds its name and text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// `connection`: facts about a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub pid: u32,
    pub fd: i32,
    pub conn_id: u64,
    /// `ip:port` (`[v6]:port`).
    pub local: Option<String>,
    pub remote: Option<String>,
    pub tls: bool,
    pub server_name: Option<String>,
    /// Open before tracing started.
    pub preexisting: bool,
}

/// `timing`: offsets in ms from the inbound request start; `null` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub request_start: Option<f64>,
    pub request_end: Option<f64>,
    pub response_start: Option<f64>,
    pub response_end: Option<f64>,
}

/// `events[].attribution`: how sure the agent is that the call belongs to this request.
///
/// Read through [`RawAttribution`], not serde's internally tagged form: that form buffers the
/// content, and with serde_json's `arbitrary_precision` (on in this workspace) a buffered number
/// is a map, so every number in `facts` would fail to read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase", try_from = "RawAttribution")]
pub enum AttributionInfo {
    Exact {
        evidence: String,
        /// 2.x: the facts the rule used (Python processes; absent for other rules).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<AttributionFacts>,
    },
    Ambiguous {
        reason: String,
    },
}

/// The flat shape `attribution` is read from (see [`AttributionInfo`]).
#[derive(Deserialize)]
struct RawAttribution {
    status: String,
    evidence: Option<String>,
    reason: Option<String>,
    facts: Option<AttributionFacts>,
}

impl TryFrom<RawAttribution> for AttributionInfo {
    type Error = String;

    fn try_from(raw: RawAttribution) -> Result<Self, String> {
        match raw.status.as_str() {
            "exact" => Ok(Self::Exact {
                evidence: raw
                    .evidence
                    .ok_or("attribution: `exact` without `evidence`")?,
                facts: raw.facts,
            }),
            "ambiguous" => Ok(Self::Ambiguous {
                reason: raw
                    .reason
                    .ok_or("attribution: `ambiguous` without `reason`")?,
            }),
            other => Err(format!(
                "attribution: unknown status `{other}` (expected `exact` or `ambiguous`)"
            )),
        }
    }
}

/// `events[].attribution.facts`: what an `exact` decision rests on, so a wrong result can be
/// diagnosed from the cassette alone. Offsets in ms from the inbound request start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributionFacts {
    /// Thread id (kernel tid) that wrote the call's first byte.
    pub thread: u32,
    /// asyncio: the `Task` (Python `id()`, hex) whose context wrote the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// asyncio: the request's root task (wrote the response's first byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_task: Option<String>,
    /// asyncio: the root task's coroutine `__qualname__`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_coro: Option<String>,
    /// asyncio: task creations from the call's task up to the root (0: the root itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<u32>,
    /// The request's first byte was read (asyncio: the root was created after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_read_ms: Option<f64>,
    /// The response's first byte was written (by the root task / by the thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_write_ms: Option<f64>,
    /// asyncio: a task on the chain could have been another request's root; it wrote no
    /// response within the hold (2 s) before the decision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// `policies`: what the recorder did to the data (truthful, unlike 1.0's hard-coded values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    #[serde(default)]
    pub redaction: RedactionInfo,
    #[serde(default)]
    pub capture: CaptureInfo,
    #[serde(default)]
    pub sampling: SamplingInfo,
}

/// `policies.redaction`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionInfo {
    /// `default` or `off`.
    #[serde(default)]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_keys: Option<Vec<String>>,
    /// Glob patterns of Redis keys whose values are redacted (2.x; absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_key_patterns: Option<Vec<String>>,
    /// How many values were redacted in this cassette.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// `applied` per protocol (`http`, `postgres`, `mysql`, `redis`, `mongodb`; only those
    /// with redacted values; 2.x, absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_by_protocol: Option<BTreeMap<String, u64>>,
    /// 1.0 only (hard-coded there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
}

/// `policies.capture`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// 1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_kb: Option<u64>,
    /// 1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_request_body: Option<String>,
    /// 1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_response_body: Option<String>,
}

/// `policies.sampling`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingInfo {
    #[serde(default = "one")]
    pub rate: f64,
    #[serde(default)]
    pub errors_only: bool,
}

impl Default for SamplingInfo {
    fn default() -> Self {
        Self {
            rate: 1.0,
            errors_only: false,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// `stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub event_counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub total_events: u64,
    #[serde(default)]
    pub total_duration_ms: f64,
    /// Capture drop counters by reason (2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<BTreeMap<String, u64>>,
}
