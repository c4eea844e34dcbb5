//! The attribution engine for CPython processes (issues #7 and #18; rules with examples in
//! `docs/attribution.md`).
//!
//! It is fed, in ring-buffer order, what the kernel reports for processes whose runtime was
//! discovered (`capture::python`): context stamps of socket writes (outbound requests and
//! inbound responses), task creations, context copies and server-side reads; and, from the
//! HTTP parser, when each request's head was read and when each thread starts and ends each
//! response. It answers one question per outbound message: which inbound request (connection,
//! index on that connection) caused it, with the evidence, or why that cannot be proven.
//!
//! asyncio — no server layout is assumed. Every task is a node of a tree: its parent is the
//! task whose context (own, or a copy: a callback handle, `to_thread`) was current when it was
//! created. A request's **root** is what the kernel shows: the task whose context wrote the
//! first byte of that request's response. A call made in task M belongs to request R when the
//! nearest task on M's chain (M, its parent, ...) that wrote a response is R's root W, and the
//! chain is proven for R: W wrote exactly one response, W was created after R's head was read
//! (a connection handler or a worker created earlier serves many requests), and every task
//! between M and W was created inside a task before W's response started — or, created from a
//! callback or after that response (a timer's task, a pipelined request's root created by the
//! previous one), it wrote no response of its own within [`TASK_HOLD_NS`]. Otherwise the call
//! is `ambiguous` with the reason. Calls wait for their chain's root to write its response
//! (bounded by [`TASK_HOLD_NS`]). Every observed creation of a context at an address replaces
//! what was known about that address (CPython reuses them constantly).
//!
//! Threads (no context owner; gunicorn sync/gthread, any thread-per-request server): the
//! thread-plus-response rule, see [`PyEngine::decide`].
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

/// How long a thread-held message may wait for its thread's next server event.
const THREAD_HOLD_NS: u64 = 2_000_000_000;

/// How long a task-held message may wait for its chain's root to write its response, or for a
/// task on its chain that may be another request's root to write one.
pub const TASK_HOLD_NS: u64 = 2_000_000_000;

/// How long a call may wait while a request it may belong to is still unanswered (a slow
/// handler: its root, or its thread, has not written the response yet). Bounded so a request
/// that is never answered (a long poll, a dead client) cannot hold calls forever.
const OPEN_REQUEST_WAIT_NS: u64 = 30_000_000_000;

/// Longest chain walked (a cycle through reused addresses cannot loop).
const MAX_HOPS: usize = 256;

/// What the agent knows about a process' runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// Probes attached: contexts are followed.
    Supported,
    /// A CPython this agent cannot follow (reason shown once at discovery).
    Unsupported,
    /// A CPython whose discovery has not finished.
    Pending,
}

/// The facts a decision used, kept in the cassette so a wrong result can be diagnosed from it
/// alone. Times are monotonic ns (the cassette stores them relative to the request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proof {
    /// Thread that wrote the call's first byte.
    pub tid: u32,
    /// asyncio: the `Task` object (Python `id(task)`) whose context wrote the call, 0 for a
    /// thread's own context.
    pub task: u64,
    /// asyncio: the request's root task (wrote the response's first byte) and its coroutine.
    pub root_task: u64,
    pub root_coro: Option<Arc<str>>,
    /// asyncio: tasks from the call's task up to the root (0: the root itself).
    pub hops: u32,
    /// The first byte of the request was read (asyncio: the root was created after it).
    pub request_read_ns: u64,
    /// The first byte of the response was written (by the root / by the thread).
    pub response_write_ns: u64,
    /// asyncio: the chain had a task that could have been another request's root and was held
    /// until it had not written a response for [`TASK_HOLD_NS`].
    pub held: bool,
}

/// The request a message belongs to, or why that cannot be proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Exact {
        conn: u64,
        index: u64,
        evidence: &'static str,
        proof: Proof,
    },
    /// Not provable. `background`: belongs to no request (reported apart, not pinned on one).
    Ambiguous {
        reason: &'static str,
        background: bool,
    },
    /// Not decidable yet (a held message waits for its thread's or task's next event).
    Wait,
}

/// (connection id, request index on the connection).
pub type Root = (u64, u64);

/// A task seen created.
#[derive(Clone, Debug)]
struct Node {
    /// The `TaskObj*`.
    task: u64,
    /// The task whose context was current at creation.
    parent: Option<u64>,
    /// Creation time (monotonic ns).
    created: u64,
    /// Created in a task's own context (not in a callback's or thread's copy of one).
    in_task: bool,
    /// The coroutine's `__qualname__`.
    coro: Arc<str>,
    /// Responses whose first byte its contexts wrote: (request, time), at most two kept.
    responses: Vec<(Root, u64)>,
    /// Latest use (creation, child, stamp, response), for the GC.
    seen: u64,
}

/// Who owns a context: the task it belongs to (its own, or a copy made while it ran).
#[derive(Clone, Copy, Debug)]
struct Owner {
    node: u64,
    /// The context is a task's own context (so code running in it runs "inside a task").
    task: bool,
}

/// What a stamped write resolved to, at the moment it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// Written in a context owned by this task node.
    Task(u64),
    /// A context with no known task owner (0 = the thread has no context at all).
    NoOwner,
    /// The thread state was not found.
    NoTstate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ThreadEv {
    /// The thread read bytes of a server connection.
    Read,
    /// The thread wrote the first byte of the response to (conn, index).
    RespStart(Root),
    /// The response to (conn, index) was complete.
    RespEnd(Root),
}

#[derive(Default)]
struct Proc {
    runtime: Option<Runtime>,
    /// When the probes became effective (monotonic ns): tasks and contexts created before
    /// are unknown.
    probes_on: u64,
    contexts: HashMap<u64, Owner>,
    nodes: HashMap<u64, Node>,
    next_node: u64,
    /// When each request's head was read (first byte).
    heads: HashMap<Root, u64>,
    /// Requests read and not answered yet, by head time.
    unanswered: BTreeSet<(u64, Root)>,
    /// Threads whose tasks wrote responses (event-loop threads).
    loop_threads: HashSet<u32>,
    /// Per thread: stamps (ts, connection id — `None` for TLS plaintext, stamped by `SSL*` —,
    /// resolution), oldest first.
    stamps: HashMap<u32, VecDeque<(u64, Option<u64>, Stamp)>>,
    /// Per thread: server events, sorted by time.
    timeline: HashMap<u32, Vec<(u64, ThreadEv)>>,
    /// Horizon of the latest task GC.
    gc_at: u64,
}

/// The engine, for every traced process.
#[derive(Default)]
pub struct PyEngine {
    procs: HashMap<u32, Proc>,
    /// Task creations, response writers, copies and stamps handled (for the status line).
    pub tasks: u64,
    pub roots: u64,
    pub copies: u64,
    pub stamps: u64,
    /// How often each rule decided a call (`exact/<evidence>`, `ambiguous/<reason>`).
    pub rules: BTreeMap<String, u64>,
}

impl std::fmt::Debug for PyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyEngine")
            .field("procs", &self.procs.len())
            .finish_non_exhaustive()
    }
}

impl PyEngine {
    /// What the agent found about `pid`'s runtime.
    pub fn set_runtime(&mut self, pid: u32, rt: Runtime) {
        self.procs.entry(pid).or_default().runtime = Some(rt);
    }

    /// The probes of `pid` are effective from `ts` (monotonic ns) on.
    pub fn set_probes_on(&mut self, pid: u32, ts: u64) {
        self.procs.entry(pid).or_default().probes_on = ts;
    }

    /// When the probes of `pid` became effective (0: unknown or from its start).
    #[must_use]
    pub fn probes_on(&self, pid: u32) -> u64 {
        self.procs.get(&pid).map_or(0, |p| p.probes_on)
    }

    /// The runtime state of `pid`, `None` when it is not a CPython.
    #[must_use]
    pub fn runtime(&self, pid: u32) -> Option<&Runtime> {
        self.procs.get(&pid)?.runtime.as_ref()
    }

    /// `pid` serves requests with asyncio tasks (a task wrote a response).
    #[must_use]
    pub fn is_asyncio(&self, pid: u32) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| !p.loop_threads.is_empty())
    }

    /// Counts a final decision under its rule (`exact/<evidence>`, `ambiguous/<reason>`).
    pub fn count(&mut self, d: &Decision) {
        let key = match d {
            Decision::Exact { evidence, .. } => format!("exact/{evidence}"),
            Decision::Ambiguous { reason, .. } => format!("ambiguous/{reason}"),
            Decision::Wait => return,
        };
        *self.rules.entry(key).or_default() += 1;
    }

    /// A thread of `tgid` read bytes from server connection `conn`.
    pub fn on_server_read(&mut self, tgid: u32, tid: u32, _conn: u64, ts: u64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        insert_sorted(p.timeline.entry(tid).or_default(), ts, ThreadEv::Read);
    }

    /// The head of request (conn, index) was read; its first byte at `ts`.
    pub fn on_request_head(&mut self, tgid: u32, conn: u64, index: u64, ts: u64) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.heads.insert((conn, index), ts);
            p.unanswered.insert((ts, (conn, index)));
        }
    }

    /// A thread started writing the response of (conn, index): its first byte at `ts`.
    pub fn on_response_start(&mut self, tgid: u32, tid: u32, conn: u64, index: u64, ts: u64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        insert_sorted(
            p.timeline.entry(tid).or_default(),
            ts,
            ThreadEv::RespStart((conn, index)),
        );
        if let Some(&head) = p.heads.get(&(conn, index)) {
            p.unanswered.remove(&(head, (conn, index)));
        }
        // The task whose context wrote that byte is the request's root.
        if let Some(Stamp::Task(n)) = stamp_of(p, tid, conn, ts)
            && let Some(node) = p.nodes.get_mut(&n)
        {
            if node.responses.len() < 2 {
                node.responses.push(((conn, index), ts));
            }
            node.seen = node.seen.max(ts);
            p.loop_threads.insert(tid);
            self.roots += 1;
        }
    }

    /// The response of (conn, index), written by `tid`, was complete at `ts`.
    pub fn on_response_end(&mut self, tgid: u32, tid: u32, conn: u64, index: u64, ts: u64) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            insert_sorted(
                p.timeline.entry(tid).or_default(),
                ts,
                ThreadEv::RespEnd((conn, index)),
            );
        }
    }

    /// `_asyncio.Task.__init__` returned at `ts`: `task` is the `TaskObj*`, `task_ctx` its own
    /// context, `parent_ctx` the context current when it was created.
    pub fn on_task(
        &mut self,
        tgid: u32,
        ts: u64,
        task: u64,
        task_ctx: u64,
        parent_ctx: u64,
        qualname: &str,
    ) {
        self.tasks += 1;
        let p = self.procs.entry(tgid).or_default();
        let parent = p.contexts.get(&parent_ctx).copied();
        if let Some(o) = parent
            && let Some(n) = p.nodes.get_mut(&o.node)
        {
            n.seen = n.seen.max(ts);
        }
        p.next_node += 1;
        let id = p.next_node;
        p.nodes.insert(
            id,
            Node {
                task,
                parent: parent.map(|o| o.node),
                created: ts,
                in_task: parent.is_some_and(|o| o.task),
                coro: Arc::from(qualname),
                responses: Vec::new(),
                seen: ts,
            },
        );
        if task_ctx != 0 {
            p.contexts.insert(
                task_ctx,
                Owner {
                    node: id,
                    task: true,
                },
            );
        }
    }

    /// `PyContext_CopyCurrent` returned `new`, a copy of `cur` (`entered`: `cur` is an entered
    /// context; a thread's never-entered base context owns nothing, whatever its address had).
    pub fn on_copy(&mut self, tgid: u32, new: u64, cur: u64, entered: bool) {
        self.copies += 1;
        let p = self.procs.entry(tgid).or_default();
        let owner = if entered {
            p.contexts.get(&cur).copied()
        } else {
            None
        };
        match owner {
            Some(o) => {
                p.contexts.insert(
                    new,
                    Owner {
                        node: o.node,
                        task: false,
                    },
                );
            }
            None => {
                p.contexts.remove(&new);
            }
        }
        if p.contexts.len() > 1 << 20 {
            // Runaway: forget everything rather than trust stale bindings.
            p.contexts.clear();
        }
    }

    /// A socket write (`conn`: its connection id, `None` for TLS plaintext) of `tid` at `ts`
    /// ran in context `ctx`
    /// (`tstate` 0: not found; `entered`: `ctx` is entered, else it is the thread's base
    /// context and owns nothing).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call per record field; a struct would only rename them"
    )]
    pub fn on_stamp(
        &mut self,
        tgid: u32,
        tid: u32,
        ts: u64,
        conn: Option<u64>,
        ctx: u64,
        tstate: u64,
        entered: bool,
    ) {
        self.stamps += 1;
        let p = self.procs.entry(tgid).or_default();
        let s = if tstate == 0 {
            Stamp::NoTstate
        } else if !entered {
            Stamp::NoOwner
        } else {
            match p.contexts.get(&ctx) {
                Some(o) => {
                    if let Some(n) = p.nodes.get_mut(&o.node) {
                        n.seen = n.seen.max(ts);
                    }
                    Stamp::Task(o.node)
                }
                None => Stamp::NoOwner,
            }
        };
        let q = p.stamps.entry(tid).or_default();
        q.push_back((ts, conn, s));
        if q.len() > 4096 {
            q.pop_front();
        }
    }

    /// Which request an outbound message on connection `conn` whose first byte `tid` of
    /// `tgid` wrote at `ts` belongs to. `now` decides when a held message stops waiting.
    #[must_use]
    pub fn decide(&self, tgid: u32, tid: u32, conn: u64, ts: u64, now: u64) -> Decision {
        self.decide_held(tgid, tid, conn, ts, now).0
    }

    /// [`Self::decide`], and for a message held only to see whether a task on its chain
    /// answers a request itself, the request it will be decided for if none does — that
    /// request must stay open until then, or the call arrives after its cassette is written.
    #[must_use]
    pub fn decide_held(
        &self,
        tgid: u32,
        tid: u32,
        conn: u64,
        ts: u64,
        now: u64,
    ) -> (Decision, Option<Root>) {
        let Some(p) = self.procs.get(&tgid) else {
            return (Decision::Wait, None);
        };
        if p.runtime != Some(Runtime::Supported) {
            let d = Decision::Ambiguous {
                reason: "unsupported-runtime",
                background: false,
            };
            return (d, None);
        }
        let stamp = stamp_of(p, tid, conn, ts);
        if let Some(Stamp::Task(n)) = stamp {
            return task_rule(p, n, tid, ts, now);
        }
        (Self::decide_other(p, stamp, tid, ts, now), None)
    }

    /// A call that wrote nothing (a `connect` that failed at once): no write stamp says its
    /// context, so only the thread can: a thread that serves one request at a time (a sync
    /// worker) gets the thread rule; on an event-loop thread it is ambiguous between the
    /// requests open then (never background: the app may well have made it for one).
    #[must_use]
    pub fn decide_unwritten(&self, tgid: u32, tid: u32, ts: u64, now: u64) -> Decision {
        let Some(p) = self.procs.get(&tgid) else {
            return Decision::Wait;
        };
        if p.runtime != Some(Runtime::Supported) {
            return Decision::Ambiguous {
                reason: "unsupported-runtime",
                background: false,
            };
        }
        if p.loop_threads.contains(&tid) {
            return Decision::Ambiguous {
                reason: "unwritten-on-event-loop",
                background: false,
            };
        }
        Self::decide_other(p, Some(Stamp::NoOwner), tid, ts, now)
    }

    /// [`Self::decide`] for a message not written in a task's context.
    fn decide_other(p: &Proc, stamp: Option<Stamp>, tid: u32, ts: u64, now: u64) -> Decision {
        // Written before the probes were effective (attach to a running process).
        if stamp.is_none() {
            return Decision::Ambiguous {
                reason: "before-probes",
                background: false,
            };
        }
        if p.loop_threads.contains(&tid) {
            // An event-loop thread outside any task's context: startup, a protocol callback
            // not run in a task, a connection pool's own callbacks.
            return Decision::Ambiguous {
                reason: if stamp == Some(Stamp::NoTstate) {
                    "no-thread-state"
                } else {
                    "no-owner"
                },
                background: true,
            };
        }
        let Some(tl) = p.timeline.get(&tid).filter(|t| !t.is_empty()) else {
            // A thread that never served a request: an executor thread the app started
            // without copying its context.
            return Decision::Ambiguous {
                reason: "pool-thread",
                background: false,
            };
        };
        match thread_rule(tl, tid, ts, now) {
            Decision::Exact {
                conn,
                index,
                evidence,
                mut proof,
            } => {
                proof.request_read_ns = p.heads.get(&(conn, index)).copied().unwrap_or(0);
                exact(conn, index, evidence, proof)
            }
            d => d,
        }
    }

    /// Forgets per-thread history and tasks older than `horizon`.
    pub fn gc(&mut self, horizon: u64) {
        for p in self.procs.values_mut() {
            for q in p.stamps.values_mut() {
                while q.front().is_some_and(|(t, _, _)| *t < horizon) {
                    q.pop_front();
                }
            }
            p.stamps.retain(|_, q| !q.is_empty());
            for tl in p.timeline.values_mut() {
                // Keep the last event before the horizon: the rule looks one event back.
                let cut = tl.partition_point(|(t, _)| *t < horizon);
                tl.drain(..cut.saturating_sub(1));
            }
            // Tasks and heads: at most once a second (a scan of every context).
            if horizon < p.gc_at.saturating_add(1_000_000_000) {
                continue;
            }
            p.gc_at = horizon;
            p.heads.retain(|_, t| *t >= horizon);
            p.unanswered.retain(|(t, _)| *t >= horizon);
            // A task not used since the horizon: its requests are written. A chain that
            // reaches a forgotten task ends there (its calls are then ambiguous, never wrong).
            p.nodes.retain(|_, n| n.seen >= horizon);
            let nodes = &p.nodes;
            p.contexts.retain(|_, o| nodes.contains_key(&o.node));
        }
    }

    /// The process exited.
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}

/// The stamp of the syscall on connection `conn` whose first byte `tid` wrote at `ts`: the
/// thread's latest stamp at or before it (a stamp precedes its data records, and a thread's
/// syscalls do not overlap). A stamp of another socket means this write was not stamped.
fn stamp_of(p: &Proc, tid: u32, conn: u64, ts: u64) -> Option<Stamp> {
    let &(at, sock, st) = p
        .stamps
        .get(&tid)?
        .iter()
        .rev()
        .find(|(s, _, _)| *s <= ts)?;
    (ts - at < 50_000_000 && sock.is_none_or(|c| c == conn)).then_some(st)
}

/// The asyncio rule (module docs) for a call written at `ts` by `tid` in a context of task
/// node `m`.
/// Also the request a held call will be decided for when its hold ends (see
/// [`PyEngine::decide_held`]).
fn task_rule(p: &Proc, m: u64, tid: u32, ts: u64, now: u64) -> (Decision, Option<Root>) {
    let held = now.saturating_sub(ts) < TASK_HOLD_NS;
    let amb = |reason| Decision::Ambiguous {
        reason,
        background: false,
    };
    // The nearest task on the chain that wrote a response.
    let mut path: Vec<&Node> = Vec::new();
    let mut cur = Some(m);
    let mut root = None;
    while let Some(id) = cur {
        let Some(node) = p.nodes.get(&id) else { break };
        if !node.responses.is_empty() {
            root = Some(node);
            break;
        }
        if path.len() >= MAX_HOPS {
            break;
        }
        path.push(node);
        cur = node.parent;
    }
    let Some(w) = root else {
        // Its root has not written its response yet, or the chain belongs to no request
        // (startup, a pool's own task, a connection handler that never answers). While a
        // request read before the call is unanswered, its root may be on this chain.
        let open = p.unanswered.first().is_some_and(|&(head, _)| head <= ts)
            && now.saturating_sub(ts) < OPEN_REQUEST_WAIT_NS;
        let d = if held || open {
            Decision::Wait
        } else {
            amb("no-response-writer")
        };
        return (d, None);
    };
    if w.responses.len() > 1 {
        return (amb("task-served-several-requests"), None);
    }
    let ((conn, index), resp_ts) = w.responses[0];
    let Some(&head) = p.heads.get(&(conn, index)) else {
        return (amb("request-not-seen"), None);
    };
    if w.created < head {
        // A connection handler or a worker created before the request arrived.
        return (amb("root-before-request"), None);
    }
    // A task created from a callback, or after the root's response started, may be another
    // request's root (created in a context copied from this one, CPython #140947; or a
    // pipelined request's root started by this one): it must not write a response itself.
    let doubtful = path.iter().any(|n| !n.in_task || n.created > resp_ts);
    if doubtful && held {
        return (Decision::Wait, Some((conn, index)));
    }
    let first = path.first().copied().unwrap_or(w);
    let d = exact(
        conn,
        index,
        "asyncio/response-writer",
        Proof {
            tid,
            task: first.task,
            root_task: w.task,
            root_coro: (!w.coro.is_empty()).then(|| w.coro.clone()),
            hops: u32::try_from(path.len()).unwrap_or(u32::MAX),
            request_read_ns: head,
            response_write_ns: resp_ts,
            held: doubtful,
        },
    );
    (d, None)
}

fn insert_sorted(v: &mut Vec<(u64, ThreadEv)>, ts: u64, e: ThreadEv) {
    let at = v.partition_point(|(t, _)| *t <= ts);
    v.insert(at, (ts, e));
}

/// The thread-plus-response rule (study §6.4a), for a message written by a thread at `ts`:
/// - the thread is writing a response (started, not complete): that request (`thread`);
/// - the thread read from a server connection since its last response completed: the request
///   whose response it writes next (`thread`), waiting up to [`OPEN_REQUEST_WAIT_NS`] for it;
/// - otherwise the message is held until the thread's next server event: a response write
///   with no read before it means the request was already buffered (pipelined, or moved to
///   this thread by gthread): that request (`thread`); a read means the message was work
///   after the previous response: the previous request (`thread/post-response`); nothing
///   within [`THREAD_HOLD_NS`]: `ambiguous/thread-idle`.
fn thread_rule(tl: &[(u64, ThreadEv)], tid: u32, ts: u64, now: u64) -> Decision {
    let exact = |conn, index, evidence| thread_exact(tl, tid, conn, index, evidence);
    let split = tl.partition_point(|(t, _)| *t <= ts);
    let (before, after) = tl.split_at(split);
    // Responses started before and not complete before `ts`.
    for (_, e) in before.iter().rev() {
        match e {
            ThreadEv::RespEnd(_) => break,
            ThreadEv::RespStart((conn, index)) => {
                let ended = before
                    .iter()
                    .any(|(_, x)| *x == ThreadEv::RespEnd((*conn, *index)));
                if !ended {
                    return exact(*conn, *index, "thread");
                }
                break;
            }
            ThreadEv::Read => {}
        }
    }
    let last_end = before
        .iter()
        .rposition(|(_, e)| matches!(e, ThreadEv::RespEnd(_)));
    let read_since = before[last_end.map_or(0, |i| i + 1)..]
        .iter()
        .any(|(_, e)| *e == ThreadEv::Read);
    let next_resp = after.iter().find_map(|(_, e)| match e {
        ThreadEv::RespStart(r) => Some(*r),
        _ => None,
    });
    if read_since {
        // The thread has a request it has not answered: a slow handler may take long.
        return match next_resp {
            Some((conn, index)) => exact(conn, index, "thread"),
            None if now.saturating_sub(ts) > OPEN_REQUEST_WAIT_NS => idle(),
            None => Decision::Wait,
        };
    }
    match after.first() {
        Some((_, ThreadEv::RespStart((conn, index)))) => exact(*conn, *index, "thread"),
        Some((_, ThreadEv::Read)) => match last_end.map(|i| before[i].1) {
            Some(ThreadEv::RespEnd((conn, index))) => exact(conn, index, "thread/post-response"),
            _ => idle(),
        },
        Some((_, ThreadEv::RespEnd(_))) => idle(),
        None if now.saturating_sub(ts) > THREAD_HOLD_NS => idle(),
        None => Decision::Wait,
    }
}

/// A thread-rule decision for (conn, index), with the facts: the writing thread and when the
/// response's first byte was written (by whichever thread).
fn thread_exact(
    tl: &[(u64, ThreadEv)],
    tid: u32,
    conn: u64,
    index: u64,
    evidence: &'static str,
) -> Decision {
    let response_write_ns = tl
        .iter()
        .find(|(_, e)| *e == ThreadEv::RespStart((conn, index)))
        .map_or(0, |(t, _)| *t);
    exact(
        conn,
        index,
        evidence,
        Proof {
            tid,
            response_write_ns,
            ..Proof::default()
        },
    )
}

fn exact(conn: u64, index: u64, evidence: &'static str, proof: Proof) -> Decision {
    Decision::Exact {
        conn,
        index,
        evidence,
        proof,
    }
}

fn idle() -> Decision {
    Decision::Ambiguous {
        reason: "thread-idle",
        background: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u32 = 7;
    const HOLD: u64 = TASK_HOLD_NS + 1;

    fn engine() -> PyEngine {
        let mut e = PyEngine::default();
        e.set_runtime(1, Runtime::Supported);
        e
    }

    /// (conn, index, evidence) of an exact decision.
    fn to(d: &Decision) -> Option<(u64, u64, &'static str)> {
        match d {
            Decision::Exact {
                conn,
                index,
                evidence,
                ..
            } => Some((*conn, *index, *evidence)),
            _ => None,
        }
    }

    fn amb(reason: &'static str) -> Decision {
        Decision::Ambiguous {
            reason,
            background: false,
        }
    }

    const RW: &str = "asyncio/response-writer";

    /// A response's first byte on `conn`, written at `ts` in context `ctx` by thread `T`.
    fn respond(e: &mut PyEngine, conn: u64, index: u64, ctx: u64, ts: u64) {
        e.on_stamp(1, T, ts, Some(conn), ctx, 1, true);
        e.on_response_start(1, T, conn, index, ts);
        e.on_response_end(1, T, conn, index, ts + 1);
    }

    /// aiohttp.web: a task per connection (created in a callback at accept, before any request
    /// byte), each request's task created inside it. Keep-alive: two requests on conn 100.
    /// Calls wait for their root's response; each goes to its own request, gather children
    /// and a background task that outlives the request included.
    #[test]
    fn aiohttp_layout_keep_alive() {
        let mut e = engine();
        e.on_task(1, 5, 0xc, 0xc0, 0, "RequestHandler.start");
        e.on_request_head(1, 100, 0, 10);
        e.on_server_read(1, T, 100, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0xc0, "RequestHandler._handle_request");
        e.on_task(1, 12, 0x2, 0xa1, 0xa0, "dep_http"); // gather child
        e.on_task(1, 13, 0x3, 0xa2, 0xa0, "background");
        e.on_stamp(1, T, 20, Some(7), 0xa1, 1, true);
        assert_eq!(e.decide(1, T, 7, 20, 25), Decision::Wait);
        respond(&mut e, 100, 0, 0xa0, 30);
        let d = e.decide(1, T, 7, 20, 35);
        assert_eq!(to(&d), Some((100, 0, RW)));
        let Decision::Exact { proof, .. } = d else {
            unreachable!()
        };
        assert_eq!((proof.task, proof.root_task, proof.hops), (0x2, 0x1, 1));
        assert_eq!((proof.request_read_ns, proof.response_write_ns), (10, 30));
        assert!(!proof.held);
        // The background task's call after the response: at once.
        e.on_stamp(1, T, 40, Some(8), 0xa2, 1, true);
        assert_eq!(to(&e.decide(1, T, 8, 40, 41)), Some((100, 0, RW)));
        // The next request on the connection: a new task inside the connection task.
        e.on_request_head(1, 100, 1, 50);
        e.on_task(1, 51, 0x4, 0xb0, 0xc0, "RequestHandler._handle_request");
        e.on_stamp(1, T, 52, Some(9), 0xb0, 1, true);
        respond(&mut e, 100, 1, 0xb0, 60);
        assert_eq!(to(&e.decide(1, T, 9, 52, 61)), Some((100, 1, RW)));
        // The connection task itself never answered: nothing to prove.
        e.on_stamp(1, T, 70, Some(10), 0xc0, 1, true);
        assert_eq!(e.decide(1, T, 10, 70, 71), Decision::Wait);
        assert_eq!(e.decide(1, T, 10, 70, 70 + HOLD), amb("no-response-writer"));
    }

    /// A slow handler: its root answers 5 s after the call. The call waits while a request read
    /// before it is unanswered (bounded), and is exact when the root answers; with every earlier
    /// request answered, a writer-less call is ambiguous after the hold. Threads alike.
    #[test]
    fn slow_handlers_wait_for_their_response() {
        const S: u64 = 1_000_000_000;
        let mut e = engine();
        e.on_request_head(1, 100, 0, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0, "run_asgi");
        e.on_stamp(1, T, 20, Some(7), 0xa0, 1, true);
        assert_eq!(e.decide(1, T, 7, 20, 20 + 4 * S), Decision::Wait);
        respond(&mut e, 100, 0, 0xa0, 5 * S);
        assert_eq!(to(&e.decide(1, T, 7, 20, 5 * S + 1)), Some((100, 0, RW)));
        // A chain that never answers, started while a request is unanswered: bounded.
        e.on_request_head(1, 101, 0, 6 * S);
        e.on_task(1, 6 * S + 1, 0x2, 0xb0, 0, "periodic");
        e.on_stamp(1, T, 6 * S + 2, Some(8), 0xb0, 1, true);
        assert_eq!(e.decide(1, T, 8, 6 * S + 2, 10 * S), Decision::Wait);
        assert_eq!(
            e.decide(1, T, 8, 6 * S + 2, 6 * S + 2 + OPEN_REQUEST_WAIT_NS),
            amb("no-response-writer")
        );
        // ... and once every earlier request is answered, the plain hold.
        respond(&mut e, 101, 0, 0xc0, 7 * S);
        e.on_stamp(1, T, 8 * S, Some(9), 0xb0, 1, true);
        assert_eq!(
            e.decide(1, T, 9, 8 * S, 8 * S + HOLD),
            amb("no-response-writer")
        );
        // A thread that read a request and calls out, answering 5 s later.
        let (c, t2) = (500, 2);
        e.on_server_read(1, t2, c, 20 * S);
        e.on_stamp(1, t2, 20 * S + 1, Some(1), 0, 1, false);
        assert_eq!(e.decide(1, t2, 1, 20 * S + 1, 24 * S), Decision::Wait);
        e.on_response_start(1, t2, c, 0, 25 * S);
        assert_eq!(
            to(&e.decide(1, t2, 1, 20 * S + 1, 25 * S + 1)),
            Some((c, 0, "thread"))
        );
    }

    /// A hand-written server whose workers, created at startup, answer every request: a task
    /// created before the request arrived, or that answered two requests, proves nothing.
    #[test]
    fn workers_created_before_the_request_prove_nothing() {
        let mut e = engine();
        e.on_task(1, 1, 0x1, 0xd0, 0, "worker");
        e.on_request_head(1, 100, 0, 10);
        e.on_stamp(1, T, 20, Some(7), 0xd0, 1, true);
        respond(&mut e, 100, 0, 0xd0, 30);
        assert_eq!(e.decide(1, T, 7, 20, 31), amb("root-before-request"));
        e.on_request_head(1, 200, 0, 40);
        respond(&mut e, 200, 0, 0xd0, 50);
        assert_eq!(
            e.decide(1, T, 7, 20, 51),
            amb("task-served-several-requests")
        );
    }

    /// uvicorn pipelining: the second request's root is created inside the first one's task
    /// after its response started. Its calls wait for its own response, not the parent's.
    #[test]
    fn pipelined_root_created_by_the_previous_request() {
        let mut e = engine();
        e.on_request_head(1, 100, 0, 10);
        e.on_request_head(1, 100, 1, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0x5e, "RequestResponseCycle.run_asgi");
        respond(&mut e, 100, 0, 0xa0, 20);
        e.on_task(1, 21, 0x2, 0xb0, 0xa0, "RequestResponseCycle.run_asgi");
        e.on_stamp(1, T, 22, Some(7), 0xb0, 1, true);
        assert_eq!(e.decide(1, T, 7, 22, 23), Decision::Wait);
        respond(&mut e, 100, 1, 0xb0, 30);
        assert_eq!(to(&e.decide(1, T, 7, 22, 31)), Some((100, 1, RW)));
    }

    /// A root created in a callback whose context was copied inside another request's task
    /// (CPython #140947): its calls wait until it answers; a callback's task that never
    /// answers (`call_later`) is the copying request's after the hold.
    #[test]
    fn callback_tasks_wait_for_their_own_response() {
        let mut e = engine();
        e.on_request_head(1, 100, 0, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0, "RequestResponseCycle.run_asgi");
        e.on_copy(1, 0xc0, 0xa0, true); // a handle copied inside A
        e.on_request_head(1, 200, 0, 12);
        e.on_task(1, 13, 0x2, 0xb0, 0xc0, "RequestResponseCycle.run_asgi"); // B, leaked
        respond(&mut e, 100, 0, 0xa0, 20);
        e.on_stamp(1, T, 21, Some(7), 0xb0, 1, true);
        assert_eq!(e.decide(1, T, 7, 21, 22), Decision::Wait);
        respond(&mut e, 200, 0, 0xb0, 30);
        assert_eq!(to(&e.decide(1, T, 7, 21, 31)), Some((200, 0, RW)));
        // call_later inside A: a task created in a copy of A's context, after A answered.
        e.on_copy(1, 0xc8, 0xa0, true);
        e.on_task(1, 40, 0x3, 0xe0, 0xc8, "dep");
        e.on_stamp(1, T, 41, Some(8), 0xe0, 1, true);
        assert_eq!(e.decide(1, T, 8, 41, 42), Decision::Wait);
        let d = e.decide(1, T, 8, 41, 41 + HOLD);
        assert_eq!(to(&d), Some((100, 0, RW)));
        assert!(matches!(d, Decision::Exact { proof, .. } if proof.held));
    }

    /// A worker thread running a copy of a request task's context (`to_thread`) is that
    /// request's; an address reused by a context copied outside any task loses its owner.
    #[test]
    fn thread_copies_and_address_reuse() {
        let mut e = engine();
        e.on_request_head(1, 100, 0, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0, "handle");
        e.on_copy(1, 0xa2, 0xa0, true); // to_thread
        e.on_stamp(1, 99, 12, Some(7), 0xa2, 1, true);
        respond(&mut e, 100, 0, 0xa0, 20);
        assert_eq!(to(&e.decide(1, 99, 7, 12, 21)), Some((100, 0, RW)));
        e.on_copy(1, 0xa2, 0x5e, true); // reused by an unowned copy
        e.on_stamp(1, T, 25, Some(8), 0xa2, 1, true);
        assert_eq!(
            e.decide(1, T, 8, 25, 30),
            Decision::Ambiguous {
                reason: "no-owner",
                background: true
            }
        );
    }

    /// gthread: thread 2 serves (c,0), then a buffered (c,1) arrives with no read on thread 3.
    #[test]
    fn thread_plus_response() {
        let mut e = engine();
        let (c, t2, t3) = (500, 2, 3);
        e.on_server_read(1, t2, c, 10);
        e.on_response_start(1, t2, c, 0, 30);
        e.on_response_end(1, t2, c, 0, 31);
        e.on_response_start(1, t3, c, 1, 60);
        e.on_response_end(1, t3, c, 1, 61);
        e.on_server_read(1, t2, c, 80);
        for (tid, ts) in [(t2, 20), (t3, 50), (t2, 40), (9, 40), (t3, 70)] {
            e.on_stamp(1, tid, ts, Some(1), 0, 1, false);
        }
        let now = 100;
        let d = e.decide(1, t2, 1, 20, now);
        assert_eq!(to(&d), Some((c, 0, "thread")));
        assert!(
            matches!(d, Decision::Exact { proof, .. } if proof.tid == t2 && proof.response_write_ns == 30)
        );
        assert_eq!(to(&e.decide(1, t3, 1, 50, now)), Some((c, 1, "thread")));
        assert_eq!(
            to(&e.decide(1, t2, 1, 40, now)),
            Some((c, 0, "thread/post-response"))
        );
        // A thread that never served a request.
        assert_eq!(e.decide(1, 9, 1, 40, now), amb("pool-thread"));
        // Held, then idle.
        assert_eq!(e.decide(1, t3, 1, 70, 80), Decision::Wait);
        assert_eq!(
            e.decide(1, t3, 1, 70, 70 + THREAD_HOLD_NS + 1),
            amb("thread-idle")
        );
    }

    /// A pool thread's lazily created base context at an address a request's context had:
    /// not entered, so it owns nothing (seen in the e2e test before the flag existed).
    #[test]
    fn base_context_at_a_reused_address() {
        let mut e = engine();
        e.on_request_head(1, 100, 0, 10);
        e.on_task(1, 11, 0x1, 0xa0, 0, "handle");
        e.on_copy(1, 0xc0, 0xa0, true);
        e.on_stamp(1, 42, 20, Some(7), 0xc0, 1, false);
        e.on_copy(1, 0xc8, 0xc0, false);
        e.on_stamp(1, 42, 21, Some(8), 0xc8, 1, true);
        assert_eq!(e.decide(1, 42, 7, 20, 30), amb("pool-thread"));
        assert_eq!(e.decide(1, 42, 8, 21, 30), amb("pool-thread"));
    }

    /// No stamp, or the thread's latest stamp is of another socket: the write was not stamped
    /// (before the probes were effective).
    #[test]
    fn unstamped_writes_are_before_probes() {
        let mut e = engine();
        assert_eq!(e.decide(1, T, 7, 5, 10), amb("before-probes"));
        e.on_stamp(1, T, 4, Some(8), 0, 1, false);
        assert_eq!(e.decide(1, T, 7, 5, 10), amb("before-probes"));
    }

    #[test]
    fn unsupported_runtime_is_flagged() {
        let mut e = PyEngine::default();
        e.set_runtime(1, Runtime::Unsupported);
        assert_eq!(e.decide(1, T, 7, 1, 2), amb("unsupported-runtime"));
    }

    /// Decisions are counted per rule.
    #[test]
    fn rules_are_counted() {
        let mut e = engine();
        e.count(&amb("pool-thread"));
        e.count(&amb("pool-thread"));
        e.count(&Decision::Wait);
        assert_eq!(e.rules.get("ambiguous/pool-thread"), Some(&2));
        assert_eq!(e.rules.len(), 1);
    }
}
