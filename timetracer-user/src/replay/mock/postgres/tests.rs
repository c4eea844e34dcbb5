//! Frame splitting, answer mapping and the protocol state machine, on bytes recorded from
//! asyncpg 0.32, psycopg2 2.9 and psycopg 3.3 against PostgreSQL 15 (`tests/fixtures/replay/`).
use super::*;
use crate::replay::ledger::Protocol;
use crate::replay::mock::fixtures::destination;

fn msg(t: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    push_msg(&mut v, t, payload);
    v
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut p = format!("{name}\0{sql}\0").into_bytes();
    p.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &p)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    msg(b'D', &p)
}

/// asyncpg's `Bind`: one binary int4 parameter, binary results.
fn bind_int4(stmt: &str, v: i32) -> Vec<u8> {
    let mut p = format!("\0{stmt}\0").into_bytes();
    p.extend_from_slice(&[0, 1, 0, 1, 0, 1, 0, 0, 0, 4]);
    p.extend_from_slice(&v.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 1]);
    msg(b'B', &p)
}

fn execute() -> Vec<u8> {
    msg(b'E', &[0, 0, 0, 0, 0])
}

fn types(b: &[u8]) -> String {
    split_back(b).iter().map(|(t, _)| *t as char).collect()
}

fn feed(s: &mut Session, input: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(input);
    s.feed(&mut buf);
    assert!(buf.is_empty() || s.closed, "left over: {buf:?}");
    std::mem::take(&mut s.out)
}

fn started(d: Arc<Destination>) -> Session {
    let mut s = Session::new(d);
    s.started = true;
    s
}

fn recorded(file: &str, eid: u64) -> RecordedCall {
    let (d, _) = destination(Protocol::Postgres, &[file]);
    d.find(|c| c.eid == eid).expect("event")
}

#[test]
fn segments_of_asyncpg_prepare_and_execute() {
    // asyncpg: Parse, Describe S, Flush, Bind, Execute, Sync as ONE recorded call.
    let c = recorded("fastapi/pg_select_first.json", 1);
    let front = split_front(&c.request).unwrap();
    assert_eq!(front.len(), 6);
    assert_eq!(front[2], Front::Flush);
    let back = split_back(&c.response);
    assert_eq!(
        back.iter().map(|(t, _)| *t as char).collect::<String>(),
        "1tT2DCZ"
    );
    let segs = segments(&front, &back);
    let got: Vec<String> = segs.iter().map(|s| types(s)).collect();
    assert_eq!(got, ["1", "tT", "", "2", "DC", "Z"]);
    assert_eq!(
        segs.concat(),
        c.response,
        "segments cover the response exactly"
    );
}

#[test]
fn segments_after_an_error_skip_to_sync() {
    // Parse rejected (42P01): the Describe got nothing, the Sync its ReadyForQuery.
    let c = recorded("fastapi/pg_fail.json", 1);
    let front = split_front(&c.request).unwrap();
    let segs = segments(&front, &split_back(&c.response));
    let got: Vec<String> = segs.iter().map(|s| types(s)).collect();
    assert_eq!(got, ["E", "", "", "Z"]);
    // `SELECT 1 / $1::int` with 0 fails at Bind (constant folding, 22012): the Execute was
    // skipped by the server.
    let c = recorded("fastapi/pg_fail.json", 2);
    let front = split_front(&c.request).unwrap();
    let segs = segments(&front, &split_back(&c.response));
    let got: Vec<String> = segs.iter().map(|s| types(s)).collect();
    assert_eq!(got, ["1", "tT", "", "E", "", "Z"]);
    // psycopg 3: Parse, Bind, Describe portal, Execute, Sync; the error at Execute.
    let c = recorded("flask/pg3_select.json", 5);
    let front = split_front(&c.request).unwrap();
    let segs = segments(&front, &split_back(&c.response));
    let got: Vec<String> = segs.iter().map(|s| types(s)).collect();
    assert_eq!(got, ["1", "E", "", "", "Z"]);
}

#[test]
fn notices_ride_along_and_simple_query_is_whole() {
    let front = vec![Front::Query("SET x = 1; SELECT 1".into())];
    let mut back = msg(b'N', b"SNOTICE\0\0");
    back.extend(msg(b'C', b"SET\0"));
    back.extend(msg(b'S', b"x\x001\0"));
    back.extend(msg(b'T', &[0, 0]));
    back.extend(msg(b'C', b"SELECT 1\0"));
    back.extend(msg(b'Z', b"I"));
    let segs = segments(&front, &split_back(&back));
    assert_eq!(segs[0], back);
}

#[test]
fn startup_answers_from_facts() {
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_first.json"]);
    let mut s = Session::new(d);
    // SSLRequest → N, then StartupMessage (asyncpg's parameters).
    let out = feed(&mut s, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    assert_eq!(out, b"N");
    let mut p = 196_608u32.to_be_bytes().to_vec();
    p.extend_from_slice(b"user\0ttapp\0database\0ttdb\0client_encoding\0'utf-8'\0\0");
    let mut startup = u32::try_from(p.len() + 4).unwrap().to_be_bytes().to_vec();
    startup.extend(p);
    let out = feed(&mut s, &startup);
    let back = split_back(&out);
    assert_eq!(back[0].1, b"R\0\0\0\x08\0\0\0\0");
    assert_eq!(back.last().unwrap().1, b"Z\0\0\0\x05I");
    assert_eq!(back[back.len() - 2].0, b'K');
    let statuses: Vec<(String, String)> = back
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, raw)| {
            let mut r = pg::Reader::new(&raw[5..]);
            (r.cstr().unwrap(), r.cstr().unwrap())
        })
        .collect();
    let get = |k: &str| {
        statuses
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("server_version"),
        Some("15.18 (Debian 15.18-0+deb12u1)")
    );
    assert_eq!(get("TimeZone"), Some("Etc/UTC"));
    assert_eq!(get("integer_datetimes"), Some("on"));
    assert_eq!(get("session_authorization"), Some("ttapp"));
    assert!(j.misses().is_empty());
}

#[test]
fn asyncpg_flush_then_execute_replays_each_part() {
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_first.json"]);
    let c = d.find(|c| c.eid == 1).unwrap();
    let mut s = started(d);
    let sql = "SELECT id, name FROM items WHERE id = $1";
    // Statement names differ from the recording's `__asyncpg_stmt_1__`.
    let mut first = parse("__asyncpg_stmt_9__", sql);
    first.extend(describe(b'S', "__asyncpg_stmt_9__"));
    first.extend(msg(b'H', &[]));
    let out = feed(&mut s, &first);
    assert_eq!(types(&out), "1tT");
    let mut second = bind_int4("__asyncpg_stmt_9__", 1);
    second.extend(execute());
    second.extend(msg(b'S', &[]));
    let out2 = feed(&mut s, &second);
    assert_eq!(types(&out2), "2DCZ");
    assert_eq!([out, out2].concat(), c.response, "byte-exact");
    assert!(j.misses().is_empty());
}

#[test]
fn cached_statement_recording_describes_from_detail() {
    // The second request's recording only has Bind/Execute/Sync (asyncpg had the statement
    // cached): a fresh app prepares it again, the description is built from the recording.
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_cached.json"]);
    let mut s = started(d);
    let sql = "SELECT id, name FROM items WHERE id = $1";
    let mut first = parse("s1", sql);
    first.extend(describe(b'S', "s1"));
    first.extend(msg(b'H', &[]));
    let out = feed(&mut s, &first);
    // Same bytes as the server sent when the first request prepared it.
    let prepared = recorded("fastapi/pg_select_first.json", 1);
    let front = split_front(&prepared.request).unwrap();
    let segs = segments(&front, &split_back(&prepared.response));
    assert_eq!(out, [segs[0].clone(), segs[1].clone()].concat());
    let mut second = bind_int4("s1", 3);
    second.extend(execute());
    second.extend(msg(b'S', &[]));
    let out = feed(&mut s, &second);
    let rows = split_back(&out);
    assert_eq!(types(&out), "2DCZ");
    assert!(rows[1].1.ends_with(b"cy"));
    assert!(j.misses().is_empty());
}

#[test]
fn changed_parameter_is_a_miss_and_the_connection_stays_usable() {
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_first.json"]);
    let mut s = started(d);
    let sql = "SELECT id, name FROM items WHERE id = $1";
    let mut m = parse("a", sql);
    m.extend(describe(b'S', "a"));
    m.extend(msg(b'H', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "1tT");
    let mut m = bind_int4("a", 2);
    m.extend(execute());
    m.extend(msg(b'S', &[]));
    let out = feed(&mut s, &m);
    assert_eq!(types(&out), "EZ");
    let fields = pg::parse_fields(&split_back(&out)[0].1[5..]);
    let text = |c: u8| fields.iter().find(|(k, _)| *k == c).map(|(_, v)| v.clone());
    assert_eq!(text(b'C').as_deref(), Some("XX000"));
    let message = text(b'M').unwrap();
    assert!(
        message.starts_with("timetracer replay: no recorded call matches")
            && message.contains("params[0]: expected 1, got 2"),
        "{message}"
    );
    let misses = j.misses();
    assert_eq!(misses.len(), 1);
    assert_eq!(misses[0].field.as_deref(), Some("params[0]"));
    // Usable: the recorded call is still there for the right parameter.
    let mut m = bind_int4("a", 1);
    m.extend(execute());
    m.extend(msg(b'S', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "2DCZ");
}

#[test]
fn recorded_errors_are_replayed() {
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_fail.json"]);
    let c1 = d.find(|c| c.eid == 1).unwrap();
    assert!(!c1.session_level);
    let mut s = started(d.clone());
    let mut m = parse("x", "SELECT * FROM no_such_table WHERE id = $1");
    m.extend(describe(b'S', "x"));
    m.extend(msg(b'H', &[]));
    let out = feed(&mut s, &m);
    assert_eq!(types(&out), "E");
    let out2 = feed(&mut s, &msg(b'S', &[]));
    assert_eq!(types(&out2), "Z");
    assert_eq!([out, out2].concat(), c1.response);
    // The recorded rejected prepare (not session-level) was used up: the verdict counts it.
    assert_eq!(d.usage(0).unused, 1, "only the division by zero is left");
    // Same for a simple Query: the whole recorded answer.
    let (d, _) = destination(Protocol::Postgres, &["flask/pg2_fail.json"]);
    let c = d.find(|c| c.eid == 1).unwrap();
    let mut s = started(d);
    let out = feed(&mut s, &msg(b'Q', b"SELECT * FROM no_such_table\0"));
    assert_eq!(out, c.response);
    assert!(j.misses().is_empty());
}

#[test]
fn unrecorded_set_by_rule_and_unknown_query_is_a_miss() {
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let mut s = started(d);
    let out = feed(&mut s, &msg(b'Q', b"SET TimeZone TO 'UTC'\0"));
    assert_eq!(types(&out), "CZ");
    let out = feed(&mut s, &msg(b'Q', b"SELECT 42\0"));
    assert_eq!(types(&out), "EZ");
    assert_eq!(j.misses().len(), 1);
    assert_eq!(j.misses()[0].field.as_deref(), Some("sql"));
}

#[test]
fn malformed_and_random_bytes_never_panic() {
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let mut s = started(d.clone());
    let out = feed(&mut s, b"\xff\x00\x00\x00\x04garbage");
    assert!(s.closed);
    assert_eq!(types(&out), "E");
    assert!(
        j.misses()[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("malformed")
    );
    // Deterministic pseudo-random inputs, before and after startup.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let mut bytes = Vec::new();
        for _ in 0..(round % 97) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x >> 24) as u8);
        }
        if round % 3 == 0 && bytes.len() > 5 {
            // Plausible headers with random bodies.
            bytes[0] = b"QPBDESHCX"[round % 9];
            let len = u32::try_from(bytes.len() - 1).unwrap().to_be_bytes();
            bytes[1..5].copy_from_slice(&len);
        }
        let mut s = if round % 2 == 0 {
            started(d.clone())
        } else {
            Session::new(d.clone())
        };
        let mut buf = BytesMut::from(&bytes[..]);
        s.feed(&mut buf);
    }
}

#[test]
fn unknown_statement_at_flush_is_one_miss_then_ready() {
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_first.json"]);
    let mut s = started(d);
    let mut m = parse("n", "SELECT nothing_recorded($1)");
    m.extend(describe(b'S', "n"));
    m.extend(msg(b'H', &[]));
    let out = feed(&mut s, &m);
    assert_eq!(types(&out), "E");
    // asyncpg would now send Sync only; a client that goes on sends Bind/Execute/Sync: skipped.
    let mut m = bind_int4("n", 1);
    m.extend(execute());
    m.extend(msg(b'S', &[]));
    assert_eq!(feed(&mut s, &m), b"Z\0\0\0\x05I");
    let misses = j.misses();
    assert_eq!(misses.len(), 1, "{misses:#?}");
    assert_eq!(misses[0].field.as_deref(), Some("sql"));
    assert_eq!(
        misses[0].expected_value.as_deref(),
        Some("SELECT id, name FROM items WHERE id = $1"),
        "the closest recorded statement (longest common prefix)"
    );
}

fn recorded_call(eid: u64, req: &[u8], resp: &[u8], db: Value) -> RecordedCall {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ev = crate::cassette::format::Event {
        eid,
        kind: "db.query".into(),
        signature: crate::cassette::format::Signature {
            lib: "postgres".into(),
            ..Default::default()
        },
        db: Some(db),
        wire: Some(crate::cassette::format::Wire {
            request_b64: b64.encode(req),
            response_b64: b64.encode(resp),
            truncated: false,
        }),
        ..Default::default()
    };
    RecordedCall::new(0, Protocol::Postgres, ev).unwrap()
}

#[test]
fn executemany_is_one_recorded_call_per_execute() {
    // As the recorder cuts `P D H B E B E B E S` (docs/protocols/postgres.md): one call per
    // Execute, the prepare with the first, the Sync with the last.
    let sql = "INSERT INTO t VALUES ($1)";
    let (j, d) = {
        let j = Arc::new(crate::replay::ledger::Journal::default());
        let d = Destination::new(
            "127.0.0.1:5432".parse().unwrap(),
            Protocol::Postgres,
            j.clone(),
        );
        (j, d)
    };
    let tag = msg(b'C', b"INSERT 0 1\0");
    let mut req1 = parse("s", sql);
    req1.extend(describe(b'S', "s"));
    req1.extend(msg(b'H', &[]));
    req1.extend(bind_int4("s", 1));
    req1.extend(execute());
    let mut resp1 = msg(b'1', &[]);
    resp1.extend(msg(b't', &[0, 1, 0, 0, 0, 23]));
    resp1.extend(msg(b'n', &[]));
    resp1.extend(msg(b'2', &[]));
    resp1.extend(&tag);
    let db = serde_json::json!({"sql": sql, "param_types": [23]});
    d.push(recorded_call(1, &req1, &resp1, db.clone()));
    let mut req2 = bind_int4("s", 2);
    req2.extend(execute());
    d.push(recorded_call(
        2,
        &req2,
        &[msg(b'2', &[]), tag.clone()].concat(),
        db.clone(),
    ));
    let mut req3 = bind_int4("s", 3);
    req3.extend(execute());
    req3.extend(msg(b'S', &[]));
    let resp3 = [msg(b'2', &[]), tag.clone(), msg(b'Z', b"I")].concat();
    d.push(recorded_call(3, &req3, &resp3, db));
    let mut s = started(Arc::new(d));
    let mut m = parse("other_name", sql);
    m.extend(describe(b'S', "other_name"));
    m.extend(msg(b'H', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "1tn");
    let mut m = Vec::new();
    for v in 1..=3 {
        m.extend(bind_int4("other_name", v));
        m.extend(execute());
    }
    m.extend(msg(b'S', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "2C2C2CZ");
    assert!(j.misses().is_empty(), "{:#?}", j.misses());
}

#[test]
fn rule_tags_and_session_statements() {
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let mut s = started(d);
    assert_eq!(types(&feed(&mut s, &msg(b'Q', b"DISCARD ALL\0"))), "CZ");
    assert_eq!(
        types(&feed(&mut s, &msg(b'Q', b"SHOW server_version\0"))),
        "EZ"
    );
    let m = j.misses();
    assert_eq!(m.len(), 1);
    assert!(
        m[0].reason
            .as_deref()
            .unwrap()
            .contains("not in the recording")
    );
    assert_eq!(j.rules().len(), 1, "DISCARD ALL answered by rule");
}

/// A startup message of protocol 3.0 from user `app` for database `shop`.
fn startup_message() -> Vec<u8> {
    let body = b"user\0app\0database\0shop\0\0";
    let mut v = i32::try_from(body.len() + 8)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(&196_608i32.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Issue #26 item 2: what a driver sends when it opens a connection, absent from a recording
/// made with `attach`, is answered by rule (simple and extended protocol) and journaled.
#[test]
fn connect_time_introspection_answered_by_rule() {
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let mut s = Session::new(d);
    let hello = feed(&mut s, &startup_message());
    assert!(types(&hello).ends_with("KZ"), "{}", types(&hello));
    // SQLAlchemy's first connect (psycopg2: simple protocol).
    let out = feed(&mut s, &msg(b'Q', b"select pg_catalog.version()\0"));
    assert_eq!(types(&out), "TDCZ");
    assert!(String::from_utf8_lossy(&out).contains("PostgreSQL "));
    assert_eq!(types(&feed(&mut s, &msg(b'Q', b"BEGIN\0"))), "CZ");
    assert_eq!(s.tx, b'T');
    let hstore = b"SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON typnamespace = ns.oid WHERE typname = 'hstore'\0";
    assert_eq!(types(&feed(&mut s, &msg(b'Q', hstore))), "TCZ");
    assert_eq!(types(&feed(&mut s, &msg(b'Q', b"ROLLBACK\0"))), "CZ");
    assert_eq!(s.tx, b'I');
    // psycopg 3's TypeInfo.fetch: extended protocol, the name as a parameter.
    let sql = "SELECT typname AS name, oid, typarray AS array_oid FROM pg_type t WHERE t.oid = to_regtype($1)";
    let mut m = parse("", sql);
    let mut b = b"\0\0".to_vec();
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 6]);
    b.extend_from_slice(b"hstore");
    b.extend_from_slice(&[0, 0]);
    m.extend(msg(b'B', &b));
    m.extend(describe(b'P', ""));
    m.extend(execute());
    m.extend(msg(b'S', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "12TCZ");
    assert!(j.misses().is_empty(), "{:#?}", j.misses());
    let rules = j.rules();
    assert_eq!(rules.len(), 5, "{rules:#?}");
    assert!(rules.iter().all(|r| r.count == 1));
    assert!(rules[2].rule.contains("no row"), "{rules:#?}");
    // Work of the app is never answered by rule.
    let out = feed(&mut s, &msg(b'Q', b"SELECT secret FROM vault\0"));
    assert_eq!(types(&out), "EZ");
    assert_eq!(j.misses().len(), 1);
}

fn execute_max(portal: &str, max: i32) -> Vec<u8> {
    let mut p = portal.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&max.to_be_bytes());
    msg(b'E', &p)
}

fn bind_portal(portal: &str, stmt: &str) -> Vec<u8> {
    let mut p = format!("{portal}\0{stmt}\0").into_bytes();
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(b'B', &p)
}

#[test]
fn cursor_fetches_on_a_portal_match_in_order() {
    // A cursor: Execute with a row limit, then Executes alone on the same portal, each a
    // recorded call (the recorder names their SQL through the portal).
    let sql = "SELECT n FROM generate_series(1, 3) n";
    let j = Arc::new(crate::replay::ledger::Journal::default());
    let d = Destination::new(
        "127.0.0.1:5432".parse().unwrap(),
        Protocol::Postgres,
        j.clone(),
    );
    let db = serde_json::json!({"sql": sql});
    let row = |v: &[u8]| {
        let mut p = vec![0, 1];
        p.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
        p.extend_from_slice(v);
        msg(b'D', &p)
    };
    let mut req1 = parse("", sql);
    req1.extend(bind_portal("c1", ""));
    req1.extend(execute_max("c1", 2));
    let resp1 = [
        msg(b'1', &[]),
        msg(b'2', &[]),
        row(b"1"),
        row(b"2"),
        msg(b's', &[]),
    ]
    .concat();
    d.push(recorded_call(1, &req1, &resp1, db.clone()));
    let mut req2 = msg(b'H', &[]);
    req2.extend(execute_max("c1", 2));
    req2.extend(msg(b'S', &[]));
    let resp2 = [row(b"3"), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"T")].concat();
    d.push(recorded_call(2, &req2, &resp2, db));
    let mut s = started(Arc::new(d));
    let mut m = parse("", sql);
    m.extend(bind_portal("c1", ""));
    m.extend(execute_max("c1", 2));
    m.extend(msg(b'H', &[]));
    assert_eq!(feed(&mut s, &m), resp1);
    let mut m = execute_max("c1", 2);
    m.extend(msg(b'S', &[]));
    assert_eq!(feed(&mut s, &m), resp2);
    assert!(j.misses().is_empty(), "{:#?}", j.misses());
}

#[test]
fn copy_from_stdin_waits_for_copy_done() {
    let sql = "COPY audit (note) FROM STDIN";
    let j = Arc::new(crate::replay::ledger::Journal::default());
    let d = Destination::new(
        "127.0.0.1:5432".parse().unwrap(),
        Protocol::Postgres,
        j.clone(),
    );
    // As recorded: the Query and the CopyDone (CopyData left out), CopyInResponse, then the
    // answer to CopyDone.
    let req = [msg(b'Q', format!("{sql}\0").as_bytes()), msg(b'c', &[])].concat();
    let g = msg(b'G', &[0, 0, 1, 0, 0]);
    let rest = [msg(b'C', b"COPY 2\0"), msg(b'Z', b"I")].concat();
    d.push(recorded_call(
        1,
        &req,
        &[g.clone(), rest.clone()].concat(),
        serde_json::json!({"sql": sql}),
    ));
    d.push(recorded_call(
        2,
        &req,
        &[g.clone(), rest.clone()].concat(),
        serde_json::json!({"sql": sql}),
    ));
    let mut s = started(Arc::new(d));
    assert_eq!(feed(&mut s, &msg(b'Q', format!("{sql}\0").as_bytes())), g);
    assert_eq!(feed(&mut s, &msg(b'd', b"a\n")), b"");
    assert_eq!(feed(&mut s, &msg(b'd', b"b\n")), b"");
    assert_eq!(feed(&mut s, &msg(b'c', &[])), rest);
    // The app gives up this time: the server's own answer.
    assert_eq!(feed(&mut s, &msg(b'Q', format!("{sql}\0").as_bytes())), g);
    assert_eq!(types(&feed(&mut s, &msg(b'f', b"oops\0"))), "EZ");
    assert!(j.misses().is_empty(), "{:#?}", j.misses());
}

#[test]
fn a_prepare_alone_does_not_use_up_a_recorded_execution() {
    // psycopg 3 `prepare=True` / asyncpg `prepare()`: Parse, Describe, Sync. Answered from
    // the recorded execution of the statement, which stays available for the execution.
    let (d, j) = destination(Protocol::Postgres, &["fastapi/pg_select_first.json"]);
    let mut s = started(d.clone());
    let sql = "SELECT id, name FROM items WHERE id = $1";
    let mut m = parse("p", sql);
    m.extend(describe(b'S', "p"));
    m.extend(msg(b'S', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "1tTZ");
    assert_eq!(d.unused().len(), 2);
    let mut m = bind_int4("p", 1);
    m.extend(execute());
    m.extend(msg(b'S', &[]));
    assert_eq!(types(&feed(&mut s, &m)), "2DCZ");
    assert_eq!(d.unused().len(), 1);
    assert!(j.misses().is_empty());
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Reads backend messages until a `ReadyForQuery`; returns their types.
async fn until_ready(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    loop {
        let t = types(&buf);
        if t.ends_with('Z') {
            return t;
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before ReadyForQuery, got {t:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Issue #26 item 4: a recording over TLS is replayed over TLS. `SSLRequest` → `S`, a TLS
/// handshake the client verifies against the mock CA (with libpq 17's ALPN), then the same
/// startup and queries inside TLS.
#[tokio::test]
async fn ssl_request_upgrades_to_tls_signed_by_the_mock_ca() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let (acc, conn, _ca) =
        crate::replay::mock::fixtures::tls_pair("127.0.0.1", Some(b"postgresql"));
    let (mut app, mock) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(serve_upgrading(d, mock, Some(acc)));
    app.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    app.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = conn
        .connect(name, app)
        .await
        .expect("handshake verified by the mock CA");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup_message()).await.unwrap();
    let t = until_ready(&mut tls).await;
    assert!(t.starts_with('R') && t.contains('K'), "{t}");
    tls.write_all(&msg(b'Q', b"SELECT 1\0")).await.unwrap();
    // Not in the recording: a miss answered inside TLS, and the connection stays usable.
    assert_eq!(until_ready(&mut tls).await, "EZ");
    tls.write_all(&msg(b'X', &[])).await.unwrap();
    tls.shutdown().await.unwrap();
    server.await.unwrap().unwrap();
    let misses = j.misses();
    assert_eq!(misses.len(), 1, "{misses:?}");
    assert!(misses[0].call.contains("SELECT 1"), "{misses:?}");
}

/// A plaintext recording: `N`, as the recorded server answered; a client that goes on in
/// plaintext is served.
#[tokio::test]
async fn ssl_request_is_refused_when_the_recording_was_plaintext() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let (mut app, mock) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(serve_upgrading(d, mock, None));
    app.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    app.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    app.write_all(&startup_message()).await.unwrap();
    assert!(until_ready(&mut app).await.starts_with('R'));
    drop(app);
    server.await.unwrap().unwrap();
    assert!(j.misses().is_empty());
}

/// Bytes sent after `SSLRequest` before the TLS handshake are refused (CVE-2021-23214), and
/// a client that does not trust the mock CA is a miss naming the cause.
#[tokio::test]
async fn plaintext_after_ssl_request_and_untrusted_ca_are_misses() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, j) = destination(Protocol::Postgres, &["flask/pg2_select.json"]);
    let (acc, _, _ca) = crate::replay::mock::fixtures::tls_pair("127.0.0.1", None);
    let (mut app, mock) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(serve_upgrading(d.clone(), mock, Some(acc.clone())));
    let mut both = SSL_REQUEST.to_vec();
    both.extend(startup_message());
    app.write_all(&both).await.unwrap();
    let mut rest = Vec::new();
    app.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"S");
    server.await.unwrap().unwrap();
    assert!(
        j.misses()[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("before the TLS handshake")
    );
    // A client trusting another CA: the handshake fails, the miss says why.
    let (_, other, _other_ca) = crate::replay::mock::fixtures::tls_pair("127.0.0.1", None);
    let (mut app, mock) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(serve_upgrading(d, mock, Some(acc)));
    app.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    app.read_exact(&mut answer).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    assert!(other.connect(name, app).await.is_err());
    server.await.unwrap().unwrap();
    let misses = j.misses();
    assert!(
        misses[1].reason.as_deref().unwrap().contains("mock CA"),
        "{misses:?}"
    );
}
