use proptest::prelude::*;

use super::*;

fn ch(pos: u64, data: &[u8], ts: u64) -> Chunk {
    Chunk {
        pos,
        data: Bytes::copy_from_slice(data),
        ts_ns: ts,
        tid: 1,
    }
}

/// Concatenated data and the gaps (pos, len), checking strict position continuity.
fn collect(start: Option<u64>, segs: &[Segment]) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut data = Vec::new();
    let mut gaps = Vec::new();
    let mut at = start;
    for s in segs {
        let (p, l) = match s {
            Segment::Data(c) => {
                data.extend_from_slice(&c.data);
                (c.pos, c.data.len() as u64)
            }
            Segment::Gap { pos, len } => {
                gaps.push((*pos, *len));
                (*pos, *len)
            }
        };
        assert!(l > 0, "empty segment {s:?}");
        if let Some(a) = at {
            assert_eq!(a, p, "discontinuity in {segs:?}");
        }
        at = Some(p + l);
    }
    (data, gaps)
}

#[test]
fn in_order() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(100, b"abc", 1));
    s.push(ch(103, b"def", 2));
    s.pop_ready(0, 10, &mut out);
    assert_eq!(collect(Some(100), &out), (b"abcdef".to_vec(), vec![]));
    assert_eq!(s.next_pos(), Some(106));
    assert_eq!(s.buffered_bytes(), 0);
}

#[test]
fn reorder_waits_then_fills() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"ab", 1));
    s.push(ch(4, b"ef", 3));
    s.pop_ready(3, 100, &mut out);
    assert_eq!(collect(Some(0), &out).0, b"ab");
    assert_eq!(s.buffered_bytes(), 2);
    s.push(ch(2, b"cd", 2));
    s.pop_ready(4, 100, &mut out);
    assert_eq!(collect(Some(0), &out), (b"abcdef".to_vec(), vec![]));
}

#[test]
fn lower_pos_before_first_delivery_moves_start() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(10, b"kl", 2));
    s.push(ch(8, b"ij", 1));
    assert_eq!(s.next_pos(), Some(8));
    s.pop_ready(2, 100, &mut out);
    assert_eq!(collect(Some(8), &out).0, b"ijkl");
    // After delivery, earlier bytes are duplicates.
    s.push(ch(2, b"cdefgh", 0));
    s.pop_ready(2, 100, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn known_start_waits_for_first_bytes() {
    let mut s = Stream::starting_at(0, DEFAULT_LIMIT);
    let mut out = Vec::new();
    s.push(ch(2, b"cd", 1));
    s.pop_ready(1, 100, &mut out);
    assert!(out.is_empty());
    s.push(ch(0, b"ab", 1));
    s.pop_ready(1, 100, &mut out);
    assert_eq!(collect(Some(0), &out), (b"abcd".to_vec(), vec![]));
}

#[test]
fn timeout_makes_gap() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"ab", 1));
    s.push(ch(5, b"fg", 10));
    s.pop_ready(50, 100, &mut out);
    assert_eq!(out.len(), 1);
    s.pop_ready(110, 100, &mut out);
    assert_eq!(collect(Some(0), &out), (b"abfg".to_vec(), vec![(2, 3)]));
}

#[test]
fn declared_loss_is_immediate() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"ab", 1));
    s.lost(2, 3);
    s.push(ch(5, b"fg", 10));
    s.pop_ready(10, u64::MAX, &mut out);
    assert_eq!(collect(Some(0), &out), (b"abfg".to_vec(), vec![(2, 3)]));
    // Loss with nothing after it is also emitted right away.
    s.lost(7, 4);
    s.pop_ready(10, u64::MAX, &mut out);
    assert_eq!(out.last(), Some(&Segment::Gap { pos: 7, len: 4 }));
    assert_eq!(s.next_pos(), Some(11));
}

#[test]
fn partial_loss_then_timeout() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"a", 1));
    s.lost(1, 2);
    s.push(ch(6, b"g", 1));
    s.pop_ready(1, 100, &mut out);
    assert_eq!(collect(Some(0), &out).1, vec![(1, 2)]);
    s.pop_ready(200, 100, &mut out);
    assert_eq!(
        collect(Some(0), &out),
        (b"ag".to_vec(), vec![(1, 2), (3, 3)])
    );
}

#[test]
fn overlaps_are_trimmed() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"abc", 1));
    s.push(ch(6, b"ghi", 1));
    s.push(ch(2, b"cdefgh", 1)); // overlaps both
    s.push(ch(1, b"bcdefghij", 1)); // superset tail
    assert_eq!(s.buffered_bytes(), 10);
    s.pop_ready(1, 100, &mut out);
    assert_eq!(collect(Some(0), &out), (b"abcdefghij".to_vec(), vec![]));
}

#[test]
fn flush_emits_holes_and_trailing_loss() {
    let mut s = Stream::new();
    let mut out = Vec::new();
    s.push(ch(0, b"a", 1));
    s.push(ch(4, b"e", 1));
    s.lost(8, 2);
    s.flush(&mut out);
    assert_eq!(
        collect(Some(0), &out),
        (b"ae".to_vec(), vec![(1, 3), (5, 3), (8, 2)])
    );
}

#[test]
fn memory_cap_forces_gap() {
    let mut s = Stream::with_limit(4);
    let mut out = Vec::new();
    s.push(ch(0, b"a", 1));
    s.push(ch(10, b"klmnop", 100));
    s.pop_ready(100, u64::MAX, &mut out);
    assert_eq!(collect(Some(0), &out), (b"aklmnop".to_vec(), vec![(1, 9)]));
    assert_eq!(s.buffered_bytes(), 0);
}

#[test]
fn hard_cap_drops_as_lost() {
    let mut s = Stream::with_limit(2);
    let mut out = Vec::new();
    s.push(ch(10, b"kl", 1));
    s.push(ch(0, b"a", 1));
    s.pop_ready(1, u64::MAX, &mut out);
    s.push(ch(20, b"uvwxy", 1)); // 2 <= 2*2 before insert: buffered
    s.push(ch(30, b"EFG", 1)); // now over the hard cap: dropped, recorded as lost
    assert_eq!(s.buffered_bytes(), 7);
    s.flush(&mut out);
    let (data, gaps) = collect(Some(0), &out);
    assert_eq!(data, b"akluvwxy");
    assert_eq!(gaps.iter().map(|g| g.1).sum::<u64>(), 33 - 8);
}

/// A byte string and a split of it into chunks.
fn split_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    prop::collection::vec(any::<u8>(), 1..400).prop_flat_map(|data| {
        let n = data.len();
        (Just(data), prop::collection::vec(1..n.max(2), 0..20))
    })
}

fn chunks_of(base: u64, data: &[u8], cuts: &[usize]) -> Vec<Chunk> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|c| *c < data.len()).collect();
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .enumerate()
        .map(|(i, w)| ch(base + w[0] as u64, &data[w[0]..w[1]], i as u64))
        .collect()
}

proptest! {
    #[test]
    fn any_split_any_order((data, cuts) in split_strategy(), seed in any::<u64>(), dup in any::<bool>()) {
        let base = 1_000;
        let chunks = chunks_of(base, &data, &cuts);
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        // Deterministic shuffle from the seed; the first chunk goes first so that the start
        // is known (a mid-stream attach starts wherever the first pop_ready finds data).
        let mut x = seed | 1;
        for i in (2..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let j = 1 + (x as usize) % i;
            order.swap(i, j);
        }
        let mut s = Stream::new();
        let mut out = Vec::new();
        for &i in &order {
            s.push(chunks[i].clone());
            if dup { s.push(chunks[i].clone()); }
            s.pop_ready(0, u64::MAX, &mut out);
        }
        s.flush(&mut out);
        let (got, gaps) = collect(Some(base), &out);
        prop_assert_eq!(got, data);
        prop_assert!(gaps.is_empty());
        prop_assert_eq!(s.buffered_bytes(), 0);
    }

    #[test]
    fn dropped_chunks_become_exact_gaps((data, cuts) in split_strategy(), drop_mask in any::<u32>(), rev in any::<bool>()) {
        let chunks = chunks_of(0, &data, &cuts);
        let n = chunks.len();
        // Keep the first and last chunks so the stream's extent is known.
        let keep = |i: usize| i == 0 || i + 1 == n || drop_mask & (1 << (i % 32)) == 0;
        let mut idx: Vec<usize> = (0..n).filter(|i| keep(*i)).collect();
        if rev { idx[1..].reverse(); }
        let mut s = Stream::new();
        let mut out = Vec::new();
        for &i in &idx {
            s.push(chunks[i].clone());
            s.pop_ready(0, u64::MAX, &mut out);
        }
        s.flush(&mut out);
        let (got, gaps) = collect(Some(0), &out);
        let mut want = Vec::new();
        let mut want_gaps: Vec<(u64, u64)> = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if keep(i) {
                want.extend_from_slice(&c.data);
            } else if let Some(g) = want_gaps.last_mut().filter(|g| g.0 + g.1 == c.pos) {
                g.1 += c.data.len() as u64;
            } else {
                want_gaps.push((c.pos, c.data.len() as u64));
            }
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(gaps, want_gaps);
    }
}
