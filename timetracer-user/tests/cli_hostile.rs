//! Hostile cassettes (issue #24): a cassette is untrusted input to every command that reads
//! one. Each hostile file, alone in a directory and given as a file, to `show`, `list`,
//! `search`, `stats`, `diff`, `export`, `validate`, `timeline`, `dashboard`, `index`,
//! `import` and replay's reader: a clear error naming the file and a non-zero exit, never a
//! panic, never a hang, and memory bounded (the decompression cap, `MAX_CASSETTE_BYTES`).
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cli_common::fixtures;

/// Peak resident memory allowed to one command on one hostile file: the reader's cap
/// (256 MiB of decompressed bytes, held in one growing buffer) with headroom, far below what
/// an uncapped reader takes on the bomb below (1 GiB of decompressed bytes). The child's
/// `ru_maxrss` is an upper bound: Linux carries the spawning process's high-water mark into a
/// child started with vfork + exec (`exec_mmap` → `setmax_mm_hiwater_rss`), so it includes
/// this test process's own peak.
const MAX_RSS_KIB: i64 = 768 * 1024;
/// Wall time allowed to one command on one hostile file.
const MAX_SECS: u64 = 60;

/// A valid cassette to mutate (ours, schema 2.0).
fn good() -> Vec<u8> {
    std::fs::read(fixtures().join("ours/POST__login_caf__e92ca5c8.json")).unwrap()
}

fn good_json() -> serde_json::Value {
    serde_json::from_slice(&good()).unwrap()
}

/// The hostile files: (file name, bytes, must it be rejected).
fn hostile() -> Vec<(&'static str, Vec<u8>, bool)> {
    let g = good();
    let mut v: Vec<(&str, Vec<u8>, bool)> = Vec::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&g).unwrap();
    let gz = gz.finish().unwrap();
    v.push((
        "GET__tgz__00000001.json.gz",
        gz[..gz.len() / 2].to_vec(),
        true,
    ));
    let zst = zstd::encode_all(&g[..], 3).unwrap();
    v.push((
        "GET__tzst__00000002.json.zst",
        zst[..zst.len() / 2].to_vec(),
        true,
    ));
    // A zstd bomb: 1 GiB of spaces in about 40 KiB.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    let mb = vec![b' '; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&mb).unwrap();
    }
    v.push(("GET__bomb__00000003.json.zst", enc.finish().unwrap(), true));
    // Nesting far past serde_json's recursion limit.
    let mut deep = br#"{"schema_version":"2.0","request":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.push(b'}');
    v.push(("GET__deep__00000004.json", deep, true));
    // Wrong types: the request is a number, the events a string.
    let mut w = good_json();
    w["request"] = serde_json::json!(5);
    w["events"] = serde_json::json!("none");
    v.push((
        "GET__types__00000005.json",
        serde_json::to_vec(&w).unwrap(),
        true,
    ));
    let mut w = good_json();
    w["schema_version"] = serde_json::json!("9.0");
    v.push((
        "GET__version__00000006.json",
        serde_json::to_vec(&w).unwrap(),
        true,
    ));
    let mut w = good_json();
    w["schema_version"] = serde_json::json!(2);
    v.push((
        "GET__vnum__00000007.json",
        serde_json::to_vec(&w).unwrap(),
        true,
    ));
    // NUL bytes in the JSON text.
    let mut nul = g.clone();
    nul.splice(10..10, [0u8; 16]);
    v.push(("GET__nul__00000008.json", nul, true));
    v.push(("GET__empty__00000009.json", Vec::new(), true));
    v.push((
        "GET__binary__0000000a.json",
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        true,
    ));
    // Readable, but hostile inside: huge strings, NULs in strings, bad base64 bodies and wire
    // bytes, HTML/JS in the fields: every command must cope (exit 0 or a clear error).
    let mut w = good_json();
    let huge = "A".repeat(16 << 20);
    w["request"]["path"] = serde_json::json!(format!("/{huge}"));
    w["response"]["headers"]["x-huge"] = serde_json::json!(huge);
    v.push((
        "GET__huge__0000000b.json",
        serde_json::to_vec(&w).unwrap(),
        false,
    ));
    let mut w = good_json();
    w["request"]["path"] = serde_json::json!("/a\u{0}b<script>alert(1)</script>");
    w["request"]["body"] = serde_json::json!({"_captured": true, "encoding": "base64", "data": "!!!not base64***", "size": 12});
    w["response"]["body"] =
        serde_json::json!({"_captured": true, "encoding": "base64", "data": "%%%", "size": 3});
    if let Some(evs) = w["events"].as_array_mut() {
        for e in evs {
            e["wire"] = serde_json::json!({"request_b64": "@@not base64@@", "response_b64": "=", "truncated": false});
        }
    }
    v.push((
        "GET__b64__0000000c.json",
        serde_json::to_vec(&w).unwrap(),
        false,
    ));
    v
}

struct Out {
    code: i32,
    /// stdout and stderr.
    stderr: String,
    rss_kib: i64,
    secs: f64,
}

/// Runs `bin ARGS` in `cwd` in a clean environment, with the child's peak RSS.
fn run(bin: &str, cwd: &Path, args: &[&str]) -> Out {
    let home = cwd.join(".test-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(cwd).env("HOME", &home);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIMETRACER_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Both drained while it runs (a full pipe would block it); only the start is kept.
    let keep = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut r = r;
            let _ = std::io::copy(&mut (&mut r).take(1 << 20), &mut v);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out_reader = keep(Box::new(stdout));
    let reader = keep(Box::new(stderr));
    let deadline = start + Duration::from_secs(MAX_SECS);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // wait4, not `Child::wait`: it gives this child's own peak RSS.
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our unwaited child; status and ru are ours to write.
        let r = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timetracer {args:?} took more than {MAX_SECS} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    // Already reaped by wait4: this only tells `Child` so (it returns ECHILD).
    let _ = child.wait();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Out {
        code,
        stderr: reader.join().unwrap() + &out_reader.join().unwrap(),
        rss_kib: ru.ru_maxrss,
        secs,
    }
}

fn cli() -> &'static str {
    env!("CARGO_BIN_EXE_timetracer")
}

#[test]
fn every_reading_command_survives_every_hostile_cassette() {
    let t = tempfile::tempdir().unwrap();
    let good_path = t.path().join("POST__login_caf__e92ca5c8.json");
    std::fs::write(&good_path, good()).unwrap();
    let good_s = good_path.to_str().unwrap().to_owned();
    let mut failures = Vec::new();
    for (name, bytes, reject) in hostile() {
        let dir = t.path().join(name.replace('.', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        let file: PathBuf = dir.join(name);
        std::fs::write(&file, &bytes).unwrap();
        let f = file.to_str().unwrap();
        let d = dir.to_str().unwrap();
        let out = t.path().join("out");
        let o = out.to_str().unwrap();
        let html = t.path().join("out.html");
        let h = html.to_str().unwrap();
        let cases: Vec<Vec<&str>> = vec![
            vec!["show", f],
            vec!["show", f, "--events"],
            vec!["list", "--dir", d],
            vec!["search", "--dir", d, "--json"],
            vec!["stats", "--dir", d],
            vec!["index", "--dir", d, "--rebuild"],
            vec!["diff", "--a", f, "--b", &good_s],
            vec!["diff", "--a", &good_s, "--b", f],
            vec!["export", "--to", "har", f],
            vec!["export", "--to", "curl", f],
            vec!["validate", f],
            vec!["timeline", f, "--out", h],
            vec!["dashboard", "--dir", d, "--out", o],
            vec!["import", "--from", "py", d, "--out", o],
        ];
        for args in cases {
            let r = run(cli(), t.path(), &args);
            let what = format!("timetracer {} on {name}", args.join(" "));
            if r.code == 101 || r.stderr.contains("panicked") {
                failures.push(format!("{what}: PANIC\n{}", r.stderr));
                continue;
            }
            if r.rss_kib > MAX_RSS_KIB {
                failures.push(format!("{what}: peak RSS {} KiB", r.rss_kib));
            }
            let names_file = r.stderr.contains(name);
            if reject && (r.code == 0 || !names_file) {
                failures.push(format!(
                    "{what}: exit {} without an error naming the file:\n{}",
                    r.code, r.stderr
                ));
            }
            // `diff` exits 1 when the cassettes differ, as diff(1) does.
            let differ = args[0] == "diff" && r.code == 1;
            if !reject && r.code != 0 && !differ && !names_file {
                failures.push(format!(
                    "{what}: exit {} with an error that does not name the file:\n{}",
                    r.code, r.stderr
                ));
            }
            eprintln!(
                "{what}: exit {} in {:.2} s, peak RSS {} MiB",
                r.code,
                r.secs,
                r.rss_kib / 1024
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Replay's reader (`replay::plan::load_inputs`, what `timetracer-agent replay` runs before
/// anything else) on each hostile file: an error naming the file for the malformed ones, never
/// a panic.
#[test]
fn replay_reader_rejects_hostile_cassettes() {
    let t = tempfile::tempdir().unwrap();
    for (name, bytes, reject) in hostile() {
        let file = t.path().join(name);
        std::fs::write(&file, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| {
            timetracer::replay::plan::load_inputs(std::slice::from_ref(&file))
        });
        match r {
            Err(_) => panic!("replay's reader panicked on {name}"),
            Ok(Err(e)) => assert!(
                format!("{e:#}").contains(name),
                "{name}: the error does not name the file: {e:#}"
            ),
            Ok(Ok(_)) => assert!(!reject, "replay's reader accepted {name}"),
        }
    }
}
