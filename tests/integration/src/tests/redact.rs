//! Issue 19, item 4 end to end: redaction of every database protocol before disk.
//!
//! `secrets_app.py` (Flask/gunicorn gthread) sends a password and a token to PostgreSQL
//! (psycopg2: literals) and MariaDB (PyMySQL: literals), stores them in rows and reads them
//! back, and keeps a session token in Redis (a `session:*` key and a hash's `password`
//! field); `secrets_async_app.py` (FastAPI/uvicorn) does the same with asyncpg (bound
//! parameters, binary rows) and redis.asyncio. Recorded with the default policy:
//!
//! - neither secret appears in any file of the cassette directory: raw, base64 (at the three
//!   alignments) or hex;
//! - the calls that carried them say so (`db.redacted`), `policies.redaction` lists the Redis
//!   globs and the values applied per protocol;
//! - the recording still replays with exit 0, its calls "matched (redacted)".

use std::fs;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use super::db::{DbApp, DbRun};
use crate::require_root;
use crate::util::{self, HttpConn};

const PASSWORD: &str = "Pw-7Qx2Lm9Rz4Kv8Nc1";
const TOKEN: &str = "Tok-5Hd3Wy6Pb0Js2Fg7";

/// Every form in which `secret` could sit in a file: raw, hex (both cases), and base64 at
/// each of the three byte alignments (the characters that depend on the secret only).
fn encodings(secret: &str) -> Vec<(String, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = vec![
        ("raw".to_owned(), secret.as_bytes().to_vec()),
        (
            "hex".to_owned(),
            secret
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        ),
        (
            "HEX".to_owned(),
            secret
                .bytes()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
                .into_bytes(),
        ),
    ];
    for k in 0..3 {
        let mut data = vec![0u8; k];
        data.extend_from_slice(secret.as_bytes());
        let e = b64.encode(&data);
        // Skip the group holding the padding bytes, and the last (partial) group.
        let from = if k == 0 { 0 } else { 4 };
        let core = &e[from..e.len() - 4];
        out.push((format!("base64@{k}"), core.as_bytes().to_vec()));
    }
    out
}

/// Where in the files under `dir` a form of a secret appears.
fn leaks(dir: &Path, secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // Cassettes are recorded uncompressed (no `--compress`): the bytes are the JSON.
            let bytes = fs::read(&p).expect("read cassette file");
            for s in secrets {
                for (how, needle) in encodings(s) {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                        found.push(format!("{s:?} ({how}) in {}", p.display()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn secrets_never_reach_disk_psycopg2_pymysql_redis() {
    let paths = require_root!();
    check(
        paths,
        DbApp::Secrets,
        "redact_sync",
        &["postgres", "mysql", "redis"],
    );
}

#[test]
fn secrets_never_reach_disk_asyncpg_redis_asyncio() {
    let paths = require_root!();
    check(
        paths,
        DbApp::SecretsAsync,
        "redact_async",
        &["postgres", "redis"],
    );
}

/// Records two requests of `app`, checks the cassettes (no secret in any form, `db.redacted`
/// on calls of each of `libs`, `policies.redaction`), then replays them without servers.
fn check(paths: util::Paths, app: DbApp, name: &str, libs: &[&str]) {
    let extra = [("SECRET_PASSWORD", PASSWORD), ("SECRET_TOKEN", TOKEN)];
    let Some(mut run) = DbRun::start_with_env(paths, app, name, &extra) else {
        return;
    };
    let mut conn = HttpConn::connect(run.port).expect("connect to the app");
    let mut bodies = Vec::new();
    for user in ["alice", "bob"] {
        let target = format!("/signup?user={user}");
        let resp = conn
            .request("GET", &target, None)
            .unwrap_or_else(|e| run.fail(&[format!("GET {target}: {e}")], None));
        let body: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        if resp.status != 200 || body["session_found"] != true || body["hit"] != 1 {
            run.fail(
                &[format!(
                    "GET {target}: {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                )],
                None,
            );
        }
        bodies.push(body);
    }
    drop(conn);
    run.stop_agent();

    let dir = util::load_cassettes(&run.out);
    let mut errors = Vec::new();
    if dir.cassettes.len() != 2 {
        errors.push(format!("{} cassettes (want 2)", dir.cassettes.len()));
    }
    errors.extend(leaks(&run.out, &[PASSWORD, TOKEN]));

    // What the hooks say they did, per protocol, and the cassette's policies.
    for c in &dir.cassettes {
        let events = c.json["events"].as_array().cloned().unwrap_or_default();
        let redacted = |lib: &str| {
            events
                .iter()
                .filter(|e| e["signature"]["lib"] == lib && e["db"]["redacted"].is_object())
                .count()
        };
        for lib in libs {
            if redacted(lib) == 0 {
                errors.push(format!(
                    "{}: no {lib} call has db.redacted",
                    c.path.display()
                ));
            }
        }
        let pol = &c.json["policies"]["redaction"];
        let by = &pol["applied_by_protocol"];
        for lib in libs {
            if by[lib].as_u64().unwrap_or(0) == 0 {
                errors.push(format!(
                    "{}: policies.redaction.applied_by_protocol.{lib} = {} ({pol})",
                    c.path.display(),
                    by[lib]
                ));
            }
        }
        if !pol["redis_key_patterns"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "*session*"))
        {
            errors.push(format!(
                "{}: policies.redaction.redis_key_patterns = {}",
                c.path.display(),
                pol["redis_key_patterns"]
            ));
        }
    }
    if !errors.is_empty() {
        run.fail(&errors, Some(&dir));
    }

    // Replay without the servers: every call matches, those with redacted values "matched
    // (redacted)", and the app answers exactly as recorded.
    let mut env = run.stop_servers();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let r = run.replay(&env, &[], &[]);
    r.assert_all_same(2);
    let report = r.verdict["report"].as_str().unwrap_or_default();
    for q in r.verdict["requests"].as_array().into_iter().flatten() {
        assert!(
            q["dependencies"]["redacted"].as_u64().unwrap_or(0) >= libs.len() as u64,
            "calls recorded with redacted values are counted: {q}\n{}",
            r.explain()
        );
    }
    assert!(
        report.contains("matched (redacted)"),
        "the verdict says so:\n{}",
        r.explain()
    );
    assert_eq!(bodies.len(), 2);
}
