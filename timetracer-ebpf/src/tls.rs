//! OpenSSL plaintext capture: uprobes on the read/write functions of every libssl a traced
//! process maps (attached per process by the agent), and the rules that tie an `SSL*` to its
//! socket.
//!
//! Probe sites (chosen by the agent, see `capture/tls.rs`): OpenSSL's internal
//! `ssl_read_internal` / `ssl_write_internal` when they can be located (both `SSL_read` and
//! `SSL_read_ex` call them; their first instruction is a `push`, which the kernel emulates, so
//! entry + return cost ~1 µs instead of ~12 µs at the single-stepped `sub` of the exported
//! functions on our VMs), else the exported `SSL_read[_ex]` / `SSL_write[_ex]`.
//!
//! Tying an `SSL*` to a socket:
//! - blocking sockets: the socket syscall made *inside* the SSL call on the same thread;
//! - asyncio `MemoryBIO` (no nested syscall): the socket send on the same thread right after
//!   a write (within 2 ms, and the bytes must start like a TLS application-data record), and
//!   the socket receive on the same thread right before a read that returned plaintext (within
//!   2 ms, the bytes must start like a TLS record).
//!
//! Once tied, the socket's ciphertext is not copied any more.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::{debug, info, trace};
use timetracer_common::{
    DIR_EGRESS, DIR_INGRESS, Direction, EventHeader, Role, SOCK_TLS, SockState, StampedWrite,
};

use crate::{
    maps::{SOCKS, config, is_target, sock_key},
    syscalls::{Source, emit_conn, emit_payload, origin},
};

/// How long after a plaintext write (or before a plaintext read) the socket I/O of the same
/// thread is taken to be its ciphertext.
const RECENT_NS: u64 = 2_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslState {
    rx_pos: u64,
    tx_pos: u64,
    /// Connection id of the tied socket, 0 while unknown.
    conn_id: u64,
    fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslCall {
    ssl: u64,
    buf: u64,
    /// `size_t *readbytes` / `*written` of the `_ex` style, or 0 for `SSL_read`/`SSL_write`
    /// (whose return value is the byte count).
    out: u64,
    dir: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Recent {
    /// `SSL*` (pending send) or fd (last receive).
    what: u64,
    ts: u64,
    /// The bytes started like a TLS record.
    tls: u32,
    _pad: u32,
}

/// Plaintext stream positions per `SSL*`.
#[map]
static SSL_STATE: LruHashMap<SslKey, SslState> = LruHashMap::with_max_entries(65536, 0);
/// The SSL call in flight on a thread (pid_tgid).
#[map]
static SSL_CALL: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);
/// An `SSL*` not yet tied to a socket that a thread just wrote to (MemoryBIO).
#[map]
static PENDING_SEND: LruHashMap<u64, Recent> = LruHashMap::with_max_entries(16384, 0);
/// The last socket a thread received from.
#[map]
static LAST_RECV: LruHashMap<u64, Recent> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: u32, ex: bool) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        trace!(
            ctx,
            "Skipped: SSL call of pid {}, not a traced process", tgid
        );
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let call = SslCall {
        ssl,
        buf: ctx.arg(1).unwrap_or(0),
        out: if ex { ctx.arg(3).unwrap_or(0) } else { 0 },
        dir,
        _pad: 0,
    };
    let _ = SSL_CALL.insert(id, call, 0);
    0
}

/// `ssl_read_internal(SSL*, void*, size_t, size_t *readbytes)` or `SSL_read_ex`.
#[uprobe]
pub(crate) fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, true)
}

/// `SSL_read(SSL*, void*, int)`.
#[uprobe]
pub(crate) fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false)
}

/// `ssl_write_internal(SSL*, const void*, size_t, size_t *written)` or `SSL_write_ex`.
#[uprobe]
pub(crate) fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, true)
}

/// `SSL_write(SSL*, const void*, int)`.
#[uprobe]
pub(crate) fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false)
}

/// Return of any of the above: the bytes are now in the buffer (read) or were accepted by
/// OpenSSL (write; a write that failed with WANT_WRITE is retried and captured then).
#[uretprobe]
pub(crate) fn ssl_exit(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(call) = (unsafe { SSL_CALL.get(id) }).copied() else {
        trace!(
            &ctx,
            "Skipped: SSL return on tid {} without a recorded entry", id as u32
        );
        return 0;
    };
    let _ = SSL_CALL.remove(id);
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        debug!(
            &ctx,
            "Skipped: SSL* {:x} {} returned {} (WANT_READ/WANT_WRITE, EOF or error): no bytes",
            call.ssl,
            if call.dir == DIR_EGRESS {
                "write"
            } else {
                "read"
            },
            ret
        );
        return 0;
    }
    let n: u64 = if call.out == 0 {
        ret as u64
    } else {
        // SAFETY: bpf_probe_read_user copes with any address.
        unsafe { bpf_probe_read_user(call.out as *const u64) }.unwrap_or(0)
    };
    if n == 0 || n > (1 << 30) {
        debug!(
            &ctx,
            "Skipped: SSL* {:x} reported {} bytes (unreadable count or implausible)", call.ssl, n
        );
        return 0;
    }
    let tgid = (id >> 32) as u32;
    let egress = call.dir == DIR_EGRESS;
    if !egress {
        bind_after_recv(id, call.ssl);
    }
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: call.ssl,
    };
    if SSL_STATE.get_ptr(key).is_none() {
        let fresh = SslState {
            rx_pos: 0,
            tx_pos: 0,
            conn_id: 0,
            fd: -1,
            _pad: 0,
        };
        let _ = SSL_STATE.insert(key, fresh, 0);
    }
    let Some(st) = SSL_STATE.get_ptr_mut(key) else {
        return 0;
    };
    let p = if egress {
        // SAFETY: `st` points at a live map value.
        unsafe { &raw mut (*st).tx_pos }
    } else {
        // SAFETY: as above.
        unsafe { &raw mut (*st).rx_pos }
    };
    // SAFETY: as above.
    let pos = unsafe { *p };
    // SAFETY: as above.
    unsafe { *p = pos + n };
    // SAFETY: as above.
    let snapshot = unsafe { *st };
    let (fd, conn_id) = (snapshot.fd, snapshot.conn_id);
    if conn_id == 0 {
        debug!(
            &ctx,
            "Untied: SSL* {:x} of pid {}: {} plaintext bytes before it is tied to a socket (kept by SSL*, joined when tied)",
            call.ssl,
            tgid,
            n
        );
    }
    let h = EventHeader::tls_data(
        origin(id),
        call.ssl,
        fd,
        Direction::of_egress(egress),
        pos,
        n,
    );
    if egress {
        // Python processes: which asyncio context wrote this (issue #7).
        crate::python::stamp(id, StampedWrite::Tls { ssl: call.ssl }, fd);
    }
    emit_payload(
        h,
        Source::Buf(call.buf),
        n,
        config().max_bytes_per_syscall as u64,
    );
    if egress && conn_id == 0 {
        let r = Recent {
            what: call.ssl,
            ts: now(),
            tls: 0,
            _pad: 0,
        };
        let _ = PENDING_SEND.insert(id, r, 0);
    }
    0
}

/// MemoryBIO reads: a read that returned plaintext decrypted the ciphertext this thread
/// received just before. Only a read that returned bytes may bind: a single-threaded event
/// loop also calls `SSL_read` on other connections right after a receive (handshakes,
/// reads that find nothing), which tied the wrong `SSL*` to the socket.
#[inline(always)]
fn bind_after_recv(id: u64, ssl: u64) {
    let tgid = (id >> 32) as u32;
    // SAFETY: copied out at once.
    let Some(r) = unsafe { LAST_RECV.get(id) }.copied() else {
        return;
    };
    if bound(tgid, ssl) {
        return;
    }
    let age = now().saturating_sub(r.ts);
    if r.tls != 0
        && age < RECENT_NS
        && let Some(s) = SOCKS.get_ptr_mut(sock_key(tgid, r.what as i32))
    {
        bind(id, ssl, s, r.what as i32);
    } else {
        debug!(
            &(),
            "Not tied: SSL* {:x} of pid {}: the last receive (fd {}) looks like TLS: {}, {} ns before this read (limit {}); not a MemoryBIO read (a blocking socket is tied by the receive inside the call)",
            ssl,
            tgid,
            r.what,
            r.tls,
            age,
            RECENT_NS
        );
    }
}

#[inline(always)]
fn bound(tgid: u32, ssl: u64) -> bool {
    // SAFETY: copied out at once.
    unsafe { SSL_STATE.get(SslKey { tgid, _pad: 0, ssl }) }.is_some_and(|s| s.conn_id != 0)
}

/// Ties `ssl` to the socket `s` (fd `fd`) of the current process.
#[inline(always)]
fn bind(id: u64, ssl: u64, s: *mut SockState, fd: i32) {
    let tgid = (id >> 32) as u32;
    // SAFETY: `s` points at a live value of the socket map.
    let sock = unsafe { *s };
    let (flags, cur, conn_id, role) = (sock.flags, sock.ssl, sock.conn_id, sock.role);
    if flags & SOCK_TLS != 0 && cur == ssl {
        return;
    }
    info!(
        &(),
        "Tied: pid {} fd {} to SSL* {:x} (connection {:x}); its ciphertext is no longer copied",
        tgid,
        fd,
        ssl,
        conn_id
    );
    // SAFETY: as above.
    unsafe {
        (*s).flags = flags | SOCK_TLS;
    }
    // SAFETY: as above.
    unsafe {
        (*s).ssl = ssl;
    }
    let key = SslKey { tgid, _pad: 0, ssl };
    match SSL_STATE.get_ptr_mut(key) {
        Some(st) => {
            // SAFETY: `st` points at a live map value.
            unsafe {
                (*st).conn_id = conn_id;
            }
            // SAFETY: as above.
            unsafe {
                (*st).fd = fd;
            }
        }
        None => {
            let fresh = SslState {
                rx_pos: 0,
                tx_pos: 0,
                conn_id,
                fd,
                _pad: 0,
            };
            let _ = SSL_STATE.insert(key, fresh, 0);
        }
    }
    let h = EventHeader::tls_bind(origin(id), ssl, conn_id, fd, Role::of_sock_role(role));
    emit_conn(h, timetracer_common::SockAddr::default());
}

/// The first three bytes of a user buffer (zeros when unreadable).
#[inline(always)]
pub(crate) fn first_bytes(ptr: u64) -> [u8; 3] {
    // SAFETY: bpf_probe_read_user copes with any address.
    unsafe { bpf_probe_read_user(ptr as *const [u8; 3]) }.unwrap_or([0; 3])
}

/// Called for every data syscall on a traced socket, before its payload is copied.
#[inline(always)]
pub(crate) fn on_socket_io(
    id: u64,
    _key: u64,
    s: *mut SockState,
    fd: i32,
    egress: bool,
    first: [u8; 3],
) {
    // A TLS record: content type 20..=23 (change_cipher_spec, alert, handshake,
    // application_data), then major version 3.
    let looks_tls = (20..=23).contains(&first[0]) && first[1] == 3;
    // SAFETY: copied out at once.
    if let Some(call) = unsafe { SSL_CALL.get(id) }.copied() {
        // Blocking socket: this syscall is nested in the SSL call.
        bind(id, call.ssl, s, fd);
        return;
    }
    if egress {
        // SAFETY: copied out at once.
        if let Some(p) = unsafe { PENDING_SEND.get(id) }.copied() {
            let _ = PENDING_SEND.remove(id);
            // Application data only: what a plaintext write produces. A handshake record
            // (another connection's ClientHello, 22) sent next on this thread is not it.
            let age = now().saturating_sub(p.ts);
            if first[0] == 23 && first[1] == 3 && age < RECENT_NS {
                bind(id, p.what, s, fd);
            } else {
                debug!(
                    &(),
                    "Not tied: SSL* {:x}: send on fd {} {} ns after its write (limit {}), first byte {} (application data is 23)",
                    p.what,
                    fd,
                    age,
                    RECENT_NS,
                    first[0]
                );
            }
        }
    } else {
        let r = Recent {
            what: fd as u32 as u64,
            ts: now(),
            tls: looks_tls as u32,
            _pad: 0,
        };
        let _ = LAST_RECV.insert(id, r, 0);
    }
}

/// The socket tied to `ssl` closed: its `SSL*` may be reused for another connection.
#[inline(always)]
pub(crate) fn forget(tgid: u32, ssl: u64) {
    let _ = SSL_STATE.remove(SslKey { tgid, _pad: 0, ssl });
}
