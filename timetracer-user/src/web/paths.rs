//! Resolving a cassette named by a client (`serve`'s `?f=`) to a file under the served
//! directory, and nowhere else.
//!
//! A name is accepted only when it is relative, made of plain components (no `..`, `.`, root
//! or prefix), names a cassette candidate (`*.json`, `*.json.gz`, `*.json.zst`, not hidden),
//! and its canonical path (symlinks resolved) is a regular file inside the canonical served
//! directory. A symlink inside the directory that points outside it is refused too.
use std::path::{Component, Path, PathBuf};

use crate::index::is_candidate_name;

/// Why a name was refused (the message is safe to show: it never includes file contents).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty file name")]
    Empty,
    #[error("the file must be named relative to the cassette directory, without `..`")]
    NotRelative,
    #[error("not a cassette file name (*.json, *.json.gz, *.json.zst, any of them .age)")]
    NotCassette,
    #[error("no such cassette in the served directory")]
    NotFound,
    #[error("the file is outside the served directory")]
    Outside,
}

/// `rel` resolved under `root` (which must already be canonical).
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    if rel.is_empty() {
        return Err(PathError::Empty);
    }
    if rel.contains('\0') || rel.contains('\\') {
        return Err(PathError::NotRelative);
    }
    let p = Path::new(rel);
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PathError::NotRelative);
    }
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(PathError::NotCassette)?;
    if !is_candidate_name(name)
        || p.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return Err(PathError::NotCassette);
    }
    let canon = root
        .join(p)
        .canonicalize()
        .map_err(|_| PathError::NotFound)?;
    if !canon.starts_with(root) {
        return Err(PathError::Outside);
    }
    if !canon.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(canon)
}

/// `name` with every character but ASCII letters, digits, `-`, `_` and `.` replaced by `_`:
/// safe as a file name and inside a quoted header parameter.
#[must_use]
pub fn plain_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `path` relative to `root`, `/`-separated (what [`resolve`] takes back).
#[must_use]
pub fn rel_of(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_everything_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("2026-11-22")).unwrap();
        std::fs::write(root.join("2026-11-22/GET__x__12345678.json"), "{}").unwrap();
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.json"), root.join("link.json"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();

        assert_eq!(
            resolve(&root, "2026-11-22/GET__x__12345678.json").unwrap(),
            root.join("2026-11-22/GET__x__12345678.json")
        );
        let outside_abs = outside.path().join("secret.json");
        for (bad, why) in [
            ("", PathError::Empty),
            ("../secret.json", PathError::NotRelative),
            ("2026-11-22/../../secret.json", PathError::NotRelative),
            ("./2026-11-22/GET__x__12345678.json", PathError::NotRelative),
            (outside_abs.to_str().unwrap(), PathError::NotRelative),
            ("/etc/passwd", PathError::NotRelative),
            ("..\\secret.json", PathError::NotRelative),
            ("notes.txt", PathError::NotCassette),
            (".timetracer-index.sqlite3", PathError::NotCassette),
            (".hidden/x.json", PathError::NotCassette),
            ("missing.json", PathError::NotFound),
            ("link.json", PathError::Outside),
            ("linkdir/secret.json", PathError::Outside),
        ] {
            assert_eq!(resolve(&root, bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            rel_of(&root, &root.join("a/b.json")).as_deref(),
            Some("a/b.json")
        );
    }
}
