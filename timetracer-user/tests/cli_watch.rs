//! `timetracer watch` (issue #22): a real `timetracer watch` process, cassettes written into its
//! directory the ways writers do (renamed into place like the agent, into a date directory that
//! appears meanwhile, copied in place, a whole directory moved in), its lines read within a
//! bound; the filters agree with `search`; SIGINT ends it cleanly.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_common::watch::Watch;
use cli_common::{fixtures, run};

/// Writes `src` as `dest` the agent's way: a hidden temporary file renamed into place.
fn write_atomically(src: &Path, dest: &Path) {
    let tmp = dest.with_file_name(format!(
        ".tmp-{}",
        dest.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn py(name: &str) -> PathBuf {
    fixtures().join("py").join(name)
}

/// Every way a cassette lands in the directory is printed once, within the bound; files there
/// before the watch started are not; SIGINT ends it with exit 0 and a count.
#[test]
fn watch_prints_each_new_cassette_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cassettes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        py("GET__users_42__e92ca5c8.json"),
        dir.join("GET__users_42__e92ca5c8.json"),
    )
    .unwrap();
    let w = Watch::start(
        t.path(),
        &["--dir", dir.to_str().unwrap(), "--color", "never"],
        &[],
    );
    let header = w.next("the header");
    assert!(
        header.contains("Endpoint") && header.contains("File"),
        "{header}"
    );

    // The agent's way, into a date directory that appears now (the day rotated).
    let day = dir.join("2026-12-08");
    std::fs::create_dir(&day).unwrap();
    write_atomically(
        &py("GET__boom_5__90588dcc.json"),
        &day.join("GET__boom_5__90588dcc.json"),
    );
    let l = w.next("the renamed cassette");
    assert!(
        l.contains("/boom/5") && l.contains("2026-12-08/GET__boom_5__90588dcc.json"),
        "{l}"
    );
    assert!(l.trim_start().starts_with("1 "), "numbered from 1: {l}");

    // Copied in place (created, written, closed): printed once, when it can be read.
    std::fs::copy(
        fixtures().join("ours/POST__login_caf__e92ca5c8.json"),
        dir.join("POST__login_caf__e92ca5c8.json"),
    )
    .unwrap();
    let l = w.next("the copied cassette");
    assert!(l.contains("/login/café") && l.contains("POST"), "{l}");

    // A whole directory moved in: its files had no events of their own.
    let staged = t.path().join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::copy(
        py("GET__db_then_http__a97386d6.json"),
        staged.join("GET__db_then_http__a97386d6.json"),
    )
    .unwrap();
    std::fs::rename(&staged, dir.join("2026-12-09")).unwrap();
    let l = w.next("the cassette of the moved directory");
    assert!(l.contains("/db-then-http"), "{l}");

    // Not cassettes: a temporary file, the index, a text file.
    std::fs::write(dir.join(".tmp-9-GET__x__00000000.json"), b"{").unwrap();
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    w.quiet_for(Duration::from_millis(700));

    let (code, rest) = w.interrupt();
    assert_eq!(code, 0, "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("3 new cassettes shown")),
        "{rest:?}"
    );
}

/// `--errors --json`: the same selection `search --errors --json` makes of the same files.
#[test]
fn watch_filters_like_search() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cassettes");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let w = Watch::start(t.path(), &["--dir", d, "--errors", "--json"], &[]);
    for f in [
        "GET__users_42__e92ca5c8.json",
        "GET__boom_5__90588dcc.json",
        "GET__db_then_http__a97386d6.json",
    ] {
        write_atomically(&py(f), &dir.join(f));
    }
    let l = w.next("the failed request");
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["path"], "/boom/5", "{l}");
    w.quiet_for(Duration::from_millis(700));
    let (code, _) = w.interrupt();
    assert_eq!(code, 0);

    let o = run(t.path(), &["search", "--dir", d, "--errors", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let found: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{}", o.stdout);
    let name = |v: &serde_json::Value| {
        Path::new(v["file"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(&found[0]), name(&v));
}

/// Bad input is said with its fix: a missing directory, a bad filter, a bad interval.
#[test]
fn watch_refuses_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let o = run(t.path(), &["watch", "--dir", "nope"]);
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(
        o.stderr.contains("--out") && o.stderr.contains("not a directory"),
        "{}",
        o.stderr
    );
    std::fs::create_dir(t.path().join("c")).unwrap();
    let o = run(
        t.path(),
        &["watch", "--dir", "c", "--since", "yesterday-ish"],
    );
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(o.stderr.contains("--since"), "{}", o.stderr);
    let o = run(t.path(), &["watch", "--dir", "c", "--interval", "1ms"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("at least 100ms"), "{}", o.stderr);
}
