//! The inbound requests the correlator holds, indexed.
//!
//! Finished requests stay a while after their cassette is written (calls that complete late
//! still need them to tell a sequential call from a concurrent one), so at a few thousand
//! requests per second the queue holds tens of thousands of entries. Every HTTP event, every
//! decided call and every drain looked requests up by scanning it, which made the agent's CPU
//! grow with the request rate squared; this keeps those lookups O(1) and lets the drain visit
//! only requests not finalized yet.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::Inbound;

/// Requests in arrival order, with a (connection, parser index) index.
///
/// Entry `i` has sequence number `base + i`; sequence numbers never repeat, so an index entry
/// can outlive the request it named only as a number that [`Self::pos`] rejects.
#[derive(Default)]
pub(super) struct Inbounds {
    q: VecDeque<Inbound>,
    base: u64,
    /// (connection id, parser index) → sequence of the latest request with that key.
    by_key: HashMap<(u64, u64), u64>,
    /// (due time, sequence) of requests whose response ended and that are not finalized:
    /// due = end of the response + the grace period it waits for late calls.
    due: BTreeSet<(u64, u64)>,
    /// Requests held per connection (finalized or not).
    per_conn: HashMap<u64, usize>,
    /// Sequences of requests whose response has not ended (in flight).
    unended: BTreeSet<u64>,
    /// (start, sequence) of requests whose response ended.
    ended_by_start: BTreeSet<(u64, u64)>,
    /// The longest start-to-end span among ended requests ever held: a request that
    /// contains an instant started at most this long before it.
    max_span_ns: u64,
    /// Sequences of ended, not finalized requests that changed since the last
    /// [`Self::take_touched`] (their response ended, a call was added); kept only while
    /// `tracking` (a live viewer wants provisional snapshots).
    touched: BTreeSet<u64>,
    tracking: bool,
}

impl Inbounds {
    pub(super) fn push(&mut self, r: Inbound) {
        let seq = self.base + self.q.len() as u64;
        self.by_key.insert((r.conn_id, r.index), seq);
        debug_assert!(
            r.end_ns.is_none() && !r.finalized,
            "pushed when its head is seen"
        );
        self.unended.insert(seq);
        *self.per_conn.entry(r.conn_id).or_default() += 1;
        self.q.push_back(r);
    }

    fn index_ended(&mut self, seq: u64, start: u64, end: u64) {
        self.ended_by_start.insert((start, seq));
        self.max_span_ns = self.max_span_ns.max(end.saturating_sub(start));
    }

    /// The response of request `i` ended: its span becomes `[min(start, its start), end]`,
    /// and it is due `grace_ns` after `end`.
    pub(super) fn set_ended(&mut self, i: usize, start: u64, end: u64, grace_ns: u64) {
        let seq = self.base + i as u64;
        let r = &mut self.q[i];
        if r.end_ns.is_some() {
            self.ended_by_start.remove(&(r.start_ns, seq));
            self.due.remove(&(r.due_ns, seq));
        }
        r.start_ns = r.start_ns.min(start);
        let end = end.max(r.start_ns);
        r.end_ns = Some(end);
        r.due_ns = end.saturating_add(grace_ns);
        let (start, due) = (r.start_ns, r.due_ns);
        if !r.finalized {
            self.due.insert((due, seq));
        }
        self.unended.remove(&seq);
        self.index_ended(seq, start, end);
        self.touch(i);
    }

    /// Request `i` changed: when it is ended and not finalized, its next snapshot is due.
    pub(super) fn touch(&mut self, i: usize) {
        let r = &self.q[i];
        if self.tracking && r.end_ns.is_some() && !r.finalized {
            self.touched.insert(self.base + i as u64);
        }
    }

    /// Starts or stops tracking changes (stopping forgets what was touched).
    pub(super) fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.touched.clear();
        }
    }

    /// Positions of the requests touched since the last call, in arrival order.
    pub(super) fn take_touched(&mut self) -> Vec<usize> {
        let touched = std::mem::take(&mut self.touched);
        touched.into_iter().filter_map(|s| self.pos(s)).collect()
    }

    /// Positions of the requests of process `tgid` that were open at `ts` (started at or
    /// before it, response not ended before it), in arrival order.
    pub(super) fn open_at(&self, tgid: u32, ts: u64) -> Vec<usize> {
        let from = ts.saturating_sub(self.max_span_ns);
        let ended = self
            .ended_by_start
            .range((from, 0)..=(ts, u64::MAX))
            .map(|&(_, seq)| seq);
        let mut seqs: Vec<u64> = self.unended.iter().copied().chain(ended).collect();
        seqs.sort_unstable();
        seqs.into_iter()
            .filter_map(|s| self.pos(s))
            .filter(|&i| {
                let r = &self.q[i];
                r.tgid == tgid && r.start_ns <= ts && r.end_ns.is_none_or(|e| ts <= e)
            })
            .collect()
    }

    fn pos(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        (i < self.q.len()).then_some(i)
    }

    /// Position of the latest request with this key, finalized or not.
    pub(super) fn latest(&self, conn_id: u64, index: u64) -> Option<usize> {
        self.pos(*self.by_key.get(&(conn_id, index))?)
    }

    /// Position of the request with this key that is not finalized yet.
    pub(super) fn find_open(&self, conn_id: u64, index: u64) -> Option<usize> {
        self.latest(conn_id, index)
            .filter(|&i| !self.q[i].finalized)
    }

    /// Positions of the requests not finalized yet whose due time is at or before `now`,
    /// earliest due first.
    pub(super) fn due_positions(&self, now: u64) -> Vec<usize> {
        self.due
            .range(..=(now, u64::MAX))
            .filter_map(|&(_, s)| self.pos(s))
            .collect()
    }

    pub(super) fn finalize(&mut self, i: usize) {
        let r = &mut self.q[i];
        r.finalized = true;
        self.due.remove(&(r.due_ns, self.base + i as u64));
        self.touched.remove(&(self.base + i as u64));
    }

    /// True while some held request came from this connection (checked by the property test).
    #[cfg(test)]
    pub(super) fn has_conn(&self, conn_id: u64) -> bool {
        self.per_conn.contains_key(&conn_id)
    }

    pub(super) fn front(&self) -> Option<&Inbound> {
        self.q.front()
    }

    pub(super) fn pop_front(&mut self) -> Option<Inbound> {
        let r = self.q.pop_front()?;
        let seq = self.base;
        self.base += 1;
        self.unended.remove(&seq);
        self.touched.remove(&seq);
        if r.end_ns.is_some() {
            self.ended_by_start.remove(&(r.start_ns, seq));
            self.due.remove(&(r.due_ns, seq));
        }
        if self.by_key.get(&(r.conn_id, r.index)) == Some(&seq) {
            self.by_key.remove(&(r.conn_id, r.index));
        }
        if let Some(n) = self.per_conn.get_mut(&r.conn_id) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&r.conn_id);
            }
        }
        Some(r)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Inbound> {
        self.q.iter()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.q.len()
    }
}

impl std::ops::Index<usize> for Inbounds {
    type Output = Inbound;
    fn index(&self, i: usize) -> &Inbound {
        &self.q[i]
    }
}

impl std::ops::IndexMut<usize> for Inbounds {
    fn index_mut(&mut self, i: usize) -> &mut Inbound {
        &mut self.q[i]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::correlate::model::ConnFacts;

    fn req(conn_id: u64, index: u64, start_ns: u64) -> Inbound {
        let facts = ConnFacts {
            pid: 1,
            conn_id,
            ..ConnFacts::default()
        };
        Inbound::new(&facts, index, start_ns, 1)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { conn: u64, start: u64 },
        End { pick: usize, start: u64, len: u64 },
        Finalize { pick: usize },
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4u64, 0..1000u64).prop_map(|(conn, start)| Op::Push { conn, start }),
            (any::<usize>(), 0..1000u64, 0..300u64).prop_map(|(pick, start, len)| Op::End {
                pick,
                start,
                len
            }),
            any::<usize>().prop_map(|pick| Op::Finalize { pick }),
            Just(Op::Pop),
        ]
    }

    proptest! {
        /// Every indexed lookup answers what a scan of the queue answers.
        #[test]
        fn lookups_agree_with_a_scan(ops in proptest::collection::vec(op(), 1..120)) {
            let mut ib = Inbounds::default();
            let mut next_index = [0u64; 4];
            for op in ops {
                match op {
                    Op::Push { conn, start } => {
                        let index = next_index[conn as usize];
                        next_index[conn as usize] += 1;
                        ib.push(req(conn, index, start));
                    }
                    Op::End { pick, start, len } if ib.len() > 0 => {
                        let i = pick % ib.len();
                        if ib[i].end_ns.is_none() {
                            ib.set_ended(i, start, start + len, 100);
                        }
                    }
                    Op::Finalize { pick } if ib.len() > 0 => {
                        let i = pick % ib.len();
                        if ib[i].end_ns.is_some() && !ib[i].finalized {
                            ib.finalize(i);
                        }
                    }
                    Op::Pop => {
                        ib.pop_front();
                    }
                    _ => {}
                }
                let all: Vec<&Inbound> = ib.iter().collect();
                for ts in (0..1400).step_by(50) {
                    let scan: Vec<usize> = (0..all.len())
                        .filter(|&j| {
                            all[j].start_ns <= ts && all[j].end_ns.is_none_or(|e| ts <= e)
                        })
                        .collect();
                    prop_assert_eq!(ib.open_at(1, ts), scan);
                    prop_assert!(ib.open_at(2, ts).is_empty());
                }
                for now in (0..1600).step_by(100) {
                    let mut due: Vec<(u64, usize)> = (0..all.len())
                        .filter(|&j| !all[j].finalized && all[j].end_ns.is_some_and(|e| e + 100 <= now))
                        .map(|j| (all[j].due_ns, j))
                        .collect();
                    due.sort_unstable();
                    let due: Vec<usize> = due.into_iter().map(|(_, j)| j).collect();
                    prop_assert_eq!(ib.due_positions(now), due);
                }
                for conn in 0..4 {
                    prop_assert_eq!(ib.has_conn(conn), all.iter().any(|r| r.conn_id == conn));
                    for index in 0..next_index[conn as usize] {
                        let found = (0..all.len())
                            .find(|&j| all[j].conn_id == conn && all[j].index == index);
                        prop_assert_eq!(ib.latest(conn, index), found);
                        prop_assert_eq!(
                            ib.find_open(conn, index),
                            found.filter(|&j| !all[j].finalized)
                        );
                    }
                }
            }
        }
    }
}
