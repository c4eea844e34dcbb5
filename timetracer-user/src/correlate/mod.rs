//! Attribution of outbound calls to inbound requests.
//!
//! [`Correlator`] receives decoded kernel records in arrival order. Records about sockets and
//! TLS go to the connection layer ([`ConnTable`]: streams, protocol detection, parsers), whose
//! protocol events come back with their connection's facts; stdout/stderr, process and Python
//! context records are handled here. Completed inbound exchanges become [`RecordedRequest`]s
//! once a short grace period has passed (late ring-buffer records from other CPUs, tracebacks
//! logged after the response).
//!
//! Live viewers need not wait for that: with [`CorrelateOptions::provisional`],
//! [`Correlator::take_provisional`] hands out a snapshot of each request as soon as its response
//! ended, and again whenever a call is added to it, until it is finalized. A snapshot carries
//! the id its final version will have, so a viewer updates its row in place.
//!
//! Attribution rules (this stage; concurrent asyncio tasks are decided by issue #7's engine):
//! - an outbound request whose first byte was written while exactly one inbound request of the
//!   same process was open on the writing thread → `exact/thread`;
//! - ... or, when no open request is on that thread, while exactly one was open in the process
//!   → `exact/sequential` (worker threads of a sequential server);
//! - several candidates → written to each candidate's cassette as `ambiguous/concurrent-requests`;
//! - none → background traffic, counted, not written; except calls a process seen from its
//!   start made before its first inbound request: its **startup phase**, kept per process and
//!   written as a startup cassette ([`StartupRecord`], docs/cassette-format.md) so replay can
//!   answer what the app does at import, in a lifespan or at worker boot.
//!
//! Calls are assigned by the *request* bytes' writer (thread, time); responses are paired to
//! requests by protocol order on the connection, never by who read them.
mod inbound;
pub mod model;
pub mod python;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
};

use timetracer_common::{Record, StampedWrite, Stdio};

use self::model::{
    Attribution, ConnFacts, DbSession, DepCall, DepKind, FailedConnect, ProcessInfo,
    RecordedRequest, StartupEnd, StartupRecord, Timings,
};
use crate::{
    capture::procfs::ProcFacts,
    conn::{ConnOptions, ConnTable, Output},
    protocols::{
        ProtoEvent,
        db::{DbCall, DbEvent},
        http::types::{Exchange, HttpEvent, Side},
    },
    telemetry::{Counter, Counters},
};

/// Tunables of the correlator.
#[derive(Clone, Debug)]
pub struct CorrelateOptions {
    /// Bytes of each body kept.
    pub max_body: usize,
    /// How long a hole in a stream may stay open before it is declared a gap.
    pub gap_timeout_ns: u64,
    /// How long after its response ends a request waits for late records (tracebacks logged
    /// after the response, records still in flight from other CPUs).
    pub grace_ns: u64,
    /// Longest extra wait for outbound calls still in flight that started inside the request.
    pub max_wait_ns: u64,
    /// Grace period of requests served by asyncio tasks (post-response work).
    pub asyncio_grace_ns: u64,
    /// Applied by the connection layer to every database / cache event (`conn/`).
    pub redaction: crate::redact::RedactionPolicy,
    /// Track requests whose response ended but that still accept late calls, for
    /// [`Correlator::take_provisional`] (a live viewer is attached).
    pub provisional: bool,
}

impl Default for CorrelateOptions {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            gap_timeout_ns: 300_000_000,
            grace_ns: 300_000_000,
            max_wait_ns: 3_000_000_000,
            asyncio_grace_ns: 3_000_000_000,
            redaction: crate::redact::RedactionPolicy::default(),
            provisional: false,
        }
    }
}

/// How a Python traceback starts.
const TRACEBACK: &str = "Traceback (most recent call last)";
/// Writes of a thread this soon after its previous traceback write continue the traceback.
const TRACEBACK_TAIL_NS: u64 = 1_000_000_000;

/// An inbound request from head to finalization.
struct Inbound {
    /// The id of its cassette, the same in every provisional snapshot and in the final one.
    id: uuid::Uuid,
    tgid: u32,
    conn_id: u64,
    conn: ConnFacts,
    index: u64,
    start_ns: u64,
    /// Threads that read its request or wrote its response.
    tids: Vec<u32>,
    /// Last byte of the response; `None` while it is open.
    end_ns: Option<u64>,
    /// When it may be finalized (`end_ns` + grace); 0 while it is open.
    due_ns: u64,
    exchange: Option<Exchange>,
    deps: Vec<DepCall>,
    traceback: Vec<String>,
    finalized: bool,
}

impl Inbound {
    /// Request `index` of the server connection `facts`, whose head thread `tid` read at
    /// `start_ns`.
    fn new(facts: &ConnFacts, index: u64, start_ns: u64, tid: u32) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            tgid: facts.pid,
            conn_id: facts.conn_id,
            conn: facts.clone(),
            index,
            start_ns,
            tids: vec![tid],
            end_ns: None,
            due_ns: 0,
            exchange: None,
            deps: Vec::new(),
            traceback: Vec::new(),
            finalized: false,
        }
    }
}

/// An outbound call from its first request byte to its response.
#[derive(Clone)]
struct Outbound {
    tgid: u32,
    conn_id: u64,
    index: u64,
    tid: u32,
    start_ns: u64,
    exchange: Option<Exchange>,
    /// A database / cache call (complete when recorded).
    db: Option<Box<DbCall>>,
    /// A connect that failed (complete when recorded; no connection, `conn_id` 0).
    failed: Option<FailedConnect>,
    facts: ConnFacts,
    connect_ns: u64,
    /// Python processes: the engine's decision (final unless `Wait`).
    decision: Option<python::Decision>,
    /// Python, `decision` is `Wait`: the request it will be decided for when its hold ends.
    held_for: Option<python::Root>,
}

impl Outbound {
    fn complete(&self) -> bool {
        self.exchange.is_some() || self.db.is_some() || self.failed.is_some()
    }
}

/// The startup phase of a process seen from its start: its calls before its first request.
struct Startup {
    id: uuid::Uuid,
    started_ns: u64,
    first_request_ns: Option<u64>,
    deps: Vec<DepCall>,
    dropped: u64,
}

impl Startup {
    /// A request of the process began at `ts_ns`: the phase ends at the earliest one,
    /// whatever order the connections' reads and heads are handled in.
    fn saw_request_at(&mut self, ts_ns: u64) {
        self.first_request_ns = Some(self.first_request_ns.map_or(ts_ns, |f| f.min(ts_ns)));
    }

    /// Whether a call that started at `start_ns` belongs to the phase: no request had begun.
    fn owns_call_at(&self, start_ns: u64) -> bool {
        self.first_request_ns.is_none_or(|f| start_ns < f)
    }
}

/// A write to stdout/stderr of a traced process.
struct StdioWrite {
    tgid: u32,
    tid: u32,
    ts_ns: u64,
    text: String,
}

/// The correlating stage.
pub struct Correlator {
    opts: CorrelateOptions,
    /// The connection layer.
    conns: ConnTable,
    inbound: inbound::Inbounds,
    outbound: VecDeque<Outbound>,
    stdio: VecDeque<StdioWrite>,
    /// (tgid, tid) → time of its latest kept stdio write, while it writes a traceback.
    traceback_writers: HashMap<(u32, u32), u64>,
    processes: HashMap<u32, ProcessInfo>,
    /// Processes that exited, removed from `processes` once nothing of theirs is pending.
    exited: HashSet<u32>,
    /// What /proc says (processes, socket addresses).
    facts: Box<dyn ProcFacts>,
    /// Latest database session facts per connection id.
    db_sessions: HashMap<u64, DbSession>,
    /// Closed database connections (id, close time), forgotten a minute later.
    closed_db: VecDeque<(u64, u64)>,
    mono_to_unix_ns: i128,
    /// The attribution engine of CPython processes (issue #7).
    pub py: python::PyEngine,
    /// Processes seen from their start, still in their startup phase (no inbound request yet,
    /// or calls that started before it still in flight).
    startup: HashMap<u32, Startup>,
    /// Startup phases ended, waiting for [`Self::take_startup`].
    startup_ready: Vec<StartupRecord>,
    /// Counters shared with the status line and the cassette footer.
    pub counters: Counters,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// Monotonic clock (the clock of `bpf_ktime_get_ns`) in ns.
#[must_use]
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Offset from the monotonic clock to Unix time, in ns.
#[must_use]
pub fn mono_to_unix_offset() -> i128 {
    let mono = i128::from(monotonic_ns());
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default();
    unix - mono
}

impl Correlator {
    /// A correlator that asks `facts` about processes and sockets (`capture::procfs::Procfs`
    /// while recording).
    #[must_use]
    pub fn new(opts: CorrelateOptions, counters: Counters, facts: Box<dyn ProcFacts>) -> Self {
        let conn_opts = ConnOptions {
            max_body: opts.max_body,
            gap_timeout_ns: opts.gap_timeout_ns,
            redaction: opts.redaction.clone(),
        };
        let mut inbound = inbound::Inbounds::default();
        inbound.set_tracking(opts.provisional);
        Self {
            conns: ConnTable::new(conn_opts, counters.clone()),
            opts,
            inbound,
            outbound: VecDeque::new(),
            stdio: VecDeque::new(),
            traceback_writers: HashMap::new(),
            processes: HashMap::new(),
            exited: HashSet::new(),
            facts,
            db_sessions: HashMap::new(),
            closed_db: VecDeque::new(),
            mono_to_unix_ns: mono_to_unix_offset(),
            py: python::PyEngine::default(),
            startup: HashMap::new(),
            startup_ready: Vec::new(),
            counters,
        }
    }

    /// Records what /proc says about a traced process.
    pub fn add_process(&mut self, info: ProcessInfo) {
        // Traced again after a release (node mode: its pod was selected again).
        self.exited.remove(&info.pid);
        self.processes.insert(info.pid, info);
    }

    /// A live process left the target set (node mode released its pod): no record will come
    /// for it any more, so it ends as if it had exited: its connections close and it is
    /// forgotten once its requests are written.
    pub fn release_process(&mut self, pid: u32) {
        if !self.processes.contains_key(&pid) {
            return;
        }
        let origin = timetracer_common::Origin {
            ts_ns: monotonic_ns(),
            tgid: pid,
            tid: pid,
        };
        self.handle(Record::Exit(timetracer_common::Exit { origin }));
    }

    /// Tracing sees process `pid` from its start (`record`'s launched command): its calls
    /// before its first inbound request are its startup phase. Processes it forks (and those
    /// that `exec` in a traced cgroup) are seen from their start too, without this call.
    pub fn seen_from_start(&mut self, pid: u32) {
        self.start_phase(pid, monotonic_ns());
    }

    fn start_phase(&mut self, pid: u32, ts_ns: u64) {
        self.startup.insert(
            pid,
            Startup {
                id: uuid::Uuid::new_v4(),
                started_ns: ts_ns,
                first_request_ns: None,
                deps: Vec::new(),
                dropped: 0,
            },
        );
    }

    /// Startup phases that ended (first request served, process exited, recording ended) with
    /// at least one call.
    pub fn take_startup(&mut self) -> Vec<StartupRecord> {
        std::mem::take(&mut self.startup_ready)
    }

    /// Registers a connection that was open before tracing started.
    pub fn add_preexisting(
        &mut self,
        tgid: u32,
        fd: i32,
        conn_id: u64,
        server: bool,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        self.conns
            .add_preexisting(tgid, fd, conn_id, server, local, remote);
    }

    /// Handles one decoded kernel record.
    pub fn handle(&mut self, rec: Record<'_>) {
        let mut out = Vec::new();
        match rec {
            Record::Data(_)
            | Record::DataLost(_)
            | Record::TlsData(_)
            | Record::TlsDataLost(_)
            | Record::TlsBind(_)
            | Record::Accept(_)
            | Record::Connect(_)
            | Record::Close(_) => self.conns.handle(&rec, &*self.facts, &mut out),
            Record::Stdio(w) => self.on_stdio(&w),
            Record::Fork(f) => self.process_started(f.child, f.origin.ts_ns),
            Record::Join(j) => {
                tracing::debug!(
                    pid = j.origin.tgid,
                    cgroup = j.cgroup,
                    "Process joined by exec in a traced cgroup"
                );
                self.process_started(j.origin.tgid, j.origin.ts_ns);
            }
            Record::Exit(e) => {
                // The connection layer ends its connections; the process is forgotten once
                // its requests are written (`forget_exited`).
                tracing::debug!(pid = e.origin.tgid, "Process exited");
                self.exited.insert(e.origin.tgid);
                self.conns.handle(&rec, &*self.facts, &mut out);
            }
            Record::PyStamp(p) => self.py.on_stamp(
                p.origin.tgid,
                p.origin.tid,
                p.origin.ts_ns,
                match p.write {
                    StampedWrite::Socket { conn_id } => Some(conn_id),
                    StampedWrite::Tls { .. } => None,
                },
                p.ctx,
                p.tstate,
                p.entered,
            ),
            Record::PyTask(t) => self.py.on_task(
                t.origin.tgid,
                t.origin.ts_ns,
                t.task,
                t.task_ctx,
                t.parent_ctx,
                std::str::from_utf8(t.qualname).unwrap_or(""),
            ),
            Record::PyCopy(c) => {
                self.py
                    .on_copy(c.origin.tgid, c.new_ctx, c.copied_ctx, c.entered);
            }
        }
        self.absorb(out);
    }

    /// A process entered the target set (forked by a traced one, or exec'd in a traced cgroup).
    fn process_started(&mut self, pid: u32, ts_ns: u64) {
        self.counters.inc(Counter::ProcessesStarted);
        self.exited.remove(&pid);
        self.start_phase(pid, ts_ns);
        self.processes.insert(pid, self.facts.process_info(pid));
    }

    /// Takes what the connection layer reported, in order.
    fn absorb(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::ServerRead { origin, conn_id } => {
                    self.py
                        .on_server_read(origin.tgid, origin.tid, conn_id, origin.ts_ns);
                    // The startup phase ends at the first byte a process reads from a client.
                    // Reads are handled in the kernel's order, before reassembly: a request
                    // head parsed late (a gap, a slow pump) cannot leave its request's calls
                    // looking older than every request.
                    if let Some(p) = self.startup.get_mut(&origin.tgid) {
                        p.saw_request_at(origin.ts_ns);
                    }
                }
                Output::Closed { conn_id, ts_ns } => {
                    if self.db_sessions.contains_key(&conn_id) {
                        // Kept a while: requests that used the connection are finalized later.
                        self.closed_db.push_back((conn_id, ts_ns));
                    }
                }
                Output::Event(e) => self.on_event(&e.facts, e.side, e.connect_ns, e.event),
                Output::ConnectFailed {
                    origin,
                    fd,
                    remote,
                    errno,
                } => {
                    self.touch_window(origin.tgid, origin.ts_ns);
                    self.outbound.push_back(Outbound {
                        tgid: origin.tgid,
                        conn_id: 0,
                        index: 0,
                        tid: origin.tid,
                        start_ns: origin.ts_ns,
                        exchange: None,
                        db: None,
                        failed: Some(FailedConnect {
                            errno,
                            ts_ns: origin.ts_ns,
                        }),
                        facts: ConnFacts {
                            pid: origin.tgid,
                            fd,
                            remote: Some(remote),
                            ..ConnFacts::default()
                        },
                        connect_ns: origin.ts_ns,
                        decision: None,
                        held_for: None,
                    });
                }
            }
        }
    }

    /// A write to stdout/stderr. Only tracebacks are attached to requests: keep a write that
    /// starts one, and the writes of that thread right after it (the rest of its lines).
    /// Access logs and prints are not kept (they would push a traceback out of the queue and
    /// cost a scan per finished request).
    fn on_stdio(&mut self, w: &Stdio<'_>) {
        let o = w.origin;
        let text = String::from_utf8_lossy(w.payload);
        let key = (o.tgid, o.tid);
        if text.contains(TRACEBACK) {
            self.traceback_writers.insert(key, o.ts_ns);
        } else if self
            .traceback_writers
            .get(&key)
            .is_none_or(|&t| o.ts_ns.saturating_sub(t) >= TRACEBACK_TAIL_NS)
        {
            return;
        }
        self.traceback_writers.insert(key, o.ts_ns);
        self.stdio.push_back(StdioWrite {
            tgid: o.tgid,
            tid: o.tid,
            ts_ns: o.ts_ns,
            text: text.into_owned(),
        });
        if self.stdio.len() > 4096 {
            self.stdio.pop_front();
        }
    }

    /// Removes exited processes of which nothing is pending any more: no connection, no
    /// request still to be written, no call still to be attributed. Their written requests
    /// carry the process description taken while they were alive.
    fn forget_exited(&mut self) {
        let (conns, inbound, outbound, startup) =
            (&self.conns, &self.inbound, &self.outbound, &self.startup);
        let done: Vec<u32> = self
            .exited
            .iter()
            .copied()
            .filter(|&pid| {
                !conns.any_of(pid)
                    && !inbound.iter().any(|r| r.tgid == pid && !r.finalized)
                    && !outbound.iter().any(|o| o.tgid == pid)
                    && !startup.contains_key(&pid)
            })
            .collect();
        for pid in done {
            tracing::debug!(pid, "Exited process forgotten");
            self.counters.inc(Counter::ProcessesForgotten);
            self.exited.remove(&pid);
            self.processes.remove(&pid);
            self.py.forget(pid);
        }
    }

    /// Moves data through reassembly and parsing; call after each drain.
    pub fn pump(&mut self, now_ns: u64) {
        let mut out = Vec::new();
        self.conns.pump(now_ns, &mut out);
        self.absorb(out);
    }

    fn on_event(&mut self, facts: &ConnFacts, side: Side, connect_ns: u64, e: ProtoEvent) {
        match e {
            ProtoEvent::Http(e) => self.on_http(facts, side, connect_ns, e),
            ProtoEvent::Db(DbEvent::Call(call)) => {
                self.counters.inc(Counter::DbCalls);
                self.touch_window(facts.pid, call.request_first.ts_ns);
                self.outbound.push_back(Outbound {
                    tgid: facts.pid,
                    conn_id: facts.conn_id,
                    index: call.index,
                    tid: call.request_first.tid,
                    start_ns: call.request_first.ts_ns,
                    exchange: None,
                    db: Some(call),
                    failed: None,
                    facts: facts.clone(),
                    connect_ns,
                    decision: None,
                    held_for: None,
                });
            }
            ProtoEvent::Db(DbEvent::Session {
                protocol,
                facts: f,
                missing,
            }) => {
                let entry = self
                    .db_sessions
                    .entry(facts.conn_id)
                    .or_insert_with(|| DbSession {
                        conn: facts.clone(),
                        protocol,
                        facts: serde_json::Value::Object(serde_json::Map::new()),
                        missing: Vec::new(),
                    });
                // Facts accumulate (startup, then parameter statuses, ...).
                if let (serde_json::Value::Object(acc), serde_json::Value::Object(new)) =
                    (&mut entry.facts, f)
                {
                    acc.extend(new);
                }
                entry.missing = missing;
            }
            ProtoEvent::Db(DbEvent::Skipped { bytes, .. }) => {
                self.counters.add(Counter::DbSkippedBytes, bytes)
            }
        }
    }

    fn on_http(&mut self, facts: &ConnFacts, side: Side, connect_ns: u64, e: HttpEvent) {
        match (side, e) {
            (Side::Server, HttpEvent::RequestHead { index, mark, .. }) => {
                // Describe the process now, while it is alive (its cassette may be written
                // after it exited, when /proc no longer has its command line).
                self.refresh_process(facts.pid);
                self.py
                    .on_request_head(facts.pid, facts.conn_id, index, mark.ts_ns);
                if let Some(p) = self.startup.get_mut(&facts.pid) {
                    p.saw_request_at(mark.ts_ns);
                }
                self.inbound
                    .push(Inbound::new(facts, index, mark.ts_ns, mark.tid));
            }
            (Side::Server, HttpEvent::ResponseStarted { index, mark }) => {
                self.py
                    .on_response_start(facts.pid, mark.tid, facts.conn_id, index, mark.ts_ns);
                if let Some(i) = self.inbound.find_open(facts.conn_id, index)
                    && !self.inbound[i].tids.contains(&mark.tid)
                {
                    self.inbound[i].tids.push(mark.tid);
                }
            }
            (Side::Server, HttpEvent::Exchange(ex)) => {
                let end = ex
                    .response
                    .as_ref()
                    .map_or(ex.request.last.ts_ns, |r| r.last.ts_ns);
                let start = ex.request.first.ts_ns;
                let tid = ex.request.first.tid;
                if let Some(r) = &ex.response {
                    self.py.on_response_end(
                        facts.pid,
                        r.last.tid,
                        facts.conn_id,
                        ex.index,
                        r.last.ts_ns,
                    );
                }
                if self.inbound.find_open(facts.conn_id, ex.index).is_none() {
                    // The head event was not seen (should not happen); open it now.
                    self.inbound.push(Inbound::new(facts, ex.index, start, tid));
                }
                if let Some(i) = self.inbound.find_open(facts.conn_id, ex.index) {
                    let grace = self.grace_ns(facts.pid);
                    self.inbound.set_ended(i, start, end, grace);
                    self.inbound[i].exchange = Some(ex);
                }
                self.counters.inc(Counter::Requests);
            }
            (Side::Client, HttpEvent::RequestHead { index, mark, .. }) => {
                self.outbound.push_back(Outbound {
                    tgid: facts.pid,
                    conn_id: facts.conn_id,
                    index,
                    tid: mark.tid,
                    start_ns: mark.ts_ns,
                    exchange: None,
                    db: None,
                    failed: None,
                    facts: facts.clone(),
                    connect_ns,
                    decision: None,
                    held_for: None,
                });
            }
            (Side::Client, HttpEvent::Exchange(ex)) => {
                let (tid, start) = (ex.request.first.tid, ex.request.first.ts_ns);
                self.touch_window(facts.pid, start);
                match self
                    .outbound
                    .iter_mut()
                    .find(|o| o.conn_id == facts.conn_id && o.index == ex.index)
                {
                    Some(o) => {
                        o.tid = tid;
                        o.start_ns = start;
                        o.exchange = Some(ex);
                    }
                    None => self.outbound.push_back(Outbound {
                        tgid: facts.pid,
                        conn_id: facts.conn_id,
                        index: ex.index,
                        tid,
                        start_ns: start,
                        exchange: Some(ex),
                        db: None,
                        failed: None,
                        facts: facts.clone(),
                        connect_ns,
                        decision: None,
                        held_for: None,
                    }),
                }
            }
            (_, HttpEvent::Upgraded { .. }) => self.counters.inc(Counter::Upgraded),
            (_, HttpEvent::Skipped { bytes, .. }) => {
                self.counters.add(Counter::SkippedBytes, bytes)
            }
            _ => {}
        }
    }

    /// How long after its response a request of `tgid` waits for late calls. asyncio
    /// requests can do work after their response (BackgroundTasks, call_later) that a busy
    /// event loop runs late: they wait longer (`asyncio_grace_ns`).
    fn grace_ns(&self, tgid: u32) -> u64 {
        if self.py.is_asyncio(tgid) {
            self.opts.asyncio_grace_ns
        } else {
            self.opts.grace_ns
        }
    }

    /// Requests that are ready (grace period over); call after [`Self::pump`].
    pub fn take_ready(&mut self, now_ns: u64) -> Vec<RecordedRequest> {
        self.route_startup(now_ns);
        self.route_python(now_ns);
        // Held Python calls (a timer's task, a task created after the response) and the
        // request each will be decided for when its hold ends: that request waits for the
        // decision, or the call would arrive after its cassette was written.
        let mut held: HashMap<(u32, python::Root), u64> = HashMap::new();
        for o in &self.outbound {
            if let Some(root) = o.held_for {
                let e = held.entry((o.tgid, root)).or_default();
                *e = (*e).max(o.start_ns);
            }
        }
        let mut ready = Vec::new();
        for i in self.inbound.due_positions(now_ns) {
            let r = &self.inbound[i];
            let Some(end) = r.end_ns else { continue };
            // Wait (bounded) for outbound calls that started inside this request and have not
            // finished yet.
            let python = self.py.runtime(r.tgid).is_some();
            let waiting = self.outbound.iter().any(|o| {
                if o.tgid != r.tgid {
                    return false;
                }
                if python {
                    // Calls decided for this request and still in flight, and calls started
                    // while it was open that are not decided yet.
                    return match o.decision {
                        Some(python::Decision::Exact { conn, index, .. }) => {
                            conn == r.conn_id && index == r.index
                        }
                        _ => o.start_ns >= r.start_ns && o.start_ns <= end,
                    };
                }
                !o.complete() && o.start_ns >= r.start_ns && o.start_ns <= end
            });
            if waiting && now_ns < end.saturating_add(self.opts.max_wait_ns) {
                continue;
            }
            // Bounded: only calls started within `max_wait_ns` of the response's end are
            // waited for, each at most its hold (a periodic timer chain cannot keep the
            // request open).
            let held_start = held.get(&(r.tgid, (r.conn_id, r.index))).copied();
            if held_start.is_some_and(|s| {
                s <= end.saturating_add(self.opts.max_wait_ns)
                    && now_ns < s.saturating_add(python::TASK_HOLD_NS)
            }) {
                continue;
            }
            ready.push(i);
        }
        let mut out = Vec::new();
        for i in ready {
            self.attribute_calls(i);
            self.attach_traceback(i);
            self.inbound.finalize(i);
            let r = &mut self.inbound[i];
            let Some(exchange) = r.exchange.take() else {
                continue;
            };
            let deps = std::mem::take(&mut r.deps);
            out.push(self.recorded(i, exchange, deps));
        }
        self.gc(now_ns);
        out
    }

    /// Request `i` as handed out: its exchange and `deps`, in the order they started.
    fn recorded(&mut self, i: usize, inbound: Exchange, mut deps: Vec<DepCall>) -> RecordedRequest {
        deps.sort_by_key(|d| d.timings.request_start_ns);
        let r = &self.inbound[i];
        let (id, tgid, conn) = (r.id, r.tgid, r.conn.clone());
        let traceback = (!r.traceback.is_empty()).then(|| r.traceback.concat());
        let timings = timings_of(&inbound, 0);
        let db_sessions = self.sessions_of(&deps);
        RecordedRequest {
            id,
            process: self.process(tgid),
            inbound,
            conn,
            timings,
            deps,
            traceback,
            mono_to_unix_ns: self.mono_to_unix_ns,
            drops: Vec::new(),
            db_sessions,
        }
    }

    /// A call of `tgid` that started at `ts` completed: the ended requests whose window holds
    /// it may own it, so a live viewer gets their snapshot again. Python processes are
    /// touched where the engine decides a call (`route_python`).
    fn touch_window(&mut self, tgid: u32, ts: u64) {
        if !self.opts.provisional || self.py.runtime(tgid).is_some() {
            return;
        }
        for j in self.inbound.open_at(tgid, ts) {
            self.inbound.touch(j);
        }
    }

    /// Starts or stops tracking requests for [`Self::take_provisional`] (a viewer came or
    /// went).
    pub fn set_provisional(&mut self, on: bool) {
        self.opts.provisional = on;
        self.inbound.set_tracking(on);
    }

    /// Snapshots of the requests whose response ended and that are not finalized, taken when
    /// the response ended or a call was added since the last call, in arrival order; call
    /// after [`Self::take_ready`] (a request finalized there is not among them). Each has the
    /// id of its final version. Its calls are those decided so far (Python processes) or the
    /// complete calls inside its window that the rule of [`decide`] gives it today (others);
    /// its traceback comes with the final version. Empty unless
    /// [`CorrelateOptions::provisional`].
    pub fn take_provisional(&mut self) -> Vec<RecordedRequest> {
        if !self.opts.provisional {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in self.inbound.take_touched() {
            let r = &self.inbound[i];
            let Some(exchange) = r.exchange.clone() else {
                continue;
            };
            let (tgid, start, end) = (r.tgid, r.start_ns, r.end_ns.unwrap_or(u64::MAX));
            let mut deps = r.deps.clone();
            if self.py.runtime(tgid).is_none() {
                // What `attribute_calls` would give it now, without taking the calls: the
                // final version decides again with every record in.
                for o in &self.outbound {
                    if o.tgid != tgid || !o.complete() || o.start_ns < start || o.start_ns > end {
                        continue;
                    }
                    let (owners, attribution) = decide(&self.inbound, o.tgid, o.tid, o.start_ns);
                    if owners.contains(&i)
                        && let Some(d) = dep_call(o.clone(), attribution)
                    {
                        deps.push(d);
                    }
                }
            }
            out.push(self.recorded(i, exchange, deps));
        }
        out
    }

    /// What we know about a process; re-read from /proc when it was described before its
    /// `exec` (the held child of `record`) or not at all.
    fn process(&mut self, pid: u32) -> ProcessInfo {
        self.refresh_process(pid);
        self.processes.get(&pid).cloned().unwrap_or(ProcessInfo {
            pid,
            ..ProcessInfo::default()
        })
    }

    fn refresh_process(&mut self, pid: u32) {
        let stale = self
            .processes
            .get(&pid)
            .is_none_or(|p| p.cmdline.iter().any(|a| a == "__exec-held") || p.cmdline.is_empty());
        if stale {
            let fresh = self.facts.process_info(pid);
            if !fresh.cmdline.is_empty() {
                self.processes.insert(pid, fresh);
            } else if let Some(p) = self.processes.get_mut(&pid) {
                // The process is gone: the held child's command line is the one it exec'd.
                p.cmdline = crate::capture::procfs::strip_exec_held(&p.cmdline);
            }
        }
    }

    /// Decides which inbound request(s) each completed outbound call started inside request
    /// `i`'s window belongs to.
    fn attribute_calls(&mut self, i: usize) {
        let (tgid, start, end) = {
            let r = &self.inbound[i];
            (r.tgid, r.start_ns, r.end_ns.unwrap_or(u64::MAX))
        };
        let mut k = 0;
        while k < self.outbound.len() {
            let o = &self.outbound[k];
            if o.tgid != tgid
                || !o.complete()
                || o.start_ns < start
                || o.start_ns > end
                || self.py.runtime(o.tgid).is_some()
            {
                k += 1;
                continue;
            }
            let o = self.outbound.remove(k).expect("index checked");
            let (owners, attribution) = decide(&self.inbound, o.tgid, o.tid, o.start_ns);
            let Some(dep) = dep_call(o, attribution) else {
                continue;
            };
            for j in owners {
                self.inbound[j].deps.push(dep.clone());
            }
        }
    }

    /// Startup phases: every complete call a process in its startup phase started before its
    /// first inbound request is its startup's (no request can own it: none had started). A
    /// phase ends once its first request arrived and no call that started before it is still
    /// in flight (bounded by `max_wait_ns`), or when the process exited.
    fn route_startup(&mut self, now_ns: u64) {
        if self.startup.is_empty() {
            return;
        }
        let mut k = 0;
        while k < self.outbound.len() {
            let o = &self.outbound[k];
            let before_first = self
                .startup
                .get(&o.tgid)
                .is_some_and(|p| p.owns_call_at(o.start_ns));
            if !before_first || !o.complete() {
                k += 1;
                continue;
            }
            let o = self.outbound.remove(k).expect("index checked");
            let Some(p) = self.startup.get_mut(&o.tgid) else {
                continue;
            };
            if p.deps.len() >= StartupRecord::MAX_CALLS {
                p.dropped += 1;
                self.counters.inc(Counter::BackgroundCalls);
                continue;
            }
            if let Some(d) = dep_call(
                o,
                Attribution::Exact {
                    evidence: "startup",
                    proof: None,
                },
            ) {
                p.deps.push(d);
                self.counters.inc(Counter::StartupCalls);
            }
        }
        let ended: Vec<(u32, StartupEnd)> =
            self.startup
                .iter()
                .filter_map(|(&pid, p)| {
                    let pending = self
                        .outbound
                        .iter()
                        .any(|o| o.tgid == pid && p.owns_call_at(o.start_ns));
                    match p.first_request_ns {
                        Some(first) => (!pending
                            || now_ns >= first.saturating_add(self.opts.max_wait_ns))
                        .then_some((pid, StartupEnd::FirstRequest)),
                        None => (self.exited.contains(&pid) && !pending)
                            .then_some((pid, StartupEnd::Exit)),
                    }
                })
                .collect();
        for (pid, end) in ended {
            self.close_startup(pid, end);
        }
    }

    /// Ends `pid`'s startup phase; one with calls becomes a [`StartupRecord`].
    fn close_startup(&mut self, pid: u32, ended_by: StartupEnd) {
        let Some(p) = self.startup.remove(&pid) else {
            return;
        };
        if p.deps.is_empty() {
            return;
        }
        let mut deps = p.deps;
        deps.sort_by_key(|d| d.timings.request_start_ns);
        let db_sessions = self.sessions_of(&deps);
        let process = self.process(pid);
        self.startup_ready.push(StartupRecord {
            id: p.id,
            process,
            started_ns: p.started_ns,
            first_request_ns: p.first_request_ns,
            ended_by,
            deps,
            dropped_calls: p.dropped,
            db_sessions,
            mono_to_unix_ns: self.mono_to_unix_ns,
            drops: Vec::new(),
        });
    }

    /// Session facts of the database connections `deps` used, each once.
    fn sessions_of(&self, deps: &[DepCall]) -> Vec<DbSession> {
        let mut db_conns: Vec<u64> = deps
            .iter()
            .filter(|d| matches!(d.kind, DepKind::Db(_)))
            .map(|d| d.conn.conn_id)
            .collect();
        db_conns.dedup();
        db_conns
            .iter()
            .filter_map(|id| self.db_sessions.get(id).cloned())
            .collect()
    }

    /// Python processes: hands every complete outbound call whose request is decided to that
    /// request (or, ambiguous, to every request open when it started; background calls to
    /// none).
    fn route_python(&mut self, now_ns: u64) {
        let mut k = 0;
        while k < self.outbound.len() {
            let o = &mut self.outbound[k];
            // A call of the startup phase still in flight is the phase's (`route_startup`).
            let startup = self
                .startup
                .get(&o.tgid)
                .is_some_and(|p| p.owns_call_at(o.start_ns));
            if startup || self.py.runtime(o.tgid).is_none() {
                k += 1;
                continue;
            }
            if matches!(o.decision, None | Some(python::Decision::Wait)) {
                let (d, held_for) = if o.failed.is_some() {
                    // No bytes were written: no stamp to follow, only the thread.
                    (
                        self.py.decide_unwritten(o.tgid, o.tid, o.start_ns, now_ns),
                        None,
                    )
                } else {
                    self.py
                        .decide_held(o.tgid, o.tid, o.conn_id, o.start_ns, now_ns)
                };
                if d != python::Decision::Wait {
                    self.py.count(&d);
                }
                o.decision = Some(d);
                o.held_for = held_for;
            }
            let decision = o.decision.clone().unwrap_or(python::Decision::Wait);
            if !o.complete() || decision == python::Decision::Wait {
                k += 1;
                continue;
            }
            let (tgid, start) = (o.tgid, o.start_ns);
            match decision {
                python::Decision::Exact {
                    conn,
                    index,
                    evidence,
                    proof,
                } => {
                    // A thread-rule decision about a request that started before the probes
                    // (attach): the thread might have been an event loop's.
                    let t_on = self.py.probes_on(tgid);
                    let latest = self.inbound.latest(conn, index);
                    if !evidence.starts_with("asyncio")
                        && t_on != 0
                        && latest.is_some_and(|j| self.inbound[j].start_ns < t_on)
                    {
                        self.outbound[k].decision = Some(python::Decision::Ambiguous {
                            reason: "before-probes",
                            background: false,
                        });
                        continue;
                    }
                    let Some(latest) = latest else {
                        k += 1; // the request's head is not parsed yet
                        continue;
                    };
                    let open = (!self.inbound[latest].finalized).then_some(latest);
                    let o = self.outbound.remove(k).expect("index checked");
                    match open {
                        Some(j) => {
                            let proof = Some(Box::new(proof));
                            if let Some(d) = dep_call(o, Attribution::Exact { evidence, proof }) {
                                self.inbound[j].deps.push(d);
                                self.inbound.touch(j);
                            }
                        }
                        None => {
                            let end = self.inbound[latest].end_ns;
                            tracing::info!(
                                conn,
                                index,
                                call_start_ns = o.start_ns,
                                request_end_ns = ?end,
                                now_ns,
                                "Call decided for a request already written (late_calls)"
                            );
                            self.counters.inc(Counter::LateCalls);
                        }
                    }
                }
                python::Decision::Ambiguous {
                    background: true, ..
                } => {
                    self.outbound.remove(k);
                    self.counters.inc(Counter::BackgroundCalls);
                }
                python::Decision::Ambiguous { reason, .. } => {
                    let o = self.outbound.remove(k).expect("index checked");
                    let mut owners = self.inbound.open_at(tgid, start);
                    owners.retain(|&j| !self.inbound[j].finalized);
                    if owners.is_empty() {
                        self.counters.inc(Counter::AmbiguousUnpinnedCalls);
                    }
                    if let Some(d) = dep_call(o, Attribution::Ambiguous { reason }) {
                        for j in owners {
                            self.inbound[j].deps.push(d.clone());
                            self.inbound.touch(j);
                        }
                    }
                }
                python::Decision::Wait => k += 1,
            }
        }
    }

    /// Attaches stdout/stderr writes holding a Python traceback to request `i`: writes made
    /// while it was the only candidate on that thread, or after its response by the thread that
    /// served it before that thread started anything else (uvicorn logs after Starlette has
    /// sent the 500).
    fn attach_traceback(&mut self, i: usize) {
        let (tgid, start, end) = {
            let r = &self.inbound[i];
            (r.tgid, r.start_ns, r.end_ns.unwrap_or(u64::MAX))
        };
        let mut k = 0;
        while k < self.stdio.len() {
            let w = &self.stdio[k];
            if w.tgid != tgid || w.ts_ns < start {
                k += 1;
                continue;
            }
            let mine = if w.ts_ns <= end {
                let (owners, a) = decide(&self.inbound, tgid, w.tid, w.ts_ns);
                owners == [i] && matches!(a, Attribution::Exact { .. })
            } else {
                // After the response: ours if no other request of this process started on
                // the writing thread (or at all, single-threaded) since our response ended.
                let r = &self.inbound[i];
                let thread_matches = r.tids.contains(&w.tid);
                thread_matches
                    && !self.inbound.iter().enumerate().any(|(j, q)| {
                        j != i
                            && q.tgid == tgid
                            && q.start_ns > end
                            && q.start_ns <= w.ts_ns
                            && q.tids.contains(&w.tid)
                    })
            };
            if mine && (w.text.contains(TRACEBACK) || !self.inbound[i].traceback.is_empty()) {
                let w = self.stdio.remove(k).expect("index checked");
                if self.inbound[i]
                    .traceback
                    .iter()
                    .map(String::len)
                    .sum::<usize>()
                    < 256 * 1024
                {
                    self.inbound[i].traceback.push(w.text);
                }
            } else {
                k += 1;
            }
        }
    }

    /// Forgets state that can no longer matter.
    fn gc(&mut self, now_ns: u64) {
        const KEEP_NS: u64 = 60_000_000_000;
        while let Some(r) = self.inbound.front() {
            let old = r.end_ns.is_some_and(|e| e + KEEP_NS < now_ns)
                || (r.finalized
                    && r.end_ns
                        .is_some_and(|e| e + 2 * self.opts.max_wait_ns < now_ns));
            if !old {
                break;
            }
            self.inbound.pop_front();
        }
        let horizon = now_ns.saturating_sub(KEEP_NS);
        let before = self.outbound.len();
        self.outbound.retain(|o| o.start_ns >= horizon);
        self.counters.add(
            Counter::BackgroundCalls,
            (before - self.outbound.len()) as u64,
        );
        self.stdio.retain(|w| w.ts_ns >= horizon);
        self.traceback_writers
            .retain(|_, t| now_ns.saturating_sub(*t) < TRACEBACK_TAIL_NS);
        self.py.gc(horizon);
        while let Some(&(id, ts)) = self.closed_db.front() {
            if ts >= horizon {
                break;
            }
            self.db_sessions.remove(&id);
            self.closed_db.pop_front();
        }
        self.forget_exited();
    }

    /// Ends everything (tracing stops): closes every connection and finalizes every request.
    pub fn finish(&mut self) -> Vec<RecordedRequest> {
        let mut out = Vec::new();
        self.conns.close_all(monotonic_ns(), &mut out);
        self.absorb(out);
        let ready = self.take_ready(u64::MAX / 2);
        let pids: Vec<u32> = self.startup.keys().copied().collect();
        for pid in pids {
            let end = if self.exited.contains(&pid) {
                StartupEnd::Exit
            } else if self.startup[&pid].first_request_ns.is_some() {
                StartupEnd::FirstRequest
            } else {
                StartupEnd::EndOfRecording
            };
            self.close_startup(pid, end);
        }
        ready
    }

    /// Processes seen so far (targets and their children).
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// Number of connections being tracked.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }
}

/// The cassette's view of a finished outbound call.
fn dep_call(o: Outbound, attribution: Attribution) -> Option<DepCall> {
    Some(match (o.exchange, o.db) {
        (Some(exchange), _) => DepCall {
            timings: timings_of(&exchange, o.connect_ns),
            kind: DepKind::Http(exchange),
            conn: o.facts,
            attribution,
        },
        (None, Some(call)) => DepCall {
            timings: Timings {
                request_start_ns: call.request_first.ts_ns,
                request_end_ns: call.request_last.ts_ns,
                response_start_ns: call.response_first.map_or(0, |m| m.ts_ns),
                response_end_ns: call.response_last.map_or(0, |m| m.ts_ns),
                connect_ns: o.connect_ns,
            },
            kind: DepKind::Db(call),
            conn: o.facts,
            attribution,
        },
        (None, None) => {
            let f = o.failed?;
            DepCall {
                timings: Timings {
                    request_start_ns: f.ts_ns,
                    request_end_ns: f.ts_ns,
                    response_start_ns: 0,
                    response_end_ns: 0,
                    connect_ns: f.ts_ns,
                },
                kind: DepKind::ConnectFailed(f),
                conn: o.facts,
                attribution,
            }
        }
    })
}

/// Which inbound requests could have caused an outbound action by thread `tid` of process
/// `tgid` at `ts`, and how sure we are.
fn decide(inbound: &inbound::Inbounds, tgid: u32, tid: u32, ts: u64) -> (Vec<usize>, Attribution) {
    let open = inbound.open_at(tgid, ts);
    let on_thread: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&j| inbound[j].tids.contains(&tid))
        .collect();
    match (on_thread.len(), open.len()) {
        (1, 1) => (
            on_thread,
            Attribution::Exact {
                evidence: "sequential",
                proof: None,
            },
        ),
        (1, _) if distinct_threads(inbound, &open) => (
            on_thread,
            Attribution::Exact {
                evidence: "thread",
                proof: None,
            },
        ),
        (0, 1) => (
            open,
            Attribution::Exact {
                evidence: "sequential",
                proof: None,
            },
        ),
        (0, 0) => (open, Attribution::Ambiguous { reason: "no-owner" }),
        _ => (
            open,
            Attribution::Ambiguous {
                reason: "concurrent-requests",
            },
        ),
    }
}

/// True when every open request is served by its own thread(s) (thread-per-request server).
fn distinct_threads(inbound: &inbound::Inbounds, open: &[usize]) -> bool {
    let mut seen: Vec<u32> = Vec::new();
    for &j in open {
        for t in &inbound[j].tids {
            if seen.contains(t) {
                return false;
            }
        }
        seen.extend(&inbound[j].tids);
    }
    true
}

fn timings_of(ex: &Exchange, connect_ns: u64) -> Timings {
    let (rs, re) = ex
        .response
        .as_ref()
        .map_or((0, 0), |r| (r.first.ts_ns, r.last.ts_ns));
    Timings {
        request_start_ns: ex.request.first.ts_ns,
        request_end_ns: ex.request.last.ts_ns,
        response_start_ns: rs,
        response_end_ns: re,
        connect_ns,
    }
}

#[cfg(test)]
mod exit_tests {
    use timetracer_common::{Accept, Connect, Data, Direction, Exit, Fork, Origin, SockAddr};

    use super::*;
    use crate::capture::procfs::FixedFacts;

    fn o(ts_ns: u64, tgid: u32) -> Origin {
        Origin {
            ts_ns,
            tgid,
            tid: tgid,
        }
    }

    fn data(ts_ns: u64, egress: bool, pos: u64, payload: &[u8]) -> Record<'_> {
        on(1, 5, ts_ns, egress, pos, payload)
    }

    /// Data of process 7's connection `conn_id` (socket `fd`).
    fn on(conn_id: u64, fd: i32, ts_ns: u64, egress: bool, pos: u64, payload: &[u8]) -> Record<'_> {
        Record::Data(Data {
            origin: o(ts_ns, 7),
            syscall: timetracer_common::sys::READ,
            conn_id,
            fd,
            dir: Direction::of_egress(egress),
            pos,
            syscall_bytes: payload.len() as u64,
            last_chunk: true,
            payload,
        })
    }

    /// Process 7 accepts connection 1 on fd 5 at 10 ns.
    fn accept() -> Record<'static> {
        Record::Accept(Accept {
            origin: o(10, 7),
            conn_id: 1,
            fd: 5,
            listen_fd: 3,
            addr: SockAddr::default(),
        })
    }

    /// 127.0.0.1:`port`.
    fn loopback(port: u16) -> SockAddr {
        SockAddr {
            family: 2,
            port,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..SockAddr::default()
        }
    }

    /// Issue #22: with `provisional`, a request is handed out as soon as its response ended
    /// (marked by the id its final version will have), again when a late call completes
    /// inside its window, never after it was finalized; without it, never.
    #[test]
    fn provisional_snapshots_until_final() {
        let upstream = loopback(8080);
        let records = || {
            [
                accept(),
                data(20, false, 0, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
                Record::Connect(Connect {
                    origin: o(22, 7),
                    conn_id: Some(2),
                    fd: 9,
                    ret: 0,
                    addr: upstream,
                }),
                on(2, 9, 24, true, 0, b"GET /up HTTP/1.1\r\nHost: up\r\n\r\n"),
                data(
                    30,
                    true,
                    0,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ),
            ]
        };
        let mut c = Correlator::new(
            CorrelateOptions {
                provisional: true,
                ..CorrelateOptions::default()
            },
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        for r in records() {
            c.handle(r);
        }
        c.pump(40);
        assert!(c.take_ready(40).is_empty(), "within its grace period");
        let open = c.take_provisional();
        assert_eq!(open.len(), 1, "shown when its response ended");
        let id = open[0].id;
        assert!(
            open[0].deps.is_empty(),
            "the upstream call has not answered"
        );
        assert!(c.take_provisional().is_empty(), "nothing changed");

        // The upstream answers after the response: a late call, in the request's window.
        c.handle(on(
            2,
            9,
            100,
            false,
            0,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ));
        c.pump(110);
        assert!(c.take_ready(110).is_empty());
        let updated = c.take_provisional();
        assert_eq!(updated.len(), 1, "shown again with its late call");
        assert_eq!(updated[0].id, id);
        assert_eq!(updated[0].deps.len(), 1);

        let done = c.take_ready(1_000_000_000);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].id, id, "the final version has the snapshots' id");
        assert_eq!(done[0].deps.len(), 1);
        assert!(
            c.take_provisional().is_empty(),
            "never after it was finalized"
        );

        // Without a viewer nothing is tracked.
        let mut quiet = Correlator::new(
            CorrelateOptions::default(),
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        for r in records() {
            quiet.handle(r);
        }
        quiet.pump(40);
        assert!(quiet.take_ready(40).is_empty());
        assert!(quiet.take_provisional().is_empty());
        // A viewer that leaves stops it.
        c.set_provisional(false);
        assert!(c.take_provisional().is_empty());
    }

    /// A connect refused while the request was served is a call of that request: the
    /// destination and the errno, attributed to the thread serving it.
    #[test]
    fn a_refused_connect_is_a_call_of_the_request_that_made_it() {
        let mut c = Correlator::new(
            CorrelateOptions::default(),
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        let dest = loopback(9);
        for r in [
            accept(),
            data(20, false, 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Record::Connect(Connect {
                origin: o(25, 7),
                conn_id: None,
                fd: 9,
                ret: -111,
                addr: dest,
            }),
            data(30, true, 0, b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"),
        ] {
            c.handle(r);
        }
        c.pump(40);
        let done = c.take_ready(1_000_000_000);
        assert_eq!(done.len(), 1);
        let deps = &done[0].deps;
        assert_eq!(deps.len(), 1, "{deps:?}");
        assert_eq!(
            deps[0].kind,
            DepKind::ConnectFailed(FailedConnect {
                errno: 111,
                ts_ns: 25
            })
        );
        assert_eq!(deps[0].conn.remote, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(deps[0].conn.fd, 9);
        assert!(
            matches!(deps[0].attribution, Attribution::Exact { .. }),
            "{:?}",
            deps[0].attribution
        );
        assert_eq!(c.counters.get(Counter::ConnectFailed), 1);
    }

    /// The exit ends the process' connections (the kernel closes them without close
    /// records); the process stays described until its request is written, then leaves.
    #[test]
    fn exited_process_is_forgotten_once_its_requests_are_written() {
        let described = ProcessInfo {
            pid: 7,
            cmdline: vec!["python".into(), "serve.py".into()],
            ..ProcessInfo::default()
        };
        // /proc no longer knows the process when its request is written.
        let mut c = Correlator::new(
            CorrelateOptions::default(),
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        c.add_process(described.clone());
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // Close-delimited: the response ends when the connection does.
        let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
        for r in [
            accept(),
            data(20, false, 0, req),
            data(30, true, 0, resp),
            Record::Fork(Fork {
                origin: o(35, 7),
                child: 8,
            }),
            Record::Exit(Exit { origin: o(38, 8) }),
            Record::Exit(Exit { origin: o(40, 7) }),
        ] {
            c.handle(r);
        }
        assert_eq!(c.open_connections(), 0, "the exit closed the connection");
        c.pump(50);
        assert!(c.take_ready(50).is_empty(), "within its grace period");
        // The child had nothing pending: forgotten at once; the parent waits for its request.
        assert_eq!(c.pids(), [7]);
        let done = c.take_ready(1_000_000_000);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].process, described);
        assert_eq!(
            done[0].inbound.response.as_ref().map(|r| &r.body[..]),
            Some(&b"hello"[..])
        );
        assert!(c.pids().is_empty());
    }

    /// Issue #26: a process seen from its start keeps the calls it made before its first
    /// request (a pool warmed up at import) as its startup; calls inside the request stay the
    /// request's; the phase ends once the first request arrived and nothing older is in flight.
    #[test]
    fn calls_before_the_first_request_are_the_startup() {
        let mut c = Correlator::new(
            CorrelateOptions::default(),
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        c.add_process(ProcessInfo {
            pid: 7,
            cmdline: vec!["gunicorn".into(), "app:app".into()],
            ..ProcessInfo::default()
        });
        c.seen_from_start(7);
        let redis = SockAddr {
            family: 2,
            port: 6379,
            _pad: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let get = b"*2\r\n$3\r\nGET\r\n$4\r\nboot\r\n";
        let got = b"$2\r\nok\r\n";
        let incr = b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n";
        let n = b":1\r\n";
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
        let g = get.len() as u64;
        let r = got.len() as u64;
        for rec in [
            Record::Connect(Connect {
                origin: o(5, 7),
                conn_id: Some(2),
                fd: 6,
                ret: 0,
                addr: redis,
            }),
            on(2, 6, 6, true, 0, get),
            on(2, 6, 7, false, 0, got),
            accept(),
            data(20, false, 0, req),
            on(2, 6, 22, true, g, incr),
            on(2, 6, 23, false, r, n),
            data(30, true, 0, resp),
            Record::Exit(Exit { origin: o(40, 7) }),
        ] {
            c.handle(rec);
            c.pump(1);
        }
        c.pump(50);
        let done = c.take_ready(1_000_000_000);
        let startup = c.take_startup();
        assert_eq!(startup.len(), 1, "one process with startup calls");
        let s = &startup[0];
        assert_eq!(s.process.pid, 7);
        assert_eq!(s.ended_by, StartupEnd::FirstRequest);
        assert_eq!(s.first_request_ns, Some(20));
        assert_eq!(s.deps.len(), 1, "{:?}", s.deps);
        assert!(matches!(&s.deps[0].kind, DepKind::Db(call) if call.method == "GET"));
        assert_eq!(
            s.deps[0].attribution,
            Attribution::Exact {
                evidence: "startup",
                proof: None,
            }
        );
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].deps.len(), 1, "the request keeps its own call");
        assert!(matches!(&done[0].deps[0].kind, DepKind::Db(call) if call.method == "INCR"));
        assert_eq!(c.counters.get(Counter::StartupCalls), 1);
        // A process not seen from its start (attach) has no startup phase.
        assert!(c.take_startup().is_empty());
    }

    /// Issue #26: a request whose head is not parsed yet (split over reads, or behind a gap)
    /// when its call completes still ends the startup phase: its first read did.
    #[test]
    fn a_request_read_before_its_head_is_parsed_ends_the_startup() {
        let mut c = Correlator::new(
            CorrelateOptions::default(),
            Counters::default(),
            Box::new(FixedFacts::default()),
        );
        c.add_process(ProcessInfo {
            pid: 7,
            ..ProcessInfo::default()
        });
        c.seen_from_start(7);
        let redis = SockAddr {
            family: 2,
            port: 6379,
            _pad: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let incr = b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n";
        let (head1, head2) = (b"GET / HT", b"TP/1.1\r\nHost: x\r\n\r\n");
        for rec in [
            Record::Connect(Connect {
                origin: o(5, 7),
                conn_id: Some(2),
                fd: 6,
                ret: 0,
                addr: redis,
            }),
            accept(),
            data(20, false, 0, head1),
            on(2, 6, 22, true, 0, incr),
            on(2, 6, 23, false, 0, b":1\r\n"),
        ] {
            c.handle(rec);
            c.pump(1);
        }
        assert!(c.take_ready(1_000).is_empty());
        for rec in [
            data(24, false, head1.len() as u64, head2),
            data(30, true, 0, b"HTTP/1.0 200 OK\r\n\r\nhello"),
            Record::Exit(Exit { origin: o(40, 7) }),
        ] {
            c.handle(rec);
            c.pump(1);
        }
        c.pump(50);
        let done = c.take_ready(1_000_000_000);
        assert!(c.take_startup().is_empty(), "no call before the request");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].deps.len(), 1, "the request keeps its call");
        assert_eq!(c.counters.get(Counter::StartupCalls), 0);
    }
}
