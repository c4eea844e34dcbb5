//! Issue #19: `timetracer validate --secrets` finds secrets seeded into cassettes (a JWT in a
//! header, an AWS access key id in a query value, a PEM private key in a JSON body, a card
//! number inside a base64 body) and finds nothing in a clean directory.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;

use base64::Engine as _;
use cli_common::{fixtures, run};
use serde_json::{Value, json};

const FIXTURE: &str = "ours/POST__login_caf__e92ca5c8.json";

fn fixture() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(FIXTURE)).unwrap()).unwrap()
}

#[test]
fn seeded_secrets_found_clean_directory_passes() {
    let t = tempfile::tempdir().unwrap();
    let clean = t.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    std::fs::copy(fixtures().join(FIXTURE), clean.join("a.json")).unwrap();
    let o = run(
        t.path(),
        &["validate", "--secrets", clean.to_str().unwrap()],
    );
    assert_eq!(
        o.code, 0,
        "a clean directory passes:\n{}{}",
        o.stdout, o.stderr
    );
    assert!(!o.stdout.contains("looks like a secret"), "{}", o.stdout);

    let seeded = t.path().join("seeded");
    std::fs::create_dir(&seeded).unwrap();
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
    let mut c = fixture();
    c["request"]["headers"]["authorization"] = json!(format!("Bearer {jwt}"));
    c["request"]["query"]["api_key"] = json!("AKIAQWERTYUIOPASDFGH");
    c["request"]["body"]["data"]["password"] = json!(pem);
    std::fs::write(seeded.join("b.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    // A card number only visible once a base64 body is decoded.
    let mut c = fixture();
    let card = b"{\"card\": \"4111 1111 1111 1111\", \"cvc\": \"123\"}";
    let body = &mut c["request"]["body"];
    body["encoding"] = json!("base64");
    body["data"] = json!(base64::engine::general_purpose::STANDARD.encode(card));
    body["size_bytes"] = json!(card.len());
    std::fs::write(seeded.join("c.json"), serde_json::to_vec(&c).unwrap()).unwrap();

    let o = run(
        t.path(),
        &["validate", "--secrets", seeded.to_str().unwrap()],
    );
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let out = format!("{}{}", o.stdout, o.stderr);
    for (file, path, kind) in [
        ("b.json", "$.request.headers.authorization", "jwt"),
        ("b.json", "$.request.query.api_key", "aws"),
        ("b.json", "$.request.body.data.password", "private-key"),
        ("c.json", "$.request.body", "card"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(file)
                && l.contains(path)
                && l.to_ascii_lowercase().contains(kind)),
            "{file} {path}: no {kind} reported:\n{out}"
        );
    }
    // The report never prints a secret whole.
    assert!(!out.contains(jwt), "{out}");
    assert!(!out.contains("AKIAQWERTYUIOPASDFGH"), "{out}");
}
