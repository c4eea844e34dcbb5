//! 20 concurrent requests under `record`: an outbound call is either attributed exactly to
//! the request that made it, or marked `ambiguous`; never exactly to the wrong request.

use std::sync::{Arc, Barrier};
use std::thread;

use super::scenario::{App, Harness, Req, Sent};
use crate::require_root;

const N: usize = 20;

fn concurrency(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::new(paths, name);
    h.start_record(app);

    let barrier = Arc::new(Barrier::new(N));
    let sent: Vec<Sent> = thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let mut conn = h.connect();
                s.spawn(move || {
                    let req = Req::new(&format!("users/c{i}"), &format!("conc{i}"));
                    barrier.wait();
                    super::scenario::send(&mut conn, &req)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|t| {
                t.join()
                    .expect("client thread")
                    .unwrap_or_else(|e| h.fail(&[format!("request: {e}")], None))
            })
            .collect()
    });

    h.stop_agent();
    let dir = crate::util::load_cassettes(&h.out);
    let mut errs = h.common_problems(&dir);
    if dir.cassettes.len() != N {
        errs.push(format!(
            "{} cassettes for {N} requests",
            dir.cassettes.len()
        ));
    }
    let (mut exact, mut ambiguous) = (0, 0);
    for s in &sent {
        let who = &s.req.target;
        if s.resp.status != 200 || s.calls.len() != 1 {
            errs.push(format!(
                "{who}: client got {} with calls {:?}",
                s.resp.status, s.calls
            ));
            continue;
        }
        let matches: Vec<_> = dir
            .cassettes
            .iter()
            .filter(|c| c.json["request"]["target"] == who.as_str())
            .collect();
        let [c] = matches.as_slice() else {
            errs.push(format!("{who}: {} cassettes (want 1)", matches.len()));
            continue;
        };
        let cp = c.path.display();
        errs.extend(crate::util::check_body(
            &format!("{cp}: response.body"),
            &c.json["response"]["body"],
            &s.resp.body,
        ));
        let own_url = h.upstream_url(&s.req.calls[0]);
        let mut own_exact = 0;
        for (j, e) in c.http_events().iter().enumerate() {
            match e["attribution"]["status"].as_str() {
                Some("exact") => {
                    exact += 1;
                    own_exact += 1;
                    if e["signature"]["url"] != own_url.as_str() {
                        errs.push(format!(
                            "{cp}: events[{j}] WRONG exact attribution: {} in the cassette of {who}",
                            e["signature"]["url"]
                        ));
                    } else {
                        let call = &s.calls[0];
                        errs.extend(crate::util::check_body_digest(
                            &format!("{cp}: events[{j}].result.body"),
                            &e["result"]["body"],
                            &call.sha256,
                            call.len,
                        ));
                    }
                }
                Some("ambiguous") => ambiguous += 1,
                other => errs.push(format!("{cp}: events[{j}] attribution.status {other:?}")),
            }
        }
        if own_exact > 1 {
            errs.push(format!("{cp}: {own_exact} exact events for one call"));
        }
    }
    eprintln!("[{name}] {exact} exact, {ambiguous} ambiguous outbound events for {N} requests");
    h.assert_ok(&errs, &dir);
}

#[test]
fn fastapi_concurrency() {
    concurrency(App::FastApi, "fastapi_concurrency");
}

#[test]
fn flask_concurrency() {
    concurrency(App::Flask, "flask_concurrency");
}
