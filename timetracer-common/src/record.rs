//! Typed ring-buffer records: the constructors the kernel fills its [`EventHeader`]s with, and
//! the [`Record`] the agent decodes them into.
//!
//! The wire header is one 64-byte C struct for every kind (the kernel reserves it in place in
//! the ring buffer); what each of its generic fields holds depends on the kind. That mapping
//! lives here and nowhere else: the kernel calls one constructor per kind
//! ([`EventHeader::close`], [`EventHeader::tls_bind`], ...), the agent matches on [`Record`],
//! whose fields are named for what they mean, and [`Record::encode_into`] writes the exact
//! bytes the kernel emits (tests, tools) through the same constructors.
//!
//! | kind | `conn_id` | `fd` | `dir` | `pos` | `total` | `flags` | payload |
//! |---|---|---|---|---|---|---|---|
//! | `Data` | connection | socket | direction | stream position | syscall bytes | last chunk | bytes |
//! | `DataLost` | connection | socket | direction | first lost byte | lost bytes | – | – |
//! | `Stdio` | 0 | 1 or 2 | egress | offset in the write | syscall bytes | last chunk | bytes |
//! | `TlsData` | `SSL*` | socket or -1 | direction | `SSL*` stream position | call bytes | last chunk | bytes |
//! | `TlsDataLost` | `SSL*` | socket or -1 | direction | first lost byte | lost bytes | – | – |
//! | `TlsBind` | connection | socket | role | `SSL*` | – | – | – |
//! | `Connect` | connection (0: untracked) | socket | client | – | return value | – | address |
//! | `Accept` | connection | socket | server | listening socket | socket (return value) | – | address |
//! | `Close` | connection | socket | – | – | – | – | – |
//! | `Fork` | child tgid | – | – | – | – | – | – |
//! | `Exit` | – | – | – | – | – | – | – |
//! | `Join` | cgroup id | – | – | – | – | – | – |
//! | `PyStamp` | connection or `SSL*` | socket or -1 | egress | context | thread state | entered, TLS | – |
//! | `PyTask` | `TaskObj*` | – | – | task context | creating context | – | qualname |
//! | `PyCopy` | new context | – | – | copied context | – | entered | – |
use crate::{
    ConnEvent, DIR_EGRESS, DIR_INGRESS, EventHeader, FLAG_LAST_CHUNK, Kind, LARGE_CHUNK,
    PY_CTX_ENTERED, PY_QUALNAME, PY_STAMP_TLS, PyTaskRecord, ROLE_CLIENT, ROLE_SERVER, SMALL_CHUNK,
    SmallData, SockAddr, sys,
};
use core::mem::size_of;

/// Who produced a record, and when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `bpf_ktime_get_ns()` (monotonic clock) when the record was made.
    pub ts_ns: u64,
    /// Process id (tgid).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
}

impl Origin {
    /// The origin of the current task: `pid_tgid` as `bpf_get_current_pid_tgid` returns it.
    #[must_use]
    #[inline(always)]
    pub const fn of_pid_tgid(pid_tgid: u64, ts_ns: u64) -> Self {
        Self {
            ts_ns,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
        }
    }
}

/// Direction of a byte stream, from the traced process' point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes read by the traced process.
    Ingress,
    /// Bytes written by the traced process.
    Egress,
}

impl Direction {
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    #[must_use]
    #[inline(always)]
    pub const fn raw(self) -> u32 {
        match self {
            Self::Ingress => DIR_INGRESS,
            Self::Egress => DIR_EGRESS,
        }
    }

    /// `Egress` when `egress`, else `Ingress`.
    #[must_use]
    #[inline(always)]
    pub const fn of_egress(egress: bool) -> Self {
        if egress { Self::Egress } else { Self::Ingress }
    }

    /// Written by the traced process.
    #[must_use]
    pub const fn is_egress(self) -> bool {
        matches!(self, Self::Egress)
    }

    const fn from_raw(v: u32) -> Option<Self> {
        match v {
            DIR_INGRESS => Some(Self::Ingress),
            DIR_EGRESS => Some(Self::Egress),
            _ => None,
        }
    }
}

/// Which end of a connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// It accepted the connection (inbound requests).
    Server,
    /// It connected the socket (outbound dependency calls).
    Client,
}

impl Role {
    /// [`ROLE_SERVER`] or [`ROLE_CLIENT`].
    #[must_use]
    #[inline(always)]
    pub const fn raw(self) -> u32 {
        match self {
            Self::Server => ROLE_SERVER,
            Self::Client => ROLE_CLIENT,
        }
    }

    /// The role of a socket map entry (`SockState::role`): anything but [`ROLE_SERVER`] is a
    /// client.
    #[must_use]
    #[inline(always)]
    pub const fn of_sock_role(role: u32) -> Self {
        if role == ROLE_SERVER {
            Self::Server
        } else {
            Self::Client
        }
    }

    const fn from_raw(v: u32) -> Option<Self> {
        match v {
            ROLE_SERVER => Some(Self::Server),
            ROLE_CLIENT => Some(Self::Client),
            _ => None,
        }
    }
}

/// The write a [`PyStamp`] stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StampedWrite {
    /// A socket write of connection `conn_id`.
    Socket { conn_id: u64 },
    /// A TLS plaintext write through `ssl` (an `SSL*`).
    Tls { ssl: u64 },
}

/// A chunk of socket payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    pub origin: Origin,
    /// [`sys`] id of the syscall.
    pub syscall: u32,
    pub conn_id: u64,
    pub fd: i32,
    pub dir: Direction,
    /// Position of the first payload byte in the connection's `dir` stream.
    pub pos: u64,
    /// Bytes the whole syscall moved (its return value).
    pub syscall_bytes: u64,
    /// The last chunk of its syscall.
    pub last_chunk: bool,
    pub payload: &'a [u8],
}

/// Bytes of a socket syscall that were not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataLost {
    pub origin: Origin,
    /// [`sys`] id of the syscall ([`sys::SENDFILE`]: file bytes never pass through user memory).
    pub syscall: u32,
    pub conn_id: u64,
    pub fd: i32,
    pub dir: Direction,
    /// Position of the first lost byte in the `dir` stream.
    pub pos: u64,
    /// Lost bytes.
    pub len: u64,
}

/// A chunk of a write of the target to its stdout or stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stdio<'a> {
    pub origin: Origin,
    pub syscall: u32,
    /// 1 or 2.
    pub fd: i32,
    /// Offset of the first payload byte in the write.
    pub offset: u64,
    /// Bytes the whole write moved.
    pub syscall_bytes: u64,
    pub last_chunk: bool,
    pub payload: &'a [u8],
}

/// A chunk of TLS plaintext read or written through OpenSSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsData<'a> {
    pub origin: Origin,
    /// The `SSL*`.
    pub ssl: u64,
    /// The socket when already tied, else -1.
    pub fd: i32,
    pub dir: Direction,
    /// Position of the first payload byte in the `SSL*`'s `dir` plaintext stream.
    pub pos: u64,
    /// Bytes the whole SSL call moved.
    pub call_bytes: u64,
    pub last_chunk: bool,
    pub payload: &'a [u8],
}

/// Plaintext bytes of an SSL call that were not copied (beyond the per-call cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsDataLost {
    pub origin: Origin,
    pub ssl: u64,
    pub fd: i32,
    pub dir: Direction,
    /// Position of the first lost byte in the `SSL*`'s `dir` plaintext stream.
    pub pos: u64,
    pub len: u64,
}

/// An `SSL*` was tied to a socket: from now on the socket's ciphertext is not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsBind {
    pub origin: Origin,
    pub ssl: u64,
    /// The socket's connection id.
    pub conn_id: u64,
    pub fd: i32,
    /// The socket's role.
    pub role: Role,
}

/// The target connected a socket (client role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connect {
    pub origin: Origin,
    /// The connection id, `None` when the connect failed (the socket is not tracked).
    pub conn_id: Option<u64>,
    pub fd: i32,
    /// `connect`'s return value (0, `-EINPROGRESS`, or the error).
    pub ret: i64,
    /// The destination.
    pub addr: SockAddr,
}

/// The target accepted a socket (server role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    pub origin: Origin,
    pub conn_id: u64,
    /// The accepted socket (`accept`'s return value).
    pub fd: i32,
    /// The listening socket it was accepted on (`accept`'s first argument): its bound address
    /// is the connection's local address when that is not a wildcard.
    pub listen_fd: i32,
    /// The peer, as `accept` filled it in (family 0 when the caller passed no address).
    pub addr: SockAddr,
}

/// A traced socket was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    pub origin: Origin,
    pub conn_id: u64,
    pub fd: i32,
}

/// A traced process forked a child process (now traced too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fork {
    pub origin: Origin,
    /// The child's tgid.
    pub child: u32,
}

/// A process that was not traced called `exec` inside one of the traced cgroups (node mode):
/// it is traced from now on, its children follow as for any traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Join {
    pub origin: Origin,
    /// The cgroup v2 id (the inode of its directory) that matched.
    pub cgroup: u64,
}

/// A traced process exited (its main thread did). The `sched_process_exit` tracepoint does not
/// carry the exit code, so the record has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub origin: Origin,
}

/// Python attribution stamp, emitted right before the data records of a socket write (an
/// outbound request, or an inbound request's response) of a CPython process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyStamp {
    pub origin: Origin,
    /// The thread's current `contextvars` context (`PyThreadState->context`, 0 when none).
    pub ctx: u64,
    /// The `PyThreadState*` (0 when the thread state was not found).
    pub tstate: u64,
    /// `ctx` is entered (a thread's never-entered base context is never a request's).
    pub entered: bool,
    /// The socket written to, or -1 (TLS plaintext not tied to a socket yet).
    pub fd: i32,
    pub write: StampedWrite,
}

/// An asyncio task was created (`_asyncio.Task.__init__` returned 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyTask<'a> {
    pub origin: Origin,
    /// The `TaskObj*`.
    pub task: u64,
    /// The task's own context (`task->task_context`).
    pub task_ctx: u64,
    /// The context current at `__init__` entry (0 when none or not entered).
    pub parent_ctx: u64,
    /// The coroutine's `__qualname__` (empty when not a coroutine or unreadable).
    pub qualname: &'a [u8],
}

/// `PyContext_CopyCurrent` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyCopy {
    pub origin: Origin,
    /// The new `PyContext*`.
    pub new_ctx: u64,
    /// The context that was current (the one copied).
    pub copied_ctx: u64,
    /// `copied_ctx` is entered.
    pub entered: bool,
}

/// One decoded ring-buffer record, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Data(Data<'a>),
    DataLost(DataLost),
    Stdio(Stdio<'a>),
    TlsData(TlsData<'a>),
    TlsDataLost(TlsDataLost),
    TlsBind(TlsBind),
    Connect(Connect),
    Accept(Accept),
    Close(Close),
    Fork(Fork),
    Join(Join),
    Exit(Exit),
    PyStamp(PyStamp),
    PyTask(PyTask<'a>),
    PyCopy(PyCopy),
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its declared payload.
    Short { have: usize, need: usize },
    /// Unknown kind.
    UnknownKind(u32),
    /// A field holds a value the kernel never writes there (`field` names it).
    BadValue { field: &'static str, value: u32 },
}

/// Why a record could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is longer than the kernel's record of that kind can carry.
    PayloadTooLong { len: usize, max: usize },
    /// The output buffer is shorter than [`Record::encoded_len`].
    BufferTooSmall { have: usize, need: usize },
}

/// The kernel-side constructors: one per record kind, so no probe fills a generic header field
/// by hand. Payload kinds build a *template* (`len` 0) that [`EventHeader::chunk`] stamps per
/// copied chunk.
impl EventHeader {
    #[inline(always)]
    #[expect(clippy::too_many_arguments, reason = "the header's fields, named")]
    const fn raw(
        kind: Kind,
        syscall: u32,
        o: Origin,
        conn_id: u64,
        fd: i32,
        dir: u32,
        pos: u64,
        total: i64,
        flags: u32,
    ) -> Self {
        Self {
            kind: kind as u32,
            syscall,
            ts_ns: o.ts_ns,
            tgid: o.tgid,
            tid: o.tid,
            conn_id,
            fd,
            dir,
            pos,
            total,
            len: 0,
            flags,
        }
    }

    /// Template of the chunks of a socket data syscall whose first byte is at `pos`.
    #[must_use]
    #[inline(always)]
    pub const fn data(
        o: Origin,
        syscall: u32,
        conn_id: u64,
        fd: i32,
        dir: Direction,
        pos: u64,
        syscall_bytes: u64,
    ) -> Self {
        Self::raw(
            Kind::Data,
            syscall,
            o,
            conn_id,
            fd,
            dir.raw(),
            pos,
            syscall_bytes as i64,
            0,
        )
    }

    /// Template of the chunks of a write to stdout/stderr (`fd` 1 or 2).
    #[must_use]
    #[inline(always)]
    pub const fn stdio(o: Origin, syscall: u32, fd: i32, syscall_bytes: u64) -> Self {
        Self::raw(
            Kind::Stdio,
            syscall,
            o,
            0,
            fd,
            DIR_EGRESS,
            0,
            syscall_bytes as i64,
            0,
        )
    }

    /// Template of the chunks of an SSL call's plaintext whose first byte is at `pos` of the
    /// `SSL*`'s `dir` stream; `fd` is the tied socket or -1.
    #[must_use]
    #[inline(always)]
    pub const fn tls_data(
        o: Origin,
        ssl: u64,
        fd: i32,
        dir: Direction,
        pos: u64,
        call_bytes: u64,
    ) -> Self {
        Self::raw(
            Kind::TlsData,
            0,
            o,
            ssl,
            fd,
            dir.raw(),
            pos,
            call_bytes as i64,
            0,
        )
    }

    /// `len` bytes of a socket syscall from `pos` on that were not copied.
    #[must_use]
    #[inline(always)]
    pub const fn data_lost(
        o: Origin,
        syscall: u32,
        conn_id: u64,
        fd: i32,
        dir: Direction,
        pos: u64,
        len: u64,
    ) -> Self {
        Self::raw(
            Kind::DataLost,
            syscall,
            o,
            conn_id,
            fd,
            dir.raw(),
            pos,
            len as i64,
            0,
        )
    }

    /// `len` plaintext bytes of an SSL call from `pos` on that were not copied.
    #[must_use]
    #[inline(always)]
    pub const fn tls_data_lost(
        o: Origin,
        ssl: u64,
        fd: i32,
        dir: Direction,
        pos: u64,
        len: u64,
    ) -> Self {
        Self::raw(
            Kind::TlsDataLost,
            0,
            o,
            ssl,
            fd,
            dir.raw(),
            pos,
            len as i64,
            0,
        )
    }

    /// The record of one chunk of this payload template: `len` payload bytes copied at
    /// `ts_ns`, `last` when it is the syscall's last chunk. The template's `pos` is the
    /// chunk's position.
    #[must_use]
    #[inline(always)]
    pub const fn chunk(&self, ts_ns: u64, len: u32, last: bool) -> Self {
        let mut h = *self;
        h.ts_ns = ts_ns;
        h.len = len;
        h.flags = if last { FLAG_LAST_CHUNK } else { 0 };
        h
    }

    /// The loss record of a payload template whose bytes from `pos` on (`len` of them) were
    /// not copied: [`Kind::DataLost`] for socket data, [`Kind::TlsDataLost`] for TLS
    /// plaintext, none for stdio (a lost tail of a log line is only counted).
    #[must_use]
    #[inline(always)]
    pub const fn lost_after(&self, pos: u64, len: u64) -> Option<Self> {
        let kind = if self.kind == Kind::Data as u32 {
            Kind::DataLost
        } else if self.kind == Kind::TlsData as u32 {
            Kind::TlsDataLost
        } else {
            return None;
        };
        let mut h = *self;
        h.kind = kind as u32;
        h.pos = pos;
        h.total = len as i64;
        h.len = 0;
        h.flags = 0;
        Some(h)
    }

    /// `SSL*` `ssl` was tied to socket `fd` (connection `conn_id`, role `role`).
    #[must_use]
    #[inline(always)]
    pub const fn tls_bind(o: Origin, ssl: u64, conn_id: u64, fd: i32, role: Role) -> Self {
        Self::raw(Kind::TlsBind, 0, o, conn_id, fd, role.raw(), ssl, 0, 0)
    }

    /// `connect(fd)` returned `ret`; `conn_id` is 0 when the socket is not tracked (failed).
    /// Followed by the destination ([`ConnEvent`]).
    #[must_use]
    #[inline(always)]
    pub const fn connect(o: Origin, conn_id: u64, fd: i32, ret: i64) -> Self {
        Self::raw(
            Kind::Connect,
            sys::CONNECT,
            o,
            conn_id,
            fd,
            ROLE_CLIENT,
            0,
            ret,
            0,
        )
    }

    /// `accept` returned socket `fd`, tracked as `conn_id`. Followed by the peer
    /// ([`ConnEvent`]).
    #[must_use]
    #[inline(always)]
    pub const fn accept(o: Origin, conn_id: u64, fd: i32, listen_fd: i32) -> Self {
        Self::raw(
            Kind::Accept,
            sys::ACCEPT,
            o,
            conn_id,
            fd,
            ROLE_SERVER,
            listen_fd as u32 as u64,
            fd as i64,
            0,
        )
    }

    /// The traced socket `fd` (connection `conn_id`) was closed.
    #[must_use]
    #[inline(always)]
    pub const fn close(o: Origin, conn_id: u64, fd: i32) -> Self {
        Self::raw(Kind::Close, sys::CLOSE, o, conn_id, fd, 0, 0, 0, 0)
    }

    /// The process forked `child`.
    #[must_use]
    #[inline(always)]
    pub const fn fork(o: Origin, child: u32) -> Self {
        Self::raw(Kind::Fork, 0, o, child as u64, 0, 0, 0, 0, 0)
    }

    /// The process joined the target set by `exec` in traced cgroup `cgroup`.
    #[must_use]
    #[inline(always)]
    pub const fn join(o: Origin, cgroup: u64) -> Self {
        Self::raw(Kind::Join, 0, o, cgroup, 0, 0, 0, 0, 0)
    }

    /// The process exited.
    #[must_use]
    #[inline(always)]
    pub const fn exit(o: Origin) -> Self {
        Self::raw(Kind::Exit, 0, o, 0, 0, 0, 0, 0, 0)
    }

    /// The stamp of an outbound write on `fd` made in context `ctx` by thread state `tstate`.
    #[must_use]
    #[inline(always)]
    pub const fn py_stamp(
        o: Origin,
        ctx: u64,
        tstate: u64,
        entered: bool,
        fd: i32,
        write: StampedWrite,
    ) -> Self {
        let (conn_id, tls) = match write {
            StampedWrite::Socket { conn_id } => (conn_id, 0),
            StampedWrite::Tls { ssl } => (ssl, PY_STAMP_TLS),
        };
        let entered = if entered { PY_CTX_ENTERED } else { 0 };
        Self::raw(
            Kind::PyStamp,
            0,
            o,
            conn_id,
            fd,
            DIR_EGRESS,
            ctx,
            tstate as i64,
            entered | tls,
        )
    }

    /// Task `task` (own context `task_ctx`) was created in context `parent_ctx`; followed by
    /// `qualname_len` bytes of its coroutine's qualname ([`PyTaskRecord`]).
    #[must_use]
    #[inline(always)]
    pub const fn py_task(
        o: Origin,
        task: u64,
        task_ctx: u64,
        parent_ctx: u64,
        qualname_len: u32,
    ) -> Self {
        let mut h = Self::raw(
            Kind::PyTask,
            0,
            o,
            task,
            0,
            0,
            task_ctx,
            parent_ctx as i64,
            0,
        );
        h.len = qualname_len;
        h
    }

    /// `PyContext_CopyCurrent` made `new_ctx`, a copy of `copied_ctx`.
    #[must_use]
    #[inline(always)]
    pub const fn py_copy(o: Origin, new_ctx: u64, copied_ctx: u64, entered: bool) -> Self {
        let entered = if entered { PY_CTX_ENTERED } else { 0 };
        Self::raw(Kind::PyCopy, 0, o, new_ctx, 0, 0, copied_ctx, 0, entered)
    }

    fn origin(&self) -> Origin {
        Origin {
            ts_ns: self.ts_ns,
            tgid: self.tgid,
            tid: self.tid,
        }
    }
}

/// Size of the kernel's record for `n` payload bytes of a data kind.
const fn data_record_size(n: usize) -> usize {
    if n <= SMALL_CHUNK {
        size_of::<SmallData>()
    } else {
        size_of::<crate::LargeData>()
    }
}

impl Record<'_> {
    /// The record's kind.
    #[must_use]
    pub const fn kind(&self) -> Kind {
        match self {
            Self::Data(_) => Kind::Data,
            Self::DataLost(_) => Kind::DataLost,
            Self::Stdio(_) => Kind::Stdio,
            Self::TlsData(_) => Kind::TlsData,
            Self::TlsDataLost(_) => Kind::TlsDataLost,
            Self::TlsBind(_) => Kind::TlsBind,
            Self::Connect(_) => Kind::Connect,
            Self::Accept(_) => Kind::Accept,
            Self::Close(_) => Kind::Close,
            Self::Fork(_) => Kind::Fork,
            Self::Exit(_) => Kind::Exit,
            Self::Join(_) => Kind::Join,
            Self::PyStamp(_) => Kind::PyStamp,
            Self::PyTask(_) => Kind::PyTask,
            Self::PyCopy(_) => Kind::PyCopy,
        }
    }

    /// Who made the record, and when.
    #[must_use]
    pub const fn origin(&self) -> Origin {
        match self {
            Self::Data(r) => r.origin,
            Self::DataLost(r) => r.origin,
            Self::Stdio(r) => r.origin,
            Self::TlsData(r) => r.origin,
            Self::TlsDataLost(r) => r.origin,
            Self::TlsBind(r) => r.origin,
            Self::Connect(r) => r.origin,
            Self::Accept(r) => r.origin,
            Self::Close(r) => r.origin,
            Self::Fork(r) => r.origin,
            Self::Join(r) => r.origin,
            Self::Exit(r) => r.origin,
            Self::PyStamp(r) => r.origin,
            Self::PyTask(r) => r.origin,
            Self::PyCopy(r) => r.origin,
        }
    }

    /// The header and payload the kernel emits for this record (the address, for
    /// connect/accept, is separate: see [`Record::encode_into`]).
    #[must_use]
    pub fn header(&self) -> (EventHeader, &[u8]) {
        let chunk = |h: EventHeader, o: Origin, p: &[u8], last: bool| {
            h.chunk(o.ts_ns, p.len() as u32, last)
        };
        match *self {
            Self::Data(r) => (
                chunk(
                    EventHeader::data(
                        r.origin,
                        r.syscall,
                        r.conn_id,
                        r.fd,
                        r.dir,
                        r.pos,
                        r.syscall_bytes,
                    ),
                    r.origin,
                    r.payload,
                    r.last_chunk,
                ),
                r.payload,
            ),
            Self::DataLost(r) => (
                EventHeader::data_lost(r.origin, r.syscall, r.conn_id, r.fd, r.dir, r.pos, r.len),
                &[],
            ),
            Self::Stdio(r) => {
                let mut t = EventHeader::stdio(r.origin, r.syscall, r.fd, r.syscall_bytes);
                t.pos = r.offset;
                (chunk(t, r.origin, r.payload, r.last_chunk), r.payload)
            }
            Self::TlsData(r) => (
                chunk(
                    EventHeader::tls_data(r.origin, r.ssl, r.fd, r.dir, r.pos, r.call_bytes),
                    r.origin,
                    r.payload,
                    r.last_chunk,
                ),
                r.payload,
            ),
            Self::TlsDataLost(r) => (
                EventHeader::tls_data_lost(r.origin, r.ssl, r.fd, r.dir, r.pos, r.len),
                &[],
            ),
            Self::TlsBind(r) => (
                EventHeader::tls_bind(r.origin, r.ssl, r.conn_id, r.fd, r.role),
                &[],
            ),
            Self::Connect(r) => (
                EventHeader::connect(r.origin, r.conn_id.unwrap_or(0), r.fd, r.ret),
                &[],
            ),
            Self::Accept(r) => (
                EventHeader::accept(r.origin, r.conn_id, r.fd, r.listen_fd),
                &[],
            ),
            Self::Close(r) => (EventHeader::close(r.origin, r.conn_id, r.fd), &[]),
            Self::Fork(r) => (EventHeader::fork(r.origin, r.child), &[]),
            Self::Exit(r) => (EventHeader::exit(r.origin), &[]),
            Self::Join(r) => (EventHeader::join(r.origin, r.cgroup), &[]),
            Self::PyStamp(r) => (
                EventHeader::py_stamp(r.origin, r.ctx, r.tstate, r.entered, r.fd, r.write),
                &[],
            ),
            Self::PyTask(r) => (
                EventHeader::py_task(
                    r.origin,
                    r.task,
                    r.task_ctx,
                    r.parent_ctx,
                    r.qualname.len() as u32,
                ),
                r.qualname,
            ),
            Self::PyCopy(r) => (
                EventHeader::py_copy(r.origin, r.new_ctx, r.copied_ctx, r.entered),
                &[],
            ),
        }
    }

    /// Payload bytes this kind's kernel record can carry.
    const fn capacity(&self) -> usize {
        match self {
            Self::Data(_) | Self::Stdio(_) | Self::TlsData(_) => LARGE_CHUNK,
            Self::PyTask(_) => PY_QUALNAME,
            _ => 0,
        }
    }

    /// Bytes of the kernel's record: the reserved struct ([`SmallData`], `LargeData`,
    /// [`PyTaskRecord`] or [`ConnEvent`]), payload padded with zeros.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Data(Data { payload, .. })
            | Self::Stdio(Stdio { payload, .. })
            | Self::TlsData(TlsData { payload, .. }) => data_record_size(payload.len()),
            Self::PyTask(_) => size_of::<PyTaskRecord>(),
            _ => size_of::<ConnEvent>(),
        }
    }

    /// Writes the exact bytes the kernel puts in the ring buffer for this record into the
    /// start of `out` (zeros where the kernel leaves reserved bytes unwritten); returns how
    /// many ([`Record::encoded_len`]).
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (h, payload) = self.header();
        let max = self.capacity();
        if payload.len() > max {
            return Err(EncodeError::PayloadTooLong {
                len: payload.len(),
                max,
            });
        }
        let need = self.encoded_len();
        let Some(out) = out.get_mut(..need) else {
            return Err(EncodeError::BufferTooSmall {
                have: out.len(),
                need,
            });
        };
        out.fill(0);
        out[..64].copy_from_slice(&h.to_bytes());
        out[64..64 + payload.len()].copy_from_slice(payload);
        match self {
            Self::Connect(Connect { addr, .. }) | Self::Accept(Accept { addr, .. }) => {
                out[64..88].copy_from_slice(&addr.to_bytes());
            }
            _ => {}
        }
        Ok(need)
    }

    /// [`Record::encode_into`] a new buffer.
    #[cfg(any(test, feature = "alloc"))]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, EncodeError> {
        let mut v = alloc::vec![0u8; self.encoded_len()];
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

fn need(b: &[u8], need: usize) -> Result<(), DecodeError> {
    if b.len() < need {
        Err(DecodeError::Short {
            have: b.len(),
            need,
        })
    } else {
        Ok(())
    }
}

fn dir_of(h: &EventHeader) -> Result<Direction, DecodeError> {
    Direction::from_raw(h.dir).ok_or(DecodeError::BadValue {
        field: "dir",
        value: h.dir,
    })
}

/// Decodes one ring-buffer record. Never trusts a length from the buffer: a record shorter
/// than its header, its declared payload or its address is [`DecodeError::Short`].
pub fn decode(b: &[u8]) -> Result<Record<'_>, DecodeError> {
    let h = EventHeader::from_bytes(b)?;
    let kind = Kind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let o = h.origin();
    // A payload longer than the kernel's record of that kind can carry is never written: it
    // is a corrupt length, not data (and could not be encoded back).
    let payload = |max: usize| -> Result<&[u8], DecodeError> {
        if h.len as usize > max {
            return Err(DecodeError::BadValue {
                field: "len",
                value: h.len,
            });
        }
        let end = 64usize.saturating_add(h.len as usize);
        need(b, end)?;
        Ok(&b[64..end])
    };
    let last_chunk = h.flags & FLAG_LAST_CHUNK != 0;
    Ok(match kind {
        Kind::Data => Record::Data(Data {
            origin: o,
            syscall: h.syscall,
            conn_id: h.conn_id,
            fd: h.fd,
            dir: dir_of(&h)?,
            pos: h.pos,
            syscall_bytes: h.total as u64,
            last_chunk,
            payload: payload(LARGE_CHUNK)?,
        }),
        Kind::DataLost => Record::DataLost(DataLost {
            origin: o,
            syscall: h.syscall,
            conn_id: h.conn_id,
            fd: h.fd,
            dir: dir_of(&h)?,
            pos: h.pos,
            len: h.total as u64,
        }),
        Kind::Stdio => Record::Stdio(Stdio {
            origin: o,
            syscall: h.syscall,
            fd: h.fd,
            offset: h.pos,
            syscall_bytes: h.total as u64,
            last_chunk,
            payload: payload(LARGE_CHUNK)?,
        }),
        Kind::TlsData => Record::TlsData(TlsData {
            origin: o,
            ssl: h.conn_id,
            fd: h.fd,
            dir: dir_of(&h)?,
            pos: h.pos,
            call_bytes: h.total as u64,
            last_chunk,
            payload: payload(LARGE_CHUNK)?,
        }),
        Kind::TlsDataLost => Record::TlsDataLost(TlsDataLost {
            origin: o,
            ssl: h.conn_id,
            fd: h.fd,
            dir: dir_of(&h)?,
            pos: h.pos,
            len: h.total as u64,
        }),
        Kind::TlsBind => Record::TlsBind(TlsBind {
            origin: o,
            ssl: h.pos,
            conn_id: h.conn_id,
            fd: h.fd,
            role: Role::from_raw(h.dir).ok_or(DecodeError::BadValue {
                field: "role",
                value: h.dir,
            })?,
        }),
        Kind::Connect | Kind::Accept => {
            need(b, size_of::<ConnEvent>())?;
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&b[72..88]);
            let addr = SockAddr {
                family: u16::from_ne_bytes([b[64], b[65]]),
                port: u16::from_ne_bytes([b[66], b[67]]),
                _pad: u32::from_ne_bytes([b[68], b[69], b[70], b[71]]),
                addr,
            };
            if kind == Kind::Connect {
                Record::Connect(Connect {
                    origin: o,
                    conn_id: (h.conn_id != 0).then_some(h.conn_id),
                    fd: h.fd,
                    ret: h.total,
                    addr,
                })
            } else {
                Record::Accept(Accept {
                    origin: o,
                    conn_id: h.conn_id,
                    fd: h.fd,
                    listen_fd: h.pos as u32 as i32,
                    addr,
                })
            }
        }
        Kind::Close => Record::Close(Close {
            origin: o,
            conn_id: h.conn_id,
            fd: h.fd,
        }),
        Kind::Fork => Record::Fork(Fork {
            origin: o,
            child: h.conn_id as u32,
        }),
        Kind::Exit => Record::Exit(Exit { origin: o }),
        Kind::Join => Record::Join(Join {
            origin: o,
            cgroup: h.conn_id,
        }),
        Kind::PyStamp => Record::PyStamp(PyStamp {
            origin: o,
            ctx: h.pos,
            tstate: h.total as u64,
            entered: h.flags & PY_CTX_ENTERED != 0,
            fd: h.fd,
            write: if h.flags & PY_STAMP_TLS != 0 {
                StampedWrite::Tls { ssl: h.conn_id }
            } else {
                StampedWrite::Socket { conn_id: h.conn_id }
            },
        }),
        Kind::PyTask => Record::PyTask(PyTask {
            origin: o,
            task: h.conn_id,
            task_ctx: h.pos,
            parent_ctx: h.total as u64,
            qualname: payload(PY_QUALNAME)?,
        }),
        Kind::PyCopy => Record::PyCopy(PyCopy {
            origin: o,
            new_ctx: h.conn_id,
            copied_ctx: h.pos,
            entered: h.flags & PY_CTX_ENTERED != 0,
        }),
    })
}

#[cfg(test)]
mod tests;
