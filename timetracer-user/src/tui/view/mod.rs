//! Views: pure functions from a `&State` to a frame. Nothing here reads a clock or changes the
//! model; the same state always renders the same screen (the snapshot tests rely on it).
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};

use super::state::State;

pub mod detail;
pub mod footer;
pub mod header;
pub mod help;
pub mod table;

/// Where each part of the screen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    pub table: Rect,
    pub detail: Option<Rect>,
    pub footer: Rect,
}

/// Lines of the header.
const HEADER_HEIGHT: u16 = 3;

/// Splits the screen; shared by [`render`] and the loop (for the page size).
#[must_use]
pub fn layout(area: Rect, state: &State) -> Areas {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(HEADER_HEIGHT),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let (table, detail) = if state.detail_open() {
        let [t, d] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
        (t, Some(d))
    } else {
        (body, None)
    };
    Areas {
        header,
        table,
        detail,
        footer,
    }
}

/// Rows of the table that fit in `table` (its borders and header row excluded).
#[must_use]
pub fn table_rows(table: Rect) -> usize {
    usize::from(table.height.saturating_sub(3))
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame<'_>, state: &State) {
    let areas = layout(frame.area(), state);
    header::render(frame, areas.header, state);
    table::render(frame, areas.table, state);
    if let Some(d) = areas.detail {
        detail::render(frame, d, state);
    }
    footer::render(frame, areas.footer, state);
    if state.help_open() {
        help::render(frame, frame.area());
    }
}

/// `3:04:05` / `4:05`.
#[must_use]
pub fn fmt_uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A per-second rate: `0`, `4.5`, `120`, `12.3k`.
#[must_use]
pub fn fmt_rate(v: f64) -> String {
    if v < 0.05 {
        "0".into()
    } else if v < 100.0 {
        format!("{v:.1}")
    } else if v < 10_000.0 {
        format!("{v:.0}")
    } else {
        format!("{:.1}k", v / 1000.0)
    }
}

/// Green 2xx, cyan 3xx, yellow 4xx, red 5xx and no response.
#[must_use]
pub fn status_style(status: i64) -> Style {
    match status {
        200..=299 => Style::new().fg(Color::Green),
        300..=399 => Style::new().fg(Color::Cyan),
        400..=499 => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// `500`, or `---` for no response.
#[must_use]
pub fn status_text(status: i64) -> String {
    if status == 0 {
        "---".into()
    } else {
        status.to_string()
    }
}

/// Cuts `s` to `width` characters, ending with `…` when cut.
#[must_use]
pub fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}
