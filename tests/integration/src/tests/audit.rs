//! `timetracer serve`'s audit log (issue #19 item 6), through the real binary: downloads,
//! exports, views and replay attempts by two local users each leave one JSON line naming the
//! user, the cassette, the action, its result and the time, in the default place (the user's
//! state directory), 0600, appended across runs.
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::privilege::{SYSTEM_PYTHON, USER, test_user};
use crate::require_root;
use crate::util::{self, ProcGuard};

const CASSETTE: &str = "POST__login_caf__e92ca5c8.json";

/// GETs each path with the run's token header; prints `STATUS LENGTH` per path.
const CLIENT: &str = r#"
import sys, urllib.request, urllib.error
base, token = sys.argv[1], sys.argv[2]
for path in sys.argv[3:]:
    req = urllib.request.Request(base + path, headers={"x-timetracer-token": token})
    try:
        with urllib.request.urlopen(req) as r:
            print(r.status, len(r.read()))
    except urllib.error.HTTPError as e:
        print(e.code, 0)
"#;

/// Runs the client as `uid:gid` (or as root), returns its output lines.
fn client(user: Option<(u32, u32)>, base: &str, token: &str, paths: &[&str]) -> Vec<String> {
    let mut cmd = match user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--init-groups".to_owned(),
                "--".to_owned(),
                SYSTEM_PYTHON.to_owned(),
            ]);
            c
        }
        None => Command::new(SYSTEM_PYTHON),
    };
    let out = cmd
        .args(["-c", CLIENT, base, token])
        .args(paths)
        .output()
        .expect("run the client");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `timetracer serve` on `dir` with `state` as its state directory; returns the
/// process, the base URL and the token.
fn serve(cli: &Path, dir: &Path, state: &Path, logs: &Path) -> (ProcGuard, String, String) {
    let mut cmd = util::command(
        cli,
        [
            "serve".into(),
            "--dir".into(),
            dir.as_os_str().to_owned(),
            "--port".into(),
            "0".into(),
            "--replay-socket".into(),
            dir.join("no-service.sock").into_os_string(),
        ],
    );
    cmd.env("XDG_STATE_HOME", state);
    let mut p = ProcGuard::spawn("serve", cmd, logs).expect("spawn serve");
    let t = Instant::now();
    while !p.stdout_text().contains("Audit log: ") {
        assert!(
            p.try_status().is_none(),
            "serve exited\n{}",
            p.diagnostics()
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{}", p.diagnostics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = p.stdout_text();
    let url = out
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL\n{out}"));
    let (base, token) = url.split_once("/?token=").unwrap();
    (p, base.to_owned(), token.to_owned())
}

#[test]
fn serve_audits_downloads_exports_views_and_replays() {
    let paths = require_root!();
    let user = test_user();
    let tmp = util::temp_dir("audit");
    let dir = tmp.path().join("cassettes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        paths
            .repo
            .join("tests/fixtures/cassettes/ours")
            .join(CASSETTE),
        dir.join(CASSETTE),
    )
    .unwrap();
    let state = tmp.path().join("state");

    let (mut p, base, token) = serve(&paths.cli, &dir, &state, tmp.path());
    let log = p
        .stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix("Audit log: ").map(str::to_owned))
        .unwrap();
    assert!(
        Path::new(&log).starts_with(state.join("timetracer/audit")),
        "default: the state directory ({log})"
    );
    // Root downloads and exports; the other user views, downloads and tries to escape.
    let dl = format!("/api/download?f={CASSETTE}");
    let har = format!("/api/export?f={CASSETTE}&to=har");
    let curl = format!("/api/export?f={CASSETTE}&to=curl");
    let view = format!("/api/detail?f={CASSETTE}");
    let size = std::fs::metadata(dir.join(CASSETTE)).unwrap().len();
    let got = client(None, &base, &token, &[&dl, &har]);
    assert_eq!(got[0], format!("200 {size}"), "the file as stored");
    assert!(got[1].starts_with("200 "), "{got:?}");
    let got = client(
        Some(user),
        &base,
        &token,
        &[&view, &curl, "/api/download?f=../../etc/shadow"],
    );
    assert!(
        got[0].starts_with("200 ") && got[1].starts_with("200 "),
        "{got:?}"
    );
    assert!(got[2].starts_with("400 "), "{got:?}");
    // Without the token nothing is served, and nothing is logged as an action.
    let got = client(Some(user), &base, "wrong", &[&dl]);
    assert!(got[0].starts_with("401 "), "{got:?}");
    // A replay through the page's endpoint (the service is absent here).
    let replay = Command::new(SYSTEM_PYTHON)
        .args([
            "-c",
            "import sys, urllib.request\n\
             r = urllib.request.Request(sys.argv[1] + '/api/replay', data=sys.argv[3].encode(), \
             headers={'x-timetracer-token': sys.argv[2], 'content-type': 'application/json'})\n\
             print(urllib.request.urlopen(r).status)",
            &base,
            &token,
            &format!("{{\"file\": \"{CASSETTE}\"}}"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&replay.stdout).trim(), "200");

    let lines = util::read_json_lines(Path::new(&log));
    let me: Vec<&Value> = lines.iter().filter(|l| l["uid"] == 0).collect();
    let them: Vec<&Value> = lines.iter().filter(|l| l["uid"] == user.0).collect();
    let summary = |v: &[&Value]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|l| {
                (
                    l["action"].as_str().unwrap_or("").to_owned(),
                    l["cassette"].as_str().unwrap_or("").to_owned(),
                    l["result"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let s = |a: &str, c: &str, r: &str| (a.to_owned(), c.to_owned(), r.to_owned());
    assert_eq!(
        summary(&me),
        [
            s("download", CASSETTE, "ok"),
            s("export", CASSETTE, "ok"),
            s("replay", CASSETTE, "error"),
        ],
        "{lines:#?}"
    );
    assert_eq!(
        summary(&them),
        [
            s("view", CASSETTE, "ok"),
            s("export", CASSETTE, "ok"),
            s("download", "../../etc/shadow", "refused"),
        ],
        "{lines:#?}"
    );
    assert_eq!(
        lines.len(),
        6,
        "one line per action, none for the bad token: {lines:#?}"
    );
    assert!(them.iter().all(|l| l["user"] == USER));
    assert!(me.iter().all(|l| l["user"] == "root"));
    assert_eq!(me[1]["detail"], "har");
    assert_eq!(them[1]["detail"], "curl");
    for l in &lines {
        let t = l["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z'), "RFC 3339 UTC: {t}");
        assert!(l["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(l["dir"], dir.canonicalize().unwrap().display().to_string());
        assert!(l["status"].as_u64().is_some());
    }
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    p.signal(nix::sys::signal::Signal::SIGINT).unwrap();
    p.wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("serve did not stop\n{}", p.diagnostics()));

    // A second run appends to the same log.
    let (_p2, base, token) = serve(&paths.cli, &dir, &state, tmp.path());
    client(None, &base, &token, &[&dl]);
    let again = util::read_json_lines(Path::new(&log));
    assert_eq!(again.len(), 7, "appended, never truncated");
    assert_eq!(again[..6], lines[..]);
}
