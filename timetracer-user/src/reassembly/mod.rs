//! Reassembly of one direction of one connection from positioned chunks.
//!
//! The kernel stamps every chunk with its byte position in the direction's stream, so chunks
//! that arrive out of order (different CPUs share one ring buffer) are put back in order here,
//! missing ranges become [`Segment::Gap`]s after a timeout or when the kernel says they were
//! lost, and a stream first seen mid-way (attach to a live connection) starts at its first
//! observed position.
//!
//! OWNER: helper A (see docs/ARCHITECTURE.md). Interface is fixed; fill in the implementation.
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
    Gap { pos: u64, len: u64 },
}
