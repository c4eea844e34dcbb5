//! A running `timetracer watch` whose lines are read with a time bound (`cli_watch`, `cli_s3`).
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a written cassette may take to be printed (inotify is immediate; the bound is for
/// a loaded CI machine).
const BOUND: Duration = Duration::from_secs(5);

pub struct Watch {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

impl Watch {
    /// Starts `timetracer watch ARGS` in `cwd` and waits until it watches.
    pub fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_timetracer"));
        cmd.arg("watch")
            .args(args)
            .current_dir(cwd)
            .env("HOME", cwd)
            .env_remove("TIMETRACER_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start timetracer watch");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let w = Self {
            child,
            stdout,
            stderr,
        };
        // (`--follow-s3` says first that it brings the bucket "before watching".)
        w.wait_line(&w.stderr, "the watch to start", |l| {
            l.contains("for new cassettes")
        });
        w
    }

    fn wait_line(
        &self,
        rx: &mpsc::Receiver<String>,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let until = Instant::now() + BOUND;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line for {what} within {BOUND:?}; saw {seen:#?}"),
            }
        }
    }

    /// The next line on stdout, within the bound.
    pub fn next(&self, what: &str) -> String {
        self.wait_line(&self.stdout, what, |_| true)
    }

    /// No line on stdout for `d`.
    pub fn quiet_for(&self, d: Duration) {
        if let Ok(l) = self.stdout.recv_timeout(d) {
            panic!("unexpected line: {l}");
        }
    }

    /// SIGINT; returns the exit code and what was left on stderr, within 2 s.
    pub fn interrupt(mut self) -> (i32, Vec<String>) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "watch did not exit within 2 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest: Vec<String> = self.stderr.try_iter().collect();
        (status.code().unwrap_or(-1), rest)
    }
}
