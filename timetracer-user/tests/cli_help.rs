//! Snapshot tests of `--help` for every command and of the examples in `docs/cli.md`.
//!
//! Regenerate with `TIMETRACER_BLESS=1 cargo test -p timetracer-user --test cli_help`.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
use std::path::{Path, PathBuf};

use cli_common::{repo, run_env};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["list"],
    &["show"],
    &["search"],
    &["index"],
    &["watch"],
    &["diff"],
    &["validate"],
    &["clean"],
    &["stats"],
    &["export"],
    &["import"],
    &["config"],
    &["s3"],
    &["s3", "upload"],
    &["s3", "download"],
    &["s3", "list"],
    &["s3", "sync"],
    &["completions"],
    &["man"],
];

fn snap_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help")
}

fn check(name: &str, actual: &str, failures: &mut Vec<String>) {
    let path = snap_dir().join(name);
    if std::env::var_os("TIMETRACER_BLESS").is_some() {
        std::fs::create_dir_all(snap_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
        )),
        Err(_) => failures.push(format!("{name}: no snapshot (run with TIMETRACER_BLESS=1)")),
    }
}

#[test]
fn help_snapshots() {
    let t = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let o = run_env(t.path(), &args, &[]);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        if !cmd.is_empty() {
            assert!(
                o.stdout.contains("Examples:"),
                "{args:?} has no examples:\n{}",
                o.stdout
            );
        }
        let name = if cmd.is_empty() {
            "timetracer.txt".to_owned()
        } else {
            format!("{}.txt", cmd.join("-"))
        };
        check(&name, &o.stdout, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs each `$ timetracer ...` block of docs/cli.md (in the repo root, where
/// `tests/fixtures/cassettes` is) and compares with the output written under it.
#[test]
fn docs_examples() {
    let doc_path = repo().join("docs/cli.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let mut blocks: Vec<(String, String, usize)> = Vec::new();
    let mut in_block = false;
    let mut cur: Option<(String, String, usize)> = None;
    for (n, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```console") {
            in_block = true;
            continue;
        }
        if in_block && line.trim_start().starts_with("```") {
            in_block = false;
            blocks.extend(cur.take());
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            blocks.extend(cur.take());
            cur = Some((cmd.to_owned(), String::new(), n + 1));
        } else if let Some((_, out, _)) = cur.as_mut() {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(blocks.len() >= 5, "docs/cli.md has too few examples");
    let bless = std::env::var_os("TIMETRACER_BLESS").is_some();
    let mut new_doc = doc.clone();
    let mut failures = Vec::new();
    // Work on a copy of the fixtures so the index file is not written into the repo.
    let t = tempfile::tempdir().unwrap();
    let work = t.path();
    std::fs::create_dir_all(work.join("tests/fixtures")).unwrap();
    let copy = std::process::Command::new("cp")
        .args([
            "-r",
            repo().join("tests/fixtures/cassettes").to_str().unwrap(),
            work.join("tests/fixtures/").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copy.success());
    for (cmd, expected, line) in &blocks {
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        assert_eq!(
            cmd.split_whitespace().next(),
            Some("timetracer"),
            "line {line}"
        );
        let o = run_env(work, &args, &[]);
        let mut actual = o.stdout.clone();
        if o.code != 0 {
            actual.push_str(&format!("[exit {}]\n", o.code));
        }
        if &actual != expected {
            if bless {
                new_doc = new_doc.replacen(
                    &format!("$ {cmd}\n{expected}"),
                    &format!("$ {cmd}\n{actual}"),
                    1,
                );
            } else {
                failures.push(format!(
                    "docs/cli.md:{line}: `{cmd}`\n--- documented\n{expected}--- actual\n{actual}"
                ));
            }
        }
    }
    if bless && new_doc != doc {
        std::fs::write(&doc_path, new_doc).unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
