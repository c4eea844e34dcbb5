//! Command-line front ends.
pub mod agent;
pub mod node;
pub mod record;
pub mod replay;
pub mod show;
pub mod tools;

/// Calls `handler` on SIGINT and SIGTERM (restarting interrupted system calls). The handler
/// must be async-signal-safe: store to atomics, call kill(2).
pub(crate) fn on_stop_signals(handler: extern "C" fn(libc::c_int)) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the caller's handler is async-signal-safe (the contract above).
        unsafe { sigaction(s, &act) }.context("installing signal handlers")?;
    }
    Ok(())
}
