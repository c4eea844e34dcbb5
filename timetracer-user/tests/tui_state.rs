//! The TUI model without a terminal: updates, rates, filters, selection, pause, errors-only,
//! capacity, save flow, prompt editing.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

mod tui_fixtures;

use std::path::PathBuf;
use std::time::Duration;

use timetracer::live::{LiveUpdate, Phase};
use timetracer::tui::state::{Action, Effect, Filter, InputMode, State, StatusPred};
use tui_fixtures::{cassette, request, sample_requests, stats};

fn state_with(updates: Vec<LiveUpdate>) -> State {
    let mut s = State::new(PathBuf::from("/tmp/out"), false, 100);
    for u in updates {
        s.apply_update(u);
    }
    s
}

fn shown_paths(s: &State) -> Vec<String> {
    s.visible()
        .iter()
        .map(|&i| s.rows()[i].path().to_owned())
        .collect()
}

fn typed(s: &mut State, text: &str) {
    s.apply(Action::OpenFilter);
    s.apply(Action::PromptClear);
    for c in text.chars() {
        s.apply(Action::PromptChar(c));
    }
    s.apply(Action::PromptSubmit);
}

#[test]
fn requests_become_rows_with_counts() {
    let s = state_with(sample_requests());
    assert_eq!(s.rows().len(), 7);
    let order = &s.rows()[6];
    assert_eq!(order.path(), "/orders/42/pay");
    assert_eq!(order.time, "12:00:07.007");
    assert_eq!(
        (order.deps.http, order.deps.db, order.deps.redis),
        (1, 1, 1)
    );
    assert_eq!(order.ambiguous, 1);
    assert!(order.is_error());
    assert!(order.traceback().is_some());
    assert_eq!(s.rows()[0].seq, 1);
    assert!(s.rows()[0].saved.is_some());
    assert!(!s.rows()[0].is_error());
    assert!(s.rows()[2].is_error(), "404");
    assert!(s.rows()[5].is_error(), "no response");
}

#[test]
fn saved_rows_drop_bodies_unsaved_keep_them() {
    let mut c = cassette("GET", "/a", 200, 1.0, 1);
    c.response.body = Some(Default::default());
    let s = state_with(vec![request(c.clone(), Some("/x.json")), request(c, None)]);
    assert!(s.rows()[0].cassette.response.body.is_none());
    assert!(s.rows()[1].cassette.response.body.is_some());
}

#[test]
fn rates_come_from_successive_stats() {
    let mut s = state_with(vec![]);
    s.apply_update(LiveUpdate::Stats(stats(1000, 10, 100, 1000)));
    assert_eq!(s.rates().requests, 0.0, "one snapshot gives no rate");
    s.apply_update(LiveUpdate::Stats(stats(1500, 15, 150, 3000)));
    assert_eq!(s.rates().requests, 10.0);
    assert_eq!(s.rates().events, 100.0);
    assert_eq!(s.rates().bytes, 4000.0);
    // The window slides: old samples stop counting.
    for (t, r) in [
        (2000, 20),
        (2500, 25),
        (3000, 30),
        (3500, 30),
        (4000, 30),
        (4500, 30),
        (5000, 30),
        (5500, 30),
    ] {
        s.apply_update(LiveUpdate::Stats(stats(t, r, 0, 0)));
    }
    assert_eq!(s.rates().requests, 0.0);
    // A new session (counters went back) starts over instead of going negative.
    s.apply_update(LiveUpdate::Stats(stats(100, 1, 0, 0)));
    assert_eq!(s.stats().unwrap().uptime_ms, 100);
    s.apply_update(LiveUpdate::Stats(stats(600, 3, 0, 0)));
    assert_eq!(s.rates().requests, 4.0);
}

#[test]
fn stalled_feed_is_reported_after_a_while() {
    let mut s = state_with(vec![]);
    s.tick(Duration::from_secs(1));
    s.apply_update(LiveUpdate::Stats(stats(1000, 0, 0, 0)));
    s.tick(Duration::from_secs(2));
    assert_eq!(s.stalled_for(), None);
    s.tick(Duration::from_secs(5));
    assert_eq!(s.stalled_for(), Some(Duration::from_secs(4)));
    s.set_disconnected();
    assert_eq!(s.stalled_for(), None, "an ended session is not stalled");
    assert!(s.is_disconnected());
}

#[test]
fn filter_syntax() {
    let f = Filter::parse("users method:get,post status:>=400 min:1.5s").unwrap();
    assert_eq!(f.words, vec!["users"]);
    assert_eq!(f.methods, vec!["GET", "POST"]);
    assert_eq!(f.status, vec![StatusPred::Ge(400)]);
    assert_eq!(f.min_ms, Some(1500.0));
    assert_eq!(Filter::parse("min:100ms").unwrap().min_ms, Some(100.0));
    assert_eq!(Filter::parse("min:250").unwrap().min_ms, Some(250.0));
    assert_eq!(
        Filter::parse("status:5xx").unwrap().status,
        vec![StatusPred::Class(5)]
    );
    assert_eq!(
        Filter::parse("status:404").unwrap().status,
        vec![StatusPred::Eq(404)]
    );
    assert_eq!(
        Filter::parse("status:<300").unwrap().status,
        vec![StatusPred::Lt(300)]
    );
    assert_eq!(Filter::parse("path:/a:b").unwrap().words, vec!["/a:b"]);
    assert!(Filter::parse("").unwrap().is_empty());
    assert!(
        Filter::parse("status:abc")
            .unwrap_err()
            .contains("status:abc")
    );
    assert!(Filter::parse("min:fast").unwrap_err().contains("min:fast"));
    assert!(Filter::parse("min:-1s").is_err());
    assert!(Filter::parse("method:").is_err());
}

#[test]
fn filters_select_rows() {
    let mut s = state_with(sample_requests());
    typed(&mut s, "users");
    assert_eq!(shown_paths(&s), ["/users", "/users/999", "/users"]);
    typed(&mut s, "method:POST");
    assert_eq!(shown_paths(&s), ["/users", "/orders/42/pay"]);
    typed(&mut s, "status:5xx");
    assert_eq!(shown_paths(&s), ["/orders/42/pay"]);
    typed(&mut s, "status:404");
    assert_eq!(shown_paths(&s), ["/users/999"]);
    typed(&mut s, "status:>=400");
    assert_eq!(shown_paths(&s), ["/users/999", "/orders/42/pay"]);
    typed(&mut s, "min:100ms");
    assert_eq!(
        shown_paths(&s),
        ["/reports/monthly", "/stream", "/orders/42/pay"]
    );
    typed(&mut s, "min:1s USERS");
    assert!(shown_paths(&s).is_empty());
    assert_eq!(s.filter_text(), "min:1s USERS");
    s.apply(Action::Escape);
    assert_eq!(shown_paths(&s).len(), 7);
    assert_eq!(s.filter_text(), "");
}

#[test]
fn prompt_filters_as_you_type_and_cancel_restores() {
    let mut s = state_with(sample_requests());
    typed(&mut s, "health");
    assert_eq!(s.input_mode(), InputMode::Normal);
    s.apply(Action::OpenFilter);
    assert_eq!(s.input_mode(), InputMode::Prompt);
    assert_eq!(
        s.prompt().unwrap().text,
        "health",
        "prompt starts from the filter"
    );
    s.apply(Action::PromptClear);
    for c in "status:4".chars() {
        s.apply(Action::PromptChar(c));
    }
    // "status:4" parses (= 4): applied live.
    assert!(shown_paths(&s).is_empty());
    s.apply(Action::PromptChar('x'));
    assert!(s.prompt().unwrap().error.is_some());
    assert!(
        shown_paths(&s).is_empty(),
        "an invalid term keeps the last valid filter"
    );
    s.apply(Action::PromptChar('x'));
    assert!(s.prompt().unwrap().error.is_none());
    assert_eq!(shown_paths(&s), ["/users/999"]);
    s.apply(Action::PromptCancel);
    assert_eq!(s.input_mode(), InputMode::Normal);
    assert_eq!(shown_paths(&s), ["/health"]);
    assert_eq!(s.filter_text(), "health");

    // Enter on an invalid filter keeps the prompt open with the error.
    s.apply(Action::OpenFilter);
    s.apply(Action::PromptChar(' '));
    s.apply(Action::PromptChar('m'));
    s.apply(Action::PromptChar('i'));
    s.apply(Action::PromptChar('n'));
    s.apply(Action::PromptChar(':'));
    s.apply(Action::PromptSubmit);
    assert_eq!(s.input_mode(), InputMode::Prompt);
    s.apply(Action::PromptBackspace);
    s.apply(Action::PromptBackspace);
    s.apply(Action::PromptBackspace);
    s.apply(Action::PromptBackspace);
    s.apply(Action::PromptSubmit);
    assert_eq!(s.input_mode(), InputMode::Normal);
    assert_eq!(s.filter_text(), "health");
}

#[test]
fn errors_only_toggle() {
    let mut s = state_with(sample_requests());
    s.apply(Action::ToggleErrorsOnly);
    assert!(s.errors_only());
    assert_eq!(shown_paths(&s), ["/users/999", "/stream", "/orders/42/pay"]);
    // A 200 with a traceback counts as an error.
    let mut c = cassette("GET", "/quiet-fail", 200, 1.0, 9);
    c.error = Some(timetracer::cassette::format::ErrorInfo {
        status: 200,
        kind: timetracer::cassette::format::ErrorKind::Exception,
        traceback: Some("Traceback ...".into()),
    });
    s.apply_update(request(c, None));
    assert_eq!(shown_paths(&s).last().unwrap(), "/quiet-fail");
    s.apply(Action::ToggleErrorsOnly);
    assert_eq!(shown_paths(&s).len(), 8);
    s.apply(Action::ToggleErrorsOnly);
    s.apply(Action::Escape);
    assert!(!s.errors_only(), "Esc clears errors-only too");
}

#[test]
fn selection_follows_then_sticks() {
    let mut s = state_with(sample_requests());
    assert!(s.is_following());
    assert_eq!(s.selected_row().unwrap().seq, 7);
    s.apply(Action::Up);
    assert!(!s.is_following());
    assert_eq!(s.selected_row().unwrap().seq, 6);
    // New rows do not move a fixed selection.
    s.apply_update(request(cassette("GET", "/new", 200, 1.0, 8), None));
    assert_eq!(s.selected_row().unwrap().seq, 6);
    s.apply(Action::Down);
    s.apply(Action::Down);
    s.apply(Action::Down);
    assert_eq!(s.selected_row().unwrap().seq, 8, "stops at the last row");
    assert!(!s.is_following());
    s.apply(Action::Top);
    assert_eq!(s.selected_row().unwrap().seq, 1);
    s.apply(Action::Up);
    assert_eq!(s.selected_row().unwrap().seq, 1);
    s.set_page_size(3);
    s.apply(Action::PageDown);
    assert_eq!(s.selected_row().unwrap().seq, 4);
    s.apply(Action::PageUp);
    assert_eq!(s.selected_row().unwrap().seq, 1);
    s.apply(Action::Bottom);
    assert!(s.is_following());
    s.apply_update(request(cassette("GET", "/newer", 200, 1.0, 9), None));
    assert_eq!(s.selected_row().unwrap().seq, 9);
}

#[test]
fn selection_survives_filtering() {
    let mut s = state_with(sample_requests());
    s.apply(Action::Top);
    s.apply(Action::Down); // seq 2, /health
    s.apply(Action::ToggleErrorsOnly);
    // /health is hidden: the next visible row is selected.
    assert_eq!(s.selected_row().unwrap().path(), "/users/999");
    s.apply(Action::ToggleErrorsOnly);
    assert_eq!(
        s.selected_row().unwrap().path(),
        "/health",
        "the selection is kept"
    );
    typed(&mut s, "nothing-matches");
    assert!(s.selected_row().is_none());
    s.apply(Action::Down);
    s.apply(Action::Up);
}

#[test]
fn empty_state_actions_do_not_panic() {
    let mut s = state_with(vec![]);
    for a in [
        Action::Up,
        Action::Down,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::ToggleDetail,
        Action::ScrollDetail(-3),
        Action::Escape,
        Action::TogglePause,
        Action::TogglePause,
    ] {
        assert_eq!(s.apply(a), Effect::None);
    }
    assert_eq!(s.apply(Action::Save), Effect::None);
    assert!(s.message().unwrap().is_error);
    assert_eq!(s.apply(Action::Quit), Effect::Quit);
}

#[test]
fn pause_holds_rows_and_counts_arrivals() {
    let mut s = state_with(sample_requests());
    s.apply(Action::TogglePause);
    assert!(s.is_paused());
    for n in 0..3 {
        s.apply_update(request(cassette("GET", "/later", 200, 1.0, 10 + n), None));
    }
    s.apply_update(LiveUpdate::Stats(stats(1000, 10, 0, 0)));
    assert_eq!(s.rows().len(), 7, "no new rows while paused");
    assert_eq!(s.arrived_while_paused(), 3);
    assert_eq!(s.stats().unwrap().requests, 10, "counters keep updating");
    s.apply(Action::TogglePause);
    assert!(!s.is_paused());
    assert_eq!(s.rows().len(), 10);
    assert_eq!(s.arrived_while_paused(), 0);
    assert_eq!(s.rows()[9].seq, 10);
}

#[test]
fn capacity_drops_oldest_and_counts() {
    let mut s = State::new(PathBuf::from("/tmp"), true, 5);
    for n in 0..8 {
        s.apply_update(request(
            cassette("GET", &format!("/r{n}"), 200, 1.0, n),
            None,
        ));
    }
    assert_eq!(s.rows().len(), 5);
    assert_eq!(s.evicted(), 3);
    assert_eq!(s.rows()[0].path(), "/r3");
    // Rows held back by a pause count towards the capacity too.
    s.apply(Action::Top);
    s.apply(Action::TogglePause);
    for n in 8..11 {
        s.apply_update(request(
            cassette("GET", &format!("/r{n}"), 200, 1.0, n),
            None,
        ));
    }
    assert_eq!(s.rows().len(), 2);
    assert_eq!(s.evicted(), 6);
    // The selected row (/r3) is gone: the next one is selected.
    assert_eq!(s.selected_row().unwrap().path(), "/r6");
    s.apply(Action::TogglePause);
    assert_eq!(s.rows().len(), 5);
    assert_eq!(s.rows()[4].path(), "/r10");
}

#[test]
fn save_flow() {
    let mut s = state_with(sample_requests());
    s.tick(Duration::from_secs(10));
    // The newest (selected) row is not saved yet.
    assert_eq!(s.apply(Action::Save), Effect::Save(7));
    assert!(s.cassette(7).is_some());
    s.saved(7, PathBuf::from("/tmp/out/x.json"));
    assert_eq!(
        s.selected_row().unwrap().saved.as_deref(),
        Some(std::path::Path::new("/tmp/out/x.json"))
    );
    assert_eq!(s.saved_here(), 1);
    assert_eq!(s.message().unwrap().text, "saved /tmp/out/x.json");
    // Saving again only says where it is.
    assert_eq!(s.apply(Action::Save), Effect::None);
    assert!(s.message().unwrap().text.starts_with("already saved"));
    // Rows written by the agent are not written twice.
    s.apply(Action::Top);
    assert_eq!(s.apply(Action::Save), Effect::None);
    s.apply(Action::Down);
    s.apply(Action::Down);
    assert_eq!(s.apply(Action::Save), Effect::Save(3));
    s.save_failed(3, "disk full");
    assert!(s.message().unwrap().is_error);
    // Messages expire.
    s.tick(Duration::from_secs(30));
    assert!(s.message().is_none());
}

#[test]
fn detail_help_and_escape() {
    let mut s = state_with(sample_requests());
    s.apply(Action::ToggleDetail);
    assert!(s.detail_open());
    s.apply(Action::ScrollDetail(5));
    s.apply(Action::ScrollDetail(-2));
    assert_eq!(s.detail_scroll(), 3);
    s.apply(Action::Up);
    assert_eq!(s.detail_scroll(), 0, "a new selection starts at the top");
    s.apply(Action::ToggleHelp);
    assert_eq!(s.input_mode(), InputMode::Help);
    s.apply(Action::Escape);
    assert!(!s.help_open());
    assert!(s.detail_open(), "Esc closes one thing at a time");
    s.apply(Action::Escape);
    assert!(!s.detail_open());
    // `/` closes the help.
    s.apply(Action::ToggleHelp);
    s.apply(Action::OpenFilter);
    assert_eq!(s.input_mode(), InputMode::Prompt);
    assert!(!s.help_open());
}

#[test]
fn details_and_save_pin_the_selection() {
    let mut s = state_with(sample_requests());
    assert!(s.is_following());
    s.apply(Action::ToggleDetail);
    assert!(!s.is_following(), "details do not jump to each new request");
    s.apply_update(request(cassette("GET", "/new", 200, 1.0, 8), None));
    assert_eq!(s.selected_row().unwrap().seq, 7);
    s.apply(Action::ToggleDetail);
    s.apply(Action::Bottom);
    assert_eq!(s.apply(Action::Save), Effect::Save(8));
    s.apply_update(request(cassette("GET", "/newer", 200, 1.0, 9), None));
    assert_eq!(
        s.selected_row().unwrap().seq,
        8,
        "the row being saved stays selected"
    );
}

fn versioned(c: timetracer::cassette::Cassette, phase: Phase, saved: Option<&str>) -> LiveUpdate {
    LiveUpdate::Request {
        cassette: Box::new(c),
        path: saved.map(PathBuf::from),
        phase,
    }
}

/// Issue #22: a request shows as soon as its response ended, marked open; a later snapshot
/// with a late call and then the final version replace that row in place (same position and
/// selection), and the final one clears the mark.
#[test]
fn open_rows_are_updated_in_place_then_finalized() {
    let mut s = state_with(Vec::new());
    s.apply_update(versioned(
        cassette("GET", "/slow", 200, 5.0, 1),
        Phase::Open,
        None,
    ));
    s.apply_update(request(cassette("GET", "/other", 200, 1.0, 2), None));
    assert_eq!(s.rows().len(), 2);
    assert!(s.rows()[0].open && !s.rows()[1].open);
    assert_eq!(s.open_rows(), 1);
    s.apply(Action::Top);
    assert_eq!(
        s.apply(Action::Save),
        Effect::None,
        "an open row is not saved"
    );
    assert!(s.message().unwrap().is_error);

    let mut late = cassette("GET", "/slow", 200, 5.0, 1);
    late.events = vec![tui_fixtures::http_event(1, 1.0, 2.0, "http://up/late", 200)];
    s.apply_update(versioned(late.clone(), Phase::Open, None));
    assert_eq!(s.rows().len(), 2, "updated, not added");
    assert_eq!(s.rows()[0].deps.http, 1);
    assert!(s.rows()[0].open);
    assert_eq!(
        s.selected_row().unwrap().seq,
        1,
        "the selection stays on it"
    );

    s.apply_update(versioned(late, Phase::Final, Some("/tmp/out/slow.json")));
    assert_eq!(s.rows().len(), 2);
    let r = &s.rows()[0];
    assert!(!r.open);
    assert_eq!(r.seq, 1);
    assert_eq!(
        r.saved.as_deref(),
        Some(std::path::Path::new("/tmp/out/slow.json"))
    );
    assert_eq!(s.open_rows(), 0);
    // Another final version of the same id (not expected) is a new row, never a lost one.
    s.apply_update(request(cassette("GET", "/slow", 200, 5.0, 1), None));
    assert_eq!(s.rows().len(), 3);
}

/// Open rows held back by a pause are updated there; evicted open rows are forgotten.
#[test]
fn open_rows_while_paused_and_evicted() {
    let mut s = State::new(PathBuf::from("/tmp"), true, 3);
    s.apply(Action::TogglePause);
    s.apply_update(versioned(
        cassette("GET", "/p", 200, 1.0, 1),
        Phase::Open,
        None,
    ));
    s.apply_update(versioned(
        cassette("GET", "/p", 500, 1.0, 1),
        Phase::Final,
        None,
    ));
    assert_eq!(s.arrived_while_paused(), 1);
    s.apply(Action::TogglePause);
    assert_eq!(s.rows().len(), 1);
    assert_eq!(s.rows()[0].status(), 500);
    assert!(!s.rows()[0].open);
    for n in 2..6 {
        s.apply_update(versioned(
            cassette("GET", &format!("/o{n}"), 200, 1.0, n),
            Phase::Open,
            None,
        ));
    }
    assert_eq!(s.rows().len(), 3);
    assert_eq!(s.open_rows(), 3, "the evicted open row is forgotten");
    // The final version of an evicted row comes back as a new row.
    s.apply_update(versioned(
        cassette("GET", "/o2", 200, 1.0, 2),
        Phase::Final,
        None,
    ));
    assert_eq!(s.rows().back().unwrap().path(), "/o2");
    assert_eq!(s.open_rows(), 2, "/o3 was evicted for it");
}
