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
//! - 20 pods created and deleted (200 with `TIMETRACER_NODE_CYCLES=200`, `--long`) leave
//!   nothing behind (`/metrics` gauges back to one pod, container ids and per-pod series
//!   freed after the grace period);
//! - `/metrics` passes `promtool check metrics` (Debian `prometheus`), `/readyz`, `/healthz`.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::scenario::App;
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

/// Fails the test with `errs` and the agent's last words.
fn fail(what: &str, agent: &ProcGuard, errs: &[String]) -> ! {
    panic!(
        "{what}:\n- {}\n--- agent stderr (tail) ---\n{}",
        errs.join("\n- "),
        util::tail(&agent.stderr_text(), 60)
    )
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
    let fail = |agent: &ProcGuard, errs: &[String]| fail("node mode", agent, errs);
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
    // 20 in CI; `cargo xtask test --long` soaks with 200 (TIMETRACER_NODE_CYCLES).
    let cycles: usize = std::env::var("TIMETRACER_NODE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 10)
        .unwrap_or(20);
    let cycle_pods: Vec<FakePod> = (0..cycles)
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

    // `cycles` pods created and deleted (rounds of 10, each with a process in its cgroup).
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

/// Why the in-cluster tests cannot run: no `unshare(1)` for the agent's mount namespace.
fn missing_unshare() -> Option<String> {
    util::which("unshare")
        .is_none()
        .then(|| "unshare(1) not found (util-linux)".to_owned())
}

/// A service account as the kubelet mounts it: `token`, `ca.crt`, `namespace`.
fn service_account(dir: &Path, token: &str, ca: &Path) -> PathBuf {
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).expect("mkdir serviceaccount");
    std::fs::write(sa.join("token"), token).expect("token");
    std::fs::copy(ca, sa.join("ca.crt")).expect("ca.crt");
    std::fs::write(sa.join("namespace"), "timetracer").expect("namespace");
    sa
}

/// `timetracer-agent ARGS` as in a pod: no kubeconfig (no `--kubeconfig`, no `KUBECONFIG`, a
/// `HOME` without `.kube`), `KUBERNETES_SERVICE_HOST=127.0.0.1` and `KUBERNETES_SERVICE_PORT`
/// of `api`, and `sa` bind-mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount
/// in a mount namespace of the agent's own (`unshare --mount --propagation private`: the
/// mounts never reach the host; a tmpfs over /run in that namespace holds the mount point, so
/// the host's /run is not written either).
fn in_cluster_agent(
    paths: &Paths,
    root: &Path,
    name: &str,
    sa: &Path,
    api: &FakeApi,
    args: &[String],
) -> ProcGuard {
    const SCRIPT: &str = r#"set -e
run=$(readlink -f /var/run)
mount -t tmpfs -o mode=0755,size=1m tt-run "$run"
mkdir -p "$run/secrets/kubernetes.io/serviceaccount"
mount --bind "$0" "$run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$run/secrets/kubernetes.io/serviceaccount"
exec "$@""#;
    let mut argv: Vec<OsString> = vec![
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        sa.into(),
        paths.agent.clone().into(),
    ];
    argv.extend(args.iter().map(OsString::from));
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    let mut cmd = util::command("unshare", argv);
    cmd.env_remove("KUBECONFIG")
        .env("HOME", &home)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", api.addr.port().to_string())
        .env("TIMETRACER_LOG", "info,timetracer::k8s=debug");
    ProcGuard::spawn(name, cmd, root).expect("spawn agent")
}

/// The in-cluster path (issue 20): no kubeconfig, the pod's service account mounted where the
/// kubelet mounts it (in the agent's private mount namespace), the API server over HTTPS with
/// a certificate of a test CA made now (`openssl`, no key in the repository) that names
/// 127.0.0.1, as a real one names the `kubernetes` Service's ClusterIP. The agent lists and
/// watches the node's pods over TLS with the token (the fake counts the requests that carried
/// it over TLS) and records the selected pod's requests with its `session.k8s` facts.
#[test]
fn node_mode_in_cluster() {
    let paths = require_root!();
    require!(missing_unshare());
    let cg = match TestCgroup::create("node-incluster") {
        Ok(cg) => cg,
        Err(e) => {
            util::skip_or_fail(&format!("cannot make a cgroup v2 directory: {e:#}"));
            return;
        }
    };
    let secrets_before = Path::new("/run/secrets").exists();
    let dir = util::temp_dir("node-incluster");
    let root = dir.path().to_path_buf();
    let pki_dir = root.join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = util::make_test_pki(&pki_dir).expect("test PKI (openssl)");
    let api = FakeApi::start_tls(TOKEN, &pki).expect("fake API server (HTTPS)");
    let sa = service_account(&root, TOKEN, &pki.ca);

    let pod = FakePod::new(
        &cg.dir,
        "shop",
        "api-tls",
        &[("app", "api")],
        Layout::SystemdBurstable,
    );
    pod.make_cgroup();
    let port = util::free_port();
    let argv = App::FastApi.argv(&paths, port);
    let mut app = spawn_in(&pod.name, &pod.cgroup, &argv, &[], &paths, &root);
    app.wait_for_port(port, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("app: {e:#}"));
    api.apply(pod.json(NODE, true));

    let out = root.join("cassettes");
    let metrics_port = util::free_port();
    let args: Vec<String> = [
        "node",
        "--node-name",
        NODE,
        "-n",
        "shop",
        "-l",
        "app=api",
        "--out",
        &out.display().to_string(),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut agent = in_cluster_agent(&paths, &root, "agent", &sa, &api, &args);
    let mut errs: Vec<String> = Vec::new();
    let fail = |agent: &ProcGuard, errs: &[String]| fail("node mode in cluster", agent, errs);
    if let Err(e) = agent.wait_for_stderr("node node-1: recording", Duration::from_secs(60)) {
        fail(&agent, &[format!("agent not ready: {e:#}")]);
    }
    let url = format!("https://{}/", api.addr);
    if !agent
        .stderr_text()
        .lines()
        .any(|l| l.contains("Kubernetes API server") && l.contains(&url) && l.contains("InCluster"))
    {
        errs.push(format!("the agent did not say it uses {url} in-cluster"));
    }
    // The start-up check, the watcher's list, then its watch: all over TLS with the token.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api.requests().iter().any(|r| r.contains("watch=true")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests = api.requests();
    if !requests.iter().any(|r| r.contains("watch=true")) {
        errs.push(format!("no watch request: {requests:?}"));
    }
    if api.tls_authorized() != requests.len() || requests.len() < 3 {
        errs.push(format!(
            "{} of {} requests carried the token over TLS (want all, at least 3): {requests:?}",
            api.tls_authorized(),
            requests.len()
        ));
    }
    if get(metrics_port, "/readyz").status != 200 {
        errs.push("/readyz is not 200 once the agent said it is recording".into());
    }
    let mut expect = Vec::new();
    for i in 0..2 {
        let t = format!("/plain?req=tls-{i}");
        assert_eq!(get(port, &t).status, 200, "GET {t}");
        expect.push(t);
    }
    let key = "timetracer_pod_cassettes_total{namespace=\"shop\",pod=\"api-tls\"}";
    let written = wait_metric(metrics_port, key, Duration::from_secs(20), |v| v >= 2.0);
    if written != Some(2.0) {
        errs.push(format!("{key} = {written:?}, want 2"));
    }
    agent.signal(Signal::SIGINT).expect("SIGINT");
    match agent.wait_timeout(Duration::from_secs(30)) {
        Some(s) if s.success() => {}
        other => errs.push(format!("agent exit: {other:?}")),
    }
    drop(app);
    if !secrets_before && Path::new("/run/secrets").exists() {
        errs.push("the service account mount leaked into the host's /run".into());
    }

    let cdir = util::load_cassettes(&out);
    errs.extend(cdir.problems.iter().cloned());
    let mut got = Vec::new();
    for c in &cdir.cassettes {
        errs.extend(util::schema_problems(&paths, c));
        let k = &c.json["session"]["k8s"];
        let rel = c.path.strip_prefix(&out).unwrap_or(&c.path);
        if !rel.starts_with("shop/api-tls/") {
            errs.push(format!("{} is not under shop/api-tls/", rel.display()));
        }
        if !(k["namespace"] == "shop"
            && k["pod"] == "api-tls"
            && k["container"] == "web"
            && k["node"] == NODE
            && k["pod_uid"].as_str() == Some(pod.uid.as_str())
            && k["labels"]["app"] == "api")
        {
            errs.push(format!("{}: k8s facts {k}", rel.display()));
        }
        got.push(c.target());
    }
    got.sort();
    if got != expect {
        errs.push(format!("cassettes: got {got:?}, want {expect:?}"));
    }
    if !errs.is_empty() {
        fail(&agent, &errs);
    }
}

/// The in-cluster path misconfigured: a `ca.crt` of another CA, then a token the API server
/// does not accept. Each stops the agent at once (no hang, no panic) with what to fix.
#[test]
fn node_mode_in_cluster_refused() {
    let paths = require_root!();
    require!(missing_unshare());
    let dir = util::temp_dir("node-refused");
    let root = dir.path().to_path_buf();
    let (right, wrong) = (root.join("pki"), root.join("other-pki"));
    std::fs::create_dir_all(&right).unwrap();
    std::fs::create_dir_all(&wrong).unwrap();
    let pki = util::make_test_pki(&right).expect("test PKI (openssl)");
    let other = util::make_test_pki(&wrong).expect("second test PKI (openssl)");
    let api = FakeApi::start_tls(TOKEN, &pki).expect("fake API server (HTTPS)");
    let url = format!("https://{}/", api.addr);
    let cases = [
        (
            "wrong-ca",
            service_account(&root.join("a"), TOKEN, &other.ca),
            vec![
                format!("cannot verify the certificate of the API server {url}"),
                "not signed by the CA in /var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
                    .to_owned(),
            ],
        ),
        (
            "wrong-token",
            service_account(&root.join("b"), "not-the-token", &pki.ca),
            vec![
                format!("the API server {url} refused the agent (401"),
                "service account token is not accepted".to_owned(),
            ],
        ),
    ];
    let mut errs = Vec::new();
    for (name, sa, want) in cases {
        let args: Vec<String> = [
            "node",
            "--node-name",
            NODE,
            "--out",
            &root.join(name).display().to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{}", util::free_port()),
        ]
        .map(str::to_owned)
        .to_vec();
        let started = Instant::now();
        let mut agent = in_cluster_agent(&paths, &root, name, &sa, &api, &args);
        let status = agent.wait_timeout(Duration::from_secs(30));
        let stderr = agent.stderr_text();
        match status {
            Some(s) if !s.success() => {}
            other => errs.push(format!(
                "{name}: agent exit {other:?}, want a failure at once"
            )),
        }
        for w in &want {
            if !stderr.contains(w.as_str()) {
                errs.push(format!(
                    "{name}: stderr lacks {w:?}:\n{}",
                    util::tail(&stderr, 20)
                ));
            }
        }
        if stderr.contains("panicked") {
            errs.push(format!("{name}: the agent panicked:\n{stderr}"));
        }
        eprintln!(
            "[node] {name}: refused in {:.2}s: {}",
            started.elapsed().as_secs_f64(),
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        );
    }
    assert!(
        errs.is_empty(),
        "in-cluster misconfiguration:\n- {}",
        errs.join("\n- ")
    );
}
