//! Command-line front ends.
pub mod agent;
pub mod replay;
pub mod show;
pub mod tools;
