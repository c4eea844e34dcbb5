//! Terminal setup and restoration. [`TerminalGuard`] enters raw mode and the alternate screen
//! and undoes both when dropped (normal exit, `?` error return, unwinding panic). A panic hook,
//! installed first, restores the terminal before the panic message is printed, so a panic in any
//! thread leaves a usable shell with a readable message. Ctrl-C arrives as a key in raw mode and
//! quits through the normal path; SIGINT / SIGTERM from elsewhere set the caller's stop flag.
use std::io::{self, Stdout, Write as _};
use std::panic::{self, PanicHookInfo};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Set while the terminal is in raw mode / the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set when the panic hook restored the terminal (the UI must stop drawing).
static RESTORED_BY_PANIC: AtomicBool = AtomicBool::new(false);

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The terminal in UI mode; restores it on drop.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    previous_hook: Arc<Hook>,
}

impl TerminalGuard {
    /// Installs the panic hook, then enters raw mode and the alternate screen.
    pub fn new() -> io::Result<Self> {
        let previous_hook: Arc<Hook> = Arc::new(panic::take_hook());
        let prev = Arc::clone(&previous_hook);
        panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) {
                RESTORED_BY_PANIC.store(true, Ordering::SeqCst);
            }
            restore();
            prev(info);
        }));
        RESTORED_BY_PANIC.store(false, Ordering::SeqCst);
        let guard_hook = previous_hook;
        // From here on a failure must undo what was done: build the guard first.
        ACTIVE.store(true, Ordering::SeqCst);
        let setup = || -> io::Result<Terminal<CrosstermBackend<Stdout>>> {
            terminal::enable_raw_mode()?;
            let mut out = io::stdout();
            execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
            Terminal::new(CrosstermBackend::new(out))
        };
        match setup() {
            Ok(terminal) => Ok(Self {
                terminal,
                previous_hook: guard_hook,
            }),
            Err(e) => {
                restore();
                reinstall(guard_hook);
                Err(e)
            }
        }
    }

    /// The ratatui terminal to draw on.
    pub fn terminal(&mut self) -> &mut Terminal<CrosstermBackend<Stdout>> {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        reinstall(Arc::clone(&self.previous_hook));
    }
}

/// Puts back the hook that was there before (wrapped: it is shared with ours).
fn reinstall(previous: Arc<Hook>) {
    if std::thread::panicking() {
        // Changing the hook while panicking is not allowed; ours still forwards.
        return;
    }
    drop(panic::take_hook());
    panic::set_hook(Box::new(move |info| previous(info)));
}

/// Leaves the alternate screen and raw mode and shows the cursor. Idempotent; errors are
/// ignored (there is nothing better to do on the way out).
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

/// A panic (in any thread) restored the terminal: the UI must stop.
#[must_use]
pub fn restored_by_panic() -> bool {
    RESTORED_BY_PANIC.load(Ordering::SeqCst)
}
