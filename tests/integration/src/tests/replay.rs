//! Issue #6: replay. Record the apps, stop every upstream, replay every cassette with the
//! dependencies mocked (cgroup BPF redirection + the Python hook): same responses, byte for
//! byte. Then change the app's behaviour and check that the verdict names the field.
use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::scenario::{App, Harness, Req, VerifyOpts};
use crate::require_root;
use crate::util::{self, HttpConn, ProcGuard};

/// Records `endpoints` (one fresh connection each) and checks the cassettes.
fn record(h: &mut Harness, app: App, endpoints: &[&str]) {
    h.start_record(app);
    let sent: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| h.send_fresh(&Req::new(ep, &format!("r{i}"))))
        .collect();
    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
}

const HTTP_ENDPOINTS: &[&str] = &[
    "users/7", "text", "big", "chunked", "multi", "fail", "plain", "echo", "boom",
];

#[test]
fn replay_http_dependencies() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "replay_http");
    record(&mut h, App::FastApi, HTTP_ENDPOINTS);
    h.stop_upstream();
    let out: OsString = h.out_dir().into();

    let r = h.replay(std::slice::from_ref(&out), &[]);
    r.assert_all_same(HTTP_ENDPOINTS.len());

    // The app now asks the upstream for something else: the verdict names the query field.
    let r = h.replay(std::slice::from_ref(&out), &[("USERS_SRC", "admins")]);
    r.assert_field_miss("query.src", "users", "admins");
    let users = r.verdict["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| {
            q["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/users/7"))
        })
        .expect("the /users/7 request");
    assert_eq!(users["outcome"], "dependency-mismatch", "{}", r.explain());
    for q in r.verdict["requests"].as_array().into_iter().flatten() {
        if !q["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("/users/"))
        {
            assert_eq!(
                q["outcome"],
                "same",
                "only /users changed:\n{}",
                r.explain()
            );
        }
    }
}

#[test]
fn replay_https_dependency_through_mock_ca() {
    let paths = require_root!();
    let mut h = Harness::with_tls(paths, "replay_https", true);
    record(
        &mut h,
        App::FastApi,
        &["users/8", "big", "chunked", "echo", "multi"],
    );
    h.stop_upstream();
    // The app verifies certificates against UPSTREAM_CA (the test CA); replay's mocks present
    // certificates of the mock CA, which the Python hook adds to every SSL context.
    let r = h.replay(&[h.out_dir().into()], &[]);
    r.assert_all_same(5);
}

#[test]
fn replay_app_serving_https_with_https_dependency() {
    let paths = require_root!();
    let mut h = Harness::with_tls(paths, "replay_serves_https", true);
    h.serve_tls();
    // One keep-alive connection through the test's TLS tunnel (as the TLS recording tests do).
    h.start_record(App::FastApi);
    let mut conn = h.connect();
    let sent: Vec<_> = ["users/12", "echo", "plain"]
        .iter()
        .enumerate()
        .map(|(i, ep)| h.send(&mut conn, &Req::new(ep, &format!("r{i}"))))
        .collect();
    conn.close();
    h.stop_agent();
    let (dir, errs) = h.verify(&sent, VerifyOpts::default());
    h.assert_ok(&errs, &dir);
    h.stop_upstream();
    // The recorded inbound connection was TLS: replay speaks TLS to the app (uvicorn
    // --ssl-*), and the app's HTTPS call goes to a mock with a mock-CA certificate.
    let r = h.replay(&[h.out_dir().into()], &[]);
    r.assert_all_same(3);
}

#[test]
fn replay_keep_running_answers_manual_requests() {
    let paths = require_root!();
    let mut h = Harness::new(paths.clone(), "replay_keep");
    record(&mut h, App::FastApi, &["users/9", "users/9"]);
    h.stop_upstream();
    let mut cmd = util::command(
        &paths.agent,
        [
            OsString::from("replay"),
            "--keep-running".into(),
            "--run-recorded-command".into(),
            h.out_dir().into(),
        ],
    );
    cmd.current_dir(&paths.apps)
        .env("UPSTREAM_URL", h.upstream_url(""));
    let dir = util::temp_dir("replay_keep_agent");
    let mut agent = ProcGuard::spawn("replay", cmd, dir.path()).expect("spawn replay");
    agent
        .wait_for_stderr("press Ctrl-C", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.diagnostics()));
    let mut c = HttpConn::connect(h.app_port()).expect("connect to the replayed app");
    let plain = c
        .request("GET", "/plain?req=manual", None)
        .expect("manual request");
    assert_eq!(plain.status, 200, "{}", agent.diagnostics());
    // Both recorded /json/9 calls were used by the replayed requests: this one gets the
    // mock's 599 miss, which the app reports in its JSON.
    let users = c
        .request("GET", "/users/9?req=manual2", None)
        .expect("manual request");
    let body = String::from_utf8_lossy(&users.body).into_owned();
    assert!(
        body.contains("\"status\":599"),
        "expected the miss answer, got {} {body}\n{}",
        users.status,
        agent.diagnostics()
    );
    c.close();
    agent.signal(Signal::SIGINT).expect("SIGINT");
    let st = agent
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("replay did not stop on SIGINT\n{}", agent.diagnostics()));
    assert_eq!(st.code(), Some(0), "{}", agent.diagnostics());
    assert!(
        agent.stderr_text().contains("/json/9"),
        "the unanswered manual call is reported:\n{}",
        agent.diagnostics()
    );
}

#[test]
fn replay_two_at_once_do_not_share_traffic() {
    let paths = require_root!();
    let mut h = Harness::new(paths.clone(), "replay_two");
    record(&mut h, App::FastApi, &["users/11", "multi", "text"]);
    h.stop_upstream();
    let other_port = util::free_port();
    let argv = |port: u16| -> Vec<OsString> {
        vec![
            h.out_dir().into(),
            "--port".into(),
            port.to_string().into(),
            "--".into(),
            paths.venv_bin("uvicorn").into(),
            "fastapi_app:app".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string().into(),
        ]
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| h.replay(&argv(h.app_port()), &[]));
        let b = s.spawn(|| h.replay(&argv(other_port), &[("USERS_SRC", "other")]));
        (a.join().expect("replay a"), b.join().expect("replay b"))
    });
    // A is untouched by B's different calls (its own cgroup, maps and mocks), and B's miss is
    // its own.
    a.assert_all_same(3);
    b.assert_field_miss("query.src", "users", "other");
    let b_matched: i64 = b.verdict["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| q["dependencies"]["matched"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        b_matched,
        4,
        "multi (3) + text (1) matched in B:\n{}",
        b.explain()
    );
}

/// Issue #19 item 5: cassettes encrypted at rest. `timetracer keygen` makes an identity; the
/// agent records with `TIMETRACER_ENCRYPT_TO` (and zstd) into `.json.zst.age` files (0600, no
/// plaintext on disk); `timetracer show` without the identity says how to open them, with
/// `--identity` shows them; replay with `--identity` answers every call from them.
#[test]
fn encrypted_cassettes_replay_with_the_identity() {
    use std::os::unix::fs::PermissionsExt as _;
    let paths = require_root!();
    let mut h = Harness::new(paths.clone(), "replay_encrypted");
    let key = h.root().join("key.txt");
    let o = util::command(
        &paths.cli,
        [OsString::from("keygen"), "-o".into(), key.clone().into()],
    )
    .output()
    .expect("run timetracer keygen");
    assert!(
        o.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recipient = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let mode = std::fs::metadata(&key)
        .expect("identity")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "identity file mode {mode:o}");
    h.extra_env
        .push(("TIMETRACER_ENCRYPT_TO".into(), recipient));
    h.extra_env
        .push(("TIMETRACER_COMPRESSION".into(), "zstd".into()));
    let endpoints = ["users/7", "text", "echo"];
    h.start_record(App::FastApi);
    for (i, ep) in endpoints.iter().enumerate() {
        h.send_fresh(&Req::new(ep, &format!("r{i}")));
    }
    h.stop_agent();
    let mut files = Vec::new();
    let mut stack = vec![h.out_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("cassette dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && name != "index" {
                stack.push(p);
            } else if name.ends_with(".json.zst.age") {
                files.push(p);
            } else {
                assert!(
                    !name.ends_with(".json") && !name.ends_with(".json.zst"),
                    "unencrypted cassette {}",
                    p.display()
                );
            }
        }
    }
    assert_eq!(files.len(), endpoints.len(), "{files:?}");
    for f in &files {
        let raw = std::fs::read(f).expect("cassette");
        assert!(
            raw.starts_with(b"age-encryption.org/v1\n"),
            "{}",
            f.display()
        );
        assert!(
            !raw.windows(7).any(|w| w == b"users/7"),
            "plaintext in {}",
            f.display()
        );
        let mode = std::fs::metadata(f).expect("cassette").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }
    let show = |args: &[OsString]| {
        let o = util::command(&paths.cli, args.iter().cloned())
            .env_remove("TIMETRACER_IDENTITY")
            .output()
            .expect("run timetracer show");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = show(&["show".into(), files[0].clone().into()]);
    assert_ne!(code, 0);
    assert!(err.contains("--identity"), "{err}");
    let (code, out, err) = show(&[
        "--identity".into(),
        key.clone().into(),
        "show".into(),
        files[0].clone().into(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(endpoints.iter().any(|e| out.contains(e)), "{out}");
    h.stop_upstream();
    let r = h.replay(&["--identity".into(), key.into(), h.out_dir().into()], &[]);
    r.assert_all_same(endpoints.len());
}

/// Issue #26 item 3: the app crashing on one request during replay is a finding, not a
/// cascade. The verdict names the request after which it happened, the exit status and the
/// app's last output, restarts the app, and judges the requests after it.
#[test]
fn replay_app_crash_is_a_finding_and_the_rest_are_judged() {
    let paths = require_root!();
    let mut h = Harness::new(paths, "replay_crash");
    let endpoints = ["users/7", "text", "plain", "multi"];
    record(&mut h, App::FastApi, &endpoints);
    h.stop_upstream();
    let out: OsString = h.out_dir().into();
    let r = h.replay(std::slice::from_ref(&out), &[("CRASH_ON_PATH", "/text")]);
    assert_eq!(r.code, 2, "a crash is a failing verdict:\n{}", r.explain());
    let crashes = r.verdict["crashes"].as_array().cloned().unwrap_or_default();
    assert_eq!(crashes.len(), 1, "one crash:\n{}", r.explain());
    let c = &crashes[0];
    assert!(
        c["after"]
            .as_str()
            .is_some_and(|a| a.starts_with("GET /text")),
        "the crash is attributed to GET /text:\n{}",
        r.explain()
    );
    assert!(
        c["status"].as_str().is_some_and(|s| s.contains('3')),
        "the exit status is named:\n{}",
        r.explain()
    );
    assert!(
        c["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("fatal: simulated crash on /text")),
        "the app's last output is shown:\n{}",
        r.explain()
    );
    assert_eq!(c["restarted"], true, "{}", r.explain());
    let report = r.verdict["report"].as_str().unwrap_or("");
    assert!(
        report
            .lines()
            .nth(2)
            .is_some_and(|l| l.contains("THE APP CRASHED after GET /text")),
        "the crash is at the top of the report:\n{report}"
    );
    // Every other request was judged, and is the same.
    for q in r.verdict["requests"].as_array().into_iter().flatten() {
        let target = q["target"].as_str().unwrap_or("");
        if target.starts_with("/text") {
            assert_eq!(q["outcome"], "error", "{}", r.explain());
        } else {
            assert_eq!(q["outcome"], "same", "{target}:\n{}", r.explain());
        }
    }
}

/// Issue 26, item 4: a dependency that is down. The Flask app's `/refused` calls a port nothing
/// listens on (blocking connect, refused at once) and answers with the socket error's errno.
/// The recorder keeps the failed connect as a `tcp.connect` call of that request (destination
/// and errno); replay, with the upstream stopped, refuses the same destination the same way
/// (`ECONNREFUSED`, not the `EPERM` of an unknown destination), so the app answers the same.
#[test]
fn replay_refused_connect_as_refused() {
    let paths = require_root!();
    // The recorded failure must be a real refusal: nothing may listen on the discard port.
    assert!(
        std::net::TcpStream::connect_timeout(
            &"127.0.0.1:9".parse().expect("address"),
            Duration::from_millis(200)
        )
        .is_err(),
        "something listens on 127.0.0.1:9; the test needs it closed"
    );
    let mut h = Harness::new(paths.clone(), "replay_refused");
    h.start_record(App::Flask);
    let refused = h.send_fresh(&Req::new("refused", "r0"));
    let users = h.send_fresh(&Req::new("users/3", "r1"));
    h.stop_agent();
    let body: serde_json::Value =
        serde_json::from_slice(&refused.resp.body).unwrap_or(serde_json::Value::Null);
    let dir = util::load_cassettes(&h.out_dir());
    let mut errs: Vec<String> = dir.problems.clone();
    if refused.resp.status != 503 || body["errno"] != 111 {
        errs.push(format!(
            "/refused: the app saw {} {body} (want 503 with errno 111)",
            refused.resp.status
        ));
    }
    if users.resp.status != 200 {
        errs.push(format!("/users/3: status {}", users.resp.status));
    }
    for c in &dir.cassettes {
        errs.extend(util::schema_problems(&paths, c));
    }
    let of = |t: &str| {
        dir.cassettes.iter().find(|c| {
            c.json["request"]["target"]
                .as_str()
                .is_some_and(|x| x.starts_with(t))
        })
    };
    match of("/refused") {
        None => errs.push("no cassette for /refused".into()),
        Some(c) => {
            let events: Vec<&serde_json::Value> =
                c.json["events"].as_array().into_iter().flatten().collect();
            match events.as_slice() {
                [e] => {
                    let want = [
                        (&e["type"], serde_json::json!("tcp.connect")),
                        (&e["result"]["errno"], serde_json::json!(111)),
                        (&e["connection"]["remote"], serde_json::json!("127.0.0.1:9")),
                        (
                            &e["signature"]["url"],
                            serde_json::json!("tcp://127.0.0.1:9"),
                        ),
                        (&e["attribution"]["status"], serde_json::json!("exact")),
                    ];
                    for (got, want) in want {
                        if *got != want {
                            errs.push(format!("/refused event: {got} (want {want}): {e:#}"));
                        }
                    }
                    if !e["result"]["error"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("ECONNREFUSED"))
                    {
                        errs.push(format!("/refused event: result.error {}", e["result"]));
                    }
                }
                other => errs.push(format!(
                    "/refused: want exactly one event (the refused connect), got {other:#?}"
                )),
            }
        }
    }
    match of("/users/3") {
        Some(c)
            if c.json["events"]
                .as_array()
                .is_some_and(|e| e.len() == 1 && e[0]["type"] == "http.client") => {}
        other => errs.push(format!(
            "/users/3: want one http.client event, got {:?}",
            other.map(|c| &c.json["events"])
        )),
    }
    if !errs.is_empty() {
        h.fail(&errs, Some(&dir));
    }
    h.stop_upstream();
    let r = h.replay(&[h.out_dir().into()], &[]);
    r.assert_all_same(2);
    assert!(
        r.verdict["notes"]
            .to_string()
            .contains("connects to 127.0.0.1:9 are refused, as recorded"),
        "the verdict says which destination is refused:\n{}",
        r.explain()
    );
    assert!(
        r.verdict["blocked"].as_array().is_none_or(Vec::is_empty),
        "the refused destination is not an unexpected one: {}",
        r.explain()
    );
}

/// Validates `xml` against the vendored Jenkins `junit-10.xsd` with Python `xmlschema` and
/// returns what it holds (suite attributes, properties, test cases, system-err) as JSON.
fn junit_checked(paths: &util::Paths, xml: &std::path::Path) -> serde_json::Value {
    const SCRIPT: &str = r"
import json, sys, xmlschema, xml.etree.ElementTree as ET
schema = xmlschema.XMLSchema(sys.argv[1])
errors = [str(e) for e in schema.iter_errors(sys.argv[2])]
root = ET.parse(sys.argv[2]).getroot()
suite = root.find('testsuite')
cases = [{'name': c.get('name'), 'classname': c.get('classname'), 'time': c.get('time'),
          'results': [{'tag': k.tag, 'type': k.get('type'), 'message': k.get('message'),
                       'text': k.text or ''} for k in c]}
         for c in suite.iter('testcase')]
print(json.dumps({'errors': errors, 'root': root.tag, 'suite': dict(suite.attrib),
                  'properties': [[p.get('name'), p.get('value')] for p in suite.iter('property')],
                  'system_err': suite.findtext('system-err') or '', 'cases': cases}))
";
    let xsd = paths.repo.join("tests/schemas/junit-10.xsd");
    let out = std::process::Command::new(paths.venv_bin("python"))
        .arg("-c")
        .arg(SCRIPT)
        .arg(&xsd)
        .arg(xml)
        .output()
        .expect("run the venv's python (xmlschema: tests/apps/requirements.txt)");
    assert!(
        out.status.success(),
        "validating {}: {}",
        xml.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the validator's JSON")
}

/// Issue #26 item 7: `replay --junit FILE` writes a JUnit XML report that the schema CI
/// systems use accepts: one test case per replayed request, failing with the verdict's
/// explanation — here a deliberate dependency mismatch (GET /users/7 asks the upstream for
/// something else) and a crash (the app exits on GET /text), with the app's last output as the
/// suite's system-err and the recording id as a property. The validator itself is shown to
/// reject a report missing a required attribute.
#[test]
fn replay_junit_report_validates_against_the_jenkins_schema() {
    use std::os::unix::fs::PermissionsExt as _;
    let paths = require_root!();
    let mut h = Harness::new(paths.clone(), "replay_junit");
    let endpoints = ["users/7", "text", "plain", "multi"];
    record(&mut h, App::FastApi, &endpoints);
    h.stop_upstream();
    let out = h.out_dir();
    let junit = out.with_file_name("replay-junit.xml");
    let r = h.replay(
        &[out.clone().into(), "--junit".into(), junit.clone().into()],
        &[("USERS_SRC", "admins"), ("CRASH_ON_PATH", "/text")],
    );
    assert_eq!(r.code, 2, "{}", r.explain());
    let meta = std::fs::metadata(&junit).expect("the JUnit report was written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private file");

    let j = junit_checked(&paths, &junit);
    assert_eq!(
        j["errors"],
        serde_json::json!([]),
        "valid against junit-10.xsd:\n{}",
        std::fs::read_to_string(&junit).unwrap_or_default()
    );
    assert_eq!(j["root"], "testsuites");
    let cases = j["cases"].as_array().cloned().unwrap_or_default();
    // `app startup`, the four requests, `connections outside the recording`.
    assert_eq!(cases.len(), endpoints.len() + 2, "{j:#}");
    assert_eq!(j["suite"]["tests"], (endpoints.len() + 2).to_string());
    assert_eq!(j["suite"]["failures"], "1", "the mismatch; {j:#}");
    assert_eq!(j["suite"]["errors"], "1", "the crash (no response); {j:#}");
    let recording = r.verdict["requests"][0]["recording"]
        .as_str()
        .expect("the verdict names the recording")
        .to_owned();
    assert!(
        j["properties"]
            .as_array()
            .is_some_and(|p| p.contains(&serde_json::json!(["recording", recording]))),
        "{j:#}"
    );
    let case = |prefix: &str| {
        cases
            .iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("GET {prefix}")))
            })
            .unwrap_or_else(|| panic!("a test case for GET {prefix}: {j:#}"))
            .clone()
    };
    let users = case("/users/7");
    let id_dir = r.verdict["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| {
            q["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("/users/7"))
        })
        .and_then(|q| q["cassette"].as_str())
        .map(std::path::PathBuf::from)
        .expect("the /users/7 cassette");
    let id = id_dir
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once("__"))
        .map(|(_, id)| id.to_owned())
        .expect("an id in the cassette's name");
    assert!(
        users["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(&format!("({id})"))),
        "{users:#}"
    );
    assert_eq!(
        users["classname"],
        id_dir
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let f = &users["results"][0];
    assert_eq!(f["tag"], "failure", "{users:#}");
    assert_eq!(f["type"], "dependency-mismatch", "{users:#}");
    assert!(
        f["text"].as_str().is_some_and(|t| t.contains("query.src")
            && t.contains("users")
            && t.contains("admins")),
        "the mismatch is explained: {users:#}"
    );
    let text = case("/text");
    let e = &text["results"][0];
    assert_eq!(e["tag"], "error", "{text:#}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("crashed after this request")),
        "{text:#}"
    );
    assert!(
        e["text"]
            .as_str()
            .is_some_and(|t| t.contains("THE APP CRASHED after GET /text")),
        "{text:#}"
    );
    for ok in ["/plain", "/multi"] {
        let c = case(ok);
        assert_eq!(c["results"], serde_json::json!([]), "passes: {c:#}");
        assert!(
            c["time"]
                .as_str()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(|t| t > 0.0),
            "{c:#}"
        );
    }
    assert!(
        j["system_err"]
            .as_str()
            .is_some_and(|s| s.contains("fatal: simulated crash on /text")),
        "the crash's last output: {j:#}"
    );

    // The validator is not vacuous: the same report without the suite's required `tests`
    // attribute is rejected.
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    let tests_attr = format!(" tests=\"{}\"", endpoints.len() + 2);
    let broken = xml.replacen(&tests_attr, "", 2);
    assert_ne!(broken, xml);
    let bad = out.with_file_name("broken-junit.xml");
    std::fs::write(&bad, broken).expect("write the broken copy");
    let j = junit_checked(&paths, &bad);
    assert!(
        j["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "the schema requires testsuite@tests: {j:#}"
    );
}
