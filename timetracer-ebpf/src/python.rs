//! CPython asyncio attribution (issue #7, design in `docs/attribution.md`).
//!
//! Only for processes the agent put in [`PY_PROCS`] after discovering their runtime:
//! - every outbound socket write (and TLS plaintext write) is preceded by a
//!   `PyStamp` record carrying the thread's current `contextvars` context,
//!   `PyThreadState->context`, read at the syscall (no per-step probe);
//! - `_asyncio.Task.__init__` entry + return: `PyTask` with the task, its own context
//!   and the context current at creation, plus the coroutine's qualname;
//! - `PyContext_CopyCurrent` return: `PyCopy`, how worker threads (`to_thread`, anyio)
//!   and callbacks inherit a task's context.
//!
//! The decisions (which task is a request's root, who owns a context, address reuse) are made
//! by the agent, in ring order, where the HTTP parser knows request boundaries.
//!
//! The thread state of the current thread is found by walking the interpreter's thread list
//! (`_PyRuntime.interpreters.head->threads.head`, then `next`) for `native_thread_id == tid`,
//! with a bpf_loop whose state lives in a per-CPU map; the result is cached per thread and
//! validated on every use by re-reading `native_thread_id`.
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::bpf_loop,
    },
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::{debug, warn};
use timetracer_common::{
    EventHeader, PY_HIT_SLOTS, PY_MAX_THREADS, PyHit, PyProc, PyTaskRecord, SockAddr, StampedWrite,
};

use crate::{
    maps::{EVENTS, count_drop},
    syscalls::{emit_conn, origin},
};

/// CPython processes whose contexts are followed: tgid -> runtime description.
#[map]
pub(crate) static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(4096, 0);

/// pid_tgid -> `PyThreadState*` of that thread (validated on use).
#[map]
static PY_TSTATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// `Task.__init__` in flight on a thread: pid_tgid -> (task, context current at entry).
#[map]
static PY_TASK_INFLIGHT: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(16384, 0);

/// Probe hit counters, see [`PyHit`].
#[map]
pub(crate) static PY_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PY_HIT_SLOTS, 0);

/// State of the thread-list walk (one per CPU).
#[repr(C)]
struct Walk {
    cur: u64,
    tid: u64,
    next_off: u64,
    ntid_off: u64,
    found: u64,
}

#[map]
static PY_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn hit(h: PyHit) {
    if let Some(p) = PY_HITS.get_ptr_mut(h as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_user copes with any address; a failure gives 0.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn proc_of(tgid: u32) -> Option<PyProc> {
    // SAFETY: copied out at once.
    unsafe { PY_PROCS.get(tgid) }.copied()
}

unsafe extern "C" fn walk_cb(_i: u32, _ctx: *mut c_void) -> i64 {
    let Some(p) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU slot written by `tstate_of` just before bpf_loop on this CPU.
    let w = unsafe { &mut *p };
    if w.cur == 0 {
        return 1;
    }
    if read_u64(w.cur + w.ntid_off) == w.tid {
        w.found = w.cur;
        return 1;
    }
    w.cur = read_u64(w.cur + w.next_off);
    0
}

/// The current thread's `PyThreadState*`, or 0.
#[inline(always)]
fn tstate_of(id: u64, p: &PyProc) -> u64 {
    let tid = id as u32 as u64;
    let ntid_off = p.tstate_native_thread_id as u64;
    // SAFETY: copied out at once.
    if let Some(t) = unsafe { PY_TSTATE.get(id) }.copied()
        && t != 0
        && read_u64(t + ntid_off) == tid
    {
        return t;
    }
    hit(PyHit::Walks);
    let interp = read_u64(p.runtime + p.runtime_interpreters_head as u64);
    let head = read_u64(interp + p.interp_threads_head as u64);
    let Some(wp) = PY_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot; nothing else on this CPU runs while the program does.
    unsafe {
        *wp = Walk {
            cur: head,
            tid,
            next_off: p.tstate_next as u64,
            ntid_off,
            found: 0,
        }
    };
    // SAFETY: bpf_loop only calls `walk_cb`, which takes no context.
    unsafe {
        bpf_loop(
            PY_MAX_THREADS,
            walk_cb as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above.
    let found = unsafe { (*wp).found };
    if found != 0 {
        let _ = PY_TSTATE.insert(id, found, 0);
    }
    found
}

/// The current thread's `contextvars` context (0 when it has none), its thread state, and
/// whether that context is entered (`ctx_entered`). A thread's base context —
/// created lazily by CPython, never entered, unseen by the probes — can sit at an address a
/// request's context had before; the flag tells the agent not to trust that binding.
#[inline(always)]
fn current_context(id: u64, p: &PyProc) -> (u64, u64, bool) {
    let t = tstate_of(id, p);
    if t == 0 {
        return (0, 0, false);
    }
    let ctx = read_u64(t + p.tstate_context as u64);
    (ctx, t, entered(ctx, p))
}

#[inline(always)]
fn entered(ctx: u64, p: &PyProc) -> bool {
    if ctx == 0 {
        return false;
    }
    // SAFETY: bpf_probe_read_user copes with any address; a failure gives 0.
    let e =
        unsafe { bpf_probe_read_user((ctx + p.context_entered as u64) as *const u32) }.unwrap_or(0);
    e != 0
}

/// Emits a `PyStamp` record for a socket write of the current thread (`write`, on `fd`)
/// when the process is followed.
#[inline(always)]
pub(crate) fn stamp(id: u64, write: StampedWrite, fd: i32) {
    let Some(p) = proc_of((id >> 32) as u32) else {
        return;
    };
    let (ctx, t, entered) = current_context(id, &p);
    hit(PyHit::Stamps);
    if t == 0 {
        hit(PyHit::NoTstate);
        debug!(
            &(),
            "No context: pid {} tid {} has no Python thread state; write on fd {} stamped without one",
            (id >> 32) as u32,
            id as u32,
            fd
        );
    }
    let h = EventHeader::py_stamp(origin(id), ctx, t, entered, fd, write);
    emit_conn(h, SockAddr::default());
}

/// `_asyncio_Task___init__(TaskObj *self, PyObject *args, PyObject *kwargs)` entry.
#[uprobe]
pub(crate) fn py_task_init(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = proc_of((id >> 32) as u32) else {
        return 0;
    };
    hit(PyHit::TaskEntry);
    let task: u64 = ctx.arg(0).unwrap_or(0);
    let (cur, _, entered) = current_context(id, &p);
    // A base (never entered) context is reported as none.
    let cur = if entered { cur } else { 0 };
    let _ = PY_TASK_INFLIGHT.insert(id, [task, cur], 0);
    0
}

/// `_asyncio_Task___init__` return: the task is initialised; report it.
#[uretprobe]
pub(crate) fn py_task_init_ret(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some([task, parent]) = (unsafe { PY_TASK_INFLIGHT.get(id) }).copied() else {
        return 0;
    };
    let _ = PY_TASK_INFLIGHT.remove(id);
    let Some(p) = proc_of((id >> 32) as u32) else {
        return 0;
    };
    hit(PyHit::TaskReturn);
    let rc: i32 = ctx.ret();
    if rc != 0 || task == 0 {
        debug!(
            &ctx,
            "Skipped: Task.__init__ of pid {} returned {} (task {:x}): no task reported",
            (id >> 32) as u32,
            rc,
            task
        );
        return 0;
    }
    let task_ctx = read_u64(task + p.task_context as u64);
    let coro = read_u64(task + p.task_coro as u64);
    let Some(mut e) = EVENTS.reserve::<PyTaskRecord>(0) else {
        count_drop(timetracer_common::Drop::RingFull, 0);
        warn!(
            &ctx,
            "Dropped: ring buffer full, task {:x} of pid {} not reported",
            task,
            (id >> 32) as u32
        );
        return 0;
    };
    // SAFETY: the reservation is exactly one PyTaskRecord; the header is written in full and
    // only `len` qualname bytes are read by the agent.
    let rec = unsafe { &mut *e.as_mut_ptr() };
    let mut len = 0u32;
    // Only a real coroutine object has `cr_qualname` at that offset.
    if coro != 0 && p.coro_type != 0 && read_u64(coro + 8) == p.coro_type {
        let qn = read_u64(coro + p.coro_qualname as u64);
        if qn != 0 {
            let src = (qn + p.unicode_ascii_data as u64) as *const u8;
            // SAFETY: the helper bounds the copy by the destination's length.
            if let Ok(s) = unsafe { bpf_probe_read_user_str_bytes(src, &mut rec.qualname) } {
                len = s.len() as u32;
            }
        }
    }
    rec.header = EventHeader::py_task(origin(id), task, task_ctx, parent, len);
    e.submit(BPF_RB_NO_WAKEUP as u64);
    let _ = ctx.as_ptr();
    0
}

/// `PyContext_CopyCurrent` return: the new context and the one it copies.
#[uretprobe]
pub(crate) fn py_ctx_copy_ret(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = proc_of((id >> 32) as u32) else {
        return 0;
    };
    hit(PyHit::CopyReturn);
    let new: u64 = ctx.ret();
    if new == 0 {
        debug!(
            &ctx,
            "Skipped: PyContext_CopyCurrent of pid {} failed",
            (id >> 32) as u32
        );
        return 0;
    }
    let (cur, _, entered) = current_context(id, &p);
    let h = EventHeader::py_copy(origin(id), new, cur, entered);
    emit_conn(h, SockAddr::default());
    0
}
