//! Tags and notes on cassettes, kept beside them and never inside them.
//!
//! One store per cassette directory, `DIR/.timetracer-notes.json` (hidden, so no listing takes
//! it for a cassette), mapping a cassette's path relative to `DIR` (`/`-separated, what
//! `serve` and the index use) to its tags and note:
//!
//! ```json
//! {"version": 1, "cassettes": {"2026-12-07/GET__users_42__1a2b3c4d.json":
//!   {"tags": ["flaky", "ticket-123"], "note": "500 after the deploy", "updated_at": "2026-12-07T23:41:02Z"}}}
//! ```
//!
//! A cassette is a recording and stays byte-for-byte what the agent wrote (its digest, its
//! encryption, the replay of it); what people say about it lives here. Writes take an
//! exclusive `flock` on `DIR/.timetracer-notes.lock` around read-modify-write, so `serve` and
//! the CLI never lose each other's edits, and replace the file atomically with mode 0600
//! ([`crate::atomic_file`]): it may quote request data.
use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The store's file name inside the cassette directory.
pub const NOTES_FILE: &str = ".timetracer-notes.json";
/// The lock file serialising writers.
pub const LOCK_FILE: &str = ".timetracer-notes.lock";
/// Tags per cassette.
pub const MAX_TAGS: usize = 20;
/// Characters per tag.
pub const MAX_TAG_LEN: usize = 40;
/// Characters per note.
pub const MAX_NOTE_LEN: usize = 4000;
/// A store larger than this is refused (a store of thousands of notes is well below it).
const MAX_STORE_BYTES: u64 = 16 * 1024 * 1024;

/// The tags and note of one cassette.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub note: String,
    /// RFC 3339, UTC, of the last change.
    #[serde(default)]
    pub updated_at: String,
}

impl Annotation {
    /// No tag and no note.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.note.is_empty()
    }

    /// Carries `tag` (case-insensitive).
    #[must_use]
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// The annotations of one directory, by cassette path relative to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub version: u32,
    #[serde(default)]
    pub cassettes: BTreeMap<String, Annotation>,
}

/// Reading or writing the store failed, or an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotesError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a tags-and-notes store ({source}); move it away to start a new one", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is larger than {MAX_STORE_BYTES} bytes; move it away to start a new one", path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] crate::atomic_file::WriteError),
    #[error(
        "tag {0:?} is not allowed: 1 to {MAX_TAG_LEN} letters, digits or . _ - : / (no spaces)"
    )]
    BadTag(String),
    #[error("at most {MAX_TAGS} tags per cassette ({0} given)")]
    TooManyTags(usize),
    #[error("the note has {0} characters; at most {MAX_NOTE_LEN} are kept (shorten it)")]
    NoteTooLong(usize),
}

/// The store of cassette directory `dir`.
#[must_use]
pub fn store_path(dir: &Path) -> PathBuf {
    dir.join(NOTES_FILE)
}

/// Reads the store of `dir`; an absent store is empty.
///
/// # Errors
/// The file cannot be read, is too large or is not a store.
pub fn load(dir: &Path) -> Result<Store, NotesError> {
    let path = store_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(source) => return Err(NotesError::Read { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STORE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| NotesError::Read {
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_STORE_BYTES {
        return Err(NotesError::TooLarge { path });
    }
    serde_json::from_slice(&bytes).map_err(|source| NotesError::Parse { path, source })
}

/// `(mtime, size)` of the store, `None` when there is none (to notice edits by others).
#[must_use]
pub fn stamp(dir: &Path) -> Option<(i64, i64)> {
    super::files::stamp(&store_path(dir)).ok()
}

/// Checks and normalises tags: trimmed, lower-cased, duplicates and empty ones dropped, order
/// kept.
///
/// # Errors
/// A tag with other characters or too long, or too many tags.
pub fn clean_tags<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>, NotesError> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.as_ref().trim();
        if t.is_empty() {
            continue;
        }
        let ok = t.chars().count() <= MAX_TAG_LEN
            && t.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
        if !ok {
            return Err(NotesError::BadTag(t.to_owned()));
        }
        let t = t.to_lowercase();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(NotesError::TooManyTags(out.len()));
    }
    Ok(out)
}

/// Sets the tags and note of cassette `rel` in `dir` (both empty: forgets it) and returns
/// what was stored. `rel` must already be a checked path relative to `dir` (the callers
/// resolve it first: `web::paths::resolve`, or the index's own listing).
///
/// # Errors
/// A refused tag or note, or the store cannot be locked, read or written (then it is
/// unchanged).
pub fn set(dir: &Path, rel: &str, tags: &[String], note: &str) -> Result<Annotation, NotesError> {
    let tags = clean_tags(tags)?;
    // Line ends as one kind; trailing blanks are noise.
    let note = note.replace("\r\n", "\n").trim_end().to_owned();
    let n = note.chars().count();
    if n > MAX_NOTE_LEN {
        return Err(NotesError::NoteTooLong(n));
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| NotesError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    // Held until the end of this function: readers never need it (the write is a rename).
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| NotesError::Lock {
            path: lock_path.clone(),
            source: e.into(),
        },
    )?;
    let mut store = load(dir)?;
    store.version = 1;
    let a = Annotation {
        tags,
        note,
        updated_at: now_rfc3339(),
    };
    if a.is_empty() {
        store.cassettes.remove(rel);
    } else {
        store.cassettes.insert(rel.to_owned(), a.clone());
    }
    let mut bytes = serde_json::to_vec_pretty(&store).unwrap_or_default();
    bytes.push(b'\n');
    crate::atomic_file::write(&store_path(dir), &bytes)?;
    Ok(a)
}

fn now_rfc3339() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn set_load_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Store::default());
        let a = set(
            dir.path(),
            "d/GET__x__1.json",
            &[
                "Flaky".into(),
                " flaky ".into(),
                "ticket-1".into(),
                String::new(),
            ],
            "<script>alert(1)</script>\r\nsecond line  \n",
        )
        .unwrap();
        assert_eq!(a.tags, ["flaky", "ticket-1"]);
        assert_eq!(a.note, "<script>alert(1)</script>\nsecond line");
        assert!(a.updated_at.ends_with('Z'));
        let s = load(dir.path()).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.cassettes["d/GET__x__1.json"], a);
        assert!(s.cassettes["d/GET__x__1.json"].has_tag("FLAKY"));
        let mode = std::fs::metadata(store_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Empty: forgotten.
        set(dir.path(), "d/GET__x__1.json", &[], "  ").unwrap();
        assert!(load(dir.path()).unwrap().cassettes.is_empty());
        // The store is never taken for a cassette.
        assert!(!super::super::is_candidate_name(NOTES_FILE));
        assert!(!super::super::is_candidate_name(LOCK_FILE));
    }

    #[test]
    fn refuses_bad_tags_and_long_notes_and_keeps_the_store() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "a.json", &["keep".into()], "").unwrap();
        let before = std::fs::read(store_path(dir.path())).unwrap();
        for bad in ["two words", "<b>", "x\"y", &"t".repeat(MAX_TAG_LEN + 1)] {
            let e = set(dir.path(), "a.json", &[bad.to_owned()], "").unwrap_err();
            assert!(matches!(e, NotesError::BadTag(_)), "{bad}: {e}");
        }
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            set(dir.path(), "a.json", &many, ""),
            Err(NotesError::TooManyTags(_))
        ));
        assert!(matches!(
            set(dir.path(), "a.json", &[], &"x".repeat(MAX_NOTE_LEN + 1)),
            Err(NotesError::NoteTooLong(_))
        ));
        assert_eq!(std::fs::read(store_path(dir.path())).unwrap(), before);
        // A damaged store is reported with the fix, never silently replaced.
        std::fs::write(store_path(dir.path()), b"{not json").unwrap();
        let e = set(dir.path(), "a.json", &["x".into()], "").unwrap_err();
        assert!(e.to_string().contains("move it away"), "{e}");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for i in 0..8 {
                let d = dir.path();
                s.spawn(move || {
                    for j in 0..10 {
                        set(d, &format!("c{i}-{j}.json"), &[format!("t{i}")], "n").unwrap();
                    }
                });
            }
        });
        assert_eq!(load(dir.path()).unwrap().cassettes.len(), 80);
    }
}
