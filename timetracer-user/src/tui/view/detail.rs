//! The detail pane of the selected request: summary, a waterfall of its dependency calls (bars
//! placed by `start_offset_ms` / `duration_ms` on the request's time line), each call's SQL,
//! command or URL, and the traceback of an error.
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use serde_json::Value;

use super::{status_style, status_text, truncate};
use crate::analysis::format::fmt_ms_compact;
use crate::cassette::format::{AttributionInfo, Event};
use crate::tui::state::{DepKind, Row, State};

/// Width of the `+start duration` column of the waterfall.
const TIMING_WIDTH: usize = 17;

/// Draws the pane for the selected row into `area`.
pub fn render(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Details (Enter closes, J/K scroll) ");
    let Some(row) = state.selected_row() else {
        frame.render_widget(Paragraph::new("nothing selected").block(block), area);
        return;
    };
    let inner_width = usize::from(area.width.saturating_sub(2));
    let lines = lines(row, inner_width);
    let max_scroll = u16::try_from(lines.len().saturating_sub(1)).unwrap_or(u16::MAX);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((state.detail_scroll().min(max_scroll), 0)),
        area,
    );
}

/// The pane's text for `row` at `width` columns.
#[must_use]
pub fn lines(row: &Row, width: usize) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    let c = &row.cassette;
    let mut out = Vec::new();

    let mut status = vec![
        Span::styled(format!("{} {}", row.method(), request_target(row)), bold),
        Span::raw(" → "),
        Span::styled(status_text(row.status()), status_style(row.status())),
    ];
    if let Some(reason) = &c.response.reason {
        status.push(Span::styled(
            format!(" {reason}"),
            status_style(row.status()),
        ));
    }
    status.push(Span::raw(format!(
        "  {}  at {}",
        fmt_ms_compact(row.duration_ms()),
        c.session.recorded_at
    )));
    out.push(Line::from(status));

    let mut facts = Vec::new();
    if let Some(ip) = &c.request.client_ip {
        facts.push(format!("client {ip}"));
    }
    if let Some(ua) = &c.request.user_agent {
        facts.push(ua.clone());
    }
    let d = row.deps;
    facts.push(format!(
        "{} call{} (http {}, db {}, redis {}{})",
        c.events.len(),
        if c.events.len() == 1 { "" } else { "s" },
        d.http,
        d.db,
        d.redis,
        if d.other > 0 {
            format!(", other {}", d.other)
        } else {
            String::new()
        }
    ));
    if row.ambiguous > 0 {
        facts.push(format!("{} ambiguous", row.ambiguous));
    }
    out.push(Line::styled(facts.join(" · "), dim));
    out.push(match &row.saved {
        Some(p) => Line::styled(
            format!("saved {}", p.display()),
            Style::new().fg(Color::Green),
        ),
        None => Line::styled("not saved — s saves it", Style::new().fg(Color::Yellow)),
    });

    if !c.events.is_empty() {
        out.push(Line::raw(""));
        waterfall(&mut out, row, width);
        out.push(Line::raw(""));
        out.push(Line::styled("Calls", bold));
        for e in &c.events {
            out.push(call_line(e));
        }
    }

    if let Some(err) = &c.error {
        out.push(Line::raw(""));
        out.push(Line::styled(
            format!("Error: {:?} (status {})", err.kind, status_text(err.status)),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
        if let Some(tb) = &err.traceback {
            for l in tb.lines() {
                out.push(Line::styled(l.to_owned(), Style::new().fg(Color::Red)));
            }
        }
    }
    out
}

/// The raw target (path and redacted query) when known, else the path.
fn request_target(row: &Row) -> String {
    row.cassette
        .request
        .target
        .clone()
        .unwrap_or_else(|| row.path().to_owned())
}

fn kind_color(kind: DepKind) -> Color {
    match kind {
        DepKind::Http => Color::Cyan,
        DepKind::Db => Color::Magenta,
        DepKind::Redis => Color::Yellow,
        DepKind::Other => Color::Blue,
    }
}

/// Whether the call failed (no response, protocol error, HTTP >= 500).
fn failed(e: &Event) -> bool {
    e.result.error.is_some()
        || (DepKind::of(&e.kind) == DepKind::Http && e.result.status.is_some_and(|s| s >= 500))
}

fn waterfall(out: &mut Vec<Line<'static>>, row: &Row, width: usize) {
    let events = &row.cassette.events;
    let total = events
        .iter()
        .map(|e| e.start_offset_ms + e.duration_ms)
        .fold(row.duration_ms(), f64::max)
        .max(f64::EPSILON);
    let label_w = (width * 35 / 100).clamp(12, 48);
    let bar_w = width.saturating_sub(label_w + TIMING_WIDTH + 2);
    let dim = Style::new().fg(Color::DarkGray);

    let mut axis = format!("{:<label_w$} ", "Waterfall");
    if bar_w >= 2 {
        let end = fmt_ms_compact(total);
        axis.push('0');
        axis.push_str(&format!("{end:>w$}", w = bar_w - 1));
    }
    out.push(Line::styled(
        axis,
        Style::new().add_modifier(Modifier::BOLD),
    ));

    for e in events {
        let kind = DepKind::of(&e.kind);
        // `?` marks a call whose attribution to this request is ambiguous.
        let mark = if matches!(e.attribution, Some(AttributionInfo::Ambiguous { .. })) {
            '?'
        } else {
            ' '
        };
        let label = format!("{mark}#{} {:<5} {}", e.eid, kind.label(), call_text(e));
        let mut spans = vec![Span::raw(format!(
            "{:<label_w$} ",
            truncate(&label, label_w)
        ))];
        if bar_w > 0 {
            let (start, len) = bar(e.start_offset_ms, e.duration_ms, total, bar_w);
            let color = if failed(e) {
                Color::Red
            } else {
                kind_color(kind)
            };
            spans.push(Span::styled("·".repeat(start), dim));
            spans.push(Span::styled("█".repeat(len), Style::new().fg(color)));
            spans.push(Span::styled("·".repeat(bar_w - start - len), dim));
        }
        spans.push(Span::raw(format!(
            " {:>8} {:>8}",
            format!("+{}", fmt_ms_compact(e.start_offset_ms)),
            fmt_ms_compact(e.duration_ms)
        )));
        out.push(Line::from(spans));
    }
}

/// Column and length of a call's bar in a `width`-column track spanning `total` ms: at least
/// one column, never past the end.
#[must_use]
pub fn bar(start_ms: f64, duration_ms: f64, total_ms: f64, width: usize) -> (usize, usize) {
    if width == 0 {
        return (0, 0);
    }
    let scale = width as f64 / total_ms.max(f64::EPSILON);
    let start = ((start_ms.max(0.0) * scale).floor() as usize).min(width - 1);
    let len = ((duration_ms.max(0.0) * scale).round() as usize).clamp(1, width - start);
    (start, len)
}

/// What the call did, on one line: the SQL (`db.sql`), the command and its arguments
/// (`db.command` + `db.args`), else the method and URL (with the query).
#[must_use]
pub fn call_text(e: &Event) -> String {
    if let Some(db) = &e.db {
        if let Some(sql) = db.get("sql").and_then(Value::as_str) {
            return sql.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        if let Some(cmd) = db.get("command").and_then(Value::as_str) {
            let mut s = cmd.to_owned();
            for a in db
                .get("args")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                s.push(' ');
                match a {
                    Value::String(t) if !t.is_empty() && !t.contains(char::is_whitespace) => {
                        s.push_str(t);
                    }
                    other => s.push_str(&other.to_string()),
                }
            }
            return s;
        }
    }
    let sig = &e.signature;
    let mut s = sig.method.clone();
    if let Some(url) = &sig.url {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(url);
    }
    if let Some(q) = sig.query.as_ref().filter(|q| !q.is_empty()) {
        let parts: Vec<String> = q
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => format!("{k}={v}"),
                other => format!("{k}={other}"),
            })
            .collect();
        s.push('?');
        s.push_str(&parts.join("&"));
    }
    s
}

/// One entry of the "Calls" list: number, type, library, full text, outcome, attribution.
fn call_line(e: &Event) -> Line<'static> {
    let kind = DepKind::of(&e.kind);
    let mut spans = vec![
        Span::styled(
            format!("#{} {}", e.eid, e.kind),
            Style::new()
                .fg(kind_color(kind))
                .add_modifier(Modifier::BOLD),
        ),
        Span::raw(" "),
    ];
    if !e.signature.lib.is_empty() {
        spans.push(Span::styled(
            format!("[{}] ", e.signature.lib),
            Style::new().fg(Color::DarkGray),
        ));
    }
    spans.push(Span::raw(call_text(e)));
    if let Some(st) = e.result.status.filter(|_| kind == DepKind::Http) {
        let mut t = format!(" → {st}");
        if let Some(r) = &e.result.reason {
            t.push(' ');
            t.push_str(r);
        }
        spans.push(Span::styled(t, status_style(st)));
    }
    if let Some(err) = &e.result.error {
        spans.push(Span::styled(
            format!(" ✗ {err}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::styled(
        format!("  ({})", fmt_ms_compact(e.duration_ms)),
        Style::new().fg(Color::DarkGray),
    ));
    if let Some(AttributionInfo::Ambiguous { reason }) = &e.attribution {
        spans.push(Span::styled(
            format!("  ambiguous: {reason}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}
