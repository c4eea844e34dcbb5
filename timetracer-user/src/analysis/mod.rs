//! What the front ends show about recorded cassettes, computed once, below `cli`, `tui` and
//! `web`. So far: the one JSON comparison ([`json`]) that replay's verdicts use.
pub mod json;
