//! Recognising PostgreSQL and MySQL connections from their first bytes, in either direction,
//! at the start of a connection or mid-session (attach to a pooled connection). Ports are
//! never used. `Some(true)` = this protocol, `Some(false)` = not it, `None` = need more bytes.
use super::mysql::parse as my;
use super::postgres::parse as pg;

/// Bytes looked at in each direction; beyond this an undecided answer becomes `Some(false)`.
pub const SCAN_LIMIT: usize = 64 * 1024;

/// Combines per-direction verdicts: any `false` wins, then any `true`, else undecided.
fn combine(a: Option<bool>, b: Option<bool>, a_len: usize, b_len: usize) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), _) | (_, Some(true)) => Some(true),
        _ if a_len >= SCAN_LIMIT || b_len >= SCAN_LIMIT => Some(false),
        _ => None,
    }
}

/// A chain of typed PostgreSQL messages from `b[0]`, each plausible, up to the end of `b` (or
/// at least two of them).
fn pg_chain(b: &[u8], frontend: bool) -> Option<bool> {
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        match pg::frame_typed(&b[i..], frontend) {
            pg::Frame::Invalid => return Some(false),
            pg::Frame::NeedMore => return if n >= 2 { Some(true) } else { None },
            pg::Frame::Msg(_, len) => {
                if len > u64::from(pg::MAX_RESYNC_LEN) {
                    return Some(false);
                }
                n += 1;
                i = i.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                if n >= 2 && i <= b.len() {
                    return Some(true);
                }
            }
        }
    }
    if i == b.len() && n >= 1 {
        Some(true)
    } else {
        None
    }
}

fn pg_egress(b: &[u8]) -> Option<bool> {
    if b.is_empty() {
        return None;
    }
    match pg::frame_untyped(b) {
        pg::Frame::Msg(..) => return Some(true),
        pg::Frame::NeedMore if b.len() < 8 && b.first() == Some(&0) => return None,
        _ => {}
    }
    let t = b[0];
    if !matches!(
        t,
        b'Q' | b'P' | b'B' | b'E' | b'S' | b'D' | b'C' | b'X' | b'F' | b'H'
    ) {
        return Some(false);
    }
    let r = pg_chain(b, true)?;
    if !r {
        return Some(false);
    }
    // Single-message evidence must carry sane content: Query text ends in NUL.
    if t == b'Q' {
        let len = b
            .get(1..5)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
        if let Some(len) = len
            && let Some(&last) = b.get(len)
        {
            return Some(last == 0);
        }
    }
    Some(true)
}

fn pg_ingress(b: &[u8]) -> Option<bool> {
    let first = *b.first()?;
    if b.len() == 1 && matches!(first, b'N' | b'S') {
        // SSLRequest answer: a single byte.
        return None;
    }
    if !matches!(
        first,
        b'R' | b'S'
            | b'K'
            | b'Z'
            | b'T'
            | b'D'
            | b'C'
            | b'E'
            | b'N'
            | b'1'
            | b'2'
            | b'3'
            | b'n'
            | b't'
            | b'I'
            | b's'
            | b'G'
            | b'H'
            | b'A'
            | b'V'
            | b'v'
    ) {
        return Some(false);
    }
    pg_chain(b, false)
}

/// Is this a PostgreSQL connection? `first_egress` = first bytes the traced client wrote,
/// `first_ingress` = first bytes it read (either may be empty).
#[must_use]
pub fn detect_pg(first_egress: &[u8], first_ingress: &[u8]) -> Option<bool> {
    // An SSLRequest (80877103) or GSSENCRequest (80877104) is answered by one byte ('N', 'S'
    // or 'G') that is not a message: skip it so the messages after it are judged.
    let negotiation = first_egress.len() >= 8
        && first_egress[..4] == [0, 0, 0, 8]
        && matches!(
            first_egress[4..8],
            [0x04, 0xd2, 0x16, 0x2f] | [0x04, 0xd2, 0x16, 0x30]
        );
    let first_ingress = match first_ingress.split_first() {
        Some((b'N' | b'S' | b'G', rest)) if negotiation && !rest.is_empty() => rest,
        _ => first_ingress,
    };
    let e = if first_egress.is_empty() {
        None
    } else {
        pg_egress(first_egress)
    };
    let i = if first_ingress.is_empty() {
        None
    } else if first_ingress.len() == 1 && matches!(first_ingress[0], b'N' | b'S') && e == Some(true)
    {
        Some(true)
    } else {
        pg_ingress(first_ingress)
    };
    combine(e, i, first_egress.len(), first_ingress.len())
}

fn my_header(b: &[u8]) -> Option<(usize, u8)> {
    let h = b.get(..4)?;
    Some((
        usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
        h[3],
    ))
}

fn my_egress(b: &[u8]) -> Option<bool> {
    let (len, seq) = my_header(b)?;
    match seq {
        0 => {
            let cmd = *b.get(4)?;
            if !my::plausible_command(len, cmd) {
                return Some(false);
            }
            if b.len() < 4 + len {
                // A long query still arriving: judge by the SQL text start.
                return if b.len() >= 16 { Some(true) } else { None };
            }
            Some(b.len() == 4 + len || my_header(&b[4 + len..]).is_some_and(|(_, s)| s == 0))
        }
        1 => {
            // HandshakeResponse41 / SSLRequest.
            let caps = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
            Some(len >= 32 && caps & my::cap::PROTOCOL_41 != 0 && len < 1 << 16)
        }
        _ => Some(false),
    }
}

fn my_ingress(b: &[u8]) -> Option<bool> {
    let (len, seq) = my_header(b)?;
    let first = *b.get(4)?;
    if len == 0 || len >= 1 << 24 {
        return Some(false);
    }
    if seq == 0 {
        // Server greeting, protocol 10, version string, NUL.
        if first != 10 {
            return Some(false);
        }
        let body = &b[5..b.len().min(4 + len)];
        return match body.iter().position(|&c| c == 0) {
            Some(i) => {
                let version_ok = body[0].is_ascii_digit()
                    && body[..i].iter().all(|c| c.is_ascii_graphic())
                    && len >= i + 1 + 4 + 8 + 1 + 2;
                // Filler byte after the connection id and the first 8 scramble bytes.
                let filler = body.get(i + 1 + 4 + 8).is_none_or(|&f| f == 0);
                Some(version_ok && filler)
            }
            None if b.len() >= 4 + len => Some(false),
            None => None,
        };
    }
    if seq != 1 {
        return Some(false);
    }
    // A response: OK, ERR (with '#' SQL state), EOF, or a column count and definitions.
    let ok = match first {
        0x00 => len >= 7,
        0xff => b.get(7) == Some(&b'#') || (b.len() < 8 && len >= 3),
        0xfe => len < 9,
        1..=0xfa => {
            // Column count then a definition packet starting with "\x03def".
            if b.len() < 4 + len + 8 {
                return None;
            }
            let next = &b[4 + len..];
            my_header(next).is_some_and(|(_, s)| s == 2) && next.get(4..8) == Some(b"\x03def")
        }
        _ => false,
    };
    Some(ok)
}

/// Is this a MySQL / MariaDB connection? Server greeting (protocol 10) from the server, or
/// mid-session: a command packet (sequence 0) from the client, or an OK/ERR/EOF/result-set
/// start (sequence 1) from the server.
#[must_use]
pub fn detect_mysql(first_egress: &[u8], first_ingress: &[u8]) -> Option<bool> {
    let e = if first_egress.is_empty() {
        None
    } else {
        my_egress(first_egress)
    };
    let i = if first_ingress.is_empty() {
        None
    } else {
        my_ingress(first_ingress)
    };
    combine(e, i, first_egress.len(), first_ingress.len())
}

#[cfg(test)]
mod tests {
    use super::*;
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
    use super::*;

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
