//! The connection layer: kernel records → per-connection facts and protocol events.
//!
//! [`ConnTable`] takes the records about sockets and TLS (data, losses, accept/connect, close,
//! `SSL*` binds, process exits) in ring order and keeps one [`Conn`] per connection: its facts
//! ([`ConnFacts`]: process, addresses, TLS and server name), one [`reassembly::Stream`] per
//! direction, and, once the first bytes of both directions tell which protocol it speaks (the
//! port is never used), that protocol's parser from the registry (`protocols`).
//!
//! TLS: an `SSL*`'s plaintext arrives in `TlsData` records keyed by the `SSL*`; the kernel's bind
//! record ties it to a socket, whose streams then become the plaintext (the server name is read
//! from the ClientHello seen so far, ciphertext still in flight is counted and dropped).
//! Plaintext seen before the bind waits (per `SSL*`) and joins the connection at the bind.
//!
//! What it reports ([`Output`]), in order: reads of server connections at the moment their
//! record is handled (the asyncio engine needs them in ring order), closes, and each parser
//! event with its connection's facts ([`Event`]). Attribution (`correlate`) consumes them; this
//! layer knows nothing of requests.
//!
//! [`reassembly::Stream`]: crate::reassembly::Stream
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use bytes::Bytes;
use timetracer_common::{Origin, Record, Role, SockAddr, TlsBind};

use crate::{
    capture::procfs::ProcFacts,
    correlate::model::ConnFacts,
    protocols::{Detection, Limits, Parser, ProtoEvent, db::DbEvent, http::types::Side},
    reassembly::{Chunk, DEFAULT_LIMIT, Segment, Stream},
    redact::RedactionPolicy,
    telemetry::{Counter, Counters},
};

/// Tunables of the connection layer.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// Bytes of each body the parsers keep.
    pub max_body: usize,
    /// How long a hole in a stream may stay open before it is declared a gap.
    pub gap_timeout_ns: u64,
    /// The user's redaction policy: each protocol's hook ([`crate::protocols::Spec::redact`])
    /// applies it to every event before the event leaves this layer.
    pub redaction: RedactionPolicy,
}

/// A parser event of one connection, with the connection's facts.
#[derive(Debug)]
pub struct Event {
    pub facts: ConnFacts,
    pub side: Side,
    /// When the connect/accept returned (0: open before tracing).
    pub connect_ns: u64,
    pub event: ProtoEvent,
}

/// What the connection layer reports, in order.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived, moved once per parsed message"
)]
pub enum Output {
    /// A thread read bytes of a server connection (reported when the record is handled:
    /// ring order).
    ServerRead { origin: Origin, conn_id: u64 },
    /// Connection `conn_id` ended at `ts_ns` (its last events follow).
    Closed { conn_id: u64, ts_ns: u64 },
    /// A parser event.
    Event(Event),
    /// A client `connect` to `remote` failed at once with `errno` (refused, unreachable,
    /// timed out): a dependency call that never got a connection. A non-blocking connect
    /// that fails later (`EINPROGRESS`, then `SO_ERROR`) is not seen here.
    ConnectFailed {
        origin: Origin,
        fd: i32,
        remote: SocketAddr,
        errno: i32,
    },
}

/// Every connection being tracked.
pub struct ConnTable {
    opts: ConnOptions,
    conns: HashMap<u64, Conn>,
    /// (tgid, `SSL*`) → connection id, from the kernel's bind records.
    ssl_conns: HashMap<(u32, u64), u64>,
    /// TLS plaintext of an `SSL*` not tied to a socket yet, per (tgid, `SSL*`).
    pending_tls: HashMap<(u32, u64), Vec<(bool, Chunk)>>,
    /// Listening addresses learnt from accepted connections: per process, and every one seen.
    /// An accepted socket closed before /proc was read (a fast request of a sync worker) has
    /// the address its process accepted on before, or the recording's only one: replay needs
    /// it to know the app's port.
    server_locals: HashMap<u32, SocketAddr>,
    all_server_locals: Vec<SocketAddr>,
    counters: Counters,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

enum Proto {
    /// Not decided yet; holds the first bytes seen per direction.
    Unknown,
    /// The registry's parser for the protocol its detection found.
    Known(Box<dyn Parser>),
    /// No registered protocol: further bytes are counted and dropped.
    Other,
}

struct Conn {
    facts: ConnFacts,
    /// The `SSL*` once the connection is known to carry TLS: its streams are then plaintext.
    ssl: Option<u64>,
    side: Side,
    streams: [Stream; 2],
    proto: Proto,
    /// Segments held until the protocol is known.
    held: Vec<(bool, Segment)>,
    held_bytes: [Vec<u8>; 2],
    connect_ns: u64,
}

impl ConnTable {
    #[must_use]
    pub fn new(opts: ConnOptions, counters: Counters) -> Self {
        Self {
            opts,
            conns: HashMap::new(),
            ssl_conns: HashMap::new(),
            pending_tls: HashMap::new(),
            server_locals: HashMap::new(),
            all_server_locals: Vec::new(),
            counters,
        }
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
        let facts = ConnFacts {
            pid: tgid,
            fd,
            conn_id,
            local: Some(local),
            remote: Some(remote),
            preexisting: true,
            ..ConnFacts::default()
        };
        self.conns.insert(
            conn_id,
            Conn::new(
                facts,
                if server { Side::Server } else { Side::Client },
                0,
                false,
            ),
        );
    }

    /// Handles one record about sockets or TLS (others are not this layer's); `facts`
    /// answers a new connection's local address.
    pub fn handle(&mut self, rec: &Record<'_>, facts: &dyn ProcFacts, out: &mut Vec<Output>) {
        match *rec {
            Record::Data(d) => {
                self.counters.add(Counter::Bytes, d.payload.len() as u64);
                if self.conns.get(&d.conn_id).is_some_and(|c| c.ssl.is_some()) {
                    // Ciphertext that was already in flight when the connection became TLS.
                    self.counters
                        .add(Counter::TlsCiphertextIgnored, d.payload.len() as u64);
                    return;
                }
                let Some(c) = self.conns.get_mut(&d.conn_id) else {
                    // A socket the kernel tracks but whose accept/connect record we lost.
                    tracing::debug!(
                        conn_id = d.conn_id,
                        fd = d.fd,
                        pid = d.origin.tgid,
                        "Data for an unknown connection"
                    );
                    self.counters.inc(Counter::DataUnknownConn);
                    return;
                };
                let egress = d.dir.is_egress();
                if c.side == Side::Server && !egress {
                    out.push(Output::ServerRead {
                        origin: d.origin,
                        conn_id: d.conn_id,
                    });
                }
                c.streams[usize::from(egress)].push(chunk(d.origin, d.pos, d.payload));
            }
            Record::DataLost(l) => {
                if l.syscall == timetracer_common::sys::SENDFILE {
                    self.counters.add(Counter::SendfileBytes, l.len);
                }
                if let Some(c) = self.conns.get_mut(&l.conn_id) {
                    c.streams[usize::from(l.dir.is_egress())].lost(l.pos, l.len);
                }
            }
            Record::TlsData(d) => {
                self.counters.add(Counter::Bytes, d.payload.len() as u64);
                let key = (d.origin.tgid, d.ssl);
                let egress = d.dir.is_egress();
                if !egress
                    && let Some(id) = self.ssl_conns.get(&key)
                    && self.conns.get(id).is_some_and(|c| c.side == Side::Server)
                {
                    // A request read through TLS: the server read the asyncio engine needs.
                    out.push(Output::ServerRead {
                        origin: d.origin,
                        conn_id: *id,
                    });
                }
                let chunk = chunk(d.origin, d.pos, d.payload);
                match self
                    .ssl_conns
                    .get(&key)
                    .and_then(|id| self.conns.get_mut(id))
                {
                    Some(c) => c.streams[usize::from(egress)].push(chunk),
                    None => {
                        let pending = self.pending_tls.entry(key).or_default();
                        if pending.len() < 4096 {
                            pending.push((egress, chunk));
                        } else {
                            self.counters
                                .add(Counter::TlsUnboundBytesDropped, d.payload.len() as u64);
                        }
                    }
                }
            }
            Record::TlsDataLost(l) => {
                // Plaintext beyond the per-call cap: a gap at once in a tied connection (an
                // untied `SSL*`'s hole becomes a gap after the gap timeout).
                if let Some(c) = self
                    .ssl_conns
                    .get(&(l.origin.tgid, l.ssl))
                    .and_then(|id| self.conns.get_mut(id))
                {
                    c.streams[usize::from(l.dir.is_egress())].lost(l.pos, l.len);
                }
            }
            Record::TlsBind(b) => self.on_tls_bind(&b),
            Record::Accept(a) => {
                self.on_open(a.origin, a.conn_id, a.fd, Some(a.listen_fd), &a.addr, facts);
            }
            Record::Connect(c) => match c.conn_id {
                Some(id) => self.on_open(c.origin, id, c.fd, None, &c.addr, facts),
                None => {
                    self.counters.inc(Counter::ConnectFailed);
                    // A Unix-socket or unknown-family destination has no address a replay
                    // could refuse: counted only.
                    if let Some(remote) = crate::capture::to_socket_addr(&c.addr)
                        && c.ret < 0
                    {
                        out.push(Output::ConnectFailed {
                            origin: c.origin,
                            fd: c.fd,
                            remote,
                            errno: i32::try_from(-c.ret).unwrap_or(i32::MAX),
                        });
                    }
                }
            },
            Record::Close(c) => self.close(c.conn_id, c.origin.ts_ns, out),
            Record::Exit(e) => self.exit(e.origin, out),
            // Not about connections: stdout/stderr, processes, Python contexts.
            Record::Stdio(_)
            | Record::Fork(_)
            | Record::Join(_)
            | Record::PyStamp(_)
            | Record::PyTask(_)
            | Record::PyCopy(_) => {}
        }
    }

    /// The process accepted on `listen` (`Server`) or connected (`Client`, `listen` None)
    /// socket `fd`, connection `conn_id`, with peer `addr`.
    fn on_open(
        &mut self,
        o: Origin,
        conn_id: u64,
        fd: i32,
        listen: Option<i32>,
        addr: &SockAddr,
        facts: &dyn ProcFacts,
    ) {
        let side = if listen.is_some() {
            Side::Server
        } else {
            Side::Client
        };
        let remote = crate::capture::to_socket_addr(addr);
        // /proc is read after the fact: a short-lived connection may be closed by then and
        // its fd reused by another socket, so its answer counts only when it is provably this
        // connection's: its peer is the one the kernel reported or, when the kernel reported
        // none (uvloop accepts with a NULL address), its local port is the listening socket's.
        // Failing that, an accepted connection's local address is its listening socket's bound
        // address, unless that is a wildcard (the local IP would be a guess).
        let listening = listen
            .and_then(|l| facts.socket_addrs(o.tgid, l))
            .filter(|(_, r)| r.port() == 0 && r.ip().is_unspecified())
            .map(|(l, _)| l);
        let same_ip = |a: SocketAddr, b: SocketAddr| a.ip().to_canonical() == b.ip().to_canonical();
        let mut local = facts
            .socket_addrs(o.tgid, fd)
            .filter(|&(l, r)| match (remote, listening) {
                (Some(p), _) => p.port() == r.port() && same_ip(p, r),
                (None, Some(b)) => {
                    l.port() == b.port() && (b.ip().is_unspecified() || same_ip(l, b))
                }
                (None, None) => side == Side::Client,
            })
            .map(|(l, _)| l)
            .or_else(|| listening.filter(|l| !l.ip().is_unspecified()));
        if side == Side::Server {
            match local {
                Some(l) => {
                    self.server_locals.insert(o.tgid, l);
                    if !self.all_server_locals.contains(&l) && self.all_server_locals.len() < 64 {
                        self.all_server_locals.push(l);
                    }
                }
                None => {
                    // Closed before /proc was read, on a wildcard (or unknown) listening
                    // socket: the address this process's earlier connections had on that
                    // port, or the recording's only server address.
                    let port_ok = |l: &SocketAddr| listening.is_none_or(|b| b.port() == l.port());
                    local =
                        self.server_locals.get(&o.tgid).copied().filter(port_ok).or(
                            match self.all_server_locals.as_slice() {
                                [only] if port_ok(only) => Some(*only),
                                _ => None,
                            },
                        );
                }
            }
        }
        if local.is_none() {
            self.counters.inc(Counter::LocalAddrUnknown);
        }
        let facts = ConnFacts {
            pid: o.tgid,
            fd,
            conn_id,
            local,
            remote,
            ..ConnFacts::default()
        };
        tracing::debug!(
            conn_id,
            pid = o.tgid,
            fd,
            ?remote,
            ?side,
            "Connection opened"
        );
        match side {
            Side::Server => self.counters.inc(Counter::Accepted),
            Side::Client => self.counters.inc(Counter::Connected),
        }
        self.conns
            .insert(conn_id, Conn::new(facts, side, o.ts_ns, true));
    }

    /// Process `o.tgid` exited: the kernel closed its sockets (no close records come for
    /// them), so its connections end now.
    fn exit(&mut self, o: Origin, out: &mut Vec<Output>) {
        self.server_locals.remove(&o.tgid);
        let mut ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.facts.pid == o.tgid)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, o.ts_ns, out);
        }
    }

    /// The kernel tied an `SSL*` to a socket: the connection's streams become the plaintext.
    fn on_tls_bind(&mut self, b: &TlsBind) {
        let (tgid, conn_id, ssl) = (b.origin.tgid, b.conn_id, b.ssl);
        self.ssl_conns.insert((tgid, ssl), conn_id);
        let side = match b.role {
            Role::Server => Side::Server,
            Role::Client => Side::Client,
        };
        let c = self.conns.entry(conn_id).or_insert_with(|| {
            let facts = ConnFacts {
                pid: tgid,
                fd: b.fd,
                conn_id,
                ..ConnFacts::default()
            };
            Conn::new(facts, side, 0, false)
        });
        if c.ssl != Some(ssl) {
            c.switch_to_tls(ssl);
        }
        for (egress, chunk) in self.pending_tls.remove(&(tgid, ssl)).unwrap_or_default() {
            c.streams[usize::from(egress)].push(chunk);
        }
        self.counters.inc(Counter::TlsConnections);
    }

    /// Connection `conn_id` ended at `ts_ns`: what is left of both streams goes through the
    /// parser, which is then closed.
    fn close(&mut self, conn_id: u64, ts_ns: u64, out: &mut Vec<Output>) {
        let Some(mut c) = self.conns.remove(&conn_id) else {
            return;
        };
        if let Some(ssl) = c.ssl {
            self.ssl_conns.remove(&(c.facts.pid, ssl));
        }
        out.push(Output::Closed { conn_id, ts_ns });
        let mut events = Vec::new();
        // Both directions in time order (see `merge_by_time`).
        let (mut ing, mut eg) = (Vec::new(), Vec::new());
        c.streams[0].flush(&mut ing);
        c.streams[1].flush(&mut eg);
        for (egress, s) in merge_by_time(ing, eg) {
            c.feed(egress, s, &self.opts, &mut events, &self.counters);
        }
        c.release_held(&self.opts, &mut events, &self.counters);
        if let Proto::Known(p) = &mut c.proto {
            p.close(ts_ns, &mut events);
        }
        out.extend(events.into_iter().map(|e| c.event(e, &self.opts.redaction)));
    }

    /// Moves data through reassembly and parsing; call after each drain.
    pub fn pump(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        let mut events = Vec::new();
        for c in self.conns.values_mut() {
            // Both directions in time order (see `merge_by_time`): feeding all of a drain's
            // ingress before its egress handed the database parsers responses before the
            // requests they answer (PostgreSQL calls paired with the wrong response).
            let (mut ing, mut eg) = (Vec::new(), Vec::new());
            c.streams[0].pop_ready(now_ns, self.opts.gap_timeout_ns, &mut ing);
            c.streams[1].pop_ready(now_ns, self.opts.gap_timeout_ns, &mut eg);
            for (egress, s) in merge_by_time(ing, eg) {
                c.feed(egress, s, &self.opts, &mut events, &self.counters);
            }
            for e in events.drain(..) {
                out.push(c.event(e, &self.opts.redaction));
            }
        }
    }

    /// Ends every connection at `ts_ns` (tracing stops).
    pub fn close_all(&mut self, ts_ns: u64, out: &mut Vec<Output>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, ts_ns, out);
        }
    }

    /// Connection `conn_id` is being tracked.
    #[must_use]
    pub fn contains(&self, conn_id: u64) -> bool {
        self.conns.contains_key(&conn_id)
    }

    /// Some connection of process `pid` is being tracked.
    #[must_use]
    pub fn any_of(&self, pid: u32) -> bool {
        self.conns.values().any(|c| c.facts.pid == pid)
    }

    /// Number of connections being tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No connection is being tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// A positioned chunk of a stream, as reassembly takes it.
fn chunk(o: Origin, pos: u64, payload: &[u8]) -> Chunk {
    Chunk {
        pos,
        data: Bytes::copy_from_slice(payload),
        ts_ns: o.ts_ns,
        tid: o.tid,
    }
}

impl Conn {
    /// `e`, redacted by its protocol's hook, with this connection's facts. Every event
    /// leaves the layer through here: nothing unredacted reaches attribution, sinks or disk.
    fn event(&self, mut e: ProtoEvent, policy: &RedactionPolicy) -> Output {
        if let ProtoEvent::Db(DbEvent::Call(call)) = &e {
            let hook = call.protocol.spec().redact;
            hook.apply(&mut e, policy);
        }
        Output::Event(Event {
            facts: self.facts.clone(),
            side: self.side,
            connect_ns: self.connect_ns,
            event: e,
        })
    }

    /// `from_start`: the accept/connect was seen, so both streams begin at position 0;
    /// otherwise (open before tracing) at the first position observed.
    fn new(facts: ConnFacts, side: Side, connect_ns: u64, from_start: bool) -> Self {
        let stream = || {
            if from_start {
                Stream::starting_at(0, DEFAULT_LIMIT)
            } else {
                Stream::new()
            }
        };
        Self {
            facts,
            ssl: None,
            side,
            streams: [stream(), stream()],
            proto: Proto::Unknown,
            held: Vec::new(),
            held_bytes: [Vec::new(), Vec::new()],
            connect_ns,
        }
    }

    /// The connection carries TLS from now on: read the server name from the ClientHello seen
    /// so far, drop the ciphertext state, and start fresh plaintext streams (positions of an
    /// `SSL*`'s plaintext start at 0 when the kernel first sees it).
    fn switch_to_tls(&mut self, ssl: u64) {
        let mut first: [Vec<u8>; 2] = [
            std::mem::take(&mut self.held_bytes[0]),
            std::mem::take(&mut self.held_bytes[1]),
        ];
        let mut segs = Vec::new();
        for (dir, bytes) in first.iter_mut().enumerate() {
            self.streams[dir].flush(&mut segs);
            for s in segs.drain(..) {
                if let Segment::Data(c) = s
                    && bytes.len() < 4096
                {
                    bytes.extend_from_slice(&c.data[..c.data.len().min(4096 - bytes.len())]);
                }
            }
        }
        // The ClientHello travels client → server: egress on our client side, ingress on our
        // server side.
        let hello = if self.side == Side::Client {
            &first[1]
        } else {
            &first[0]
        };
        self.facts.server_name =
            crate::capture::tls::parse_sni(hello).or(self.facts.server_name.take());
        self.facts.tls = true;
        self.ssl = Some(ssl);
        self.proto = Proto::Unknown;
        self.held.clear();
        self.streams = [
            Stream::starting_at(0, DEFAULT_LIMIT),
            Stream::starting_at(0, DEFAULT_LIMIT),
        ];
    }

    /// Feeds one in-order segment of a direction to the protocol parser, deciding the protocol
    /// from the first bytes of both directions (the port is never used).
    fn feed(
        &mut self,
        egress: bool,
        seg: Segment,
        opts: &ConnOptions,
        out: &mut Vec<ProtoEvent>,
        counters: &Counters,
    ) {
        match &mut self.proto {
            Proto::Known(p) => p.feed(egress, seg, out),
            Proto::Other => {
                if let Segment::Data(c) = &seg {
                    counters.add(Counter::UnparsedBytes, c.data.len() as u64);
                }
            }
            Proto::Unknown => {
                if let Segment::Data(c) = &seg {
                    let hb = &mut self.held_bytes[usize::from(egress)];
                    if hb.len() < 4096 {
                        hb.extend_from_slice(&c.data[..c.data.len().min(4096 - hb.len())]);
                    }
                }
                self.held.push((egress, seg));
                if let Some(proto) = self.decide(opts) {
                    tracing::debug!(
                        conn_id = self.facts.conn_id,
                        pid = self.facts.pid,
                        remote = ?self.facts.remote,
                        side = ?self.side,
                        proto = match &proto {
                            Proto::Known(p) => p.protocol().name(),
                            Proto::Other | Proto::Unknown => "other",
                        },
                        "Connection protocol decided"
                    );
                    self.proto = proto;
                    self.release_held(opts, out, counters);
                }
            }
        }
    }

    /// Which protocol the first bytes seen so far show (the registry decides), or `None` to
    /// wait for more; after 4 KiB of a direction without a decision, none of ours.
    fn decide(&self, opts: &ConnOptions) -> Option<Proto> {
        let [ingress, egress] = &self.held_bytes;
        match crate::protocols::detect(egress, ingress, self.side) {
            Detection::Found(spec) => Some(Proto::Known((spec.parser)(self.side, &limits(opts)))),
            Detection::NoneOfOurs => Some(Proto::Other),
            Detection::NeedMore if egress.len() >= 4096 || ingress.len() >= 4096 => {
                Some(Proto::Other)
            }
            Detection::NeedMore => None,
        }
    }

    fn release_held(&mut self, opts: &ConnOptions, out: &mut Vec<ProtoEvent>, counters: &Counters) {
        if matches!(self.proto, Proto::Unknown) {
            // Closed before we could tell: try HTTP anyway, the parser skips what it can't use.
            self.proto = Proto::Known((crate::protocols::http::SPEC.parser)(
                self.side,
                &limits(opts),
            ));
        }
        for (egress, seg) in std::mem::take(&mut self.held) {
            self.feed(egress, seg, opts, out, counters);
        }
    }
}

/// The parsers' limits from the recording's options.
fn limits(opts: &ConnOptions) -> Limits {
    Limits {
        max_body: opts.max_body,
    }
}

/// Interleaves the ready segments of both directions of a connection by syscall time (ties:
/// egress first), keeping each direction's own order; a gap goes right after the segment
/// before it. Parsers see the conversation in the order it happened.
fn merge_by_time(ingress: Vec<Segment>, egress: Vec<Segment>) -> Vec<(bool, Segment)> {
    let keyed = |v: Vec<Segment>| -> VecDeque<(u64, Segment)> {
        let mut last = 0;
        v.into_iter()
            .map(|s| {
                if let Segment::Data(c) = &s {
                    last = last.max(c.ts_ns);
                }
                (last, s)
            })
            .collect()
    };
    let (mut i, mut e) = (keyed(ingress), keyed(egress));
    let mut out = Vec::with_capacity(i.len() + e.len());
    loop {
        let take_egress = match (i.front(), e.front()) {
            (None, None) => return out,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b.0 <= a.0,
        };
        let q = if take_egress { &mut e } else { &mut i };
        if let Some((_, s)) = q.pop_front() {
            out.push((take_egress, s));
        }
    }
}

#[cfg(test)]
mod tests;
