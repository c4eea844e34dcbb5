//! The recorded dependency calls a replay answers from, per destination, and the misses.
//!
//! Every mock server (one listener per recorded destination) asks its [`Destination`] for the
//! recorded call that matches what the app just sent. Matching rules (docs/replay.md):
//! - session-level calls (handshake, `SET`, ping, `HELLO`, type introspection) are answered
//!   whenever asked and never used up;
//! - other calls are used up in recorded order: the first unused call that matches is taken,
//!   so repeated identical calls get their recorded responses in order and calls a request made
//!   concurrently (`gather`) may arrive in any order;
//! - nothing matches: a [`Miss`] is recorded, naming the closest recorded call and the first
//!   differing field, and the mock answers with a protocol-appropriate error.
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::cassette::format::{Event, Wire};

/// A protocol the replay mocks: the registry's [`crate::protocols::Protocol`] (only those whose
/// spec says [`crate::protocols::Replay::Mocked`] get a destination).
pub use crate::protocols::Protocol;

/// The protocol of a recorded event, if replay can mock it. Where protocols share an event
/// type (`db.query`) the library must be the protocol's own name, as the agent records it: a
/// Python tool cassette's `db.query` from `asyncpg` has no wire bytes to answer with.
#[must_use]
pub fn mocked_protocol(ev: &Event) -> Option<Protocol> {
    let p = Protocol::of_event(&ev.kind, &ev.signature.lib)?;
    let shared = Protocol::all()
        .filter(|q| q.event_type() == ev.kind)
        .count()
        > 1;
    (p.spec().replay == crate::protocols::Replay::Mocked
        && (!shared || ev.signature.lib == p.name()))
    .then_some(p)
}

/// One recorded dependency call, ready to be answered.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// Index of the cassette (in the order given to `replay`).
    pub cassette: usize,
    pub eid: u64,
    pub protocol: Protocol,
    pub session_level: bool,
    /// The whole recorded event (HTTP matching and reports use it).
    pub event: Event,
    /// `wire.request_b64` decoded (database and cache calls); empty for HTTP.
    pub request: Vec<u8>,
    /// `wire.response_b64` decoded (database and cache calls); empty for HTTP.
    pub response: Vec<u8>,
    /// The recorded bytes were cut at the capture cap: the response cannot be replayed exactly.
    pub truncated: bool,
}

impl RecordedCall {
    /// Builds a call from an event, decoding its `wire` bytes.
    ///
    /// # Errors
    /// When `wire` holds invalid base64.
    pub fn new(cassette: usize, protocol: Protocol, event: Event) -> Result<Self, String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (request, response, truncated) = match &event.wire {
            Some(Wire {
                request_b64,
                response_b64,
                truncated,
            }) => (
                b64.decode(request_b64)
                    .map_err(|e| format!("event {}: wire.request_b64: {e}", event.eid))?,
                b64.decode(response_b64)
                    .map_err(|e| format!("event {}: wire.response_b64: {e}", event.eid))?,
                *truncated,
            ),
            None => (Vec::new(), Vec::new(), false),
        };
        Ok(Self {
            cassette,
            eid: event.eid,
            protocol,
            session_level: event.session_level,
            event,
            request,
            response,
            truncated,
        })
    }

    /// The recording had values redacted (`detail.redacted` of a database / cache call).
    #[must_use]
    pub fn was_redacted(&self) -> bool {
        self.event
            .db
            .as_ref()
            .is_some_and(|d| d.get("redacted").is_some())
    }

    /// A one-line description for verdicts: `GET /x?y=1`, `SELECT … WHERE id = $1 [42]`, `GET k`.
    #[must_use]
    pub fn describe(&self) -> String {
        describe_event(&self.event)
    }
}

/// One-line description of a recorded event.
#[must_use]
pub fn describe_event(ev: &Event) -> String {
    if let Some(db) = &ev.db {
        if let Some(sql) = db.get("sql").and_then(Value::as_str) {
            let params = db
                .get("params")
                .map(|p| format!(" {p}"))
                .unwrap_or_default();
            return format!("{}{params}", one_line(sql, 160));
        }
        if let Some(cmd) = db.get("command").and_then(Value::as_object) {
            // MongoDB: the command document.
            let name = db.get("db").and_then(Value::as_str);
            return one_line(&crate::protocols::mongodb::describe_command(cmd, name), 200);
        }
        if let Some(cmd) = db.get("command").and_then(Value::as_str) {
            let args = db.get("args").map(|a| format!(" {a}")).unwrap_or_default();
            return one_line(&format!("{cmd}{args}"), 200);
        }
    }
    let url = ev.signature.url.clone().unwrap_or_default();
    let query = ev
        .signature
        .query
        .as_ref()
        .filter(|q| !q.is_empty())
        .map(|q| format!(" {}", Value::Object(q.clone())))
        .unwrap_or_default();
    format!("{} {url}{query}", ev.signature.method)
}

/// Cuts `s` to one line of at most `max` characters.
#[must_use]
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// The first difference between what the app sent and a recorded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Dotted path of the field: `query.user`, `params[0]`, `sql`, `args[1]`, `body.items[2].id`.
    pub field: String,
    pub expected: String,
    pub actual: String,
    /// How far the comparison got before this difference (0: the call's identity differs —
    /// SQL, command, method and path; more: only parameters / arguments differ). A miss is
    /// reported against the candidate with the deepest difference, so a changed parameter is
    /// named against the same statement rather than against another call.
    #[serde(skip)]
    pub depth: u32,
}

impl Diff {
    pub fn new(
        field: impl Into<String>,
        expected: impl fmt::Display,
        actual: impl fmt::Display,
    ) -> Self {
        Self {
            field: field.into(),
            expected: one_line(&expected.to_string(), 300),
            actual: one_line(&actual.to_string(), 300),
            depth: 0,
        }
    }

    /// Depth of a difference in the call's text (SQL): the length of the common prefix, so
    /// the recorded statement closest to the app's is named. Below any parameter depth.
    #[must_use]
    pub fn text_depth(expected: &str, actual: &str) -> u32 {
        let common = expected
            .bytes()
            .zip(actual.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        u32::try_from(common.min(Self::PARAMS_DEPTH as usize - 1)).unwrap_or(0)
    }

    /// Depth of differences past the call's identity (parameters, arguments): above any
    /// [`Diff::text_depth`].
    pub const PARAMS_DEPTH: u32 = 1 << 20;

    /// This difference at comparison depth `depth` (see [`Diff::depth`]).
    #[must_use]
    pub fn at_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }
}

/// A dependency call of the app that no recorded call answered.
#[derive(Clone, Debug, Serialize)]
pub struct Miss {
    pub protocol: Protocol,
    /// The recorded destination the app connected to (`ip:port`).
    pub destination: String,
    /// What the app sent, in one line.
    pub call: String,
    /// The closest recorded call (the first unused one of the destination), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The first differing field against `expected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_value: Option<String>,
    /// Why, when it is not a plain mismatch (`unexpected connection`, `truncated recording`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// Calls of one kind the recording did not hold that a mock answered by a protocol rule
/// (docs/replay.md "Answered by rule"): named in the verdict, never silent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleAnswer {
    pub protocol: Protocol,
    pub destination: String,
    /// What the app sent, in one line.
    pub call: String,
    /// The rule that answered it.
    pub rule: String,
    /// How many times.
    pub count: u32,
}

/// Everything the replay records while it runs, shared by all mock servers.
#[derive(Debug, Default)]
pub struct Journal {
    misses: Mutex<Vec<Miss>>,
    rules: Mutex<Vec<RuleAnswer>>,
}

impl Journal {
    /// Counts a call answered by `rule` (the same call and rule once, with a count).
    pub fn ruled(&self, protocol: Protocol, destination: &str, call: &str, rule: &str) {
        let call = one_line(call, 200);
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        match rules
            .iter_mut()
            .find(|r| r.destination == destination && r.call == call && r.rule == rule)
        {
            Some(r) => r.count += 1,
            None => rules.push(RuleAnswer {
                protocol,
                destination: destination.to_owned(),
                call,
                rule: rule.to_owned(),
                count: 1,
            }),
        }
    }

    /// Every call answered by a rule so far, in the order first seen.
    #[must_use]
    pub fn rules(&self) -> Vec<RuleAnswer> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn push(&self, miss: Miss) {
        self.misses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(miss);
    }

    /// All misses so far, in the order they happened.
    #[must_use]
    pub fn misses(&self) -> Vec<Miss> {
        self.misses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One recorded destination (`ip:port` + protocol) and its calls.
#[derive(Debug)]
pub struct Destination {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// The recording was TLS: the mock terminates TLS with a certificate of the mock CA.
    pub tls: bool,
    /// SNI names seen in the recording (certificate subject alternative names).
    pub server_names: Vec<String>,
    /// `db_sessions[].facts` recorded for this destination (server version, parameter
    /// statuses, ...), most complete first. Mocks use them to answer handshakes.
    pub facts: Vec<Value>,
    journal: Arc<Journal>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<RecordedCall>,
    used: Vec<bool>,
    /// How many times each call was answered (session-level ones can be answered many times).
    answered: Vec<u32>,
}

/// Per-cassette counts of one destination's calls, for the verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub matched: u32,
    /// Of `matched`: calls whose recording had values redacted (`detail.redacted`), which
    /// matched whatever the app sent in their place: "matched (redacted)".
    pub redacted: u32,
    pub unused: u32,
}

impl Destination {
    #[must_use]
    pub fn new(addr: SocketAddr, protocol: Protocol, journal: Arc<Journal>) -> Self {
        Self {
            addr,
            protocol,
            tls: false,
            server_names: Vec::new(),
            facts: Vec::new(),
            journal,
            state: Mutex::new(State::default()),
        }
    }

    /// Adds a recorded call (in recorded order).
    pub fn push(&self, call: RecordedCall) {
        let mut st = self.lock();
        st.calls.push(call);
        st.used.push(false);
        st.answered.push(0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Finds the recorded call that answers what the app sent.
    ///
    /// `actual` describes the app's call in one line (for the verdict). `compare` returns
    /// `Ok(())` when a recorded call matches, else the first differing field. Session-level
    /// calls are tried first and never used up; then the first unused other call that matches
    /// is used up. When nothing matches, a [`Miss`] is journaled (against the first unused
    /// call, or the first session-level one when all are used) and returned.
    ///
    /// # Errors
    /// The miss, for the mock to turn into a protocol error.
    #[expect(
        clippy::result_large_err,
        reason = "a miss is the rare path and is journaled and reported whole"
    )]
    pub fn take(
        &self,
        actual: &str,
        compare: impl Fn(&RecordedCall) -> Result<(), Diff>,
    ) -> Result<RecordedCall, Miss> {
        let mut st = self.lock();
        let hit = (0..st.calls.len())
            .filter(|&i| st.calls[i].session_level)
            .chain((0..st.calls.len()).filter(|&i| !st.calls[i].session_level && !st.used[i]))
            .find(|&i| compare(&st.calls[i]).is_ok());
        if let Some(i) = hit {
            if !st.calls[i].session_level {
                st.used[i] = true;
            }
            st.answered[i] += 1;
            return Ok(st.calls[i].clone());
        }
        // The closest candidate: the deepest difference among the unused calls (the first on
        // ties), else among the session-level ones.
        let deepest = |candidates: Vec<usize>| {
            let mut best: Option<(usize, u32)> = None;
            for i in candidates {
                let depth = compare(&st.calls[i]).err().map_or(0, |d| d.depth);
                if best.is_none_or(|(_, b)| depth > b) {
                    best = Some((i, depth));
                }
            }
            best.map(|(i, _)| i)
        };
        let unused = (0..st.calls.len())
            .filter(|&i| !st.calls[i].session_level && !st.used[i])
            .collect();
        let session = (0..st.calls.len())
            .filter(|&i| st.calls[i].session_level)
            .collect();
        let closest = deepest(unused).or_else(|| deepest(session));
        let mut miss = Miss {
            protocol: self.protocol,
            destination: self.addr.to_string(),
            call: one_line(actual, 300),
            expected: None,
            field: None,
            expected_value: None,
            actual_value: None,
            reason: None,
            at: Some(Instant::now()),
        };
        if let Some(i) = closest {
            miss.expected = Some(st.calls[i].describe());
            if let Err(d) = compare(&st.calls[i]) {
                miss.field = Some(d.field);
                miss.expected_value = Some(d.expected);
                miss.actual_value = Some(d.actual);
            }
        } else {
            miss.reason = Some("no recorded call left for this destination".into());
        }
        drop(st);
        self.journal.push(miss.clone());
        Err(miss)
    }

    /// Like [`Destination::take`], but when nothing matches returns `None` and journals
    /// nothing: for session traffic a mock can also answer by the protocol's rules (`PING`,
    /// `AUTH`, a `SET`), where not finding a recording is not a miss.
    pub fn try_take(
        &self,
        compare: impl Fn(&RecordedCall) -> Result<(), Diff>,
    ) -> Option<RecordedCall> {
        let mut st = self.lock();
        let i = (0..st.calls.len())
            .filter(|&i| st.calls[i].session_level)
            .chain((0..st.calls.len()).filter(|&i| !st.calls[i].session_level && !st.used[i]))
            .find(|&i| compare(&st.calls[i]).is_ok())?;
        if !st.calls[i].session_level {
            st.used[i] = true;
        }
        st.answered[i] += 1;
        Some(st.calls[i].clone())
    }

    /// Finds a recorded call without using it up or counting it as answered: unused calls
    /// first (in recorded order), then session-level ones, then calls already used. For
    /// answers that depend only on the statement, not on one execution (a PostgreSQL
    /// `Parse` / `Describe` answered at `Flush`, before the parameters are known).
    #[must_use]
    pub fn find(&self, matches: impl Fn(&RecordedCall) -> bool) -> Option<RecordedCall> {
        let st = self.lock();
        let n = st.calls.len();
        (0..n)
            .filter(|&i| !st.calls[i].session_level && !st.used[i])
            .chain((0..n).filter(|&i| st.calls[i].session_level))
            .chain((0..n).filter(|&i| !st.calls[i].session_level && st.used[i]))
            .find(|&i| matches(&st.calls[i]))
            .map(|i| st.calls[i].clone())
    }

    /// Journals that the app's `call` was answered by `rule`, not from the recording.
    pub fn answered_by_rule(&self, call: &str, rule: &str) {
        tracing::info!(destination = %self.addr, call = %one_line(call, 200), rule, "Answered by rule");
        self.journal
            .ruled(self.protocol, &self.addr.to_string(), call, rule);
    }

    /// Journals a miss that is not a mismatch against a recorded call (`reason` says why).
    pub fn miss(&self, actual: &str, reason: &str) -> Miss {
        let miss = Miss {
            protocol: self.protocol,
            destination: self.addr.to_string(),
            call: one_line(actual, 300),
            expected: None,
            field: None,
            expected_value: None,
            actual_value: None,
            reason: Some(reason.to_string()),
            at: Some(Instant::now()),
        };
        self.journal.push(miss.clone());
        miss
    }

    /// Recorded non-session-level calls never asked for, with their cassette index.
    #[must_use]
    pub fn unused(&self) -> Vec<RecordedCall> {
        let st = self.lock();
        (0..st.calls.len())
            .filter(|&i| !st.calls[i].session_level && !st.used[i])
            .map(|i| st.calls[i].clone())
            .collect()
    }

    /// Recorded non-session-level calls of cassettes `from..` not asked for yet, and how many
    /// answers this destination gave so far: what replay watches while the app starts.
    #[must_use]
    pub fn progress(&self, from: usize) -> (usize, u64) {
        let st = self.lock();
        let left = (0..st.calls.len())
            .filter(|&i| st.calls[i].cassette >= from && !st.calls[i].session_level && !st.used[i])
            .count();
        (left, st.answered.iter().map(|&n| u64::from(n)).sum())
    }

    /// Makes the calls of cassettes `from..` (the startup cassettes) answerable again: the app
    /// was started again after a crash and boots anew.
    pub fn reuse_from(&self, from: usize) {
        let mut st = self.lock();
        for i in 0..st.calls.len() {
            if st.calls[i].cassette >= from {
                st.used[i] = false;
            }
        }
    }

    /// Request `cassette` was judged: its calls not made (reported as such) can no longer
    /// answer a later request's identical call, which would leave that request's own unused
    /// (a crashed request's calls answering the next request's).
    pub fn retire(&self, cassette: usize) {
        let mut st = self.lock();
        for i in 0..st.calls.len() {
            if st.calls[i].cassette == cassette {
                st.used[i] = true;
            }
        }
    }

    /// How many non-session-level calls of cassette `cassette` are not asked for yet.
    #[must_use]
    pub fn left_of(&self, cassette: usize) -> usize {
        let st = self.lock();
        (0..st.calls.len())
            .filter(|&i| {
                st.calls[i].cassette == cassette && !st.calls[i].session_level && !st.used[i]
            })
            .count()
    }

    /// Calls of cassette `cassette` that were answered / never asked for.
    #[must_use]
    pub fn usage(&self, cassette: usize) -> Usage {
        let st = self.lock();
        let mut u = Usage::default();
        for i in 0..st.calls.len() {
            if st.calls[i].cassette != cassette {
                continue;
            }
            if st.answered[i] > 0 {
                u.matched += 1;
                u.redacted += u32::from(st.calls[i].was_redacted());
            } else if !st.calls[i].session_level {
                u.unused += 1;
            }
        }
        u
    }

    /// Every session-level call recorded for this destination (handshake answers etc.).
    #[must_use]
    pub fn session_calls(&self) -> Vec<RecordedCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.session_level)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(eid: u64, session_level: bool, method: &str) -> RecordedCall {
        let ev = Event {
            eid,
            kind: "redis".into(),
            session_level,
            signature: crate::cassette::format::Signature {
                lib: "redis".into(),
                method: method.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        RecordedCall::new(0, Protocol::Redis, ev).unwrap()
    }

    fn by_method(m: &'static str) -> impl Fn(&RecordedCall) -> Result<(), Diff> {
        move |c| {
            if c.event.signature.method == m {
                Ok(())
            } else {
                Err(Diff::new("command", &c.event.signature.method, m))
            }
        }
    }

    #[test]
    fn repeated_calls_in_order_session_calls_reusable() {
        let journal = Arc::new(Journal::default());
        let d = Destination::new(
            "127.0.0.1:6379".parse().unwrap(),
            Protocol::Redis,
            journal.clone(),
        );
        d.push(call(1, true, "PING"));
        d.push(call(2, false, "GET"));
        d.push(call(3, false, "SET"));
        d.push(call(4, false, "GET"));
        assert_eq!(d.take("PING", by_method("PING")).unwrap().eid, 1);
        assert_eq!(d.take("GET", by_method("GET")).unwrap().eid, 2);
        assert_eq!(d.take("GET", by_method("GET")).unwrap().eid, 4);
        assert_eq!(d.take("PING", by_method("PING")).unwrap().eid, 1);
        let miss = d.take("DEL", by_method("DEL")).unwrap_err();
        assert_eq!(miss.field.as_deref(), Some("command"));
        assert_eq!(miss.expected_value.as_deref(), Some("SET"));
        assert_eq!(journal.misses().len(), 1);
        assert_eq!(d.unused().len(), 1);
        assert_eq!(
            d.usage(0),
            Usage {
                matched: 3,
                redacted: 0,
                unused: 1
            }
        );
    }

    #[test]
    fn quiet_take_find_and_the_closest_call() {
        let journal = Arc::new(Journal::default());
        let d = Destination::new(
            "127.0.0.1:6379".parse().unwrap(),
            Protocol::Redis,
            journal.clone(),
        );
        d.push(call(1, false, "SET"));
        d.push(call(2, false, "GET"));
        d.push(call(3, true, "PING"));
        // `find` neither uses up nor counts.
        assert_eq!(
            d.find(|c| c.event.signature.method == "GET").unwrap().eid,
            2
        );
        assert_eq!(d.unused().len(), 2);
        // `try_take` journals nothing when nothing matches.
        assert!(d.try_take(by_method("HELLO")).is_none());
        assert!(journal.misses().is_empty());
        assert_eq!(d.try_take(by_method("PING")).unwrap().eid, 3);
        // The miss is reported against the deepest difference, not the first unused call.
        let miss = d
            .take("GET other", |c| {
                if c.event.signature.method == "GET" {
                    Err(Diff::new("args[0]", "k", "other").at_depth(Diff::PARAMS_DEPTH))
                } else {
                    Err(Diff::new("command", &c.event.signature.method, "GET"))
                }
            })
            .unwrap_err();
        assert_eq!(miss.field.as_deref(), Some("args[0]"));
        assert_eq!(d.find(|c| c.eid == 2).unwrap().eid, 2);
        // Text depth: the longest common prefix, below any parameter depth.
        assert_eq!(Diff::text_depth("SELECT 1", "SELECT 2"), 7);
        assert!(Diff::text_depth(&"a".repeat(1 << 21), &"a".repeat(1 << 21)) < Diff::PARAMS_DEPTH);
    }
}
