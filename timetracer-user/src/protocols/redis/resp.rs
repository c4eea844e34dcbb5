//! RESP2/RESP3 values, a streaming (resumable, allocation-capped) reader, and their JSON form.
//!
//! The reader consumes bytes as they come, keeps at most a byte budget of string data and a
//! bounded number of elements per top-level value (the rest is parsed, counted and dropped),
//! and reports malformed input as an error instead of guessing. It never panics.
use base64::Engine as _;
use serde_json::{Value, json};

/// Deepest aggregate nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest simple string / error / big number / inline line (Redis' own inline limit).
pub const MAX_LINE: usize = 64 * 1024;
/// Longest length/count header line (`$123\r\n`, `*4\r\n`, `:-17\r\n`, `,1.5e10\r\n`).
const MAX_HEADER: usize = 64;
/// Largest bulk string length accepted (anything larger is garbage, not Redis).
pub const MAX_BULK: u64 = 1 << 32;
/// Largest aggregate element count accepted.
pub const MAX_COUNT: u64 = 1 << 32;
/// Elements kept per top-level value; further elements are parsed and counted only.
pub const MAX_ITEMS: usize = 100_000;

/// A string as kept: `data` is its first bytes, `size` its full length on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob {
    pub data: Vec<u8>,
    pub size: u64,
}

impl Blob {
    /// A complete (not truncated) blob.
    #[must_use]
    pub fn full(data: &[u8]) -> Self {
        Self {
            data: data.to_vec(),
            size: data.len() as u64,
        }
    }
    /// Fewer bytes kept than were on the wire.
    #[must_use]
    pub fn truncated(&self) -> bool {
        (self.data.len() as u64) < self.size
    }
    /// The kept bytes as text, when they are UTF-8 (a truncated blob may end mid-character).
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match std::str::from_utf8(&self.data) {
            Ok(s) => Some(s),
            Err(e) if self.truncated() && e.error_len().is_none() => {
                std::str::from_utf8(self.data.get(..e.valid_up_to()).unwrap_or_default()).ok()
            }
            Err(_) => None,
        }
    }
    /// JSON: a string when UTF-8, else `{"base64": ...}`; truncated blobs become
    /// `{"text"|"base64": prefix, "truncated": true, "size": N}`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let b64 = || base64::engine::general_purpose::STANDARD.encode(&self.data);
        match (self.text(), self.truncated()) {
            (Some(s), false) => Value::String(s.to_owned()),
            (None, false) => json!({ "base64": b64() }),
            (Some(s), true) => json!({ "text": s, "truncated": true, "size": self.size }),
            (None, true) => json!({ "base64": b64(), "truncated": true, "size": self.size }),
        }
    }
}

/// An aggregate: the elements kept and the count declared on the wire (for maps and
/// attributes: keys and values, flattened).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agg {
    pub items: Vec<Resp>,
    pub total: u64,
}

/// One RESP2/RESP3 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    /// `+OK`
    Simple(Blob),
    /// `-ERR ...`
    Error(Blob),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello`
    Bulk(Blob),
    /// `$-1`, `*-1` (RESP2) and `_` (RESP3).
    Null,
    /// `#t` / `#f`
    Bool(bool),
    /// `,3.14` (wire text kept: `inf`, `-inf`, `nan` are legal).
    Double(String),
    /// `(3492890328409238509324850943850943825024385`
    BigNumber(String),
    /// `!21\r\nSYNTAX invalid syntax`
    BulkError(Blob),
    /// `=15\r\ntxt:Some string` (format and text).
    Verbatim { format: String, text: Blob },
    /// `*N`
    Array(Agg),
    /// `~N`
    Set(Agg),
    /// `>N` (out-of-band data: pub/sub messages, invalidations).
    Push(Agg),
    /// `%N` (keys and values flattened in `items`).
    Map(Agg),
    /// `|N` attributes followed by the value they describe.
    Attribute { attrs: Agg, value: Box<Self> },
}

impl Resp {
    /// The error text of `-ERR ...` / `!N` replies.
    #[must_use]
    pub fn error_text(&self) -> Option<String> {
        match self {
            Self::Error(b) | Self::BulkError(b) => {
                Some(String::from_utf8_lossy(&b.data).into_owned())
            }
            Self::Attribute { value, .. } => value.error_text(),
            _ => None,
        }
    }
    /// A string-like value's bytes (simple, bulk, verbatim).
    #[must_use]
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Simple(b) | Self::Bulk(b) => Some(&b.data),
            Self::Verbatim { text, .. } => Some(&text.data),
            Self::Attribute { value, .. } => value.bytes(),
            _ => None,
        }
    }
    /// The elements of an array, set or push.
    #[must_use]
    pub fn elements(&self) -> Option<&[Self]> {
        match self {
            Self::Array(a) | Self::Set(a) | Self::Push(a) => Some(&a.items),
            Self::Attribute { value, .. } => value.elements(),
            _ => None,
        }
    }
    /// `+status` equal to `s`.
    #[must_use]
    pub fn is_status(&self, s: &str) -> bool {
        matches!(self, Self::Simple(b) if b.data == s.as_bytes())
    }
    /// Some part of the value was not kept (budget or element cap).
    #[must_use]
    pub fn truncated(&self) -> bool {
        match self {
            Self::Simple(b) | Self::Error(b) | Self::Bulk(b) | Self::BulkError(b) => b.truncated(),
            Self::Verbatim { text, .. } => text.truncated(),
            Self::Array(a) | Self::Set(a) | Self::Push(a) | Self::Map(a) => {
                (a.items.len() as u64) < a.total || a.items.iter().any(Self::truncated)
            }
            Self::Attribute { attrs, value } => {
                (attrs.items.len() as u64) < attrs.total
                    || attrs.items.iter().any(Self::truncated)
                    || value.truncated()
            }
            _ => false,
        }
    }

    /// The JSON form documented in `docs/protocols/redis.md`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::Simple(b) | Self::Bulk(b) => b.to_json(),
            Self::Error(b) | Self::BulkError(b) => {
                let mut m = serde_json::Map::new();
                m.insert(
                    "error".into(),
                    Value::String(String::from_utf8_lossy(&b.data).into_owned()),
                );
                if b.truncated() {
                    m.insert("truncated".into(), Value::Bool(true));
                    m.insert("size".into(), json!(b.size));
                }
                Value::Object(m)
            }
            Self::Integer(i) => json!(i),
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Double(s) => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
                    .map_or_else(|| json!({ "double": s }), Value::Number),
                _ => json!({ "double": s }),
            },
            Self::BigNumber(s) => json!({ "bignum": s }),
            Self::Verbatim { format, text } => {
                json!({ "verbatim": format, "text": text.to_json() })
            }
            Self::Array(a) | Self::Set(a) | Self::Push(a) => agg_json(a, false),
            Self::Map(a) => agg_json(a, true),
            Self::Attribute { attrs, value } => {
                json!({ "attributes": agg_json(attrs, true), "value": value.to_json() })
            }
        }
    }
}

fn agg_json(a: &Agg, pairs: bool) -> Value {
    let mut out: Vec<Value> = if pairs {
        a.items
            .chunks(2)
            .map(|kv| Value::Array(kv.iter().map(Resp::to_json).collect()))
            .collect()
    } else {
        a.items.iter().map(Resp::to_json).collect()
    };
    let kept = a.items.len() as u64;
    if kept < a.total {
        let omitted = if pairs {
            a.total.div_ceil(2) - kept / 2
        } else {
            a.total - kept
        };
        out.push(json!({ "truncated": true, "omitted": omitted }));
    }
    Value::Array(out)
}

/// What [`Reader::feed`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Everything given was consumed; the value continues.
    NeedMore,
    /// A complete top-level value ends at the consumed count.
    Value(Resp),
    /// Not RESP at the consumed count (the offending byte is included).
    Error(&'static str),
}

#[derive(Debug)]
enum St {
    Type,
    Line {
        ty: u8,
        buf: Vec<u8>,
    },
    Bulk {
        ty: u8,
        left: u64,
        blob: Blob,
    },
    /// The `\r\n` after a bulk payload; `stage` 0 expects `\r`, 1 expects `\n`.
    Crlf {
        stage: u8,
        value: Option<Resp>,
    },
}

#[derive(Debug)]
struct Frame {
    ty: u8,
    expected: u64,
    seen: u64,
    items: Vec<Resp>,
    keep: bool,
}

/// Resumable reader of one RESP value at a time.
#[derive(Debug)]
pub struct Reader {
    st: St,
    stack: Vec<Frame>,
    /// String bytes still to keep for the current top-level value.
    budget: usize,
    max_bytes: usize,
    items: usize,
    /// A RESP3-only type was read since the last [`Reader::take_resp3`].
    resp3: bool,
}

const TYPES: &[u8] = b"+-:$*_#,(!=%~>|";

/// Is `b` a RESP type byte?
#[must_use]
pub fn is_type_byte(b: u8) -> bool {
    TYPES.contains(&b)
}

impl Reader {
    /// A reader keeping at most `max_bytes` of string data per top-level value.
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        Self {
            st: St::Type,
            stack: Vec::new(),
            budget: max_bytes,
            max_bytes,
            items: 0,
            resp3: false,
        }
    }

    /// Between two values (nothing partially read).
    #[must_use]
    pub fn idle(&self) -> bool {
        matches!(self.st, St::Type) && self.stack.is_empty()
    }

    /// Drops any partially read value.
    pub fn reset(&mut self) {
        self.st = St::Type;
        self.stack.clear();
        self.budget = self.max_bytes;
        self.items = 0;
    }

    /// Whether a RESP3-only type was seen since the last call; clears the flag.
    pub fn take_resp3(&mut self) -> bool {
        std::mem::take(&mut self.resp3)
    }

    fn keep_bytes(&mut self, want: usize) -> usize {
        let n = want.min(self.budget);
        self.budget -= n;
        n
    }

    fn line_blob(&mut self, line: &[u8]) -> Blob {
        let n = self.keep_bytes(line.len());
        Blob {
            data: line.get(..n).unwrap_or_default().to_vec(),
            size: line.len() as u64,
        }
    }

    /// Consumes bytes of `input` up to the end of one value (or all of it). Returns the
    /// consumed count and what was found. After [`Step::Error`] the reader is reset.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Step) {
        let mut i = 0;
        loop {
            let scalar = match &mut self.st {
                St::Type => {
                    let Some(&ty) = input.get(i) else {
                        return (i, Step::NeedMore);
                    };
                    i += 1;
                    if !is_type_byte(ty) {
                        self.reset();
                        return (i, Step::Error("bad-type-byte"));
                    }
                    if b"_#,(!=%~>|".contains(&ty) {
                        self.resp3 = true;
                    }
                    self.st = St::Line {
                        ty,
                        buf: Vec::new(),
                    };
                    continue;
                }
                St::Line { ty, buf } => {
                    let ty = *ty;
                    let rest = input.get(i..).unwrap_or_default();
                    let limit = if matches!(ty, b'+' | b'-' | b'(') {
                        MAX_LINE
                    } else {
                        MAX_HEADER
                    };
                    match rest.iter().position(|&b| b == b'\n') {
                        None => {
                            buf.extend_from_slice(rest);
                            i = input.len();
                            if buf.len() > limit + 1 {
                                self.reset();
                                return (i, Step::Error("line-too-long"));
                            }
                            return (i, Step::NeedMore);
                        }
                        Some(j) => {
                            buf.extend_from_slice(rest.get(..j).unwrap_or_default());
                            i += j + 1;
                            if buf.pop() != Some(b'\r') || buf.len() > limit {
                                self.reset();
                                return (i, Step::Error("bad-line"));
                            }
                            let line = std::mem::take(buf);
                            self.st = St::Type;
                            match self.on_line(ty, &line) {
                                Ok(Some(v)) => v,
                                Ok(None) => continue,
                                Err(e) => {
                                    self.reset();
                                    return (i, Step::Error(e));
                                }
                            }
                        }
                    }
                }
                St::Bulk { ty, left, blob } => {
                    let rest = input.get(i..).unwrap_or_default();
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    let room = self.budget.min(take);
                    blob.data
                        .extend_from_slice(rest.get(..room).unwrap_or_default());
                    self.budget -= room;
                    *left -= take as u64;
                    i += take;
                    if *left > 0 {
                        return (i, Step::NeedMore);
                    }
                    let blob = std::mem::take(blob);
                    let v = match *ty {
                        b'!' => Resp::BulkError(blob),
                        b'=' => verbatim(blob),
                        _ => Resp::Bulk(blob),
                    };
                    self.st = St::Crlf {
                        stage: 0,
                        value: Some(v),
                    };
                    continue;
                }
                St::Crlf { stage, value } => {
                    let Some(&b) = input.get(i) else {
                        return (i, Step::NeedMore);
                    };
                    i += 1;
                    let want = if *stage == 0 { b'\r' } else { b'\n' };
                    if b != want {
                        self.reset();
                        return (i, Step::Error("bulk-without-crlf"));
                    }
                    if *stage == 0 {
                        *stage = 1;
                        continue;
                    }
                    value.take().unwrap_or(Resp::Null)
                }
            };
            self.st = St::Type;
            if let Some(v) = self.complete(scalar) {
                self.reset();
                return (i, Step::Value(v));
            }
        }
    }

    /// Handles a complete line; `Ok(Some)` is a finished scalar, `Ok(None)` means reading
    /// continues (bulk payload or aggregate elements).
    fn on_line(&mut self, ty: u8, line: &[u8]) -> Result<Option<Resp>, &'static str> {
        let v = match ty {
            b'+' => Resp::Simple(self.line_blob(line)),
            b'-' => Resp::Error(self.line_blob(line)),
            b':' => Resp::Integer(parse_i64(line).ok_or("bad-integer")?),
            b'_' if line.is_empty() => Resp::Null,
            b'#' => match line {
                b"t" => Resp::Bool(true),
                b"f" => Resp::Bool(false),
                _ => return Err("bad-boolean"),
            },
            b',' => {
                let s = std::str::from_utf8(line).map_err(|_| "bad-double")?;
                let ok = s.parse::<f64>().is_ok() || matches!(s, "inf" | "-inf" | "nan");
                if !ok {
                    return Err("bad-double");
                }
                Resp::Double(s.to_owned())
            }
            b'(' => {
                let digits = line.strip_prefix(b"-").unwrap_or(line);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err("bad-big-number");
                }
                Resp::BigNumber(String::from_utf8_lossy(line).into_owned())
            }
            b'$' | b'!' | b'=' => {
                let n = parse_i64(line).ok_or("bad-length")?;
                if n == -1 && ty == b'$' {
                    Resp::Null
                } else if n < 0 || n as u64 > MAX_BULK || (ty == b'=' && n < 4) {
                    return Err("bad-length");
                } else {
                    self.st = St::Bulk {
                        ty,
                        left: n as u64,
                        blob: Blob {
                            data: Vec::new(),
                            size: n as u64,
                        },
                    };
                    return Ok(None);
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = parse_i64(line).ok_or("bad-count")?;
                if n == -1 && ty == b'*' {
                    Resp::Null
                } else if n < 0 || n as u64 > MAX_COUNT {
                    return Err("bad-count");
                } else {
                    let n = n as u64;
                    let expected = match ty {
                        b'%' => n * 2,
                        b'|' => n * 2 + 1,
                        _ => n,
                    };
                    if expected == 0 {
                        build(ty, Vec::new(), 0)
                    } else {
                        if self.stack.len() >= MAX_DEPTH {
                            return Err("too-deep");
                        }
                        let keep =
                            self.stack.last().is_none_or(|f| f.keep) && self.items < MAX_ITEMS;
                        self.stack.push(Frame {
                            ty,
                            expected,
                            seen: 0,
                            items: Vec::new(),
                            keep,
                        });
                        return Ok(None);
                    }
                }
            }
            _ => return Err("bad-line"),
        };
        Ok(Some(v))
    }

    /// Adds a finished value to the enclosing aggregates; returns the top-level value when
    /// it is complete.
    fn complete(&mut self, mut v: Resp) -> Option<Resp> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Some(v);
            };
            top.seen += 1;
            if top.keep && self.items < MAX_ITEMS {
                top.items.push(v);
                self.items += 1;
            }
            if top.seen < top.expected {
                return None;
            }
            let f = self.stack.pop()?;
            v = build(f.ty, f.items, f.expected);
        }
    }
}

fn build(ty: u8, mut items: Vec<Resp>, expected: u64) -> Resp {
    match ty {
        b'~' => Resp::Set(Agg {
            items,
            total: expected,
        }),
        b'>' => Resp::Push(Agg {
            items,
            total: expected,
        }),
        b'%' => Resp::Map(Agg {
            items,
            total: expected,
        }),
        b'|' => {
            let value = if items.len() as u64 == expected {
                items.pop().unwrap_or(Resp::Null)
            } else {
                Resp::Null
            };
            Resp::Attribute {
                attrs: Agg {
                    items,
                    total: expected.saturating_sub(1),
                },
                value: Box::new(value),
            }
        }
        _ => Resp::Array(Agg {
            items,
            total: expected,
        }),
    }
}

fn verbatim(blob: Blob) -> Resp {
    // `fmt:` prefix (3 bytes + colon); the budget may have cut into it.
    let format = blob
        .data
        .get(..3)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default();
    let data = blob.data.get(4..).unwrap_or_default().to_vec();
    Resp::Verbatim {
        format,
        text: Blob {
            data,
            size: blob.size.saturating_sub(4),
        },
    }
}

/// Parses a RESP integer (optional `-`, digits, no `+`, no spaces).
#[must_use]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Encodes a command as a RESP array of bulk strings.
#[must_use]
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<Resp> {
        let mut r = Reader::new(1 << 20);
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (n, step) = r.feed(rest);
            rest = &rest[n..];
            match step {
                Step::Value(v) => out.push(v),
                Step::NeedMore => break,
                Step::Error(e) => panic!(
                    "error {e} at {:?}",
                    String::from_utf8_lossy(&rest[..rest.len().min(40)])
                ),
            }
        }
        out
    }

    #[test]
    fn resp3_types_to_json() {
        let wire =
            b"+OK\r\n-ERR no\r\n:-5\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n_\r\n#t\r\n,1.5\r\n,inf\r\n\
(12345678901234567890\r\n!5\r\nERR x\r\n=7\r\ntxt:abc\r\n*2\r\n:1\r\n$1\r\nx\r\n~1\r\n+a\r\n\
%1\r\n+k\r\n:2\r\n>2\r\n+message\r\n+hi\r\n|1\r\n+ttl\r\n:3\r\n+v\r\n*0\r\n$0\r\n\r\n";
        let vals: Vec<Value> = read_all(wire).iter().map(Resp::to_json).collect();
        let want = json!([
            "OK", {"error": "ERR no"}, -5, "abc", null, null, null, true, 1.5, {"double": "inf"},
            {"bignum": "12345678901234567890"}, {"error": "ERR x"},
            {"verbatim": "txt", "text": "abc"}, [1, "x"], ["a"], [["k", 2]], ["message", "hi"],
            {"attributes": [["ttl", 3]], "value": "v"}, [], ""
        ]);
        assert_eq!(Value::Array(vals), want);
    }

    #[test]
    fn byte_at_a_time_and_budget() {
        let wire = b"*3\r\n$5\r\nhello\r\n$3\r\n\xff\xfe\x00\r\n*1\r\n:7\r\n";
        let mut r = Reader::new(6);
        let mut got = None;
        for (k, b) in wire.iter().enumerate() {
            let (n, step) = r.feed(std::slice::from_ref(b));
            assert_eq!(n, 1);
            if let Step::Value(v) = step {
                assert_eq!(k, wire.len() - 1);
                got = Some(v);
            }
        }
        let v = got.expect("value");
        assert!(v.truncated());
        assert_eq!(
            v.to_json(),
            json!(["hello", {"base64": "/w==", "truncated": true, "size": 3}, [7]])
        );
    }

    #[test]
    fn errors() {
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"*-2\r\n",
            b":1\n",
            b"$1\r\nab\r\n",
            b"#x\r\n",
        ] {
            let mut r = Reader::new(100);
            let (_, step) = r.feed(bad);
            assert!(matches!(step, Step::Error(_)), "{bad:?} -> {step:?}");
            assert!(r.idle());
        }
    }

    #[test]
    fn element_cap() {
        let mut wire = format!("*{}\r\n", MAX_ITEMS + 5).into_bytes();
        for _ in 0..MAX_ITEMS + 5 {
            wire.extend_from_slice(b":1\r\n");
        }
        let v = read_all(&wire).remove(0);
        let j = v.to_json();
        let arr = j.as_array().expect("array");
        assert_eq!(arr.len(), MAX_ITEMS + 1);
        assert_eq!(arr[MAX_ITEMS], json!({"truncated": true, "omitted": 5}));
    }
}
