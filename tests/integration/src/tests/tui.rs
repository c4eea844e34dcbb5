//! Issue #10: `timetracer-agent top` in a real terminal (tmux) against a real app under load:
//! requests appear, the filter works, the detail pane shows a dependency call, and `q`
//! restores the terminal exactly (same `stty -g` before and after).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::scenario::{App, Harness, Req};
use crate::require_root;

pub(super) struct Tmux {
    bin: PathBuf,
    socket: String,
}

impl Tmux {
    pub(super) fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-L", &self.socket]);
        c
    }
    pub(super) fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "tt"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success(), "tmux send-keys {keys:?}");
    }
    pub(super) fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-t", "tt", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Polls the screen until `pred` holds (10 s), returning the last screen either way.
    pub(super) fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Tmux {
    /// `timetracer-agent top --pid <the app> --out <the harness's>` in a new 160×45 tmux
    /// session (socket `TAG-<pid>`), between two `stty -g` into `dir`; waits for its header.
    /// Returns the session and the files of the two `stty -g`: the second appears (whole)
    /// only once the agent exited and the shell goes on.
    pub(super) fn top(
        bin: PathBuf,
        h: &Harness,
        dir: &Path,
        tag: &str,
    ) -> (Self, PathBuf, PathBuf) {
        let pid = h.app.as_ref().expect("app").pid();
        let (before, after) = (dir.join("stty.before"), dir.join("stty.after"));
        let script = format!(
            "stty -g > {b}; {agent} top --pid {pid} --out {out}; stty -g > {a}.part && mv {a}.part {a}; sleep 120",
            b = before.display(),
            a = after.display(),
            agent = h.paths.agent.display(),
            out = h.out.display(),
        );
        let tmux = Self {
            bin,
            socket: format!("{tag}-{}", std::process::id()),
        };
        let st = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "tt", "-x", "160", "-y", "45"])
            .args(["bash", "-c", &script])
            .status()
            .expect("tmux new-session");
        assert!(st.success(), "tmux new-session failed");
        tmux.wait_for("the header", |s| s.contains("timetracer top"));
        (tmux, before, after)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn top_in_tmux() {
    let paths = require_root!();
    let Some(tmux_bin) = crate::prereq::require(crate::util::which("tmux"), || {
        "tmux is not installed (`cargo xtask install` installs it)".to_owned()
    }) else {
        return;
    };
    let mut h = Harness::new(paths, "top_in_tmux");
    h.start_app(App::FastApi);
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmux, before, after) = Tmux::top(tmux_bin, &h, dir.path(), "tt-e2e");

    // Load: a keep-alive client alternating a one-call endpoint and a three-call endpoint.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let port = h.client_port;
        thread::spawn(move || {
            let mut n = 0u32;
            let mut conn = crate::util::HttpConn::connect(port).expect("connect");
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                let ep = if n.is_multiple_of(2) {
                    format!("users/{}", 700 + n)
                } else {
                    "multi".to_owned()
                };
                let r = Req::new(&ep, &format!("tui{n}"));
                let _ = conn.request(r.method, &r.target, None);
                n += 1;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tmux.wait_for("request rows", |s| {
        s.contains("/users/7") && s.contains("/multi")
    });

    // Filter on the path: only /users rows remain.
    tmux.keys(&["/"]);
    tmux.keys(&["users", "Enter"]);
    let s = tmux.wait_for("the filter to apply", |s| {
        !s.contains("/multi") && s.contains("/users/")
    });
    assert!(s.contains("users"), "filter not shown:\n{s}");

    // Pause so the selection stays put, then open the details of the selected request.
    tmux.keys(&["p"]);
    tmux.keys(&["k", "Enter"]);
    let want = format!("http://127.0.0.1:{}/json/", h.upstream_port);
    let s = tmux.wait_for("the detail pane with the dependency call", |s| {
        s.contains(&want)
    });
    assert!(
        s.contains("Waterfall") || s.contains("Calls"),
        "no waterfall/calls in details:\n{s}"
    );

    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    tmux.keys(&["q"]);
    let t = Instant::now();
    while !after.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "`top` did not exit after q; screen:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (b, a) = (
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
    );
    assert_eq!(b, a, "terminal settings were not restored after q");
    let s = tmux.screen();
    assert!(
        s.contains("timetracer-agent: done"),
        "no exit summary on the restored screen:\n{s}"
    );
}
