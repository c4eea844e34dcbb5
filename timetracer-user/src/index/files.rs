//! Which files in a cassette directory are cassette candidates.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Cassette file suffixes (compression and encryption are detected by magic bytes when
/// reading).
pub const SUFFIXES: &[&str] = &[
    ".json",
    ".json.gz",
    ".json.zst",
    ".json.age",
    ".json.gz.age",
    ".json.zst.age",
];

/// File names that are never cassettes even though they end in `.json` (the Python tool's
/// index and our own export defaults).
const NOT_CASSETTES: &[&str] = &["index.json", "dashboard.json", "timetracer.json"];

/// Whether a file name looks like a cassette: a cassette suffix, not hidden (our index, temp
/// files `.tmp-*` of the atomic writer), not a known non-cassette name, not a `.har.json`.
#[must_use]
pub fn is_candidate_name(name: &str) -> bool {
    !name.starts_with('.')
        && SUFFIXES.iter().any(|s| name.ends_with(s))
        && !NOT_CASSETTES.contains(&name)
        && !name.ends_with(".har.json")
}

/// One candidate file with the metadata used for incremental indexing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Path relative to the cassette directory, `/`-separated.
    pub rel: String,
    pub mtime_ns: i64,
    pub size: i64,
}

/// The (mtime, size) of a file.
pub fn stamp(path: &Path) -> io::Result<(i64, i64)> {
    let md = fs::metadata(path)?;
    let mtime = md
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Ok((mtime, i64::try_from(md.len()).unwrap_or(i64::MAX)))
}

/// Candidates found, and the paths that could not be read.
pub type Listing = (Vec<FileStamp>, Vec<(PathBuf, io::Error)>);

/// Every candidate under `dir`, recursively, skipping hidden directories and not following
/// directory symlinks. Errors reading a subdirectory are returned with the listing.
pub fn walk(dir: &Path) -> io::Result<Listing> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    // The top directory must be readable; errors below it are per directory.
    let mut first = true;
    while let Some((abs, rel)) = stack.pop() {
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if first => return Err(e),
            Err(e) => {
                errors.push((abs, e));
                continue;
            }
        };
        first = false;
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push((abs.clone(), e));
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if is_candidate_name(name) {
                match stamp(&entry.path()) {
                    Ok((mtime_ns, size)) => out.push(FileStamp {
                        rel: child_rel,
                        mtime_ns,
                        size,
                    }),
                    Err(e) => errors.push((entry.path(), e)),
                }
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        assert!(is_candidate_name("GET__x__12345678.json"));
        assert!(is_candidate_name("GET__x__12345678.json.gz"));
        assert!(is_candidate_name("GET__x__12345678.json.zst"));
        assert!(!is_candidate_name("index.json"));
        assert!(!is_candidate_name(".timetracer-index.sqlite3"));
        assert!(!is_candidate_name(".tmp-abc-GET__x.json"));
        assert!(!is_candidate_name("notes.txt"));
        assert!(!is_candidate_name("out.har.json"));
    }
}
