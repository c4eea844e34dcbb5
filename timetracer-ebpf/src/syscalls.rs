//! Syscall tracepoints. Entry programs save arguments of traced sockets; one exit program,
//! attached to every exit tracepoint we use, emits the payload or the connection event.
//!
//! Tracepoint record layout (`/sys/kernel/tracing/events/syscalls/*/format`, stable ABI):
//! `__syscall_nr` at 8, argument *i* at 16 + 8·i on entry, `ret` at 16 on exit.
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_loop,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::{debug, info, trace, warn};
use timetracer_common::{
    ConnEvent, Direction, Drop, EventHeader, LARGE_CHUNK, LargeData, MAX_CHUNKS_PER_SYSCALL,
    MAX_IOVECS, Origin, ROLE_CLIENT, ROLE_SERVER, SMALL_CHUNK, SOCK_TLS, SmallData, SockState,
    StampedWrite, sys,
};

use crate::{
    maps::{
        ARGS, Args, EVENTS, LOOP, SOCKS, TARGET_CGROUPS, TARGETS, add_target, config, count_drop,
        is_target, next_conn_id, sock_key, track_socket,
    },
    read::{copy_user, iovec_at, is_stream_family, msghdr_iov, sockaddr},
};

const MSG_PEEK: u64 = 2;
const EINPROGRESS: i64 = -115;
const CLONE_THREAD: u64 = 0x0001_0000;
const NO_WAKEUP: u64 = BPF_RB_NO_WAKEUP as u64;

#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: syscall tracepoint records always hold six 8-byte arguments from offset 16.
    unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: syscall exit records hold `long ret` at offset 16.
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0)
}

/// Entry of a data syscall: save the arguments if the fd is a traced socket, or stdout/stderr
/// for writes.
#[inline(always)]
fn data_enter(ctx: &TracePointContext, sys_id: u32, flags_arg: usize) -> Result<u32, u32> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return Ok(0);
    }
    let fd = arg(ctx, 0) as i32;
    let is_sock = SOCKS.get_ptr(sock_key(tgid, fd)).is_some();
    let is_write = matches!(
        sys_id,
        sys::WRITE | sys::WRITEV | sys::SENDTO | sys::SENDMSG
    );
    if !is_sock && !(is_write && (fd == 1 || fd == 2) && config().capture_stdio != 0) {
        trace!(
            ctx,
            "Skipped: pid {} fd {} is not a traced socket (syscall {})", tgid, fd, sys_id
        );
        return Ok(0);
    }
    if flags_arg != 0 && arg(ctx, flags_arg) & MSG_PEEK != 0 {
        // Peeked bytes are read again later; copying them now would duplicate stream bytes.
        debug!(
            ctx,
            "Skipped: pid {} fd {} read with MSG_PEEK (read again later)", tgid, fd
        );
        return Ok(0);
    }
    let a = Args {
        sys: sys_id,
        fd,
        ptr: arg(ctx, 1),
        count: arg(ctx, 2),
    };
    if ARGS.insert(id, a, 0).is_err() {
        count_drop(Drop::ArgsFull, 0);
        warn!(
            &(),
            "Dropped: argument map full, pid {} fd {} syscall {} not recorded",
            (id >> 32) as u32,
            a.fd,
            a.sys
        );
    }
    Ok(0)
}

macro_rules! data_enter_prog {
    ($name:ident, $sys:expr, $flags_arg:expr) => {
        #[tracepoint]
        pub(crate) fn $name(ctx: TracePointContext) -> u32 {
            match data_enter(&ctx, $sys, $flags_arg) {
                Ok(r) | Err(r) => r,
            }
        }
    };
}

data_enter_prog!(sys_enter_read, sys::READ, 0);
data_enter_prog!(sys_enter_write, sys::WRITE, 0);
data_enter_prog!(sys_enter_readv, sys::READV, 0);
data_enter_prog!(sys_enter_writev, sys::WRITEV, 0);
data_enter_prog!(sys_enter_recvfrom, sys::RECVFROM, 3);
data_enter_prog!(sys_enter_sendto, sys::SENDTO, 0);
data_enter_prog!(sys_enter_recvmsg, sys::RECVMSG, 2);
data_enter_prog!(sys_enter_sendmsg, sys::SENDMSG, 0);

/// `sendfile(out_fd, in_fd, offset, count)`: file bytes sent on a traced socket. They never
/// pass through user memory, so they are reported as lost at their exact position; without
/// this the stream positions would drift and every later message on the connection would be
/// misframed (gunicorn serves Flask's `send_file` this way).
#[tracepoint]
pub(crate) fn sys_enter_sendfile(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let fd = arg(&ctx, 0) as i32;
    if SOCKS.get_ptr(sock_key(tgid, fd)).is_none() {
        return 0;
    }
    let a = Args {
        sys: sys::SENDFILE,
        fd,
        ptr: 0,
        count: arg(&ctx, 3),
    };
    if ARGS.insert(id, a, 0).is_err() {
        count_drop(Drop::ArgsFull, 0);
        warn!(
            &(),
            "Dropped: argument map full, pid {} fd {} syscall {} not recorded",
            (id >> 32) as u32,
            a.fd,
            a.sys
        );
    }
    0
}

/// `connect(fd, addr, len)`: remember the destination.
#[tracepoint]
pub(crate) fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    save_sock_args(&ctx, sys::CONNECT)
}

/// `accept(fd, addr, len)` / `accept4(fd, addr, len, flags)`: remember where the peer goes.
#[tracepoint]
pub(crate) fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    save_sock_args(&ctx, sys::ACCEPT)
}

#[inline(always)]
fn save_sock_args(ctx: &TracePointContext, sys_id: u32) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32) {
        return 0;
    }
    let a = Args {
        sys: sys_id,
        fd: arg(ctx, 0) as i32,
        ptr: arg(ctx, 1),
        count: 0,
    };
    if ARGS.insert(id, a, 0).is_err() {
        count_drop(Drop::ArgsFull, 0);
        warn!(
            &(),
            "Dropped: argument map full, pid {} fd {} syscall {} not recorded",
            (id >> 32) as u32,
            a.fd,
            a.sys
        );
    }
    0
}

/// `close(fd)`: forget a traced socket and tell the agent.
#[tracepoint]
pub(crate) fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let fd = arg(&ctx, 0) as i32;
    let key = sock_key(tgid, fd);
    let Some(s) = SOCKS.get_ptr(key) else {
        return 0;
    };
    // SAFETY: the pointer came from a successful lookup just above.
    let conn_id = unsafe { (*s).conn_id };
    // SAFETY: as above.
    let ssl = unsafe { (*s).ssl };
    if ssl != 0 {
        crate::tls::forget(tgid, ssl);
    }
    let _ = SOCKS.remove(key);
    debug!(
        &ctx,
        "Closed: pid {} fd {} (connection {:x})", tgid, fd, conn_id
    );
    let h = EventHeader::close(origin(id), conn_id, fd);
    emit_conn(h, timetracer_common::SockAddr::default());
    0
}

/// One exit program for every syscall whose entry saved arguments.
#[tracepoint]
pub(crate) fn sys_exit_any(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: lookup result copied out immediately.
    let Some(a) = (unsafe { ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = ARGS.remove(id);
    let r = ret(&ctx);
    match a.sys {
        sys::CONNECT => on_connect_exit(id, &a, r),
        sys::ACCEPT => on_accept_exit(id, &a, r),
        sys::SENDFILE => on_sendfile_exit(id, &a, r),
        _ => on_data_exit(id, &a, r),
    }
    0
}

#[inline(always)]
fn on_connect_exit(id: u64, a: &Args, r: i64) {
    let addr = sockaddr(a.ptr);
    let tgid = (id >> 32) as u32;
    if !is_stream_family(addr.family) {
        // netlink, packet, ...: not request traffic.
        info!(
            &(),
            "Skipped: pid {} fd {} connect to address family {} (not IPv4/IPv6/Unix)",
            tgid,
            a.fd,
            addr.family
        );
        return;
    }
    let mut conn_id = 0;
    if r == 0 || r == EINPROGRESS {
        info!(
            &(),
            "Tracking: pid {} fd {} connect to port {} (client)", tgid, a.fd, addr.port
        );
        conn_id = next_conn_id();
        let st = SockState {
            conn_id,
            rx_pos: 0,
            tx_pos: 0,
            role: ROLE_CLIENT,
            flags: 0,
            ssl: 0,
        };
        track_socket(sock_key(tgid, a.fd), &st);
    } else {
        info!(
            &(),
            "Skipped: pid {} fd {} connect to port {} failed with {}", tgid, a.fd, addr.port, r
        );
    }
    let h = EventHeader::connect(origin(id), conn_id, a.fd, r);
    emit_conn(h, addr);
}

#[inline(always)]
fn on_accept_exit(id: u64, a: &Args, r: i64) {
    let tgid = (id >> 32) as u32;
    if r < 0 {
        debug!(
            &(),
            "Skipped: pid {} accept on fd {} returned {}", tgid, a.fd, r
        );
        return;
    }
    let addr = sockaddr(a.ptr);
    // accept(fd, NULL, NULL) gives no family: trace it; non-HTTP bytes are ignored later.
    if addr.family != 0 && !is_stream_family(addr.family) {
        info!(
            &(),
            "Skipped: pid {} fd {} accepted address family {} (not IPv4/IPv6/Unix)",
            tgid,
            r,
            addr.family
        );
        return;
    }
    let fd = r as i32;
    info!(
        &(),
        "Tracking: pid {} fd {} accepted on fd {} (server)", tgid, fd, a.fd
    );
    let conn_id = next_conn_id();
    let st = SockState {
        conn_id,
        rx_pos: 0,
        tx_pos: 0,
        role: ROLE_SERVER,
        flags: 0,
        ssl: 0,
    };
    track_socket(sock_key(tgid, fd), &st);
    let h = EventHeader::accept(origin(id), conn_id, fd, a.fd);
    emit_conn(h, addr);
}

#[inline(always)]
fn on_sendfile_exit(id: u64, a: &Args, r: i64) {
    if r <= 0 {
        return;
    }
    let Some(s) = SOCKS.get_ptr_mut(sock_key((id >> 32) as u32, a.fd)) else {
        return;
    };
    info!(
        &(),
        "Lost: pid {} fd {} sendfile of {} bytes (file bytes never pass through user memory)",
        (id >> 32) as u32,
        a.fd,
        r
    );
    // SAFETY: `s` points at a live value of the socket map.
    let pos = unsafe { (*s).tx_pos };
    // SAFETY: as above.
    unsafe { (*s).tx_pos = pos + r as u64 };
    // SAFETY: as above.
    let conn_id = unsafe { (*s).conn_id };
    let h = EventHeader::data_lost(
        origin(id),
        sys::SENDFILE,
        conn_id,
        a.fd,
        Direction::Egress,
        pos,
        r as u64,
    );
    emit_conn(h, timetracer_common::SockAddr::default());
}

#[inline(always)]
fn on_data_exit(id: u64, a: &Args, r: i64) {
    if r <= 0 {
        return;
    }
    let tgid = (id >> 32) as u32;
    let egress = matches!(a.sys, sys::WRITE | sys::WRITEV | sys::SENDTO | sys::SENDMSG);
    let dir = Direction::of_egress(egress);
    let total = r as u64;
    let vectored = matches!(
        a.sys,
        sys::READV | sys::WRITEV | sys::RECVMSG | sys::SENDMSG
    );
    let key = sock_key(tgid, a.fd);
    // (connection id, position) of a socket's data; `None` for stdout/stderr.
    let (sock, cap) = match SOCKS.get_ptr_mut(key) {
        Some(s) => {
            // TLS: tie an `SSL*` to this socket when this syscall is the ciphertext of a
            // plaintext call we saw (see tls.rs); a TLS socket's ciphertext is not copied.
            let first = if vectored {
                [0u8; 3]
            } else {
                crate::tls::first_bytes(a.ptr)
            };
            crate::tls::on_socket_io(id, key, s, a.fd, egress, first);
            // SAFETY: `s` points at a live value of the socket map.
            if unsafe { (*s).flags } & SOCK_TLS != 0 {
                trace!(
                    &(),
                    "Skipped: pid {} fd {} ciphertext of a TLS socket ({} bytes; the plaintext comes from the OpenSSL probes)",
                    tgid,
                    a.fd,
                    total
                );
                return;
            }
            // The read-modify-write below is not atomic (no fetch-and-add on the default BPF
            // cpu): two threads doing the same-direction syscall on one socket at the same
            // instant could get overlapping positions. HTTP servers and clients never do that.
            let p = if egress {
                // SAFETY: `s` points at a live value of the socket map.
                unsafe { &raw mut (*s).tx_pos }
            } else {
                // SAFETY: as above.
                unsafe { &raw mut (*s).rx_pos }
            };
            // SAFETY: as above.
            let pos = unsafe { *p };
            // SAFETY: as above.
            unsafe { *p = pos + total };
            // SAFETY: as above.
            let conn_id = unsafe { (*s).conn_id };
            // SAFETY: as above.
            if egress {
                // Python processes: which asyncio context wrote this — an outbound request
                // (issue #7), or an inbound request's response: its writer is the request's
                // root task (issue #18).
                crate::python::stamp(id, StampedWrite::Socket { conn_id }, a.fd);
            }
            (Some((conn_id, pos)), config().max_bytes_per_syscall as u64)
        }
        // Only stdout/stderr writes get here (see data_enter); a traceback fits in 64 KiB.
        None => (None, 4 * LARGE_CHUNK as u64),
    };
    let (vec_ptr, vec_cnt) = match a.sys {
        sys::READV | sys::WRITEV => (a.ptr, a.count),
        sys::RECVMSG | sys::SENDMSG => msghdr_iov(a.ptr).unwrap_or((0, 0)),
        _ => (0, 0),
    };
    let src = if vectored {
        Source::Vec(vec_ptr, vec_cnt)
    } else {
        Source::Buf(a.ptr)
    };
    let h = match sock {
        Some((conn_id, pos)) => {
            EventHeader::data(origin(id), a.sys, conn_id, a.fd, dir, pos, total)
        }
        None => EventHeader::stdio(origin(id), a.sys, a.fd, total),
    };
    emit_payload(h, src, total, cap);
}

/// Where a payload is in user memory.
#[derive(Clone, Copy)]
pub(crate) enum Source {
    /// One buffer.
    Buf(u64),
    /// An iovec array and its length.
    Vec(u64, u64),
}

/// Copies `total` bytes (at most `cap`) from `src` into ring records made from the template
/// `h` ([`EventHeader::data`], [`EventHeader::tls_data`] or [`EventHeader::stdio`]), whose
/// `pos` is the position of the first byte. Bytes beyond the cap are counted and, for socket
/// and TLS data, reported in a loss record ([`EventHeader::lost_after`]). Returns the bytes
/// walked.
#[inline(always)]
pub(crate) fn emit_payload(h: EventHeader, src: Source, total: u64, cap: u64) -> u64 {
    let Some(stp) = LOOP.get_ptr_mut(0) else {
        return 0;
    };
    let (base, left, iov_arr, iov_cnt, vectored) = match src {
        Source::Buf(p) => (p, total, 0, 0, 0),
        Source::Vec(p, n) => (
            0,
            0,
            p,
            if n > MAX_IOVECS as u64 {
                MAX_IOVECS
            } else {
                n as u32
            },
            1,
        ),
    };
    let st0 = LoopState {
        hdr: h,
        remaining: if total < cap { total } else { cap },
        walked: 0,
        base,
        left,
        iov_arr,
        iov_idx: 0,
        iov_cnt,
        vectored,
    };
    // SAFETY: per-CPU slot; nothing else on this CPU runs while the program does.
    unsafe { *stp = st0 };
    // The loop state lives in a per-CPU map, not on the stack: values loaded from a map are
    // unknown to the verifier, so the callback's states converge after one pass. With the
    // state on the stack every iteration carried new constants and verification hit the
    // 1M-instruction limit ("BPF program is too large", E2BIG).
    // SAFETY: bpf_loop only calls `chunk_cb`, which takes no context.
    unsafe {
        bpf_loop(
            MAX_CHUNKS_PER_SYSCALL + MAX_IOVECS,
            chunk_cb as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above.
    let walked = unsafe { (*stp).walked };
    if walked < total {
        let lost = total - walked;
        let reason = if walked >= cap {
            Drop::CapReached
        } else {
            Drop::TooManyIovecs
        };
        count_drop(reason, lost);
        if walked >= cap {
            warn!(
                &(),
                "Lost: pid {} fd {} {} of {} bytes beyond the per-syscall cap ({} bytes, --max-body + 64 KiB)",
                h.tgid,
                h.fd,
                lost,
                total,
                cap
            );
        } else {
            warn!(
                &(),
                "Lost: pid {} fd {} {} of {} bytes in iovecs beyond the first {}",
                h.tgid,
                h.fd,
                lost,
                total,
                MAX_IOVECS
            );
        }
        if let Some(l) = h.lost_after(h.pos + walked, lost) {
            emit_conn(l, timetracer_common::SockAddr::default());
        }
    }
    walked
}

/// State of the chunking loop over one syscall's buffer(s).
#[repr(C)]
pub(crate) struct LoopState {
    /// Header template; `pos` advances with every chunk.
    hdr: EventHeader,
    /// Bytes still to copy (capped).
    remaining: u64,
    /// Bytes walked so far (copied or dropped).
    walked: u64,
    /// Current user buffer and bytes left in it.
    base: u64,
    left: u64,
    /// iovec array, next index, count.
    iov_arr: u64,
    iov_idx: u32,
    iov_cnt: u32,
    vectored: u32,
}

/// One step: load the next iovec, or copy one chunk into a ring-buffer record.
unsafe extern "C" fn chunk_cb(_i: u32, _ctx: *mut c_void) -> i64 {
    let Some(p) = LOOP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU slot written by on_data_exit just before bpf_loop on this CPU.
    let st = unsafe { &mut *p };
    if st.remaining == 0 {
        return 1;
    }
    if st.left == 0 {
        if st.vectored == 0 || st.iov_idx >= st.iov_cnt || st.iov_idx >= MAX_IOVECS {
            return 1;
        }
        let Some(v) = iovec_at(st.iov_arr, st.iov_idx) else {
            return 1;
        };
        st.iov_idx += 1;
        st.base = v.base;
        st.left = v.len;
        return 0;
    }
    let mut n = if st.left < st.remaining {
        st.left
    } else {
        st.remaining
    };
    if n > LARGE_CHUNK as u64 {
        n = LARGE_CHUNK as u64;
    }
    // SAFETY: helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let h = st.hdr.chunk(ts_ns, n as u32, n == st.remaining);
    if n <= SMALL_CHUNK as u64 {
        emit_chunk::<SmallData, SMALL_CHUNK>(&h, st.base, n as usize);
    } else {
        emit_chunk::<LargeData, LARGE_CHUNK>(&h, st.base, n as usize);
    }
    st.hdr.pos += n;
    st.remaining -= n;
    st.walked += n;
    st.base += n;
    st.left -= n;
    0
}

/// A data record type: header followed by `N` payload bytes.
trait DataRecord {
    fn parts(&mut self) -> (&mut EventHeader, &mut [u8]);
}
impl DataRecord for SmallData {
    fn parts(&mut self) -> (&mut EventHeader, &mut [u8]) {
        (&mut self.header, &mut self.data)
    }
}
impl DataRecord for LargeData {
    fn parts(&mut self) -> (&mut EventHeader, &mut [u8]) {
        (&mut self.header, &mut self.data)
    }
}

#[inline(always)]
fn emit_chunk<T: DataRecord + 'static, const N: usize>(h: &EventHeader, src: u64, n: usize) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count_drop(Drop::RingFull, n as u64);
        warn!(
            &(),
            "Dropped: ring buffer full, pid {} fd {} {} bytes at position {}",
            h.tgid,
            h.fd,
            n,
            h.pos
        );
        return;
    };
    // SAFETY: the reservation is exactly size_of::<T>() bytes; every field we read later is
    // written first (header) or bounded by `len` (data).
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    let (hdr, data) = rec.parts();
    *hdr = *h;
    if copy_user(src, data, n) {
        entry.submit(NO_WAKEUP);
    } else {
        entry.discard(0);
        count_drop(Drop::ReadFailed, n as u64);
        warn!(
            &(),
            "Dropped: pid {} fd {} {} bytes at position {}: user memory not readable",
            h.tgid,
            h.fd,
            n,
            h.pos
        );
    }
}

/// Who and when, for a record made now by the current task (`pid_tgid`).
#[inline(always)]
pub(crate) fn origin(id: u64) -> Origin {
    // SAFETY: helper without arguments.
    Origin::of_pid_tgid(id, unsafe { bpf_ktime_get_ns() })
}

#[inline(always)]
pub(crate) fn emit_conn(h: EventHeader, addr: timetracer_common::SockAddr) {
    match EVENTS.reserve::<ConnEvent>(0) {
        Some(mut e) => {
            e.write(ConnEvent { header: h, addr });
            e.submit(NO_WAKEUP);
        }
        None => {
            count_drop(Drop::RingFull, 0);
            warn!(
                &(),
                "Dropped: ring buffer full, pid {} fd {} record kind {}", h.tgid, h.fd, h.kind
            );
        }
    }
}

/// A traced process created a task: follow new processes (not threads).
#[tracepoint]
pub(crate) fn task_newtask(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !is_target((id >> 32) as u32) {
        return 0;
    }
    let c = config();
    // SAFETY: offsets come from the tracepoint's format file, read by the agent.
    let child = unsafe { ctx.read_at::<i32>(c.newtask_pid_off as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let flags = unsafe { ctx.read_at::<u64>(c.newtask_flags_off as usize) }.unwrap_or(0);
    if child <= 0 || flags & CLONE_THREAD != 0 {
        return 0;
    }
    add_target(child as u32);
    info!(
        &ctx,
        "Following: pid {} started process {}",
        (id >> 32) as u32,
        child
    );
    let h = EventHeader::fork(origin(id), child as u32);
    emit_conn(h, timetracer_common::SockAddr::default());
    0
}

/// A process called `exec`. In node mode one that is not traced yet joins the target set when
/// its cgroup is a traced one, so a container's processes (`runc` moves its init into the
/// container's cgroup, then execs the app; `ctr exec`/`kubectl exec` join the cgroup, then exec)
/// are traced from their first syscall after `exec`. One map lookup for every other exec.
#[tracepoint]
pub(crate) fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if is_target(tgid) {
        return 0;
    }
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if TARGET_CGROUPS.get_ptr(cgroup).is_none() {
        return 0;
    }
    add_target(tgid);
    info!(
        &ctx,
        "Following: pid {} exec'd in traced cgroup {}", tgid, cgroup
    );
    emit_conn(
        EventHeader::join(origin(id), cgroup),
        timetracer_common::SockAddr::default(),
    );
    0
}

/// A traced process exited (its main thread did).
#[tracepoint]
pub(crate) fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if tgid != id as u32 || !is_target(tgid) {
        return 0;
    }
    let _ = TARGETS.remove(tgid);
    let h = EventHeader::exit(origin(id));
    emit_conn(h, timetracer_common::SockAddr::default());
    let _ = ctx.as_ptr();
    0
}
