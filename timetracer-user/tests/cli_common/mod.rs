//! Helpers shared by the `cli_*` tests: run the `timetracer` binary in a clean environment and
//! build a directory mixing every kind of file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod watch;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/cassettes")
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `timetracer ARGS` in `cwd` with no TIMETRACER_* variables and an empty HOME.
pub fn run_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let home = cwd.join(".test-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_timetracer"));
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIMETRACER_")
            || k.starts_with("AWS_")
            || k == "NO_COLOR"
            || k == "XDG_CONFIG_HOME"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", &home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run timetracer");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn run(cwd: &Path, args: &[&str]) -> Out {
    run_env(cwd, args, &[])
}

/// A directory with: our 2.0 cassette (plain and zstd), the three Python 1.0 cassettes (one
/// also gzipped), a truncated cassette, the Python tool's `index.json`, a text file and a
/// leftover `.tmp-` file. Returns (tempdir, cassette dir).
pub fn mixed() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cassettes");
    let day = dir.join("2026-11-22");
    std::fs::create_dir_all(&day).unwrap();
    let fx = fixtures();
    for f in [
        "GET__users_42__e92ca5c8.json",
        "GET__boom_5__90588dcc.json",
        "GET__db_then_http__a97386d6.json",
    ] {
        std::fs::copy(fx.join("py").join(f), day.join(f)).unwrap();
    }
    let ours = fx.join("ours/POST__login_caf__e92ca5c8.json");
    std::fs::copy(&ours, dir.join("POST__login_caf__e92ca5c8.json")).unwrap();
    let bytes = std::fs::read(&ours).unwrap();
    std::fs::write(
        dir.join("POST__login_caf__e92ca5c9.json.zst"),
        zstd::encode_all(&bytes[..], 3).unwrap(),
    )
    .unwrap();
    let py = std::fs::read(fx.join("py/GET__users_42__e92ca5c8.json")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&py).unwrap();
    std::fs::write(
        day.join("GET__users_42__e92ca5c7.json.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    std::fs::write(day.join("GET__corrupt__deadbeef.json"), &bytes[..300]).unwrap();
    std::fs::write(
        dir.join("index.json"),
        br#"{"indexed_at":"x","entries":[]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a cassette").unwrap();
    std::fs::write(day.join(".tmp-123-GET__x__00000000.json"), b"{").unwrap();
    (t, dir)
}

pub const CORRUPT: &str = "GET__corrupt__deadbeef.json";
