//! SIGKILL the attached agent under load: the app keeps serving, and no half-written cassette
//! is left behind (every `.json` parses; only `.tmp-*` files may remain).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::scenario::{App, Harness, Req, send};
use crate::require_root;
use crate::util::HttpConn;

fn agent_sigkill(app: App, name: &str) {
    let paths = require_root!();
    let mut h = Harness::new(paths, name);
    h.start_app(app);
    h.attach();

    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let mut total = 0;
    thread::scope(|s| {
        let load = s.spawn(|| {
            let mut n = 0;
            let mut conn: Option<HttpConn> = None;
            while !stop.load(Ordering::Relaxed) {
                // Alternate keep-alive reuse and fresh connections.
                if n % 3 == 0 || conn.is_none() {
                    conn = HttpConn::connect(h.app_port).ok();
                }
                let ep = if n % 5 == 4 {
                    "big".to_owned()
                } else {
                    format!("users/k{n}")
                };
                let req = Req::new(&ep, &format!("kill{n}"));
                let result = match conn.as_mut() {
                    Some(c) => send(c, &req).map_err(|e| e.to_string()),
                    None => Err("connect failed".to_owned()),
                };
                match result {
                    Ok(sent) if sent.resp.status == 200 && sent.calls.len() == 1 => {}
                    Ok(sent) => failures.lock().unwrap().push(format!(
                        "{}: {} {:?}",
                        req.target, sent.resp.status, sent.calls
                    )),
                    Err(e) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e}", req.target));
                        conn = None;
                    }
                }
                n += 1;
            }
            n
        });
        thread::sleep(Duration::from_millis(1000));
        let agent = h.agent.as_mut().expect("agent");
        agent.signal(Signal::SIGKILL).expect("SIGKILL agent");
        let status = agent.wait_timeout(Duration::from_secs(10));
        eprintln!("[{name}] agent after SIGKILL: {status:?}");
        thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        total = load.join().expect("load thread");
    });

    let mut errs = failures.into_inner().unwrap();
    if total < 5 {
        errs.push(format!("only {total} requests completed during the load"));
    }
    // The app still serves, with correct upstream bodies.
    for i in 0..3 {
        let s = h.send_fresh(&Req::new(&format!("users/after{i}"), &format!("after{i}")));
        if s.resp.status != 200 || s.calls.len() != 1 {
            errs.push(format!("after SIGKILL: {} {:?}", s.resp.status, s.calls));
        }
    }
    let dir = crate::util::load_cassettes(&h.out);
    // Unparseable or odd files are the failure; `.tmp-*` leftovers are tolerated here.
    errs.extend(dir.problems.iter().cloned());
    eprintln!(
        "[{name}] {total} requests under load; {} cassettes, {} temp files after SIGKILL",
        dir.cassettes.len(),
        dir.temp_files.len()
    );
    h.assert_ok(&errs, &dir);
}

#[test]
fn fastapi_agent_sigkill() {
    agent_sigkill(App::FastApi, "fastapi_agent_sigkill");
}

#[test]
fn flask_agent_sigkill() {
    agent_sigkill(App::Flask, "flask_agent_sigkill");
}
