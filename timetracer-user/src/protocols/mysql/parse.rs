//! MySQL client/server protocol: packet framing and payload decoding (protocol 4.1, MariaDB
//! extensions where they matter). Pure functions; nothing here panics on any input.
use base64::Engine as _;
use serde_json::{Value, json};

/// Capability flags used here.
pub mod cap {
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
}

/// Server status flags used here.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
}

/// Command bytes.
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Name of a command byte (`COM_QUERY`...).
#[must_use]
pub fn command_name(c: u8) -> &'static str {
    match c {
        0x00 => "COM_SLEEP",
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0b => "COM_CONNECT",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        0x0e => "COM_PING",
        0x0f => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        0x11 => "COM_CHANGE_USER",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        0x1e => "COM_BINLOG_DUMP_GTID",
        0x1f => "COM_RESET_CONNECTION",
        0xfa => "COM_STMT_BULK_EXECUTE",
        _ => "COM_UNKNOWN",
    }
}

/// Is `(len, first payload byte)` a plausible client command packet with sequence 0?
#[must_use]
pub fn plausible_command(len: usize, cmd: u8) -> bool {
    match cmd {
        com::QUIT | com::PING | com::STATISTICS | com::RESET_CONNECTION => len == 1,
        com::QUERY | com::INIT_DB | com::STMT_PREPARE => (2..(1 << 24)).contains(&len),
        com::STMT_EXECUTE => (10..(1 << 24)).contains(&len),
        com::STMT_CLOSE | com::STMT_RESET => len == 5,
        com::STMT_FETCH => len == 9,
        com::SET_OPTION => len == 3,
        com::STMT_SEND_LONG_DATA => len >= 7,
        com::FIELD_LIST | com::CHANGE_USER => len >= 2,
        0xfa => len >= 7,
        _ => false,
    }
}

/// A cursor over a packet payload.
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
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.b.get(..n)?;
        self.b = &self.b[n..];
        Some(v)
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    /// Length-encoded integer (`None` also for the NULL marker `0xFB`).
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            v @ 0..=0xfa => Some(u64::from(v)),
            0xfc => self.u16().map(u64::from),
            0xfd => {
                let b = self.bytes(3)?;
                Some(u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16)
            }
            0xfe => self.u64(),
            _ => None,
        }
    }
    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.bytes(n)
    }
    pub fn lenenc_str(&mut self) -> Option<String> {
        self.lenenc_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    /// NUL-terminated string; the rest when there is no NUL.
    pub fn cstr(&mut self) -> Option<String> {
        if self.b.is_empty() {
            return None;
        }
        let i = self.b.iter().position(|&c| c == 0).unwrap_or(self.b.len());
        let s = String::from_utf8_lossy(&self.b[..i]).into_owned();
        self.b = self.b.get(i + 1..).unwrap_or(&[]);
        Some(s)
    }
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.b
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// Initial handshake packet (protocol 10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: u32,
    pub mariadb_capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: String,
}

#[must_use]
pub fn parse_greeting(p: &[u8]) -> Option<Greeting> {
    let mut r = Reader::new(p);
    if r.u8()? != 10 {
        return None;
    }
    let server_version = r.cstr()?;
    let connection_id = r.u32()?;
    r.bytes(8)?;
    r.u8()?;
    let cap_lo = u32::from(r.u16()?);
    let mut g = Greeting {
        server_version,
        connection_id,
        capabilities: cap_lo,
        ..Greeting::default()
    };
    if r.is_empty() {
        return Some(g);
    }
    g.charset = r.u8()?;
    g.status = r.u16()?;
    g.capabilities |= u32::from(r.u16()?) << 16;
    let auth_len = r.u8()?;
    r.bytes(6)?;
    g.mariadb_capabilities = r.u32()?;
    if g.capabilities & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(auth_len).saturating_sub(8).max(13);
        r.bytes(n.min(r.rest().len()))?;
    }
    if g.capabilities & cap::PLUGIN_AUTH != 0 {
        g.auth_plugin = r.cstr().unwrap_or_default();
    }
    Some(g)
}

/// `HandshakeResponse41` (user and database kept; where the auth response lies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub charset: u8,
    pub user: String,
    /// Byte range of the auth response in the payload (redacted in raw bytes).
    pub auth_range: (usize, usize),
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub attributes: Vec<(String, String)>,
    /// Only the `SSLRequest` prefix: TLS follows.
    pub ssl_request: bool,
}

#[must_use]
pub fn parse_handshake_response(p: &[u8]) -> Option<HandshakeResponse> {
    let mut r = Reader::new(p);
    let capabilities = r.u32()?;
    if capabilities & cap::PROTOCOL_41 == 0 {
        return None;
    }
    r.u32()?;
    let charset = r.u8()?;
    r.bytes(23)?;
    let mut h = HandshakeResponse {
        capabilities,
        charset,
        ..HandshakeResponse::default()
    };
    if r.is_empty() {
        h.ssl_request = capabilities & cap::SSL != 0;
        return Some(h);
    }
    h.user = r.cstr()?;
    let start;
    let len;
    if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let before = p.len() - r.rest().len();
        let n = usize::try_from(r.lenenc()?).ok()?;
        start = p.len() - r.rest().len();
        let _ = before;
        len = n;
        r.bytes(n)?;
    } else if capabilities & cap::SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8()?);
        start = p.len() - r.rest().len();
        len = n;
        r.bytes(n)?;
    } else {
        start = p.len() - r.rest().len();
        let s = r.cstr().unwrap_or_default();
        len = s.len();
    }
    h.auth_range = (start, start + len);
    if capabilities & cap::CONNECT_WITH_DB != 0 {
        h.database = r.cstr();
    }
    if capabilities & cap::PLUGIN_AUTH != 0 {
        h.auth_plugin = r.cstr();
    }
    if capabilities & cap::CONNECT_ATTRS != 0
        && let Some(all) = r.lenenc_bytes()
    {
        let mut a = Reader::new(all);
        while !a.is_empty() {
            match (a.lenenc_str(), a.lenenc_str()) {
                (Some(k), Some(v)) => h.attributes.push((k, v)),
                _ => break,
            }
        }
    }
    Some(h)
}

/// OK packet (header `0x00`, or `0xFE` as end of result set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ok {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: String,
}

#[must_use]
pub fn parse_ok(p: &[u8]) -> Option<Ok> {
    let mut r = Reader::new(p);
    r.u8()?;
    let affected_rows = r.lenenc()?;
    let last_insert_id = r.lenenc()?;
    let status = r.u16()?;
    let warnings = r.u16()?;
    let info = if r.is_empty() {
        String::new()
    } else {
        // With CLIENT_SESSION_TRACK the info is length-encoded, else the rest.
        let rest = r.rest();
        let mut r2 = r.clone();
        match r2.lenenc_bytes() {
            Some(b) if status & 0x4000 != 0 || r2.is_empty() => String::from_utf8_lossy(b).into(),
            _ => String::from_utf8_lossy(rest).into(),
        }
    };
    Some(Ok {
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
    })
}

impl Ok {
    #[must_use]
    pub fn json(&self) -> Value {
        json!({
            "affected_rows": self.affected_rows,
            "last_insert_id": self.last_insert_id,
            "status_flags": self.status,
            "warnings": self.warnings,
            "info": self.info,
        })
    }
}

/// EOF packet: (warnings, status).
#[must_use]
pub fn parse_eof(p: &[u8]) -> Option<(u16, u16)> {
    let mut r = Reader::new(p);
    if r.u8()? != 0xfe {
        return None;
    }
    Some((r.u16()?, r.u16()?))
}

/// Is this an EOF (5 bytes) or an OK-with-`0xFE`-header terminator (`< 0xFFFFFF`)?
#[must_use]
pub fn is_terminator(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 0xff_ffff
}

/// Status flags of a terminator (EOF or OK form).
#[must_use]
pub fn terminator_status(p: &[u8]) -> u16 {
    if p.len() == 5 {
        parse_eof(p).map_or(0, |e| e.1)
    } else {
        parse_ok(p).map_or(0, |o| o.status)
    }
}

/// ERR packet: code, SQL state, message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Err {
    pub code: u16,
    pub sql_state: String,
    pub message: String,
}

#[must_use]
pub fn parse_err(p: &[u8]) -> Option<Err> {
    let mut r = Reader::new(p);
    if r.u8()? != 0xff {
        return None;
    }
    let code = r.u16()?;
    let mut sql_state = String::new();
    if r.rest().first() == Some(&b'#') {
        r.u8()?;
        sql_state = String::from_utf8_lossy(r.bytes(5)?).into();
    }
    Some(Err {
        code,
        sql_state,
        message: String::from_utf8_lossy(r.rest()).into(),
    })
}

/// Column definition (protocol 4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnDef {
    pub schema: String,
    pub table: String,
    pub org_table: String,
    pub name: String,
    pub org_name: String,
    pub charset: u16,
    pub length: u32,
    pub type_code: u8,
    pub flags: u16,
    pub decimals: u8,
}

#[must_use]
pub fn parse_column_def(p: &[u8]) -> Option<ColumnDef> {
    let mut r = Reader::new(p);
    let _catalog = r.lenenc_bytes()?;
    let schema = r.lenenc_str()?;
    let table = r.lenenc_str()?;
    let org_table = r.lenenc_str()?;
    let name = r.lenenc_str()?;
    let org_name = r.lenenc_str()?;
    r.lenenc()?;
    Some(ColumnDef {
        schema,
        table,
        org_table,
        name,
        org_name,
        charset: r.u16()?,
        length: r.u32()?,
        type_code: r.u8()?,
        flags: r.u16()?,
        decimals: r.u8()?,
    })
}

impl ColumnDef {
    #[must_use]
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "org_name": self.org_name,
            "table": self.table,
            "org_table": self.org_table,
            "schema": self.schema,
            "type": type_name(self.type_code),
            "type_code": self.type_code,
            "charset": self.charset,
            "length": self.length,
            "flags": self.flags,
            "decimals": self.decimals,
        })
    }
    fn unsigned(&self) -> bool {
        self.flags & 0x20 != 0
    }
}

/// Name of a column type code.
#[must_use]
pub fn type_name(t: u8) -> &'static str {
    match t {
        0x00 => "DECIMAL",
        0x01 => "TINY",
        0x02 => "SHORT",
        0x03 => "LONG",
        0x04 => "FLOAT",
        0x05 => "DOUBLE",
        0x06 => "NULL",
        0x07 => "TIMESTAMP",
        0x08 => "LONGLONG",
        0x09 => "INT24",
        0x0a => "DATE",
        0x0b => "TIME",
        0x0c => "DATETIME",
        0x0d => "YEAR",
        0x0f => "VARCHAR",
        0x10 => "BIT",
        0xf5 => "JSON",
        0xf6 => "NEWDECIMAL",
        0xf7 => "ENUM",
        0xf8 => "SET",
        0xf9 => "TINY_BLOB",
        0xfa => "MEDIUM_BLOB",
        0xfb => "LONG_BLOB",
        0xfc => "BLOB",
        0xfd => "VAR_STRING",
        0xfe => "STRING",
        0xff => "GEOMETRY",
        _ => "UNKNOWN",
    }
}

/// Bytes as `{"base64": "..."}`.
#[must_use]
pub fn b64(b: &[u8]) -> Value {
    json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
}

const BINARY_CHARSET: u16 = 63;

fn bytes_value(b: &[u8], charset: u16) -> Value {
    if charset == BINARY_CHARSET {
        return b64(b);
    }
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => b64(b),
    }
}

/// A text-protocol row (`None` = wrong shape).
#[must_use]
pub fn parse_text_row(p: &[u8], cols: &[ColumnDef]) -> Option<Value> {
    let mut r = Reader::new(p);
    let mut out = Vec::with_capacity(cols.len());
    for c in cols {
        if r.rest().first() == Some(&0xfb) {
            r.u8()?;
            out.push(Value::Null);
            continue;
        }
        let b = r.lenenc_bytes()?;
        // Numbers and dates come as text in the text protocol; keep them as strings.
        let charset = if matches!(c.type_code, 0xf9..=0xfc | 0x10 | 0xff | 0xfd | 0xfe | 0x0f) {
            c.charset
        } else {
            0
        };
        out.push(bytes_value(b, charset));
    }
    if !r.is_empty() && cols.is_empty() {
        return None;
    }
    Some(Value::Array(out))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// One binary-protocol value of type `t` (`unsigned` for integers).
pub fn binary_value(r: &mut Reader<'_>, t: u8, unsigned: bool, charset: u16) -> Option<Value> {
    Some(match t {
        0x01 => {
            let v = r.u8()?;
            if unsigned { json!(v) } else { json!(v as i8) }
        }
        0x02 | 0x0d => {
            let v = r.u16()?;
            if unsigned || t == 0x0d {
                json!(v)
            } else {
                json!(v as i16)
            }
        }
        0x03 | 0x09 => {
            let v = r.u32()?;
            if unsigned { json!(v) } else { json!(v as i32) }
        }
        0x08 => {
            let v = r.u64()?;
            if unsigned { json!(v) } else { json!(v as i64) }
        }
        0x04 => float(f64::from(f32::from_le_bytes(r.bytes(4)?.try_into().ok()?))),
        0x05 => float(f64::from_le_bytes(r.bytes(8)?.try_into().ok()?)),
        0x06 => Value::Null,
        0x07 | 0x0a | 0x0c => {
            let n = usize::from(r.u8()?);
            let b = r.bytes(n)?;
            let mut d = Reader::new(b);
            let (y, mo, da) = (
                d.u16().unwrap_or(0),
                d.u8().unwrap_or(0),
                d.u8().unwrap_or(0),
            );
            let (h, mi, s) = (
                d.u8().unwrap_or(0),
                d.u8().unwrap_or(0),
                d.u8().unwrap_or(0),
            );
            let us = d.u32().unwrap_or(0);
            let date = format!("{y:04}-{mo:02}-{da:02}");
            Value::String(if t == 0x0a {
                date
            } else if us > 0 {
                format!("{date}T{h:02}:{mi:02}:{s:02}.{us:06}")
            } else {
                format!("{date}T{h:02}:{mi:02}:{s:02}")
            })
        }
        0x0b => {
            let n = usize::from(r.u8()?);
            let b = r.bytes(n)?;
            let mut d = Reader::new(b);
            let neg = d.u8().unwrap_or(0) != 0;
            let days = d.u32().unwrap_or(0);
            let (h, mi, s) = (
                d.u8().unwrap_or(0),
                d.u8().unwrap_or(0),
                d.u8().unwrap_or(0),
            );
            let us = d.u32().unwrap_or(0);
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if neg { "-" } else { "" };
            Value::String(if us > 0 {
                format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
            } else {
                format!("{sign}{hours:02}:{mi:02}:{s:02}")
            })
        }
        0x00 | 0xf6 | 0xf5 | 0xf7 | 0xf8 => bytes_value(r.lenenc_bytes()?, 0),
        _ => bytes_value(r.lenenc_bytes()?, charset),
    })
}

/// A binary-protocol row (`COM_STMT_EXECUTE` result).
#[must_use]
pub fn parse_binary_row(p: &[u8], cols: &[ColumnDef]) -> Option<Value> {
    let mut r = Reader::new(p);
    if r.u8()? != 0 {
        return None;
    }
    let bitmap = r.bytes((cols.len() + 7 + 2) / 8)?;
    let mut out = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(Value::Null);
            continue;
        }
        out.push(binary_value(&mut r, c.type_code, c.unsigned(), c.charset)?);
    }
    Some(Value::Array(out))
}

/// Decoded `COM_STMT_EXECUTE` request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Execute {
    pub statement_id: u32,
    pub flags: u8,
    /// `(type, unsigned)` per parameter when the packet carried them.
    pub types: Option<Vec<(u8, bool)>>,
    pub params: Vec<Value>,
    pub param_types_used: Vec<(u8, bool)>,
}

/// Decodes `COM_STMT_EXECUTE` with `num_params` (from the prepare response) and the types
/// last bound for the statement. `None` when the payload does not fit.
#[must_use]
pub fn parse_execute(
    p: &[u8],
    num_params: Option<usize>,
    last_types: Option<&[(u8, bool)]>,
) -> Option<Execute> {
    let mut r = Reader::new(p);
    if r.u8()? != com::STMT_EXECUTE {
        return None;
    }
    let statement_id = r.u32()?;
    let flags = r.u8()?;
    r.u32()?;
    let mut ex = Execute {
        statement_id,
        flags,
        ..Execute::default()
    };
    let n = num_params?;
    if n == 0 {
        return Some(ex);
    }
    let bitmap = r.bytes(n.div_ceil(8))?.to_vec();
    let bound = r.u8()?;
    let types: Vec<(u8, bool)> = if bound == 1 {
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let ty = r.u8()?;
            let fl = r.u8()?;
            t.push((ty, fl & 0x80 != 0));
        }
        ex.types = Some(t.clone());
        t
    } else {
        last_types?.to_vec()
    };
    if types.len() != n {
        return None;
    }
    for (i, (ty, uns)) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            ex.params.push(Value::Null);
        } else {
            ex.params.push(binary_value(&mut r, *ty, *uns, 0)?);
        }
    }
    ex.param_types_used = types;
    Some(ex)
}

/// The first SQL keyword, upper-cased.
#[must_use]
pub fn first_keyword(sql: &str) -> String {
    crate::protocols::postgres::parse::first_keyword(sql)
}
