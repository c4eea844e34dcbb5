//! MongoDB replay (issue #26 item 4). No MongoDB server installs here, so the server is the
//! minimal wire server of `tests/apps/mongo_wire_server.py` (pymongo's BSON codec, real
//! framing, awaitable `hello` held like a server does); the client is real pymongo in a
//! FastAPI app (`tests/apps/mongo_app.py`) that creates its `MongoClient` at import.
//!
//! - `mongodb_pymongo_replays_without_the_server`: recorded with `timetracer-agent record`
//!   (handshake, insert with document sequences and a driver-generated ObjectId, find with
//!   `getMore`, update, delete, aggregate, `count_documents`, ping), the wire server stopped,
//!   replayed: every response the same, exit 0. Then the app changes one query
//!   (`MONGO_CHANGE=1`): the verdict names `filter.age.$gte` (30 → 31), exit 2.
use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::scenario::Harness;
use crate::util::{self, HttpConn, ProcGuard};

/// The app's requests, in order: each a cassette.
const ENDPOINTS: &[&str] = &[
    "/seed",
    "/people",
    "/birthday/2",
    "/stats",
    "/remove?city=paris",
    "/people?min_age=20",
];

/// The wire server on `port`, serving once its port accepts.
fn wire_server(h: &Harness, port: u16) -> ProcGuard {
    let mut cmd = util::command(
        h.paths.venv_bin("python"),
        [
            OsString::from(h.paths.apps.join("mongo_wire_server.py")),
            port.to_string().into(),
        ],
    );
    cmd.current_dir(&h.paths.apps);
    let mut g = ProcGuard::spawn("mongo", cmd, &h.root()).expect("spawn the MongoDB wire server");
    if let Err(e) = g.wait_for_port(port, Duration::from_secs(20)) {
        panic!(
            "MongoDB wire server did not start: {e:#}\n{}",
            g.diagnostics()
        );
    }
    g
}

#[test]
fn mongodb_pymongo_replays_without_the_server() {
    let paths = crate::require_root!();
    let mut h = Harness::new(paths, "mongo_replay");
    let port = util::free_port();
    let mut server = wire_server(&h, port);
    h.extra_env = vec![(
        "MONGO_URL".into(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    )];
    let app_port = h.app_port();
    h.start_record_argv(vec![
        h.paths.venv_bin("uvicorn").into(),
        "mongo_app:app".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        app_port.to_string().into(),
    ]);
    let mut errs = Vec::new();
    for ep in ENDPOINTS {
        let mut conn = HttpConn::connect(app_port).expect("connect to the app");
        match conn.request("GET", ep, None) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => errs.push(format!(
                "{ep}: {} {}",
                r.status,
                util::tail(&String::from_utf8_lossy(&r.body), 5)
            )),
            Err(e) => errs.push(format!("{ep}: {e}")),
        }
        conn.close();
    }
    h.stop_agent();
    let dir = util::load_cassettes(&h.out_dir());
    errs.extend(dir.problems.iter().cloned());
    // Every operation was recorded as a MongoDB call of a request.
    let methods: Vec<String> = dir
        .cassettes
        .iter()
        .flat_map(|c| c.json["events"].as_array().into_iter().flatten())
        .filter(|e| e["signature"]["lib"] == "mongodb")
        .filter_map(|e| e["signature"]["method"].as_str().map(str::to_owned))
        .collect();
    for m in [
        "insert",
        "find",
        "getMore",
        "update",
        "delete",
        "aggregate",
        "ping",
    ] {
        if !methods.iter().any(|x| x == m) {
            errs.push(format!("no {m} recorded; recorded: {methods:?}"));
        }
    }
    if !errs.is_empty() {
        h.fail(&errs, Some(&dir));
    }
    let _ = server.signal(Signal::SIGTERM);
    let _ = server.wait_timeout(Duration::from_secs(5));
    drop(server);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the wire server is stopped"
    );
    let r = h.replay(&[h.out_dir().into()], &[]);
    r.assert_all_same(ENDPOINTS.len());
    let rules: Vec<&Value> = r.verdict["answered_by_rule"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert!(
        rules.iter().all(|x| x["protocol"] != "mongodb"),
        "the recorded handshake answers, no rule needed: {rules:?}\n{}",
        r.explain()
    );
    // The app sends another filter: the verdict names the field, exit 2 (mismatch).
    let r = h.replay(&[h.out_dir().into()], &[("MONGO_CHANGE", "1")]);
    r.assert_field_miss("filter.age.$gte", "30", "31");
    let miss = r
        .misses()
        .into_iter()
        .find(|m| m["field"] == "filter.age.$gte")
        .expect("the miss");
    assert!(
        miss["call"]
            .as_str()
            .is_some_and(|c| c.starts_with("find app.people")),
        "{miss}"
    );
}
