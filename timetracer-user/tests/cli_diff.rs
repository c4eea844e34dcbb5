//! `diff` exit codes on real cassette pairs, and event pairing by destination + order.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;
use cli_common::{fixtures, run};
use serde_json::{Value, json};

fn load(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(rel)).unwrap()).unwrap()
}

fn save(t: &tempfile::TempDir, name: &str, v: &Value) -> String {
    let p = t.path().join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.to_str().unwrap().to_owned()
}

fn diff(t: &tempfile::TempDir, a: &str, b: &str) -> (i32, Value) {
    let o = run(t.path(), &["diff", "--a", a, "--b", b, "--json"]);
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    (o.code, serde_json::from_str(&o.stdout).unwrap())
}

#[test]
fn same_is_zero() {
    let t = tempfile::tempdir().unwrap();
    for f in [
        "py/GET__users_42__e92ca5c8.json",
        "ours/POST__login_caf__e92ca5c8.json",
    ] {
        let p = fixtures().join(f);
        let p = p.to_str().unwrap();
        let (code, r) = diff(&t, p, p);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["has_differences"], false);
        let o = run(t.path(), &["diff", "-a", p, "-b", p]);
        assert!(o.stdout.contains("status: 200 (unchanged)"), "{}", o.stdout);
        assert!(
            o.stdout.contains("SAME") && !o.stdout.contains('\x1b'),
            "{}",
            o.stdout
        );
    }
}

#[test]
fn body_and_header_changes_are_one() {
    let t = tempfile::tempdir().unwrap();
    let a = load("ours/POST__login_caf__e92ca5c8.json");
    let mut b = a.clone();
    b["response"]["body"]["data"]["user"] = "bob".into();
    b["response"]["body"]["hash"] = "sha256:00".into();
    b["response"]["headers"]["x-version"] = "2".into();
    b["response"]["headers"]["date"] = "Tue, 24 Nov 2026 00:00:00 GMT".into();
    let (code, r) = diff(&t, &save(&t, "a.json", &a), &save(&t, "b.json", &b));
    assert_eq!(code, 1, "{r:#}");
    let whats: Vec<&str> = r["response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["response.header", "response.body"], "{r:#}");
    assert!(
        r["response"][1]["summary"]
            .as_str()
            .unwrap()
            .contains("$.user"),
        "{r:#}"
    );
    assert_eq!(r["is_regression"], false);
}

#[test]
fn regressions_are_two() {
    let t = tempfile::tempdir().unwrap();
    let a = load("py/GET__users_42__e92ca5c8.json");
    let pa = save(&t, "a.json", &a);
    // The app now fails.
    let boom = fixtures().join("py/GET__boom_5__90588dcc.json");
    let o = run(
        t.path(),
        &["diff", "--a", &pa, "--b", boom.to_str().unwrap()],
    );
    assert_eq!(o.code, 2, "{}", o.stdout);
    assert!(
        o.stdout.contains("status 200 → 0") && o.stdout.contains("REGRESSION"),
        "{}",
        o.stdout
    );
    // 50% slower, threshold 20%: regression; threshold 60%: not even a difference.
    let mut b = a.clone();
    b["response"]["duration_ms"] = json!(31.5);
    let pb = save(&t, "b.json", &b);
    assert_eq!(diff(&t, &pa, &pb).0, 2);
    let o = run(
        t.path(),
        &["diff", "--a", &pa, "--b", &pb, "--threshold", "60"],
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    // A dependency call now fails.
    let mut c = a.clone();
    c["events"][0]["result"]["status"] = 503.into();
    let (code, r) = diff(&t, &pa, &save(&t, "c.json", &c));
    assert_eq!(code, 2);
    assert_eq!(r["events"]["changes"][0]["what"], "event.status");
}

#[test]
fn events_pair_by_destination_then_order() {
    let t = tempfile::tempdir().unwrap();
    let a = load("py/GET__db_then_http__a97386d6.json");
    // B makes an extra call to another host first: nothing else may look changed.
    let mut b = a.clone();
    let mut extra = a["events"][1].clone();
    extra["signature"]["url"] = "http://cache.internal:8080/warm".into();
    let evs = b["events"].as_array_mut().unwrap();
    evs.insert(0, extra);
    for (i, e) in evs.iter_mut().enumerate() {
        e["eid"] = (i + 1).into();
    }
    let (code, r) = diff(&t, &save(&t, "a.json", &a), &save(&t, "b.json", &b));
    assert_eq!(code, 1, "{r:#}");
    let ch = r["events"]["changes"].as_array().unwrap();
    assert_eq!(ch.len(), 1, "{r:#}");
    assert_eq!(ch[0]["what"], "event.extra");
    assert_eq!(ch[0]["destination"], "http.client cache.internal:8080");
    assert_eq!(r["events"]["paired"], 2);
    // Same destination, other URL: a changed target (critical, as in the Python tool).
    let mut c = a.clone();
    c["events"][1]["signature"]["url"] = "http://127.0.0.1:9001/item/43".into();
    let (code, r) = diff(&t, &save(&t, "a.json", &a), &save(&t, "c.json", &c));
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(r["events"]["changes"][0]["what"], "event.target");
    // Colour only when asked; --out writes plain text.
    let out = t.path().join("report.txt");
    let o = run(
        t.path(),
        &[
            "diff",
            "-a",
            &save(&t, "a.json", &a),
            "-b",
            &save(&t, "c.json", &c),
            "--color",
            "always",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.stdout.contains("\x1b[31m"), "{}", o.stdout);
    let text = std::fs::read_to_string(out).unwrap();
    assert!(
        !text.contains('\x1b') && text.contains("/item/43"),
        "{text}"
    );
}

#[test]
fn unreadable_input_is_four() {
    let t = tempfile::tempdir().unwrap();
    let p = fixtures().join("py/GET__users_42__e92ca5c8.json");
    let o = run(
        t.path(),
        &[
            "diff",
            "--a",
            p.to_str().unwrap(),
            "--b",
            "/nonexistent.json",
        ],
    );
    assert_eq!(o.code, 4);
    assert!(o.stderr.contains("cannot read --b"), "{}", o.stderr);
}
