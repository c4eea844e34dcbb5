//! Issue 20 item 1 end to end: `timetracer-agent node` against a fake API server
//! ([`crate::fakeapi`], reached through a kubeconfig over plain HTTP) and "pods" made of real
//! uvicorn apps (asyncpg + redis.asyncio against real PostgreSQL and Redis servers) in
//! synthetic kubepods cgroup directories whose container ids are the fake pods'
//! `containerStatuses[].containerID`:
//!
//! - the selected pod (systemd layout) is recorded, HTTP + PostgreSQL + Redis, with the right
//!   `session.k8s` facts, under `OUT/NAMESPACE/POD/DATE/`;
//! - the pod the selector excludes (cgroupfs layout) and a pod of another node yield nothing;
//! - a pod created after the agent (Pending first, then its container: a guaranteed-QoS
//!   systemd path) is traced from its first request (its process `exec`s in its cgroup);
//! - a 410 forces a relist and an API outage cuts the watch: the agent keeps working;
//! - a DELETED pod is released: its process still runs but is no longer recorded;
//! - 20 pods created and deleted leave nothing behind (`/metrics` gauges back to one pod,
//!   container ids and per-pod series freed after the grace period);
//! - `/metrics` passes `promtool check metrics` (Debian `prometheus`), `/readyz`, `/healthz`.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::dbservers::{self, Needs};
use crate::fakeapi::{FakeApi, pod_json};
use crate::util::{self, HttpConn, Paths, ProcGuard, TestCgroup};
use crate::{require, require_root};

const NODE: &str = "node-1";
const TOKEN: &str = "tt-fake-sa-token";
/// The agent's grace period for a released pod's ids (`k8s::node::GRACE`) plus margin.
const GRACE: Duration = Duration::from_secs(17);

/// A fake pod: its identity and its container's cgroup.
struct FakePod {
    ns: &'static str,
    name: String,
    uid: String,
    id: String,
    labels: Vec<(&'static str, &'static str)>,
    cgroup: PathBuf,
}

#[derive(Clone, Copy)]
enum Layout {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
    SystemdBurstable,
    /// Guaranteed: `kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<id>.scope`
    SystemdGuaranteed,
    /// `kubepods/besteffort/pod<uid>/<id>`
    Cgroupfs,
}

impl FakePod {
    fn new(
        root: &Path,
        ns: &'static str,
        name: &str,
        labels: &[(&'static str, &'static str)],
        layout: Layout,
    ) -> Self {
        let h = util::sha256_hex(format!("{name}-{}", std::process::id()).as_bytes());
        let uid = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let id = util::sha256_hex(format!("container-{name}-{}", std::process::id()).as_bytes());
        let u_ = uid.replace('-', "_");
        let cgroup = match layout {
            Layout::SystemdBurstable => root.join(format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice/cri-containerd-{id}.scope"
            )),
            Layout::SystemdGuaranteed => root.join(format!(
                "kubepods.slice/kubepods-pod{u_}.slice/cri-containerd-{id}.scope"
            )),
            Layout::Cgroupfs => root.join(format!("kubepods/besteffort/pod{uid}/{id}")),
        };
        Self {
            ns,
            name: name.to_owned(),
            uid,
            id,
            labels: labels.to_vec(),
            cgroup,
        }
    }

    fn json(&self, node: &str, running: bool) -> Value {
        pod_json(
            self.ns,
            &self.name,
            &self.uid,
            node,
            &self.labels,
            &[],
            running.then_some(self.id.as_str()),
        )
    }

    fn make_cgroup(&self) {
        std::fs::create_dir_all(&self.cgroup)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", self.cgroup.display()));
    }

    /// Removes the container's cgroup (its processes must be gone).
    fn remove_cgroup(&self) {
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `sh -c 'echo $$ > DIR/cgroup.procs && exec "$@"' DIR ARGV…`: ARGV runs in the cgroup from
/// its `exec` on.
fn spawn_in(
    name: &str,
    cgroup: &Path,
    argv: &[OsString],
    env: &[(String, String)],
    paths: &Paths,
    log: &Path,
) -> ProcGuard {
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        r#"echo $$ > "$0/cgroup.procs" && exec "$@""#.into(),
        cgroup.into(),
    ];
    args.extend_from_slice(argv);
    let mut cmd = util::command("/bin/sh", args);
    cmd.current_dir(&paths.apps).env("PWD", &paths.apps);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ProcGuard::spawn(name, cmd, log).expect("spawn")
}

fn uvicorn(paths: &Paths, port: u16) -> Vec<OsString> {
    vec![
        paths.venv_bin("uvicorn").into(),
        "db_fastapi_app:app".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
    ]
}

fn get(port: u16, target: &str) -> util::HttpResponse {
    let mut c = HttpConn::connect(port).unwrap_or_else(|e| panic!("connect :{port}: {e}"));
    c.request("GET", target, None)
        .unwrap_or_else(|e| panic!("GET :{port}{target}: {e}"))
}

/// `/metrics` as (name{labels} → value).
fn metrics(port: u16) -> (String, Vec<(String, f64)>) {
    let r = get(port, "/metrics");
    assert_eq!(r.status, 200, "/metrics");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect();
    (text, samples)
}

fn metric(samples: &[(String, f64)], key: &str) -> Option<f64> {
    samples.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Polls `/metrics` until `key` satisfies `ok` (or `timeout`); returns the last value.
fn wait_metric(port: u16, key: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, s) = metrics(port);
        let v = metric(&s, key);
        if v.is_some_and(&ok) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, in order")]
fn node_mode() {
    let paths = require_root!();
    let needs = Needs {
        postgres: true,
        mariadb: false,
        redis: true,
        tls: false,
    };
    require!(dbservers::missing_prerequisite(needs));
    let cg = match TestCgroup::create("node") {
        Ok(cg) => cg,
        Err(e) => {
            util::skip_or_fail(&format!("cannot make a cgroup v2 directory: {e:#}"));
            return;
        }
    };
    let dir = util::temp_dir("node");
    let root = dir.path().to_path_buf();
    let servers = dbservers::start(needs, &root).expect("database servers");
    let env = servers.app_env();
    let mut api = FakeApi::start(TOKEN).expect("fake API server");
    let kubeconfig = root.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let web = [("app", "api"), ("tier", "web")];
    let selected = FakePod::new(&cg.dir, "shop", "api-0", &web, Layout::SystemdBurstable);
    let canary = FakePod::new(
        &cg.dir,
        "shop",
        "api-canary",
        &[("app", "api"), ("tier", "web"), ("canary", "true")],
        Layout::Cgroupfs,
    );
    let elsewhere = FakePod::new(
        &cg.dir,
        "shop",
        "api-other-node",
        &web,
        Layout::SystemdBurstable,
    );
    let mut apps = Vec::new();
    let mut ports = std::collections::HashMap::new();
    for p in [&selected, &canary] {
        p.make_cgroup();
        let port = util::free_port();
        let mut g = spawn_in(
            &p.name,
            &p.cgroup,
            &uvicorn(&paths, port),
            &env,
            &paths,
            &root,
        );
        g.wait_for_port(port, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
        apps.push(g);
        ports.insert(p.name.clone(), port);
        api.apply(p.json(NODE, true));
    }
    api.apply(elsewhere.json("node-2", true));

    let out = root.join("cassettes");
    let metrics_port = util::free_port();
    let mut agent = ProcGuard::spawn(
        "agent",
        {
            let mut c = util::command(
                &paths.agent,
                [
                    "node",
                    "--kubeconfig",
                    &kubeconfig.display().to_string(),
                    "--node-name",
                    NODE,
                    "-n",
                    "shop",
                    "-l",
                    "app=api,tier in (web,edge),!canary",
                    "--out",
                    &out.display().to_string(),
                    "--metrics-addr",
                    &format!("127.0.0.1:{metrics_port}"),
                ],
            );
            c.env(
                "TIMETRACER_LOG",
                "info,timetracer::k8s=debug,timetracer::correlate=debug",
            );
            c.env_remove("KUBECONFIG");
            c
        },
        &root,
    )
    .expect("spawn agent");
    let mut errs: Vec<String> = Vec::new();
    let fail = |agent: &ProcGuard, errs: &[String]| -> ! {
        panic!(
            "node mode:\n- {}\n--- agent stderr (tail) ---\n{}",
            errs.join("\n- "),
            util::tail(&agent.stderr_text(), 60)
        )
    };
    if let Err(e) = agent.wait_for_stderr("node node-1: recording", Duration::from_secs(60)) {
        fail(&agent, &[format!("agent not ready: {e:#}")]);
    }
    if get(metrics_port, "/readyz").status != 200 {
        errs.push("/readyz is not 200 once the agent said it is recording".into());
    }
    let requests = api.requests();
    if !requests
        .iter()
        .any(|r| r.contains("/api/v1/namespaces/shop/pods") && r.contains("spec.nodeName%3Dnode-1"))
    {
        errs.push(format!(
            "no list of shop's pods with fieldSelector spec.nodeName=node-1: {requests:?}"
        ));
    }

    // Selected and unselected pods serve requests.
    let sel_port = ports[&selected.name];
    let mut expect: Vec<(String, String)> = Vec::new(); // (pod, target)
    for ep in ["pg/select", "redis/basic", "mixed"] {
        let t = format!("/{ep}?req=sel-{}", ep.replace('/', "-"));
        let r = get(sel_port, &t);
        if r.status != 200 {
            errs.push(format!("GET {t}: {}", r.status));
        }
        expect.push((selected.name.clone(), t));
    }
    for i in 0..2 {
        let r = get(ports[&canary.name], &format!("/redis/basic?req=canary-{i}"));
        assert_eq!(r.status, 200, "canary app");
    }

    // A pod created after the agent: Pending, then its container.
    let late = FakePod::new(&cg.dir, "shop", "api-late", &web, Layout::SystemdGuaranteed);
    api.apply(late.json(NODE, false));
    late.make_cgroup();
    api.apply(late.json(NODE, true));
    if let Err(e) = agent.wait_for_stderr(&late.id, Duration::from_secs(10)) {
        errs.push(format!("the late pod's container was not followed: {e:#}"));
    }
    let late_port = util::free_port();
    let mut late_app = spawn_in(
        "api-late",
        &late.cgroup,
        &uvicorn(&paths, late_port),
        &env,
        &paths,
        &root,
    );
    late_app
        .wait_for_port(late_port, Duration::from_secs(60))
        .expect("late app");
    // Traced from its first syscall after exec: the kernel added it (a Join record), not a
    // rescan.
    let joined = format!("pid={}", late_app.pid());
    if !agent
        .stderr_text()
        .lines()
        .any(|l| l.contains("joined by exec") && l.contains(&joined))
    {
        errs.push(format!(
            "the late pod's process (pid {}) was not added by the kernel at exec",
            late_app.pid()
        ));
    }
    for ep in ["pg/select", "redis/basic"] {
        let t = format!("/{ep}?req=late-{}", ep.replace('/', "-"));
        assert_eq!(get(late_port, &t).status, 200, "late app {t}");
        expect.push((late.name.clone(), t));
    }

    // Watch trouble: a 410 forces a relist, an outage cuts the watch; the agent goes on.
    api.expire();
    let relists = wait_metric(
        metrics_port,
        "timetracer_k8s_watch_relists_total",
        Duration::from_secs(20),
        |v| v >= 1.0,
    );
    if relists.is_none_or(|v| v < 1.0) {
        errs.push(format!("no relist after a 410 (relists {relists:?})"));
    }
    api.outage(Duration::from_secs(3));
    let restarts = wait_metric(
        metrics_port,
        "timetracer_k8s_watch_restarts_total",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    if restarts.is_none_or(|v| v < 1.0) {
        errs.push(format!(
            "the outage was not counted as a watch restart ({restarts:?})"
        ));
    }
    let t = "/redis/basic?req=sel-after-outage".to_owned();
    assert_eq!(get(sel_port, &t).status, 200);
    expect.push((selected.name.clone(), t));
    // A pod added after the outage is seen: the watch came back.
    let cycle_pods: Vec<FakePod> = (0..20)
        .map(|i| {
            FakePod::new(
                &cg.dir,
                "shop",
                &format!("cycle-{i}"),
                &web,
                if i % 2 == 0 {
                    Layout::SystemdBurstable
                } else {
                    Layout::Cgroupfs
                },
            )
        })
        .collect();

    // DELETED: the late pod is released; its process still runs and is no longer recorded.
    api.delete(&late.uid);
    if let Err(e) = agent.wait_for_stderr("Pod deleted; released", Duration::from_secs(30)) {
        errs.push(format!("the deleted pod was not released: {e:#}"));
    }
    assert_eq!(
        get(late_port, "/redis/basic?req=late-after-delete").status,
        200
    );

    // 20 pods created and deleted (2 rounds of 10, each with a process in its cgroup).
    for round in cycle_pods.chunks(10) {
        let mut sleepers = Vec::new();
        for p in round {
            p.make_cgroup();
            sleepers.push(spawn_in(
                &p.name,
                &p.cgroup,
                &["sleep".into(), "120".into()],
                &[],
                &paths,
                &root,
            ));
            api.apply(p.json(NODE, true));
        }
        let attached = wait_metric(
            metrics_port,
            "timetracer_attached_containers",
            Duration::from_secs(20),
            |v| v >= 11.0,
        );
        if attached != Some(11.0) {
            errs.push(format!(
                "{} pods attached, want 11 (api-0 + 10)",
                attached.unwrap_or(-1.0)
            ));
        }
        for p in round {
            api.delete(&p.uid);
        }
        drop(sleepers);
        for p in round {
            p.remove_cgroup();
        }
        let attached = wait_metric(
            metrics_port,
            "timetracer_attached_pods",
            Duration::from_secs(20),
            |v| v <= 1.0,
        );
        if attached != Some(1.0) {
            errs.push(format!(
                "{attached:?} pods attached after the deletes, want 1"
            ));
        }
    }
    std::thread::sleep(GRACE);
    let (text, samples) = metrics(metrics_port);
    let want = [
        ("timetracer_attached_pods", 1.0),
        ("timetracer_attached_containers", 1.0),
        ("timetracer_k8s_known_containers", 1.0),
        // api-0 only: the API server filters by the label selector (the canary never comes).
        ("timetracer_k8s_known_pods", 1.0),
        ("timetracer_ready", 1.0),
        (
            "timetracer_pod_requests_total{namespace=\"shop\",pod=\"api-0\"}",
            4.0,
        ),
        (
            "timetracer_pod_cassettes_total{namespace=\"shop\",pod=\"api-0\"}",
            4.0,
        ),
    ];
    for (k, v) in want {
        if metric(&samples, k) != Some(v) {
            errs.push(format!(
                "/metrics {k} = {:?}, want {v}",
                metric(&samples, k)
            ));
        }
    }
    if text.contains("cycle-") || text.contains("api-late") {
        errs.push("released pods still have series after the grace period".into());
    }
    // The deleted pod's process left the kernel's target set: its later request is not even
    // seen (not merely discarded), and every request seen belonged to a selected pod.
    if metric(&samples, "timetracer_unattributed_requests_total") != Some(0.0) {
        errs.push(format!(
            "unattributed requests: {:?}, want 0",
            metric(&samples, "timetracer_unattributed_requests_total")
        ));
    }
    if metric(&samples, "timetracer_requests_total") != Some(expect.len() as f64) {
        errs.push(format!(
            "timetracer_requests_total = {:?}, want {} (the selected pods' requests only)",
            metric(&samples, "timetracer_requests_total"),
            expect.len()
        ));
    }
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("promtool stdin");
            let o = child.wait_with_output().expect("promtool");
            if !o.status.success() {
                errs.push(format!(
                    "promtool check metrics: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        Err(e) => util::skip_or_fail(&format!(
            "promtool not found ({e}): apt-get install prometheus; /metrics not checked by it"
        )),
    }
    if get(metrics_port, "/healthz").status != 200 {
        errs.push("/healthz is not 200".into());
    }

    agent.signal(Signal::SIGINT).expect("SIGINT");
    match agent.wait_timeout(Duration::from_secs(30)) {
        Some(s) if s.success() => {}
        other => errs.push(format!("agent exit: {other:?}")),
    }
    drop(late_app);
    drop(apps);

    // The cassettes: exactly the selected pods' requests, with their facts, under their pod.
    let cdir = util::load_cassettes(&out);
    errs.extend(cdir.problems.iter().cloned());
    let mut got: Vec<(String, String)> = Vec::new();
    for c in &cdir.cassettes {
        errs.extend(util::schema_problems(&paths, c));
        let k = &c.json["session"]["k8s"];
        let pod = k["pod"].as_str().unwrap_or("").to_owned();
        let rel = c.path.strip_prefix(&out).unwrap_or(&c.path);
        if !rel.starts_with(format!("shop/{pod}/")) {
            errs.push(format!("{} is not under shop/{pod}/", rel.display()));
        }
        let uid = if pod == selected.name {
            &selected.uid
        } else {
            &late.uid
        };
        let facts_ok = k["namespace"] == "shop"
            && k["container"] == "web"
            && k["node"] == NODE
            && k["pod_uid"].as_str() == Some(uid.as_str())
            && k["labels"]["app"] == "api"
            && k["labels"]["tier"] == "web";
        if !facts_ok {
            errs.push(format!("{}: k8s facts {k}", rel.display()));
        }
        let target = c.target();
        let types: Vec<&str> = c.json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["type"].as_str())
            .collect();
        let want = if target.contains("pg-select") {
            "db.query"
        } else if target.contains("redis") {
            "redis"
        } else {
            ""
        };
        if !want.is_empty() && !types.contains(&want) {
            errs.push(format!("{target}: no {want} event in {types:?}"));
        }
        if target.contains("mixed") && !(types.contains(&"db.query") && types.contains(&"redis")) {
            errs.push(format!(
                "{target}: want db.query and redis events, got {types:?}"
            ));
        }
        got.push((pod, target));
    }
    got.sort();
    expect.sort();
    if got != expect {
        errs.push(format!(
            "cassettes (pod, target):\n  got  {got:?}\n  want {expect:?}"
        ));
    }
    if !errs.is_empty() {
        fail(&agent, &errs);
    }
}
