//! Command-line front ends.
pub mod agent;
pub mod node;
pub mod record;
pub mod replay;
pub mod show;
pub mod tools;
