//! `timetracer-agent top`: a live terminal view of a recording session — requests as they
//! complete, their dependency calls as a waterfall with SQL / commands / URLs, tracebacks of
//! errors, and the session's counters (rates, drops by reason, cassettes written).
//!
//! Split as in tokio-console: [`state`] is the model (no ratatui), [`view`] renders a `&State`,
//! [`input`] maps keys to actions, [`term`] owns the terminal and restores it on every way out.
//! The loop drains the feed without ever blocking the sender, applies keys, and redraws on a
//! 100 ms tick (or at once after a key). See `docs/tui.md` for the screen and the key map.
//!
//! ```no_run
//! # use std::sync::{atomic::AtomicBool, mpsc};
//! # use timetracer::{cassette::Compression, tui::{self, TuiOptions}};
//! let (tx, rx) = mpsc::sync_channel(1024);
//! # drop(tx);
//! let stop = AtomicBool::new(false);
//! let opts = TuiOptions { out_dir: "cassettes".into(), save_enabled: false, compression: Compression::None, encrypt_to: None, owner: None };
//! tui::run(rx, opts, &stop)?;
//! # Ok::<(), std::io::Error>(())
//! ```
use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};

use crate::cassette::{self, Compression};
use crate::live::LiveUpdate;

pub mod input;
pub mod state;
pub mod term;
pub mod view;

use state::{Effect, State};

/// Redraw period.
const TICK: Duration = Duration::from_millis(100);
/// Updates taken from the feed per loop turn at most, so keys stay responsive under load.
const MAX_UPDATES_PER_TURN: usize = 20_000;

/// How the UI was started.
#[derive(Clone, Debug)]
pub struct TuiOptions {
    /// Where `s` writes cassettes (the session's `--out`).
    pub out_dir: PathBuf,
    /// The session writes cassettes itself (false with `--no-save`). Shown in the header; `s`
    /// saves any request that has no file yet either way.
    pub save_enabled: bool,
    pub compression: Compression,
    /// Encrypt saved cassettes for these recipients (`--encrypt-to`).
    pub encrypt_to: Option<std::sync::Arc<cassette::crypt::Recipients>>,
    /// Who owns the saved files (the invoking user; see [`crate::privilege`]).
    pub owner: Option<crate::privilege::Identity>,
}

/// Runs the UI on the current thread until the user quits (`q`, Ctrl-C) or `stop` becomes
/// true; updates arrive on `rx` (bounded; the sender uses `try_send`). Returns when done, with
/// the terminal restored. Fails when stdout is not a terminal. When the sender goes away the
/// UI stays up (marked "session ended") until the user quits or `stop` is set.
pub fn run(rx: Receiver<LiveUpdate>, opts: TuiOptions, stop: &AtomicBool) -> io::Result<()> {
    if !io::stdout().is_terminal() {
        return Err(io::Error::other("the live view needs a terminal on stdout"));
    }
    let mut state = State::new(
        opts.out_dir.clone(),
        opts.save_enabled,
        state::DEFAULT_CAPACITY,
    );
    let mut guard = term::TerminalGuard::new()?;
    let started = Instant::now();
    let mut next_draw = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if term::restored_by_panic() {
            return Err(io::Error::other("a panic ended the live view"));
        }
        drain(&rx, &mut state);
        state.tick(started.elapsed());

        if Instant::now() >= next_draw {
            let terminal = guard.terminal();
            let frame = terminal.draw(|f| view::render(f, &state))?;
            let areas = view::layout(frame.area, &state);
            state.set_page_size(view::table_rows(areas.table));
            next_draw = Instant::now() + TICK;
        }

        let timeout = next_draw.saturating_duration_since(Instant::now());
        if event::poll(timeout)? {
            // Take every queued event before drawing again.
            loop {
                match event::read()? {
                    Event::Key(key) => {
                        if let Some(action) = input::action(state.input_mode(), &key) {
                            match state.apply(action) {
                                Effect::None => {}
                                Effect::Quit => return Ok(()),
                                Effect::Save(seq) => save(&mut state, seq, &opts),
                            }
                        }
                    }
                    // ratatui resizes on the next draw.
                    Event::Resize(..) => {}
                    _ => continue,
                }
                next_draw = Instant::now();
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
    }
}

/// Takes what the feed has without waiting.
fn drain(rx: &Receiver<LiveUpdate>, state: &mut State) {
    for _ in 0..MAX_UPDATES_PER_TURN {
        match rx.try_recv() {
            Ok(u) => state.apply_update(u),
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                state.set_disconnected();
                return;
            }
        }
    }
}

/// Writes the cassette of row `seq` and reports in the footer.
fn save(state: &mut State, seq: u64, opts: &TuiOptions) {
    let Some(c) = state.cassette(seq) else {
        state.save_failed(seq, "the request is no longer in memory");
        return;
    };
    let write = || {
        cassette::write_sealed(
            &opts.out_dir,
            c,
            opts.compression,
            opts.encrypt_to.as_deref(),
        )
    };
    let written = match &opts.owner {
        Some(owner) => owner.with_fs(write),
        None => write(),
    };
    match written {
        Ok(path) => state.saved(seq, path),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            state.save_failed(seq, &msg);
        }
    }
}
