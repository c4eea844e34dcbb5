//! Retention (issue #19 item 6): `record --retain 2s` deletes, at start and while it runs, the
//! cassettes older than 2 s under its directory (every cassette form, their emptied date
//! directories), and nothing else; the deletions are counted in the exit summary.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::require_root;
use crate::util::{self, ProcGuard};

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/cassettes/ours/POST__login_caf__e92ca5c8.json"),
    )
    .unwrap()
}

/// Cassettes written under `dir` (not hidden).
fn cassettes(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if e.path().is_dir() {
                stack.push(e.path());
            } else if name.starts_with("GET__") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn retain_deletes_old_cassettes_while_recording() {
    let paths = require_root!();
    let tmp = util::temp_dir("retain");
    let out = tmp.path().join("cassettes");
    let old_day = out.join("2020-01-01");
    std::fs::create_dir_all(&old_day).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let cassette = fixture();
    // Old cassettes in every form the agent writes (the content decides, not only the
    // name: an encrypted one is recognised by its age header).
    let mut old = Vec::new();
    for (name, bytes) in [
        ("2020-01-01/POST__login__00000001.json", cassette.clone()),
        ("POST__login__00000002.json", cassette.clone()),
        ("POST__login__00000003.json.zst", zstd_of(&cassette)),
        (
            "POST__login__00000004.json.age",
            b"age-encryption.org/v1\n-> X25519 abc\nbody".to_vec(),
        ),
    ] {
        let p = out.join(name);
        std::fs::write(&p, bytes).unwrap();
        set_mtime(&p, hour_ago);
        old.push(p);
    }
    // Old files that are not cassettes, whatever their names: kept.
    let mut kept = Vec::new();
    for (name, bytes) in [
        ("notes.json", b"{\"mine\": true}".to_vec()),
        ("README.txt", b"keep me".to_vec()),
        ("POST__fake__00000005.json.zst", b"not zstd at all".to_vec()),
    ] {
        let p = out.join(name);
        std::fs::write(&p, bytes).unwrap();
        set_mtime(&p, hour_ago);
        kept.push(p);
    }
    // A cassette newer than the limit (modified in the future, so it stays for the whole
    // test).
    let fresh = out.join("POST__login__00000006.json");
    std::fs::write(&fresh, &cassette).unwrap();
    set_mtime(&fresh, SystemTime::now() + Duration::from_secs(3600));

    let app = tmp.path().join("app.py");
    std::fs::write(&app, super::privilege::WHOAMI_APP).unwrap();
    let port = util::free_port();
    let cmd = util::command(
        &paths.agent,
        [
            OsString::from("record"),
            "--out".into(),
            out.clone().into(),
            "--retain".into(),
            "2s".into(),
            "--".into(),
            paths.venv_bin("python").into(),
            app.into(),
            port.to_string().into(),
        ],
    );
    let mut agent = ProcGuard::spawn("agent", cmd, tmp.path()).expect("spawn agent");
    agent
        .wait_for_port(port, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.diagnostics()));

    // The sweep at start has run before the app was launched.
    for p in &old {
        assert!(
            !p.exists(),
            "{} must be deleted at start\n{}",
            p.display(),
            agent.diagnostics()
        );
    }
    assert!(!old_day.exists(), "the emptied date directory goes too");
    for p in kept.iter().chain([&fresh]) {
        assert!(p.exists(), "{} must be kept", p.display());
    }

    // A cassette recorded now is there at once, and gone once older than 2 s.
    let resp = util::HttpConn::connect(port)
        .expect("connect")
        .request("GET", "/now", None)
        .expect("request");
    assert_eq!(resp.status, 200);
    let t = Instant::now();
    let written = loop {
        if let Some(p) = cassettes(&out).pop() {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no cassette written\n{}",
            agent.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(&written).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(2),
        "checked while fresh ({age:?})"
    );
    let t = Instant::now();
    while written.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{} not deleted while recording\n{}",
            written.display(),
            agent.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.exists(), "the cassette directory itself stays");
    for p in kept.iter().chain([&fresh]) {
        assert!(p.exists(), "{} must be kept", p.display());
    }
    assert!(out.join(".timetracer-index.sqlite3").exists());

    agent.signal(Signal::SIGINT).expect("SIGINT");
    // (Its exit status is the app's, interrupted by the same signal.)
    agent
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("agent did not stop\n{}", agent.diagnostics()));
    // 4 old ones at start + the recorded one.
    let summary = agent.stderr_text();
    assert!(
        summary.contains("retention_deleted=5"),
        "the exit summary counts the deletions\n{}",
        agent.diagnostics()
    );
    assert!(
        !summary.contains("retention_errors="),
        "{}",
        agent.diagnostics()
    );
}

/// `bytes` compressed with the `zstd` command (the suite has no zstd crate).
fn zstd_of(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("zstd")
        .args(["-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the zstd command (apt-get install zstd)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}
