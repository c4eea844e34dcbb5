//! Agent-side counters.
