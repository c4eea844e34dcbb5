//! [`RedisParser`]: commands paired with replies on one client connection.
//!
//! # Pairing
//! Replies answer commands in order (FIFO), pipelines included. Safety rules keep pairs
//! right when bytes were never seen (mid-session attach, gaps); they may lose calls, never
//! mispair them:
//! - **Causality**: a reply whose first byte was read before a command's first byte was
//!   written cannot answer it; such a reply is dropped (`Skipped`, `reply-before-command`).
//!   A reply read while no command is waiting waits (bounded) for the command direction,
//!   which may lag behind.
//! - **Lost commands** (egress gap): a barrier is queued; replies read before the next
//!   command was written belong to lost commands and are dropped.
//! - **Lost replies** (ingress gap or garbage): the first reply read after the loss sets a
//!   horizon; every command written before it is emitted without a reply (its reply may have
//!   been among the lost bytes), and that reply is then dropped by causality.
//!
//! # Out of band
//! RESP3 pushes (`>`) other than subscribe confirmations, and RESP2 `message` / `pmessage` /
//! `smessage` arrays while subscribed, are reported as calls with method `PUSH`, an empty
//! `raw_request`, and request marks equal to the push's first byte.
//!
//! # Transactions
//! `MULTI` gets its `+OK`. Every queued command becomes its own call whose `raw_response` is
//! its `+QUEUED` and whose `detail.reply` is its element of the `EXEC` reply
//! (`detail.queued = true`); the `EXEC` call carries the whole array. `DISCARD` and aborted
//! transactions (`EXEC` answering null or `-EXECABORT`) give queued calls `reply: null` and
//! `discarded` / `aborted: true`. Calls are emitted in command order.
use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::input::{Body, Dir, DirEvent, Msg};
use super::resp::{self, Blob, Resp};
use crate::protocols::Protocol;
use crate::protocols::db::{DbCall, DbEvent, DbParser};
use crate::protocols::http::types::Mark;
use crate::reassembly::Segment;

/// Parser limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Raw bytes kept per command and per reply, and string bytes kept per value in `detail`.
    pub max_bytes: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self { max_bytes: 1 << 20 }
    }
}

/// Replaces secrets in `detail` and raw bytes.
pub const REDACTED: &str = "[REDACTED]";
/// Commands waiting for replies before the oldest is given up.
const MAX_WAITING: usize = 100_000;
/// Replies waiting for their command before the oldest is dropped.
const MAX_EARLY_REPLIES: usize = 10_000;

/// Commands whose first argument is a subcommand (`CLIENT SETINFO`).
pub(crate) const TWO_WORD: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE",
    "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Subscribe-family commands: their replies are one confirmation per channel.
const SUB_KINDS: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
];

#[derive(Debug)]
struct Command {
    index: u64,
    /// `GET`, `CLIENT SETINFO`.
    method: String,
    /// Arguments after the command word(s), secrets replaced.
    args: Vec<Value>,
    /// Arguments not kept (element cap).
    omitted: u64,
    session_level: bool,
    raw: Vec<u8>,
    raw_truncated: bool,
    first: Mark,
    last: Mark,
    /// For subscribe-family commands: confirmations expected (`None`: until count 0).
    confirmations: Option<u64>,
    confirmed: Vec<Msg>,
    /// Original argument bytes needed after the reply (HELLO version, SELECT db, ...).
    hello_version: Option<u8>,
    select_db: Option<i64>,
    auth: bool,
}

#[derive(Debug)]
enum Waiting {
    Cmd(Box<Command>),
    /// Commands were lost here (egress gap).
    Barrier,
}

#[derive(Debug)]
enum Reply {
    Msg(Msg),
    /// Replies were lost here (ingress gap or garbage).
    Lost,
}

#[derive(Debug)]
struct Queued {
    cmd: Box<Command>,
    /// The `+QUEUED` (or queue-time error) reply.
    reply: Msg,
}

/// Client-side Redis (RESP2/RESP3) parser for one connection.
#[derive(Debug)]
pub struct RedisParser {
    opts: RedisOptions,
    /// 0: egress (commands), 1: ingress (replies).
    dirs: [Dir; 2],
    waiting: VecDeque<Waiting>,
    replies: VecDeque<Reply>,
    /// Commands written before this time lost their replies (see the module docs).
    horizon: u64,
    queued: Vec<Queued>,
    in_multi: bool,
    subscribed: bool,
    resp: u8,
    next_index: u64,
    /// A command other than connection setup was seen.
    regular_seen: bool,
    missing_reported: bool,
}

impl Default for RedisParser {
    fn default() -> Self {
        Self::new(RedisOptions::default())
    }
}

impl RedisParser {
    #[must_use]
    pub fn new(opts: RedisOptions) -> Self {
        Self {
            opts,
            dirs: [
                Dir::new(true, opts.max_bytes),
                Dir::new(false, opts.max_bytes),
            ],
            waiting: VecDeque::new(),
            replies: VecDeque::new(),
            horizon: 0,
            queued: Vec::new(),
            in_multi: false,
            subscribed: false,
            resp: 2,
            next_index: 0,
            regular_seen: false,
            missing_reported: false,
        }
    }

    fn handle(&mut self, egress: bool, evs: Vec<DirEvent>, out: &mut Vec<DbEvent>) {
        if egress && self.dirs[0].mid_stream && !self.missing_reported {
            self.missing_reported = true;
            out.push(DbEvent::Session {
                protocol: Protocol::Redis,
                facts: json!({}),
                missing: vec![
                    "handshake".into(),
                    "auth".into(),
                    "resp-version".into(),
                    "selected-db".into(),
                    "client-name".into(),
                ],
            });
        }
        if !egress && self.dirs[1].take_resp3() {
            self.resp = 3;
        }
        for ev in evs {
            match ev {
                DirEvent::Skipped(bytes, reason) => out.push(DbEvent::Skipped {
                    egress,
                    bytes,
                    reason,
                }),
                DirEvent::Lost if egress => {
                    if !matches!(self.waiting.back(), Some(Waiting::Barrier)) {
                        self.waiting.push_back(Waiting::Barrier);
                    }
                }
                DirEvent::Lost => {
                    if !matches!(self.replies.back(), Some(Reply::Lost)) {
                        self.replies.push_back(Reply::Lost);
                    }
                }
                DirEvent::Msg(Msg {
                    body,
                    first,
                    last,
                    raw,
                    raw_truncated,
                }) => match body {
                    Body::Command {
                        args,
                        total,
                        inline,
                    } => {
                        let m = Msg {
                            body: Body::Reply(Resp::Null),
                            first,
                            last,
                            raw,
                            raw_truncated,
                        };
                        let cmd = self.command(args, total, inline, m);
                        if cmd.first.ts_ns < self.horizon && self.waiting.is_empty() {
                            self.emit(Box::new(cmd), None, Map::new(), out);
                            continue;
                        }
                        self.waiting.push_back(Waiting::Cmd(Box::new(cmd)));
                        while self.waiting.len() > MAX_WAITING {
                            if let Some(Waiting::Cmd(c)) = self.waiting.pop_front() {
                                self.emit(c, None, Map::new(), out);
                            }
                        }
                    }
                    body @ Body::Reply(_) => {
                        let m = Msg {
                            body,
                            first,
                            last,
                            raw,
                            raw_truncated,
                        };
                        if self.is_push(&m) {
                            self.emit_push(m, out);
                        } else {
                            self.replies.push_back(Reply::Msg(m));
                        }
                    }
                },
            }
            self.pair(out);
        }
        self.pair(out);
    }

    /// Builds a command from a framed message: method, arguments (secrets redacted), raw bytes.
    fn command(&mut self, raw_args: Vec<Blob>, total: u64, inline: bool, m: Msg) -> Command {
        let upper = |b: &Blob| String::from_utf8_lossy(&b.data).to_ascii_uppercase();
        let name = raw_args.first().map(upper).unwrap_or_default();
        let two = TWO_WORD.contains(&name.as_str()) && raw_args.len() >= 2;
        let (method, skip) = match raw_args.get(1) {
            Some(sub) if two => (format!("{name} {}", upper(sub)), 2),
            _ => (name.clone(), 1),
        };
        let secret = secret_args(&method, &raw_args);
        let mut args = Vec::with_capacity(raw_args.len().saturating_sub(skip));
        for (i, a) in raw_args.iter().enumerate().skip(skip) {
            args.push(if secret.contains(&i) {
                Value::String(REDACTED.into())
            } else {
                a.to_json()
            });
        }
        let (raw, raw_truncated) = if secret.is_empty() {
            (m.raw, m.raw_truncated)
        } else {
            let parts: Vec<&[u8]> = raw_args
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    if secret.contains(&i) {
                        REDACTED.as_bytes()
                    } else {
                        a.data.as_slice()
                    }
                })
                .collect();
            let raw = if inline {
                let mut l = parts.join(&b' ');
                l.extend_from_slice(b"\r\n");
                l
            } else {
                resp::encode_command(&parts)
            };
            (raw, m.raw_truncated || raw_args.iter().any(Blob::truncated))
        };
        let session_level = match method.as_str() {
            "HELLO"
            | "AUTH"
            | "CLIENT SETINFO"
            | "CLIENT SETNAME"
            | "CLIENT TRACKING"
            | "CLIENT NO-EVICT"
            | "CLIENT NO-TOUCH"
            | "CLIENT MAINT_NOTIFICATIONS"
            | "READONLY"
            | "READWRITE" => true,
            "SELECT" | "PING" => !self.regular_seen,
            _ => false,
        };
        if !session_level {
            self.regular_seen = true;
        }
        let arg_str = |i: usize| {
            raw_args
                .get(i)
                .map(|a| String::from_utf8_lossy(&a.data).into_owned())
        };
        let confirmations = if SUB_KINDS.contains(&method.as_str()) {
            let n = total.saturating_sub(1);
            (n > 0 || !method.contains("UNSUB")).then_some(n.max(1))
        } else {
            None
        };
        let index = self.next_index;
        self.next_index += 1;
        Command {
            index,
            hello_version: (method == "HELLO")
                .then(|| arg_str(1).and_then(|v| v.parse().ok()))
                .flatten(),
            select_db: (method == "SELECT")
                .then(|| arg_str(1).and_then(|v| v.parse().ok()))
                .flatten(),
            auth: method == "AUTH"
                || (method == "HELLO"
                    && raw_args
                        .iter()
                        .any(|a| a.data.eq_ignore_ascii_case(b"AUTH"))),
            omitted: total.saturating_sub(raw_args.len() as u64),
            method,
            args,
            session_level,
            raw,
            raw_truncated,
            first: m.first,
            last: m.last,
            confirmations,
            confirmed: Vec::new(),
        }
    }

    fn is_push(&mut self, m: &Msg) -> bool {
        let Body::Reply(v) = &m.body else {
            return false;
        };
        match v {
            Resp::Push(_) => !is_sub_confirmation(v),
            Resp::Array(a) => {
                let kind = first_word(v);
                let arity = match kind.as_deref() {
                    Some("message" | "smessage") => 3,
                    Some("pmessage") => 4,
                    _ => return false,
                };
                let no_cmd = !self.waiting.iter().any(|w| matches!(w, Waiting::Cmd(_)));
                if a.total == arity && (self.subscribed || no_cmd) {
                    self.subscribed = true;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    fn pair(&mut self, out: &mut Vec<DbEvent>) {
        loop {
            let r_ts = match self.replies.front() {
                None => return,
                Some(Reply::Lost) => {
                    let next = self.replies.iter().find_map(|r| match r {
                        Reply::Msg(m) => Some(m.first.ts_ns),
                        Reply::Lost => None,
                    });
                    let Some(t) = next else {
                        return;
                    };
                    self.replies.pop_front();
                    self.horizon = self.horizon.max(t);
                    self.flush_before(t, out);
                    continue;
                }
                Some(Reply::Msg(r)) => r.first.ts_ns,
            };
            match self.waiting.front() {
                None => {
                    while self.replies.len() > MAX_EARLY_REPLIES {
                        self.drop_reply(out, "reply-without-command");
                    }
                    return;
                }
                Some(Waiting::Barrier) => {
                    let next_cmd = self.waiting.iter().find_map(|w| match w {
                        Waiting::Cmd(c) => Some(c.first.ts_ns),
                        Waiting::Barrier => None,
                    });
                    match next_cmd {
                        None => return,
                        Some(ts) if r_ts < ts => self.drop_reply(out, "reply-to-lost-command"),
                        Some(_) => {
                            self.waiting.pop_front();
                        }
                    }
                }
                Some(Waiting::Cmd(c)) => {
                    if r_ts < c.first.ts_ns {
                        self.drop_reply(out, "reply-before-command");
                        continue;
                    }
                    let Some(Reply::Msg(r)) = self.replies.pop_front() else {
                        return;
                    };
                    let Some(Waiting::Cmd(c)) = self.waiting.pop_front() else {
                        return;
                    };
                    self.answer(c, r, out);
                }
            }
        }
    }

    fn drop_reply(&mut self, out: &mut Vec<DbEvent>, reason: &'static str) {
        if let Some(Reply::Msg(r)) = self.replies.pop_front() {
            out.push(DbEvent::Skipped {
                egress: false,
                bytes: r.raw.len() as u64,
                reason,
            });
        }
    }

    fn answer(&mut self, mut c: Box<Command>, r: Msg, out: &mut Vec<DbEvent>) {
        let Body::Reply(v) = &r.body else {
            return;
        };
        if c.confirmations.is_some() || SUB_KINDS.contains(&c.method.as_str()) {
            let kind = c.method.to_ascii_lowercase();
            if first_word(v).as_deref() == Some(kind.as_str())
                && matches!(v, Resp::Array(_) | Resp::Push(_))
            {
                let count = v.elements().and_then(|e| e.last()).and_then(|x| match x {
                    Resp::Integer(i) => Some(*i),
                    _ => None,
                });
                self.subscribed = count.is_some_and(|n| n > 0);
                c.confirmed.push(r);
                let done = match c.confirmations {
                    Some(n) => c.confirmed.len() as u64 >= n,
                    None => count.is_none_or(|n| n <= 0),
                };
                if done {
                    self.emit_confirmed(c, out);
                } else {
                    self.waiting.push_front(Waiting::Cmd(c));
                }
                return;
            }
            if !c.confirmed.is_empty() {
                // Fewer confirmations than expected: close this call, retry the reply.
                self.emit_confirmed(c, out);
                self.replies.push_front(Reply::Msg(r));
                return;
            }
        }
        if matches!(v, Resp::Push(_)) {
            // A confirmation nobody asked for (joined mid-session).
            self.waiting.push_front(Waiting::Cmd(c));
            self.emit_push(r, out);
            return;
        }
        let method = c.method.as_str();
        let in_tx = self.in_multi || !self.queued.is_empty();
        if method == "MULTI" {
            if v.is_status("OK") {
                self.in_multi = true;
            }
            self.emit(c, Some(r), Map::new(), out);
        } else if (method == "EXEC" || method == "DISCARD") && in_tx {
            self.in_multi = false;
            let queued = std::mem::take(&mut self.queued);
            let exec_items = if method == "EXEC" {
                v.elements().map(<[Resp]>::to_vec)
            } else {
                None
            };
            let ok_count = queued.iter().filter(|q| is_queued(&q.reply)).count();
            // Align from the end: joined mid-transaction, the first queued commands are unknown.
            let skip = exec_items
                .as_ref()
                .map_or(0, |items| items.len().saturating_sub(ok_count));
            let mut k = 0;
            for q in queued {
                let mut extra = Map::new();
                if is_queued(&q.reply) {
                    extra.insert("queued".into(), Value::Bool(true));
                    match &exec_items {
                        Some(items) => {
                            let el = items.get(skip + k).cloned();
                            k += 1;
                            if let Some(el) = el {
                                extra.insert("reply".into(), el.to_json());
                                if let Some(e) = el.error_text() {
                                    extra.insert("error".into(), Value::String(e));
                                }
                            } else {
                                extra.insert("reply".into(), Value::Null);
                            }
                        }
                        None => {
                            let flag = if method == "DISCARD" {
                                "discarded"
                            } else {
                                "aborted"
                            };
                            extra.insert("reply".into(), Value::Null);
                            extra.insert(flag.into(), Value::Bool(true));
                        }
                    }
                }
                self.emit(q.cmd, Some(q.reply), extra, out);
            }
            self.emit(c, Some(r), Map::new(), out);
        } else if is_queued(&r) || (self.in_multi && v.error_text().is_some()) {
            self.queued.push(Queued { cmd: c, reply: r });
        } else {
            self.emit(c, Some(r), Map::new(), out);
        }
    }

    fn emit_confirmed(&mut self, mut c: Box<Command>, out: &mut Vec<DbEvent>) {
        let confirmed = std::mem::take(&mut c.confirmed);
        let mut raw = Vec::new();
        let mut truncated = false;
        let mut replies = Vec::new();
        for m in &confirmed {
            let room = self.opts.max_bytes.saturating_sub(raw.len());
            truncated |= m.raw_truncated || m.raw.len() > room;
            raw.extend_from_slice(m.raw.get(..room.min(m.raw.len())).unwrap_or_default());
            if let Body::Reply(v) = &m.body {
                replies.push(v.to_json());
            }
        }
        let (Some(first), Some(last)) = (confirmed.first(), confirmed.last()) else {
            self.emit(c, None, Map::new(), out);
            return;
        };
        let msg = Msg {
            body: Body::Reply(Resp::Null),
            first: first.first,
            last: last.last,
            raw,
            raw_truncated: truncated,
        };
        let mut extra = Map::new();
        extra.insert("reply".into(), Value::Array(replies));
        self.emit(c, Some(msg), extra, out);
    }

    /// Emits one call. `extra` entries override/extend the detail (`reply` included).
    fn emit(
        &mut self,
        c: Box<Command>,
        r: Option<Msg>,
        extra: Map<String, Value>,
        out: &mut Vec<DbEvent>,
    ) {
        if let Some(Body::Reply(v)) = r.as_ref().map(|m| &m.body) {
            self.session_facts(&c, v, out);
        }
        let mut detail = Map::new();
        detail.insert("command".into(), Value::String(c.method.clone()));
        let mut args = c.args;
        if c.omitted > 0 {
            args.push(json!({ "truncated": true, "omitted": c.omitted }));
        }
        detail.insert("args".into(), Value::Array(args));
        let reply = r.as_ref().and_then(|m| match &m.body {
            Body::Reply(v) => Some(v),
            Body::Command { .. } => None,
        });
        let mut error = reply.and_then(Resp::error_text);
        if let Some(v) = reply {
            detail.insert("reply".into(), v.to_json());
            if v.truncated() {
                detail.insert("truncated".into(), Value::Bool(true));
            }
        }
        detail.insert("resp".into(), json!(self.resp));
        for (k, v) in extra {
            if k == "error" {
                error = v.as_str().map(str::to_owned);
            } else {
                detail.insert(k, v);
            }
        }
        let (raw_response, resp_trunc, response_first, response_last) = match r {
            Some(m) => (m.raw, m.raw_truncated, Some(m.first), Some(m.last)),
            None => (Vec::new(), false, None, None),
        };
        let facts_after = c.session_level;
        out.push(DbEvent::Call(Box::new(DbCall {
            protocol: Protocol::Redis,
            index: c.index,
            method: c.method,
            detail: Value::Object(detail),
            error,
            raw_request: Bytes::from(c.raw),
            raw_response: Bytes::from(raw_response),
            raw_truncated: c.raw_truncated || resp_trunc,
            session_level: facts_after,
            request_first: c.first,
            request_last: c.last,
            response_first,
            response_last,
        })));
    }

    /// Session facts learnt from a setup command's reply.
    fn session_facts(&mut self, c: &Command, v: &Resp, out: &mut Vec<DbEvent>) {
        let ok = v.error_text().is_none();
        let mut facts = Map::new();
        match c.method.as_str() {
            "HELLO" => {
                if ok {
                    if let Some(ver) = c.hello_version {
                        self.resp = ver;
                    }
                    let pairs: Vec<&Resp> = match v {
                        Resp::Map(a) | Resp::Array(a) => a.items.iter().collect(),
                        _ => Vec::new(),
                    };
                    let mut hello = Map::new();
                    for kv in pairs.chunks(2) {
                        if let [k, val] = kv
                            && let Some(k) = k.bytes()
                        {
                            let k = String::from_utf8_lossy(k).into_owned();
                            if matches!(
                                k.as_str(),
                                "server" | "version" | "proto" | "mode" | "role"
                            ) {
                                hello.insert(k, val.to_json());
                            }
                        }
                    }
                    facts.insert("hello".into(), Value::Object(hello));
                }
                facts.insert("resp".into(), json!(self.resp));
            }
            "SELECT" if ok => {
                if let Some(db) = c.select_db {
                    facts.insert("db".into(), json!(db));
                }
            }
            "CLIENT SETNAME" if ok => {
                if let Some(n) = c.args.first() {
                    facts.insert("client_name".into(), n.clone());
                }
            }
            _ => {}
        }
        if c.auth {
            facts.insert(
                "auth".into(),
                Value::String(if ok { "ok" } else { "failed" }.into()),
            );
        }
        if !facts.is_empty() {
            out.push(DbEvent::Session {
                protocol: Protocol::Redis,
                facts: Value::Object(facts),
                missing: Vec::new(),
            });
        }
    }

    fn emit_push(&mut self, m: Msg, out: &mut Vec<DbEvent>) {
        let Body::Reply(v) = &m.body else {
            return;
        };
        let kind = first_word(v).unwrap_or_default();
        let mut detail = Map::new();
        detail.insert("push".into(), Value::String(kind));
        detail.insert("reply".into(), v.to_json());
        if v.truncated() {
            detail.insert("truncated".into(), Value::Bool(true));
        }
        detail.insert("resp".into(), json!(self.resp));
        out.push(DbEvent::Call(Box::new(DbCall {
            protocol: Protocol::Redis,
            index: self.next_index,
            method: "PUSH".into(),
            detail: Value::Object(detail),
            error: None,
            raw_request: Bytes::new(),
            raw_response: Bytes::from(m.raw),
            raw_truncated: m.raw_truncated,
            session_level: false,
            request_first: m.first,
            request_last: m.first,
            response_first: Some(m.first),
            response_last: Some(m.last),
        })));
    }

    /// Replies were lost: commands written before `t` (and an open transaction) end without
    /// one. `u64::MAX`: every waiting command.
    fn flush_before(&mut self, t: u64, out: &mut Vec<DbEvent>) {
        self.in_multi = false;
        for q in std::mem::take(&mut self.queued) {
            let mut extra = Map::new();
            extra.insert("queued".into(), Value::Bool(true));
            self.emit(q.cmd, Some(q.reply), extra, out);
        }
        while let Some(w) = self.waiting.front() {
            if let Waiting::Cmd(c) = w
                && c.first.ts_ns >= t
            {
                break;
            }
            if let Some(Waiting::Cmd(c)) = self.waiting.pop_front() {
                if c.confirmed.is_empty() {
                    self.emit(c, None, Map::new(), out);
                } else {
                    self.emit_confirmed(c, out);
                }
            }
        }
    }
}

fn is_queued(m: &Msg) -> bool {
    matches!(&m.body, Body::Reply(v) if v.is_status("QUEUED"))
}

/// Lower-cased first element of an array/push, when it is a string.
fn first_word(v: &Resp) -> Option<String> {
    v.elements()
        .and_then(|e| e.first())
        .and_then(Resp::bytes)
        .map(|b| String::from_utf8_lossy(b).to_ascii_lowercase())
}

fn is_sub_confirmation(v: &Resp) -> bool {
    first_word(v).is_some_and(|w| SUB_KINDS.iter().any(|k| k.eq_ignore_ascii_case(&w)))
}

/// Indexes (in the full argument list, command word included) of arguments that are secrets.
fn secret_args(method: &str, args: &[Blob]) -> Vec<usize> {
    let eq = |i: usize, s: &str| {
        args.get(i)
            .is_some_and(|a| a.data.eq_ignore_ascii_case(s.as_bytes()))
    };
    let n = args.len();
    let mut out = Vec::new();
    match method {
        // AUTH password | AUTH username password
        "AUTH" if n >= 2 => out.push(n - 1),
        // HELLO [protover [AUTH username password] [SETNAME clientname]]
        "HELLO" => {
            for i in 2..n {
                if eq(i, "AUTH") {
                    out.push(i + 2);
                }
            }
        }
        // MIGRATE ... [AUTH password | AUTH2 username password] [KEYS ...]
        "MIGRATE" => {
            for i in 6..n {
                if eq(i, "AUTH") {
                    out.push(i + 1);
                } else if eq(i, "AUTH2") {
                    out.push(i + 2);
                }
            }
        }
        // CONFIG SET name value [name value ...]
        "CONFIG SET" => {
            let mut i = 2;
            while i + 1 < n {
                let name = args
                    .get(i)
                    .map(|a| String::from_utf8_lossy(&a.data).to_ascii_lowercase())
                    .unwrap_or_default();
                if name.contains("pass") || name == "masterauth" || name == "masteruser" {
                    out.push(i + 1);
                }
                i += 2;
            }
        }
        // ACL SETUSER name rule...: `>pw`, `<pw`, `#hash`, `!hash` carry secrets.
        "ACL SETUSER" => {
            for (i, a) in args.iter().enumerate().skip(3) {
                if matches!(a.data.first(), Some(b'>' | b'<' | b'#' | b'!')) {
                    out.push(i);
                }
            }
        }
        _ => {}
    }
    out.retain(|&i| i < n);
    out
}

impl DbParser for RedisParser {
    fn feed(&mut self, egress: bool, seg: Segment, out: &mut Vec<DbEvent>) {
        let mut evs = Vec::new();
        self.dirs[usize::from(!egress)].feed(seg, &mut evs);
        self.handle(egress, evs, out);
    }

    fn close(&mut self, out: &mut Vec<DbEvent>) {
        for egress in [true, false] {
            let mut evs = Vec::new();
            self.dirs[usize::from(!egress)].close(&mut evs);
            self.handle(egress, evs, out);
        }
        self.pair(out);
        // Still waiting for a reply: emitted without one, in order (transactions first).
        self.flush_before(u64::MAX, out);
        while !self.replies.is_empty() {
            self.drop_reply(out, "reply-without-command");
        }
    }

    fn protocol(&self) -> Protocol {
        Protocol::Redis
    }
}
