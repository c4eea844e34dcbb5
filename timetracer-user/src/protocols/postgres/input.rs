//! Unconsumed bytes of one direction of a connection with the chunk marks they came from.
//! Shared by the PostgreSQL and MySQL parsers (both frame length-prefixed messages).
use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocols::http::types::Mark;
use crate::reassembly::Chunk;

/// Bytes of one direction not yet framed into messages.
#[derive(Debug, Default)]
pub(crate) struct Input {
    buf: Vec<u8>,
    off: usize,
    /// Stream position of `buf[0]`.
    base: u64,
    /// Chunk starts `(pos, ts_ns, tid)` covering `buf`, ascending.
    marks: VecDeque<(u64, u64, u32)>,
    /// Next expected stream position (`None` before the first segment).
    end: Option<u64>,
    /// Bytes of an oversized message still to be discarded as they arrive.
    discard: u64,
    /// Something was seen on this direction.
    pub(crate) seen: bool,
}

impl Input {
    /// Stream position of the first unconsumed byte.
    pub(crate) fn pos(&self) -> u64 {
        self.base + self.off as u64
    }
    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.off..]
    }
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.off
    }
    pub(crate) fn mark_at(&self, pos: u64) -> Mark {
        let m = self
            .marks
            .iter()
            .rev()
            .find(|m| m.0 <= pos)
            .or(self.marks.front());
        m.map_or(
            Mark {
                ts_ns: 0,
                tid: 0,
                pos,
            },
            |m| Mark {
                ts_ns: m.1,
                tid: m.2,
                pos,
            },
        )
    }
    /// Takes `n` bytes (which must be available): the bytes, first and last mark.
    pub(crate) fn take(&mut self, n: usize) -> (Bytes, Mark, Mark) {
        let n = n.min(self.len());
        let start = self.pos();
        let first = self.mark_at(start);
        let last = self.mark_at(start + (n.max(1) as u64) - 1);
        let b = Bytes::copy_from_slice(&self.buf[self.off..self.off + n]);
        self.off += n;
        (b, first, last)
    }
    /// Drops `n` available bytes.
    pub(crate) fn skip(&mut self, n: usize) {
        self.off = (self.off + n).min(self.buf.len());
    }
    /// Discard `total` bytes starting here, whether or not they have arrived yet. Returns the
    /// first mark.
    pub(crate) fn discard(&mut self, total: u64) -> Mark {
        let first = self.mark_at(self.pos());
        let now = (self.len() as u64).min(total);
        self.skip(usize::try_from(now).unwrap_or(usize::MAX));
        self.discard = total - now;
        first
    }
    /// Next expected stream position.
    pub(crate) fn end(&self) -> Option<u64> {
        self.end
    }
    /// Bytes still to be discarded (an oversized message in flight).
    pub(crate) fn discarding(&self) -> u64 {
        self.discard
    }
    fn compact(&mut self) {
        if self.off > 0 {
            self.buf.drain(..self.off);
            self.base += self.off as u64;
            self.off = 0;
        }
        while self.marks.len() >= 2 && self.marks[1].0 <= self.base {
            self.marks.pop_front();
        }
    }
    /// Appends a chunk. Returns bytes lost before it (a position jump), if any.
    pub(crate) fn append(&mut self, c: &Chunk) -> u64 {
        self.seen = true;
        self.compact();
        let mut data: &[u8] = &c.data;
        let mut pos = c.pos;
        let mut jumped = 0;
        if let Some(end) = self.end {
            if pos < end {
                // Overlap with what we already have: keep only the new part.
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
            self.marks.clear();
        }
        self.buf.extend_from_slice(data);
        self.marks.push_back((pos, c.ts_ns, c.tid));
        self.end = Some(pos + data.len() as u64);
        jumped
    }
    /// A gap: everything unconsumed is dropped (returned as a count) and the stream goes on
    /// at `to`.
    pub(crate) fn gap(&mut self, to: u64) -> u64 {
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
    /// Drops everything unconsumed, returning the count.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.len() as u64;
        self.skip(self.len());
        n
    }
}
