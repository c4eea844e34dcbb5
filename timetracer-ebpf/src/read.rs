//! The only places that read user memory. Lengths are bounded so the verifier can prove every
//! copy stays inside its destination.
use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf};
use timetracer_common::SockAddr;

/// `struct iovec` as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IoVec {
    pub(crate) base: u64,
    pub(crate) len: u64,
}

/// The head of `struct user_msghdr` up to the iovec fields.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdrHead {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
}

/// Reads `(iov pointer, iov count)` out of a `struct user_msghdr`.
#[inline(always)]
pub(crate) fn msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    // SAFETY: bpf_probe_read_user copes with any address; a failure is returned, not faulted.
    let h: MsgHdrHead = unsafe { bpf_probe_read_user(msg as *const MsgHdrHead) }.ok()?;
    Some((h.iov, h.iovlen))
}

/// Reads the `idx`th iovec of an array.
#[inline(always)]
pub(crate) fn iovec_at(arr: u64, idx: u32) -> Option<IoVec> {
    let p = arr + (idx as u64) * 16;
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(p as *const IoVec) }.ok()
}

/// Copies `n` user bytes at `src` into the front of `dst`. `n` is clamped to `dst.len()`:
/// slicing gives the verifier the upper bound it needs ("invalid access to map value, value_size=…
/// off=64 size=…" otherwise).
#[inline(always)]
pub(crate) fn copy_user(src: u64, dst: &mut [u8], n: usize) -> bool {
    let n = if n > dst.len() { dst.len() } else { n };
    match dst.get_mut(..n) {
        // SAFETY: dst is a valid, writable slice of exactly n bytes.
        Some(d) => unsafe { bpf_probe_read_user_buf(src as *const u8, d) }.is_ok(),
        None => false,
    }
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Reads a `struct sockaddr_in`/`sockaddr_in6` into our [`SockAddr`] (port in host order).
/// Returns a zero family for unknown families or unreadable memory.
#[inline(always)]
pub(crate) fn sockaddr(ptr: u64) -> SockAddr {
    let mut out = SockAddr::default();
    if ptr == 0 {
        return out;
    }
    let mut raw = [0u8; 24];
    if !copy_user(ptr, &mut raw, 24) {
        return out;
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    out.port = u16::from_be_bytes([raw[2], raw[3]]);
    if family == AF_INET {
        out.family = AF_INET;
        out.addr[0] = raw[4];
        out.addr[1] = raw[5];
        out.addr[2] = raw[6];
        out.addr[3] = raw[7];
    } else if family == AF_INET6 {
        out.family = AF_INET6;
        // sockaddr_in6: port(2) flowinfo(4) addr(16) scope(4)
        let mut i = 0;
        while i < 16 {
            out.addr[i] = raw[8 + i];
            i += 1;
        }
    } else {
        // AF_UNIX and others: the family alone (the path does not fit and is not needed).
        out.family = family;
        out.port = 0;
    }
    out
}

const AF_UNIX: u16 = 1;

/// True for address families the agent traces: IPv4, IPv6, and Unix sockets (nginx in front
/// of gunicorn on a Unix socket, PostgreSQL's local socket). Which of their bytes are HTTP is
/// decided in user space from the first bytes.
#[inline(always)]
pub(crate) fn is_stream_family(family: u16) -> bool {
    family == AF_INET || family == AF_INET6 || family == AF_UNIX
}
