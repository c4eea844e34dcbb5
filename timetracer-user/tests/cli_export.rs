//! `export --to har|curl|postman` and `import --from har`: HAR checked against a HAR 1.2 JSON
//! Schema, Postman collections against the official Collection v2.1.0 schema (vendored in
//! tests/schemas/, Apache-2.0; see its README).
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
use cli_common::{CORRUPT, fixtures, mixed, run};
use serde_json::Value;

fn har_validator() -> jsonschema::Validator {
    let s: Value = serde_json::from_str(include_str!("snapshots/har-1.2.schema.json")).unwrap();
    jsonschema::validator_for(&s).unwrap()
}

fn assert_valid_har(v: &Value) {
    let val = har_validator();
    let errs: Vec<String> = val
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errs.is_empty(), "HAR invalid: {errs:#?}");
}

#[test]
fn har_export_is_valid() {
    let (t, dir) = mixed();
    let out = t.path().join("all.har");
    let o = run(
        t.path(),
        &[
            "export",
            "--to",
            "har",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains(CORRUPT));
    let har: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_valid_har(&har);
    let entries = har["log"]["entries"].as_array().unwrap();
    // 6 inbound requests + 6 HTTP dependency calls (the db event is not HTTP).
    assert_eq!(entries.len(), 12, "{har:#}");
    let login = entries
        .iter()
        .find(|e| {
            e["request"]["url"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:9000/login/caf%C3%A9?")
        })
        .expect("inbound login entry");
    assert_eq!(login["request"]["method"], "POST");
    assert!(
        login["request"]["postData"]["text"]
            .as_str()
            .unwrap()
            .contains("[REDACTED]")
    );
    assert!(
        entries.iter().any(|e| e["request"]["url"]
            == "https://auth.internal:8443/auth/verify?user=alice&token=%5BREDACTED%5D&page=2"),
        "{har:#}"
    );
    // Sorted by start time.
    let starts: Vec<&str> = entries
        .iter()
        .map(|e| e["startedDateTime"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable();
    assert_eq!(starts, sorted);
    let o = run(
        t.path(),
        &[
            "export",
            "--to",
            "har",
            "--no-deps",
            dir.join("2026-11-22/GET__users_42__e92ca5c8.json")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(o.code, 0);
    let one: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_valid_har(&one);
    assert_eq!(one["log"]["entries"].as_array().unwrap().len(), 1);
}

#[test]
fn har_round_trip_through_import() {
    let t = tempfile::tempdir().unwrap();
    let src = fixtures().join("ours/POST__login_caf__e92ca5c8.json");
    let har = t.path().join("x.har");
    let o = run(
        t.path(),
        &[
            "export",
            "--to",
            "har",
            "--no-deps",
            src.to_str().unwrap(),
            "-o",
            har.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let out = t.path().join("imported");
    let o = run(
        t.path(),
        &[
            "import",
            "--from",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Imported 1 cassettes"), "{}", o.stdout);
    let o = run(t.path(), &["validate", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    let o = run(
        t.path(),
        &["search", "--dir", out.to_str().unwrap(), "--json"],
    );
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/login/café");
    assert_eq!(v["status"], 200);
    assert_eq!(v["recorded_at"], "2026-11-22T23:28:08.792058+00:00");
    let bad = t.path().join("bad.har");
    std::fs::write(&bad, b"{\"log\":{}}").unwrap();
    let o = run(
        t.path(),
        &[
            "import",
            "--from",
            "har",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3);
    assert!(o.stderr.contains("no log.entries"), "{}", o.stderr);
}

#[test]
fn curl_export() {
    let t = tempfile::tempdir().unwrap();
    let src = fixtures().join("ours/POST__login_caf__e92ca5c8.json");
    let o = run(
        t.path(),
        &[
            "export",
            "--to",
            "curl",
            src.to_str().unwrap(),
            "--base-url",
            "http://localhost:8000/",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("#!/bin/sh\n"));
    assert!(
        o.stdout
            .contains("curl -sS -X 'POST' 'http://localhost:8000/login/caf%C3%A9?"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("# Authorization was redacted when recorded"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("--data-binary '{"), "{}", o.stdout);
    assert!(
        !o.stdout.contains("-H 'host:") && !o.stdout.contains("-H 'Host:"),
        "{}",
        o.stdout
    );
    // The script is valid sh.
    let script = t.path().join("x.sh");
    std::fs::write(&script, &o.stdout).unwrap();
    let st = std::process::Command::new("sh")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    let o = run(
        t.path(),
        &["export", "--to", "curl", "--deps", src.to_str().unwrap()],
    );
    assert!(
        o.stdout
            .contains("'https://auth.internal:8443/auth/verify?user=alice"),
        "{}",
        o.stdout
    );
}

fn assert_valid_postman(v: &Value) {
    let s: Value = serde_json::from_str(include_str!(
        "../../tests/schemas/postman-collection-v2.1.0.json"
    ))
    .unwrap();
    let val = jsonschema::validator_for(&s).unwrap();
    let errs: Vec<String> = val
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(
        errs.is_empty(),
        "Postman collection invalid: {errs:#?}\n{v:#}"
    );
    // The validator is not vacuous: an item whose request has a numeric method is rejected.
    let mut broken = v.clone();
    broken["item"][0]["request"]["method"] = 7.into();
    assert!(
        !val.is_valid(&broken),
        "the schema rejects a numeric method"
    );
    let mut broken = v.clone();
    broken["info"].as_object_mut().unwrap().remove("schema");
    assert!(!val.is_valid(&broken), "the schema requires info.schema");
}

/// Issue #22 item 6: `export --format postman` (alias of `--to`), valid against the official
/// Postman Collection v2.1.0 schema; redacted values stay redacted.
#[test]
fn postman_export_is_valid_and_keeps_redactions() {
    let (t, dir) = mixed();
    let out = t.path().join("api.postman_collection.json");
    let o = run(
        t.path(),
        &[
            "export",
            "--format",
            "postman",
            dir.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stderr.contains(CORRUPT));
    let col: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_valid_postman(&col);
    assert_eq!(
        col["info"]["schema"],
        "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    );
    let items = col["item"].as_array().unwrap();
    // 6 recorded requests, then the folder of their 6 HTTP dependency calls.
    assert_eq!(items.len(), 7, "{col:#}");
    let deps = items[6]["item"].as_array().expect("the dependency folder");
    assert_eq!(items[6]["name"], "Dependency calls");
    assert_eq!(deps.len(), 6, "{col:#}");
    assert_eq!(col["variable"][0]["key"], "baseUrl");

    let login = items
        .iter()
        .find(|i| {
            i["name"].as_str().is_some_and(|n| {
                n.starts_with("POST /login/caf%C3%A9?") && n.ends_with("(e92ca5c8)")
            })
        })
        .unwrap_or_else(|| panic!("the login item: {col:#}"));
    let req = &login["request"];
    assert_eq!(req["method"], "POST");
    assert!(
        req["url"]["raw"]
            .as_str()
            .unwrap()
            .starts_with("{{baseUrl}}/login/caf%C3%A9?"),
        "{req:#}"
    );
    assert_eq!(req["url"]["host"], serde_json::json!(["{{baseUrl}}"]));
    assert!(
        req["body"]["raw"].as_str().unwrap().contains("[REDACTED]"),
        "{req:#}"
    );
    assert_eq!(req["body"]["options"]["raw"]["language"], "json");
    let auth = req["header"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["key"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("authorization")
        })
        .expect("the Authorization header");
    assert_eq!(auth["value"], "[REDACTED]");
    assert_eq!(auth["disabled"], true, "not sent with the placeholder");
    assert!(
        !req["header"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["key"].as_str().unwrap().eq_ignore_ascii_case("host")),
        "{req:#}"
    );
    let example = &login["response"][0];
    assert_eq!(example["code"], 200);
    assert_eq!(example["originalRequest"], *req);

    let verify = deps
        .iter()
        .map(|i| &i["request"]["url"])
        .find(|u| {
            u["raw"]
                == "https://auth.internal:8443/auth/verify?user=alice&token=%5BREDACTED%5D&page=2"
        })
        .unwrap_or_else(|| panic!("the auth call at its recorded URL: {col:#}"));
    assert_eq!(verify["protocol"], "https");
    assert_eq!(verify["host"], serde_json::json!(["auth", "internal"]));
    assert_eq!(verify["port"], "8443");
    assert_eq!(verify["path"], serde_json::json!(["auth", "verify"]));
    assert_eq!(
        verify["query"][1],
        serde_json::json!({"key": "token", "value": "%5BREDACTED%5D"})
    );

    // One cassette, no dependency folder, the app's address given.
    let o = run(
        t.path(),
        &[
            "export",
            "--to",
            "postman",
            "--no-deps",
            "--base-url",
            "http://localhost:8000/",
            dir.join("POST__login_caf__e92ca5c8.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let one: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_valid_postman(&one);
    assert_eq!(one["item"].as_array().unwrap().len(), 1);
    assert_eq!(one["variable"][0]["value"], "http://localhost:8000");
    // Nothing that was redacted in the cassette comes back.
    let cassette = std::fs::read_to_string(dir.join("POST__login_caf__e92ca5c8.json")).unwrap();
    assert!(cassette.contains("[REDACTED]"));
    assert!(o.stdout.contains("[REDACTED]"));
}
