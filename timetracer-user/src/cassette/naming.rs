//! File naming: `YYYY-MM-DD/METHOD__route__id8.json[.zst]`, like the Python tool; in node mode
//! (`session.k8s`) under `NAMESPACE/POD/`; startup cassettes
//! `.startup/STARTUP__pidPID__id8.json[.zst]`.
use std::path::PathBuf;

use super::format::Cassette;
use super::writer::Compression;

/// Directory of startup cassettes, directly under the cassette directory.
pub const STARTUP_DIR: &str = ".startup";

/// Longest route part of a file name.
const MAX_ROUTE: usize = 80;
/// Longest method part of a file name.
const MAX_METHOD: usize = 32;

/// Sanitize a path for a file name the way the Python tool does: strip `/`, turn every
/// non-alphanumeric into `_`, collapse runs of `_`, trim `_`, lowercase, cut to 80 characters;
/// `root` when nothing is left, `unknown` for an empty path.
#[must_use]
pub fn sanitize_route(path: &str) -> String {
    if path.is_empty() {
        return "unknown".to_owned();
    }
    let mut out = String::with_capacity(path.len().min(MAX_ROUTE));
    for c in path.trim_matches('/').chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut s = out.trim_matches('_').to_owned();
    if s.len() > MAX_ROUTE {
        s.truncate(MAX_ROUTE);
        s = s.trim_end_matches('_').to_owned();
    }
    if s.is_empty() { "root".to_owned() } else { s }
}

/// Method part: ASCII alphanumerics uppercased (others become `_`), `UNKNOWN` when empty.
#[must_use]
pub fn sanitize_method(method: &str) -> String {
    let s: String = method
        .chars()
        .take(MAX_METHOD)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_');
    if s.is_empty() {
        "UNKNOWN".to_owned()
    } else {
        s.to_owned()
    }
}

/// `YYYY-MM-DD` of `recorded_at` (UTC), or `undated` when it does not start with a date.
#[must_use]
pub fn date_dir(recorded_at: &str) -> String {
    let d = recorded_at.get(..10).unwrap_or("");
    let ok = d.len() == 10
        && d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if ok {
        d.to_owned()
    } else {
        "undated".to_owned()
    }
}

/// First 8 hex digits of the session id (`00000000` when it has none).
#[must_use]
pub fn id8(id: &str) -> String {
    let s: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if s.is_empty() {
        "00000000".to_owned()
    } else {
        s
    }
}

/// Relative path of a cassette inside the cassette directory:
/// `[NAMESPACE/POD/]YYYY-MM-DD/METHOD__route__id8.json[.zst]` (the pod's directories when the
/// cassette carries `session.k8s`).
#[must_use]
pub fn relative_path(c: &Cassette, compression: Compression) -> PathBuf {
    if let Some(st) = &c.startup {
        // Hidden, so tools that list a directory's requests (index, replay DIR) skip it;
        // replay finds it by `session.recording` (docs/cassette-format.md).
        return PathBuf::from(STARTUP_DIR).join(format!(
            "STARTUP__pid{}__{}{}",
            st.pid,
            id8(&c.session.id),
            compression.extension()
        ));
    }
    let name = format!(
        "{}__{}__{}{}",
        sanitize_method(&c.request.method),
        sanitize_route(&c.request.path),
        id8(&c.session.id),
        compression.extension()
    );
    let mut p = PathBuf::new();
    if let Some(k) = &c.session.k8s {
        p.push(k8s_component(&k.namespace));
        p.push(k8s_component(&k.pod));
    }
    p.push(date_dir(&c.session.recorded_at));
    p.join(name)
}

/// A namespace or pod name as a directory: Kubernetes names are DNS labels/subdomains
/// (lowercase letters, digits, `-`, `.`), kept as they are; anything else (a hand-made
/// cassette) becomes `_`, and `.`/`..`/empty become `_`, so no path can escape the directory.
fn k8s_component(name: &str) -> String {
    let s: String = name
        .chars()
        .take(253)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(sanitize_route("/users/42"), "users_42");
        assert_eq!(sanitize_route("/db-then-http"), "db_then_http");
        assert_eq!(sanitize_route("/"), "root");
        assert_eq!(sanitize_route(""), "unknown");
        assert_eq!(
            sanitize_route("/x<img src=x onerror=alert(document.domain)>"),
            "x_img_src_x_onerror_alert_document_domain"
        );
        assert_eq!(sanitize_route("/../../etc/passwd"), "etc_passwd");
        assert_eq!(sanitize_route("/Users/{ID}//é"), "users_id");
        let long = "/a".repeat(100);
        assert!(sanitize_route(&long).len() <= 80);
    }

    #[test]
    fn methods_dates_ids() {
        assert_eq!(sanitize_method("get"), "GET");
        assert_eq!(sanitize_method(""), "UNKNOWN");
        assert_eq!(sanitize_method("../x"), "X");
        assert_eq!(date_dir("2026-11-22T23:28:08.792058+00:00"), "2026-11-22");
        assert_eq!(date_dir("yesterday"), "undated");
        assert_eq!(id8("e92ca5c8-474d-408a-82e3-0a1420f6e065"), "e92ca5c8");
        assert_eq!(id8("../../"), "00000000");
    }

    #[test]
    fn pods_get_their_directories() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cassettes/ours/POST__login_caf__e92ca5c8.json");
        let mut c = crate::cassette::read(&fixture).unwrap();
        c.request.method = "GET".into();
        c.request.path = "/users/42".into();
        c.session.recorded_at = "2026-12-07T10:00:00.000000+00:00".into();
        assert_eq!(
            relative_path(&c, Compression::None),
            PathBuf::from("2026-12-07/GET__users_42__e92ca5c8.json")
        );
        c.session.k8s = Some(crate::cassette::format::K8s {
            namespace: "shop".into(),
            pod: "api-7d9f-x2x".into(),
            ..Default::default()
        });
        assert_eq!(
            relative_path(&c, Compression::Zstd),
            PathBuf::from("shop/api-7d9f-x2x/2026-12-07/GET__users_42__e92ca5c8.json.zst")
        );
        assert_eq!(k8s_component(".."), "_");
        assert_eq!(k8s_component(""), "_");
        assert_eq!(k8s_component("a/../b"), "a_.._b");
    }
}
