//! The bottom line: the filter prompt while typing, else the last message, else key hints.
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::tui::state::State;

/// Draws the footer line.
pub fn render(frame: &mut Frame<'_>, area: Rect, state: &State) {
    frame.render_widget(Paragraph::new(line(state)), area);
}

fn line(state: &State) -> Line<'static> {
    let key = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    if let Some(p) = state.prompt() {
        let mut spans = vec![
            Span::styled("/", key),
            Span::raw(p.text.clone()),
            Span::styled("█", Style::new().fg(Color::Gray)),
        ];
        match &p.error {
            Some(e) => spans.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red))),
            None => spans.push(Span::styled(
                "  Enter keep · Esc cancel · method:GET status:5xx min:100ms",
                Style::new().fg(Color::DarkGray),
            )),
        }
        return Line::from(spans);
    }
    if let Some(m) = state.message() {
        let style = if m.is_error {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        return Line::from(Span::styled(format!(" {}", m.text), style));
    }
    let mut spans = Vec::new();
    for (k, what) in [
        ("q", "quit"),
        ("?", "help"),
        ("/", "filter"),
        ("e", "errors"),
        ("p", "pause"),
        ("s", "save"),
        ("Enter", "details"),
    ] {
        spans.push(Span::styled(format!(" {k}"), key));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}
