//! Issue #19 item 5: encrypted cassettes through the `timetracer` commands — `keygen`, then
//! `.json.age` / `.json.zst.age` files read by `show`, `list`, `validate` with `--identity` or
//! `TIMETRACER_IDENTITY`; without an identity, or with another one, a clear error naming the fix.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

pub mod cli_common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use cli_common::{fixtures, run, run_env};
use timetracer::cassette::{self, Compression, crypt::Recipients};

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let o = run(dir, &["keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    (key, o.stdout.trim().to_owned())
}

#[test]
fn encrypted_cassettes_open_with_the_identity_only() {
    let t = tempfile::tempdir().unwrap();
    let (mine, recipient) = keygen(t.path(), "mine.txt");
    let (other, _) = keygen(t.path(), "other.txt");
    // keygen never overwrites an identity.
    let again = run(t.path(), &["keygen", "-o", mine.to_str().unwrap()]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not overwriting"), "{}", again.stderr);

    let c = cassette::read(&fixtures().join("ours/POST__login_caf__e92ca5c8.json")).unwrap();
    let dir = t.path().join("cassettes");
    let rs = Recipients::parse(&[recipient.as_str()]).unwrap();
    let plain = cassette::write_sealed(&dir, &c, Compression::None, Some(&rs)).unwrap();
    let zst = cassette::write_sealed(&dir, &c, Compression::Zstd, Some(&rs)).unwrap();
    assert!(
        plain.to_str().unwrap().ends_with(".json.age"),
        "{}",
        plain.display()
    );
    assert!(
        zst.to_str().unwrap().ends_with(".json.zst.age"),
        "{}",
        zst.display()
    );
    for f in [&plain, &zst] {
        let raw = std::fs::read(f).unwrap();
        assert!(raw.starts_with(cassette::crypt::MAGIC));
        assert!(
            !raw.windows(6).any(|w| w == b"/login"),
            "plaintext in {}",
            f.display()
        );
    }
    let (p, z) = (plain.to_str().unwrap(), zst.to_str().unwrap());

    // No identity: the error says what to pass.
    let o = run(t.path(), &["show", p]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("encrypted (age)") && o.stderr.contains("--identity"),
        "{}",
        o.stderr
    );
    // Another identity: says so.
    let o = run(
        t.path(),
        &["--identity", other.to_str().unwrap(), "show", z],
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("another recipient"), "{}", o.stderr);
    // A missing identity file: names it.
    let o = run(t.path(), &["--identity", "/no/such/key", "show", z]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("/no/such/key"), "{}", o.stderr);
    // The identity, as a flag or from the environment.
    for f in [p, z] {
        let o = run(t.path(), &["--identity", mine.to_str().unwrap(), "show", f]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.contains("/login"), "{}", o.stdout);
    }
    let env = [("TIMETRACER_IDENTITY", mine.to_str().unwrap())];
    let o = run_env(t.path(), &["list", "--dir", dir.to_str().unwrap()], &env);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.matches("/login").count(), 2, "{}", o.stdout);
    let o = run_env(t.path(), &["validate", dir.to_str().unwrap()], &env);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}
