//! The Python hook (`python/`), embedded in the agent so `replay` needs no install step: its
//! files are written to the replay's private directory, which goes first on `PYTHONPATH`
//! (`sitecustomize` loads it; see python/README.md for what it does).
use std::fs;
use std::path::Path;

use anyhow::Context as _;

/// `(relative path, contents)` of every file of the hook.
const FILES: &[(&str, &str)] = &[
    (
        "sitecustomize.py",
        include_str!("../../../python/sitecustomize.py"),
    ),
    (
        "timetracer_hook/__init__.py",
        include_str!("../../../python/timetracer_hook/__init__.py"),
    ),
    (
        "timetracer_hook/_clock.py",
        include_str!("../../../python/timetracer_hook/_clock.py"),
    ),
    (
        "timetracer_hook/_libpq.py",
        include_str!("../../../python/timetracer_hook/_libpq.py"),
    ),
    (
        "timetracer_hook/_redirect.py",
        include_str!("../../../python/timetracer_hook/_redirect.py"),
    ),
    (
        "timetracer_hook/_resolve.py",
        include_str!("../../../python/timetracer_hook/_resolve.py"),
    ),
    (
        "timetracer_hook/_tls.py",
        include_str!("../../../python/timetracer_hook/_tls.py"),
    ),
];

/// Writes the hook under `dir` (which then goes on `PYTHONPATH`).
///
/// # Errors
/// The directory cannot be written.
pub fn install(dir: &Path) -> anyhow::Result<()> {
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
