//! Counters every stage updates and the status line / summary / cassette footer read.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

#[derive(Debug, Default)]
struct Inner {
    events: AtomicU64,
    bytes: AtomicU64,
    cassettes: AtomicU64,
    named: Mutex<BTreeMap<&'static str, u64>>,
}

/// Cheaply clonable handle to the agent's counters.
#[derive(Clone, Debug, Default)]
pub struct Counters(Arc<Inner>);

impl Counters {
    /// One more ring-buffer record.
    pub fn inc_events(&self, n: u64) {
        self.0.events.fetch_add(n, Ordering::Relaxed);
    }
    /// Payload bytes received.
    pub fn add_bytes(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }
    /// One more cassette written.
    pub fn inc_cassettes(&self) {
        self.0.cassettes.fetch_add(1, Ordering::Relaxed);
    }
    /// Increments a named counter.
    pub fn inc_named(&self, name: &'static str) {
        self.add_named(name, 1);
    }
    /// Adds to a named counter.
    pub fn add_named(&self, name: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut m) = self.0.named.lock() {
            *m.entry(name).or_default() += n;
        }
    }
    /// Value of a named counter.
    #[must_use]
    pub fn named(&self, name: &str) -> u64 {
        self.0
            .named
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    /// Snapshot of every named counter.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.named.lock().map(|m| m.clone()).unwrap_or_default()
    }
    #[must_use]
    pub fn events(&self) -> u64 {
        self.0.events.load(Ordering::Relaxed)
    }
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
    #[must_use]
    pub fn cassettes(&self) -> u64 {
        self.0.cassettes.load(Ordering::Relaxed)
    }
}

/// Human-readable byte count.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let c = Counters::default();
        c.inc_named("x");
        c.add_named("x", 2);
        c.add_bytes(5);
        assert_eq!(c.named("x"), 3);
        assert_eq!(c.bytes(), 5);
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
