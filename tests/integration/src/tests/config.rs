//! The agent reads `timetracer.toml` from its working directory (the same `Config` as the
//! `timetracer` tools): `service` and `sample_rate` change what a real recording writes, and
//! an invalid file stops the agent with a message naming the file and the key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::scenario::{App, Harness, Req};
use crate::require_root;
use crate::util::{self, ProcGuard};

const REQUESTS: usize = 40;

/// `timetracer-agent attach --pid PID --out OUT` started in `cwd`, isolated from the test's own
/// configuration (variables, user file).
fn agent_in(paths: &util::Paths, cwd: &Path, pid: u32, out: &Path) -> Command {
    let mut cmd = util::command(
        &paths.agent,
        [
            "attach".into(),
            "--pid".into(),
            pid.to_string().into(),
            "--out".into(),
            out.as_os_str().to_owned(),
        ],
    );
    cmd.current_dir(cwd).env("XDG_CONFIG_HOME", cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("TIMETRACER_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn toml_in_working_directory() {
    let paths = require_root!();
    let mut h = Harness::new(paths.clone(), "config_toml");
    h.start_app(App::FastApi);
    let pid = h.app.as_ref().expect("app").pid();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("timetracer.toml"),
        "service = \"from-toml\"\nsample_rate = 0.5\n",
    )
    .unwrap();
    let out = h.out_dir();
    let cmd = agent_in(&paths, cwd.path(), pid, &out);
    let mut agent = ProcGuard::spawn("agent", cmd, cwd.path()).expect("spawn agent");
    agent
        .wait_for_stderr("attached", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.diagnostics()));
    h.agent = Some(agent);

    let mut conn = h.connect();
    for i in 0..REQUESTS {
        let s = h.send(&mut conn, &Req::new("plain", &format!("s{i}")));
        assert_eq!(s.resp.status, 200, "{s:?}");
    }
    conn.close();
    let status = h.stop_agent();
    let stderr = h.agent.as_ref().expect("agent").stderr_text();
    assert!(status.success(), "agent exited with {status}\n{stderr}");

    let dir = util::load_cassettes(&out);
    let mut errs = h.common_problems(&dir);
    let n = dir.cassettes.len();
    // Binomial(40, 0.5): outside 5..=35 has a probability of about 1e-7.
    if !(5..=35).contains(&n) {
        errs.push(format!(
            "{n} of {REQUESTS} requests written with sample_rate = 0.5"
        ));
    }
    for c in &dir.cassettes {
        if c.json["session"]["service"] != "from-toml" {
            errs.push(format!(
                "{}: session.service = {}",
                c.path.display(),
                c.json["session"]["service"]
            ));
        }
        if c.json["policies"]["sampling"]["rate"] != 0.5 {
            errs.push(format!(
                "{}: policies.sampling.rate = {}",
                c.path.display(),
                c.json["policies"]["sampling"]["rate"]
            ));
        }
    }
    // Every request is either written or counted as sampled out.
    let sampled_out = REQUESTS - n;
    if !stderr.contains(&format!("sampled_out={sampled_out}")) {
        errs.push(format!(
            "the exit summary does not count {sampled_out} sampled_out:\n{}",
            util::tail(&stderr, 5)
        ));
    }
    h.assert_ok(&errs, &dir);
}

#[test]
fn invalid_toml_stops_the_agent() {
    let paths = require_root!();
    let out = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("sample_rate = \"lots\"\n", "`sample_rate`"),
        ("smaple_rate = 0.5\n", "`smaple_rate`"),
        ("sample_rate = 2\n", "`sample_rate`"),
    ] {
        let cwd = tempfile::tempdir().unwrap();
        let file = cwd.path().join("timetracer.toml");
        std::fs::write(&file, text).unwrap();
        let res = agent_in(&paths, cwd.path(), std::process::id(), out.path())
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(key),
            "{text:?}: the message must name {} and {key}: {stderr}",
            file.display()
        );
        assert!(
            !stderr.contains("attached"),
            "{text:?}: the agent started: {stderr}"
        );
    }
}
