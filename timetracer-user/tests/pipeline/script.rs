//! A scripted traced process: each call is what the app did (accept, read, write, SSL call,
//! task creation, ...) and appends the ring-buffer records the kernel programs emit for it,
//! encoded with `timetracer_common::Record::encode` exactly as they reach the agent.
//!
//! What is emulated from `timetracer-ebpf`: connection ids (here small numbers, in order),
//! per-connection and per-`SSL*` stream positions, the chunking of one syscall into records of
//! at most `LARGE_CHUNK` bytes (each stamped with its own time, the last one flagged), the
//! per-syscall capture cap with its loss record (socket data: `DataLost`, TLS plaintext:
//! `TlsDataLost`), `TlsData` records whose `fd` is -1 until the `SSL*` is tied, and the
//! `PyStamp` that precedes a socket write of a followed CPython process.
use std::collections::HashMap;
use std::net::SocketAddr;

use timetracer_common::{
    Accept, Close, Connect, Data, DataLost, Direction, Exit, Fork, LARGE_CHUNK, Origin, PyCopy,
    PyStamp, PyTask, Record, Role, SockAddr, StampedWrite, TlsBind, TlsData, TlsDataLost, sys,
};

/// Monotonic time of the first record (ns).
pub(crate) const T0: u64 = 1_000_000_000_000;

/// A thread of a traced process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thread {
    pub pid: u32,
    pub tid: u32,
}

/// A traced socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sock {
    pub fd: i32,
    pub conn_id: u64,
}

/// An `SSL*` of a process (`fd`: the socket it is tied to, -1 until then).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ssl {
    pub ptr: u64,
    pub fd: i32,
}

/// One ring-buffer record, and the kernel's `cap_reached` drop counter (events, bytes) when it
/// was emitted.
pub(crate) struct Emitted {
    pub bytes: Vec<u8>,
    pub cap_reached: (u64, u64),
}

/// The kernel side of a scripted run.
pub(crate) struct Script {
    now: u64,
    next_conn: u64,
    /// Next byte position per (connection id, egress).
    pos: HashMap<(u64, bool), u64>,
    /// Next plaintext position per (tgid, `SSL*`, egress).
    tls_pos: HashMap<(u32, u64, bool), u64>,
    /// `Config::max_bytes_per_syscall`.
    cap: u64,
    /// Python processes (stamped writes): pid → (tid → (context, thread state)).
    py: HashMap<u32, HashMap<u32, (u64, u64)>>,
    /// The kernel's `cap_reached` counter (events, bytes).
    cap_reached: (u64, u64),
    out: Vec<Emitted>,
}

fn sockaddr(a: SocketAddr) -> SockAddr {
    let mut out = SockAddr {
        port: a.port(),
        ..SockAddr::default()
    };
    match a {
        SocketAddr::V4(v4) => {
            out.family = 2;
            out.addr[..4].copy_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.family = 10;
            out.addr = v6.ip().octets();
        }
    }
    out
}

impl Script {
    pub(crate) fn new() -> Self {
        Self {
            now: T0,
            next_conn: 1,
            pos: HashMap::new(),
            tls_pos: HashMap::new(),
            cap: 1 << 20,
            py: HashMap::new(),
            cap_reached: (0, 0),
            out: Vec::new(),
        }
    }

    /// The kernel copies at most `cap` bytes of one syscall (`--max-body` + 64 KiB).
    pub(crate) fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    /// Lets `ms` milliseconds pass.
    pub(crate) fn wait_ms(&mut self, ms: u64) {
        self.now += ms * 1_000_000;
    }

    /// Records are one microsecond apart.
    fn origin(&mut self, t: Thread) -> Origin {
        self.now += 1_000;
        Origin {
            ts_ns: self.now,
            tgid: t.pid,
            tid: t.tid,
        }
    }

    fn emit(&mut self, r: Record<'_>) {
        self.out.push(Emitted {
            bytes: r.encode().expect("the kernel can emit it"),
            cap_reached: self.cap_reached,
        });
    }

    /// The encoded records, in ring order.
    pub(crate) fn records(self) -> Vec<Emitted> {
        self.out
    }

    /// `accept` returned `fd`, a connection from `peer`.
    pub(crate) fn accept(&mut self, t: Thread, fd: i32, peer: SocketAddr) -> Sock {
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let origin = self.origin(t);
        self.emit(Record::Accept(Accept {
            origin,
            conn_id,
            fd,
            listen_fd: 3,
            addr: sockaddr(peer),
        }));
        Sock { fd, conn_id }
    }

    /// `connect(fd, dest)` returned 0 (or `-EINPROGRESS` when `nonblocking`).
    pub(crate) fn connect(
        &mut self,
        t: Thread,
        fd: i32,
        dest: SocketAddr,
        nonblocking: bool,
    ) -> Sock {
        let conn_id = self.next_conn;
        self.next_conn += 1;
        let origin = self.origin(t);
        self.emit(Record::Connect(Connect {
            origin,
            conn_id: Some(conn_id),
            fd,
            ret: if nonblocking { -115 } else { 0 },
            addr: sockaddr(dest),
        }));
        Sock { fd, conn_id }
    }

    /// `connect(fd, dest)` failed with `ECONNREFUSED` (the socket is not tracked).
    pub(crate) fn connect_refused(&mut self, t: Thread, fd: i32, dest: SocketAddr) {
        let origin = self.origin(t);
        self.emit(Record::Connect(Connect {
            origin,
            conn_id: None,
            fd,
            ret: -111,
            addr: sockaddr(dest),
        }));
    }

    /// One `recvfrom` that returned `bytes`.
    pub(crate) fn read(&mut self, t: Thread, s: Sock, bytes: &[u8]) {
        self.socket_io(t, s, false, sys::RECVFROM, bytes);
    }

    /// One `sendto` that sent `bytes` (stamped first in a followed Python process).
    pub(crate) fn write(&mut self, t: Thread, s: Sock, bytes: &[u8]) {
        self.stamp(t, StampedWrite::Socket { conn_id: s.conn_id }, s.fd);
        self.socket_io(t, s, true, sys::SENDTO, bytes);
    }

    /// A socket write of a server connection: stamped like any write (its writer is the
    /// request's root task, issue #18).
    pub(crate) fn respond(&mut self, t: Thread, s: Sock, bytes: &[u8]) {
        self.write(t, s, bytes);
    }

    fn socket_io(&mut self, t: Thread, s: Sock, egress: bool, syscall: u32, bytes: &[u8]) {
        let p = self.pos.entry((s.conn_id, egress)).or_insert(0);
        let pos = *p;
        *p += bytes.len() as u64;
        let template = self.origin(t);
        let (conn_id, fd, dir) = (s.conn_id, s.fd, Direction::of_egress(egress));
        let lost = self.chunks(t, bytes, |origin, at, payload, last| {
            Record::Data(Data {
                origin,
                syscall,
                conn_id,
                fd,
                dir,
                pos: pos + at,
                syscall_bytes: bytes.len() as u64,
                last_chunk: last,
                payload,
            })
        });
        if let Some((at, len)) = lost {
            self.emit(Record::DataLost(DataLost {
                origin: template,
                syscall,
                conn_id,
                fd,
                dir,
                pos: pos + at,
                len,
            }));
        }
    }

    /// Emits the chunks of one syscall's `bytes` (at most `cap` of them) built by `rec`
    /// (origin, offset in the syscall, payload, last chunk); returns the lost range
    /// (offset, length) beyond the cap.
    fn chunks<'b>(
        &mut self,
        t: Thread,
        bytes: &'b [u8],
        rec: impl Fn(Origin, u64, &'b [u8], bool) -> Record<'b>,
    ) -> Option<(u64, u64)> {
        let copied = bytes.len().min(usize::try_from(self.cap).unwrap());
        let mut at = 0;
        while at < copied {
            let n = (copied - at).min(LARGE_CHUNK);
            let origin = self.origin(t);
            let r = rec(origin, at as u64, &bytes[at..at + n], at + n == copied);
            self.emit(r);
            at += n;
        }
        let lost = (bytes.len() - copied) as u64;
        if lost == 0 {
            return None;
        }
        self.cap_reached.0 += 1;
        self.cap_reached.1 += lost;
        Some((copied as u64, lost))
    }

    /// `close(fd)` of a traced socket.
    pub(crate) fn close(&mut self, t: Thread, s: Sock) {
        let origin = self.origin(t);
        self.emit(Record::Close(Close {
            origin,
            conn_id: s.conn_id,
            fd: s.fd,
        }));
    }

    /// The process forked `child`.
    pub(crate) fn fork(&mut self, t: Thread, child: u32) {
        let origin = self.origin(t);
        self.emit(Record::Fork(Fork { origin, child }));
    }

    /// The process exited (the kernel closes its sockets without close records).
    pub(crate) fn exit(&mut self, pid: u32) {
        let origin = self.origin(Thread { pid, tid: pid });
        self.emit(Record::Exit(Exit { origin }));
    }

    /// The kernel tied `ssl` to socket `s` (role `role`); from now on the socket's ciphertext
    /// is not copied.
    pub(crate) fn tls_bind(&mut self, t: Thread, ssl: &mut Ssl, s: Sock, role: Role) {
        ssl.fd = s.fd;
        let origin = self.origin(t);
        self.emit(Record::TlsBind(TlsBind {
            origin,
            ssl: ssl.ptr,
            conn_id: s.conn_id,
            fd: s.fd,
            role,
        }));
    }

    /// `SSL_read` returned `bytes` of plaintext.
    pub(crate) fn ssl_read(&mut self, t: Thread, ssl: Ssl, bytes: &[u8]) {
        self.ssl_io(t, ssl, false, bytes);
    }

    /// `SSL_write` accepted `bytes` of plaintext (stamped first in a followed Python process).
    pub(crate) fn ssl_write(&mut self, t: Thread, ssl: Ssl, bytes: &[u8]) {
        self.stamp(t, StampedWrite::Tls { ssl: ssl.ptr }, ssl.fd);
        self.ssl_io(t, ssl, true, bytes);
    }

    fn ssl_io(&mut self, t: Thread, ssl: Ssl, egress: bool, bytes: &[u8]) {
        let p = self.tls_pos.entry((t.pid, ssl.ptr, egress)).or_insert(0);
        let pos = *p;
        *p += bytes.len() as u64;
        let template = self.origin(t);
        let dir = Direction::of_egress(egress);
        let lost = self.chunks(t, bytes, |origin, at, payload, last| {
            Record::TlsData(TlsData {
                origin,
                ssl: ssl.ptr,
                fd: ssl.fd,
                dir,
                pos: pos + at,
                call_bytes: bytes.len() as u64,
                last_chunk: last,
                payload,
            })
        });
        if let Some((at, len)) = lost {
            self.emit(Record::TlsDataLost(TlsDataLost {
                origin: template,
                ssl: ssl.ptr,
                fd: ssl.fd,
                dir,
                pos: pos + at,
                len,
            }));
        }
    }

    /// Follows the contexts of CPython process `pid` (its runtime was discovered): its
    /// outbound writes are stamped from now on.
    pub(crate) fn follow_python(&mut self, pid: u32) {
        self.py.entry(pid).or_default();
    }

    /// Thread `t` now runs in context `ctx` (`PyThreadState*` `tstate`).
    pub(crate) fn enter_context(&mut self, t: Thread, ctx: u64, tstate: u64) {
        self.py
            .get_mut(&t.pid)
            .expect("a followed process")
            .insert(t.tid, (ctx, tstate));
    }

    fn stamp(&mut self, t: Thread, write: StampedWrite, fd: i32) {
        let Some(threads) = self.py.get(&t.pid) else {
            return;
        };
        let (ctx, tstate) = threads.get(&t.tid).copied().unwrap_or((0, 0));
        let origin = self.origin(t);
        self.emit(Record::PyStamp(PyStamp {
            origin,
            ctx,
            tstate,
            entered: ctx != 0,
            fd,
            write,
        }));
    }

    /// `asyncio.Task(coro)` returned: task `task` with its own context `task_ctx`, created
    /// while the thread ran in its current context.
    pub(crate) fn task(&mut self, t: Thread, task: u64, task_ctx: u64, qualname: &str) {
        let parent_ctx = self.py[&t.pid].get(&t.tid).map_or(0, |c| c.0);
        let origin = self.origin(t);
        self.emit(Record::PyTask(PyTask {
            origin,
            task,
            task_ctx,
            parent_ctx,
            qualname: qualname.as_bytes(),
        }));
    }

    /// `PyContext_CopyCurrent` returned `new_ctx`, a copy of the thread's current context.
    pub(crate) fn copy_context(&mut self, t: Thread, new_ctx: u64) {
        let copied_ctx = self.py[&t.pid].get(&t.tid).map_or(0, |c| c.0);
        let origin = self.origin(t);
        self.emit(Record::PyCopy(PyCopy {
            origin,
            new_ctx,
            copied_ctx,
            entered: copied_ctx != 0,
        }));
    }
}
