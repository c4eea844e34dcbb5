//! Views rendered on ratatui's `TestBackend` with fixed data and a fixed clock, compared with
//! text snapshots in `tests/snapshots/` (characters only, trailing spaces trimmed).
//!
//! Regenerate with `TIMETRACER_BLESS=1 cargo test -p timetracer-user --test tui_view`.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

mod tui_fixtures;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use timetracer::analysis::format::fmt_ms_compact;
use timetracer::live::LiveUpdate;
use timetracer::tui::state::{Action, State};
use timetracer::tui::view::{self, detail, fmt_uptime, table};
use tui_fixtures::{failing_order, http_event, redis_event, sample_requests, sql_event, stats};

fn render(state: &State, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::render(f, state)).unwrap();
    let buf = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("tui_{name}.txt"));
    if std::env::var_os("TIMETRACER_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with TIMETRACER_BLESS=1 to create it. Rendered:\n{actual}",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (TIMETRACER_BLESS=1 regenerates it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The sample session at a fixed moment: 7 requests, two counter snapshots, drops.
fn live_state() -> State {
    let mut s = State::new(PathBuf::from("./cassettes"), true, 10_000);
    s.tick(Duration::from_millis(500));
    let mut first = stats(3_723_000, 100, 2000, 1 << 20);
    first.skipped_updates = 2;
    s.apply_update(LiveUpdate::Stats(first));
    for u in sample_requests() {
        s.apply_update(u);
    }
    s.tick(Duration::from_millis(1500));
    let mut second = stats(3_724_000, 112, 2450, 3 << 20);
    second.drops = vec![("ringbuf_full".into(), 12), ("reassembly_gap".into(), 3)];
    second.skipped_updates = 5;
    s.apply_update(LiveUpdate::Stats(second));
    s.tick(Duration::from_millis(1600));
    s
}

#[test]
fn snapshot_table() {
    check("table", &render(&live_state(), 110, 16));
}

#[test]
fn snapshot_detail_waterfall_sql_traceback() {
    let mut s = live_state();
    s.apply(Action::ToggleDetail);
    check("detail", &render(&s, 110, 44));
}

#[test]
fn snapshot_detail_scrolled_and_redis() {
    let mut s = live_state();
    s.apply(Action::Up);
    s.apply(Action::Up);
    s.apply(Action::Up); // /reports/monthly
    s.apply(Action::ToggleDetail);
    s.apply(Action::ScrollDetail(4));
    check("detail_scrolled", &render(&s, 100, 30));
}

#[test]
fn snapshot_help_overlay() {
    let mut s = live_state();
    s.apply(Action::ToggleHelp);
    check("help", &render(&s, 110, 24));
}

#[test]
fn snapshot_filter_prompt() {
    let mut s = live_state();
    s.apply(Action::OpenFilter);
    for c in "status:>=400 users".chars() {
        s.apply(Action::PromptChar(c));
    }
    check("filter_prompt", &render(&s, 110, 14));
    // An incomplete term shows why, and keeps the last valid filter.
    for c in " min:".chars() {
        s.apply(Action::PromptChar(c));
    }
    check("filter_prompt_error", &render(&s, 110, 14));
}

#[test]
fn snapshot_paused_errors_only_no_save() {
    let mut s = State::new(PathBuf::from("./cassettes"), false, 10_000);
    s.apply_update(LiveUpdate::Stats(stats(65_000, 7, 30, 4096)));
    for u in sample_requests() {
        s.apply_update(u);
    }
    s.apply(Action::ToggleErrorsOnly);
    s.apply(Action::TogglePause);
    for u in sample_requests().into_iter().take(4) {
        s.apply_update(u);
    }
    s.apply(Action::Save);
    s.saved(
        7,
        PathBuf::from("./cassettes/2026-11-22/POST__orders_42_pay__00000007.json"),
    );
    s.tick(Duration::from_secs(6));
    check("paused_errors_only", &render(&s, 110, 12));
}

#[test]
fn snapshot_waiting() {
    let mut s = State::new(PathBuf::from("./cassettes"), true, 10_000);
    s.set_disconnected();
    check("waiting", &render(&s, 80, 8));
}

#[test]
fn any_size_renders_without_panic() {
    for (detail_open, help, prompt) in [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (true, true, false),
        (true, false, true),
    ] {
        let mut s = live_state();
        if detail_open {
            s.apply(Action::ToggleDetail);
        }
        if help {
            s.apply(Action::ToggleHelp);
        }
        if prompt {
            s.apply(Action::OpenFilter);
        }
        s.apply(Action::ScrollDetail(500));
        for (w, h) in [
            (1, 1),
            (2, 3),
            (10, 4),
            (20, 5),
            (40, 10),
            (60, 8),
            (300, 100),
        ] {
            render(&s, w, h);
        }
    }
}

#[test]
fn bars_are_placed_on_the_request_time_line() {
    assert_eq!(detail::bar(0.0, 100.0, 100.0, 10), (0, 10));
    assert_eq!(detail::bar(50.0, 25.0, 100.0, 10), (5, 3));
    // Tiny calls still get one column; calls past the end are clipped.
    assert_eq!(detail::bar(99.9, 0.01, 100.0, 10), (9, 1));
    assert_eq!(detail::bar(90.0, 500.0, 100.0, 10), (9, 1));
    assert_eq!(detail::bar(150.0, 1.0, 100.0, 10), (9, 1));
    assert_eq!(detail::bar(-5.0, 10.0, 100.0, 10), (0, 1));
    assert_eq!(detail::bar(1.0, 1.0, 0.0, 10), (9, 1));
    assert_eq!(detail::bar(1.0, 1.0, 10.0, 0), (0, 0));
}

#[test]
fn call_text_prefers_protocol_detail() {
    let sql = sql_event(1, 0.0, 1.0, "SELECT *\n   FROM t");
    assert_eq!(detail::call_text(&sql), "SELECT * FROM t");
    let redis = redis_event(2, 0.0, 1.0, "SET", &["k", "two words", ""]);
    assert_eq!(detail::call_text(&redis), r#"SET k "two words" """#);
    let mut plain_db = sql_event(3, 0.0, 1.0, "SELECT 1");
    plain_db.db = Some(serde_json::json!({"rows": 1}));
    assert_eq!(
        detail::call_text(&plain_db),
        "SELECT postgres://db:5432/app"
    );
    let mut http = http_event(4, 0.0, 1.0, "https://api/x", 200);
    http.signature.query = Some(
        serde_json::json!({"a": "1", "b": ["2", "3"]})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(
        detail::call_text(&http),
        r#"GET https://api/x?a=1&b=["2","3"]"#
    );
}

#[test]
fn detail_text_has_sql_and_traceback() {
    let row = timetracer::tui::state::Row::new(1, Box::new(failing_order()), None);
    let text: Vec<String> = detail::lines(&row, 100)
        .iter()
        .map(ToString::to_string)
        .collect();
    let all = text.join("\n");
    assert!(
        all.contains("SELECT id, total FROM orders WHERE id = $1"),
        "{all}"
    );
    assert!(all.contains("GET order:42:lock"), "{all}");
    assert!(all.contains("ZeroDivisionError: division by zero"), "{all}");
    assert!(all.contains("ambiguous: concurrent-requests"), "{all}");
    assert!(all.contains("not saved"), "{all}");
}

#[test]
fn table_scroll_keeps_selection_in_view() {
    assert_eq!(table::scroll_offset(0, 100, 10, false), 0);
    assert_eq!(table::scroll_offset(50, 100, 10, false), 45);
    assert_eq!(table::scroll_offset(99, 100, 10, false), 90);
    assert_eq!(
        table::scroll_offset(3, 100, 10, true),
        90,
        "following shows the newest"
    );
    assert_eq!(table::scroll_offset(3, 5, 10, true), 0);
}

#[test]
fn formats() {
    assert_eq!(fmt_ms_compact(0.42), "0.42ms");
    assert_eq!(fmt_ms_compact(4.25), "4.2ms");
    assert_eq!(fmt_ms_compact(123.4), "123ms");
    assert_eq!(fmt_ms_compact(1234.0), "1.23s");
    assert_eq!(fmt_ms_compact(12_345.0), "12.3s");
    assert_eq!(fmt_ms_compact(125_000.0), "2m05s");
    assert_eq!(fmt_ms_compact(f64::NAN), "-");
    assert_eq!(fmt_uptime(3_723_000), "1:02:03");
    assert_eq!(fmt_uptime(65_000), "1:05");
}
