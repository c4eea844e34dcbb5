//! Which protocol a connection speaks, from the first bytes of one direction.
//!
//! Pure and port-agnostic: only the bytes decide.
use crate::protocols::http::parse::{self, Verdict};
use crate::protocols::http::types::Side;

/// How far into a direction's first bytes to look for an HTTP/1.x start line (mid-stream).
pub const SCAN_LIMIT: usize = 4096;

/// Outcome of [`detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x.
    Http,
    /// Not HTTP/1.x.
    NotHttp,
    /// Cannot tell yet; call again with more bytes.
    NeedMore,
}

/// Does this direction carry HTTP/1.x? `first_bytes` are the first bytes seen of the
/// direction; `egress` whether the traced process wrote them. Requests are expected where the
/// process reads (`Side::Server`, ingress) or writes (`Side::Client`, egress) requests, status
/// lines otherwise. The start line must begin the bytes, or (mid-stream attach) begin a line
/// within the first [`SCAN_LIMIT`] bytes.
#[must_use]
pub fn detect(first_bytes: &[u8], egress: bool, side: Side) -> Detected {
    let requests = egress == (side == Side::Client);
    let b = &first_bytes[..first_bytes.len().min(SCAN_LIMIT)];
    // TLS record (handshake/alert/application data) and the HTTP/2 preface are not ours.
    if let [0x14..=0x17, 0x03, 0x00..=0x04, ..] = b {
        return Detected::NotHttp;
    }
    if b.starts_with(b"PRI * HTTP/2.0") {
        return Detected::NotHttp;
    }
    match parse::find_start(b, requests, true) {
        Some((_, Verdict::Yes)) => Detected::Http,
        Some((_, _)) => Detected::NeedMore,
        None if first_bytes.len() >= SCAN_LIMIT => Detected::NotHttp,
        None => Detected::NeedMore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects() {
        let req = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\n";
        assert_eq!(detect(req, false, Side::Server), Detected::Http);
        assert_eq!(detect(req, true, Side::Client), Detected::Http);
        assert_eq!(detect(resp, true, Side::Server), Detected::Http);
        assert_eq!(detect(resp, false, Side::Client), Detected::Http);
        // Wrong direction.
        assert_eq!(detect(req, true, Side::Server), Detected::NeedMore);
        assert_eq!(
            detect(b"GET /x HT", false, Side::Server),
            Detected::NeedMore
        );
        // Mid-stream.
        let mut mid = b"tail of a body\r\n".to_vec();
        mid.extend_from_slice(req);
        assert_eq!(detect(&mid, false, Side::Server), Detected::Http);
        assert_eq!(
            detect(&[0x16, 0x03, 0x01, 0x02, 0x00], false, Side::Server),
            Detected::NotHttp
        );
        assert_eq!(
            detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, Side::Server),
            Detected::NotHttp
        );
        assert_eq!(detect(&[0u8; 5000], false, Side::Server), Detected::NotHttp);
        assert_eq!(
            detect(b"\x00\x00\x00\x08\x04\xd2\x16\x2f", false, Side::Server),
            Detected::NeedMore
        );
    }
}
