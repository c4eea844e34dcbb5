//! Issue 26, item 1: what an app does before its first request (pools opened at import, an
//! ORM's first-connect introspection, a lifespan's warm-up, each gunicorn worker's own boot)
//! is recorded per process as a startup cassette (`.startup/`), and replay answers it.
//!
//! Real PostgreSQL, MariaDB and Redis servers ([`crate::dbservers`]); unmodified apps
//! (`tests/apps/startup_flask_app.py` under gunicorn with 2 workers, and
//! `startup_fastapi_app.py` under uvicorn) recorded with `timetracer-agent record`; every
//! server stopped; replay of the directory and of one cassette alone must exit 0 with every
//! request the same. Each response carries what the startup calls returned, so a startup call
//! answered wrongly changes every response, and one not answered kills the worker.

use serde_json::Value;

use super::db::{DbApp, DbRun};
use crate::require_root;
use crate::util::{self, Cassette, HttpConn};

/// What a startup cassette's event did, in one line (SQL text or Redis command).
fn call_text(e: &Value) -> String {
    let db = &e["db"];
    match db["sql"].as_str() {
        Some(sql) => sql.to_owned(),
        None => format!("{} {}", db["command"].as_str().unwrap_or(""), db["args"]),
    }
}

/// How the app is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `timetracer-agent record -- APP`: the startup is seen and kept.
    Record,
    /// `timetracer-agent attach --pid` once the app has started (opening its connections
    /// but reading no data at startup, `STARTUP_WARM=connect`): replay answers what the app
    /// sends when it connects by rule, and lists it (issue #26 item 2).
    Attach,
}

/// Records `requests` GETs of `/item` on fresh connections (so both workers serve some),
/// checks the startup cassettes (`per_process` lines in each, `processes` of them at least),
/// then replays the directory and one cassette alone with every server stopped. Under
/// [`Mode::Attach`] there is no startup cassette, and the verdict lists the calls answered by
/// rule, among them every one of `per_process`.
fn record_and_replay(app: DbApp, mode: Mode, name: &str, processes: usize, per_process: &[&str]) {
    let paths = require_root!();
    // gunicorn listens before its workers have imported the app.
    let ready = (
        "timetracer-test: startup complete",
        if app == DbApp::StartupFlask {
            processes
        } else {
            0
        },
    );
    let run = match mode {
        Mode::Record => DbRun::start(paths.clone(), app, name).map(|mut run| {
            run.wait_for_lines(ready.0, ready.1);
            run
        }),
        Mode::Attach => DbRun::start_attached(
            paths.clone(),
            app,
            name,
            &[("STARTUP_WARM", "connect")],
            ready,
        ),
    };
    let Some(mut run) = run else {
        return;
    };
    let requests = 6;
    let mut errs = Vec::new();
    for i in 0..requests {
        let target = format!("/item?id={}&req=s{i}", 1 + i % 2);
        let mut conn = HttpConn::connect(run.port).expect("connect to app");
        match conn.request("GET", &target, None) {
            Ok(r) if r.status == 200 && String::from_utf8_lossy(&r.body).contains("\"boot\"") => {}
            Ok(r) => errs.push(format!(
                "{target}: {} {}",
                r.status,
                util::tail(&String::from_utf8_lossy(&r.body), 5)
            )),
            Err(e) => errs.push(format!("{target}: {e}")),
        }
        conn.close();
    }
    run.stop_agent();
    let dir = util::load_cassettes(&run.out);
    errs.extend(dir.problems.iter().cloned());
    if dir.cassettes.len() != requests {
        errs.push(format!(
            "{} request cassettes, want {requests}",
            dir.cassettes.len()
        ));
    }
    for c in dir.cassettes.iter().chain(&dir.startup) {
        errs.extend(util::schema_problems(&paths, c));
    }
    let recordings: Vec<&str> = dir
        .cassettes
        .iter()
        .filter_map(|c| c.json["session"]["recording"].as_str())
        .collect();
    if recordings.len() != dir.cassettes.len() || recordings.windows(2).any(|w| w[0] != w[1]) {
        errs.push(format!(
            "every request cassette names the same session.recording: {recordings:?}"
        ));
    }
    if mode == Mode::Attach {
        if !dir.startup.is_empty() {
            errs.push(format!(
                "{} startup cassettes from an attach (its startup was not seen)",
                dir.startup.len()
            ));
        }
        if !errs.is_empty() {
            run.fail(&errs, Some(&dir));
        }
        let env = run.stop_servers();
        let r = run.replay(&env, &[], &[("STARTUP_WARM", "connect")]);
        r.assert_all_same(requests);
        let rules: Vec<String> = r.verdict["answered_by_rule"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{} → {}", a["call"], a["rule"]))
            .collect();
        for want in per_process {
            assert!(
                rules.iter().any(|l| l.contains(want)),
                "the verdict lists {want:?} as answered by rule: {rules:#?}\n{}",
                r.explain()
            );
        }
        assert!(
            r.verdict["report"]
                .as_str()
                .is_some_and(|t| t.contains("answered by rule")),
            "{}",
            r.explain()
        );
        return;
    }
    // One startup cassette per process that made calls before its first request, each with
    // every startup call of the app.
    let with_calls: Vec<&Cassette> = dir
        .startup
        .iter()
        .filter(|c| c.json["events"].as_array().is_some_and(|e| !e.is_empty()))
        .collect();
    if with_calls.len() < processes {
        errs.push(format!(
            "{} startup cassettes with calls, want one per app process ({processes})",
            with_calls.len()
        ));
    }
    for c in &with_calls {
        let calls: Vec<String> = c.json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(call_text)
            .collect();
        for want in per_process {
            if !calls.iter().any(|t| t.contains(want)) {
                errs.push(format!(
                    "{}: no startup call contains {want:?}; calls:\n      {}",
                    c.path.display(),
                    calls.join("\n      ")
                ));
            }
        }
        if c.json["session"]["recording"].as_str() != recordings.first().copied() {
            errs.push(format!(
                "{}: session.recording differs from the request cassettes'",
                c.path.display()
            ));
        }
        // A worker that served nothing (sync workers: one may accept every request) ends with
        // the recording.
        if c.json["startup"]["ended_by"] != "first-request"
            && c.json["startup"]["ended_by"] != "end-of-recording"
        {
            errs.push(format!(
                "{}: startup.ended_by = {} (want first-request or end-of-recording)",
                c.path.display(),
                c.json["startup"]["ended_by"]
            ));
        }
    }
    if !errs.is_empty() {
        for c in &dir.startup {
            eprintln!("----- {} -----\n{:#}", c.path.display(), c.json["events"]);
        }
        run.fail(&errs, Some(&dir));
    }
    let env = run.stop_servers();
    let r = run.replay(&env, &[], &[]);
    r.assert_all_same(requests);
    let notes = r.verdict["notes"].to_string();
    assert!(
        notes.contains("startup call"),
        "the verdict says startup calls were answered: {notes}\n{}",
        r.explain()
    );
    // One cassette alone finds its recording's startup cassettes next to it.
    let one = &dir.cassettes[requests - 1].path;
    let r = run.replay_input(one, &env, &[], &[]);
    r.assert_all_same(1);
}

#[test]
fn startup_flask_sqlalchemy_pools_at_import_gunicorn_2_workers() {
    record_and_replay(
        DbApp::StartupFlask,
        Mode::Record,
        "startup_flask",
        2,
        &[
            // SQLAlchemy's first-connect introspection, then the app's own warm-up.
            "hstore",
            "SELECT count(*) FROM items",
            "SELECT name FROM items WHERE id = 1",
            "SELECT COUNT(*) FROM items",
            "SET [\"startup:flag\"",
        ],
    );
}

#[test]
fn startup_fastapi_asyncpg_pool_in_lifespan() {
    record_and_replay(
        DbApp::StartupFastApi,
        Mode::Record,
        "startup_fastapi",
        1,
        &["SELECT count(*) FROM items", "SET [\"startup:aflag\""],
    );
}

/// The Flask app recorded with `attach` after its workers connected: SQLAlchemy's
/// first-connect introspection and the Redis setup are answered by rule at replay.
#[test]
fn startup_flask_attach_answers_connect_time_calls_by_rule() {
    record_and_replay(
        DbApp::StartupFlask,
        Mode::Attach,
        "startup_flask_attach",
        2,
        &["version()", "hstore", "PING"],
    );
}

/// The FastAPI app recorded with `attach` after its lifespan made the asyncpg pool.
#[test]
fn startup_fastapi_attach_replays() {
    record_and_replay(
        DbApp::StartupFastApi,
        Mode::Attach,
        "startup_fastapi_attach",
        1,
        &["PING"],
    );
}
