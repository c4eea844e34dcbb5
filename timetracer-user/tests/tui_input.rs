//! Key handling: which key gives which action in each mode.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use timetracer::tui::input::{KEYS, action};
use timetracer::tui::state::{Action, InputMode};

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

#[test]
fn normal_mode_key_map() {
    let n = InputMode::Normal;
    for (k, a) in [
        (key(KeyCode::Up), Action::Up),
        (ch('k'), Action::Up),
        (key(KeyCode::Down), Action::Down),
        (ch('j'), Action::Down),
        (key(KeyCode::PageUp), Action::PageUp),
        (key(KeyCode::PageDown), Action::PageDown),
        (ctrl('u'), Action::PageUp),
        (ctrl('d'), Action::PageDown),
        (key(KeyCode::Home), Action::Top),
        (ch('g'), Action::Top),
        (key(KeyCode::End), Action::Bottom),
        (ch('G'), Action::Bottom),
        (key(KeyCode::Enter), Action::ToggleDetail),
        (ch('J'), Action::ScrollDetail(1)),
        (ch('K'), Action::ScrollDetail(-1)),
        (ch('/'), Action::OpenFilter),
        (key(KeyCode::Esc), Action::Escape),
        (ch('p'), Action::TogglePause),
        (ch('s'), Action::Save),
        (ch('e'), Action::ToggleErrorsOnly),
        (ch('?'), Action::ToggleHelp),
        (ch('q'), Action::Quit),
        (ctrl('c'), Action::Quit),
    ] {
        assert_eq!(action(n, &k), Some(a), "{k:?}");
    }
    assert_eq!(action(n, &ch('x')), None);
    assert_eq!(action(n, &ctrl('x')), None);
    assert_eq!(action(n, &key(KeyCode::Tab)), None);
}

#[test]
fn prompt_mode_types_letters() {
    let p = InputMode::Prompt;
    // Keys that are commands elsewhere are text in the prompt.
    for c in ['q', 'j', 's', 'e', 'p', '?', '/', ':', '>', '='] {
        assert_eq!(action(p, &ch(c)), Some(Action::PromptChar(c)));
    }
    assert_eq!(action(p, &key(KeyCode::Enter)), Some(Action::PromptSubmit));
    assert_eq!(action(p, &key(KeyCode::Esc)), Some(Action::PromptCancel));
    assert_eq!(
        action(p, &key(KeyCode::Backspace)),
        Some(Action::PromptBackspace)
    );
    assert_eq!(action(p, &ctrl('u')), Some(Action::PromptClear));
    assert_eq!(
        action(p, &ctrl('c')),
        Some(Action::Quit),
        "Ctrl-C always quits"
    );
    assert_eq!(action(p, &key(KeyCode::Up)), None);
}

#[test]
fn help_mode_any_key_closes() {
    let h = InputMode::Help;
    assert_eq!(action(h, &ch('q')), Some(Action::Quit));
    assert_eq!(action(h, &ch('?')), Some(Action::ToggleHelp));
    assert_eq!(action(h, &key(KeyCode::Esc)), Some(Action::ToggleHelp));
    assert_eq!(action(h, &ch('j')), Some(Action::ToggleHelp));
    assert_eq!(action(h, &ctrl('c')), Some(Action::Quit));
}

#[test]
fn key_releases_are_ignored() {
    let mut k = ch('q');
    k.kind = KeyEventKind::Release;
    assert_eq!(action(InputMode::Normal, &k), None);
    k.kind = KeyEventKind::Repeat;
    assert_eq!(action(InputMode::Normal, &k), Some(Action::Quit));
}

#[test]
fn help_lists_every_command_key() {
    let text: String = KEYS.iter().map(|(k, _)| format!("{k} ")).collect();
    for k in ["/", "Esc", "Enter", "e", "p", "s", "?", "q", "j", "k"] {
        assert!(
            text.split_whitespace().any(|w| w == k),
            "{k} missing from help"
        );
    }
}
