//! Is a client connection MySQL / MariaDB? Decided from the first bytes of either direction, at
//! the start of a connection or mid-session. Ports are never used. `Some(true)` = MySQL,
//! `Some(false)` = not it, `None` = need more bytes.
use super::parse as my;
use crate::protocols::detect::combine;

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
