//! `timetracer-agent record -- <app>`: every endpoint, some on keep-alive connections.

use super::scenario::{App, Harness, Req, VerifyOpts};
use crate::require_root;

fn record(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::new(paths, name);
    h.start_record(app);

    let mut sent = Vec::new();
    // Keep-alive connection A: several requests back to back, including the 300 KiB body,
    // the chunked upstream and a POST.
    let mut a = h.connect();
    for (i, ep) in ["users/1001", "text", "big", "chunked", "echo"]
        .iter()
        .enumerate()
    {
        sent.push(h.send(&mut a, &Req::new(ep, &format!("a{i}"))));
    }
    // Keep-alive connection B: several calls in one request, an upstream failure, no call.
    let mut b = h.connect();
    for (i, ep) in ["multi", "fail", "plain", "users/1002"].iter().enumerate() {
        sent.push(h.send(&mut b, &Req::new(ep, &format!("b{i}"))));
    }
    // One request per connection.
    for (i, ep) in ["users/1003", "big", "text"].iter().enumerate() {
        sent.push(h.send_fresh(&Req::new(ep, &format!("f{i}"))));
    }
    a.close();
    b.close();

    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
}

#[test]
fn fastapi_record() {
    record(App::FastApi, "fastapi_record");
}

#[test]
fn flask_record() {
    record(App::Flask, "flask_record");
}
