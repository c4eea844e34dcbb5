//! Command-line front ends.
pub mod agent;
pub mod record;
pub mod replay;
pub mod show;
pub mod tools;
