//! `timetracer-agent attach --pid`: connections (client side and the app's pooled upstream
//! connection) opened before the attach keep being used after it.

use std::time::Duration;

use super::scenario::{App, Harness, Req, VerifyOpts};
use crate::require_root;

fn attach(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::new(paths, name);
    h.start_app(app);

    // Before the attach: one request on each keep-alive connection; this also warms the
    // app's pooled connection to the upstream.
    let mut conns: Vec<_> = (0..2).map(|_| h.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let pre = h.send(c, &Req::new(&format!("users/pre{i}"), &format!("pre{i}")));
        assert_eq!(pre.resp.status, 200, "pre-attach request failed: {pre:?}");
    }

    h.attach();

    let mut sent = Vec::new();
    // The same connections, now traced mid-stream.
    for (i, ep) in ["users/2001", "big", "chunked", "echo"].iter().enumerate() {
        sent.push(h.send(&mut conns[0], &Req::new(ep, &format!("k0-{i}"))));
    }
    for (i, ep) in ["multi", "fail", "plain"].iter().enumerate() {
        sent.push(h.send(&mut conns[1], &Req::new(ep, &format!("k1-{i}"))));
    }
    // New connections.
    let mut fresh = h.connect();
    for (i, ep) in ["text", "users/2002"].iter().enumerate() {
        sent.push(h.send(&mut fresh, &Req::new(ep, &format!("n{i}"))));
    }
    sent.push(h.send_fresh(&Req::new("users/2003", "n2")));
    fresh.close();
    for c in conns {
        c.close();
    }

    let status = h.stop_agent();
    let (dir, mut errs) = h.verify(&sent, VerifyOpts::default());
    if !status.success() {
        errs.push(format!(
            "attach agent exited with {status} after SIGINT (want 0)"
        ));
    }
    // Detaching must leave the app healthy.
    std::thread::sleep(Duration::from_millis(100));
    let after = h.send_fresh(&Req::new("users/3001", "after"));
    if after.resp.status != 200 || after.calls.len() != 1 {
        errs.push(format!(
            "app unhealthy after detach: {} {:?}",
            after.resp.status, after.calls
        ));
    }
    h.assert_ok(&errs, &dir);
}

#[test]
fn fastapi_attach() {
    attach(App::FastApi, "fastapi_attach");
}

#[test]
fn flask_attach() {
    attach(App::Flask, "flask_attach");
}
