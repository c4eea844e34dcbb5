//! PostgreSQL message framing and payload decoding (protocol 3.0, "Message Formats" of the
//! PostgreSQL documentation). Pure functions over byte slices; nothing here panics on any input.
use bytes::Bytes;

use crate::protocols::http::types::Mark;

/// Protocol 3.0 startup code.
pub const STARTUP_V3: u32 = 196_608;
/// `SSLRequest` code.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code.
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// Messages longer than this are not buffered: their bytes are counted and discarded.
pub const MAX_BUFFERED: usize = 16 << 20;
/// A message longer than this is not accepted as a resync candidate.
pub const MAX_RESYNC_LEN: u32 = 1 << 20;

/// What a framed message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular message with its type byte.
    Typed(u8),
    /// `StartupMessage` (no type byte).
    Startup,
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssRequest,
    /// `CancelRequest`.
    Cancel,
    /// The single byte answering `SSLRequest`/`GSSENCRequest` (`S`, `G` or `N`).
    Answer(u8),
}

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    /// The whole message as on the wire (header included). Empty payload when `oversized`.
    pub raw: Bytes,
    pub first: Mark,
    pub last: Mark,
    /// Set when the message was longer than [`MAX_BUFFERED`]: its full wire length. `raw` then
    /// holds only the 5-byte header.
    pub oversized: Option<u64>,
}

impl Msg {
    /// Type byte (`0` for untyped messages).
    #[must_use]
    pub fn typ(&self) -> u8 {
        match self.kind {
            Kind::Typed(t) | Kind::Answer(t) => t,
            _ => 0,
        }
    }
    /// Payload after the header (type + length, or length + code).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        let skip = match self.kind {
            Kind::Typed(_) => 5,
            Kind::Answer(_) => 1,
            _ => 8,
        };
        self.raw.get(skip..).unwrap_or(&[])
    }
    /// Bytes on the wire.
    #[must_use]
    pub fn wire_len(&self) -> u64 {
        self.oversized.unwrap_or(self.raw.len() as u64)
    }
}

/// Result of looking for a message at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message of this many bytes (header included) starts here.
    Msg(Kind, u64),
    /// Too few bytes to tell.
    NeedMore,
    /// No valid message starts here.
    Invalid,
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Frontend (client) message type bytes.
pub const FRONTEND_TYPES: &[u8] = b"SHXcQfpPBEDCFd";
/// Backend (server) message type bytes.
pub const BACKEND_TYPES: &[u8] = b"Z123nIscKRSTDtCENGHWAVvd";

/// Minimum and exact lengths (the int32 after the type byte) per type.
fn len_ok(t: u8, len: u32, frontend: bool) -> bool {
    if len < 4 {
        return false;
    }
    if frontend {
        match t {
            b'S' | b'H' | b'X' | b'c' => len == 4,
            b'Q' | b'f' | b'p' => len >= 5,
            b'P' => len >= 8,
            b'B' => len >= 12,
            b'E' => len >= 9,
            b'D' | b'C' => len >= 6,
            b'F' => len >= 14,
            b'd' => true,
            _ => false,
        }
    } else {
        match t {
            b'Z' => len == 5,
            b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' => len == 4,
            b'K' => len >= 8,
            b'R' => len >= 8,
            b'S' | b'T' | b'D' | b't' => len >= 6,
            b'C' | b'E' | b'N' => len >= 5,
            b'G' | b'H' | b'W' => len >= 7,
            b'A' => len >= 10,
            b'V' => len >= 8,
            b'v' => len >= 12,
            b'd' => true,
            _ => false,
        }
    }
}

/// A typed message at the start of `b`?
#[must_use]
pub fn frame_typed(b: &[u8], frontend: bool) -> Frame {
    let Some(&t) = b.first() else {
        return Frame::NeedMore;
    };
    let Some(len) = b.get(1..5).and_then(be_u32) else {
        let known: &[u8] = if frontend {
            FRONTEND_TYPES
        } else {
            BACKEND_TYPES
        };
        return if known.contains(&t) {
            Frame::NeedMore
        } else {
            Frame::Invalid
        };
    };
    if !len_ok(t, len, frontend) || len > (1 << 30) {
        return Frame::Invalid;
    }
    Frame::Msg(Kind::Typed(t), u64::from(len) + 1)
}

/// A startup-phase (untyped) message at the start of `b`?
#[must_use]
pub fn frame_untyped(b: &[u8]) -> Frame {
    let (Some(len), Some(code)) = (b.get(0..4).and_then(be_u32), b.get(4..8).and_then(be_u32))
    else {
        return Frame::NeedMore;
    };
    let kind = match code {
        STARTUP_V3 if (9..=10_000).contains(&len) => Kind::Startup,
        SSL_REQUEST if len == 8 => Kind::SslRequest,
        GSSENC_REQUEST if len == 8 => Kind::GssRequest,
        CANCEL_REQUEST if len == 16 => Kind::Cancel,
        // Other 3.x minor versions.
        c if c >> 16 == 3 && (9..=10_000).contains(&len) => Kind::Startup,
        _ => return Frame::Invalid,
    };
    Frame::Msg(kind, u64::from(len))
}

/// Does a plausible typed message start at `b[0]`: valid header, sane length, and either the
/// buffer ends exactly after it or another valid header follows? Used to find a message
/// boundary mid-stream (attach, gap). `Some(true)` yes, `Some(false)` no, `None` need more.
#[must_use]
pub fn plausible_at(b: &[u8], frontend: bool) -> Option<bool> {
    match frame_typed(b, frontend) {
        Frame::Invalid => Some(false),
        Frame::NeedMore => None,
        Frame::Msg(_, len) => {
            if len > u64::from(MAX_RESYNC_LEN) {
                return Some(false);
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if b.len() < len {
                return None;
            }
            if b.len() == len {
                // Ends exactly at the buffer end: plausible only for messages that commonly
                // end a write.
                return Some(true);
            }
            match frame_typed(&b[len..], frontend) {
                Frame::Invalid => Some(false),
                Frame::NeedMore => None,
                Frame::Msg(..) => Some(true),
            }
        }
    }
}

/// A cursor over a message payload.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    #[must_use]
    pub fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (&v, rest) = self.b.split_first()?;
        self.b = rest;
        Some(v)
    }
    pub fn i16(&mut self) -> Option<i16> {
        let v = i16::from_be_bytes(self.b.get(..2)?.try_into().ok()?);
        self.b = &self.b[2..];
        Some(v)
    }
    pub fn i32(&mut self) -> Option<i32> {
        let v = i32::from_be_bytes(self.b.get(..4)?.try_into().ok()?);
        self.b = &self.b[4..];
        Some(v)
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.b.get(..n)?;
        self.b = &self.b[n..];
        Some(v)
    }
    /// A NUL-terminated string (lossy UTF-8).
    pub fn cstr(&mut self) -> Option<String> {
        let i = self.b.iter().position(|&c| c == 0)?;
        let s = String::from_utf8_lossy(&self.b[..i]).into_owned();
        self.b = &self.b[i + 1..];
        Some(s)
    }
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.b
    }
}

/// `Parse`: statement name, SQL, parameter type OIDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parse {
    pub name: String,
    pub sql: String,
    pub param_types: Vec<u32>,
}

#[must_use]
pub fn parse_parse(p: &[u8]) -> Option<Parse> {
    let mut r = Reader::new(p);
    let name = r.cstr()?;
    let sql = r.cstr()?;
    let n = r.i16()?;
    let mut param_types = Vec::new();
    for _ in 0..n.max(0) {
        param_types.push(r.i32()? as u32);
    }
    Some(Parse {
        name,
        sql,
        param_types,
    })
}

/// `Bind`: portal, statement, parameter formats and values, result formats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bind {
    pub portal: String,
    pub statement: String,
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<Bytes>>,
    pub result_formats: Vec<i16>,
}

#[must_use]
pub fn parse_bind(p: &[u8]) -> Option<Bind> {
    let mut r = Reader::new(p);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nf = r.i16()?;
    let mut param_formats = Vec::new();
    for _ in 0..nf.max(0) {
        param_formats.push(r.i16()?);
    }
    let np = r.i16()?;
    let mut params = Vec::new();
    for _ in 0..np.max(0) {
        let len = r.i32()?;
        if len < 0 {
            params.push(None);
        } else {
            let b = r.bytes(usize::try_from(len).ok()?)?;
            params.push(Some(Bytes::copy_from_slice(b)));
        }
    }
    let nr = r.i16()?;
    let mut result_formats = Vec::new();
    for _ in 0..nr.max(0) {
        result_formats.push(r.i16()?);
    }
    Some(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// Format code `i` of a format list (none = all text, one = applies to all).
#[must_use]
pub fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats.len() {
        0 => 0,
        1 => formats[0],
        _ => formats.get(i).copied().unwrap_or(0),
    }
}

/// One `RowDescription` field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

#[must_use]
pub fn parse_row_description(p: &[u8]) -> Option<Vec<Column>> {
    let mut r = Reader::new(p);
    let n = r.i16()?;
    let mut cols = Vec::new();
    for _ in 0..n.max(0) {
        cols.push(Column {
            name: r.cstr()?,
            table_oid: r.i32()? as u32,
            column: r.i16()?,
            type_oid: r.i32()? as u32,
            type_size: r.i16()?,
            type_modifier: r.i32()?,
            format: r.i16()?,
        });
    }
    Some(cols)
}

/// `DataRow` / `FunctionCallResponse` values (`None` = SQL NULL).
#[must_use]
pub fn parse_data_row(p: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut r = Reader::new(p);
    let n = r.i16()?;
    let mut vals = Vec::new();
    for _ in 0..n.max(0) {
        let len = r.i32()?;
        if len < 0 {
            vals.push(None);
        } else {
            vals.push(Some(r.bytes(usize::try_from(len).ok()?)?));
        }
    }
    Some(vals)
}

/// `ParameterDescription` type OIDs.
#[must_use]
pub fn parse_param_description(p: &[u8]) -> Option<Vec<u32>> {
    let mut r = Reader::new(p);
    let n = r.i16()?;
    let mut v = Vec::new();
    for _ in 0..n.max(0) {
        v.push(r.i32()? as u32);
    }
    Some(v)
}

/// `ErrorResponse` / `NoticeResponse` fields as `(code, value)`.
#[must_use]
pub fn parse_fields(p: &[u8]) -> Vec<(u8, String)> {
    let mut r = Reader::new(p);
    let mut out = Vec::new();
    while let Some(code) = r.u8() {
        if code == 0 {
            break;
        }
        match r.cstr() {
            Some(v) => out.push((code, v)),
            None => break,
        }
    }
    out
}

/// `StartupMessage` parameters (`user`, `database`, ...).
#[must_use]
pub fn parse_startup(p: &[u8]) -> Vec<(String, String)> {
    let mut r = Reader::new(p);
    let mut out = Vec::new();
    while let Some(k) = r.cstr() {
        if k.is_empty() {
            break;
        }
        match r.cstr() {
            Some(v) => out.push((k, v)),
            None => break,
        }
    }
    out
}

/// Name of an authentication request code.
#[must_use]
pub fn auth_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        2 => "kerberos_v5",
        3 => "cleartext",
        5 => "md5",
        7 => "gss",
        8 => "gss_continue",
        9 => "sspi",
        10 => "sasl",
        11 => "sasl_continue",
        12 => "sasl_final",
        _ => "unknown",
    }
}

/// Replaces the payload of a message (everything after its 5-byte header) by zeros of equal
/// length, or, for `AuthenticationSASLContinue`/`SASLFinal`, everything after the auth code.
#[must_use]
pub fn redact(raw: &Bytes, keep: usize) -> Bytes {
    let mut v = raw.to_vec();
    for b in v.iter_mut().skip(keep) {
        *b = 0;
    }
    Bytes::from(v)
}

/// The first SQL keyword, upper-cased (comments and leading punctuation skipped).
#[must_use]
pub fn first_keyword(sql: &str) -> String {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |x| x.1).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |x| x.1).trim_start();
        } else if let Some(rest) = s.strip_prefix('(') {
            s = rest.trim_start();
        } else {
            break;
        }
    }
    s.chars()
        .take_while(char::is_ascii_alphabetic)
        .take(32)
        .collect::<String>()
        .to_ascii_uppercase()
}
