//! The connection layer on its own: records in, facts and protocol events out.
use timetracer_common::{Accept, Close, Connect, Data, Direction, Exit, TlsData, TlsDataLost, sys};

use super::*;
use crate::capture::procfs::FixedFacts;
use crate::protocols::http::types::{Exchange, HttpEvent};

fn o(ts_ns: u64, tgid: u32) -> Origin {
    Origin {
        ts_ns,
        tgid,
        tid: tgid + 1,
    }
}

fn table() -> ConnTable {
    ConnTable::new(
        ConnOptions {
            max_body: 1 << 20,
            gap_timeout_ns: 300_000_000,
            redaction: RedactionPolicy::default(),
        },
        Counters::default(),
    )
}

fn facts() -> FixedFacts {
    let mut f = FixedFacts::default();
    f.sockets.insert(
        (7, 5),
        (
            "127.0.0.1:8000".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        ),
    );
    f
}

fn accept(ts_ns: u64, tgid: u32, conn_id: u64, fd: i32) -> Record<'static> {
    let mut addr = SockAddr {
        family: 2,
        port: 40000,
        ..SockAddr::default()
    };
    addr.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    Record::Accept(Accept {
        origin: o(ts_ns, tgid),
        conn_id,
        fd,
        listen_fd: 3,
        addr,
    })
}

fn data(ts_ns: u64, conn_id: u64, egress: bool, pos: u64, payload: &[u8]) -> Record<'_> {
    Record::Data(Data {
        origin: o(ts_ns, 7),
        syscall: if egress { sys::SENDTO } else { sys::RECVFROM },
        conn_id,
        fd: 5,
        dir: Direction::of_egress(egress),
        pos,
        syscall_bytes: payload.len() as u64,
        last_chunk: true,
        payload,
    })
}

fn tls(ts_ns: u64, ssl: u64, fd: i32, egress: bool, pos: u64, payload: &[u8]) -> Record<'_> {
    Record::TlsData(TlsData {
        origin: o(ts_ns, 7),
        ssl,
        fd,
        dir: Direction::of_egress(egress),
        pos,
        call_bytes: payload.len() as u64,
        last_chunk: true,
        payload,
    })
}

fn bind(ts_ns: u64, ssl: u64, conn_id: u64, role: Role) -> Record<'static> {
    Record::TlsBind(TlsBind {
        origin: o(ts_ns, 7),
        ssl,
        conn_id,
        fd: 5,
        role,
    })
}

fn run(t: &mut ConnTable, recs: &[Record<'_>]) -> Vec<Output> {
    let mut out = Vec::new();
    for r in recs {
        t.handle(r, &facts(), &mut out);
    }
    out
}

fn exchanges(out: &[Output]) -> Vec<(&Event, &Exchange)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(
                e @ Event {
                    event: ProtoEvent::Http(HttpEvent::Exchange(x)),
                    ..
                },
            ) => Some((e, x)),
            _ => None,
        })
        .collect()
}

/// A TLS 1.2 ClientHello record naming `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let n = name.as_bytes();
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
    ext.extend_from_slice(n);
    let mut hello = vec![3, 3];
    hello.extend([0u8; 32]);
    hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend(hello);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

const REQ: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn an_exchange_with_its_connection_facts() {
    let mut t = table();
    let out = run(
        &mut t,
        &[
            accept(10, 7, 1, 5),
            data(20, 1, false, 0, REQ),
            data(30, 1, true, 0, RESP),
        ],
    );
    // The server read is reported when its record is handled, before any parsing.
    assert!(matches!(
        out[..],
        [Output::ServerRead {
            conn_id: 1,
            origin: Origin { ts_ns: 20, .. }
        }]
    ));
    let mut out = Vec::new();
    t.pump(1_000, &mut out);
    let x = exchanges(&out);
    assert_eq!(x.len(), 1);
    let (e, ex) = x[0];
    assert_eq!(e.side, Side::Server);
    assert_eq!(e.connect_ns, 10);
    assert_eq!(e.facts.local, Some("127.0.0.1:8000".parse().unwrap()));
    assert_eq!(e.facts.remote, Some("127.0.0.1:40000".parse().unwrap()));
    assert_eq!(ex.response.as_ref().map(|r| &r.body[..]), Some(&b"ok"[..]));
    assert_eq!(t.counters.get(Counter::Accepted), 1);
    assert_eq!(
        t.counters.get(Counter::Bytes),
        (REQ.len() + RESP.len()) as u64
    );
    // Close: reported, then what the parser still had.
    let mut out = Vec::new();
    t.handle(
        &Record::Close(Close {
            origin: o(40, 7),
            conn_id: 1,
            fd: 5,
        }),
        &facts(),
        &mut out,
    );
    assert!(matches!(
        out[0],
        Output::Closed {
            conn_id: 1,
            ts_ns: 40
        }
    ));
    assert!(t.is_empty());
}

/// A server connection: handshake ciphertext, then the bind, then plaintext. The server name
/// comes from the ClientHello; ciphertext that arrives after the bind is counted and dropped.
#[test]
fn tls_rebinding_switches_the_streams_to_plaintext() {
    let mut t = table();
    let hello = client_hello("shop.example");
    let ssl = 0x5000;
    let out = run(
        &mut t,
        &[
            accept(10, 7, 1, 5),
            data(20, 1, false, 0, &hello),
            data(30, 1, true, 0, &[22, 3, 3, 0, 2, 9, 9]),
            bind(40, ssl, 1, Role::Server),
            data(41, 1, false, hello.len() as u64, &[23, 3, 3, 0, 1, 7]),
            tls(50, ssl, 5, false, 0, REQ),
            tls(60, ssl, 5, true, 0, RESP),
        ],
    );
    let reads: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::ServerRead { origin, .. } => Some(origin.ts_ns),
            _ => None,
        })
        .collect();
    assert_eq!(
        reads,
        [20, 50],
        "ciphertext and plaintext reads of the server"
    );
    assert_eq!(t.counters.get(Counter::TlsConnections), 1);
    assert_eq!(t.counters.get(Counter::TlsCiphertextIgnored), 6);
    let mut out = Vec::new();
    t.pump(1_000, &mut out);
    let x = exchanges(&out);
    assert_eq!(x.len(), 1);
    assert!(x[0].0.facts.tls);
    assert_eq!(x[0].0.facts.server_name.as_deref(), Some("shop.example"));
    assert_eq!(
        x[0].1.request.header_str("host"),
        Some("h"),
        "the request parsed from plaintext"
    );
}

/// A client `SSL*` (asyncio MemoryBIO) writes its plaintext before the kernel can tie it to the
/// socket: it waits, and joins the connection at the bind.
#[test]
fn plaintext_before_the_bind_joins_the_connection() {
    let mut t = table();
    let ssl = 0x6000;
    let mut dest = SockAddr {
        family: 2,
        port: 443,
        ..SockAddr::default()
    };
    dest.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
    let out = run(
        &mut t,
        &[
            Record::Connect(Connect {
                origin: o(10, 7),
                conn_id: Some(2),
                fd: 6,
                ret: -115,
                addr: dest,
            }),
            tls(20, ssl, -1, true, 0, REQ),
            bind(21, ssl, 2, Role::Client),
            tls(30, ssl, 6, false, 0, RESP),
        ],
    );
    assert!(out.is_empty(), "a client connection has no server reads");
    let mut out = Vec::new();
    t.pump(1_000, &mut out);
    let x = exchanges(&out);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].0.side, Side::Client);
    assert_eq!(x[0].1.request.first.ts_ns, 20);
    assert_eq!(t.counters.get(Counter::TlsUnboundBytesDropped), 0);
}

/// Plaintext beyond the per-call cap is a gap at once (no wait for the gap timeout).
#[test]
fn tls_loss_is_a_gap_at_once() {
    let mut t = table();
    let ssl = 0x7000;
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcdefghij";
    let head = resp.len() - 10;
    run(
        &mut t,
        &[
            accept(10, 7, 1, 5),
            bind(11, ssl, 1, Role::Server),
            tls(20, ssl, 5, false, 0, REQ),
            tls(30, ssl, 5, true, 0, &resp[..head + 3]),
            Record::TlsDataLost(TlsDataLost {
                origin: o(30, 7),
                ssl,
                fd: 5,
                dir: Direction::Egress,
                pos: head as u64 + 3,
                len: 7,
            }),
        ],
    );
    let mut out = Vec::new();
    // Well within the gap timeout.
    t.pump(31, &mut out);
    let x = exchanges(&out);
    assert_eq!(x.len(), 1);
    let r = x[0].1.response.as_ref().expect("a response");
    assert_eq!((&r.body[..], r.lost_bytes), (&b"abc"[..], 7));
}

/// An exit ends the connections of that process only.
#[test]
fn exit_closes_the_process_connections() {
    let mut t = table();
    run(&mut t, &[accept(10, 7, 1, 5), accept(11, 8, 2, 5)]);
    let out = run(&mut t, &[Record::Exit(Exit { origin: o(20, 7) })]);
    assert!(matches!(
        out[..],
        [Output::Closed {
            conn_id: 1,
            ts_ns: 20
        }]
    ));
    assert!(!t.any_of(7));
    assert!(t.any_of(8) && t.contains(2));
}

#[test]
fn unknown_connections_and_failed_connects_are_counted() {
    let mut t = table();
    let out = run(
        &mut t,
        &[
            data(10, 99, false, 0, REQ),
            Record::Connect(Connect {
                origin: o(11, 7),
                conn_id: None,
                fd: 6,
                ret: -111,
                addr: SockAddr::default(),
            }),
        ],
    );
    assert!(out.is_empty());
    assert!(t.is_empty());
    assert_eq!(t.counters.get(Counter::DataUnknownConn), 1);
    assert_eq!(t.counters.get(Counter::ConnectFailed), 1);
}

#[test]
fn a_refused_connect_to_an_ip_address_is_reported_with_its_errno() {
    let mut t = table();
    let addr = SockAddr {
        family: 2,
        port: 6399,
        addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ..SockAddr::default()
    };
    let out = run(
        &mut t,
        &[Record::Connect(Connect {
            origin: o(11, 7),
            conn_id: None,
            fd: 6,
            ret: -111,
            addr,
        })],
    );
    assert!(t.is_empty(), "a failed connect opens no connection");
    assert_eq!(t.counters.get(Counter::ConnectFailed), 1);
    match out.as_slice() {
        [
            Output::ConnectFailed {
                origin,
                fd: 6,
                remote,
                errno: 111,
            },
        ] => {
            assert_eq!(origin.ts_ns, 11);
            assert_eq!(*remote, "127.0.0.1:6399".parse().unwrap());
        }
        other => panic!("expected one ConnectFailed, got {other:?}"),
    }
}

/// Closed before the first bytes told the protocol: parsed as HTTP anyway.
#[test]
fn closed_before_detection_is_tried_as_http() {
    let mut t = table();
    let partial = b"GET /short HTTP/1.1\r\nHost: h\r\n";
    run(
        &mut t,
        &[accept(10, 7, 1, 5), data(20, 1, false, 0, partial)],
    );
    let mut out = Vec::new();
    t.pump(100, &mut out);
    assert!(exchanges(&out).is_empty());
    t.close_all(200, &mut out);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Event(Event {
                event: ProtoEvent::Http(_),
                ..
            })
        )),
        "{out:?}"
    );
}

mod merge {
    use super::*;

    fn data(ts_ns: u64, pos: u64) -> Segment {
        Segment::Data(Chunk {
            pos,
            data: Bytes::from_static(b"x"),
            ts_ns,
            tid: 1,
        })
    }

    #[test]
    fn directions_interleaved_by_time() {
        // A drain holding request 1 (egress, t=10), its response (t=20), request 2 (t=30), a
        // lost ingress range, and response 2 (t=40): fed in the order it happened.
        let ing = vec![data(20, 0), Segment::Gap { pos: 1, len: 1 }, data(40, 2)];
        let eg = vec![data(10, 0), data(30, 1)];
        let order: Vec<(bool, Option<u64>)> = merge_by_time(ing, eg)
            .into_iter()
            .map(|(e, s)| {
                (
                    e,
                    match s {
                        Segment::Data(c) => Some(c.ts_ns),
                        Segment::Gap { .. } => None,
                    },
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                (true, Some(10)),
                (false, Some(20)),
                (false, None),
                (true, Some(30)),
                (false, Some(40)),
            ]
        );
    }
}

/// The local address of an accepted connection: /proc's answer only when its peer is the
/// accepted one (the fd may be reused by the time it is read); else the listening socket's
/// bound address when that is not a wildcard; else unknown (counted).
#[test]
fn local_address_of_short_lived_connections() {
    let (listen, wild) = (3, 4);
    let mut f = FixedFacts::default();
    // fd 5 was closed and reused by an outbound connection before /proc was read.
    f.sockets.insert(
        (7, 5),
        (
            "127.0.0.1:46872".parse().unwrap(),
            "10.0.0.9:5432".parse().unwrap(),
        ),
    );
    let any4 = "0.0.0.0:0".parse().unwrap();
    f.sockets
        .insert((7, listen), ("127.0.0.1:8000".parse().unwrap(), any4));
    f.sockets
        .insert((7, wild), ("0.0.0.0:9000".parse().unwrap(), any4));
    let mut t = table();
    let mut out = Vec::new();
    let on = |listen_fd, conn_id| {
        let Record::Accept(a) = accept(10, 7, conn_id, 5) else {
            unreachable!()
        };
        Record::Accept(Accept { listen_fd, ..a })
    };
    t.handle(&on(listen, 1), &f, &mut out);
    t.handle(&on(wild, 2), &f, &mut out);
    assert_eq!(
        t.conns[&1].facts.local,
        Some("127.0.0.1:8000".parse().unwrap())
    );
    assert_eq!(t.conns[&2].facts.local, None);
    assert_eq!(t.counters.get(Counter::LocalAddrUnknown), 1);
    // /proc's answer is kept when its peer is the accepted one.
    t.handle(&accept(20, 7, 3, 5), &facts(), &mut out);
    assert_eq!(
        t.conns[&3].facts.local,
        Some("127.0.0.1:8000".parse().unwrap())
    );
    // uvloop accepts with a NULL address: no peer to check, so /proc's answer counts only when
    // its local port is the listening socket's — here fd 5 is an outbound socket now.
    let nameless = |listen_fd, conn_id| {
        let Record::Accept(a) = on(listen_fd, conn_id) else {
            unreachable!()
        };
        Record::Accept(Accept {
            addr: SockAddr::default(),
            ..a
        })
    };
    t.handle(&nameless(listen, 4), &f, &mut out);
    assert_eq!(
        t.conns[&4].facts.local,
        Some("127.0.0.1:8000".parse().unwrap())
    );
    t.handle(&nameless(wild, 5), &f, &mut out);
    assert_eq!(t.conns[&5].facts.local, None);
    // ...and when it is, it is this connection's.
    f.sockets.insert(
        (7, 5),
        (
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:40001".parse().unwrap(),
        ),
    );
    t.handle(&nameless(wild, 6), &f, &mut out);
    assert_eq!(
        t.conns[&6].facts.local,
        Some("127.0.0.1:9000".parse().unwrap())
    );
}
