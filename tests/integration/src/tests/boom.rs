//! An unhandled exception: the server logs the traceback to stderr and answers 500; the
//! cassette carries `error.traceback`.

use super::scenario::{App, Harness, Req, VerifyOpts};
use crate::require_root;

fn boom(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::new(paths, name);
    h.start_record(app);

    // Fresh connections: after a 500 some servers close the connection.
    let sent = vec![
        h.send_fresh(&Req::new("plain", "p0")),
        h.send_fresh(&Req::new("boom", "boom0")),
        h.send_fresh(&Req::new("users/4001", "u0")),
        h.send_fresh(&Req::new("boom", "boom1")),
    ];

    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
}

#[test]
fn fastapi_boom() {
    boom(App::FastApi, "fastapi_boom");
}

#[test]
fn flask_boom() {
    boom(App::Flask, "flask_boom");
}
