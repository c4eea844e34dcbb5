//! Reassembly of one direction of one connection from positioned chunks.
//!
//! The kernel stamps every chunk with its byte position in the direction's stream, so chunks
//! that arrive out of order (different CPUs share one ring buffer) are put back in order here,
//! missing ranges become [`Segment::Gap`]s after a timeout or when the kernel says they were
//! lost, and a stream first seen mid-way (attach to a live connection) starts at its first
//! observed position.
//!
//! OWNER: helper A (see docs/ARCHITECTURE.md). Interface is fixed; fill in the implementation.
use std::collections::BTreeMap;

use bytes::Bytes;

/// Bytes of one syscall (or part of it) at a position in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub pos: u64,
    pub data: Bytes,
    pub ts_ns: u64,
    pub tid: u32,
}

/// What the stream hands to the parser, strictly in position order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Data(Chunk),
    /// `len` bytes at `pos` will never arrive.
    Gap {
        pos: u64,
        len: u64,
    },
}

/// Default cap on bytes held back waiting for a hole to fill.
pub const DEFAULT_LIMIT: usize = 8 << 20;

/// Puts the chunks of one direction of one connection back in position order.
///
/// Invariants: buffered chunks never overlap each other and all lie at or after `next`
/// (once the start is fixed); declared-lost ranges are disjoint, sorted, and also lie at or
/// after `next`.
#[derive(Debug)]
pub struct Stream {
    /// Next position to deliver. `None` until the first chunk or loss is seen.
    next: Option<u64>,
    /// Set once something was delivered: from then on the start can no longer move down.
    started: bool,
    /// Buffered, non-overlapping chunks keyed by position.
    pending: BTreeMap<u64, Chunk>,
    /// Declared-lost ranges: start -> end (exclusive), disjoint.
    lost: BTreeMap<u64, u64>,
    buffered: usize,
    limit: usize,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

fn end_of(c: &Chunk) -> u64 {
    c.pos.saturating_add(c.data.len() as u64)
}

/// `chunk` restricted to `[from, to)` (which must intersect it).
fn slice_chunk(c: &Chunk, from: u64, to: u64) -> Chunk {
    let a = usize::try_from(from - c.pos).unwrap_or(usize::MAX);
    let b = usize::try_from(to - c.pos).unwrap_or(usize::MAX);
    Chunk {
        pos: from,
        data: c.data.slice(a..b),
        ts_ns: c.ts_ns,
        tid: c.tid,
    }
}

impl Stream {
    /// A stream with the default memory cap ([`DEFAULT_LIMIT`]). Its start position is the
    /// first chunk or loss seen (mid-stream attach); until something is delivered, a lower
    /// position seen later moves the start down.
    #[must_use]
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }

    /// A stream that holds back at most about `limit` bytes waiting for holes to fill; beyond
    /// that, [`Stream::pop_ready`] declares the hole a gap instead of buffering more (and
    /// [`Stream::push`] drops chunks beyond twice the limit, recording them as lost).
    #[must_use]
    pub fn with_limit(limit: usize) -> Self {
        Self {
            next: None,
            started: false,
            pending: BTreeMap::new(),
            lost: BTreeMap::new(),
            buffered: 0,
            limit,
        }
    }

    /// A stream known to start at `pos` (for example a connection traced from its
    /// `connect`/`accept`, where positions start at 0): chunks below `pos` are ignored and a
    /// chunk after `pos` waits for the bytes before it, as anywhere else in the stream.
    #[must_use]
    pub fn starting_at(pos: u64, limit: usize) -> Self {
        let mut s = Self::with_limit(limit);
        s.next = Some(pos);
        s.started = true;
        s
    }

    /// Next position to deliver (`None` before anything was seen).
    #[must_use]
    pub fn next_pos(&self) -> Option<u64> {
        self.next
    }

    /// Bytes held back waiting for earlier bytes.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Lower the start to `pos` if nothing was delivered yet.
    fn see_start(&mut self, pos: u64) {
        match self.next {
            None => self.next = Some(pos),
            Some(n) if !self.started && pos < n => self.next = Some(pos),
            Some(_) => {}
        }
    }

    /// Add a chunk (any order). Bytes already delivered or already buffered are ignored, so
    /// duplicates and overlaps are harmless.
    pub fn push(&mut self, chunk: Chunk) {
        if chunk.data.is_empty() {
            return;
        }
        self.see_start(chunk.pos);
        let next = self.next.unwrap_or(chunk.pos);
        let end = end_of(&chunk);
        let mut from = chunk.pos.max(next);
        if from >= end {
            return;
        }
        if self.buffered > self.limit.saturating_mul(2) {
            // Hard cap: pop_ready was not called often enough. Drop the chunk, but remember
            // the range as lost so it becomes a Gap rather than a silent hole.
            self.lost(from, end - from);
            return;
        }
        // Existing chunks that may overlap [from, end): the one starting before `from`, and
        // all starting inside.
        let mut covered: Vec<(u64, u64)> = Vec::new();
        if let Some((_, c)) = self.pending.range(..from).next_back()
            && end_of(c) > from
        {
            covered.push((c.pos, end_of(c)));
        }
        covered.extend(
            self.pending
                .range(from..end)
                .map(|(_, c)| (c.pos, end_of(c))),
        );
        for (cs, ce) in covered {
            if cs > from {
                self.insert(slice_chunk(&chunk, from, cs.min(end)));
            }
            from = from.max(ce);
            if from >= end {
                return;
            }
        }
        if from < end {
            self.insert(slice_chunk(&chunk, from, end));
        }
    }

    fn insert(&mut self, c: Chunk) {
        self.buffered += c.data.len();
        self.pending.insert(c.pos, c);
    }

    /// The kernel says `len` bytes at `pos` will never arrive.
    pub fn lost(&mut self, pos: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.see_start(pos);
        let next = self.next.unwrap_or(pos);
        let mut s = pos.max(next);
        let mut e = pos.saturating_add(len);
        if s >= e {
            return;
        }
        // Merge with overlapping or touching ranges.
        let touching: Vec<(u64, u64)> = self
            .lost
            .range(..=e)
            .rev()
            .take_while(|(_, re)| **re >= s)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (rs, re) in touching {
            self.lost.remove(&rs);
            s = s.min(rs);
            e = e.max(re);
        }
        self.lost.insert(s, e);
    }

    /// End of the declared-lost range containing `pos`, if any.
    fn lost_end_at(&self, pos: u64) -> Option<u64> {
        self.lost
            .range(..=pos)
            .next_back()
            .filter(|(_, e)| **e > pos)
            .map(|(_, e)| *e)
    }

    /// Forget lost ranges below `pos`.
    fn prune_lost(&mut self, pos: u64) {
        while let Some((&s, &e)) = self.lost.first_key_value() {
            if e <= pos {
                self.lost.remove(&s);
            } else if s < pos {
                self.lost.remove(&s);
                self.lost.insert(pos, e);
                break;
            } else {
                break;
            }
        }
    }

    /// Deliver what can be delivered, in position order, into `out`.
    ///
    /// Contiguous chunks come out as [`Segment::Data`]. When the next position is missing and
    /// later data is buffered, a [`Segment::Gap`] is emitted (and delivery continues) if the
    /// hole was declared lost, or the oldest buffered chunk is `gap_timeout_ns` old at
    /// `now_ns`, or more than the memory cap is buffered. Declared-lost ranges at the next
    /// position are emitted as gaps right away, even with nothing after them.
    pub fn pop_ready(&mut self, now_ns: u64, gap_timeout_ns: u64, out: &mut Vec<Segment>) {
        self.drain(out, |s| {
            s.buffered > s.limit
                || s.pending
                    .values()
                    .map(|c| c.ts_ns)
                    .min()
                    .is_some_and(|ts| ts.saturating_add(gap_timeout_ns) <= now_ns)
        });
    }

    /// End of stream: deliver everything buffered, with gaps for the holes (and for declared
    /// losses).
    pub fn flush(&mut self, out: &mut Vec<Segment>) {
        self.drain(out, |_| true);
    }

    fn drain(&mut self, out: &mut Vec<Segment>, force_gap: impl Fn(&Self) -> bool) {
        let Some(mut next) = self.next else { return };
        loop {
            // Deliver data at `next`.
            if let Some(c) = self.pending.remove(&next) {
                self.buffered -= c.data.len();
                next = end_of(&c);
                self.started = true;
                out.push(Segment::Data(c));
                continue;
            }
            let first_data = self.pending.first_key_value().map(|(p, _)| *p);
            if let Some(le) = self.lost_end_at(next) {
                let to = first_data.map_or(le, |p| p.min(le));
                out.push(Segment::Gap {
                    pos: next,
                    len: to - next,
                });
                self.started = true;
                next = to;
                continue;
            }
            // Next known position after the hole: buffered data or a declared loss.
            let next_lost = self.lost.range(next..).next().map(|(s, _)| *s);
            let known = match (first_data, next_lost) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(to) = known {
                // pop_ready only forces a gap when data is buffered (timeouts are measured on
                // buffered chunks); flush forces every hole.
                if force_gap(self) {
                    out.push(Segment::Gap {
                        pos: next,
                        len: to - next,
                    });
                    self.started = true;
                    next = to;
                    continue;
                }
            }
            break;
        }
        self.next = Some(next);
        self.prune_lost(next);
    }
}

#[cfg(test)]
mod tests;
