//! Issue #22, "live means live": in `timetracer-agent top` a request appears within 1 s of its
//! response, marked open while it still accepts late calls (FastAPI: 3 s of asyncio grace),
//! and turns final in place; `q` gives the shell back with the terminal as it was within
//! 0.5 s, every pending request written; SIGINT to `attach` ends it within 1 s with every
//! request written.
use std::{
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use super::scenario::{App, Harness, Req};
use super::tui::Tmux;
use crate::require_root;
use crate::util::{self, HttpConn};

/// The table's title, ` Requests SHOWN/TOTAL `: TOTAL.
fn rows(screen: &str) -> Option<usize> {
    let rest = screen.split("Requests ").nth(1)?;
    let (_, total) = rest.split_once('/')?;
    total
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Polls the screen every 25 ms until `pred` holds or `limit` passed; returns the screen and
/// how long it took.
fn within(tmux: &Tmux, limit: Duration, pred: impl Fn(&str) -> bool) -> (String, Duration) {
    let t = Instant::now();
    loop {
        let s = tmux.screen();
        if pred(&s) || t.elapsed() > limit {
            return (s, t.elapsed());
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn requests(port: u16, from: u32, n: u32) {
    let mut conn = HttpConn::connect(port).expect("connect");
    for i in from..from + n {
        let r = Req::new(&format!("users/{i}"), &format!("live{i}"));
        let resp = conn.request(r.method, &r.target, None).expect("request");
        assert_eq!(resp.status, 200, "{}", r.target);
    }
}

#[test]
#[ignore = "exit within 1 s needs the background probe detach, withdrawn at stop 32: it stalled the next agent's attach (issue #22 item 1 open)"]
fn top_is_live_and_quits_at_once() {
    let paths = require_root!();
    let Some(tmux_bin) = crate::prereq::require(util::which("tmux"), || {
        "tmux is not installed (`cargo xtask install` installs it)".to_owned()
    }) else {
        return;
    };
    let mut h = Harness::new(paths, "top_is_live");
    h.start_app(App::FastApi);
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmux, before, after) = Tmux::top(tmux_bin, &h, dir.path(), "tt-live");

    // 60 requests: every row within 1 s of the last response, still open (asyncio grace).
    requests(h.client_port, 1000, 60);
    let (s, took) = within(&tmux, Duration::from_secs(3), |s| {
        rows(s).is_some_and(|n| n >= 60)
    });
    assert!(
        rows(&s).is_some_and(|n| n >= 60) && took <= Duration::from_secs(1),
        "60 rows not shown within 1 s of the last response (took {took:?}):\n{s}"
    );
    assert!(s.contains(" open "), "rows not marked open:\n{s}");
    eprintln!("[top_is_live] 60 rows shown {took:?} after the last response");

    // They turn final in place: still 60 rows, no longer open.
    let (s, took) = within(&tmux, Duration::from_secs(15), |s| {
        !s.contains(" open ") && rows(s) == Some(60)
    });
    assert!(
        !s.contains(" open ") && rows(&s) == Some(60),
        "rows not finalized in place within {took:?}:\n{s}"
    );

    // 10 more, and `q` while they are still open: the shell is back within 0.5 s, the
    // terminal as it was, all 70 requests written.
    requests(h.client_port, 2000, 10);
    let (s, _) = within(&tmux, Duration::from_secs(3), |s| {
        rows(s).is_some_and(|n| n >= 70)
    });
    assert!(s.contains(" open "), "the last rows are not open:\n{s}");
    tmux.keys(&["q"]);
    let t = Instant::now();
    while !after.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "`top` did not exit after q; screen:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let quit = t.elapsed();
    eprintln!("[top_is_live] shell back {quit:?} after q");
    assert!(
        quit <= Duration::from_millis(500),
        "the shell came back {quit:?} after q (want <= 0.5 s)"
    );
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "terminal settings were not restored after q"
    );
    let written = util::load_cassettes(&h.out);
    assert_eq!(
        written.cassettes.len(),
        70,
        "every request written:\n{}",
        written.listing()
    );
    assert!(written.problems.is_empty(), "{}", written.listing());
}

#[test]
#[ignore = "exit within 1 s needs the background probe detach, withdrawn at stop 32: it stalled the next agent's attach (issue #22 item 1 open)"]
fn attach_exits_within_a_second_of_sigint() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "attach_sigint_fast");
    h.start_app(App::FastApi);
    h.attach();
    // Still within their grace period when the signal comes: written by the flush.
    requests(h.client_port, 3000, 60);
    let agent = h.agent.as_mut().expect("agent");
    let t = Instant::now();
    agent.signal(Signal::SIGINT).expect("SIGINT");
    let status = agent
        .wait_timeout(Duration::from_secs(30))
        .expect("agent exits after SIGINT");
    let took = t.elapsed();
    eprintln!("[attach_sigint_fast] exit {took:?} after SIGINT");
    assert!(status.success(), "agent exited with {status}");
    assert!(
        took <= Duration::from_secs(1),
        "attach exited {took:?} after SIGINT (want <= 1 s)\n{}",
        agent.stderr_text()
    );
    let written = util::load_cassettes(&h.out);
    assert_eq!(
        written.cassettes.len(),
        60,
        "every request written:\n{}",
        written.listing()
    );
    // The probes are gone from the app shortly after (detached by the kernel in the
    // background): it keeps serving.
    thread::sleep(Duration::from_millis(100));
    let mut conn = HttpConn::connect(h.client_port).expect("connect");
    let r = conn
        .request("GET", "/users/1", None)
        .expect("after the agent");
    assert_eq!(r.status, 200);
}
