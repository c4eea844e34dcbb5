//! Least privilege (issue #19): the app runs as the invoking user, what the agent writes is
//! theirs, read-only commands work on a read-only copy, a cassette's command line is data, and
//! the replay service acts as each client's uid.
//!
//! The tests create (or reuse) the system user `tt-e2e-user` with `useradd`, and run commands
//! as it with `setpriv`.
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::require_root;
use crate::util::{self, ProcGuard};

pub(super) const USER: &str = "tt-e2e-user";

/// A Python the test user can run (the test venv's interpreter may live in root's home):
/// the apps and clients here use only the standard library.
pub(super) const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn missing_system_python() -> Option<String> {
    (!Path::new(SYSTEM_PYTHON).exists()).then(|| {
        format!("{SYSTEM_PYTHON} not found: install python3 (the test user cannot run the venv's)")
    })
}

/// The test user's uid and gid, created when missing (a system user without a home).
pub(super) fn test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", USER])
            .status()
            .expect("run useradd");
        // Another test may have created it in between.
        assert!(st.success() || id("-u").is_some(), "useradd {USER}: {st}");
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// A directory owned by the test user (mode 0700), inside a root-owned temp dir.
fn user_dir(parent: &Path, name: &str, (uid, gid): (u32, u32)) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// A root-owned temp dir the test user can traverse (0711).
fn traversable_temp(name: &str) -> tempfile::TempDir {
    let t = util::temp_dir(name);
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    t
}

/// `program args` as the test user (`setpriv`), with `HOME`/`XDG_CACHE_HOME` given.
fn as_user(program: &Path, args: &[OsString], cache: &Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--init-groups", "--"])
        .arg(program)
        .args(args)
        .env("HOME", cache)
        .env("XDG_CACHE_HOME", cache)
        .env("XDG_CONFIG_HOME", cache)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every entry under `dir` (and `dir`): path, uid, mode.
fn tree(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), m.uid(), m.mode() & 0o7777));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// A stdlib HTTP app that answers with the credentials it runs with.
pub(super) const WHOAMI_APP: &str = r#"
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("uid=%d euid=%d gid=%d home=%s" % (os.getuid(), os.geteuid(), os.getgid(), os.environ.get("HOME"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// The `Uid:` line of `/proc/PID/status`: real, effective, saved, file-system.
fn proc_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/PID/task/TID/status` of the agent's writer thread (`tt-writer`).
fn writer_thread_status(pid: u32) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tt-writer")
        })
        .and_then(|t| std::fs::read_to_string(t.path().join("status")).ok())
}

/// The test user's groups as a login has them (`id -G`), sorted like `/proc`'s `Groups:`.
fn user_groups() -> Vec<u32> {
    let out = Command::new("id")
        .args(["-G", USER])
        .output()
        .expect("id -G");
    let mut g: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    g.sort_unstable();
    g
}

/// `sudo timetracer-agent record --out DIR -- python app.py` by a user: the app runs as that
/// user, the directory, cassettes and index are theirs (0700/0600), and `show`, `list`,
/// `search`, `dashboard` work as that user — on a read-only copy too.
#[test]
fn sudo_record_runs_the_app_as_the_invoking_user() {
    let paths = require_root!();
    crate::require!(missing_system_python());
    let user = test_user();
    let tmp = traversable_temp("priv-record");
    let work = user_dir(tmp.path(), "work", user);
    let app = work.join("whoami_app.py");
    std::fs::write(&app, WHOAMI_APP).unwrap();
    std::os::unix::fs::chown(&app, Some(user.0), Some(user.1)).unwrap();
    let out = work.join("cassettes");
    let port = util::free_port();
    let python = PathBuf::from(SYSTEM_PYTHON);
    let mut cmd = util::command(
        &paths.agent,
        [
            OsString::from("record"),
            "--out".into(),
            out.clone().into(),
            "--".into(),
            python.into(),
            app.clone().into(),
            port.to_string().into(),
        ],
    );
    // What `sudo` leaves: SUDO_UID/SUDO_GID, root's HOME.
    cmd.env_remove("TIMETRACER_USER")
        .env("SUDO_UID", user.0.to_string())
        .env("SUDO_GID", user.1.to_string())
        .env("SUDO_USER", USER)
        .env("HOME", "/root")
        .current_dir(&work);
    let mut agent = ProcGuard::spawn("agent", cmd, tmp.path()).expect("spawn agent");
    agent
        .wait_for_port(port, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.diagnostics()));

    // The app's process, seen by the kernel and by itself.
    let app_pids: Vec<i32> = util::descendants_of(i32::try_from(agent.pid()).unwrap());
    assert!(!app_pids.is_empty(), "{}", agent.diagnostics());
    for pid in &app_pids {
        let uids = proc_uids(*pid);
        assert_eq!(
            uids,
            vec![user.0; 4],
            "/proc/{pid}/status Uid (real, effective, saved, fs) must all be the user's"
        );
    }
    let resp = util::HttpConn::connect(port)
        .expect("connect")
        .request("GET", "/whoami", None)
        .expect("request");
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    assert_eq!(resp.status, 200, "{body}");
    assert!(
        body.starts_with(&format!("uid={0} euid={0} gid={1} home=/", user.0, user.1)),
        "the app must run as the user, with the user's HOME: {body}"
    );
    // The agent's writer thread writes as the user: file-system uid and gid, and the user's
    // supplementary groups instead of root's.
    let writer = writer_thread_status(agent.pid())
        .unwrap_or_else(|| panic!("no tt-writer thread in the agent\n{}", agent.diagnostics()));
    let line = |key: &str| -> Vec<u32> {
        writer
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    assert_eq!(line("Uid:")[3], user.0, "writer's fsuid\n{writer}");
    assert_eq!(line("Gid:")[3], user.1, "writer's fsgid\n{writer}");
    assert_eq!(line("Uid:")[1], 0, "the agent itself stays root\n{writer}");
    assert_eq!(
        line("Groups:"),
        user_groups(),
        "writer's supplementary groups must be the user's\n{writer}"
    );
    agent.signal(Signal::SIGINT).expect("SIGINT");
    agent
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("agent did not stop\n{}", agent.diagnostics()));

    // Everything under the output directory is the user's, 0700 directories, 0600 files.
    let entries = tree(&out);
    let cassettes: Vec<&PathBuf> = entries
        .iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(
        cassettes.len(),
        1,
        "one cassette: {entries:?}\n{}",
        agent.diagnostics()
    );
    assert!(
        entries
            .iter()
            .any(|(p, _, _)| p.ends_with(".timetracer-index.sqlite3")),
        "the index: {entries:?}"
    );
    for (p, uid, mode) in &entries {
        assert_eq!(*uid, user.0, "{} must belong to the user", p.display());
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} mode {mode:o}", p.display());
    }

    // The read-only commands, as the user, on the directory and on a read-only copy.
    let cache = user_dir(tmp.path(), "cache", user);
    let ro_parent = traversable_temp("priv-ro");
    let ro = ro_parent.path().join("cassettes");
    let st = Command::new("cp")
        .args(["-a", "--no-preserve=ownership"])
        .arg(&out)
        .arg(&ro)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(ro.join(".timetracer-index.sqlite3")).unwrap();
    for (p, _, _) in tree(&ro) {
        std::os::unix::fs::chown(&p, Some(user.0), Some(user.1)).unwrap();
        let mode = if p.is_dir() { 0o500 } else { 0o400 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let cli = &paths.cli;
    for dir in [&out, &ro] {
        let cassette = walk_cassettes(dir);
        let d: OsString = dir.clone().into();
        let html = cache.join(format!(
            "dash-{}.html",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let runs: Vec<(&str, Vec<OsString>)> = vec![
            ("show", vec!["show".into(), cassette.into()]),
            ("list", vec!["list".into(), "--dir".into(), d.clone()]),
            (
                "search",
                vec![
                    "search".into(),
                    "--dir".into(),
                    d.clone(),
                    "--endpoint".into(),
                    "/whoami".into(),
                ],
            ),
            (
                "dashboard",
                vec![
                    "dashboard".into(),
                    "--dir".into(),
                    d.clone(),
                    "--out".into(),
                    html.clone().into(),
                ],
            ),
        ];
        for (what, args) in runs {
            let o = as_user(cli, &args, &cache);
            assert!(
                o.status.success(),
                "`timetracer {what}` as the user on {}: {}",
                dir.display(),
                text(&o)
            );
            if what != "dashboard" {
                assert!(
                    String::from_utf8_lossy(&o.stdout).contains("/whoami"),
                    "`timetracer {what}` must show the request: {}",
                    text(&o)
                );
            }
        }
        let m = std::fs::metadata(&html).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (user.0, 0o600),
            "{}",
            html.display()
        );
    }
    // The read-only copy is unchanged; its index went to the user's cache.
    assert!(!ro.join(".timetracer-index.sqlite3").exists());
    assert!(
        std::fs::read_dir(cache.join("timetracer/index"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "the read-only copy's index must be in the user's cache"
    );
}

fn walk_cassettes(dir: &Path) -> PathBuf {
    tree(dir)
        .into_iter()
        .map(|(p, _, _)| p)
        .find(|p| p.to_string_lossy().ends_with(".json"))
        .expect("a cassette")
}

/// The fixture cassette with its recorded command and cwd replaced, listening on `port`.
fn cassette_with_command(dir: &Path, argv: &[&str], port: u16) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/cassettes/ours/POST__login_caf__e92ca5c8.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    c["session"]["cmdline"] = argv.iter().map(|a| Value::from(*a)).collect();
    c["session"]["cwd"] = Value::from("/tmp");
    c["connection"]["local"] = Value::from(format!("127.0.0.1:{port}"));
    let p = dir.join("POST__login__e92ca5c8.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    p
}

fn pwned_path(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/tmp/tt-pwned-{tag}-{}-{}",
        std::process::id(),
        util::free_port()
    ))
}

/// `replay` of a cassette whose recorded command is `touch /tmp/pwned…`: shown and refused
/// without `--run-recorded-command` (nothing created); refused as root without `--user root`;
/// with the flag it runs — as the invoking user.
#[test]
fn replay_shows_and_refuses_the_recorded_command() {
    let paths = require_root!();
    let user = test_user();
    let tmp = traversable_temp("priv-replay");
    let pwned = pwned_path("replay");
    let touch = ["touch", pwned.to_str().unwrap()];
    let cassette = cassette_with_command(tmp.path(), &touch, util::free_port());
    let replay = |extra: &[&str], sudo: bool| {
        let mut args: Vec<OsString> = vec!["replay".into()];
        args.extend(extra.iter().map(OsString::from));
        args.push(cassette.clone().into());
        let mut cmd = util::command(&paths.agent, args);
        cmd.env_remove("TIMETRACER_USER").stdin(Stdio::null());
        if sudo {
            cmd.env("SUDO_UID", user.0.to_string())
                .env("SUDO_GID", user.1.to_string());
        } else {
            cmd.env_remove("SUDO_UID").env_remove("SUDO_GID");
        }
        let o = cmd.output().expect("run replay");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, err) = replay(&[], true);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(&format!("touch {}", pwned.display())) && err.contains("in /tmp"),
        "the recorded command and directory must be shown: {err}"
    );
    assert!(err.contains("--run-recorded-command"), "{err}");
    assert!(!pwned.exists(), "refused, yet {} exists", pwned.display());

    // Root with no invoking user: not even with the flag.
    let (code, err) = replay(&["--run-recorded-command"], false);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("--user root"), "{err}");
    assert!(!pwned.exists(), "refused, yet {} exists", pwned.display());

    // With the flag: it runs, as the user (then the replay fails: `touch` serves nothing).
    let (code, err) = replay(&["--run-recorded-command", "--startup-timeout", "5"], true);
    assert_eq!(code, Some(3), "{err}");
    let m = std::fs::metadata(&pwned)
        .unwrap_or_else(|e| panic!("{} not created: {e}\n{err}", pwned.display()));
    let _ = std::fs::remove_file(&pwned);
    assert_eq!(
        (m.uid(), m.gid()),
        user,
        "the recorded command must run as the invoking user"
    );
}

/// A replay-service client: sends `request`, returns the verdict line (as the test user with
/// `user`, else as root from this process).
fn service_request(socket: &Path, request: &Value, user: bool) -> Value {
    if !user {
        let mut s = UnixStream::connect(socket).expect("connect");
        writeln!(s, "{request}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        return serde_json::from_str(&line).unwrap_or(Value::Null);
    }
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(sys.argv[2].encode()+b'\\n')\n\
                  f=s.makefile()\n\
                  print(f.readline(),end='')\n";
    let o = Command::new("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--init-groups", "--"])
        .args([SYSTEM_PYTHON, "-c", script])
        .arg(socket)
        .arg(request.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no verdict ({e}): {}", text(&o)))
}

/// `replay-server`: the client's uid decides which cassettes it can replay and whom the app
/// runs as; only `--allow-cmd` commands run; an idle client does not block another.
#[test]
fn replay_server_acts_as_each_client() {
    let paths = require_root!();
    crate::require!(missing_system_python());
    let user = test_user();
    let tmp = traversable_temp("priv-service");
    let socket = tmp.path().join("replay.sock");
    let allowed = pwned_path("allowed");
    let refused = pwned_path("refused");
    let allow = format!("touch {}", allowed.display());
    let mut cmd = util::command(
        &paths.agent,
        [
            OsString::from("replay-server"),
            "--socket".into(),
            socket.clone().into(),
            "--group".into(),
            USER.into(),
            "--allow-cmd".into(),
            allow.into(),
            "--read-timeout".into(),
            "60".into(),
        ],
    );
    cmd.env_remove("TIMETRACER_USER");
    let mut service = ProcGuard::spawn("replay-server", cmd, tmp.path()).expect("spawn");
    let t = Instant::now();
    while !socket.exists() {
        assert!(service.try_status().is_none(), "{}", service.diagnostics());
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{}",
            service.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660, "socket mode with --group");

    // An idle client (connected, silent, within its 60 s read timeout) first.
    let idle = UnixStream::connect(&socket).expect("idle client");

    // Root's cassette (0600 in a 0700 directory): the user cannot replay it.
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = cassette_with_command(
        &private,
        &["touch", refused.to_str().unwrap()],
        util::free_port(),
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = Instant::now();
    let v = service_request(
        &socket,
        &serde_json::json!({"cassettes": [secret], "cmd": null}),
        true,
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the idle client must not hold the second one back"
    );
    let summary = v["summary"].as_str().unwrap_or_default().to_owned();
    assert_eq!(v["verdict"], "error", "{v}");
    assert!(
        summary.contains("cannot read") && summary.contains(&format!("uid {}", user.0)),
        "{summary}"
    );
    assert!(!refused.exists());

    // A cassette the user can read whose recorded command is not allowed; and a command of
    // the request's own that is not allowed.
    let mine = user_dir(tmp.path(), "mine", user);
    let port = util::free_port();
    let readable = cassette_with_command(&mine, &["touch", refused.to_str().unwrap()], port);
    std::os::unix::fs::chown(&readable, Some(user.0), Some(user.1)).unwrap();
    for cmd in [Value::Null, serde_json::json!(["touch", refused])] {
        let v = service_request(
            &socket,
            &serde_json::json!({"cassettes": [readable], "cmd": cmd}),
            true,
        );
        let summary = v["summary"].as_str().unwrap_or_default();
        assert!(summary.contains("is not allowed"), "{v}");
        assert!(
            summary.contains(&format!("touch {}", refused.display())),
            "{summary}"
        );
        assert!(!refused.exists(), "{} created", refused.display());
    }

    // The allowed command runs, as the client's uid.
    let v = service_request(
        &socket,
        &serde_json::json!({"cassettes": [readable], "cmd": ["touch", allowed]}),
        true,
    );
    let m = std::fs::metadata(&allowed).unwrap_or_else(|e| {
        panic!(
            "the allowed command did not run ({e}): {v}\n{}",
            service.diagnostics()
        )
    });
    let _ = std::fs::remove_file(&allowed);
    assert_eq!(m.uid(), user.0, "the replay must run as the client's uid");

    // The idle client is answered too, once its request arrives.
    drop(idle);
    let v = service_request(
        &socket,
        &serde_json::json!({"cassettes": ["relative.json"]}),
        false,
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("absolute"),
        "{v}"
    );
    service.signal(Signal::SIGTERM).ok();
}
