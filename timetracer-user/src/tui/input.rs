//! Key handling: pure functions from a key (and the current [`InputMode`]) to an [`Action`].
//! The key map is documented in `docs/tui.md` and in the help overlay ([`KEYS`]).
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Action, InputMode};

/// The key map as shown by the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "select request"),
    ("PgUp PgDn", "page up / down"),
    ("g Home", "first request"),
    ("G End", "last request, follow new ones"),
    ("Enter", "show / hide details"),
    ("J K", "scroll details"),
    (
        "/",
        "filter: words (path) method:GET status:5xx|404|>=400 min:100ms",
    ),
    ("Esc", "clear filter and errors-only / close"),
    ("e", "errors only (status >= 400, no response, traceback)"),
    ("p", "pause / resume the table"),
    ("s", "save the selected request's cassette"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

/// The action for `key` in `mode`, `None` when the key does nothing there.
#[must_use]
pub fn action(mode: InputMode, key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Action::Quit);
    }
    match mode {
        InputMode::Prompt => prompt_action(key, ctrl),
        InputMode::Help => help_action(key),
        InputMode::Normal => normal_action(key, ctrl),
    }
}

fn prompt_action(key: &KeyEvent, ctrl: bool) -> Option<Action> {
    match key.code {
        KeyCode::Enter => Some(Action::PromptSubmit),
        KeyCode::Esc => Some(Action::PromptCancel),
        KeyCode::Backspace => Some(Action::PromptBackspace),
        KeyCode::Char('u') if ctrl => Some(Action::PromptClear),
        KeyCode::Char(_) if ctrl => None,
        KeyCode::Char(c) => Some(Action::PromptChar(c)),
        _ => None,
    }
}

fn help_action(key: &KeyEvent) -> Option<Action> {
    match key.code {
        KeyCode::Char('q') => Some(Action::Quit),
        // Any other key closes the help.
        _ => Some(Action::ToggleHelp),
    }
}

fn normal_action(key: &KeyEvent, ctrl: bool) -> Option<Action> {
    Some(match key.code {
        KeyCode::Char('d') if ctrl => Action::PageDown,
        KeyCode::Char('u') if ctrl => Action::PageUp,
        KeyCode::Char(_) if ctrl => return None,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown | KeyCode::Char(' ') => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Char('K') => Action::ScrollDetail(-1),
        KeyCode::Char('J') => Action::ScrollDetail(1),
        KeyCode::Enter => Action::ToggleDetail,
        KeyCode::Char('/') => Action::OpenFilter,
        KeyCode::Esc => Action::Escape,
        KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('s') => Action::Save,
        KeyCode::Char('e') => Action::ToggleErrorsOnly,
        KeyCode::Char('?') | KeyCode::F(1) => Action::ToggleHelp,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}
