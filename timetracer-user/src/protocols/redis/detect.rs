//! Is a client connection Redis? Decided from the first bytes seen in each direction
//! (port-agnostic), also when tracing joined the connection mid-session. `Some(true)` /
//! `Some(false)`, or `None` when more bytes are needed.
use super::{Verdict, command_start, reply_start};

/// How far into the first bytes a mid-session RESP array start is looked for.
pub const SCAN_LIMIT: usize = 4096;

/// Redis: the client's first bytes are a RESP command (`*N\r\n$M\r\n...`) or a known inline
/// command line; mid-session, a line boundary within the first [`SCAN_LIMIT`] bytes followed
/// by a RESP command. With no client bytes yet, a server push stream (`>N\r\n`, or
/// `*N\r\n$M\r\n` of a RESP2 subscriber) also counts.
#[must_use]
pub fn detect_redis(first_egress: &[u8], first_ingress: &[u8]) -> Option<bool> {
    let e = &first_egress[..first_egress.len().min(SCAN_LIMIT)];
    if !e.is_empty() {
        match command_start(e, true) {
            Verdict::Yes => return Some(true),
            Verdict::NeedMore => return None,
            Verdict::No => {}
        }
        // TLS, HTTP/2 preface and other binary protocols are not ours.
        if matches!(e.first(), Some(0x14..=0x17 | 0x00..=0x08)) {
            return Some(false);
        }
        // Mid-session: the tail of a command, then a whole one.
        let mut need_more = false;
        for i in 1..e.len() {
            if e[i - 1] == b'\n' && e[i] == b'*' {
                match command_start(&e[i..], false) {
                    Verdict::Yes => return Some(true),
                    Verdict::NeedMore => need_more = true,
                    Verdict::No => {}
                }
            }
        }
        if need_more || first_egress.len() < SCAN_LIMIT && !e.contains(&b'\n') {
            return None;
        }
        return Some(false);
    }
    let i = &first_ingress[..first_ingress.len().min(64)];
    match i.first() {
        None => None,
        Some(b'>') => match reply_start(i, false) {
            Verdict::Yes => Some(true),
            Verdict::NeedMore => None,
            Verdict::No => Some(false),
        },
        // A RESP2 subscriber's message: `*3\r\n$7\r\nmessage\r\n`.
        Some(b'*') => match command_start(i, false) {
            Verdict::Yes => Some(true),
            Verdict::NeedMore => None,
            Verdict::No => Some(false),
        },
        // Anything else: wait for the client to speak.
        Some(_) => None,
    }
}
