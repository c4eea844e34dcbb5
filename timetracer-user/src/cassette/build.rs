//! `RecordedRequest` → [`Cassette`]: pure, no I/O, no clock. Redaction happens here, so nothing
//! unredacted ever reaches the writer.
use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use super::body::{encode_body, sha256_tagged};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::format::{
    AttributionFacts, AttributionInfo, Body, CONNECT_EVENT, CaptureInfo, Cassette, Connection,
    DbSessionInfo, ErrorInfo, ErrorKind, Event, EventRequest, EventResult, GENERATOR_NAME,
    Generator, HeaderList, JsonMap, Policies, RedactionInfo, Request, Response, SCHEMA_VERSION,
    SamplingInfo, Session, Signature, StartupInfo, Stats, Timing, Wire,
};
use crate::correlate::model::{
    Attribution, ConnFacts, DbSession, DepCall, DepKind, FailedConnect, ProcessInfo,
    RecordedRequest, StartupRecord, Timings,
};
use crate::protocols::db::DbCall;
use crate::protocols::http::types::{Exchange, HttpMessage, StartLine};
use crate::redact::RedactionPolicy;
use crate::urls::{self, parse_query};

/// Default `max_body`: 1 MiB per message.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How to build cassettes.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildOptions {
    /// `session.service` (configuration key `service`); `None`: named after the traced
    /// process's command line ([`service_of_cmdline`], e.g. `uvicorn shop.app:app`).
    pub service: Option<String>,
    /// `session.env` (configuration key `env`, default `local`).
    pub env: String,
    /// `session.git_sha` (configuration key `git_sha`).
    pub git_sha: Option<String>,
    /// Bodies longer than this are cut (and marked `truncated`).
    pub max_body: usize,
    pub redaction: RedactionPolicy,
    /// Recorded in `policies.sampling` (sampling itself is the caller's job).
    pub sample_rate: f64,
    pub errors_only: bool,
    /// `session.recording`: the id of this recording (one agent run), on every cassette it
    /// writes, so replay finds the recording's startup cassettes.
    pub recording: Option<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            service: None,
            env: "local".to_owned(),
            git_sha: None,
            max_body: DEFAULT_MAX_BODY,
            redaction: RedactionPolicy::default(),
            sample_rate: 1.0,
            errors_only: false,
            recording: None,
        }
    }
}

/// `session.service` when none is configured.
pub const FALLBACK_SERVICE: &str = "timetracer-service";

/// A service name from a process's command line: the program and, when there is one, the
/// app it serves (`module:attribute`, a `*.py` script, or the program's first word), without
/// the interpreter, paths and options. `["/venv/bin/python", "-m", "uvicorn", "--port",
/// "8000", "shop.app:app"]` is `uvicorn shop.app:app`; `["gunicorn", "-w", "4", "-b",
/// "0.0.0.0:8000", "app:app"]` is `gunicorn app:app`; `["python", "manage.py",
/// "runserver"]` is `manage.py runserver`. An empty command line (a process gone before it
/// was read) gives the executable's name, else [`FALLBACK_SERVICE`].
#[must_use]
pub fn service_of_cmdline(cmdline: &[String], exe: &str) -> String {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let Some(first) = cmdline.first() else {
        let e = base(exe);
        return if e.is_empty() {
            FALLBACK_SERVICE.to_owned()
        } else {
            e
        };
    };
    let first_base = base(first);
    let interpreter = first_base.starts_with("python") || first_base.starts_with("pypy");
    let (program, rest): (String, &[String]) = if interpreter {
        // Interpreter options come first; `-m MOD` or a script ends them.
        let mut i = 1;
        let mut found = None;
        while i < cmdline.len() {
            let a = &cmdline[i];
            if a == "-m" {
                found = cmdline.get(i + 1).map(|m| (m.clone(), i + 2));
                break;
            }
            if a == "-c" {
                found = Some((format!("{first_base} -c"), cmdline.len()));
                break;
            }
            if a.starts_with('-') {
                // `-X opt` / `-W arg` take a value.
                if matches!(a.as_str(), "-X" | "-W") {
                    i += 1;
                }
                i += 1;
                continue;
            }
            found = Some((base(a), i + 1));
            break;
        }
        match found {
            Some((prog, next)) => (prog, cmdline.get(next..).unwrap_or(&[])),
            None => (first_base.clone(), &[]),
        }
    } else {
        (first_base.clone(), &cmdline[1..])
    };
    // `module:attribute` (not `host:port`), or a script.
    let is_app = |a: &str| {
        if a.starts_with('-') {
            return false;
        }
        if std::path::Path::new(a)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("py"))
        {
            return true;
        }
        a.split_once(':').is_some_and(|(m, attr)| {
            !m.is_empty()
                && m.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '/'))
                && !attr.is_empty()
                && !attr.chars().all(|c| c.is_ascii_digit())
                && attr
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '(' | ')' | '"' | '\''))
        })
    };
    let app = rest
        .iter()
        .find(|a| is_app(a))
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
        .or_else(|| rest.first().filter(|a| !a.starts_with('-')).cloned());
    match app {
        Some(a) if !program.is_empty() => format!("{program} {a}"),
        _ if !program.is_empty() => program,
        _ => FALLBACK_SERVICE.to_owned(),
    }
}

/// Build the cassette of one recorded request (redacted, bodies capped).
#[must_use]
pub fn build(rec: &RecordedRequest, opts: &BuildOptions) -> Cassette {
    let mut b = Builder { opts, applied: 0 };
    b.cassette(rec)
}

/// Build the startup cassette of one process (redacted, bodies capped): its calls before its
/// first inbound request, `request` and `response` empty.
#[must_use]
pub fn build_startup(rec: &StartupRecord, opts: &BuildOptions) -> Cassette {
    let mut b = Builder { opts, applied: 0 };
    let t0 = rec
        .deps
        .iter()
        .map(|d| d.timings.request_start_ns)
        .filter(|&t| t > 0)
        .fold(rec.started_ns, u64::min);
    let events = b.events(&rec.deps, t0);
    let stats = stats(&events, &rec.drops, 0.0);
    let policies = b.policies(&rec.deps);
    let at = |ns: u64| rfc3339_utc(i128::from(ns) + rec.mono_to_unix_ns);
    Cassette {
        schema_version: SCHEMA_VERSION.to_owned(),
        generator: Some(generator()),
        session: b.session(&rec.id, at(t0), &rec.process),
        startup: Some(StartupInfo {
            pid: rec.process.pid,
            started_at: at(t0),
            first_request_at: rec.first_request_ns.map(at),
            ended_by: rec.ended_by.name().to_owned(),
            dropped_calls: rec.dropped_calls,
        }),
        request: Request::default(),
        response: Response::default(),
        error: None,
        events,
        db_sessions: db_session_infos(&rec.db_sessions),
        connection: None,
        timing: None,
        policies,
        stats,
    }
}

fn generator() -> Generator {
    Generator {
        name: GENERATOR_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn stats(events: &[Event], drops_in: &[(String, u64)], total_duration_ms: f64) -> Stats {
    let mut event_counts = BTreeMap::new();
    for e in events {
        *event_counts.entry(e.kind.clone()).or_insert(0) += 1;
    }
    let mut drops = BTreeMap::new();
    for (k, n) in drops_in {
        *drops.entry(k.clone()).or_insert(0) += n;
    }
    Stats {
        event_counts,
        total_events: events.len() as u64,
        total_duration_ms,
        drops: Some(drops),
    }
}

fn db_session_infos(sessions: &[DbSession]) -> Vec<DbSessionInfo> {
    sessions
        .iter()
        .map(|d| DbSessionInfo {
            protocol: d.protocol.name().to_owned(),
            conn_id: d.conn.conn_id,
            remote: d.conn.remote.map(|a| a.to_string()),
            facts: d.facts.clone(),
            missing: d.missing.clone(),
        })
        .collect()
}

struct Builder<'a> {
    opts: &'a BuildOptions,
    /// Values redacted so far.
    applied: u64,
}

/// A message's headers after redaction, as map and list.
struct Headers {
    map: JsonMap,
    list: HeaderList,
}

impl Builder<'_> {
    fn cassette(&mut self, rec: &RecordedRequest) -> Cassette {
        let inbound = &rec.inbound;
        let t0 = first_nonzero(rec.timings.request_start_ns, inbound.request.first.ts_ns);
        let timing = exchange_timing(&rec.timings, inbound, t0);

        let request = self.request(&inbound.request, &rec.conn);
        let response = self.response(inbound.response.as_ref(), &timing);
        let events = self.events(&rec.deps, t0);

        let status = response.status;
        let error = error_info(status, inbound.response.is_none(), rec.traceback.as_deref());

        let stats = stats(&events, &rec.drops, response.duration_ms);
        let policies = self.policies(&rec.deps);
        let unix_ns = i128::from(t0) + rec.mono_to_unix_ns;
        Cassette {
            db_sessions: db_session_infos(&rec.db_sessions),
            schema_version: SCHEMA_VERSION.to_owned(),
            generator: Some(generator()),
            session: self.session(&rec.id, rfc3339_utc(unix_ns), &rec.process),
            startup: None,
            request,
            response,
            error,
            events,
            connection: Some(connection(&rec.conn)),
            timing: Some(timing),
            policies,
            stats,
        }
    }

    fn events(&mut self, deps: &[DepCall], t0: u64) -> Vec<Event> {
        deps.iter()
            .enumerate()
            .map(|(i, d)| self.event(i, d, t0))
            .collect()
    }

    fn session(&self, id: &uuid::Uuid, recorded_at: String, p: &ProcessInfo) -> Session {
        Session {
            id: id.hyphenated().to_string(),
            recorded_at,
            service: self
                .opts
                .service
                .clone()
                .unwrap_or_else(|| service_of_cmdline(&p.cmdline, &p.exe)),
            env: self.opts.env.clone(),
            framework: p.framework.clone(),
            timetracer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            python_version: p.python_version.clone(),
            git_sha: self.opts.git_sha.clone(),
            pid: Some(p.pid),
            cmdline: Some(p.cmdline.clone()),
            cwd: p.cwd.clone(),
            recording: self.opts.recording.clone(),
            k8s: None,
        }
    }

    /// `policies`, counting the values the connection layer's hooks redacted in the database /
    /// cache calls `deps` on top of those this builder redacted.
    fn policies(&mut self, deps: &[DepCall]) -> Policies {
        let http_applied = self.applied;
        let mut by_protocol = BTreeMap::new();
        if http_applied > 0 {
            by_protocol.insert("http".to_owned(), http_applied);
        }
        for d in deps {
            if let DepKind::Db(call) = &d.kind {
                let n = call
                    .detail
                    .pointer("/redacted/values")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if n > 0 {
                    *by_protocol
                        .entry(call.protocol.name().to_owned())
                        .or_insert(0) += n;
                    self.applied += n;
                }
            }
        }
        let pol = &self.opts.redaction;
        Policies {
            redaction: RedactionInfo {
                mode: if pol.enabled { "default" } else { "off" }.to_owned(),
                header_names: Some(if pol.enabled {
                    pol.header_names.clone()
                } else {
                    Vec::new()
                }),
                body_keys: Some(if pol.enabled {
                    pol.body_keys.clone()
                } else {
                    Vec::new()
                }),
                redis_key_patterns: Some(if pol.enabled {
                    pol.redis_key_patterns.clone()
                } else {
                    Vec::new()
                }),
                applied: Some(self.applied),
                applied_by_protocol: Some(by_protocol),
                rules: None,
            },
            capture: CaptureInfo {
                max_body_bytes: Some(self.opts.max_body as u64),
                ..CaptureInfo::default()
            },
            sampling: SamplingInfo {
                rate: self.opts.sample_rate,
                errors_only: self.opts.errors_only,
            },
        }
    }

    fn headers(&mut self, msg: &HttpMessage) -> Headers {
        let mut list: HeaderList = msg
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), header_value_string(v)))
            .collect();
        self.applied += self.opts.redaction.redact_headers(&mut list) as u64;
        Headers {
            map: header_map(&list),
            list,
        }
    }

    fn body(&mut self, msg: &HttpMessage) -> Option<Body> {
        let cut = msg.body.len().min(self.opts.max_body);
        let captured = &msg.body[..cut];
        let truncated = msg.truncated || cut < msg.body.len() || msg.lost_bytes > 0;
        let size = msg.body_size.max(msg.body.len() as u64);
        let r = self
            .opts
            .redaction
            .redact_body(captured, msg.header_str("content-type"));
        self.applied += r.paths.len() as u64;
        encode_body(&r.bytes, size, truncated, r.paths)
    }

    fn query(&mut self, query: &str) -> JsonMap {
        let (q, keys) = self.opts.redaction.redact_urlencoded(query);
        self.applied += keys.len() as u64;
        parse_query(&q)
    }

    fn request(&mut self, msg: &HttpMessage, conn: &ConnFacts) -> Request {
        let (method, raw_target) = match &msg.start {
            StartLine::Request { method, target } => (method.clone(), target.as_str()),
            StartLine::Response { .. } => (String::new(), ""),
        };
        let (target, _) = self.opts.redaction.redact_target(raw_target);
        let (path, query) = split_target(raw_target);
        let query = self.query(query);
        let headers = self.headers(msg);
        let body = self.body(msg);
        Request {
            method,
            path: urls::decode_str(path),
            route_template: None,
            target: Some(target.into_owned()),
            query,
            user_agent: headers
                .map
                .get("user-agent")
                .and_then(Value::as_str)
                .map(str::to_owned),
            headers: headers.map,
            header_list: Some(headers.list),
            http_version: Some(format!("1.{}", msg.version)),
            body,
            client_ip: conn.remote.map(|a| a.ip().to_string()),
        }
    }

    fn response(&mut self, msg: Option<&HttpMessage>, timing: &Timing) -> Response {
        let end = timing.response_end.or(timing.request_end).unwrap_or(0.0);
        let Some(msg) = msg else {
            return Response {
                status: 0,
                duration_ms: end,
                ..Response::default()
            };
        };
        let (status, reason) = status_of(msg);
        let headers = self.headers(msg);
        Response {
            status,
            reason,
            duration_ms: end,
            headers: headers.map,
            header_list: Some(headers.list),
            body: self.body(msg),
        }
    }

    fn event(&mut self, index: usize, dep: &DepCall, t0: u64) -> Event {
        let ex = match &dep.kind {
            DepKind::Http(ex) => ex,
            DepKind::Db(call) => return self.db_event(index, dep, call, t0),
            DepKind::ConnectFailed(f) => return connect_event(index, dep, *f, t0),
        };
        let req = &ex.request;
        let (method, target) = match &req.start {
            StartLine::Request { method, target } => (method.clone(), target.as_str()),
            StartLine::Response { .. } => (String::new(), ""),
        };
        let timing = exchange_timing(&dep.timings, ex, t0);
        let (path, query) = split_target(target);
        let query = self.query(query);
        let headers = self.headers(req);
        let body = self.body(req);
        let url = dep_url(req, &dep.conn, path);
        let lib = lib_from_user_agent(req.header_str("user-agent"));

        let mut lines: Vec<String> = headers
            .list
            .iter()
            .map(|(n, v)| format!("{}:{v}", n.to_ascii_lowercase()))
            .collect();
        lines.sort();
        let headers_hash = (!lines.is_empty()).then(|| sha256_tagged(lines.join("\n").as_bytes()));
        let body_hash = body.as_ref().and_then(|b| b.hash.clone());

        let result = match &ex.response {
            Some(resp) => {
                let (status, reason) = status_of(resp);
                let h = self.headers(resp);
                EventResult {
                    status: Some(status),
                    reason,
                    headers: h.map,
                    header_list: Some(h.list),
                    body: self.body(resp),
                    error: resp.incomplete.then(|| "incomplete".to_owned()),
                    error_type: None,
                    errno: None,
                }
            }
            None => EventResult {
                error: Some("no-response".to_owned()),
                ..EventResult::default()
            },
        };

        let start = timing.request_start.unwrap_or(0.0);
        let end = timing.response_end.or(timing.request_end).unwrap_or(start);
        Event {
            eid: index as u64 + 1,
            kind: "http.client".to_owned(),
            start_offset_ms: start,
            duration_ms: (end - start).max(0.0),
            signature: Signature {
                lib: lib.to_owned(),
                method,
                url: Some(url),
                query: (!query.is_empty()).then_some(query),
                headers_hash,
                body_hash,
            },
            request: Some(EventRequest {
                headers: headers.map,
                header_list: headers.list,
                body,
            }),
            result,
            connection: Some(connection(&dep.conn)),
            timing: Some(timing),
            attribution: Some(attribution_info(&dep.attribution, t0)),
            db: None,
            session_level: false,
            wire: None,
        }
    }

    /// A database / cache call: `type` is `db.query` or `redis`, the protocol's own
    /// description goes under `db`.
    fn db_event(&mut self, index: usize, dep: &DepCall, call: &DbCall, t0: u64) -> Event {
        let off = |ns: u64| -> Option<f64> {
            (ns != 0 && t0 != 0).then(|| (i128::from(ns) - i128::from(t0)) as f64 / 1e6)
        };
        let timing = Timing {
            request_start: off(call.request_first.ts_ns),
            request_end: off(call.request_last.ts_ns),
            response_start: call.response_first.and_then(|m| off(m.ts_ns)),
            response_end: call.response_last.and_then(|m| off(m.ts_ns)),
        };
        let start = timing.request_start.unwrap_or(0.0);
        let end = timing.response_end.or(timing.request_end).unwrap_or(start);
        let url = dep
            .conn
            .remote
            .map(|a| format!("{}://{a}", call.protocol.name()));
        Event {
            eid: index as u64 + 1,
            kind: call.protocol.event_type().to_owned(),
            start_offset_ms: start,
            duration_ms: (end - start).max(0.0),
            signature: Signature {
                lib: call.protocol.name().to_owned(),
                method: call.method.clone(),
                url,
                ..Signature::default()
            },
            request: None,
            result: EventResult {
                error: call.error.clone(),
                ..EventResult::default()
            },
            connection: Some(connection(&dep.conn)),
            timing: Some(timing),
            attribution: Some(attribution_info(&dep.attribution, t0)),
            db: Some(call.detail.clone()),
            session_level: call.session_level,
            wire: Some(Wire {
                request_b64: B64.encode(&call.raw_request),
                response_b64: B64.encode(&call.raw_response),
                truncated: call.raw_truncated,
            }),
        }
    }
}

/// `attribution`, with the facts of the proof as offsets from the request start `t0`.
fn attribution_info(a: &Attribution, t0: u64) -> AttributionInfo {
    let off = |ns: u64| -> Option<f64> {
        (ns != 0 && t0 != 0).then(|| (i128::from(ns) - i128::from(t0)) as f64 / 1e6)
    };
    match a {
        Attribution::Exact { evidence, proof } => AttributionInfo::Exact {
            evidence: (*evidence).to_owned(),
            facts: proof.as_deref().map(|p| AttributionFacts {
                thread: p.tid,
                task: (p.task != 0).then(|| format!("{:#x}", p.task)),
                root_task: (p.root_task != 0).then(|| format!("{:#x}", p.root_task)),
                root_coro: p.root_coro.as_deref().map(str::to_owned),
                hops: (p.root_task != 0).then_some(p.hops),
                request_read_ms: off(p.request_read_ns),
                response_write_ms: off(p.response_write_ns),
                held: p.held,
            }),
        },
        Attribution::Ambiguous { reason } => AttributionInfo::Ambiguous {
            reason: (*reason).to_owned(),
        },
    }
}

fn first_nonzero(a: u64, b: u64) -> u64 {
    if a != 0 { a } else { b }
}

/// Timings of an exchange as ms offsets from `t0`; kernel `Timings` win, message marks fill in.
fn exchange_timing(t: &Timings, ex: &Exchange, t0: u64) -> Timing {
    let off = |ns: u64| -> Option<f64> {
        (ns != 0 && t0 != 0).then(|| (i128::from(ns) - i128::from(t0)) as f64 / 1e6)
    };
    let resp = ex.response.as_ref();
    Timing {
        request_start: off(first_nonzero(t.request_start_ns, ex.request.first.ts_ns)),
        request_end: off(first_nonzero(t.request_end_ns, ex.request.last.ts_ns)),
        response_start: off(first_nonzero(
            t.response_start_ns,
            resp.map_or(0, |r| r.first.ts_ns),
        )),
        response_end: off(first_nonzero(
            t.response_end_ns,
            resp.map_or(0, |r| r.last.ts_ns),
        )),
    }
}

fn status_of(msg: &HttpMessage) -> (i64, Option<String>) {
    match &msg.start {
        StartLine::Response { status, reason } => (i64::from(*status), Some(reason.clone())),
        StartLine::Request { .. } => (0, None),
    }
}

fn error_info(status: i64, no_response: bool, traceback: Option<&str>) -> Option<ErrorInfo> {
    let kind = if no_response || status == 0 {
        ErrorKind::NoResponse
    } else if traceback.is_some() {
        ErrorKind::Exception
    } else if status >= 500 {
        ErrorKind::ServerError
    } else {
        return None;
    };
    Some(ErrorInfo {
        status,
        kind,
        traceback: traceback.map(str::to_owned),
    })
}

/// A failed `connect` (`type` `tcp.connect`): the destination, the errno and its name.
fn connect_event(index: usize, dep: &DepCall, f: FailedConnect, t0: u64) -> Event {
    let at = (f.ts_ns != 0 && t0 != 0).then(|| (i128::from(f.ts_ns) - i128::from(t0)) as f64 / 1e6);
    let errno = nix::errno::Errno::from_raw(f.errno);
    Event {
        eid: index as u64 + 1,
        kind: CONNECT_EVENT.to_owned(),
        start_offset_ms: at.unwrap_or(0.0),
        duration_ms: 0.0,
        signature: Signature {
            lib: "tcp".to_owned(),
            method: "CONNECT".to_owned(),
            url: dep.conn.remote.map(|a| format!("tcp://{a}")),
            ..Signature::default()
        },
        request: None,
        result: EventResult {
            error: Some(format!("{errno:?}: {}", errno.desc())),
            errno: Some(f.errno),
            ..EventResult::default()
        },
        connection: Some(connection(&dep.conn)),
        timing: Some(Timing {
            request_start: at,
            request_end: at,
            response_start: None,
            response_end: None,
        }),
        attribution: Some(attribution_info(&dep.attribution, t0)),
        db: None,
        session_level: false,
        wire: None,
    }
}

fn connection(c: &ConnFacts) -> Connection {
    Connection {
        pid: c.pid,
        fd: c.fd,
        conn_id: c.conn_id,
        local: c.local.map(|a| a.to_string()),
        remote: c.remote.map(|a| a.to_string()),
        tls: c.tls,
        server_name: c.server_name.clone(),
        preexisting: c.preexisting,
    }
}

/// Header value bytes as a string: UTF-8 when valid, else ISO-8859-1 (each byte one char).
fn header_value_string(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => v.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Lowercased names; duplicate values joined with `", "`.
fn header_map(list: &HeaderList) -> JsonMap {
    let mut map = Map::new();
    for (name, value) in list {
        let key = name.to_ascii_lowercase();
        match map.get_mut(&key) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(value);
            }
            _ => {
                map.insert(key, Value::String(value.clone()));
            }
        }
    }
    map
}

/// Split a request-target into (path, query); an absolute-form target loses its scheme and
/// authority; a fragment is dropped.
fn split_target(target: &str) -> (&str, &str) {
    let mut rest = target;
    for scheme in ["http://", "https://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            rest = after.find(['/', '?']).map_or("/", |i| &after[i..]);
        }
    }
    let rest = rest.split('#').next().unwrap_or("");
    match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    }
}

/// `scheme://host[:port]/path` of an outbound request.
fn dep_url(req: &HttpMessage, conn: &ConnFacts, path: &str) -> String {
    let scheme = if conn.tls { "https" } else { "http" };
    let host = match req
        .header_str("host")
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        Some(h) => h.to_owned(),
        None => conn
            .remote
            .map_or_else(|| "unknown".to_owned(), |a| authority(a, conn.tls)),
    };
    let path = if path.is_empty() { "/" } else { path };
    format!("{scheme}://{host}{path}")
}

fn authority(a: SocketAddr, tls: bool) -> String {
    let default = if tls { 443 } else { 80 };
    if a.port() == default {
        match a {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        }
    } else {
        a.to_string()
    }
}

/// Client library guessed from the outbound `User-Agent`.
#[must_use]
pub fn lib_from_user_agent(ua: Option<&str>) -> &'static str {
    let Some(ua) = ua else { return "http" };
    let ua = ua.to_ascii_lowercase();
    if ua.starts_with("python-httpx/") {
        "httpx"
    } else if ua.starts_with("python-requests/") {
        "requests"
    } else if ua.contains("aiohttp") {
        "aiohttp"
    } else if ua.starts_with("python-urllib3/") {
        "urllib3"
    } else if ua.starts_with("python-urllib/") {
        "urllib"
    } else {
        "http"
    }
}

/// RFC 3339 UTC with microseconds and `+00:00` (like Python's `isoformat()`).
fn rfc3339_utc(unix_ns: i128) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    dt.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000+00:00".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults_to_the_command_line() {
        let svc = |c: &[&str]| {
            let v: Vec<String> = c.iter().map(|s| (*s).to_owned()).collect();
            service_of_cmdline(&v, "/usr/bin/python3.12")
        };
        assert_eq!(
            svc(&[
                "/srv/venv/bin/python",
                "-m",
                "uvicorn",
                "--port",
                "8000",
                "shop.app:app"
            ]),
            "uvicorn shop.app:app"
        );
        assert_eq!(
            svc(&[
                "/srv/venv/bin/python",
                "/srv/venv/bin/uvicorn",
                "orders:app",
                "--port",
                "8000"
            ]),
            "uvicorn orders:app"
        );
        assert_eq!(
            svc(&[
                "gunicorn",
                "-w",
                "4",
                "-b",
                "0.0.0.0:8000",
                "shop.wsgi:application"
            ]),
            "gunicorn shop.wsgi:application"
        );
        assert_eq!(
            svc(&["gunicorn", "--bind", "127.0.0.1:8000", "app:create_app()"]),
            "gunicorn app:create_app()"
        );
        assert_eq!(svc(&["python3", "-u", "/srv/app/server.py"]), "server.py");
        assert_eq!(
            svc(&["python3", "manage.py", "runserver"]),
            "manage.py runserver"
        );
        assert_eq!(svc(&["flask", "run", "--port", "5000"]), "flask run");
        assert_eq!(
            svc(&["/srv/venv/bin/waitress-serve", "app:app"]),
            "waitress-serve app:app"
        );
        assert_eq!(svc(&["python3", "-c", "import x"]), "python3 -c");
        assert_eq!(
            svc(&["hypercorn", "--bind", "[::]:8000", "app:app"]),
            "hypercorn app:app"
        );
        assert_eq!(svc(&[]), "python3.12");
        assert_eq!(service_of_cmdline(&[], ""), FALLBACK_SERVICE);
    }

    #[test]
    fn targets_and_queries() {
        assert_eq!(split_target("/a/b?x=1#f"), ("/a/b", "x=1"));
        assert_eq!(split_target("http://h:1/p?q"), ("/p", "q"));
        assert_eq!(split_target("http://h:1"), ("/", ""));
        let q = parse_query("a=1&b=2&a=3&c&d=x+y%21&a=4");
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"a":["1","3","4"],"b":"2","c":"","d":"x y!"}"#
        );
    }

    #[test]
    fn libs() {
        assert_eq!(lib_from_user_agent(Some("python-httpx/0.28.1")), "httpx");
        assert_eq!(
            lib_from_user_agent(Some("python-requests/2.34")),
            "requests"
        );
        assert_eq!(
            lib_from_user_agent(Some("Python/3.11 aiohttp/3.14.5")),
            "aiohttp"
        );
        assert_eq!(lib_from_user_agent(Some("python-urllib3/2.2")), "urllib3");
        assert_eq!(lib_from_user_agent(Some("Python-urllib/3.11")), "urllib");
        assert_eq!(lib_from_user_agent(Some("curl/8")), "http");
        assert_eq!(lib_from_user_agent(None), "http");
    }

    #[test]
    fn error_kinds() {
        assert_eq!(error_info(200, false, None), None);
        assert_eq!(error_info(404, false, None), None);
        assert_eq!(
            error_info(503, false, None).unwrap().kind,
            ErrorKind::ServerError
        );
        assert_eq!(
            error_info(200, false, Some("tb")).unwrap().kind,
            ErrorKind::Exception
        );
        assert_eq!(
            error_info(500, false, Some("tb")).unwrap().kind,
            ErrorKind::Exception
        );
        let e = error_info(0, true, Some("tb")).unwrap();
        assert_eq!(
            (e.kind, e.traceback.as_deref()),
            (ErrorKind::NoResponse, Some("tb"))
        );
    }

    #[test]
    fn dep_urls() {
        let m = |h: &[(&str, &'static [u8])]| HttpMessage {
            start: StartLine::Request {
                method: "GET".into(),
                target: "/p".into(),
            },
            version: 1,
            headers: h
                .iter()
                .map(|(n, v)| ((*n).to_owned(), bytes::Bytes::from_static(v)))
                .collect(),
            body: bytes::Bytes::new(),
            body_size: 0,
            truncated: false,
            lost_bytes: 0,
            framing: crate::protocols::http::types::Framing::None,
            trailers: Vec::new(),
            first: crate::protocols::http::types::Mark::default(),
            head_done: crate::protocols::http::types::Mark::default(),
            last: crate::protocols::http::types::Mark::default(),
            wire_size: 0,
            incomplete: false,
        };
        let conn = |r: &str, tls| ConnFacts {
            remote: Some(r.parse().unwrap()),
            tls,
            ..ConnFacts::default()
        };
        assert_eq!(
            dep_url(&m(&[("host", b"api.x")]), &conn("1.2.3.4:443", true), "/p"),
            "https://api.x/p"
        );
        assert_eq!(
            dep_url(&m(&[]), &conn("1.2.3.4:443", true), "/p"),
            "https://1.2.3.4/p"
        );
        assert_eq!(
            dep_url(&m(&[]), &conn("1.2.3.4:8080", false), ""),
            "http://1.2.3.4:8080/"
        );
    }

    #[test]
    fn time_format() {
        assert_eq!(
            rfc3339_utc(1_795_390_088_792_058_123),
            "2026-11-22T23:28:08.792058+00:00"
        );
    }

    #[test]
    fn header_maps_join_duplicates() {
        let list = vec![
            ("Accept".to_owned(), "a".to_owned()),
            ("ACCEPT".to_owned(), "b".to_owned()),
            ("X".to_owned(), "1".to_owned()),
        ];
        assert_eq!(
            serde_json::to_string(&header_map(&list)).unwrap(),
            r#"{"accept":"a, b","x":"1"}"#
        );
        assert_eq!(header_value_string(&[b'a', 0xe9]), "a\u{e9}");
    }
}
