//! `timetracer-agent attach --pid`: connections (client side and the app's pooled upstream
//! connection) opened before the attach keep being used after it. `attach --cgroup`: every
//! process of a cgroup and the cgroups below it, including processes started there later.

use std::ffi::OsString;
use std::time::Duration;

use super::scenario::{self, App, Harness, Req, VerifyOpts};
use crate::require_root;
use crate::util::{self, HttpConn, ProcGuard, TestCgroup};

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

/// `attach --cgroup DIR` (what node mode does for a selected container): a process already in
/// the cgroup is recorded; a process that `exec`s in a sub-cgroup created after the attach is
/// traced from its first syscall (the kernel's `sched_process_exec` adds it: a `Join` record,
/// not the 1 s rescan); a process outside the cgroup yields nothing; when the cgroups are removed
/// the agent ends by itself with exit 0.
#[test]
fn cgroup_attach() {
    let paths = require_root!();
    let cg = match TestCgroup::create("cgroup_attach") {
        Ok(cg) => cg,
        Err(e) => {
            util::skip_or_fail(&format!("cannot make a cgroup v2 directory: {e:#}"));
            return;
        }
    };
    let mut h = Harness::new(paths, "cgroup_attach");
    h.start_app(App::FastApi);
    let selected = h.app.as_ref().expect("app").pid();
    TestCgroup::move_into(&cg.dir, selected).expect("move the app into the cgroup");

    // The same app outside the cgroup: never recorded.
    let other_port = util::free_port();
    let argv = App::FastApi.argv(&h.paths, other_port);
    let mut cmd = util::command(&argv[0], &argv[1..]);
    h.app_env(&mut cmd);
    let mut other = ProcGuard::spawn("unselected", cmd, &h.root()).expect("spawn");
    other
        .wait_for_port(other_port, Duration::from_secs(30))
        .unwrap_or_else(|e| h.fail(&[format!("unselected app: {e:#}")], None));

    let cg_arg: OsString = cg.dir.clone().into();
    h.attach_to(
        &["--cgroup".into(), cg_arg],
        &[(
            "TIMETRACER_LOG",
            "info,timetracer::record=debug,timetracer::correlate=debug",
        )],
    );

    let mut sent = Vec::new();
    let mut conn = h.connect();
    for (i, ep) in ["users/4001", "chunked", "multi"].iter().enumerate() {
        sent.push(h.send(&mut conn, &Req::new(ep, &format!("sel{i}"))));
    }
    conn.close();
    sent.push(h.send_fresh(&Req::new("users/4002", "sel-fresh")));

    // A sub-cgroup made after the attach; once the agent follows it, a process execs there.
    let late_dir = cg.child("late").expect("sub-cgroup");
    let agent = h.agent.as_mut().expect("agent");
    let needle = format!("{}", late_dir.display());
    if let Err(e) = agent.wait_for_stderr(&needle, Duration::from_secs(10)) {
        h.fail(
            &[format!("agent did not follow the new sub-cgroup: {e:#}")],
            None,
        );
    }
    let late_port = util::free_port();
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        r#"echo $$ > "$0/cgroup.procs" && exec "$@""#.into(),
        late_dir.clone().into(),
    ];
    args.extend(App::FastApi.argv(&h.paths, late_port));
    let mut cmd = util::command("/bin/sh", args);
    h.app_env(&mut cmd);
    let mut late = ProcGuard::spawn("late", cmd, &h.root()).expect("spawn");
    late.wait_for_port(late_port, Duration::from_secs(30))
        .unwrap_or_else(|e| h.fail(&[format!("late app: {e:#}")], None));
    let mut late_conn = HttpConn::connect(late_port).expect("connect to the late app");
    for (i, ep) in ["users/4003", "echo"].iter().enumerate() {
        let r = Req::new(ep, &format!("late{i}"));
        sent.push(scenario::send(&mut late_conn, &r).expect("request to the late app"));
    }
    late_conn.close();

    let mut other_conn = HttpConn::connect(other_port).expect("connect to the unselected app");
    for i in 0..2 {
        let r = Req::new("users/4099", &format!("unselected{i}"));
        let got = scenario::send(&mut other_conn, &r).expect("request to the unselected app");
        assert_eq!(got.resp.status, 200, "unselected app failed: {got:?}");
    }
    other_conn.close();

    let mut errs = Vec::new();
    let stderr = h.agent.as_ref().expect("agent").stderr_text();
    let joined = format!("pid={}", late.pid());
    if !stderr
        .lines()
        .any(|l| l.contains("joined by exec") && l.contains(&joined))
    {
        errs.push(format!(
            "the late process (pid {}) was not added by the kernel at exec (no Join record)",
            late.pid()
        ));
    }
    // Removing the cgroups (their processes are killed) ends the attach by itself.
    std::thread::sleep(Duration::from_millis(500));
    cg.remove();
    let agent = h.agent.as_mut().expect("agent");
    match agent.wait_timeout(Duration::from_secs(20)) {
        Some(s) if s.success() => {}
        Some(s) => errs.push(format!(
            "agent exited with {s} after its cgroups were removed"
        )),
        None => errs.push("agent still running 20 s after its cgroups were removed".into()),
    }
    let (dir, more) = h.verify(&sent, VerifyOpts::default());
    errs.extend(more);
    drop(other);
    h.assert_ok(&errs, &dir);
}
