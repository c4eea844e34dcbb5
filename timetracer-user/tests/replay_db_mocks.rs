//! The PostgreSQL, MySQL and Redis replay mocks against the real Python clients.
//!
//! The cassettes of `tests/fixtures/replay/` (recorded by `timetracer-agent record` from the
//! db test apps against real servers) are loaded into one [`Destination`] per recorded
//! server; each is served by its mock on a plain `127.0.0.1` listener (no BPF redirection:
//! the clients connect to the mock port directly). `replay_db_clients.py` then runs asyncpg,
//! psycopg2, psycopg 3, PyMySQL, redis.asyncio and redis-py through the same calls as the
//! recorded apps, plus one call with a changed parameter: the clients must get the recorded
//! rows, replies and server errors, and the changed call the protocol's error, journaled
//! with the differing field.
//!
//! The clients come from the apps' venv (`$TIMETRACER_VENV`, default `<repo>/.venv`; `cargo
//! xtask install` creates it). Without it the tests are skipped with a message, except when
//! `TIMETRACER_REQUIRE_PRIVILEGED=1` (CI), where they fail.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use timetracer::cassette::reader;
use timetracer::replay::ledger::{self, Destination, Journal, Miss, Protocol, RecordedCall};
use timetracer::replay::mock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[path = "../../tests/integration/src/prereq.rs"]
pub mod prereq;

/// The venv's Python, or `None` (skip, with the reason printed; a failure under
/// `TIMETRACER_REQUIRE_PRIVILEGED=1`) when there is none.
fn python() -> Option<PathBuf> {
    let python = prereq::venv(&repo()).join("bin/python");
    prereq::require(python.is_file().then_some(python.clone()), || {
        format!(
            "replay_db_mocks: {} not found: no Python venv with the database clients (run \
             `cargo xtask install`, or point TIMETRACER_VENV at a venv with \
             tests/apps/requirements.txt installed)",
            python.display()
        )
    })
}

/// One destination per recorded server of the cassettes in `dir`, as replay builds them:
/// calls of each `(protocol, remote)` in file order, with the recorded session facts.
fn destinations(dir: &str, journal: &Arc<Journal>) -> BTreeMap<(Protocol, String), Destination> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/replay").join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out: BTreeMap<(Protocol, String), Destination> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let c = reader::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for e in c.events {
            let Some(p) = ledger::mocked_protocol(&e).filter(|p| *p != Protocol::Http) else {
                continue;
            };
            let remote = e
                .connection
                .as_ref()
                .and_then(|c| c.remote.clone())
                .expect("remote");
            let d = out.entry((p, remote.clone())).or_insert_with(|| {
                Destination::new(remote.parse().expect("addr"), p, journal.clone())
            });
            d.push(RecordedCall::new(i, p, e).expect("wire"));
        }
        for s in c.db_sessions {
            let Some(p) = Protocol::parse(&s.protocol) else {
                continue;
            };
            if let Some(d) = out.get_mut(&(p, s.remote.clone().unwrap_or_default()))
                && !d.facts.contains(&s.facts)
            {
                d.facts.push(s.facts);
            }
        }
    }
    out
}

/// Serves `dest` with its mock on 127.0.0.1; returns the port.
async fn serve(dest: Destination) -> u16 {
    let dest = Arc::new(dest);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let d = dest.clone();
            tokio::spawn(async move {
                let r = match d.protocol {
                    Protocol::Postgres => mock::postgres::serve(d, sock).await,
                    Protocol::Mysql => mock::mysql::serve(d, sock).await,
                    Protocol::Redis => mock::redis::serve(d, sock).await,
                    Protocol::Http | Protocol::Mongodb => Ok(()),
                };
                if let Err(e) = r {
                    eprintln!("mock connection: {e:#}");
                }
            });
        }
    });
    port
}

/// Runs `scenario` of the clients script against the mock of the only destination of
/// `protocol` in `dir`; returns the clients' results by call label, and the journal.
async fn run(
    dir: &str,
    protocol: Protocol,
    scenario: &str,
) -> Option<(BTreeMap<String, Value>, Vec<Miss>)> {
    let python = python()?;
    let journal = Arc::new(Journal::default());
    let mut dests: Vec<Destination> = destinations(dir, &journal)
        .into_iter()
        .filter(|((p, _), _)| *p == protocol)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(dests.len(), 1, "{dir}: one {protocol} server recorded");
    let port = serve(dests.remove(0)).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay_db_clients.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(scenario)
        .arg(port.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("{scenario}: the client did not finish within 120 s"))
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario}: client failed: {stderr}\n{stdout}"
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{scenario}: {e}: {stdout}\n{stderr}"));
    let results = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["call"].as_str().expect("label").to_owned(), r.clone()))
        .collect();
    Some((results, journal.misses()))
}

fn check(results: &BTreeMap<String, Value>, label: &str, key: &str, want: &Value) {
    let got = &results
        .get(label)
        .unwrap_or_else(|| panic!("no result {label}"))[key];
    assert_eq!(got, want, "{label}: {}", results[label]);
}

/// The one miss of a scenario: the changed call, with its field.
fn only_miss(misses: &[Miss], field: &str, expected: &str, actual: &str) {
    assert_eq!(misses.len(), 1, "{misses:#?}");
    let m = &misses[0];
    assert_eq!(m.field.as_deref(), Some(field), "{m:#?}");
    assert_eq!(m.expected_value.as_deref(), Some(expected), "{m:#?}");
    assert_eq!(m.actual_value.as_deref(), Some(actual), "{m:#?}");
}

fn error_text(results: &BTreeMap<String, Value>, label: &str) -> String {
    let r = &results[label];
    r["error"]["message"]
        .as_str()
        .or_else(|| r["reply"]["error"].as_str())
        .unwrap_or_else(|| panic!("{label}: no error: {r}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_against_the_postgres_mock() {
    let Some((r, misses)) = run("fastapi", Protocol::Postgres, "asyncpg").await else {
        return;
    };
    check(&r, "select1", "rows", &json!([[1, "ada"]]));
    check(
        &r,
        "select_range",
        "rows",
        &json!([[1, "ada"], [2, "bob"], [3, "cy"]]),
    );
    check(&r, "insert", "rows", &json!([["first"]]));
    check(
        &r,
        "missing_table",
        "error",
        &json!({"sqlstate": "42P01",
        "message": "relation \"no_such_table\" does not exist"}),
    );
    check(
        &r,
        "div_zero",
        "error",
        &json!({"sqlstate": "22012", "message": "division by zero"}),
    );
    check(&r, "mixed_name", "rows", &json!([["bob"]]));
    check(&r, "mixed_count", "rows", &json!([[3]]));
    check(&r, "select3", "rows", &json!([[3, "cy"]]));
    assert_eq!(r["changed"]["error"]["sqlstate"], "XX000");
    let msg = error_text(&r, "changed");
    assert!(
        msg.contains("timetracer replay: no recorded call matches")
            && msg.contains("params[0]: expected 3, got 7"),
        "{msg}"
    );
    // Both recorded executions of the statement are as close; the first in load order
    // (`pg_select_cached.json`, id 3) is named.
    only_miss(&misses, "params[0]", "3", "7");
    assert!(misses[0].call.ends_with("[7]"), "{}", misses[0].call);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_against_the_postgres_mock() {
    let Some((r, misses)) = run("flask", Protocol::Postgres, "psycopg2").await else {
        return;
    };
    check(&r, "select1", "rows", &json!([[1, "ada"]]));
    check(&r, "select_in", "rows", &json!([[1, "ada"], [2, "bob"]]));
    assert_eq!(r["missing_table"]["error"]["sqlstate"], "42P01");
    assert_eq!(r["duplicate"]["error"]["sqlstate"], "23505");
    assert_eq!(r["changed"]["error"]["sqlstate"], "XX000");
    // psycopg2 interpolates parameters into the SQL text: the SQL differs.
    only_miss(
        &misses,
        "sql",
        "SELECT id, name FROM items WHERE id = 1",
        "SELECT id, name FROM items WHERE id = 2",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_against_the_postgres_mock() {
    let Some((r, misses)) = run("flask", Protocol::Postgres, "psycopg3").await else {
        return;
    };
    check(&r, "select2", "rows", &json!([[2, "bob"]]));
    check(&r, "insert", "rows", &json!([["psycopg3"]]));
    check(&r, "begin", "rows", &json!([]));
    check(&r, "commit", "rows", &json!([]));
    assert_eq!(r["div_zero"]["error"]["sqlstate"], "22012");
    assert_eq!(r["changed"]["error"]["sqlstate"], "XX000");
    assert!(error_text(&r, "changed").contains("params[0]: expected 2, got 5"));
    only_miss(&misses, "params[0]", "2", "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_against_the_mysql_mock() {
    let Some((r, misses)) = run("flask", Protocol::Mysql, "pymysql").await else {
        return;
    };
    check(&r, "select1", "rows", &json!([[1, "ada"]]));
    check(
        &r,
        "select_range",
        "rows",
        &json!([[1, "ada"], [2, "bob"], [3, "cy"]]),
    );
    check(&r, "insert", "rows", &json!([]));
    assert_eq!(r["missing_table"]["error"]["code"], 1146);
    assert_eq!(r["duplicate"]["error"]["code"], 1062);
    assert_eq!(r["changed"]["error"]["code"], 1105);
    assert!(error_text(&r, "changed").contains("timetracer replay: no recorded call matches"));
    only_miss(
        &misses,
        "sql",
        "SELECT id, name FROM items WHERE id = 1",
        "SELECT id, name FROM items WHERE id = 2",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_asyncio_against_the_redis_mock() {
    let Some((r, misses)) = run("fastapi", Protocol::Redis, "redis_async").await else {
        return;
    };
    check(&r, "set", "reply", &json!(true));
    check(&r, "get", "reply", &json!("value-a"));
    check(&r, "get_missing", "reply", &Value::Null);
    check(
        &r,
        "incr",
        "reply",
        &json!({"error": "value is not an integer or out of range"}),
    );
    check(&r, "del", "reply", &json!(1));
    check(
        &r,
        "pipeline",
        "reply",
        &json!([true, 2, "2", 2, ["a", "b"], 2]),
    );
    check(&r, "ping", "reply", &json!(true));
    assert!(error_text(&r, "changed").contains("args[0]: expected \"fa:a\", got \"fa:zz\""));
    only_miss(&misses, "args[0]", "\"fa:a\"", "\"fa:zz\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_against_the_redis_mock() {
    let Some((r, misses)) = run("flask", Protocol::Redis, "redis_sync").await else {
        return;
    };
    check(&r, "pipeline", "reply", &json!([true, 2, "2", 1]));
    check(
        &r,
        "multi",
        "reply",
        &json!([true, "v", {"error": "value is not an integer or out of range"}, 1]),
    );
    check(&r, "set", "reply", &json!(true));
    check(
        &r,
        "incr",
        "reply",
        &json!({"error": "value is not an integer or out of range"}),
    );
    check(&r, "del", "reply", &json!(1));
    only_miss(&misses, "args[1]", "\"not-a-number\"", "\"a-number\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_resp3_against_a_resp2_recording() {
    // `HELLO 3 AUTH default …` is in no recording (the app used RESP2): accepted and answered
    // from the recorded facts / defaults, and journaled with the reason (RESP2 replies such
    // as `$-1` do not parse as RESP3 in redis-py). Replies valid in both still work.
    let Some((r, misses)) = run("fastapi", Protocol::Redis, "redis_resp3").await else {
        return;
    };
    check(&r, "set", "reply", &json!(true));
    check(&r, "get", "reply", &json!("value-a"));
    check(&r, "ping", "reply", &json!(true));
    assert_eq!(r["hello"]["reply"]["proto"], 3, "{}", r["hello"]);
    assert!(!misses.is_empty());
    assert!(
        misses.iter().all(|m| m.call.starts_with("HELLO")
            && m.reason.as_deref().is_some_and(|r| r.contains("RESP3"))),
        "{misses:#?}"
    );
}

/// The committed fixtures hold no database password: neither as text nor inside base64 wire
/// bytes (any alignment), as `tests/integration/src/tests/db.rs` checks for fresh recordings.
#[test]
fn fixtures_hold_no_password() {
    use base64::Engine as _;
    // `tests/integration/src/dbservers.rs` `APP_PASSWORD`, used to record the fixtures.
    let password = "Tt-db-S3cret-7e5d";
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut needles = vec![password.as_bytes().to_vec()];
    for pad in 0..3 {
        let enc = b64.encode([vec![b'x'; pad], password.as_bytes().to_vec()].concat());
        let (from, to) = (pad.div_ceil(3) * 4, (pad + password.len()) / 3 * 4);
        needles.push(enc.as_bytes()[from..to].to_vec());
    }
    let mut checked = 0;
    for dir in ["fastapi", "flask"] {
        for e in std::fs::read_dir(repo().join("tests/fixtures/replay").join(dir)).expect("dir") {
            let path = e.expect("entry").path();
            let data = std::fs::read(&path).expect("read");
            for n in &needles {
                assert!(
                    !data.windows(n.len()).any(|w| w == n.as_slice()),
                    "{} holds the password ({})",
                    path.display(),
                    String::from_utf8_lossy(n)
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10);
}
