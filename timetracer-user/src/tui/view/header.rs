//! The header: target, uptime, rates, counters, drops by reason (red), pause / end marks.
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{fmt_rate, fmt_uptime};
use crate::analysis::format::fmt_bytes;
use crate::tui::state::State;

/// Draws the three header lines.
pub fn render(frame: &mut Frame<'_>, area: Rect, state: &State) {
    frame.render_widget(Paragraph::new(lines(state)), area);
}

fn lines(state: &State) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);

    // Line 1: who, how long, where cassettes go, state marks.
    let mut l1 = vec![Span::styled(" timetracer top ", bold.fg(Color::Cyan))];
    // State marks first, so a narrow terminal never cuts them.
    if state.is_paused() {
        l1.push(Span::styled(
            format!(" PAUSED · {} new ", state.arrived_while_paused()),
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
        l1.push(Span::raw(" "));
    }
    if state.is_disconnected() {
        l1.push(Span::styled(
            " SESSION ENDED ",
            Style::new().fg(Color::Black).bg(Color::Gray),
        ));
        l1.push(Span::raw(" "));
    } else if let Some(d) = state.stalled_for() {
        l1.push(Span::styled(
            format!("no update for {}s  ", d.as_secs()),
            Style::new().fg(Color::Yellow),
        ));
    }
    match state.stats() {
        Some(s) => {
            l1.push(Span::styled(s.target.clone(), bold));
            l1.push(Span::raw(format!("  up {}", fmt_uptime(s.uptime_ms))));
        }
        None => l1.push(Span::styled("waiting for the session…", dim)),
    }
    if state.save_enabled() {
        l1.push(Span::raw(format!(
            "  saving to {}",
            state.out_dir().display()
        )));
    } else {
        l1.push(Span::styled("  --no-save (s saves)", dim));
    }

    // Line 2: rates and totals.
    let r = state.rates();
    let mut l2 = vec![
        Span::styled(format!(" {} req/s", fmt_rate(r.requests)), bold),
        Span::raw(format!(
            "  {} events/s  {}/s",
            fmt_rate(r.events),
            fmt_bytes(r.bytes as u64)
        )),
    ];
    if let Some(s) = state.stats() {
        l2.push(Span::raw(format!(
            "   requests {}  cassettes {}",
            s.requests, s.cassettes
        )));
    }
    if state.saved_here() > 0 {
        l2.push(Span::raw(format!(" (+{} saved here)", state.saved_here())));
    }
    // Line 3: drops by reason, then the row store.
    let mut l3 = vec![Span::raw(" drops: ")];
    match state.stats().map(|s| &s.drops) {
        Some(drops) if !drops.is_empty() => {
            for (i, (reason, n)) in drops.iter().enumerate() {
                if i > 0 {
                    l3.push(Span::raw(" "));
                }
                l3.push(Span::styled(format!("{reason}={n}"), red));
            }
        }
        _ => l3.push(Span::styled("none", Style::new().fg(Color::Green))),
    }
    let skipped = state.stats().map_or(0, |s| s.skipped_updates);
    l3.push(Span::styled(
        format!("   skipped updates {skipped}"),
        if skipped > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            dim
        },
    ));

    l3.push(Span::styled(
        format!("   rows {}/{}", state.rows().len(), state.capacity()),
        dim,
    ));
    if state.evicted() > 0 {
        l3.push(Span::styled(
            format!(" ({} oldest dropped)", state.evicted()),
            dim,
        ));
    }
    vec![Line::from(l1), Line::from(l2), Line::from(l3)]
}
