//! Handshake, command matching and prepared-statement id mapping, on packets recorded from
//! PyMySQL 1.2 against MariaDB 10.11 (`tests/fixtures/replay/flask/`) and on hand-built
//! `COM_STMT_*` exchanges following the protocol documentation.
use base64::Engine as _;
use serde_json::json;

use super::*;
use crate::cassette::format::{Event, Signature, Wire};
use crate::replay::ledger::{Journal, Protocol};
use crate::replay::mock::fixtures::destination;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    push_packet(&mut v, seq, payload);
    v
}

fn feed(s: &mut Session, input: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::from(input);
    s.feed(&mut buf);
    std::mem::take(&mut s.out)
}

/// PyMySQL's `HandshakeResponse41` (capabilities as recorded, `auth_plugin` given).
fn handshake_response(plugin: &str) -> Vec<u8> {
    let caps: u32 = 3_842_573 | cap::PLUGIN_AUTH | cap::CONNECT_WITH_DB;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"ttapp\0");
    p.push(20);
    p.extend_from_slice(&[7; 20]);
    p.extend_from_slice(b"ttdb\0");
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    pkt(1, &p)
}

fn connected(d: Arc<Destination>) -> Session {
    let mut s = Session::new(d);
    s.greeting();
    s.out.clear();
    let out = feed(&mut s, &handshake_response(NATIVE));
    assert_eq!(out, [7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
    s
}

#[test]
fn greeting_from_recorded_facts() {
    let (d, j) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let mut s = Session::new(d);
    s.greeting();
    let (seq, payload, n) = packet(&s.out).unwrap().unwrap();
    assert_eq!((seq, n), (0, s.out.len()));
    let g = my::parse_greeting(&payload).unwrap();
    assert_eq!(g.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
    assert_eq!(g.capabilities, 2_181_036_030 & !cap::SSL & !COMPRESS);
    assert_eq!(g.mariadb_capabilities, 29);
    assert_eq!(g.charset, 8);
    assert_eq!(g.auth_plugin, NATIVE);
    assert!(!s.scramble.contains(&0));
    assert!(j.misses().is_empty());
}

#[test]
fn auth_switch_for_caching_sha2_clients() {
    let (d, _) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let mut s = Session::new(d);
    s.greeting();
    s.out.clear();
    let out = feed(&mut s, &handshake_response("caching_sha2_password"));
    let (seq, payload, _) = packet(&out).unwrap().unwrap();
    assert_eq!(seq, 2);
    assert_eq!(payload[0], 0xFE);
    assert!(payload[1..].starts_with(b"mysql_native_password\0"));
    let out = feed(&mut s, &pkt(3, &[9; 20]));
    assert_eq!(out, [7, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(s.phase, Phase::Command);
}

#[test]
fn queries_replay_recorded_packets_and_misses_name_the_sql() {
    let (d, j) = destination(
        Protocol::Mysql,
        &["flask/mysql_select.json", "flask/mysql_fail.json"],
    );
    let select = d.find(|c| c.eid == 1 && c.cassette == 0).unwrap();
    let fail = d.find(|c| c.eid == 1 && c.cassette == 1).unwrap();
    let mut s = connected(d);
    // PyMySQL's SET NAMES at connect: in no cassette, answered by the protocol rule.
    assert_eq!(
        feed(&mut s, &pkt(0, b"\x03SET NAMES utf8mb4")),
        [7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
    );
    let out = feed(
        &mut s,
        &pkt(0, b"\x03SELECT id, name FROM items WHERE id = 1"),
    );
    assert_eq!(out, select.response, "byte-exact");
    let out = feed(&mut s, &pkt(0, b"\x03SELECT * FROM no_such_table"));
    assert_eq!(out, fail.response, "recorded ERR replayed");
    // A changed literal (PyMySQL interpolates client-side): ERR 1105 naming `sql`.
    let out = feed(
        &mut s,
        &pkt(
            0,
            b"\x03SELECT id, name FROM items WHERE id >= 2 ORDER BY id",
        ),
    );
    let (seq, payload, _) = packet(&out).unwrap().unwrap();
    assert_eq!(seq, 1);
    let e = my::parse_err(&payload).unwrap();
    assert_eq!(e.code, 1105);
    assert!(
        e.message.contains("no recorded call matches"),
        "{}",
        e.message
    );
    let m = j.misses();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].field.as_deref(), Some("sql"));
    assert_eq!(
        m[0].expected_value.as_deref(),
        Some("SELECT id, name FROM items WHERE id >= 1 ORDER BY id"),
        "reported against the closest recorded statement"
    );
    // Still usable; COM_PING by rule; COM_QUIT closes.
    assert_eq!(
        feed(&mut s, &pkt(0, &[com::PING])),
        [7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
    );
    feed(&mut s, &pkt(0, &[com::QUIT]));
    assert!(s.closed);
}

fn call(eid: u64, req: &[u8], resp: &[u8], db: Value) -> RecordedCall {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ev = Event {
        eid,
        kind: "db.query".into(),
        signature: Signature {
            lib: "mysql".into(),
            ..Default::default()
        },
        db: Some(db),
        wire: Some(Wire {
            request_b64: b64.encode(req),
            response_b64: b64.encode(resp),
            truncated: false,
        }),
        ..Default::default()
    };
    RecordedCall::new(0, Protocol::Mysql, ev).unwrap()
}

/// `COM_STMT_EXECUTE` of statement `id` with one `LONGLONG` parameter.
fn execute(id: u32, v: i64) -> Vec<u8> {
    let mut p = vec![com::STMT_EXECUTE];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&[0, 1, 8, 0]);
    p.extend_from_slice(&v.to_le_bytes());
    pkt(0, &p)
}

#[test]
fn prepared_statements_get_mock_ids_and_match_on_values() {
    let sql = "SELECT name FROM items WHERE id = ?";
    let mut prep_req = vec![com::STMT_PREPARE];
    prep_req.extend_from_slice(sql.as_bytes());
    // The recording server's id is 77: 1 parameter, 0 columns, then the parameter definition
    // and an EOF.
    let mut first = vec![0u8];
    first.extend_from_slice(&77u32.to_le_bytes());
    first.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0]);
    let mut prep_resp = pkt(1, &first);
    prep_resp.extend(pkt(
        2,
        b"\x03def\0\0\0\x01?\0\x0c\x3f\0\0\0\0\0\x08\x80\0\0\0\0",
    ));
    prep_resp.extend(pkt(3, &[0xFE, 0, 0, 2, 0]));
    let exec_resp = pkt(1, &[0, 0, 0, 2, 0, 0, 0]);
    let journal = Arc::new(Journal::default());
    let d = Destination::new(
        "127.0.0.1:3306".parse().unwrap(),
        Protocol::Mysql,
        journal.clone(),
    );
    d.push(call(
        1,
        &pkt(0, &prep_req),
        &prep_resp,
        json!({"command": "COM_STMT_PREPARE", "sql": sql}),
    ));
    d.push(call(
        2,
        &execute(77, 5),
        &exec_resp,
        json!({"command": "COM_STMT_EXECUTE", "sql": sql, "statement_id": 77,
               "params": [{"type": "LONGLONG", "type_code": 8, "unsigned": false, "value": 5}]}),
    ));
    let mut s = connected(Arc::new(d));
    let out = feed(&mut s, &pkt(0, &prep_req));
    assert_eq!(out.len(), prep_resp.len());
    assert_eq!(
        &out[5..9],
        &1u32.to_le_bytes(),
        "the mock's id, not the recorded 77"
    );
    assert_eq!(out[..5], prep_resp[..5]);
    assert_eq!(out[9..], prep_resp[9..]);
    // A changed value: ERR naming params[0].
    let out = feed(&mut s, &execute(1, 6));
    assert_eq!(
        my::parse_err(&packet(&out).unwrap().unwrap().1)
            .unwrap()
            .code,
        1105
    );
    let m = journal.misses();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].field.as_deref(), Some("params[0]"));
    assert_eq!(
        (m[0].expected_value.as_deref(), m[0].actual_value.as_deref()),
        (Some("5"), Some("6"))
    );
    assert_eq!(feed(&mut s, &execute(1, 5)), exec_resp);
    // An id the mock never handed out.
    let out = feed(&mut s, &execute(9, 5));
    assert_eq!(
        my::parse_err(&packet(&out).unwrap().unwrap().1)
            .unwrap()
            .code,
        1105
    );
}

#[test]
fn malformed_packets_never_panic() {
    let (d, j) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let mut s = Session::new(d.clone());
    s.greeting();
    feed(&mut s, &pkt(1, b"\x01\x02"));
    assert!(s.closed);
    assert!(
        j.misses()[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("malformed")
    );
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..2000usize {
        let mut bytes = Vec::new();
        for _ in 0..(round % 89) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x >> 32) as u8);
        }
        if bytes.len() > 5 {
            let len = u32::try_from(bytes.len() - 4).unwrap().to_le_bytes();
            bytes[..3].copy_from_slice(&len[..3]);
            bytes[3] = 0;
        }
        let mut s = Session::new(d.clone());
        if round % 2 == 0 {
            s.phase = Phase::Command;
            if let Some(b) = bytes.get_mut(4) {
                *b = [
                    com::QUERY,
                    com::STMT_EXECUTE,
                    com::STMT_PREPARE,
                    com::STMT_CLOSE,
                ][round % 4];
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        s.feed(&mut buf);
    }
}

#[test]
fn session_statements_use_by_rule_show_needs_the_recording() {
    let (d, j) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let mut s = connected(d);
    assert_eq!(
        feed(&mut s, &pkt(0, b"\x03USE ttdb")),
        [7, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]
    );
    let out = feed(&mut s, &pkt(0, b"\x03SELECT @@version"));
    assert_eq!(
        my::parse_err(&packet(&out).unwrap().unwrap().1)
            .unwrap()
            .code,
        1105
    );
    let m = j.misses();
    assert_eq!(m.len(), 1);
    assert!(
        m[0].reason
            .as_deref()
            .unwrap()
            .contains("not in the recording")
    );
}

/// Issue #26 item 4: a recording over TLS is replayed over TLS. The greeting offers
/// `CLIENT_SSL`; after the client's SSL request packet (seq 1) the connection becomes TLS
/// (verified against the mock CA) and the handshake response (seq 2) and commands go on inside.
#[tokio::test]
async fn ssl_request_packet_upgrades_to_tls_signed_by_the_mock_ca() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (d, j) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let (acc, conn, _ca) = crate::replay::mock::fixtures::tls_pair("127.0.0.1", None);
    let (mut app, mock) = tokio::io::duplex(64 << 10);
    let server = tokio::spawn(serve_upgrading(d, mock, Some(acc)));
    let mut head = [0u8; 4];
    app.read_exact(&mut head).await.unwrap();
    let mut greeting = vec![0u8; usize::from(head[0]) | usize::from(head[1]) << 8];
    app.read_exact(&mut greeting).await.unwrap();
    let g = my::parse_greeting(&greeting).unwrap();
    assert_ne!(g.capabilities & cap::SSL, 0, "CLIENT_SSL offered");
    // PyMySQL's SSL request: the first 32 bytes of its handshake response.
    let full = handshake_response(NATIVE);
    let mut ssl = full[4..36].to_vec();
    let caps = u32::from_le_bytes(ssl[..4].try_into().unwrap()) | cap::SSL;
    ssl[..4].copy_from_slice(&caps.to_le_bytes());
    app.write_all(&pkt(1, &ssl)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = match conn.connect(name, app).await {
        Ok(t) => t,
        Err(e) => panic!(
            "handshake: {e}; server: {:?}; misses: {:?}",
            server.await,
            j.misses()
        ),
    };
    let mut inner = full[4..].to_vec();
    inner[..4].copy_from_slice(&ssl[..4]);
    tls.write_all(&pkt(2, &inner)).await.unwrap();
    let mut ok = [0u8; 11];
    tls.read_exact(&mut ok).await.unwrap();
    assert_eq!(ok, [7, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0]);
    tls.write_all(&pkt(0, &[0x01])).await.unwrap(); // COM_QUIT
    tls.shutdown().await.unwrap();
    let _ = server.await.unwrap();
    assert!(j.misses().is_empty(), "{:?}", j.misses());
}

/// Without a TLS recording the greeting does not offer `CLIENT_SSL`, and a client asking
/// anyway gets an error naming it (as from a server without TLS).
#[test]
fn ssl_request_without_tls_offered_is_an_error() {
    let (d, j) = destination(Protocol::Mysql, &["flask/mysql_select.json"]);
    let mut s = Session::new(d);
    s.greeting();
    let (_, payload, _) = packet(&s.out).unwrap().unwrap();
    assert_eq!(
        my::parse_greeting(&payload).unwrap().capabilities & cap::SSL,
        0
    );
    s.out.clear();
    let full = handshake_response(NATIVE);
    let mut ssl = full[4..36].to_vec();
    let caps = u32::from_le_bytes(ssl[..4].try_into().unwrap()) | cap::SSL;
    ssl[..4].copy_from_slice(&caps.to_le_bytes());
    let out = feed(&mut s, &pkt(1, &ssl));
    assert_eq!(out[4], 0xFF);
    assert!(s.closed);
    assert!(j.misses()[0].call.contains("TLS request"));
}
