//! Pure helpers for HTTP/1.x framing: start-line plausibility (used to resync after gaps and
//! mid-stream attach, and by protocol detection) and body-framing rules (RFC 9112 §6).
//!
//! Heads themselves are parsed by `httparse`; the start-line check here is hand-written
//! because `httparse` only parses from a known message start and cannot tell "not HTTP" from
//! "HTTP that started before these bytes" — we need a cheap scanner that says whether a
//! position *looks like* a message start so we can skip to it.

use super::types::Framing;

/// Longest start line we consider while resyncing (longer targets exist but are rare, and
/// such a request would still be parsed when the stream is in sync).
pub(crate) const MAX_START_LINE: usize = 16 * 1024;

/// Whether bytes at a position look like the beginning of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A plausible start line.
    Yes,
    /// Cannot be one.
    No,
    /// A prefix of a plausible start line; more bytes are needed.
    NeedMore,
}

fn is_method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// `HTTP/1.0` or `HTTP/1.1` at the start of `b` (or a prefix of it).
fn version(b: &[u8]) -> Verdict {
    const V: &[u8] = b"HTTP/1.";
    let n = b.len().min(V.len());
    if b[..n] != V[..n] {
        return Verdict::No;
    }
    match b.get(V.len()) {
        None => Verdict::NeedMore,
        Some(b'0' | b'1') => Verdict::Yes,
        Some(_) => Verdict::No,
    }
}

/// Does `b` begin with a plausible request line `METHOD SP target SP HTTP/1.x CRLF`?
pub(crate) fn request_line(b: &[u8]) -> Verdict {
    let mut i = 0;
    while i < b.len() && is_method_char(b[i]) {
        i += 1;
        if i > 24 {
            return Verdict::No;
        }
    }
    if i == b.len() {
        return Verdict::NeedMore;
    }
    if i == 0 || b[i] != b' ' {
        return Verdict::No;
    }
    i += 1;
    let t = i;
    while i < b.len() && b[i] > b' ' && b[i] != 0x7f {
        i += 1;
        if i > MAX_START_LINE {
            return Verdict::No;
        }
    }
    if i == b.len() {
        return Verdict::NeedMore;
    }
    if i == t || b[i] != b' ' {
        return Verdict::No;
    }
    i += 1;
    match version(&b[i..]) {
        Verdict::Yes => {}
        v => return v,
    }
    i += 8;
    match b.get(i..).unwrap_or_default() {
        [] | [b'\r'] => Verdict::NeedMore,
        [b'\n', ..] | [b'\r', b'\n', ..] => Verdict::Yes,
        _ => Verdict::No,
    }
}

/// Does `b` begin with a plausible status line `HTTP/1.x SP 3DIGIT (SP|CR|LF)`?
pub(crate) fn status_line(b: &[u8]) -> Verdict {
    match version(b) {
        Verdict::Yes => {}
        v => return v,
    }
    let rest = &b[8..];
    for (k, want_digit) in [true, true, true, true, false].into_iter().enumerate() {
        let Some(&c) = rest.get(k) else {
            return Verdict::NeedMore;
        };
        let ok = match k {
            0 => c == b' ',
            _ if want_digit => c.is_ascii_digit(),
            _ => matches!(c, b' ' | b'\r' | b'\n'),
        };
        if !ok {
            return Verdict::No;
        }
    }
    Verdict::Yes
}

/// Start-line check for the direction: requests or responses.
pub(crate) fn start_line(b: &[u8], requests: bool) -> Verdict {
    if requests {
        request_line(b)
    } else {
        status_line(b)
    }
}

/// Find the first position in `b` where a plausible start line begins: at `0` if
/// `at_line_start`, else right after a `\n`. Returns the position and the verdict there
/// (`Yes`, or `NeedMore` when the candidate runs to the end of `b`); `None` when there is no
/// candidate at all.
pub(crate) fn find_start(
    b: &[u8],
    requests: bool,
    at_line_start: bool,
) -> Option<(usize, Verdict)> {
    let mut i = 0;
    let mut cand = at_line_start;
    while i < b.len() {
        if cand {
            match start_line(&b[i..], requests) {
                Verdict::No => {}
                v => return Some((i, v)),
            }
        }
        match b[i..].iter().position(|&c| c == b'\n') {
            Some(k) => {
                i += k + 1;
                cand = true;
            }
            None => return None,
        }
    }
    None
}

/// Parse a `Content-Length` value list (`"5"`, or repeated equal values `"5, 5"`).
pub(crate) fn content_length(values: &[&[u8]]) -> Option<Result<u64, ()>> {
    let mut found: Option<u64> = None;
    for v in values {
        for part in v.split(|&c| c == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Some(Err(()));
            }
            let n = part.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
            match found {
                Some(f) if f != n => return Some(Err(())),
                _ => found = Some(n),
            }
        }
    }
    found.map(Ok)
}

/// Is `chunked` the final transfer coding of these `Transfer-Encoding` values?
pub(crate) fn chunked_last(values: &[&[u8]]) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// Body framing of a request (RFC 9112 §6.3). `Err` = invalid framing.
pub(crate) fn request_framing(te: &[&[u8]], cl: &[&[u8]]) -> Result<Framing, ()> {
    if !te.is_empty() {
        // A request whose final coding is not chunked cannot be delimited (400).
        return if chunked_last(te) {
            Ok(Framing::Chunked)
        } else {
            Err(())
        };
    }
    match content_length(cl) {
        None => Ok(Framing::None),
        Some(Ok(n)) => Ok(Framing::Length(n)),
        Some(Err(())) => Err(()),
    }
}

/// Body framing of a final response (RFC 9112 §6.3). `no_body` covers HEAD, 1xx, 204, 304.
pub(crate) fn response_framing(no_body: bool, te: &[&[u8]], cl: &[&[u8]]) -> Framing {
    if no_body {
        return Framing::None;
    }
    if !te.is_empty() {
        return if chunked_last(te) {
            Framing::Chunked
        } else {
            Framing::Close
        };
    }
    match content_length(cl) {
        Some(Ok(n)) => Framing::Length(n),
        // Invalid length: the only safe delimiter left is the close.
        None | Some(Err(())) => Framing::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(request_line(b"GET / HTTP/1.1\r\n"), Verdict::Yes);
        assert_eq!(request_line(b"GET / HTTP/1.0\n"), Verdict::Yes);
        assert_eq!(request_line(b"M-SEARCH * HTTP/1.1\r\n"), Verdict::Yes);
        assert_eq!(request_line(b"GET /a"), Verdict::NeedMore);
        assert_eq!(request_line(b"GET / HTTP/1.1\r"), Verdict::NeedMore);
        assert_eq!(request_line(b"G"), Verdict::NeedMore);
        assert_eq!(request_line(b""), Verdict::NeedMore);
        assert_eq!(request_line(b"get / HTTP/1.1\r\n"), Verdict::No);
        assert_eq!(request_line(b"GET  / HTTP/1.1\r\n"), Verdict::No);
        assert_eq!(request_line(b"PRI * HTTP/2.0\r\n"), Verdict::No);
        assert_eq!(request_line(b"GET / HTTP/1.1x"), Verdict::No);
        assert_eq!(request_line(b"HTTP/1.1 200 OK\r\n"), Verdict::No);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), Verdict::Yes);
        assert_eq!(status_line(b"HTTP/1.0 404\r\n"), Verdict::Yes);
        assert_eq!(status_line(b"HTTP/1.1 20"), Verdict::NeedMore);
        assert_eq!(status_line(b"HTTP/1.1 2000"), Verdict::No);
        assert_eq!(status_line(b"HTTP/2 200"), Verdict::No);
        assert_eq!(status_line(b"GET / HTTP/1.1"), Verdict::No);
    }

    #[test]
    fn finding() {
        assert_eq!(
            find_start(b"xx\r\nGET / HTTP/1.1\r\n", true, true),
            Some((4, Verdict::Yes))
        );
        assert_eq!(find_start(b"GET / HTTP/1.1\r\n", true, false), None);
        assert_eq!(
            find_start(b"ab\nHTTP/1.1 2", false, false),
            Some((3, Verdict::NeedMore))
        );
    }

    #[test]
    fn framing() {
        assert_eq!(content_length(&[b"5, 5"]), Some(Ok(5)));
        assert_eq!(content_length(&[b"5", b"6"]), Some(Err(())));
        assert_eq!(content_length(&[b"-1"]), Some(Err(())));
        assert!(chunked_last(&[b"gzip, Chunked"]));
        assert!(!chunked_last(&[b"chunked, gzip"]));
        assert_eq!(request_framing(&[], &[]), Ok(Framing::None));
        assert_eq!(request_framing(&[b"gzip"], &[]), Err(()));
        assert_eq!(response_framing(false, &[b"gzip"], &[b"3"]), Framing::Close);
        assert_eq!(response_framing(true, &[], &[b"3"]), Framing::None);
        assert_eq!(response_framing(false, &[], &[]), Framing::Close);
    }
}
