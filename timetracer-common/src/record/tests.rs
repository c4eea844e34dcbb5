//! Round trips of every record kind, the wire layout of each kind's generic header fields, and
//! decoding of truncated and arbitrary bytes (never a panic, always a `DecodeError`).
extern crate std;

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::{LargeData, PREEXISTING_CONN_ID_BASE};

const O: Origin = Origin {
    ts_ns: 1_000_000_123,
    tgid: 4242,
    tid: 4243,
};

fn addr4(ip: [u8; 4], port: u16) -> SockAddr {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip);
    SockAddr {
        family: 2,
        port,
        _pad: 0,
        addr,
    }
}

/// One record of every kind, with distinct values in every field.
fn every_kind(payload: &[u8]) -> Vec<Record<'_>> {
    let v = [
        Record::Data(Data {
            origin: O,
            syscall: sys::WRITEV,
            conn_id: 77,
            fd: 9,
            dir: Direction::Egress,
            pos: 1000,
            syscall_bytes: 20_000,
            last_chunk: true,
            payload,
        }),
        Record::DataLost(DataLost {
            origin: O,
            syscall: sys::SENDFILE,
            conn_id: 77,
            fd: 9,
            dir: Direction::Egress,
            pos: 2000,
            len: 65536,
        }),
        Record::Stdio(Stdio {
            origin: O,
            syscall: sys::WRITE,
            fd: 2,
            offset: 512,
            syscall_bytes: 900,
            last_chunk: false,
            payload,
        }),
        Record::TlsData(TlsData {
            origin: O,
            ssl: 0x7f00_dead_beef,
            fd: -1,
            dir: Direction::Ingress,
            pos: 33,
            call_bytes: 4096,
            last_chunk: true,
            payload,
        }),
        Record::TlsDataLost(TlsDataLost {
            origin: O,
            ssl: 0x7f00_dead_beef,
            fd: 12,
            dir: Direction::Ingress,
            pos: 4096,
            len: 100,
        }),
        Record::TlsBind(TlsBind {
            origin: O,
            ssl: 0x7f00_dead_beef,
            conn_id: 78,
            fd: 12,
            role: Role::Server,
        }),
        Record::Connect(Connect {
            origin: O,
            conn_id: Some(79),
            fd: 13,
            ret: -115,
            addr: addr4([127, 0, 0, 1], 5432),
        }),
        Record::Connect(Connect {
            origin: O,
            conn_id: None,
            fd: 14,
            ret: -111,
            addr: addr4([10, 0, 0, 1], 6379),
        }),
        Record::Accept(Accept {
            origin: O,
            conn_id: PREEXISTING_CONN_ID_BASE | 3,
            fd: 15,
            listen_fd: 4,
            addr: addr4([127, 0, 0, 1], 50_000),
        }),
        Record::Close(Close {
            origin: O,
            conn_id: 79,
            fd: 13,
        }),
        Record::Fork(Fork {
            origin: O,
            child: 5000,
        }),
        Record::Join(Join {
            origin: O,
            cgroup: 0x1_0000_2a31,
        }),
        Record::Exit(Exit { origin: O }),
        Record::PyStamp(PyStamp {
            origin: O,
            ctx: 0x7f11,
            tstate: 0x7f22,
            entered: true,
            fd: 13,
            write: StampedWrite::Socket { conn_id: 79 },
        }),
        Record::PyStamp(PyStamp {
            origin: O,
            ctx: 0x7f11,
            tstate: 0,
            entered: false,
            fd: -1,
            write: StampedWrite::Tls {
                ssl: 0x7f00_dead_beef,
            },
        }),
        Record::PyTask(PyTask {
            origin: O,
            task: 0x7f33,
            task_ctx: 0x7f44,
            parent_ctx: 0x7f55,
            qualname: b"RequestResponseCycle.run_asgi",
        }),
        Record::PyCopy(PyCopy {
            origin: O,
            new_ctx: 0x7f66,
            copied_ctx: 0x7f44,
            entered: true,
        }),
    ];
    v.into_iter().collect()
}

#[test]
fn every_kind_round_trips() {
    let payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let records = every_kind(payload);
    let mut kinds: Vec<u32> = records.iter().map(|r| r.kind() as u32).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        (1..=15).collect::<Vec<u32>>(),
        "every kind is covered"
    );
    for r in records {
        let bytes = r.encode().expect("encodes");
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(decode(&bytes), Ok(r), "{:?}", r.kind());
        // And the bytes are stable: decoding then encoding gives them back.
        assert_eq!(decode(&bytes).unwrap().encode().unwrap(), bytes);
        assert_eq!(r.origin(), O);
    }
}

#[test]
fn record_sizes_are_the_kernel_structs() {
    let small = [7u8; SMALL_CHUNK];
    let large = [7u8; SMALL_CHUNK + 1];
    for (payload, size) in [
        (&small[..], size_of::<SmallData>()),
        (&large[..], size_of::<LargeData>()),
    ] {
        for r in every_kind(payload) {
            let want = match r.kind() {
                Kind::Data | Kind::Stdio | Kind::TlsData => size,
                Kind::PyTask => size_of::<PyTaskRecord>(),
                _ => size_of::<ConnEvent>(),
            };
            assert_eq!(r.encoded_len(), want, "{:?}", r.kind());
        }
    }
}

/// The generic header fields each kind fills, as the table in the module documentation says
/// (this is the layout the kernel and the agent agree on).
#[test]
fn wire_layout_of_each_kind() {
    let payload = b"abc";
    for r in every_kind(payload) {
        let bytes = r.encode().unwrap();
        let h = EventHeader::from_bytes(&bytes).unwrap();
        assert_eq!(h.kind, r.kind() as u32);
        assert_eq!((h.ts_ns, h.tgid, h.tid), (O.ts_ns, O.tgid, O.tid));
        let (conn_id, fd, dir, pos, total, flags, len) = match r {
            Record::Data(_) => (77, 9, DIR_EGRESS, 1000, 20_000, FLAG_LAST_CHUNK, 3),
            Record::DataLost(_) => (77, 9, DIR_EGRESS, 2000, 65536, 0, 0),
            Record::Stdio(_) => (0, 2, DIR_EGRESS, 512, 900, 0, 3),
            Record::TlsData(_) => (0x7f00_dead_beef, -1, DIR_INGRESS, 33, 4096, 1, 3),
            Record::TlsDataLost(_) => (0x7f00_dead_beef, 12, DIR_INGRESS, 4096, 100, 0, 0),
            Record::TlsBind(_) => (78, 12, ROLE_SERVER, 0x7f00_dead_beef, 0, 0, 0),
            Record::Connect(c) if c.conn_id.is_some() => (79, 13, ROLE_CLIENT, 0, -115, 0, 0),
            Record::Connect(_) => (0, 14, ROLE_CLIENT, 0, -111, 0, 0),
            Record::Accept(_) => (PREEXISTING_CONN_ID_BASE | 3, 15, ROLE_SERVER, 4, 15, 0, 0),
            Record::Close(_) => (79, 13, 0, 0, 0, 0, 0),
            Record::Fork(_) => (5000, 0, 0, 0, 0, 0, 0),
            Record::Join(_) => (0x1_0000_2a31, 0, 0, 0, 0, 0, 0),
            Record::Exit(_) => (0, 0, 0, 0, 0, 0, 0),
            Record::PyStamp(s) if s.entered => (79, 13, DIR_EGRESS, 0x7f11, 0x7f22, 4, 0),
            Record::PyStamp(_) => (0x7f00_dead_beef, -1, DIR_EGRESS, 0x7f11, 0, 8, 0),
            Record::PyTask(t) => (0x7f33, 0, 0, 0x7f44, 0x7f55, 0, t.qualname.len() as u32),
            Record::PyCopy(_) => (0x7f66, 0, 0, 0x7f44, 0, 4, 0),
        };
        if let Record::Data(d) = r {
            assert_eq!(h.syscall, d.syscall);
        }
        assert_eq!(
            (h.conn_id, h.fd, h.dir, h.pos, h.total, h.flags, h.len),
            (conn_id, fd, dir, pos, total, flags, len),
            "{:?}",
            r.kind()
        );
        if let Record::Connect(Connect { addr, .. }) | Record::Accept(Accept { addr, .. }) = r {
            assert_eq!(&bytes[64..88], &addr.to_bytes());
        }
    }
}

/// What the kernel's chunking loop emits for one syscall equals what `encode` writes for the
/// same chunks, and the bytes it could not copy become the matching loss record.
#[test]
fn chunks_and_losses_of_a_template() {
    let t = EventHeader::data(O, sys::READ, 5, 7, Direction::Ingress, 100, 40);
    let c = t.chunk(O.ts_ns + 1, 10, false);
    let mut want = [0u8; size_of::<SmallData>()];
    want[..64].copy_from_slice(&c.to_bytes());
    want[64..74].copy_from_slice(&[1; 10]);
    let r = Record::Data(Data {
        origin: Origin {
            ts_ns: O.ts_ns + 1,
            ..O
        },
        syscall: sys::READ,
        conn_id: 5,
        fd: 7,
        dir: Direction::Ingress,
        pos: 100,
        syscall_bytes: 40,
        last_chunk: false,
        payload: &[1; 10],
    });
    assert_eq!(r.encode().unwrap(), want);

    let lost = t.lost_after(110, 30).expect("socket data");
    assert_eq!(
        decode(&EventHeader::to_bytes(&lost)),
        Ok(Record::DataLost(DataLost {
            origin: O,
            syscall: sys::READ,
            conn_id: 5,
            fd: 7,
            dir: Direction::Ingress,
            pos: 110,
            len: 30,
        }))
    );
    let tls = EventHeader::tls_data(O, 0xabc, -1, Direction::Egress, 0, 9);
    assert!(matches!(
        decode(&tls.lost_after(4, 5).unwrap().to_bytes()),
        Ok(Record::TlsDataLost(TlsDataLost {
            ssl: 0xabc,
            pos: 4,
            len: 5,
            ..
        }))
    ));
    assert_eq!(
        EventHeader::stdio(O, sys::WRITE, 2, 9).lost_after(4, 5),
        None
    );
}

#[test]
fn encode_refuses_what_the_kernel_cannot_emit() {
    let big = [0u8; LARGE_CHUNK + 1];
    let r = every_kind(&big)[0];
    assert_eq!(
        r.encode(),
        Err(EncodeError::PayloadTooLong {
            len: LARGE_CHUNK + 1,
            max: LARGE_CHUNK
        })
    );
    let long_name = [b'a'; PY_QUALNAME + 1];
    let t = Record::PyTask(PyTask {
        origin: O,
        task: 1,
        task_ctx: 2,
        parent_ctx: 3,
        qualname: &long_name,
    });
    assert!(matches!(
        t.encode(),
        Err(EncodeError::PayloadTooLong { .. })
    ));
    let mut short = [0u8; 87];
    assert_eq!(
        every_kind(b"")[9].encode_into(&mut short),
        Err(EncodeError::BufferTooSmall { have: 87, need: 88 })
    );
}

#[test]
fn truncated_records_are_short() {
    for r in every_kind(b"some payload bytes") {
        let bytes = r.encode().unwrap();
        // The header, the declared payload, and a connect/accept's address are needed.
        let need = match r.kind() {
            Kind::Connect | Kind::Accept => 88,
            Kind::Data | Kind::Stdio | Kind::TlsData => 64 + 18,
            Kind::PyTask => 64 + 29,
            _ => 64,
        };
        for cut in 0..need {
            assert!(
                matches!(decode(&bytes[..cut]), Err(DecodeError::Short { have, .. }) if have == cut),
                "{:?} cut at {cut}",
                r.kind()
            );
        }
        assert_eq!(decode(&bytes[..need]), Ok(r), "{:?}", r.kind());
    }
}

#[test]
fn garbage_is_refused() {
    let mut h = EventHeader::data(O, sys::READ, 1, 3, Direction::Ingress, 0, 1);
    h.kind = 0;
    assert_eq!(decode(&h.to_bytes()), Err(DecodeError::UnknownKind(0)));
    h.kind = 99;
    assert_eq!(decode(&h.to_bytes()), Err(DecodeError::UnknownKind(99)));
    h.kind = Kind::Data as u32;
    h.dir = 7;
    assert_eq!(
        decode(&h.to_bytes()),
        Err(DecodeError::BadValue {
            field: "dir",
            value: 7
        })
    );
    let mut b = EventHeader::tls_bind(O, 1, 2, 3, Role::Client);
    b.dir = 0;
    assert_eq!(
        decode(&b.to_bytes()),
        Err(DecodeError::BadValue {
            field: "role",
            value: 0
        })
    );
    // A length that runs past the buffer is short; one past what the kind carries (or past
    // usize on 32-bit hosts) is a bad value.
    let mut d = EventHeader::data(O, sys::READ, 1, 3, Direction::Ingress, 0, 1);
    d.len = 100;
    assert!(matches!(
        decode(&d.to_bytes()),
        Err(DecodeError::Short { have: 64, .. })
    ));
    d.len = u32::MAX;
    assert_eq!(
        decode(&d.to_bytes()),
        Err(DecodeError::BadValue {
            field: "len",
            value: u32::MAX
        })
    );
}

#[test]
fn roles_and_directions() {
    assert_eq!(Role::of_sock_role(ROLE_SERVER), Role::Server);
    assert_eq!(Role::of_sock_role(ROLE_CLIENT), Role::Client);
    assert_eq!(Role::of_sock_role(0), Role::Client);
    assert_eq!(Direction::of_egress(true), Direction::Egress);
    assert!(!Direction::of_egress(false).is_egress());
    assert_eq!(
        Origin::of_pid_tgid((7u64 << 32) | 9, 5),
        Origin {
            ts_ns: 5,
            tgid: 7,
            tid: 9
        }
    );
}

/// Every field of a record, owned (a [`Record`] borrows its payload).
#[derive(Clone, Debug)]
struct Fields {
    kind: u8,
    origin: Origin,
    a: u64,
    b: u64,
    c: u64,
    fd: i32,
    small: u32,
    flag: bool,
    flag2: bool,
    ret: i64,
    addr: SockAddr,
    payload: Vec<u8>,
}

fn fields() -> impl Strategy<Value = Fields> {
    let origin = (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(ts_ns, tgid, tid)| Origin {
        ts_ns,
        tgid,
        tid,
    });
    let addr = (any::<u16>(), any::<u16>(), any::<u32>(), any::<[u8; 16]>()).prop_map(
        |(family, port, _pad, addr)| SockAddr {
            family,
            port,
            _pad,
            addr,
        },
    );
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=PY_QUALNAME),
        proptest::collection::vec(any::<u8>(), 0..=SMALL_CHUNK + 64),
        proptest::collection::vec(any::<u8>(), LARGE_CHUNK - 4..=LARGE_CHUNK),
    ];
    (
        0u8..15,
        origin,
        (any::<u64>(), any::<u64>(), any::<u64>()),
        any::<i32>(),
        any::<u32>(),
        (any::<bool>(), any::<bool>()),
        any::<i64>(),
        addr,
        payload,
    )
        .prop_map(
            |(kind, origin, (a, b, c), fd, small, (flag, flag2), ret, addr, payload)| Fields {
                kind,
                origin,
                a,
                b,
                c,
                fd,
                small,
                flag,
                flag2,
                ret,
                addr,
                payload,
            },
        )
}

fn record(f: &Fields) -> Record<'_> {
    let o = f.origin;
    let dir = Direction::of_egress(f.flag);
    let qualname = &f.payload[..f.payload.len().min(PY_QUALNAME)];
    match f.kind {
        0 => Record::Data(Data {
            origin: o,
            syscall: f.small,
            conn_id: f.a,
            fd: f.fd,
            dir,
            pos: f.b,
            syscall_bytes: f.c,
            last_chunk: f.flag2,
            payload: &f.payload,
        }),
        1 => Record::DataLost(DataLost {
            origin: o,
            syscall: f.small,
            conn_id: f.a,
            fd: f.fd,
            dir,
            pos: f.b,
            len: f.c,
        }),
        2 => Record::Stdio(Stdio {
            origin: o,
            syscall: f.small,
            fd: f.fd,
            offset: f.b,
            syscall_bytes: f.c,
            last_chunk: f.flag2,
            payload: &f.payload,
        }),
        3 => Record::TlsData(TlsData {
            origin: o,
            ssl: f.a,
            fd: f.fd,
            dir,
            pos: f.b,
            call_bytes: f.c,
            last_chunk: f.flag2,
            payload: &f.payload,
        }),
        4 => Record::TlsDataLost(TlsDataLost {
            origin: o,
            ssl: f.a,
            fd: f.fd,
            dir,
            pos: f.b,
            len: f.c,
        }),
        5 => Record::TlsBind(TlsBind {
            origin: o,
            ssl: f.a,
            conn_id: f.b,
            fd: f.fd,
            role: if f.flag { Role::Server } else { Role::Client },
        }),
        6 => Record::Connect(Connect {
            origin: o,
            conn_id: f.flag.then_some(f.a | 1),
            fd: f.fd,
            ret: f.ret,
            addr: f.addr,
        }),
        7 => Record::Accept(Accept {
            origin: o,
            conn_id: f.a,
            fd: f.fd,
            listen_fd: f.ret as i32,
            addr: f.addr,
        }),
        8 => Record::Close(Close {
            origin: o,
            conn_id: f.a,
            fd: f.fd,
        }),
        9 => Record::Fork(Fork {
            origin: o,
            child: f.small,
        }),
        10 => Record::Exit(Exit { origin: o }),
        14 => Record::Join(Join {
            origin: o,
            cgroup: f.a,
        }),
        11 => Record::PyStamp(PyStamp {
            origin: o,
            ctx: f.a,
            tstate: f.b,
            entered: f.flag,
            fd: f.fd,
            write: if f.flag2 {
                StampedWrite::Tls { ssl: f.c }
            } else {
                StampedWrite::Socket { conn_id: f.c }
            },
        }),
        12 => Record::PyTask(PyTask {
            origin: o,
            task: f.a,
            task_ctx: f.b,
            parent_ctx: f.c,
            qualname,
        }),
        _ => Record::PyCopy(PyCopy {
            origin: o,
            new_ctx: f.a,
            copied_ctx: f.b,
            entered: f.flag,
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_record_round_trips(f in fields()) {
        let r = record(&f);
        let bytes = r.encode().expect("within the kernel's capacity");
        prop_assert_eq!(bytes.len(), r.encoded_len());
        prop_assert_eq!(decode(&bytes), Ok(r));
        prop_assert_eq!(decode(&bytes).unwrap().encode().unwrap(), bytes);
    }

    #[test]
    fn a_cut_record_never_decodes_to_something_else(f in fields(), cut in any::<prop::sample::Index>()) {
        let r = record(&f);
        let bytes = r.encode().unwrap();
        let cut = cut.index(bytes.len() + 1);
        match decode(&bytes[..cut]) {
            Ok(d) => prop_assert_eq!(d, r),
            Err(e) => {
                let short = matches!(e, DecodeError::Short { have, .. } if have == cut);
                prop_assert!(short, "{:?}", e);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        kind in 0u32..17,
        mut bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        // Mostly valid kinds, so the per-kind paths are exercised, not just the kind check.
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        if let Ok(r) = decode(&bytes) {
            // Whatever decodes re-encodes (when within capacity) to bytes that decode to it.
            if let Ok(again) = r.encode() {
                prop_assert_eq!(decode(&again), Ok(r));
            }
        }
    }
}

/// Found by `cargo xtask fuzz` (target `record`, issue #24): a Python task record whose header
/// claimed a 96-byte qualname (the kernel's buffer holds 64) decoded into a record that could
/// not be encoded back. A length beyond the kind's capacity is now a corrupt record.
#[test]
fn payload_longer_than_the_kind_carries_is_rejected() {
    const CRASH: &[u8] = &[
        0x0c, 0x00, 0x00, 0x00, 0xff, 0xff, 0x40, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xef, 0xff, 0xa9, 0xa9, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0x6c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x60, 0xf4, 0x21, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x60, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xbe, 0xff, 0x0f, 0xff,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0x60, 0xf4, 0x21, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x60, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xbe,
    ];
    assert_eq!(
        decode(CRASH),
        Err(DecodeError::BadValue {
            field: "len",
            value: 96
        })
    );
    // At the capacity it still decodes, and round-trips.
    let ok = Record::PyTask(PyTask {
        origin: O,
        task: 1,
        task_ctx: 2,
        parent_ctx: 3,
        qualname: &[b'q'; PY_QUALNAME],
    });
    let bytes = ok.encode().expect("encodes");
    assert_eq!(decode(&bytes), Ok(ok));
}
