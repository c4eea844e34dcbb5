//! Is a client connection PostgreSQL? Decided from the first bytes of either direction, at the
//! start of a connection or mid-session (attach to a pooled connection). Ports are never used.
//! `Some(true)` = PostgreSQL, `Some(false)` = not it, `None` = need more bytes.
use super::parse as pg;
use crate::protocols::detect::combine;

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
