//! Command-line front ends.
pub mod agent;
pub mod show;
pub mod tools;
