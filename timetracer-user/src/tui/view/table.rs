//! The request table: time, method, path, status, duration, dependency calls by type,
//! ambiguous attributions, and a mark: `○` still open to late calls, `✓` saved. Scrolls to keep the selection in view.
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use super::{status_style, status_text, table_rows};
use crate::analysis::format::fmt_ms_compact;
use crate::tui::state::{self, State};

const WIDTHS: [Constraint; 10] = [
    Constraint::Length(12), // time
    Constraint::Length(7),  // method
    Constraint::Min(10),    // path
    Constraint::Length(4),  // status
    Constraint::Length(8),  // duration
    Constraint::Length(4),  // http
    Constraint::Length(4),  // db
    Constraint::Length(5),  // redis
    Constraint::Length(4),  // ambiguous
    Constraint::Length(1),  // open / saved
];

/// Draws the table into `area`.
pub fn render(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let visible = state.visible();
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title(state, visible.len()));
    if visible.is_empty() {
        let text = if state.rows().is_empty() {
            "waiting for requests…"
        } else {
            "no request matches — Esc clears the filter"
        };
        frame.render_widget(
            Paragraph::new(text)
                .alignment(Alignment::Center)
                .style(Style::new().fg(Color::DarkGray))
                .block(block),
            area,
        );
        return;
    }
    let selected = state.selected_pos(&visible);
    let height = table_rows(area).max(1);
    let offset = scroll_offset(
        selected.unwrap_or(0),
        visible.len(),
        height,
        state.is_following(),
    );
    let rows = visible
        .iter()
        .skip(offset)
        .take(height)
        .map(|&i| row(&state.rows()[i]));
    let header = Row::new([
        "time", "method", "path", "st", "duration", "http", "db", "redis", "amb", "",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray));
    let table = Table::new(rows, WIDTHS)
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let mut ts = TableState::default().with_selected(selected.map(|s| s - offset));
    frame.render_stateful_widget(table, area, &mut ts);
}

/// First visible row so that `selected` is in view: following shows the newest rows, otherwise
/// the selection is kept near the middle.
#[must_use]
pub fn scroll_offset(selected: usize, len: usize, height: usize, following: bool) -> usize {
    let max = len.saturating_sub(height);
    if following {
        return max;
    }
    selected.saturating_sub(height / 2).min(max)
}

fn title(state: &State, shown: usize) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!(" Requests {shown}/{} ", state.rows().len()),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if state.open_rows() > 0 {
        spans.push(Span::styled(
            format!("○ {} open ", state.open_rows()),
            Style::new().fg(Color::Yellow),
        ));
    }
    let tag = |s: String, c: Color| Span::styled(s, Style::new().fg(Color::Black).bg(c));
    if !state.filter_text().is_empty() {
        spans.push(tag(
            format!(" filter: {} ", state.filter_text()),
            Color::Cyan,
        ));
        spans.push(Span::raw(" "));
    }
    if state.errors_only() {
        spans.push(tag(" errors only ".into(), Color::Red));
        spans.push(Span::raw(" "));
    }
    if state.is_following() {
        spans.push(Span::styled("following ", Style::new().fg(Color::DarkGray)));
    }
    Line::from(spans)
}

fn count(n: u32) -> Cell<'static> {
    if n == 0 {
        Cell::from("·").style(Style::new().fg(Color::DarkGray))
    } else {
        Cell::from(n.to_string())
    }
}

fn row(r: &state::Row) -> Row<'static> {
    let status = r.status();
    let amb = if r.ambiguous == 0 {
        Cell::from("·").style(Style::new().fg(Color::DarkGray))
    } else {
        Cell::from(format!("⚠{}", r.ambiguous)).style(Style::new().fg(Color::Yellow))
    };
    let saved = if r.open {
        Cell::from("○").style(Style::new().fg(Color::Yellow))
    } else if r.saved.is_some() {
        Cell::from("✓").style(Style::new().fg(Color::Green))
    } else {
        Cell::from("")
    };
    let mut status_cell = Cell::from(status_text(status)).style(status_style(status));
    if r.traceback().is_some() {
        status_cell = Cell::from(format!("{}!", status_text(status))).style(status_style(500));
    }
    Row::new([
        Cell::from(r.time.clone()).style(Style::new().fg(Color::DarkGray)),
        Cell::from(r.method().to_owned()).style(Style::new().add_modifier(Modifier::BOLD)),
        Cell::from(r.path().to_owned()),
        status_cell,
        Cell::from(Line::from(fmt_ms_compact(r.duration_ms())).alignment(Alignment::Right)),
        count(r.deps.http),
        count(r.deps.db),
        count(r.deps.redis),
        amb,
        saved,
    ])
}
