//! Issue #4: HTTPS without MITM. Plaintext is read through OpenSSL uprobes; the tests compare
//! it with what the apps and the upstream themselves report. Certificates come from a test CA
//! made per test (`util::make_test_pki`), with certificate verification on everywhere.
use super::scenario::{App, Harness, Req, Sent, VerifyOpts};
use crate::{require_root, util};

fn exchange_set(h: &Harness) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut a = h.connect();
    for (i, ep) in ["users/501", "big", "chunked", "echo", "text"]
        .iter()
        .enumerate()
    {
        sent.push(h.send(&mut a, &Req::new(ep, &format!("t{i}"))));
    }
    let mut b = h.connect();
    for (i, ep) in ["multi", "fail", "plain"].iter().enumerate() {
        sent.push(h.send(&mut b, &Req::new(ep, &format!("u{i}"))));
    }
    a.close();
    b.close();
    sent
}

fn https_upstream(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::with_tls(paths, name, true);
    h.start_record(app);
    let sent = exchange_set(&h);
    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    let mut errs = errs;
    errs.extend(no_ciphertext(&dir));
    h.assert_ok(&errs, &dir);
}

/// No event may carry TLS records: every stored body and the events' headers are plaintext.
fn no_ciphertext(dir: &util::CassetteDir) -> Vec<String> {
    let mut errs = Vec::new();
    for c in &dir.cassettes {
        for e in c.http_events() {
            if e["request"]["header_list"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                errs.push(format!(
                    "{}: event without plaintext request headers: {e}",
                    c.path.display()
                ));
            }
        }
    }
    errs
}

/// (a) FastAPI on uvicorn, `httpx.AsyncClient` → HTTPS upstream (asyncio MemoryBIO TLS).
#[test]
fn fastapi_https_upstream() {
    https_upstream(App::FastApi, "fastapi_https_upstream");
}

/// (b) Flask on gunicorn, `requests` → the same upstream (blocking-socket TLS).
#[test]
fn flask_https_upstream() {
    https_upstream(App::Flask, "flask_https_upstream");
}

/// (c) uvicorn serving HTTPS itself: inbound requests captured from its TLS plaintext.
#[test]
fn fastapi_serves_https() {
    let paths = require_root!();
    let mut h = Harness::with_tls(paths, "fastapi_serves_https", true);
    h.serve_tls();
    h.start_record(App::FastApi);
    let sent = exchange_set(&h);
    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
}

/// (d) An app that loads `ssl` only after the agent attached.
#[test]
fn lazy_ssl_import_after_attach() {
    let paths = require_root!();
    let mut h = Harness::with_tls(paths, "lazy_ssl_import", true);
    h.start_app(App::LazySsl);
    let pid = h.app.as_ref().expect("app").pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        !maps.contains("libssl"),
        "the app must not have loaded libssl before the attach"
    );
    h.attach();
    let mut sent = Vec::new();
    let mut c = h.connect();
    for (i, uid) in [601, 602].iter().enumerate() {
        let req = Req {
            method: "GET",
            target: format!("/users/{uid}?req=l{i}"),
            body: None,
            status: 200,
            calls: vec![format!("/json/{uid}")],
            traceback: false,
        };
        sent.push(h.send(&mut c, &req));
    }
    c.close();
    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
}
