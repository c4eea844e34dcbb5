//! MongoDB's redaction hook: document fields whose name is on the key list (`--redact-key`,
//! `password`, `token`, …), at any depth, in commands and replies (`detail.command`,
//! `detail.reply`) and in the wire bytes.
//!
//! Wire values are overwritten in place, same length: string contents with `*`, every other
//! value's bytes (numbers, binary data, embedded documents' leaves) with zeros; an `OP_MSG`
//! checksum is recomputed. A compressed message holding a secret field keeps only its header
//! (its bytes cannot be changed in place). Credentials (`pwd`, SASL payloads) are removed by the
//! parser itself. `detail.redacted` = `{"fields": ["password", …], "values": n}`.
use serde_json::{Value, json};

use super::conn::crc32c;
use crate::protocols::ProtoEvent;
use crate::protocols::redact::{Applied, blank, db_call, note, redact_value, rewrite};
use crate::redact::RedactionPolicy;

const OP_MSG: i32 = 2013;
const OP_COMPRESSED: i32 = 2012;
const MAX_DEPTH: u32 = 100;

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn len_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(i32_at(b, at)?).ok()
}

/// Blanks, in the document at `at`, the values of fields `secret` says are secret (`all`:
/// every value, inside a secret field). Returns how many fields were secret, or `None` when
/// the document does not parse (what was blanked stays blanked).
fn doc(
    b: &mut [u8],
    at: usize,
    depth: u32,
    all: bool,
    secret: &dyn Fn(&str) -> bool,
) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    // A document cut at the capture cap is walked as far as its bytes go: what is there of
    // a secret value is blanked too.
    let end = at.checked_add(len_at(b, at)?)?;
    if end < at + 5 {
        return None;
    }
    let end = end.min(b.len() + 1);
    let mut p = at + 4;
    let mut n = 0;
    while p < end - 1 {
        let ty = b[p];
        p += 1;
        let klen = b.get(p..end.min(b.len()))?.iter().position(|&c| c == 0)?;
        let is_secret = !all && std::str::from_utf8(&b[p..p + klen]).is_ok_and(secret);
        p += klen + 1;
        let blank_it = all || is_secret;
        n += u64::from(is_secret);
        p = match ty {
            0x01 | 0x09 | 0x11 | 0x12 => fixed(b, p, 8, blank_it)?,
            0x10 => fixed(b, p, 4, blank_it)?,
            0x13 => fixed(b, p, 16, blank_it)?,
            0x07 => fixed(b, p, 12, blank_it)?,
            0x08 => fixed(b, p, 1, blank_it)?,
            0x06 | 0x0A | 0x7F | 0xFF => p,
            0x02 | 0x0D | 0x0E => {
                let l = len_at(b, p)?;
                if blank_it {
                    blank(b, p + 4, l.saturating_sub(1), b'*');
                }
                p.checked_add(4 + l)?
            }
            0x05 => {
                let l = len_at(b, p)?;
                if blank_it {
                    blank(b, p + 5, l, 0);
                }
                p.checked_add(5 + l)?
            }
            0x03 | 0x04 => {
                let l = len_at(b, p)?;
                n += doc(b, p, depth + 1, blank_it, secret)?;
                p.checked_add(l)?
            }
            0x0B => {
                let a = b.get(p..end.min(b.len()))?.iter().position(|&c| c == 0)?;
                let c = b
                    .get(p + a + 1..end.min(b.len()))?
                    .iter()
                    .position(|&c| c == 0)?;
                if blank_it {
                    blank(b, p, a, b'*');
                }
                p + a + c + 2
            }
            0x0C => {
                let l = len_at(b, p)?;
                p.checked_add(4 + l + 12)?
            }
            0x0F => p.checked_add(len_at(b, p)?)?,
            _ => return None,
        };
    }
    Some(n)
}

fn fixed(b: &mut [u8], p: usize, n: usize, blank_it: bool) -> Option<usize> {
    if p + n > b.len() {
        return None;
    }
    if blank_it {
        b[p..p + n].fill(0);
    }
    Some(p + n)
}

/// Blanks secret fields in every message of `b` (requests or replies, back to back).
fn messages(b: &mut [u8], secret: &dyn Fn(&str) -> bool) -> u64 {
    let mut n = 0;
    let mut i = 0usize;
    while i + 16 <= b.len() {
        let Some(len) = len_at(b, i).filter(|&l| l >= 16) else {
            break;
        };
        let end = (i + len).min(b.len());
        match i32_at(b, i + 12) {
            Some(OP_MSG) if end >= i + 21 => {
                let flags = u32::from_le_bytes(b[i + 16..i + 20].try_into().unwrap_or_default());
                let checksum = flags & 1 != 0 && end == i + len;
                let body_end = if checksum { end - 4 } else { end };
                let mut p = i + 20;
                while p < body_end {
                    let kind = b[p];
                    p += 1;
                    match kind {
                        0 => {
                            let Some(l) = len_at(b, p) else { break };
                            n += doc(&mut b[..body_end], p, 0, false, secret).unwrap_or(0);
                            p = p.saturating_add(l);
                        }
                        1 => {
                            let Some(size) = len_at(b, p) else { break };
                            let sec_end = p.saturating_add(size).min(body_end);
                            // A declared size below 4 ends the section before its identifier.
                            let Some(id) = b
                                .get(p + 4..sec_end)
                                .and_then(|s| s.iter().position(|&c| c == 0))
                            else {
                                break;
                            };
                            let mut q = p + 4 + id + 1;
                            while q < sec_end {
                                let Some(l) = len_at(b, q).filter(|&l| l >= 5) else {
                                    break;
                                };
                                n += doc(&mut b[..sec_end], q, 0, false, secret).unwrap_or(0);
                                q += l;
                            }
                            p = sec_end;
                        }
                        _ => break,
                    }
                }
                if checksum {
                    let crc = crc32c(&b[i..end - 4]);
                    b[end - 4..end].copy_from_slice(&crc.to_le_bytes());
                }
            }
            _ => {}
        }
        i = i.saturating_add(len);
    }
    n
}

/// Replaces, in a JSON document, the values of secret keys at any depth; returns the keys.
fn redact_json(v: &mut Value, secret: &dyn Fn(&str) -> bool, found: &mut Vec<String>, depth: u32) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if secret(k) {
                    if redact_value(x) {
                        found.push(k.clone());
                    }
                } else {
                    redact_json(x, secret, found, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                redact_json(x, secret, found, depth + 1);
            }
        }
        _ => {}
    }
}

/// Is any message of `b` compressed?
fn compressed(b: &[u8]) -> bool {
    let mut i = 0usize;
    while i + 16 <= b.len() {
        let Some(len) = len_at(b, i).filter(|&l| l >= 16) else {
            return false;
        };
        if i32_at(b, i + 12) == Some(OP_COMPRESSED) {
            return true;
        }
        i = i.saturating_add(len);
    }
    false
}

/// The hook of the registry's MongoDB entry.
pub fn redact(e: &mut ProtoEvent, p: &RedactionPolicy) -> Applied {
    let Some(call) = db_call(e) else {
        return Applied::default();
    };
    // `pwd` and SASL payloads are the parser's (credentials); `[REDACTED]` already.
    let secret = |k: &str| p.key_matches(k);
    let mut found = Vec::new();
    for part in ["command", "reply"] {
        if let Some(d) = call.detail.get_mut(part) {
            redact_json(d, &secret, &mut found, 0);
        }
    }
    let mut wire = 0;
    for raw in [&mut call.raw_request, &mut call.raw_response] {
        if !found.is_empty() && compressed(raw) {
            *raw = raw.slice(..raw.len().min(16));
            continue;
        }
        rewrite(raw, |b| wire += messages(b, &secret));
    }
    let values = found.len() as u64;
    if values > 0 || wire > 0 {
        found.sort();
        found.dedup();
        note(&mut call.detail, "fields", json!(found));
        note(&mut call.detail, "values", json!(values.max(wire)));
    }
    Applied {
        values: values.max(wire),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocols::Protocol;
    use crate::protocols::redact::{REDACTED, absent, test_call, test_parts};

    const PW: &str = "Pw-7Qx2Lm9Rz4Kv8";

    /// A BSON document of `(key, type, value bytes)`.
    fn bson(fields: &[(&str, u8, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, t, v) in fields {
            body.push(*t);
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v);
        }
        let mut d = i32::try_from(body.len() + 5)
            .unwrap()
            .to_le_bytes()
            .to_vec();
        d.extend_from_slice(&body);
        d.push(0);
        d
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = i32::try_from(s.len() + 1).unwrap().to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    fn op_msg(doc: &[u8], checksum: bool) -> Vec<u8> {
        let len = 16 + 4 + 1 + doc.len() + if checksum { 4 } else { 0 };
        let mut m = i32::try_from(len).unwrap().to_le_bytes().to_vec();
        m.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&OP_MSG.to_le_bytes());
        m.extend_from_slice(&u32::from(checksum).to_le_bytes());
        m.push(0);
        m.extend_from_slice(doc);
        if checksum {
            let crc = crc32c(&m);
            m.extend_from_slice(&crc.to_le_bytes());
        }
        m
    }

    #[test]
    fn fields_by_key_at_any_depth_with_checksum() {
        let user = bson(&[
            ("name", 0x02, string("alice")),
            ("password", 0x02, string(PW)),
            ("token", 0x10, 424_242i32.to_le_bytes().to_vec()),
        ]);
        let docs = bson(&[("0", 0x03, user)]);
        let cmd = bson(&[("insert", 0x02, string("users")), ("documents", 0x04, docs)]);
        let req = op_msg(&cmd, true);
        let detail = json!({"op": "OP_MSG", "command": {"insert": "users",
            "documents": [{"name": "alice", "password": PW, "token": 424_242}]}});
        let mut e = test_call(Protocol::Mongodb, "insert", detail, &req, &[]);
        let a = redact(&mut e, &RedactionPolicy::default());
        let (d, rq, _) = test_parts(&e);
        assert_eq!(rq.len(), req.len());
        assert!(absent(rq, PW) && !absent(rq, "alice"));
        assert!(!rq.windows(4).any(|w| w == 424_242i32.to_le_bytes()));
        let n = rq.len();
        assert_eq!(
            crc32c(&rq[..n - 4]).to_le_bytes(),
            rq[n - 4..],
            "checksum recomputed"
        );
        assert_eq!(d["command"]["documents"][0]["password"], REDACTED);
        assert_eq!(d["command"]["documents"][0]["token"], REDACTED);
        assert_eq!(d["redacted"]["fields"], json!(["password", "token"]));
        assert_eq!(a.values, 2);
    }

    #[test]
    fn cut_messages_never_panic_nor_leak() {
        let cmd = bson(&[
            ("find", 0x02, string("users")),
            ("password", 0x02, string(PW)),
        ]);
        let req = op_msg(&cmd, false);
        for cut in 0..req.len() {
            let mut e = test_call(
                Protocol::Mongodb,
                "find",
                json!({"command": {"find": "users", "password": PW}}),
                &req[..cut],
                &[],
            );
            redact(&mut e, &RedactionPolicy::default());
            let rq = test_parts(&e).1;
            assert_eq!(rq.len(), cut);
            assert!(absent(rq, &PW[..PW.len().min(6)]), "cut at {cut}");
        }
    }

    /// Found by `cargo xtask fuzz` (target `proto_mongodb`, issue #24): an `OP_MSG` document
    /// sequence (kind 1) whose declared size is below 4 sliced its identifier backwards.
    #[test]
    fn sequence_section_smaller_than_its_size_field() {
        for size in [0i32, 2, 3] {
            let mut b = Vec::new();
            b.extend_from_slice(&25i32.to_le_bytes());
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&OP_MSG.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.push(1);
            b.extend_from_slice(&size.to_le_bytes());
            assert_eq!(b.len(), 25);
            assert_eq!(messages(&mut b, &|_| true), 0, "size {size}");
        }
    }
}
