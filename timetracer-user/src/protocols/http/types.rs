//! Types produced by the HTTP/1.x parser.
use bytes::Bytes;

/// Which side of the connection the traced process is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The process accepted the connection: requests are ingress, responses egress.
    Server,
    /// The process connected: requests are egress, responses ingress.
    Client,
}

/// One timestamped, positioned observation of stream bytes: when a message's first/last byte
/// went through a syscall, and which thread made that syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// Kernel monotonic timestamp (ns) of the syscall.
    pub ts_ns: u64,
    /// Thread that made the syscall.
    pub tid: u32,
    /// Byte position in the direction's stream.
    pub pos: u64,
}

/// Start line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD target HTTP/1.x`
    Request { method: String, target: String },
    /// `HTTP/1.x status reason`
    Response { status: u16, reason: String },
}

/// A parsed HTTP/1.x message (request or response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMessage {
    pub start: StartLine,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in wire order with the name's original case.
    pub headers: Vec<(String, Bytes)>,
    /// The message body as the application sees it (chunked transfer coding removed), up to
    /// the capture cap.
    pub body: Bytes,
    /// Full body length in bytes (after de-chunking), even when `body` was cut at the cap or
    /// bytes were lost.
    pub body_size: u64,
    /// `body` holds fewer bytes than `body_size` (capture cap reached).
    pub truncated: bool,
    /// Bytes of this message that the capture lost (gaps); 0 when complete.
    pub lost_bytes: u64,
    /// Body framing used on the wire.
    pub framing: Framing,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Bytes)>,
    /// First byte of the message.
    pub first: Mark,
    /// Byte that completed the head (the `\r\n\r\n`).
    pub head_done: Mark,
    /// Last byte of the message.
    pub last: Mark,
    /// Total bytes the message took on the wire (head + framed body).
    pub wire_size: u64,
    /// The message ended before its framing said it would (connection closed, gap).
    pub incomplete: bool,
}

impl HttpMessage {
    /// First header value with this name (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// First header value as a str, if it is UTF-8.
    #[must_use]
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// How a body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD response, 204, 304, 1xx, request without length).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Read until the connection closes (response without length).
    Close,
}

/// A request and its response on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: HttpMessage,
    /// `None` when the connection closed (or the capture stopped) before a response.
    pub response: Option<HttpMessage>,
    /// Interim `1xx` responses (for example `100 Continue`) sent before the final one.
    pub interim: Vec<HttpMessage>,
    /// Index of this exchange on its connection (0-based, in request order).
    pub index: u64,
}

/// Something the connection parser reports, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one Exchange per request; events are moved, not stored in bulk"
)]
pub enum HttpEvent {
    /// A request head was parsed completely (the body may still be arriving). Lets attribution
    /// know a request started before its body is read.
    RequestHead {
        index: u64,
        mark: Mark,
        method: String,
        target: String,
    },
    /// A response started (first byte of its head seen).
    ResponseStarted { index: u64, mark: Mark },
    /// A request/response pair is complete (or ended by close/gap).
    Exchange(Exchange),
    /// The connection switched protocols (`101`, `CONNECT` 2xx); nothing more is parsed.
    Upgraded { index: u64, bytes_after: u64 },
    /// Bytes that could not be parsed as HTTP were skipped (gap resync, garbage); counted.
    Skipped {
        dir_egress: bool,
        bytes: u64,
        reason: &'static str,
    },
}
