//! Redis's redaction hook: the values of keys matching the policy's glob patterns
//! (`--redact-redis-key`, default `*session*`, `*token*`, …), and hash fields whose name is on
//! the key list (`HSET user:1 password x`).
//!
//! - Writes: the value arguments of `SET k v`, `SETEX k ttl v`, `MSET k v …`, `HSET k f v …`,
//!   `LPUSH k v …`, `SADD k m …`, `ZADD k [options] score member …` (members), `ZREM`,
//!   `ZSCORE`, `ZINCRBY`, …, `XADD k [options] id field value …` (every value of a matching
//!   stream, else the values of fields on the key list), and the arguments of a script
//!   (`EVAL`, `EVALSHA`, `FCALL`, their `_RO` forms) one of whose keys matches, in
//!   `detail.args` and in the command's wire bytes;
//! - reads: the reply of `GET k`, `GETDEL`, `LRANGE`, `SMEMBERS`, `ZRANGE`, `ZPOPMIN`, …,
//!   `HGET`, `HGETALL` (values), `MGET` (the elements of matching keys), a script's reply
//!   when one of its keys matches, the field values of `XRANGE`/`XREVRANGE` entries and of
//!   the matching streams of `XREAD`/`XREADGROUP` (ids and field names kept), in
//!   `detail.reply` and in the reply's bytes.
//!
//! `AUTH` / `HELLO … AUTH` / `MIGRATE … AUTH` / `CONFIG SET masterauth` arguments are removed
//! by the parser itself (`conn.rs`), whatever the policy. Wire strings are overwritten with
//! `*`, same length. `detail.redacted` = `{"args": [i, …], "reply": true, "values": n}`
//! (`args` indexes `detail.args`); replay's mock lets those match any value.
use serde_json::{Value, json};

use crate::protocols::ProtoEvent;
use crate::protocols::redact::{Applied, blank, db_call, note, redact_value, rewrite};
use crate::redact::RedactionPolicy;

/// How a command's arguments (command word = 0) hold keys and values.
enum Shape {
    /// The key at 1; the values at these indexes (`usize::MAX`: every argument from `from`).
    KeyValues { from: usize, to: usize },
    /// Key/value pairs from 1 (`MSET`).
    Pairs,
    /// The key at 1, then field/value pairs (`HSET`).
    Hash,
    /// The key at 1; writes nothing secret, but the reply holds its value(s).
    Read,
    /// Keys from 1; the reply's i-th element is the i-th key's value (`MGET`).
    MultiRead,
    /// The key at 1, field names from 2; the reply holds the fields' values.
    HashRead,
    /// The key at 1; the reply holds field/value pairs (values at odd positions).
    HashPairs,
    /// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT c]] id field value …`.
    StreamAdd,
    /// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member …`.
    SortedAdd,
    /// `EVAL script numkeys key … arg …` (and `EVALSHA`, `FCALL`): every argument and the
    /// reply when a key matches.
    Script,
    /// `XRANGE key …`: the reply is stream entries.
    StreamRead,
    /// `XREAD … STREAMS key … id …`: the reply holds each stream's entries.
    StreamsRead,
}

fn shape(method: &str) -> Option<Shape> {
    use Shape::{
        Hash, HashPairs, HashRead, KeyValues, MultiRead, Pairs, Read, Script, SortedAdd, StreamAdd,
        StreamRead, StreamsRead,
    };
    let all = |from| KeyValues {
        from,
        to: usize::MAX,
    };
    let one = |i| KeyValues { from: i, to: i + 1 };
    Some(match method {
        "SET" | "SETNX" | "GETSET" | "APPEND" | "LPUSHX" | "RPUSHX" => one(2),
        "SETEX" | "PSETEX" | "SETRANGE" | "LSET" | "LREM" => one(3),
        "LINSERT" => one(4),
        "LPUSH" | "RPUSH" | "SADD" | "SREM" | "SISMEMBER" | "SMISMEMBER" | "PFADD" | "ZREM"
        | "ZSCORE" | "ZMSCORE" | "ZRANK" | "ZREVRANK" => all(2),
        "ZINCRBY" => one(3),
        "ZADD" => SortedAdd,
        "XADD" => StreamAdd,
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO" => Script,
        "XRANGE" | "XREVRANGE" => StreamRead,
        "XREAD" | "XREADGROUP" => StreamsRead,
        "MSET" | "MSETNX" => Pairs,
        "HSET" | "HMSET" | "HSETNX" => Hash,
        "GET" | "GETDEL" | "GETEX" | "GETRANGE" | "SUBSTR" | "LPOP" | "RPOP" | "LRANGE"
        | "LINDEX" | "SMEMBERS" | "SRANDMEMBER" | "SPOP" | "SINTER" | "SUNION" | "SDIFF"
        | "ZRANGE" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZRANGEBYLEX" | "ZREVRANGEBYSCORE"
        | "ZREVRANGEBYLEX" | "ZPOPMIN" | "ZPOPMAX" | "ZRANDMEMBER" | "HVALS" | "DUMP" => Read,
        "MGET" => MultiRead,
        "HGET" | "HMGET" => HashRead,
        "HGETALL" => HashPairs,
        _ => return None,
    })
}

/// Does the reply of this write carry the old value (`SET … GET`, `GETSET`)?
fn write_returns_value(method: &str, args: &[Vec<u8>]) -> bool {
    method == "GETSET"
        || (method == "SET" && args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"GET")))
}

/// What to redact in one call: argument indexes (command word = 0) and reply parts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    args: Vec<usize>,
    reply: Reply,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Reply {
    #[default]
    Keep,
    /// Every string of the reply.
    All,
    /// These elements of the top-level aggregate (whole).
    Elements(Vec<usize>),
    /// The field values of the stream entries the reply is (`XRANGE`).
    Entries,
    /// The field values of the entries of these streams (`XREAD`: the reply pairs each
    /// stream's name with its entries).
    Streams(Vec<Vec<u8>>),
}

/// Upper-case `a` equals `word`.
fn is_word(a: Option<&Vec<u8>>, words: &[&str]) -> bool {
    a.is_some_and(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w.as_bytes())))
}

/// `XADD`: the index of the entry id (after the options).
fn xadd_id(args: &[Vec<u8>]) -> usize {
    let mut i = 2;
    loop {
        if is_word(args.get(i), &["NOMKSTREAM"]) {
            i += 1;
        } else if is_word(args.get(i), &["MAXLEN", "MINID"]) {
            i += 1;
            if is_word(args.get(i), &["=", "~"]) {
                i += 1;
            }
            i += 1; // the threshold
            if is_word(args.get(i), &["LIMIT"]) {
                i += 2;
            }
        } else {
            return i;
        }
    }
}

/// `ZADD`: the index of the first score (after the options).
fn zadd_first(args: &[Vec<u8>]) -> usize {
    let mut i = 2;
    while is_word(args.get(i), &["NX", "XX", "GT", "LT", "CH", "INCR"]) {
        i += 1;
    }
    i
}

/// `XREAD`/`XREADGROUP`: the stream names (the first half of what follows `STREAMS`).
fn xread_keys(args: &[Vec<u8>]) -> &[Vec<u8>] {
    let Some(s) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
        return &[];
    };
    let rest = &args[s + 1..];
    &rest[..rest.len() / 2]
}

fn plan(method: &str, args: &[Vec<u8>], p: &RedactionPolicy) -> Plan {
    let mut out = Plan::default();
    let Some(shape) = shape(method) else {
        return out;
    };
    let key = |i: usize| args.get(i).is_some_and(|k| p.redis_key_matches(k));
    let field = |i: usize| {
        args.get(i)
            .is_some_and(|f| std::str::from_utf8(f).is_ok_and(|f| p.key_matches(f)))
    };
    match shape {
        Shape::KeyValues { from, to } => {
            if key(1) {
                out.args.extend(from..to.min(args.len()));
                if write_returns_value(method, args) {
                    out.reply = Reply::All;
                }
            }
        }
        Shape::Pairs => {
            out.args.extend(
                (1..args.len())
                    .step_by(2)
                    .filter(|&i| key(i))
                    .map(|i| i + 1),
            );
        }
        Shape::Hash => {
            let whole = key(1);
            out.args.extend(
                (2..args.len())
                    .step_by(2)
                    .filter(|&i| whole || field(i))
                    .map(|i| i + 1),
            );
        }
        Shape::Read => {
            if key(1) {
                out.reply = Reply::All;
            }
        }
        Shape::MultiRead => {
            let e: Vec<usize> = (1..args.len()).filter(|&i| key(i)).map(|i| i - 1).collect();
            if !e.is_empty() {
                out.reply = Reply::Elements(e);
            }
        }
        Shape::HashRead => {
            if key(1) {
                out.reply = Reply::All;
            } else {
                let e: Vec<usize> = (2..args.len())
                    .filter(|&i| field(i))
                    .map(|i| i - 2)
                    .collect();
                if !e.is_empty() {
                    out.reply = if method == "HGET" {
                        Reply::All
                    } else {
                        Reply::Elements(e)
                    };
                }
            }
        }
        Shape::HashPairs => {
            out.reply = Reply::Elements(Vec::new()); // resolved on the reply (field names)
            if key(1) {
                out.reply = Reply::All;
            }
        }
        Shape::StreamAdd => {
            let whole = key(1);
            out.args.extend(
                (xadd_id(args) + 1..args.len())
                    .step_by(2)
                    .filter(|&i| whole || field(i))
                    .map(|i| i + 1),
            );
        }
        Shape::SortedAdd => {
            if key(1) {
                out.args
                    .extend((zadd_first(args) + 1..args.len()).step_by(2));
            }
        }
        Shape::Script => {
            let n = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            let keys = 3..(3 + n).min(args.len());
            if keys.clone().any(key) {
                out.args.extend(keys.end..args.len());
                out.reply = Reply::All;
            }
        }
        Shape::StreamRead => {
            if key(1) {
                out.reply = Reply::Entries;
            }
        }
        Shape::StreamsRead => {
            let keys: Vec<Vec<u8>> = xread_keys(args)
                .iter()
                .filter(|k| p.redis_key_matches(k))
                .cloned()
                .collect();
            if !keys.is_empty() {
                out.reply = Reply::Streams(keys);
            }
        }
    }
    out.args.retain(|&i| i < args.len());
    out
}

/// A RESP value in a byte buffer: its string content (leaves) or its elements (aggregates).
#[derive(Debug)]
struct Node {
    /// Bytes of a string's content (bulk, simple, verbatim, big number), clamped.
    content: Option<std::ops::Range<usize>>,
    children: Vec<Node>,
    end: usize,
}

/// The RESP value at `pos` (`None`: not RESP, or cut before its header ends).
fn node(b: &[u8], pos: usize, depth: u32) -> Option<Node> {
    let line_end = pos + b.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
    let ty = *b.get(pos)?;
    let line = &b[pos + 1..line_end];
    let after = line_end + 2;
    let num = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    match ty {
        b'+' | b'(' => Some(Node {
            content: Some(pos + 1..line_end),
            children: Vec::new(),
            end: after,
        }),
        b'-' | b':' | b'_' | b'#' | b',' => Some(Node {
            content: None,
            children: Vec::new(),
            end: after,
        }),
        b'$' | b'=' | b'!' => {
            let n = num()?;
            let Ok(n) = usize::try_from(n) else {
                return Some(Node {
                    content: None,
                    children: Vec::new(),
                    end: after,
                });
            };
            // A verbatim string's `txt:` prefix is its format, not content.
            let skip = if ty == b'=' { 4.min(n) } else { 0 };
            let content =
                (ty != b'!').then(|| (after + skip).min(b.len())..(after + n).min(b.len()));
            Some(Node {
                content,
                children: Vec::new(),
                end: after + n + 2,
            })
        }
        b'*' | b'~' | b'>' | b'%' | b'|' if depth < 32 => {
            let n = num()?;
            let Ok(n) = usize::try_from(n) else {
                return Some(Node {
                    content: None,
                    children: Vec::new(),
                    end: after,
                });
            };
            let count = if matches!(ty, b'%' | b'|') {
                n.saturating_mul(2)
            } else {
                n
            };
            let mut children = Vec::new();
            let mut i = after;
            for _ in 0..count {
                let Some(c) = node(b, i, depth + 1) else {
                    break;
                };
                i = c.end;
                children.push(c);
            }
            let attribute = ty == b'|';
            let mut me = Node {
                content: None,
                children,
                end: i,
            };
            if attribute {
                // Attributes precede the value they describe: the node is that value.
                let v = node(b, i, depth + 1)?;
                me = v;
            }
            Some(me)
        }
        _ => None,
    }
}

/// Blanks every string of `n`; how many.
fn blank_all(b: &mut [u8], n: &Node) -> u64 {
    let mut done = 0;
    if let Some(r) = &n.content {
        blank(b, r.start, r.len(), b'*');
        done += 1;
    }
    for c in &n.children {
        done += blank_all(b, c);
    }
    done
}

/// Every string of a JSON reply replaced; how many.
fn redact_json_all(v: &mut Value) -> u64 {
    match v {
        Value::Array(a) => a.iter_mut().map(redact_json_all).sum(),
        Value::Object(o) if o.contains_key("verbatim") => {
            o.get_mut("text").map_or(0, |t| u64::from(redact_value(t)))
        }
        Value::Object(o) if o.contains_key("value") => {
            o.get_mut("value").map_or(0, redact_json_all)
        }
        Value::Object(o) if o.contains_key("error") => 0,
        Value::Object(_) | Value::String(_) => u64::from(redact_value(v)),
        _ => 0,
    }
}

/// `HGETALL`'s value positions whose field name (the element before) is a secret key, or all.
fn hash_pairs(fields: &[Option<String>], p: &RedactionPolicy) -> Vec<usize> {
    fields
        .chunks(2)
        .enumerate()
        .filter(|(_, kv)| kv[0].as_deref().is_some_and(|f| p.key_matches(f)))
        .map(|(i, _)| 2 * i + 1)
        .collect()
}

/// The hook of the registry's Redis entry.
pub fn redact(e: &mut ProtoEvent, p: &RedactionPolicy) -> Applied {
    let Some(call) = db_call(e) else {
        return Applied::default();
    };
    // The command's arguments, from the wire (the detail's may be capped or base64).
    let req = node(&call.raw_request, 0, 0);
    let raw_args: Vec<Vec<u8>> = match &req {
        Some(n) if !n.children.is_empty() => n
            .children
            .iter()
            .map(|c| {
                c.content
                    .clone()
                    .map_or_else(Vec::new, |r| call.raw_request[r].to_vec())
            })
            .collect(),
        _ => call
            .raw_request
            .split(|&c| c == b' ' || c == b'\r' || c == b'\n')
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    };
    let method = call.method.clone();
    let mut pl = plan(&method, &raw_args, p);
    // The words the method took (`CLIENT SETNAME` = 2): `detail.args` starts after them.
    let skip = method.split(' ').count();
    let mut values = 0u64;
    if !pl.args.is_empty() {
        let args = pl.args.clone();
        rewrite(&mut call.raw_request, |b| match &req {
            Some(n) if !n.children.is_empty() => {
                for &i in &args {
                    if let Some(r) = n.children.get(i).and_then(|c| c.content.clone()) {
                        blank(b, r.start, r.len(), b'*');
                    }
                }
            }
            _ => inline_blank(b, &args),
        });
        if let Some(a) = call.detail.get_mut("args").and_then(Value::as_array_mut) {
            for &i in &args {
                if let Some(v) = i.checked_sub(skip).and_then(|k| a.get_mut(k)) {
                    values += u64::from(redact_value(v));
                }
            }
        }
    }
    if pl.reply == Reply::Elements(Vec::new()) {
        // HGETALL of a key that is not secret: the values of secret fields.
        let fields: Vec<Option<String>> = match call.detail.get("reply") {
            Some(Value::Array(a)) => a
                .iter()
                .flat_map(|x| match x {
                    Value::Array(kv) => kv.clone(),
                    other => vec![other.clone()],
                })
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        pl.reply = Reply::Elements(hash_pairs(&fields, p));
    }
    let streams = match &pl.reply {
        Reply::Entries => Some(None),
        Reply::Streams(keys) => Some(Some(keys.clone())),
        _ => None,
    };
    if let Some(keys) = &streams {
        let resp = node(&call.raw_response, 0, 0);
        rewrite(&mut call.raw_response, |b| {
            if let Some(n) = &resp {
                blank_streams(b, n, keys.as_deref());
            }
        });
        if let Some(r) = call.detail.get_mut("reply") {
            values += redact_json_streams(r, keys.as_deref());
        }
    }
    let reply_elems = match &pl.reply {
        Reply::Keep | Reply::Entries | Reply::Streams(_) => None,
        Reply::All => Some(None),
        Reply::Elements(e) if e.is_empty() => None,
        Reply::Elements(e) => Some(Some(e.clone())),
    };
    if let Some(which) = &reply_elems {
        let resp = node(&call.raw_response, 0, 0);
        rewrite(&mut call.raw_response, |b| {
            let Some(n) = &resp else { return };
            match which {
                None => {
                    blank_all(b, n);
                }
                Some(e) => {
                    for &i in e {
                        if let Some(c) = n.children.get(i) {
                            blank_all(b, c);
                        }
                    }
                }
            }
        });
        if let Some(r) = call.detail.get_mut("reply") {
            values += match which {
                None => redact_json_all(r),
                Some(e) => redact_reply_elements(r, e),
            };
        }
    }
    if !pl.args.is_empty() || reply_elems.is_some() || streams.is_some() {
        let args: Vec<usize> = pl.args.iter().filter_map(|i| i.checked_sub(skip)).collect();
        if !args.is_empty() {
            note(&mut call.detail, "args", json!(args));
        }
        if reply_elems.is_some() || streams.is_some() {
            note(&mut call.detail, "reply", json!(true));
        }
        note(&mut call.detail, "values", json!(values));
    }
    Applied { values }
}

/// The field values of the stream entries in `entries` (`[[id, [field, value, …]], …]`);
/// how many strings.
fn blank_entries(b: &mut [u8], entries: &Node) -> u64 {
    let mut done = 0;
    for e in &entries.children {
        if let Some(fields) = e.children.get(1) {
            for v in fields.children.iter().skip(1).step_by(2) {
                done += blank_all(b, v);
            }
        }
    }
    done
}

/// Wire side of [`Reply::Entries`] (`keys` = `None`) and [`Reply::Streams`]: an `XREAD`
/// reply pairs each stream's name with its entries, as two-element arrays (RESP2) or as a
/// flat map (RESP3).
fn blank_streams(b: &mut [u8], n: &Node, keys: Option<&[Vec<u8>]>) {
    let Some(keys) = keys else {
        blank_entries(b, n);
        return;
    };
    let name_matches = |b: &[u8], k: &Node| {
        k.content.clone().is_some_and(|r| {
            keys.iter()
                .any(|key| b.get(r.clone()) == Some(key.as_slice()))
        })
    };
    let flat = n.children.first().is_some_and(|c| c.content.is_some());
    if flat {
        for kv in n.children.chunks(2) {
            if let [k, entries] = kv
                && name_matches(b, k)
            {
                blank_entries(b, entries);
            }
        }
    } else {
        for pair in &n.children {
            if let [k, entries] = pair.children.as_slice()
                && name_matches(b, k)
            {
                blank_entries(b, entries);
            }
        }
    }
}

/// JSON side of [`blank_entries`].
fn redact_json_entries(entries: &mut Value) -> u64 {
    let Some(a) = entries.as_array_mut() else {
        return 0;
    };
    let mut done = 0;
    for e in a {
        if let Some(fields) = e.get_mut(1).and_then(Value::as_array_mut) {
            for v in fields.iter_mut().skip(1).step_by(2) {
                done += redact_json_all(v);
            }
        }
    }
    done
}

/// JSON side of [`blank_streams`]: `XREAD`'s reply is `[[name, entries], …]` in either RESP
/// version.
fn redact_json_streams(r: &mut Value, keys: Option<&[Vec<u8>]>) -> u64 {
    let Some(keys) = keys else {
        return redact_json_entries(r);
    };
    let Some(a) = r.as_array_mut() else { return 0 };
    let mut done = 0;
    for pair in a {
        let matches = pair
            .get(0)
            .and_then(Value::as_str)
            .is_some_and(|k| keys.iter().any(|key| key.as_slice() == k.as_bytes()));
        if matches && let Some(entries) = pair.get_mut(1) {
            done += redact_json_entries(entries);
        }
    }
    done
}

/// Elements `e` of a JSON reply (an array, or a map as `[[k, v], …]` counted flat).
fn redact_reply_elements(r: &mut Value, e: &[usize]) -> u64 {
    let Some(a) = r.as_array_mut() else { return 0 };
    let pairs = a
        .iter()
        .all(|x| x.as_array().is_some_and(|kv| kv.len() == 2));
    let mut done = 0;
    for &i in e {
        let slot = if pairs && !a.is_empty() {
            a.get_mut(i / 2).and_then(|kv| kv.get_mut(i % 2))
        } else {
            a.get_mut(i)
        };
        if let Some(v) = slot {
            done += redact_json_all(v);
        }
    }
    done
}

/// An inline command (`SET k v\r\n`): blanks the words at `args` (quotes kept).
fn inline_blank(b: &mut [u8], args: &[usize]) {
    let mut word = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] == b'\r' || b[i] == b'\n' {
            break;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\r' | b'\n') {
            i += 1;
        }
        if args.contains(&word) {
            let (s, e) = match (b[start], b[i - 1]) {
                (q @ (b'"' | b'\''), l) if l == q && i - start >= 2 => (start + 1, i - 1),
                _ => (start, i),
            };
            blank(b, s, e - s, b'*');
        }
        word += 1;
    }
}

/// What a recorded Redis call's `detail.redacted` says: `detail.args` indexes that match
/// any value at replay.
#[must_use]
pub fn redacted_args(detail: Option<&Value>) -> Vec<usize> {
    detail
        .and_then(|d| d.get("redacted"))
        .and_then(|r| r.get("args"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocols::Protocol;
    use crate::protocols::redact::{REDACTED, absent, test_call, test_parts};
    use crate::protocols::redis::resp::encode_command;

    const TOK: &str = "Tok-5Hd3Wy6Pb0Js";

    fn run(method: &str, args: &[&str], reply: &[u8], detail_reply: Value) -> (ProtoEvent, u64) {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let req = encode_command(&raw);
        let words = method.split(' ').count();
        let detail = json!({"command": method, "args": args[words..], "reply": detail_reply});
        let mut e = test_call(Protocol::Redis, method, detail, &req, reply);
        let n = redact(&mut e, &RedactionPolicy::default()).values;
        let (_, rq, rs) = test_parts(&e);
        assert_eq!(
            (rq.len(), rs.len()),
            (req.len(), reply.len()),
            "same lengths"
        );
        (e, n)
    }

    #[test]
    fn values_of_keys_matching_the_globs() {
        let (e, n) = run(
            "SET",
            &["SET", "session:alice", TOK, "EX", "300"],
            b"+OK\r\n",
            json!("OK"),
        );
        let (d, rq, _) = test_parts(&e);
        assert!(absent(rq, TOK) && absent(d.to_string().as_bytes(), TOK));
        assert!(!absent(rq, "session:alice") && !absent(rq, "300"));
        assert_eq!(d["args"], json!(["session:alice", REDACTED, "EX", "300"]));
        assert_eq!(d["redacted"]["args"], json!([1]));
        assert_eq!(n, 1);

        let reply = format!("${}\r\n{TOK}\r\n", TOK.len());
        let (e, _) = run(
            "GET",
            &["GET", "session:alice"],
            reply.as_bytes(),
            json!(TOK),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && d["reply"] == REDACTED && d["redacted"]["reply"] == true);

        // A key no glob matches is left alone.
        let (e, n) = run("SET", &["SET", "cache:alice", TOK], b"+OK\r\n", json!("OK"));
        assert!(!absent(test_parts(&e).1, TOK) && n == 0);
        assert!(test_parts(&e).0.get("redacted").is_none());
    }

    #[test]
    fn mget_elements_and_hash_fields() {
        let reply = format!("*2\r\n$3\r\none\r\n${}\r\n{TOK}\r\n", TOK.len());
        let (e, _) = run(
            "MGET",
            &["MGET", "cache:1", "user_token:1"],
            reply.as_bytes(),
            json!(["one", TOK]),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && !absent(rs, "one"));
        assert_eq!(d["reply"], json!(["one", REDACTED]));

        let (e, _) = run(
            "HSET",
            &["HSET", "user:1", "name", "alice", "password", TOK],
            b":2\r\n",
            json!(2),
        );
        let (d, rq, _) = test_parts(&e);
        assert!(absent(rq, TOK) && !absent(rq, "alice"));
        assert_eq!(
            d["args"],
            json!(["user:1", "name", "alice", "password", REDACTED])
        );

        // HGETALL, RESP2 (flat) and RESP3 (map).
        let flat = format!(
            "*4\r\n$4\r\nname\r\n$5\r\nalice\r\n$8\r\npassword\r\n${}\r\n{TOK}\r\n",
            TOK.len()
        );
        let (e, _) = run(
            "HGETALL",
            &["HGETALL", "user:1"],
            flat.as_bytes(),
            json!(["name", "alice", "password", TOK]),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && !absent(rs, "alice"));
        assert_eq!(d["reply"], json!(["name", "alice", "password", REDACTED]));
        let map = flat.replacen("*4", "%2", 1);
        let (e, _) = run(
            "HGETALL",
            &["HGETALL", "user:1"],
            map.as_bytes(),
            json!([["name", "alice"], ["password", TOK]]),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK));
        assert_eq!(
            d["reply"],
            json!([["name", "alice"], ["password", REDACTED]])
        );
    }

    #[test]
    fn configured_globs_and_inline_commands() {
        let mut p = RedactionPolicy::default();
        p.add_configured("", "acct:*:otp", &["k?y".to_owned()]);
        let req = b"SET acct:42:otp 123456\r\n";
        let detail = json!({"command": "SET", "args": ["acct:42:otp", "123456"]});
        let mut e = test_call(Protocol::Redis, "SET", detail, req, b"+OK\r\n");
        redact(&mut e, &p);
        let (d, rq, _) = test_parts(&e);
        assert_eq!(rq, b"SET acct:42:otp ******\r\n");
        assert_eq!(d["args"][1], REDACTED);
        assert!(
            plan(
                "SET",
                &[b"SET".to_vec(), b"KEY".to_vec(), b"v".to_vec()],
                &p
            )
            .args
                == [2]
        );
    }

    /// XADD: every value of a matching stream, else the values of secret fields; options
    /// before the id are skipped, ids and field names kept.
    #[test]
    fn stream_writes() {
        let (e, n) = run(
            "XADD",
            &[
                "XADD",
                "session:events",
                "MAXLEN",
                "~",
                "1000",
                "*",
                "user",
                "alice",
                "sid",
                TOK,
            ],
            b"$15\r\n1700000000000-0\r\n",
            json!("1700000000000-0"),
        );
        let (d, rq, rs) = test_parts(&e);
        assert!(absent(rq, TOK) && absent(rq, "alice"));
        assert!(!absent(rq, "1000") && !absent(rq, "sid") && !absent(rs, "1700000000000-0"));
        assert_eq!(
            d["args"],
            json!([
                "session:events",
                "MAXLEN",
                "~",
                "1000",
                "*",
                "user",
                REDACTED,
                "sid",
                REDACTED
            ])
        );
        assert_eq!(d["redacted"]["args"], json!([6, 8]));
        assert_eq!(n, 2);
        // Another stream: only the field on the key list.
        let (e, _) = run(
            "XADD",
            &[
                "XADD",
                "audit",
                "NOMKSTREAM",
                "1-1",
                "user",
                "alice",
                "password",
                TOK,
            ],
            b"$3\r\n1-1\r\n",
            json!("1-1"),
        );
        let (d, rq, _) = test_parts(&e);
        assert!(absent(rq, TOK) && !absent(rq, "alice"));
        assert_eq!(
            d["args"],
            json!([
                "audit",
                "NOMKSTREAM",
                "1-1",
                "user",
                "alice",
                "password",
                REDACTED
            ])
        );
    }

    /// XRANGE / XREAD replies: field values of matching streams, ids and names kept, in the
    /// wire bytes (RESP2 arrays and RESP3 maps) and in the detail.
    #[test]
    fn stream_reads() {
        let entries = format!(
            "*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$4\r\nuser\r\n$5\r\nalice\r\n$3\r\nsid\r\n${}\r\n{TOK}\r\n",
            TOK.len()
        );
        let entries_json = json!([["1-0", ["user", "alice", "sid", TOK]]]);
        let (e, n) = run(
            "XRANGE",
            &["XRANGE", "session:events", "-", "+"],
            entries.as_bytes(),
            entries_json.clone(),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && absent(rs, "alice") && !absent(rs, "1-0") && !absent(rs, "sid"));
        assert_eq!(
            d["reply"],
            json!([["1-0", ["user", REDACTED, "sid", REDACTED]]])
        );
        assert_eq!(d["redacted"]["reply"], true);
        assert_eq!(n, 2);
        // A stream no glob matches keeps its values.
        let (e, n) = run(
            "XRANGE",
            &["XRANGE", "events", "-", "+"],
            entries.as_bytes(),
            entries_json.clone(),
        );
        assert!(!absent(test_parts(&e).2, TOK) && n == 0);

        // XREAD over two streams, one secret: RESP2 pairs, then a RESP3 map.
        let other = "*1\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nk\r\n$6\r\npublic\r\n";
        let resp2 =
            format!("*2\r\n*2\r\n$6\r\nevents\r\n{other}*2\r\n$14\r\nsession:events\r\n{entries}");
        let detail = json!([
            ["events", [["2-0", ["k", "public"]]]],
            ["session:events", entries_json]
        ]);
        let args = [
            "XREAD",
            "COUNT",
            "10",
            "STREAMS",
            "events",
            "session:events",
            "0",
            "0",
        ];
        let (e, _) = run("XREAD", &args, resp2.as_bytes(), detail.clone());
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && absent(rs, "alice") && !absent(rs, "public"));
        assert_eq!(
            d["reply"][1][1][0][1],
            json!(["user", REDACTED, "sid", REDACTED])
        );
        assert_eq!(d["reply"][0][1][0][1], json!(["k", "public"]));
        let resp3 = format!("%2\r\n$6\r\nevents\r\n{other}$14\r\nsession:events\r\n{entries}");
        let (e, _) = run("XREAD", &args, resp3.as_bytes(), detail);
        let (_, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && absent(rs, "alice") && !absent(rs, "public"));
    }

    /// ZADD members (options and scores kept), ZSCORE's member, ZRANGE's reply; scripts whose
    /// keys match: every argument and the reply.
    #[test]
    fn sorted_sets_and_scripts() {
        let (e, _) = run(
            "ZADD",
            &[
                "ZADD",
                "session:active",
                "NX",
                "CH",
                "1700000000",
                TOK,
                "1700000001",
                "other-secret",
            ],
            b":2\r\n",
            json!(2),
        );
        let (d, rq, _) = test_parts(&e);
        assert!(absent(rq, TOK) && absent(rq, "other-secret") && !absent(rq, "1700000001"));
        assert_eq!(
            d["args"],
            json!([
                "session:active",
                "NX",
                "CH",
                "1700000000",
                REDACTED,
                "1700000001",
                REDACTED
            ])
        );
        let (e, _) = run(
            "ZSCORE",
            &["ZSCORE", "session:active", TOK],
            b"$10\r\n1700000000\r\n",
            json!("1700000000"),
        );
        assert!(absent(test_parts(&e).1, TOK));
        let reply = format!("*1\r\n${}\r\n{TOK}\r\n", TOK.len());
        let (e, _) = run(
            "ZRANGE",
            &["ZRANGE", "session:active", "0", "-1"],
            reply.as_bytes(),
            json!([TOK]),
        );
        let (d, _, rs) = test_parts(&e);
        assert!(absent(rs, TOK) && d["reply"] == json!([REDACTED]));
        let (e, _) = run(
            "ZADD",
            &["ZADD", "leaderboard", "1", "alice"],
            b":1\r\n",
            json!(1),
        );
        assert!(!absent(test_parts(&e).1, "alice"));

        let script = "return redis.call('SET', KEYS[1], ARGV[1])";
        let (e, n) = run(
            "EVAL",
            &["EVAL", script, "2", "cache:1", "user_token:1", TOK, "60"],
            b"+OK\r\n",
            json!("OK"),
        );
        let (d, rq, _) = test_parts(&e);
        assert!(absent(rq, TOK) && !absent(rq, "user_token:1") && !absent(rq, "redis.call"));
        assert_eq!(
            d["args"],
            json!([script, "2", "cache:1", "user_token:1", REDACTED, REDACTED])
        );
        assert_eq!(d["redacted"]["reply"], true);
        assert_eq!(n, 3, "two arguments and the reply");
        let reply = format!("${}\r\n{TOK}\r\n", TOK.len());
        let (e, _) = run(
            "EVALSHA",
            &["EVALSHA", "abc123", "1", "session:x"],
            reply.as_bytes(),
            json!(TOK),
        );
        assert!(absent(test_parts(&e).2, TOK));
        // No key matches: nothing.
        let (e, n) = run(
            "FCALL",
            &["FCALL", "f", "1", "cache:1", TOK],
            b"+OK\r\n",
            json!("OK"),
        );
        assert!(!absent(test_parts(&e).1, TOK) && n == 0);
    }

    #[test]
    fn cut_replies_never_panic() {
        let reply = format!("*2\r\n$3\r\none\r\n${}\r\n{TOK}\r\n", TOK.len());
        for cut in 0..reply.len() {
            let detail =
                json!({"command": "MGET", "args": ["a", "session:b"], "reply": ["one", TOK]});
            let req = encode_command(&[b"MGET", b"a", b"session:b"]);
            let mut e = test_call(
                Protocol::Redis,
                "MGET",
                detail,
                &req,
                &reply.as_bytes()[..cut],
            );
            redact(&mut e, &RedactionPolicy::default());
            assert_eq!(test_parts(&e).2.len(), cut);
        }
    }
}
