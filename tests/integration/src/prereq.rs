//! Skip policy and prerequisite search, shared by every test of the workspace (conventions
//! rule 10, issue #16 "no test passes by skipping").
//!
//! A test whose prerequisite is missing calls [`skip_or_fail`]: it prints `SKIP: <reason>` and
//! the test returns, except under `TIMETRACER_REQUIRE_PRIVILEGED=1` (CI, `cargo xtask test` as
//! root), where it panics with the reason. Prerequisites are searched where they are usually
//! installed ([`which`], [`find_cpython`], [`venv`]), never at one machine's paths.
//!
//! Only `std`: `timetracer-user`'s unit and integration tests include this file with
//! `#[path]`, so each test crate has the same policy without a shared dev-dependency.
#![allow(
    dead_code,
    reason = "included with #[path] by several test crates, each using part of it"
)]

use std::path::{Path, PathBuf};

/// The variable that turns every skip into a failure.
pub const REQUIRE_VAR: &str = "TIMETRACER_REQUIRE_PRIVILEGED";

/// True when `TIMETRACER_REQUIRE_PRIVILEGED=1`: skipping is a failure.
pub fn privileged_required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// Skips (prints `SKIP: reason`; the caller then returns) or, under
/// `TIMETRACER_REQUIRE_PRIVILEGED=1`, fails the calling test with `reason`.
///
/// # Panics
/// Under `TIMETRACER_REQUIRE_PRIVILEGED=1`, always.
pub fn skip_or_fail(reason: &str) {
    assert!(
        !privileged_required(),
        "{REQUIRE_VAR}=1 and this test cannot run: {reason}"
    );
    eprintln!("SKIP: {reason} ({REQUIRE_VAR}=1 makes this a failure)");
}

/// `found`, or [`skip_or_fail`] with `reason()` and `None`.
pub fn require<T>(found: Option<T>, reason: impl FnOnce() -> String) -> Option<T> {
    if found.is_none() {
        skip_or_fail(&reason());
    }
    found
}

/// The directories searched after `PATH`: where Debian and `make install` put programs (a
/// `sudo` `PATH` often lacks the `sbin` ones).
const USUAL_BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// `name` on `PATH`, else in the usual program directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(USUAL_BIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Python venv of the test apps: `TIMETRACER_VENV` when set and not empty, else
/// `<repo>/.venv` (where `cargo xtask install` creates it).
pub fn venv(repo: &Path) -> PathBuf {
    std::env::var_os("TIMETRACER_VENV")
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo.join(".venv"), PathBuf::from)
}

/// The home directories a developer's tools may live under: `$HOME` and, under `sudo`, the
/// invoking user's (from `/etc/passwd`).
pub fn home_dirs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(user) = std::env::var("SUDO_USER") {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let home = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[0] == user)
            .map(|f| PathBuf::from(f[5]));
        out.extend(home);
    }
    out.dedup();
    out
}

/// The numeric patch of a version directory named `3.<minor>.<patch>` (`cpython-` and a
/// platform suffix stripped by the caller); `None` for other minors and for free-threaded or
/// pre-release builds (`3.13.0t`, `3.14.0a1`).
fn patch_of(version: &str, minor: u32) -> Option<u32> {
    version
        .strip_prefix(&format!("3.{minor}."))?
        .parse::<u32>()
        .ok()
}

/// A pyenv version directory's name is its version.
fn pyenv_version(name: &str) -> Option<&str> {
    Some(name)
}

/// `cpython-3.12.8-linux-x86_64-gnu` → `3.12.8` (not `+freethreaded`, not other
/// implementations).
fn uv_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("cpython-")?;
    (!rest.contains("freethreaded")).then(|| rest.split('-').next().unwrap_or(""))
}

/// `<dir>/<entry>/bin/python3.<minor>` for the entry of `dir` with the highest patch version,
/// where `version_of` maps an entry name to its `3.x.y` part.
fn newest_in(dir: &Path, minor: u32, version_of: fn(&str) -> Option<&str>) -> Option<PathBuf> {
    let exe = format!("python3.{minor}");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let patch = patch_of(version_of(&name)?, minor)?;
            let p = e.path().join("bin").join(&exe);
            p.is_file().then_some((patch, p))
        })
        .max_by_key(|(patch, _)| *patch)
        .map(|(_, p)| p)
}

/// Where [`find_cpython`] looks, for messages.
pub const CPYTHON_SEARCH: &str = "pyenv ($PYENV_ROOT/versions/3.X.*, ~/.pyenv/versions/3.X.*), \
     uv ($UV_PYTHON_INSTALL_DIR, $XDG_DATA_HOME/uv/python, ~/.local/share/uv/python), \
     /usr/local/bin, /opt/python*/bin and PATH (not /usr/bin, /bin or pyenv shims)";

/// A CPython `3.<minor>` interpreter built outside the distribution (with its `.symtab`):
/// pyenv, then uv, then `/usr/local/bin`, `/opt/python*/bin`, then `PATH`. The distribution's
/// `/usr/bin/python3.X` is [`distro_python`]'s, and pyenv shims are scripts, so neither counts.
pub fn find_cpython(minor: u32) -> Option<PathBuf> {
    let homes = home_dirs();
    let pyenv_roots = std::env::var_os("PYENV_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(homes.iter().map(|h| h.join(".pyenv")));
    for root in pyenv_roots {
        if let Some(p) = newest_in(&root.join("versions"), minor, pyenv_version) {
            return Some(p);
        }
    }
    let uv_dirs = std::env::var_os("UV_PYTHON_INSTALL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("XDG_DATA_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("uv/python")),
        )
        .chain(homes.iter().map(|h| h.join(".local/share/uv/python")));
    for dir in uv_dirs {
        if let Some(p) = newest_in(&dir, minor, uv_version) {
            return Some(p);
        }
    }
    let exe = format!("python3.{minor}");
    let opt = std::fs::read_dir("/opt")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
        .map(|e| e.path().join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/local/bin"))
        .chain(opt)
        .chain(std::env::split_paths(&path))
        .filter(|d| !d.ends_with("shims"))
        .map(|d| d.join(&exe))
        .filter(|p| p.is_file())
        .find(|p| {
            let real = p.canonicalize().unwrap_or_else(|_| p.clone());
            !(real.starts_with("/usr/bin") || real.starts_with("/bin"))
        })
}

/// The distribution's interpreter (`/usr/bin/python3`, resolved to `/usr/bin/python3.X`) and
/// its minor version: Debian's build is static, stripped and not PIE.
pub fn distro_python() -> Option<(PathBuf, u32)> {
    let real = Path::new("/usr/bin/python3").canonicalize().ok()?;
    let minor = real
        .file_name()?
        .to_str()?
        .strip_prefix("python3.")?
        .parse()
        .ok()?;
    real.is_file().then_some((real, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_directories() {
        assert_eq!(patch_of("3.11.7", 11), Some(7));
        assert_eq!(patch_of("3.11.7", 12), None);
        assert_eq!(patch_of("3.13.0t", 13), None);
        assert_eq!(patch_of("3.1.2", 11), None);
        assert_eq!(
            uv_version("cpython-3.12.8-linux-x86_64-gnu"),
            Some("3.12.8")
        );
        assert_eq!(
            uv_version("cpython-3.13.1+freethreaded-linux-x86_64-gnu"),
            None
        );
        assert_eq!(uv_version("pypy-3.10.14-linux-x86_64-gnu"), None);
    }

    #[test]
    fn newest_patch_wins() {
        let d = std::env::temp_dir().join(format!("tt-prereq-{}", std::process::id()));
        for v in ["3.12.1", "3.12.10", "3.12.3t", "3.11.9"] {
            let bin = d.join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let exe = if v.starts_with("3.12") {
                "python3.12"
            } else {
                "python3.11"
            };
            std::fs::write(bin.join(exe), "").unwrap();
        }
        let found = newest_in(&d, 12, pyenv_version);
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(found, Some(d.join("3.12.10/bin/python3.12")));
    }
}
