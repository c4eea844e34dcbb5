//! The attribution engine for CPython processes (issue #7; rules with examples in
//! `docs/attribution.md`, design in the attribution study §6.4).
//!
//! It is fed, in ring-buffer order, what the kernel reports for processes whose runtime was
//! discovered (`capture::python`): context stamps of outbound writes, task creations, context
//! copies, and the server-side reads; and, from the HTTP parser, when each thread starts and
//! ends each response. It answers one question per outbound message: which inbound request
//! (connection, index on that connection) caused it, with the evidence, or why that cannot be
//! proven.
//!
//! asyncio: every task gets the request of its *root*. A root is a task whose coroutine is a
//! known server entry point (`RequestResponseCycle.run_asgi`, uvicorn h11 and httptools); it
//! claims the next unclaimed request of its connection: the connection the creating thread last
//! read from when it is created outside any task (fresh request; this outranks the creating
//! context's owner, which may be leaked from an earlier request, CPython #140947), or its parent
//! task's connection when created inside a task (pipelined request started by the previous
//! request's `on_response_complete`). In processes where no known root has been seen, a task
//! created outside any task right after an unconsumed server read is taken as a root. Other
//! tasks inherit the request of the context they are created in; context copies
//! (`PyContext_CopyCurrent`: `to_thread`, anyio worker threads, `call_soon`/`call_later`
//! handles) inherit the owner of the copied context. Every observed creation of a context at an
//! address replaces what was known about that address (CPython reuses them constantly).
//!
//! Threads (no context owner; gunicorn sync/gthread, any thread-per-request server): the
//! thread-plus-response rule, see [`PyEngine::decide`].
use std::collections::{HashMap, HashSet, VecDeque};

/// Coroutine qualnames that start one inbound request.
const KNOWN_ROOTS: &[&str] = &["RequestResponseCycle.run_asgi"];

/// Root of a request whose connection could not be told (no server read seen on its thread).
const UNKNOWN_CONN: u64 = u64::MAX;

/// How long a thread-held message may wait for its thread's next server event.
const THREAD_HOLD_NS: u64 = 2_000_000_000;

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

/// The request a message belongs to, or why that cannot be proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Exact {
        conn: u64,
        index: u64,
        evidence: &'static str,
    },
    /// Not provable. `background`: belongs to no request (reported apart, not pinned on one).
    Ambiguous {
        reason: &'static str,
        background: bool,
    },
    /// Not decidable yet (a thread-held message waits for its thread's next server event).
    Wait,
}

/// (connection id, request index on the connection).
type Root = (u64, u64);

/// Who owns a context: the request of the task it belongs to (None: a task outside any
/// request, e.g. startup or a periodic loop).
#[derive(Clone, Copy, Debug)]
struct Owner {
    root: Option<Root>,
    /// The context is a task's own context (so code running in it runs "inside a task").
    task: bool,
}

/// What a stamped write resolved to, at the moment it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    Request(Root),
    /// A context with no request owner (0 = the thread has no context at all).
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
    /// Next unclaimed request index per server connection.
    claims: HashMap<u64, u64>,
    /// Per thread: the server connection it last read, and whether a root consumed that read.
    last_read: HashMap<u32, (u64, bool)>,
    /// Threads that created request roots (event-loop threads).
    loop_threads: HashSet<u32>,
    known_roots_seen: bool,
    /// Per thread: stamps (ts, resolution), oldest first.
    stamps: HashMap<u32, VecDeque<(u64, Stamp)>>,
    /// Per thread: server events, sorted by time.
    timeline: HashMap<u32, Vec<(u64, ThreadEv)>>,
}

/// The engine, for every traced process.
#[derive(Default)]
pub struct PyEngine {
    procs: HashMap<u32, Proc>,
    /// Task creations, copies and stamps handled (for the status line).
    pub tasks: u64,
    pub roots: u64,
    pub copies: u64,
    pub stamps: u64,
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

    /// `pid` serves requests with asyncio tasks (a request root was seen).
    #[must_use]
    pub fn is_asyncio(&self, pid: u32) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| !p.loop_threads.is_empty())
    }

    /// A thread of `tgid` read bytes from server connection `conn`.
    pub fn on_server_read(&mut self, tgid: u32, tid: u32, conn: u64, ts: u64) {
        let Some(p) = self.procs.get_mut(&tgid) else {
            return;
        };
        p.last_read.insert(tid, (conn, false));
        insert_sorted(p.timeline.entry(tid).or_default(), ts, ThreadEv::Read);
    }

    /// A thread started writing the response of (conn, index).
    pub fn on_response_start(&mut self, tgid: u32, tid: u32, conn: u64, index: u64, ts: u64) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            insert_sorted(
                p.timeline.entry(tid).or_default(),
                ts,
                ThreadEv::RespStart((conn, index)),
            );
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

    /// `_asyncio.Task.__init__` returned: `task_ctx` is the task's own context, `parent_ctx`
    /// the context current when it was created.
    pub fn on_task(&mut self, tgid: u32, tid: u32, task_ctx: u64, parent_ctx: u64, qualname: &str) {
        self.tasks += 1;
        let p = self.procs.entry(tgid).or_default();
        let parent = p.contexts.get(&parent_ctx).copied();
        let in_task = parent.is_some_and(|o| o.task);
        let known = KNOWN_ROOTS.contains(&qualname);
        p.known_roots_seen |= known;
        let generic_root = !p.known_roots_seen
            && !in_task
            && p.last_read.get(&tid).is_some_and(|(_, consumed)| !consumed);
        let root = if known || generic_root {
            let conn = if in_task {
                parent.and_then(|o| o.root).map(|r| r.0)
            } else {
                p.last_read.get(&tid).map(|r| r.0)
            };
            if let Some(r) = p.last_read.get_mut(&tid)
                && !in_task
            {
                r.1 = true;
            }
            // A root whose connection is unknown still marks its tree as a request's, so its
            // calls are flagged rather than counted as background.
            Some(conn.map_or((UNKNOWN_CONN, 0), |c| {
                let n = p.claims.entry(c).or_insert(0);
                let idx = *n;
                *n += 1;
                (c, idx)
            }))
        } else {
            parent.and_then(|o| o.root)
        };
        if known || generic_root {
            self.roots += 1;
            p.loop_threads.insert(tid);
        }
        if task_ctx != 0 {
            p.contexts.insert(task_ctx, Owner { root, task: true });
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
                        root: o.root,
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

    /// An outbound write of `tid` at `ts` ran in context `ctx` (`tstate` 0: not found;
    /// `entered`: `ctx` is entered, else it is the thread's base context and owns nothing).
    pub fn on_stamp(&mut self, tgid: u32, tid: u32, ts: u64, ctx: u64, tstate: u64, entered: bool) {
        self.stamps += 1;
        let p = self.procs.entry(tgid).or_default();
        let s = if tstate == 0 {
            Stamp::NoTstate
        } else if !entered {
            Stamp::NoOwner
        } else {
            match p.contexts.get(&ctx).and_then(|o| o.root) {
                Some(r) => Stamp::Request(r),
                None => Stamp::NoOwner,
            }
        };
        let q = p.stamps.entry(tid).or_default();
        q.push_back((ts, s));
        if q.len() > 4096 {
            q.pop_front();
        }
    }

    /// Which request an outbound message whose first byte `tid` of `tgid` wrote at `ts`
    /// belongs to. `now` decides when a held message stops waiting.
    #[must_use]
    pub fn decide(&self, tgid: u32, tid: u32, ts: u64, now: u64) -> Decision {
        let Some(p) = self.procs.get(&tgid) else {
            return Decision::Wait;
        };
        match p.runtime {
            Some(Runtime::Supported) => {}
            _ => {
                return Decision::Ambiguous {
                    reason: "unsupported-runtime",
                    background: false,
                };
            }
        }
        // The stamp of the syscall that wrote this byte: the thread's latest at or before it.
        let stamp = p.stamps.get(&tid).and_then(|q| {
            q.iter()
                .rev()
                .find(|(s, _)| *s <= ts)
                .filter(|(s, _)| ts - s < 50_000_000)
                .map(|(_, st)| *st)
        });
        match stamp {
            Some(Stamp::Request((UNKNOWN_CONN, _))) => {
                return Decision::Ambiguous {
                    reason: "unknown-connection",
                    background: false,
                };
            }
            Some(Stamp::Request((conn, index))) => {
                return Decision::Exact {
                    conn,
                    index,
                    evidence: "asyncio",
                };
            }
            // Written before the probes were effective (attach to a running process).
            None => {
                return Decision::Ambiguous {
                    reason: "before-probes",
                    background: false,
                };
            }
            Some(_) => {}
        }
        if p.loop_threads.contains(&tid) {
            // An event-loop thread outside any request's context: startup, lifespan, a
            // periodic task, a connection pool's own task.
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
        thread_rule(tl, ts, now)
    }

    /// Forgets per-thread history older than `horizon`.
    pub fn gc(&mut self, horizon: u64) {
        for p in self.procs.values_mut() {
            for q in p.stamps.values_mut() {
                while q.front().is_some_and(|(t, _)| *t < horizon) {
                    q.pop_front();
                }
            }
            p.stamps.retain(|_, q| !q.is_empty());
            for tl in p.timeline.values_mut() {
                // Keep the last event before the horizon: the rule looks one event back.
                let cut = tl.partition_point(|(t, _)| *t < horizon);
                tl.drain(..cut.saturating_sub(1));
            }
        }
    }

    /// The process exited.
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}

fn insert_sorted(v: &mut Vec<(u64, ThreadEv)>, ts: u64, e: ThreadEv) {
    let at = v.partition_point(|(t, _)| *t <= ts);
    v.insert(at, (ts, e));
}

/// The thread-plus-response rule (study §6.4a), for a message written by a thread at `ts`:
/// - the thread is writing a response (started, not complete): that request (`thread`);
/// - the thread read from a server connection since its last response completed: the request
///   whose response it writes next (`thread`);
/// - otherwise the message is held until the thread's next server event: a response write
///   with no read before it means the request was already buffered (pipelined, or moved to
///   this thread by gthread): that request (`thread`); a read means the message was work
///   after the previous response: the previous request (`thread/post-response`); nothing
///   within [`THREAD_HOLD_NS`]: `ambiguous/thread-idle`.
fn thread_rule(tl: &[(u64, ThreadEv)], ts: u64, now: u64) -> Decision {
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
        return match next_resp {
            Some((conn, index)) => exact(conn, index, "thread"),
            None if now.saturating_sub(ts) > THREAD_HOLD_NS => idle(),
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

fn exact(conn: u64, index: u64, evidence: &'static str) -> Decision {
    Decision::Exact {
        conn,
        index,
        evidence,
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

    fn engine() -> PyEngine {
        let mut e = PyEngine::default();
        e.set_runtime(1, Runtime::Supported);
        e
    }

    /// Two concurrent requests on one loop thread, each with a child task and a worker-thread
    /// copy; the second connection's root is created in a callback whose context was copied
    /// inside the first request's task (CPython #140947): still its own request.
    #[test]
    fn asyncio_roots_children_copies_and_the_leak() {
        let mut e = engine();
        e.on_server_read(1, T, 100, 10);
        e.on_task(1, T, 0xa0, 0, "RequestResponseCycle.run_asgi");
        // A callback handle copied inside request A's task...
        e.on_copy(1, 0xc0, 0xa0, true);
        e.on_server_read(1, T, 200, 20);
        // ...is the context request B's root is created in.
        e.on_task(1, T, 0xb0, 0xc0, "RequestResponseCycle.run_asgi");
        e.on_task(1, T, 0xa1, 0xa0, "dep_call");
        e.on_copy(1, 0xa2, 0xa0, true); // to_thread
        e.on_stamp(1, T, 30, 0xa1, 1, true);
        e.on_stamp(1, 99, 31, 0xa2, 1, true);
        e.on_stamp(1, T, 32, 0xb0, 1, true);
        let d = |tid, ts| e.decide(1, tid, ts, 40);
        assert_eq!(d(T, 30), exact(100, 0, "asyncio"));
        assert_eq!(d(99, 31), exact(100, 0, "asyncio"));
        assert_eq!(d(T, 32), exact(200, 0, "asyncio"));
    }

    /// A pipelined request's root is created inside the previous request's task and takes the
    /// next request of that connection; an address reused by a context created outside any
    /// request loses its old owner.
    #[test]
    fn pipelining_and_address_reuse() {
        let mut e = engine();
        e.on_server_read(1, T, 100, 10);
        e.on_task(1, T, 0xa0, 0, "RequestResponseCycle.run_asgi");
        e.on_task(1, T, 0xa8, 0xa0, "RequestResponseCycle.run_asgi");
        e.on_stamp(1, T, 20, 0xa8, 1, true);
        assert_eq!(e.decide(1, T, 20, 30), exact(100, 1, "asyncio"));
        e.on_copy(1, 0xa8, 0x5e, true); // reused by an unowned copy
        e.on_stamp(1, T, 25, 0xa8, 1, true);
        assert_eq!(
            e.decide(1, T, 25, 30),
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
            e.on_stamp(1, tid, ts, 0, 1, false);
        }
        let now = 100;
        assert_eq!(e.decide(1, t2, 20, now), exact(c, 0, "thread"));
        assert_eq!(e.decide(1, t3, 50, now), exact(c, 1, "thread"));
        assert_eq!(
            e.decide(1, t2, 40, now),
            exact(c, 0, "thread/post-response")
        );
        // A thread that never served a request.
        assert_eq!(
            e.decide(1, 9, 40, now),
            Decision::Ambiguous {
                reason: "pool-thread",
                background: false
            }
        );
        // Held, then idle.
        assert_eq!(e.decide(1, t3, 70, 80), Decision::Wait);
        assert_eq!(
            e.decide(1, t3, 70, 70 + THREAD_HOLD_NS + 1),
            Decision::Ambiguous {
                reason: "thread-idle",
                background: false
            }
        );
    }

    /// A pool thread's lazily created base context at an address a request's context had:
    /// not entered, so it owns nothing (seen in the e2e test before the flag existed).
    #[test]
    fn base_context_at_a_reused_address() {
        let mut e = engine();
        e.on_server_read(1, T, 100, 10);
        e.on_task(1, T, 0xa0, 0, "RequestResponseCycle.run_asgi");
        e.on_copy(1, 0xc0, 0xa0, true);
        e.on_stamp(1, 42, 20, 0xc0, 1, false);
        e.on_copy(1, 0xc8, 0xc0, false);
        e.on_stamp(1, 42, 21, 0xc8, 1, true);
        let pool = Decision::Ambiguous {
            reason: "pool-thread",
            background: false,
        };
        assert_eq!(e.decide(1, 42, 20, 30), pool);
        assert_eq!(e.decide(1, 42, 21, 30), pool);
    }

    /// No stamp: the write happened before the probes were effective (attach).
    #[test]
    fn unstamped_writes_are_before_probes() {
        let e = engine();
        assert_eq!(
            e.decide(1, T, 5, 10),
            Decision::Ambiguous {
                reason: "before-probes",
                background: false
            }
        );
    }

    #[test]
    fn unsupported_runtime_is_flagged() {
        let mut e = PyEngine::default();
        e.set_runtime(1, Runtime::Unsupported);
        assert_eq!(
            e.decide(1, T, 1, 2),
            Decision::Ambiguous {
                reason: "unsupported-runtime",
                background: false
            }
        );
    }
}
