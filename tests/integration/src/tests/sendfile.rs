//! Bytes sent with sendfile(2) never pass through user memory. The kernel reports them as lost
//! at their exact stream position, so the next request on the same keep-alive connection is
//! still framed right. Regression test for gunicorn serving Flask's `send_file`.
use super::scenario::{App, Harness};
use crate::{require_root, util};

#[test]
fn flask_sendfile_then_keepalive() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "flask_sendfile");
    h.start_record(App::Flask);
    let mut conn = h.connect();
    let dl = conn
        .request("GET", "/download?req=s0", None)
        .expect("download");
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body.len(), 200 * 1024);
    let next = conn.request("GET", "/text?req=s1", None).expect("text");
    assert_eq!(next.status, 200);
    conn.close();
    h.stop_agent();
    let agent_log = h
        .agent
        .as_ref()
        .map(util::ProcGuard::stderr_text)
        .unwrap_or_default();

    let dir = util::load_cassettes(&h.out);
    let find = |tag: &str| {
        dir.cassettes
            .iter()
            .find(|c| c.target().ends_with(tag))
            .unwrap_or_else(|| h.fail(&[format!("no cassette for {tag}")], Some(&dir)))
    };
    let d = find("req=s0");
    let body = &d.json["response"]["body"];
    let mut errs = Vec::new();
    if !agent_log.contains("sendfile_bytes=204800") {
        errs.push(
            "the agent did not report the 204800 bytes gunicorn sent with sendfile(2)".into(),
        );
    }
    if d.json["response"]["status"] != 200 {
        errs.push(format!("download status {}", d.json["response"]["status"]));
    }
    if body["size_bytes"] != 200 * 1024 {
        errs.push(format!(
            "download size_bytes {} (want {})",
            body["size_bytes"],
            200 * 1024
        ));
    }
    if body["truncated"] != true {
        errs.push(
            "download body must be marked truncated (sendfile bytes are not captured)".into(),
        );
    }
    let t = find("req=s1");
    if t.json["response"]["status"] != 200 {
        errs.push(format!(
            "request after the download: status {}",
            t.json["response"]["status"]
        ));
    }
    let stored = util::body_bytes(&t.json["response"]["body"]).unwrap_or_default();
    if stored != next.body {
        errs.push(
            "request after the download: response body differs from what the client got".into(),
        );
    }
    let calls: Vec<&str> = t
        .http_events()
        .iter()
        .filter_map(|e| e["signature"]["url"].as_str())
        .collect();
    if calls.len() != 1 || !calls[0].ends_with("/text") {
        errs.push(format!(
            "request after the download: calls {calls:?}, want one /text"
        ));
    }
    if !errs.is_empty() {
        h.fail(&errs, Some(&dir));
    }
}
