//! Command-line front ends.
pub mod agent;
