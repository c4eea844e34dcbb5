//! Helpers shared by the protocols' detectors (each protocol's own detector is in its folder,
//! `<name>/detect.rs`, and is listed in the registry, [`super::REGISTRY`]).

/// Bytes of each direction a length-prefixed database protocol's detector looks at; beyond
/// this an undecided answer becomes `Some(false)`.
pub const SCAN_LIMIT: usize = 64 * 1024;

/// Combines per-direction verdicts: any `false` wins, then any `true`, else undecided.
#[must_use]
pub(crate) fn combine(
    a: Option<bool>,
    b: Option<bool>,
    a_len: usize,
    b_len: usize,
) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), _) | (_, Some(true)) => Some(true),
        _ if a_len >= SCAN_LIMIT || b_len >= SCAN_LIMIT => Some(false),
        _ => None,
    }
}

// Detection across protocols: each recognises its own captures and claims none of the others'.
#[cfg(test)]
mod tests {
    use super::super::mysql::detect::detect_mysql;
    use super::super::postgres::detect::detect_pg;
    use crate::protocols::postgres::tests::load;

    fn first(path: &str) -> (Vec<u8>, Vec<u8>) {
        let recs = load(path);
        let e = recs
            .iter()
            .find(|r| r.0)
            .map(|r| r.1.clone())
            .unwrap_or_default();
        let i = recs
            .iter()
            .find(|r| !r.0)
            .map(|r| r.1.clone())
            .unwrap_or_default();
        (e, i)
    }

    #[test]
    fn fresh_connections() {
        for f in [
            "postgres/pg_asyncpg.bin",
            "postgres/pg_psycopg2.bin",
            "postgres/pg_psycopg3.bin",
            "postgres/pg_psql_cleartext.bin",
        ] {
            let (e, i) = first(f);
            assert_eq!(detect_pg(&e, &i), Some(true), "{f}");
            assert_eq!(detect_pg(&e, &[]), Some(true), "{f}");
            assert_eq!(detect_mysql(&e, &i), Some(false), "{f}");
        }
        for f in ["mysql/my_pymysql.bin", "mysql/my_connector_prepared.bin"] {
            let (e, i) = first(f);
            assert_eq!(detect_mysql(&e, &i), Some(true), "{f}");
            assert_eq!(detect_mysql(&[], &i), Some(true), "{f}");
            assert_eq!(detect_pg(&e, &i), Some(false), "{f}");
        }
    }

    #[test]
    fn mid_session() {
        // Every client write after the first few of a capture is recognised alone.
        let recs = load("postgres/pg_psycopg3.bin");
        for (eg, data) in recs.iter().skip(8) {
            let v = if *eg {
                detect_pg(data, &[])
            } else {
                detect_pg(&[], data)
            };
            assert_eq!(v, Some(true), "{eg} {data:?}");
            let m = if *eg {
                detect_mysql(data, &[])
            } else {
                detect_mysql(&[], data)
            };
            assert_ne!(m, Some(true), "{data:?}");
        }
        let recs = load("mysql/my_connector_prepared.bin");
        for (eg, data) in recs.iter().skip(4) {
            let v = if *eg {
                detect_mysql(data, &[])
            } else {
                detect_mysql(&[], data)
            };
            assert_eq!(v, Some(true), "{eg} {data:?}");
            let p = if *eg {
                detect_pg(data, &[])
            } else {
                detect_pg(&[], data)
            };
            assert_ne!(p, Some(true), "{data:?}");
        }
    }

    #[test]
    fn others() {
        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(detect_pg(http, &[]), Some(false));
        assert_eq!(detect_mysql(http, &[]), Some(false));
        let redis = b"*1\r\n$4\r\nPING\r\n";
        assert_eq!(detect_pg(redis, b"+PONG\r\n"), Some(false));
        assert_eq!(detect_mysql(redis, b"+PONG\r\n"), Some(false));
        assert_eq!(detect_pg(&[], &[]), None);
        assert_eq!(detect_pg(b"Q\0", &[]), None);
        assert_eq!(detect_mysql(&[], &[]), None);
        assert_eq!(detect_mysql(&[5, 0], &[]), None);
        // SSLRequest then its one-byte answer.
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(detect_pg(&ssl, b"N"), Some(true));
        assert_eq!(detect_pg(&[], b"N"), None);
        // Simple query mid-session.
        let q = b"Q\0\0\0\x0dSELECT 1\0";
        assert_eq!(detect_pg(q, &[]), Some(true));
        // COM_PING, COM_QUERY mid-session.
        assert_eq!(detect_mysql(&[1, 0, 0, 0, 0x0e], &[]), Some(true));
        assert_eq!(detect_mysql(b"\x09\0\0\0\x03SELECT 1", &[]), Some(true));
        assert_eq!(
            detect_mysql(&[], &[7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]),
            Some(true)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(a in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                        b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = detect_pg(&a, &b);
            let _ = detect_mysql(&a, &b);
        }
    }
}

#[cfg(test)]
mod negotiation_tests {
    use super::super::postgres::detect::detect_pg;

    /// asyncpg: SSLRequest, answered 'N', then the startup exchange read in the same buffer.
    #[test]
    fn ssl_request_answered_n_then_more() {
        let mut e = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let startup = b"\0\x03\0\0user\0app\0database\0appdb\0\0";
        e.extend_from_slice(&((startup.len() + 4) as u32).to_be_bytes());
        e.extend_from_slice(startup);
        let mut i = b"N".to_vec();
        // AuthenticationSASL: 'R', len, 10, "SCRAM-SHA-256\0\0"
        let body = b"\0\0\0\x0aSCRAM-SHA-256\0\0";
        i.push(b'R');
        i.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        i.extend_from_slice(body);
        assert_eq!(detect_pg(&e, &i), Some(true));
        assert_eq!(detect_pg(&e, b"N"), Some(true));
    }
}

#[cfg(test)]
mod kv_tests {
    use super::super::mongodb::detect::detect_mongodb;
    use super::super::redis::detect::detect_redis;

    #[test]
    fn redis() {
        let cmd = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(detect_redis(cmd, b""), Some(true));
        assert_eq!(detect_redis(b"*2\r", b""), None);
        assert_eq!(detect_redis(b"PING\r\n", b""), Some(true));
        assert_eq!(detect_redis(b"AUTH secret\r\n", b""), Some(true));
        assert_eq!(
            detect_redis(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
            Some(false)
        );
        assert_eq!(detect_redis(b"\x16\x03\x01\x02\x00", b""), Some(false));
        assert_eq!(
            detect_redis(b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b""),
            Some(false)
        );
        // Mid-session: the tail of a big value, then a command.
        let mut mid = b"xxxxxx\r\n".to_vec();
        mid.extend_from_slice(cmd);
        assert_eq!(detect_redis(&mid, b""), Some(true));
        assert_eq!(detect_redis(b"", b">3\r\n$7\r\nmessage\r\n"), Some(true));
        assert_eq!(detect_redis(b"", b"*3\r\n$7\r\nmessage\r\n"), Some(true));
        assert_eq!(detect_redis(b"", b"+OK\r\n"), None);
        assert_eq!(detect_redis(b"", b""), None);
    }

    #[test]
    fn mongodb() {
        // OP_MSG {ping: 1, $db: "admin"}
        let doc =
            b"\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00";
        let mut msg = Vec::new();
        let len = 16 + 4 + 1 + doc.len();
        msg.extend_from_slice(&(len as i32).to_le_bytes());
        msg.extend_from_slice(&7i32.to_le_bytes());
        msg.extend_from_slice(&0i32.to_le_bytes());
        msg.extend_from_slice(&2013i32.to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.push(0);
        msg.extend_from_slice(doc);
        assert_eq!(detect_mongodb(&msg, b""), Some(true));
        assert_eq!(detect_mongodb(&msg[..10], b""), None);
        assert_eq!(
            detect_mongodb(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b""),
            Some(false)
        );
        assert_eq!(
            detect_mongodb(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
            Some(false)
        );
        // A reply: responseTo set.
        let mut reply = msg.clone();
        reply[8..12].copy_from_slice(&7i32.to_le_bytes());
        assert_eq!(detect_mongodb(b"", &reply), Some(true));
        assert_eq!(detect_mongodb(&reply, b""), Some(false));
    }
}
