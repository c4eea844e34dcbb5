//! The agent's messages to its stderr, written by a thread of their own, so that a stderr
//! nobody reads (a pipe to a stalled log shipper, a paused `| less`) never stops a recording.
//!
//! `write(2)` to a full pipe blocks. Called from the capture loop it would stop draining the
//! ring buffer (the kernel then drops events); from the writer thread it would stop cassettes.
//! [`say`] (and the [`say!`](crate::say) macro, and the log's [`Writer`]) queues the text for
//! the `tt-stderr` thread and never waits: text that finds the queue full ([`QUEUE`] messages)
//! is dropped and counted ([`dropped`], `messages_dropped` in the exit summary). At exit,
//! [`flush`] waits for the queue at most a given time, so a stuck stderr cannot keep the agent,
//! and with it its kernel programs, alive.
//!
//! Written here because it is small: `tracing-appender`'s non-blocking writer does the same for
//! log events only, and the agent's own lines (ready, lost cassettes, the exit summary) are not
//! log events.
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Messages waiting for the stderr thread at most.
pub const QUEUE: usize = 1024;

enum Msg {
    Text(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(SyncSender<()>),
}

static TX: OnceLock<Option<SyncSender<Msg>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The queue to the stderr thread, started on first use (`None`: the thread could not be
/// started; text is then written directly).
fn queue() -> Option<&'static SyncSender<Msg>> {
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("tt-stderr".into())
            .spawn(move || {
                for m in rx {
                    match m {
                        // An error (stderr closed) loses the message; nobody could see it.
                        Msg::Text(b) => {
                            let _ = std::io::stderr().write_all(&b);
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Queues `bytes` for stderr as they are; counts them as dropped when the queue is full.
pub fn write(bytes: Vec<u8>) {
    match queue() {
        Some(tx) => match tx.try_send(Msg::Text(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        },
        None => {
            let _ = std::io::stderr().write_all(&bytes);
        }
    }
}

/// Queues one line (a newline is added).
pub fn say(mut line: String) {
    line.push('\n');
    write(line.into_bytes());
}

/// Messages dropped because the queue was full (stderr not read).
#[must_use]
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Waits until everything queued so far is written, at most `timeout`; false when stderr is
/// still stuck.
pub fn flush(timeout: Duration) -> bool {
    let Some(tx) = queue() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return false,
        }
    }
    done_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

/// The log's writer (`tracing_subscriber::fmt().with_writer(Writer)`): each event is queued
/// as one message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Writer;

/// One log event being formatted; queued when dropped.
#[derive(Debug, Default)]
pub struct Event(Vec<u8>);

impl std::io::Write for Event {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write(std::mem::take(&mut self.0));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Event;
    fn make_writer(&'a self) -> Event {
        Event::default()
    }
}

/// `say!("...", args)`: [`say`] with `format!` arguments.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stderr::say(format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queued lines come out in order, and `flush` returns once they are written.
    #[test]
    fn flush_waits_for_queued_text() {
        for i in 0..10 {
            say(format!("stderr test line {i}"));
        }
        assert!(flush(Duration::from_secs(10)));
    }
}
