//! Command-line front ends.
pub mod show;
