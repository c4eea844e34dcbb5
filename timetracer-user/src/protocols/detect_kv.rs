//! Is a connection Redis or MongoDB? Decided from the first bytes seen in each direction
//! (port-agnostic), also when tracing joined the connection mid-session.
//!
//! Both return `Some(true)` / `Some(false)`, or `None` when more bytes are needed.
use super::mongodb;
use super::redis::{self, Verdict};

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
        match redis::command_start(e, true) {
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
                match redis::command_start(&e[i..], false) {
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
        Some(b'>') => match redis::reply_start(i, false) {
            Verdict::Yes => Some(true),
            Verdict::NeedMore => None,
            Verdict::No => Some(false),
        },
        // A RESP2 subscriber's message: `*3\r\n$7\r\nmessage\r\n`.
        Some(b'*') => match redis::command_start(i, false) {
            Verdict::Yes => Some(true),
            Verdict::NeedMore => None,
            Verdict::No => Some(false),
        },
        // Anything else: wait for the client to speak.
        Some(_) => None,
    }
}

/// MongoDB: a request header (`OP_MSG`, `OP_QUERY`, `OP_COMPRESSED` or a legacy write
/// opcode, sane length, `responseTo` 0, `OP_MSG` flag bits and first section checked) at the
/// start of the client's bytes, or a reply header (`OP_MSG` / `OP_REPLY` / `OP_COMPRESSED`,
/// `responseTo` set) at the start of the server's.
#[must_use]
pub fn detect_mongodb(first_egress: &[u8], first_ingress: &[u8]) -> Option<bool> {
    let e = mongodb::header_ok(first_egress, true);
    let i = mongodb::header_ok(first_ingress, false);
    match (e, i) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        // The client wrote something that is not a request; the server's side is unknown.
        (Some(false), None) if first_ingress.is_empty() => Some(false),
        _ if first_egress.is_empty() && first_ingress.is_empty() => None,
        (Some(false), None) | (None, Some(false)) => None,
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
