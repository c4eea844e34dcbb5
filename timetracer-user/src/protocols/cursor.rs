//! [`StreamCursor`]: the unconsumed bytes of one direction of a connection, with the chunk
//! marks (position, time, thread) they came from. Every parser frames its messages out of one
//! (HTTP, PostgreSQL, MySQL, Redis, MongoDB), so that the time, thread and position
//! ([`Mark`]) of any byte it frames can be reported.
//!
//! # Positions
//! A position is the absolute byte offset in the direction's stream (the reassembler's
//! `Chunk::pos`), never an index into the buffer. The cursor holds the bytes from [`pos`]
//! (the first unconsumed one) to [`end`] (the next expected one). A chunk given to
//! [`append`] may start before `end` (overlap: only its new bytes are kept, the bytes already
//! seen keep their first mark) or after it (a jump: the bytes in between were lost; what was
//! unconsumed is dropped and the stream goes on at the chunk). Parsers that must report a loss
//! before the bytes after it call [`reset_to`] first (a gap), so that `append` finds no jump.
//!
//! # Marks
//! Each appended chunk leaves one mark at its first new byte. The mark of a byte is the mark of
//! the chunk it arrived in: the last mark at or before it (or the first mark, for positions
//! before every mark). Marks no unconsumed byte needs are dropped when the buffer is compacted,
//! unless [`keep_marks_from`] asks to keep those of a message in progress.
//!
//! # Why not a library
//! `bytes::BytesMut` (or a `VecDeque<u8>`) holds bytes, but no positions and no per-chunk marks,
//! and knows nothing of overlaps, jumps or a message being discarded as it arrives; those are
//! what the parsers need, so the small bookkeeping here is ours. The bytes are a `Vec` with a
//! read offset: `append` copies a chunk once (and first moves the unconsumed tail to the front,
//! usually a few bytes), consuming is an offset bump, and [`take`] copies the message out so
//! that an event never pins a whole receive buffer (as a zero-copy `BytesMut::split_to` would).
//! Mark look-ups are binary searches (marks are strictly ascending), so no call does per-byte
//! work beyond copying.
//!
//! [`pos`]: StreamCursor::pos
//! [`end`]: StreamCursor::end
//! [`append`]: StreamCursor::append
//! [`reset_to`]: StreamCursor::reset_to
//! [`keep_marks_from`]: StreamCursor::keep_marks_from
//! [`take`]: StreamCursor::take
use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocols::http::types::Mark;
use crate::reassembly::Chunk;

/// Unconsumed bytes of one direction of a connection with the marks of the chunks they came
/// from. See the [module documentation](self) for the position semantics.
#[derive(Debug, Default)]
pub(crate) struct StreamCursor {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    off: usize,
    /// Stream position of `buf[0]`.
    base: u64,
    /// One mark per chunk (`pos`: the chunk's first new byte), strictly ascending by `pos`.
    marks: VecDeque<Mark>,
    /// Next expected stream position (`None` before the first chunk or reset).
    end: Option<u64>,
    /// Bytes of an oversized message still to be discarded as they arrive.
    discard: u64,
    /// Compaction keeps the marks of the positions from here on (a message in progress).
    keep_from: Option<u64>,
    /// A chunk or a reset was given.
    seen: bool,
}

impl StreamCursor {
    /// Stream position of the first unconsumed byte.
    pub(crate) fn pos(&self) -> u64 {
        self.base + self.off as u64
    }

    /// Next expected stream position: just after the last byte appended (or discarded), or the
    /// position given to [`reset_to`](Self::reset_to). `None` before the first of them.
    pub(crate) fn end(&self) -> Option<u64> {
        self.end
    }

    /// Whether anything (a chunk, even empty, or a reset) was given to this direction.
    pub(crate) fn seen(&self) -> bool {
        self.seen
    }

    /// The unconsumed bytes, from [`pos`](Self::pos) on.
    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.off..]
    }

    /// Number of unconsumed bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.off
    }

    /// Index of the first mark after `pos` (marks are ascending).
    fn after(&self, pos: u64) -> usize {
        self.marks.partition_point(|m| m.pos <= pos)
    }

    /// The mark of the byte at stream position `pos`: time and thread of the chunk it arrived
    /// in (the last mark at or before `pos`; the first mark if `pos` is before all of them;
    /// zero time and thread if there is no mark), with `pos` as its position. Meant for
    /// positions from [`pos`](Self::pos) on, and for those of a message kept by
    /// [`keep_marks_from`](Self::keep_marks_from); a position past [`end`](Self::end) gets
    /// the last chunk's mark.
    pub(crate) fn mark_at(&self, pos: u64) -> Mark {
        let i = self.after(pos);
        let m = i
            .checked_sub(1)
            .and_then(|i| self.marks.get(i))
            .or(self.marks.front());
        m.map_or(
            Mark {
                ts_ns: 0,
                tid: 0,
                pos,
            },
            |m| Mark { pos, ..*m },
        )
    }

    /// Whether a chunk started (its first new byte) exactly at `pos`.
    pub(crate) fn is_chunk_start(&self, pos: u64) -> bool {
        let i = self.after(pos);
        i > 0 && self.marks[i - 1].pos == pos
    }

    /// Position of the first chunk start after `pos`, if any arrived.
    pub(crate) fn next_chunk_start(&self, pos: u64) -> Option<u64> {
        self.marks.get(self.after(pos)).map(|m| m.pos)
    }

    /// Consumes `n` bytes (at most the available ones) and returns them (copied) with the
    /// marks of the first and the last (for `n == 0`: both at [`pos`](Self::pos)).
    pub(crate) fn take(&mut self, n: usize) -> (Bytes, Mark, Mark) {
        let n = n.min(self.len());
        let start = self.pos();
        let first = self.mark_at(start);
        let last = self.mark_at(start + (n.max(1) as u64) - 1);
        let b = Bytes::copy_from_slice(&self.buf[self.off..self.off + n]);
        self.off += n;
        (b, first, last)
    }

    /// Consumes `n` bytes (at most the available ones) without looking at them.
    pub(crate) fn skip(&mut self, n: usize) {
        self.off = (self.off + n).min(self.buf.len());
    }

    /// Consumes `total` bytes starting at [`pos`](Self::pos), whether or not they have arrived
    /// yet: those not yet here are dropped by [`append`](Self::append) as they arrive (an
    /// oversized message is never buffered). Returns the mark of the first byte.
    pub(crate) fn discard(&mut self, total: u64) -> Mark {
        let first = self.mark_at(self.pos());
        let now = (self.len() as u64).min(total);
        self.skip(usize::try_from(now).unwrap_or(usize::MAX));
        self.discard = total - now;
        first
    }

    /// Bytes a [`discard`](Self::discard) still has to drop as they arrive.
    pub(crate) fn discarding(&self) -> u64 {
        self.discard
    }

    /// From now on, compaction keeps the marks of the positions from `pos` on even once
    /// consumed (`Some`: a message in progress whose first mark will be asked for when it
    /// ends), or only those of unconsumed bytes (`None`, the default).
    pub(crate) fn keep_marks_from(&mut self, pos: Option<u64>) {
        self.keep_from = pos;
    }

    /// Drops the consumed bytes and the marks no longer needed. Marks are kept from the one
    /// covering `pos()` (or the [`keep_marks_from`](Self::keep_marks_from) position, if
    /// earlier) on, so `mark_at` answers alike for those positions before and after.
    fn compact(&mut self) {
        if self.off > 0 {
            self.buf.drain(..self.off);
            self.base += self.off as u64;
            self.off = 0;
        }
        let keep = self.keep_from.map_or(self.base, |k| k.min(self.base));
        while self.marks.len() >= 2 && self.marks[1].pos <= keep {
            self.marks.pop_front();
        }
    }

    /// Appends a chunk. Bytes before [`end`](Self::end) were seen already and are ignored
    /// (overlap). A chunk starting after `end` is a jump: the bytes in between were lost, the
    /// unconsumed bytes are dropped with them and the stream goes on at the chunk; the number
    /// of lost bytes is returned (0 without a jump). Bytes a [`discard`](Self::discard) is
    /// waiting for are dropped. The rest is buffered, with one mark at its first byte.
    pub(crate) fn append(&mut self, c: &Chunk) -> u64 {
        self.seen = true;
        self.compact();
        let mut data: &[u8] = &c.data;
        let mut pos = c.pos;
        let mut jumped = 0;
        if let Some(end) = self.end {
            if pos < end {
                let skip = usize::try_from(end - pos)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[skip..];
                pos = end;
            } else if pos > end {
                jumped = pos - end;
            }
        }
        if data.is_empty() {
            return jumped;
        }
        if self.discard > 0 {
            let d = usize::try_from(self.discard)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.discard -= d as u64;
            data = &data[d..];
            pos += d as u64;
            self.end = Some(pos);
            if data.is_empty() {
                return jumped;
            }
        }
        if self.buf.is_empty() || jumped > 0 {
            self.buf.clear();
            self.off = 0;
            self.base = pos;
            // Kept marks (a message in progress) stay, unless bytes were lost.
            if jumped > 0 || self.keep_from.is_none() {
                self.marks.clear();
            }
        }
        debug_assert!(self.marks.back().is_none_or(|m| m.pos < pos));
        self.buf.extend_from_slice(data);
        self.marks.push_back(Mark {
            ts_ns: c.ts_ns,
            tid: c.tid,
            pos,
        });
        self.end = Some(pos + data.len() as u64);
        jumped
    }

    /// Drops everything unconsumed (and any discard and kept marks): the stream goes on at
    /// `to` (after a gap, or to stop parsing). Returns the number of unconsumed bytes dropped.
    pub(crate) fn reset_to(&mut self, to: u64) -> u64 {
        self.seen = true;
        let dropped = self.len() as u64;
        self.buf.clear();
        self.off = 0;
        self.base = to;
        self.marks.clear();
        self.end = Some(to);
        self.discard = 0;
        dropped
    }

    /// Consumes everything unconsumed (positions and marks stay), returning the count.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.len() as u64;
        self.skip(self.len());
        n
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(pos: u64, data: &[u8], ts_ns: u64) -> Chunk {
        Chunk {
            pos,
            data: Bytes::copy_from_slice(data),
            ts_ns,
            tid: u32::try_from(ts_ns).unwrap_or(0) + 1,
        }
    }

    fn mark(ts_ns: u64, pos: u64) -> Mark {
        Mark {
            ts_ns,
            tid: u32::try_from(ts_ns).unwrap_or(0) + 1,
            pos,
        }
    }

    /// The mark of a position when no chunk arrived.
    fn no_mark(pos: u64) -> Mark {
        Mark {
            ts_ns: 0,
            tid: 0,
            pos,
        }
    }

    #[test]
    fn empty_cursor() {
        let c = StreamCursor::default();
        assert_eq!(c.pos(), 0);
        assert_eq!(c.end(), None);
        assert!(!c.seen());
        assert_eq!(c.len(), 0);
        assert_eq!(c.mark_at(7), no_mark(7));
        assert!(!c.is_chunk_start(0));
        assert_eq!(c.next_chunk_start(0), None);
    }

    #[test]
    fn first_chunk_sets_the_position() {
        let mut c = StreamCursor::default();
        assert_eq!(c.append(&chunk(100, b"abc", 1)), 0);
        assert!(c.seen());
        assert_eq!((c.pos(), c.end(), c.avail()), (100, Some(103), &b"abc"[..]));
        // Before every mark: the first mark.
        assert_eq!(c.mark_at(5), mark(1, 5));
    }

    #[test]
    fn marks_across_chunk_boundaries() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"ab", 10));
        c.append(&chunk(2, b"cde", 20));
        c.append(&chunk(5, b"f", 30));
        assert_eq!(c.mark_at(1), mark(10, 1));
        assert_eq!(c.mark_at(2), mark(20, 2));
        assert_eq!(c.mark_at(4), mark(20, 4));
        assert_eq!(c.mark_at(5), mark(30, 5));
        assert_eq!(c.mark_at(99), mark(30, 99));
        assert!(c.is_chunk_start(2) && c.is_chunk_start(5) && !c.is_chunk_start(3));
        assert_eq!(c.next_chunk_start(0), Some(2));
        assert_eq!(c.next_chunk_start(2), Some(5));
        assert_eq!(c.next_chunk_start(5), None);
        // A message spanning the three chunks.
        let (b, first, last) = c.take(6);
        assert_eq!(&b[..], b"abcdef");
        assert_eq!((first, last), (mark(10, 0), mark(30, 5)));
        // Nothing left: an empty take is at the position, with the last mark.
        let (b, first, last) = c.take(3);
        assert!(b.is_empty());
        assert_eq!((first, last), (mark(30, 6), mark(30, 6)));
    }

    #[test]
    fn overlap_keeps_only_new_bytes_and_first_marks() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"abcd", 1));
        assert_eq!(c.append(&chunk(2, b"cdef", 2)), 0);
        assert_eq!(c.avail(), b"abcdef");
        assert_eq!(c.end(), Some(6));
        assert_eq!(c.mark_at(3), mark(1, 3));
        assert_eq!(c.mark_at(4), mark(2, 4));
        assert!(c.is_chunk_start(4) && !c.is_chunk_start(2));
        // Entirely seen already: nothing changes.
        assert_eq!(c.append(&chunk(1, b"bc", 3)), 0);
        assert_eq!(c.avail(), b"abcdef");
        assert_eq!(c.mark_at(5), mark(2, 5));
    }

    #[test]
    fn a_jump_is_lost_bytes() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"abcd", 1));
        c.skip(1);
        assert_eq!(c.append(&chunk(10, b"xyz", 2)), 6);
        // The unconsumed bytes before the jump went with it.
        assert_eq!((c.pos(), c.avail(), c.end()), (10, &b"xyz"[..], Some(13)));
        assert_eq!(c.mark_at(10), mark(2, 10));
        assert_eq!(c.mark_at(3), mark(2, 3));
        // An empty chunk after a jump reports it but changes nothing.
        assert_eq!(c.append(&chunk(20, b"", 3)), 7);
        assert_eq!(c.end(), Some(13));
    }

    #[test]
    fn reset_drops_everything() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"abcd", 1));
        c.skip(1);
        c.discard(100);
        assert_eq!(c.reset_to(50), 0);
        let mut c2 = StreamCursor::default();
        c2.append(&chunk(0, b"abcd", 1));
        c2.skip(1);
        assert_eq!(c2.reset_to(50), 3);
        for c in [&mut c, &mut c2] {
            assert_eq!(
                (c.pos(), c.end(), c.len(), c.discarding()),
                (50, Some(50), 0, 0)
            );
            assert_eq!(c.mark_at(50), no_mark(50));
            c.append(&chunk(50, b"z", 9));
            assert_eq!(
                c.take(1),
                (Bytes::from_static(b"z"), mark(9, 50), mark(9, 50))
            );
        }
        let mut c = StreamCursor::default();
        assert_eq!(c.reset_to(5), 0);
        assert!(c.seen());
    }

    #[test]
    fn discard_drops_an_oversized_message_as_it_arrives() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"0123", 1));
        // A 10-byte message of which 4 are here.
        assert_eq!(c.discard(10), mark(1, 0));
        assert_eq!((c.len(), c.discarding(), c.pos()), (0, 6, 4));
        // All 3 bytes are discarded; the end moves with them.
        c.append(&chunk(4, b"456", 2));
        assert_eq!((c.len(), c.discarding(), c.end()), (0, 3, Some(7)));
        // The last 3 bytes of the message, then the next message.
        c.append(&chunk(7, b"789AB", 3));
        assert_eq!((c.avail(), c.discarding(), c.pos()), (&b"AB"[..], 0, 10));
        assert_eq!(c.mark_at(10), mark(3, 10));
        assert!(c.is_chunk_start(10) && !c.is_chunk_start(7));
        // A discard of bytes already here is immediate.
        assert_eq!(c.discard(1), mark(3, 10));
        assert_eq!((c.avail(), c.discarding()), (&b"B"[..], 0));
    }

    #[test]
    fn compaction_keeps_marks_right() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"aaaa", 1));
        c.append(&chunk(4, b"bbbb", 2));
        c.skip(6);
        // Compacts: the first chunk's bytes and mark go.
        c.append(&chunk(8, b"cc", 3));
        assert_eq!(c.marks.len(), 2);
        assert_eq!((c.pos(), c.avail()), (6, &b"bbcc"[..]));
        assert_eq!(c.mark_at(6), mark(2, 6));
        assert_eq!(c.mark_at(8), mark(3, 8));
        let (b, first, last) = c.take(4);
        assert_eq!(
            (&b[..], first, last),
            (&b"bbcc"[..], mark(2, 6), mark(3, 9))
        );
        // Everything consumed: the next chunk starts afresh.
        c.append(&chunk(10, b"d", 4));
        assert_eq!(c.marks.len(), 1);
        assert_eq!(c.mark_at(10), mark(4, 10));
    }

    #[test]
    fn kept_marks_survive_compaction() {
        let mut c = StreamCursor::default();
        c.append(&chunk(0, b"xxab", 1));
        c.skip(2);
        // A message starts at 2 and is consumed as it arrives.
        c.skip(2);
        c.keep_marks_from(Some(2));
        c.append(&chunk(4, b"cd", 2));
        c.skip(2);
        c.append(&chunk(6, b"ef", 3));
        c.skip(2);
        assert_eq!(c.mark_at(2), mark(1, 2));
        assert_eq!(c.mark_at(5), mark(2, 5));
        assert_eq!(c.mark_at(7), mark(3, 7));
        // The message ended: the next compaction drops its marks.
        c.keep_marks_from(None);
        c.append(&chunk(8, b"g", 4));
        assert_eq!(c.marks.len(), 1);
        // A loss drops kept marks too.
        c.keep_marks_from(Some(8));
        c.skip(1);
        assert_eq!(c.append(&chunk(20, b"h", 5)), 11);
        assert_eq!(c.mark_at(8), mark(5, 8));
    }

    #[test]
    fn clear_consumes_all() {
        let mut c = StreamCursor::default();
        c.append(&chunk(3, b"abc", 1));
        c.skip(1);
        assert_eq!(c.clear(), 2);
        assert_eq!((c.pos(), c.len(), c.end()), (6, 0, Some(6)));
    }

    /// Feeds `data` cut at `cuts` (each chunk's time: its index; `resend`: each chunk is sent
    /// again from `back` bytes earlier, an overlap), taking the messages of `lens` as soon as
    /// they are whole. Returns the messages with their first and last marks.
    fn feed(data: &[u8], cuts: &[usize], back: usize, lens: &[usize]) -> Vec<(Bytes, Mark, Mark)> {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut c = StreamCursor::default();
        let mut out = Vec::new();
        let mut next = lens.iter().copied().peekable();
        for (i, w) in bounds.windows(2).enumerate() {
            let from = w[0].saturating_sub(back);
            c.append(&Chunk {
                pos: from as u64,
                data: Bytes::copy_from_slice(&data[from..w[1]]),
                ts_ns: i as u64,
                tid: i as u32,
            });
            while let Some(&n) = next.peek()
                && c.len() >= n
            {
                out.push(c.take(n));
                next.next();
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_takes_and_marks(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..400, 0..12),
            back in 0usize..8,
            lens in proptest::collection::vec(1usize..40, 0..30),
        ) {
            let got = feed(&data, &cuts, back, &lens);
            // The same bytes in one chunk: the same messages.
            let whole = feed(&data, &[], 0, &lens);
            prop_assert_eq!(got.len(), whole.len());
            // The mark of a byte: the chunk (by cut) it first arrived in.
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            bounds.push(0);
            bounds.sort_unstable();
            bounds.dedup();
            let chunk_of = |p: u64| bounds.partition_point(|b| (*b as u64) <= p) - 1;
            for ((b, first, last), (wb, wfirst, wlast)) in got.iter().zip(&whole) {
                prop_assert_eq!(b, wb);
                prop_assert_eq!((first.pos, last.pos), (wfirst.pos, wlast.pos));
                for m in [first, last] {
                    let i = chunk_of(m.pos);
                    prop_assert_eq!((m.ts_ns, m.tid), (i as u64, i as u32), "{:?}", m);
                }
            }
        }
    }
}
