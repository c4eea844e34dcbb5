//! Wire types shared by the kernel programs (`timetracer-ebpf`) and the agent (`timetracer-user`).
//!
//! Every record the kernel puts in the ring buffer starts with an [`EventHeader`]; its `kind`
//! says what follows. All structs are `#[repr(C)]`, padding-free (checked by the `const`
//! asserts below) and 8-byte aligned so they can be reserved directly in a `BPF_MAP_TYPE_RINGBUF`.
//!
//! What each header field holds for each kind is defined once, in [`record`]: the kernel builds
//! headers with its per-kind constructors ([`EventHeader::data`], [`EventHeader::tls_bind`], ...)
//! and the agent decodes records into the typed [`Record`] with [`decode`], which never trusts
//! lengths from the buffer.
#![no_std]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

use core::mem::size_of;

pub mod record;

pub use record::{
    Accept, Close, Connect, Data, DataLost, DecodeError, Direction, EncodeError, Exit, Fork, Join,
    Origin, PyCopy, PyStamp, PyTask, Record, Role, StampedWrite, Stdio, TlsBind, TlsData,
    TlsDataLost, decode,
};

/// Name of the ring buffer map.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the map of traced process ids (tgid -> flags).
pub const MAP_TARGETS: &str = "TARGETS";
/// Name of the map of traced cgroups (cgroup v2 id -> 1; node mode).
pub const MAP_TARGET_CGROUPS: &str = "TARGET_CGROUPS";
/// Name of the map of traced sockets ((tgid << 32 | fd) -> [`SockState`]).
pub const MAP_SOCKS: &str = "SOCKS";
/// Name of the per-CPU drop counters (index = [`Drop`] as u32).
pub const MAP_DROPS: &str = "DROPS";
/// Name of the global configuration array (index 0 = [`Config`]).
pub const MAP_CONFIG: &str = "CONFIG";

/// Payload bytes carried by a small data record.
pub const SMALL_CHUNK: usize = 512;
/// Payload bytes carried by a large data record.
pub const LARGE_CHUNK: usize = 16384;
/// Upper bound of chunks the kernel emits for one syscall (all iovecs together).
pub const MAX_CHUNKS_PER_SYSCALL: u32 = 64;
/// Upper bound of iovecs the kernel walks for one `readv`/`writev`/`recvmsg`/`sendmsg`.
pub const MAX_IOVECS: u32 = 16;
/// Default ring buffer size in bytes (a power of two multiple of the page size).
pub const RING_BYTES: u32 = 32 * 1024 * 1024;

/// Event kinds (`EventHeader::kind`); the decoded form of each is the [`Record`] variant of the
/// same name.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A chunk of socket payload ([`Data`]); followed by `len` bytes.
    Data = 1,
    /// Bytes of a socket syscall that were not copied (cap reached, or `sendfile` whose
    /// bytes never pass through user memory) ([`DataLost`]).
    DataLost = 2,
    /// The target connected a socket (outbound) ([`Connect`]); followed by [`SockAddr`].
    Connect = 3,
    /// The target accepted a socket (inbound) ([`Accept`]); followed by [`SockAddr`].
    Accept = 4,
    /// A traced socket was closed ([`Close`]).
    Close = 5,
    /// A traced process forked a child process ([`Fork`]).
    Fork = 6,
    /// A traced process exited ([`Exit`]).
    Exit = 7,
    /// A write of the target to its stdout (fd 1) or stderr (fd 2) ([`Stdio`]); followed by
    /// `len` bytes.
    Stdio = 8,
    /// TLS plaintext read or written through OpenSSL ([`TlsData`]); followed by `len` bytes.
    TlsData = 9,
    /// An `SSL*` was tied to a socket ([`TlsBind`]). From now on the socket's ciphertext is
    /// not copied.
    TlsBind = 10,
    /// Python attribution stamp ([`PyStamp`]), emitted right before the data records of a
    /// socket write (outbound request or inbound response) of a CPython process.
    PyStamp = 11,
    /// An asyncio task was created ([`PyTask`]); followed by `len` bytes of the coroutine's
    /// `__qualname__`.
    PyTask = 12,
    /// `PyContext_CopyCurrent` returned ([`PyCopy`]).
    PyCopy = 13,
    /// TLS plaintext bytes of an SSL call that were not copied ([`TlsDataLost`]).
    TlsDataLost = 14,
    /// A process entered the target set by `exec` inside a traced cgroup ([`Join`]).
    Join = 15,
}

impl Kind {
    /// Decodes a raw kind.
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::DataLost,
            3 => Self::Connect,
            4 => Self::Accept,
            5 => Self::Close,
            6 => Self::Fork,
            7 => Self::Exit,
            8 => Self::Stdio,
            9 => Self::TlsData,
            10 => Self::TlsBind,
            11 => Self::PyStamp,
            12 => Self::PyTask,
            13 => Self::PyCopy,
            14 => Self::TlsDataLost,
            15 => Self::Join,
            _ => return None,
        })
    }
}

/// Direction of a data record, from the traced process' point of view.
pub const DIR_INGRESS: u32 = 0;
/// Bytes written by the traced process.
pub const DIR_EGRESS: u32 = 1;

/// Socket role: the target accepted it (it serves inbound requests).
pub const ROLE_SERVER: u32 = 1;
/// Socket role: the target connected it (outbound dependency calls).
pub const ROLE_CLIENT: u32 = 2;

/// Syscall ids carried in `EventHeader::syscall` (ours, not the kernel's numbers).
pub mod sys {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const READV: u32 = 3;
    pub const WRITEV: u32 = 4;
    pub const RECVFROM: u32 = 5;
    pub const SENDTO: u32 = 6;
    pub const RECVMSG: u32 = 7;
    pub const SENDMSG: u32 = 8;
    pub const CONNECT: u32 = 9;
    pub const ACCEPT: u32 = 10;
    pub const ACCEPT4: u32 = 11;
    pub const CLOSE: u32 = 12;
    pub const SENDFILE: u32 = 13;
}

/// Reasons the kernel side dropped something; index into the per-CPU `DROPS` array.
/// Even slots count events, the slot after each counts bytes (see [`Drop::bytes_slot`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// `bpf_ringbuf_reserve` failed: the agent did not drain fast enough.
    RingFull = 0,
    /// The syscall was larger than the per-syscall capture cap.
    CapReached = 2,
    /// More iovecs than the kernel walks.
    TooManyIovecs = 4,
    /// `bpf_probe_read_user` failed (unmapped buffer).
    ReadFailed = 6,
    /// The argument map was full.
    ArgsFull = 8,
    /// The socket map was full.
    SocksFull = 10,
}

/// Number of slots in the `DROPS` array.
pub const DROP_SLOTS: u32 = 12;

impl Drop {
    /// Every reason, in slot order.
    pub const ALL: [Self; 6] = [
        Self::RingFull,
        Self::CapReached,
        Self::TooManyIovecs,
        Self::ReadFailed,
        Self::ArgsFull,
        Self::SocksFull,
    ];
    /// Slot counting events for this reason.
    #[must_use]
    pub const fn events_slot(self) -> u32 {
        self as u32
    }
    /// Slot counting payload bytes lost for this reason.
    #[must_use]
    pub const fn bytes_slot(self) -> u32 {
        self as u32 + 1
    }
    /// Stable name shown to users.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingFull => "ring_full",
            Self::CapReached => "cap_reached",
            Self::TooManyIovecs => "too_many_iovecs",
            Self::ReadFailed => "read_failed",
            Self::ArgsFull => "args_map_full",
            Self::SocksFull => "socket_map_full",
        }
    }
}

/// Header of every ring-buffer record. 64 bytes, no padding. Generic fields: what `conn_id`,
/// `fd`, `dir`, `pos`, `total` and `flags` hold depends on `kind` (table in [`record`]); build
/// headers with the per-kind constructors and read them through [`decode`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`Kind`] as u32.
    pub kind: u32,
    /// [`sys`] id of the syscall that produced the record (0 for process events).
    pub syscall: u32,
    /// `bpf_ktime_get_ns()` at the syscall exit (data) or at the event.
    pub ts_ns: u64,
    /// Process id (tgid) of the traced process.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Connection id, unique per (process, fd, open), for socket kinds; see [`record`].
    pub conn_id: u64,
    /// File descriptor.
    pub fd: i32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`] for data kinds; see [`record`].
    pub dir: u32,
    /// Byte position of this chunk in its direction's stream for data kinds; see [`record`].
    pub pos: u64,
    /// Total bytes moved by the syscall for data kinds; see [`record`].
    pub total: i64,
    /// Payload bytes following the header in this record.
    pub len: u32,
    /// Bit flags ([`FLAG_LAST_CHUNK`], ...).
    pub flags: u32,
}

/// Set on the last record of a syscall.
pub const FLAG_LAST_CHUNK: u32 = 1;
/// The socket was first seen through a data syscall, not at accept/connect.
pub const FLAG_LATE_SOCKET: u32 = 2;

/// A data record with up to [`SMALL_CHUNK`] payload bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SmallData {
    pub header: EventHeader,
    pub data: [u8; SMALL_CHUNK],
}

/// A data record with up to [`LARGE_CHUNK`] payload bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LargeData {
    pub header: EventHeader,
    pub data: [u8; LARGE_CHUNK],
}

/// Socket address as read from the syscall's `struct sockaddr` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    /// `AF_INET` (2), `AF_INET6` (10), or 0 when unknown.
    pub family: u16,
    /// Port in host byte order.
    pub port: u16,
    /// IPv6 scope / padding.
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
}

/// A connect or accept record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    pub header: EventHeader,
    pub addr: SockAddr,
}

/// Value of the kernel's socket map. Positions are advanced atomically by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// Connection id ([`EventHeader::conn_id`]).
    pub conn_id: u64,
    /// Next byte position in the ingress stream.
    pub rx_pos: u64,
    /// Next byte position in the egress stream.
    pub tx_pos: u64,
    /// [`ROLE_SERVER`] or [`ROLE_CLIENT`].
    pub role: u32,
    /// [`SOCK_TLS`] once an `SSL*` is tied to the socket.
    pub flags: u32,
    /// The `SSL*` tied to this socket, or 0.
    pub ssl: u64,
}

/// `SockState::flags`: the socket carries TLS; its ciphertext is not copied.
pub const SOCK_TLS: u32 = 1;

/// Global configuration, written by the agent before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Max payload bytes copied per syscall (rest is reported as [`Kind::DataLost`]).
    pub max_bytes_per_syscall: u32,
    /// Capture writes to fd 1 and 2 (tracebacks): 1 = yes.
    pub capture_stdio: u32,
    /// Offset of `pid` in the `task/task_newtask` tracepoint record (read from its format file).
    pub newtask_pid_off: u32,
    /// Offset of `clone_flags` in the `task/task_newtask` tracepoint record.
    pub newtask_flags_off: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_bytes_per_syscall: MAX_CHUNKS_PER_SYSCALL * LARGE_CHUNK as u32,
            capture_stdio: 1,
            newtask_pid_off: 8,
            newtask_flags_off: 32,
        }
    }
}

/// Name of the map of CPython processes whose asyncio contexts are followed (tgid -> [`PyProc`]).
pub const MAP_PY_PROCS: &str = "PY_PROCS";
/// Name of the per-CPU counters of the Python probes (index = [`PyHit`] as u32).
pub const MAP_PY_HITS: &str = "PY_HITS";
/// Longest coroutine qualname copied into a [`PyTaskRecord`].
pub const PY_QUALNAME: usize = 64;
/// Most thread states walked when looking for the current thread's `PyThreadState`.
pub const PY_MAX_THREADS: u32 = 256;

/// Per-process description of a CPython runtime, filled by the agent after discovery
/// (`timetracer-user/src/capture/python`). Addresses are the process' virtual addresses;
/// offsets come from the per-version table generated from DWARF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    /// Address of `PyCoro_Type` (a task's coroutine is checked against it before its
    /// `__qualname__` is read), or 0.
    pub coro_type: u64,
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interpreters_head: u32,
    /// `PyInterpreterState.threads.head`.
    pub interp_threads_head: u32,
    /// `PyThreadState.next`.
    pub tstate_next: u32,
    /// `PyThreadState.native_thread_id`.
    pub tstate_native_thread_id: u32,
    /// `PyThreadState.context`.
    pub tstate_context: u32,
    /// `TaskObj.task_coro`.
    pub task_coro: u32,
    /// `TaskObj.task_context`.
    pub task_context: u32,
    /// `PyCoroObject.cr_qualname`.
    pub coro_qualname: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_data: u32,
    /// `PyContext.ctx_entered`: a thread's own base context (created lazily, never entered)
    /// is never a request's context, whatever was at its address before.
    pub context_entered: u32,
}

/// `EventHeader::flags` of [`Kind::PyStamp`] and [`Kind::PyCopy`]: the (current / copied)
/// context is entered (`ctx_entered != 0`). A context that is not entered is a thread's base
/// context and is never owned by a request.
pub const PY_CTX_ENTERED: u32 = 4;
/// `EventHeader::flags` of [`Kind::PyStamp`]: the stamped write is TLS plaintext (`conn_id`
/// holds the `SSL*`, not a connection id).
pub const PY_STAMP_TLS: u32 = 8;

/// Counters of the Python probes (per-CPU array `PY_HITS`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyHit {
    /// `_asyncio.Task.__init__` entry probe hits.
    TaskEntry = 0,
    /// `_asyncio.Task.__init__` return probe hits.
    TaskReturn = 1,
    /// `PyContext_CopyCurrent` return probe hits.
    CopyReturn = 2,
    /// Socket writes stamped with a context.
    Stamps = 3,
    /// Thread-state list walks (cache misses).
    Walks = 4,
    /// Stamps whose thread state was not found.
    NoTstate = 5,
}

/// Number of slots in `PY_HITS`.
pub const PY_HIT_SLOTS: u32 = 6;

impl PyHit {
    /// Every counter, in slot order.
    pub const ALL: [Self; 6] = [
        Self::TaskEntry,
        Self::TaskReturn,
        Self::CopyReturn,
        Self::Stamps,
        Self::Walks,
        Self::NoTstate,
    ];
    /// Stable name shown to users.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::TaskEntry => "py_task_init_entry",
            Self::TaskReturn => "py_task_init_return",
            Self::CopyReturn => "py_context_copy_return",
            Self::Stamps => "py_stamps",
            Self::Walks => "py_tstate_walks",
            Self::NoTstate => "py_stamps_without_tstate",
        }
    }
}

/// A [`Kind::PyTask`] record: header and the coroutine's qualname (`len` bytes used).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PyTaskRecord {
    pub header: EventHeader,
    pub qualname: [u8; PY_QUALNAME],
}

/// Connection ids the agent assigns to sockets found open at attach time start here,
/// so they never collide with the kernel's counter.
pub const PREEXISTING_CONN_ID_BASE: u64 = 1 << 63;

const _: () = assert!(size_of::<EventHeader>() == 64);
const _: () = assert!(size_of::<SockAddr>() == 24);
const _: () = assert!(size_of::<ConnEvent>() == 88);
const _: () = assert!(size_of::<SockState>() == 40);
const _: () = assert!(size_of::<SmallData>() == 64 + SMALL_CHUNK);
const _: () = assert!(size_of::<LargeData>() == 64 + LARGE_CHUNK);
const _: () = assert!(size_of::<Config>() == 16);
const _: () = assert!(size_of::<PyProc>() == 56);
const _: () = assert!(size_of::<PyTaskRecord>() == 64 + PY_QUALNAME);

/// Replay (`timetracer-replay` object): map of redirect rules ([`DestKey`] -> [`Rule`]).
pub const MAP_REPLAY_RULES: &str = "RULES";
/// Replay: connects that matched no rule ([`DestKey`] -> count), refused with `EPERM`.
pub const MAP_REPLAY_BLOCKED: &str = "BLOCKED";
/// Replay: original destination of each redirected socket (socket cookie -> [`DestKey`]).
pub const MAP_REPLAY_ORIG: &str = "ORIG";

/// A TCP destination as replay rules see it: IPv4 as an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), so one key type serves `connect4` and `connect6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DestKey {
    /// Address bytes in network order.
    pub addr: [u8; 16],
    /// Port in host order.
    pub port: u16,
    pub _pad: [u8; 6],
}

impl DestKey {
    /// The key of an IPv4 address (`octets` in network order).
    #[must_use]
    pub const fn v4(octets: [u8; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12] = octets[0];
        addr[13] = octets[1];
        addr[14] = octets[2];
        addr[15] = octets[3];
        Self {
            addr,
            port,
            _pad: [0; 6],
        }
    }

    /// The IPv4 octets when the key is an IPv4-mapped address.
    #[must_use]
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

/// What replay does with a connect to a [`DestKey`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    /// [`RULE_REDIRECT`] or [`RULE_LIVE`].
    pub action: u32,
    /// Mock listener IPv4 address, network order (127.0.0.1).
    pub mock_ip4: [u8; 4],
    /// Mock listener port, host order.
    pub mock_port: u16,
    pub _pad: [u8; 6],
}

/// Send the connect to the rule's mock listener.
pub const RULE_REDIRECT: u32 = 1;
/// Let the connect reach the real destination (hybrid replay).
pub const RULE_LIVE: u32 = 2;

const _: () = assert!(size_of::<DestKey>() == 24);
const _: () = assert!(size_of::<Rule>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), no padding (asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::SockState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PyProc {}
}

fn read_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}
fn read_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

impl EventHeader {
    /// Encodes the header (native endian, the kernel's layout).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut o = [0u8; 64];
        o[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        o[4..8].copy_from_slice(&self.syscall.to_ne_bytes());
        o[8..16].copy_from_slice(&self.ts_ns.to_ne_bytes());
        o[16..20].copy_from_slice(&self.tgid.to_ne_bytes());
        o[20..24].copy_from_slice(&self.tid.to_ne_bytes());
        o[24..32].copy_from_slice(&self.conn_id.to_ne_bytes());
        o[32..36].copy_from_slice(&self.fd.to_ne_bytes());
        o[36..40].copy_from_slice(&self.dir.to_ne_bytes());
        o[40..48].copy_from_slice(&self.pos.to_ne_bytes());
        o[48..56].copy_from_slice(&self.total.to_ne_bytes());
        o[56..60].copy_from_slice(&self.len.to_ne_bytes());
        o[60..64].copy_from_slice(&self.flags.to_ne_bytes());
        o
    }

    /// Decodes a header from the first 64 bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 64 {
            return Err(DecodeError::Short {
                have: b.len(),
                need: 64,
            });
        }
        Ok(Self {
            kind: read_u32(b, 0),
            syscall: read_u32(b, 4),
            ts_ns: read_u64(b, 8),
            tgid: read_u32(b, 16),
            tid: read_u32(b, 20),
            conn_id: read_u64(b, 24),
            fd: read_u32(b, 32) as i32,
            dir: read_u32(b, 36),
            pos: read_u64(b, 40),
            total: read_u64(b, 48) as i64,
            len: read_u32(b, 56),
            flags: read_u32(b, 60),
        })
    }
}

impl SockAddr {
    /// Encodes the address (kernel layout).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut o = [0u8; 24];
        o[0..2].copy_from_slice(&self.family.to_ne_bytes());
        o[2..4].copy_from_slice(&self.port.to_ne_bytes());
        o[4..8].copy_from_slice(&self._pad.to_ne_bytes());
        o[8..24].copy_from_slice(&self.addr);
        o
    }
}
