//! Every command on a directory mixing our cassettes, the Python tool's, gzip and zstd files,
//! a corrupt file and non-cassette files: clear per-file errors, exit 3, the rest processed.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
use cli_common::{CORRUPT, mixed, run, run_env};
use serde_json::Value;

fn one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(CORRUPT)).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("not JSON") && lines[0].contains("repair or delete"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("index.json")
            && !stderr.contains("notes.txt")
            && !stderr.contains(".tmp-"),
        "{stderr}"
    );
}

#[test]
fn list_and_index() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let o = run(t.path(), &["list", "--dir", d, "-n", "0"]);
    assert_eq!(o.code, 3, "{}{}", o.stdout, o.stderr);
    one_error_line(&o.stderr);
    assert!(
        o.stdout.contains("Showing 6 of 6 cassettes"),
        "{}",
        o.stdout
    );
    for f in [
        "e92ca5c8.json",
        "e92ca5c9.json.zst",
        "e92ca5c7.json.gz",
        "90588dcc.json",
        "a97386d6.json",
    ] {
        assert!(o.stdout.contains(f), "{f} missing:\n{}", o.stdout);
    }
    assert!(!o.stdout.contains("index.json") && !o.stdout.contains(".timetracer-index"));
    // Default dir from TIMETRACER_DIR; newest first.
    let o = run_env(
        t.path(),
        &["list", "-n", "1", "--json"],
        &[("TIMETRACER_DIR", d)],
    );
    let v: Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["path"], "/db-then-http");
    let o = run(t.path(), &["index", "--dir", d, "--rebuild"]);
    assert_eq!(o.code, 3);
    assert!(
        o.stdout.contains("Indexed 6 cassettes") && o.stdout.contains("1 unreadable"),
        "{}",
        o.stdout
    );
    // Fixing the file clears the error incrementally.
    std::fs::remove_file(dir.join("2026-11-22").join(CORRUPT)).unwrap();
    let o = run(t.path(), &["index", "--dir", d]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("1 removed"), "{}", o.stdout);
    let o = run(t.path(), &["list", "--dir", "/nonexistent/x"]);
    assert_eq!(o.code, 4);
    assert!(
        o.stderr.contains("does not exist") && o.stderr.contains("--dir"),
        "{}",
        o.stderr
    );
}

fn search(t: &tempfile::TempDir, d: &str, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["search", "--dir", d, "--json", "-n", "0"];
    a.extend_from_slice(args);
    let o = run(t.path(), &a);
    assert_eq!(o.code, 3, "{:?}: {}", args, o.stderr);
    one_error_line(&o.stderr);
    o.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn search_filters() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let paths = |v: &[Value]| {
        v.iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(&search(&t, d, &["--status", "0"])), ["/boom/5"]);
    assert_eq!(paths(&search(&t, d, &["--errors"])), ["/boom/5"]);
    assert_eq!(search(&t, d, &["--status", "200"]).len(), 5);
    assert_eq!(search(&t, d, &["--method", "post"]).len(), 2);
    assert_eq!(search(&t, d, &["--endpoint", "USERS"]).len(), 2);
    assert_eq!(search(&t, d, &["--endpoint", "/users/*"]).len(), 2);
    assert_eq!(search(&t, d, &["--endpoint", "/u*"]).len(), 2);
    assert_eq!(search(&t, d, &["--endpoint", "/users"]).len(), 2);
    assert_eq!(
        paths(&search(&t, d, &["--dep-type", "db.query"])),
        ["/db-then-http"]
    );
    assert_eq!(search(&t, d, &["--dep-host", "auth.internal"]).len(), 2);
    assert_eq!(
        search(&t, d, &["--dep-host", "auth.internal:8443"]).len(),
        2
    );
    assert_eq!(search(&t, d, &["--dep-host", "127.0.0.1"]).len(), 4);
    assert_eq!(search(&t, d, &["--min-duration", "20"]).len(), 2);
    assert_eq!(search(&t, d, &["--service", "nope"]).len(), 0);
    assert_eq!(search(&t, d, &["--since", "2026-11-22T23:29:00Z"]).len(), 1);
    assert_eq!(search(&t, d, &["--until", "2026-11-22"]).len(), 0);
    let o = run(t.path(), &["search", "--dir", d, "--since", "yesterday"]);
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("RFC 3339"), "{}", o.stderr);
}

/// Issue #22: tags set in `serve` (kept in `DIR/.timetracer-notes.json`, never in a
/// cassette) are a search filter.
#[test]
fn search_by_tag() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let all = search(&t, d, &[]);
    let boom = all.iter().find(|e| e["path"] == "/boom/5").unwrap();
    let file = std::path::Path::new(boom["file"].as_str().unwrap());
    let rel = file
        .strip_prefix(&dir)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let before = std::fs::read(file).unwrap();
    timetracer::index::notes::set(&dir, &rel, &["Flaky".into()], "seen twice").unwrap();
    assert_eq!(
        std::fs::read(file).unwrap(),
        before,
        "the cassette is untouched"
    );
    let hits = search(&t, d, &["--tag", "FLAKY"]);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["path"], "/boom/5");
    assert_eq!(search(&t, d, &["--tag", "flaky", "--errors"]).len(), 1);
    assert_eq!(
        search(&t, d, &["--tag", "flaky", "--status", "200"]).len(),
        0
    );
    assert!(search(&t, d, &["--tag", "other"]).is_empty());
    // The store itself is never listed as a cassette.
    assert_eq!(search(&t, d, &[]).len(), all.len());
}

#[test]
fn show_every_format() {
    let (t, dir) = mixed();
    let day = dir.join("2026-11-22");
    for f in [
        day.join("GET__users_42__e92ca5c7.json.gz"),
        dir.join("POST__login_caf__e92ca5c9.json.zst"),
        day.join("GET__boom_5__90588dcc.json"),
    ] {
        let o = run(t.path(), &["show", f.to_str().unwrap(), "--events"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.contains("Events:"), "{}", o.stdout);
    }
    let o = run(t.path(), &["show", day.join(CORRUPT).to_str().unwrap()]);
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("not JSON"), "{}", o.stderr);
}

#[test]
fn validate_dir() {
    let (t, dir) = mixed();
    let o = run(t.path(), &["validate", dir.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("6 valid, 1 invalid"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!("{CORRUPT}: $: not JSON")),
        "{}",
        o.stdout
    );
    // A schema problem names its JSON path.
    let bad = t.path().join("bad.json");
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(cli_common::fixtures().join("ours/POST__login_caf__e92ca5c8.json")).unwrap(),
    )
    .unwrap();
    v["events"][0]["duration_ms"] = "slow".into();
    v["response"]["status"] = Value::Null;
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = run(t.path(), &["validate", bad.to_str().unwrap()]);
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains("$.events[0].duration_ms:"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("$.response.status:"), "{}", o.stdout);
}

#[test]
fn stats_and_n_plus_one() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let o = run(t.path(), &["stats", "--dir", d]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    one_error_line(&o.stderr);
    assert!(o.stdout.contains("6 cassettes"), "{}", o.stdout);
    assert!(o.stdout.contains("GET /users/{id}"), "{}", o.stdout);
    assert!(o.stdout.contains("GET /boom/{id}"), "{}", o.stdout);
    // Add a cassette whose request made the same query 4 times, one after the other, and the
    // same Redis GET (ids differing) 5 times sent together (a pipeline: not N+1), and BEGIN
    // 4 times (session-level: never N+1).
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(dir.join("2026-11-22/GET__db_then_http__a97386d6.json")).unwrap(),
    )
    .unwrap();
    let db = v["events"][0].clone();
    let mut evs = Vec::new();
    for i in 0..4 {
        let mut e = db.clone();
        e["eid"] = (i + 1).into();
        e["start_offset_ms"] = (f64::from(i) * 1.0).into();
        evs.push(e);
    }
    for i in 0..5 {
        evs.push(serde_json::json!({
            "eid": 5 + i, "type": "redis", "start_offset_ms": 10.0,
            "duration_ms": 1.0 + f64::from(i) * 0.1,
            "signature": {"lib": "redis", "method": "GET", "url": "redis://127.0.0.1:6379"},
            "db": {"command": "GET", "args": [format!("user:{i}:name")], "reply": "x"},
            "result": {},
        }));
    }
    for i in 0..4 {
        evs.push(serde_json::json!({
            "eid": 10 + i, "type": "db.query", "start_offset_ms": 20.0 + f64::from(i),
            "duration_ms": 0.5,
            "signature": {"lib": "postgres", "method": "BEGIN", "url": "postgres://127.0.0.1:5432"},
            "db": {"sql": "BEGIN", "command_tag": "BEGIN"},
            "result": {},
        }));
    }
    v["events"] = Value::Array(evs);
    v["session"]["id"] = "0000aaaa-0000-0000-0000-000000000000".into();
    std::fs::write(
        dir.join("GET__n1__0000aaaa.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    let o = run(t.path(), &["stats", "--dir", d, "--json"]);
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    let n1 = j["n_plus_one"].as_array().unwrap();
    assert_eq!(n1.len(), 1, "{j}");
    assert_eq!(n1[0]["max_repeats"], 4);
    assert_eq!(n1[0]["shape"], "db.query SELECT users");
    // Issue #22 item 5: a directory's stats come from its index (only new files are read) ...
    assert_eq!(j["source"], "index", "{j}");
    // ... and are the numbers reading every file gives: here the index cannot be used (its path
    // is a directory and the cache cannot be created), stderr says so, every file is read.
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!(".timetracer-index.sqlite3{f}")));
    }
    std::fs::create_dir(dir.join(".timetracer-index.sqlite3")).unwrap();
    let blocker = t.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let cache = blocker.join("cache");
    let o = run_env(
        t.path(),
        &["stats", "--dir", d, "--json"],
        &[("XDG_CACHE_HOME", cache.to_str().unwrap())],
    );
    assert!(
        o.stderr.contains("cannot be used") && o.stderr.contains("reading every cassette"),
        "{}",
        o.stderr
    );
    let files: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(files["source"], "files", "{files}");
    assert_eq!(files["cassettes"], j["cassettes"]);
    assert_eq!(files["groups"], j["groups"]);
    assert_eq!(files["n_plus_one"], j["n_plus_one"]);
    std::fs::remove_dir(dir.join(".timetracer-index.sqlite3")).unwrap();
    let o = run(t.path(), &["stats", "--dir", d, "--group-by", "dependency"]);
    assert!(
        o.stdout.contains("http.client GET auth.internal:8443"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("N+1 suspects"), "{}", o.stdout);
}

#[test]
fn clean_old() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("POST__login_caf__e92ca5c8.json")).unwrap())
            .unwrap();
    v["session"]["recorded_at"] = "2020-01-01T00:00:00.000000+00:00".into();
    std::fs::create_dir_all(dir.join("2020-01-01")).unwrap();
    let old = dir.join("2020-01-01/POST__old__11111111.json");
    std::fs::write(&old, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = run(
        t.path(),
        &["clean", "--dir", d, "--older-than", "365d", "--dry-run"],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stdout.contains("Would delete 1 cassettes"),
        "{}",
        o.stdout
    );
    assert!(old.exists());
    let o = run(t.path(), &["clean", "--dir", d, "--older-than", "52w"]);
    assert!(o.stdout.contains("Deleted 1 cassettes"), "{}", o.stdout);
    assert!(!old.exists() && !dir.join("2020-01-01").exists());
    assert!(
        dir.join("2026-11-22").join(CORRUPT).exists(),
        "unreadable files are never deleted"
    );
    let o = run(t.path(), &["clean", "--dir", d, "--older-than", "30 days"]);
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("e.g. 30d"), "{}", o.stderr);
}

#[test]
fn import_py_then_validate() {
    let (t, dir) = mixed();
    let out = t.path().join("imported");
    let o = run(
        t.path(),
        &[
            "import",
            "--from",
            "py",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    // The .json.gz is the same recording as a .json (same session id): written once.
    assert!(
        o.stdout.contains("Imported 3 cassettes") && o.stdout.contains("(1 skipped"),
        "{}",
        o.stdout
    );
    let o = run(t.path(), &["validate", "-q", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("3 valid, 0 invalid"));
    let o = run(
        t.path(),
        &[
            "search",
            "--dir",
            out.to_str().unwrap(),
            "--status",
            "0",
            "--json",
        ],
    );
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["schema_version"], "2.0");
    assert_eq!(v["path"], "/boom/5");
}

#[test]
fn config_provenance() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("timetracer.toml"),
        "dir = \"rec\"\n[s3]\nbucket = \"file-bucket\"\nprefix = \"p\"\n",
    )
    .unwrap();
    let o = run_env(
        t.path(),
        &["config"],
        &[("TIMETRACER_S3_BUCKET", "env-bucket")],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = |k: &str| {
        o.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap()
            .to_owned()
    };
    assert!(
        line("s3.bucket").contains("\"env-bucket\"")
            && line("s3.bucket").contains("# env TIMETRACER_S3_BUCKET"),
        "{}",
        o.stdout
    );
    assert!(line("s3.prefix").contains("# project file"), "{}", o.stdout);
    assert!(
        line("dir").contains("rec\"") && line("dir").contains("project file"),
        "{}",
        o.stdout
    );
    assert!(line("env").contains("# default"), "{}", o.stdout);
    let o = run_env(
        t.path(),
        &["config", "--json"],
        &[("TIMETRACER_COLOR", "never")],
    );
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["color"]["source"], "env TIMETRACER_COLOR");
    std::fs::write(t.path().join("timetracer.toml"), "bucket = \"x\"\n").unwrap();
    let o = run(t.path(), &["list"]);
    assert_eq!(o.code, 4);
    assert!(
        o.stderr.contains("unknown key `bucket`") && o.stderr.contains("s3.bucket"),
        "{}",
        o.stderr
    );
}

#[test]
fn completions_and_man() {
    let t = tempfile::tempdir().unwrap();
    for sh in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(t.path(), &["completions", sh]);
        assert_eq!(o.code, 0);
        assert!(
            o.stdout.contains("search") && o.stdout.contains("dep-host"),
            "{sh}"
        );
    }
    let o = run(t.path(), &["man"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.starts_with(".ie") || o.stdout.contains(".TH timetracer"),
        "{}",
        &o.stdout[..200]
    );
    let o = run(
        t.path(),
        &["man", "--out-dir", t.path().join("man").to_str().unwrap()],
    );
    assert_eq!(o.code, 0);
    assert!(t.path().join("man/timetracer-search.1").exists());
}

#[test]
fn color_only_when_asked() {
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let o = run(t.path(), &["list", "--dir", d]);
    assert!(!o.stdout.contains('\x1b'), "piped output is plain");
    let o = run(t.path(), &["list", "--dir", d, "--color", "always"]);
    assert!(o.stdout.contains("\x1b[31m[ERR]0"), "{}", o.stdout);
}
