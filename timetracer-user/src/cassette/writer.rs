//! Atomic cassette writer: an unnamed `O_TMPFILE` file (mode 0600) in the target directory,
//! linked into place once complete, else [`crate::atomic_file`]'s temporary name + rename
//! (fsync with `TIMETRACER_FSYNC=1`).
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::Error;
use super::crypt::{self, Recipients};
use super::format::Cassette;
use super::naming::relative_path;
use crate::atomic_file::{self, AtomicFile};

/// zstd level used for `.json.zst`.
const ZSTD_LEVEL: i32 = 3;

/// How the file is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Plain `.json`.
    #[default]
    None,
    /// `.json.zst`.
    Zstd,
}

impl Compression {
    /// File name suffix, with the leading dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => ".json",
            Self::Zstd => ".json.zst",
        }
    }
}

/// Write `c` under `dir` (`DIR/YYYY-MM-DD/METHOD__route__id8.json[.zst]`), atomically: the file
/// is created 0600 without a name (or under a `.tmp-` name), written (fsynced with
/// `TIMETRACER_FSYNC=1`), then given its name.
/// Directories are created 0700. Returns the final path.
pub fn write(dir: &Path, c: &Cassette, compression: Compression) -> Result<PathBuf, Error> {
    write_sealed(dir, c, compression, None)
}

/// [`write`], encrypted for `recipients` when given (`….json[.zst].age`; compressed first).
pub fn write_sealed(
    dir: &Path,
    c: &Cassette,
    compression: Compression,
    recipients: Option<&Recipients>,
) -> Result<PathBuf, Error> {
    let mut rel = relative_path(c, compression).into_os_string();
    if recipients.is_some() {
        rel.push(crypt::SUFFIX);
    }
    let final_path = dir.join(rel);
    let parent = final_path.parent().unwrap_or(dir).to_path_buf();
    // Preferred: an unnamed file (O_TMPFILE) that gets its name only once complete. Else the
    // crate's one atomic-write helper: a hidden temporary name renamed at the end. Either way a
    // reader or a crash never sees a partial cassette. The unnamed file is why cassettes do not
    // always use the helper: it costs one directory entry instead of two directory updates
    // (create + rename were a third of the agent's CPU at 2k cassettes/s).
    let mut target = match in_parent(&parent, || open_unnamed(&parent))? {
        Ok(f) => Target::Unnamed(f),
        Err(e) if unnamed_unsupported(&e) => {
            let named = in_parent(&parent, || AtomicFile::create(&final_path, 0o600))?;
            Target::Named(named.map_err(|source| Error::Write {
                path: final_path.clone(),
                source,
            })?)
        }
        Err(source) => {
            return Err(Error::Write {
                path: final_path,
                source,
            });
        }
    };
    let io_err = |source| Error::Write {
        path: final_path.clone(),
        source,
    };
    let file = match &mut target {
        Target::Unnamed(f) => f,
        Target::Named(a) => a.file(),
    };
    let mut out = BufWriter::new(&mut *file);
    match recipients {
        Some(r) => {
            let mut sealed = r.wrap(&mut out).map_err(io_err)?;
            encode(&mut sealed, c, compression).map_err(|e| e.into_error(io_err))?;
            sealed.finish().map_err(io_err)?;
        }
        None => encode(&mut out, c, compression).map_err(|e| e.into_error(io_err))?,
    }
    out.flush().map_err(io_err)?;
    drop(out);
    match target {
        Target::Unnamed(file) => {
            if durable() {
                file.sync_all().map_err(io_err)?;
            }
            match link_unnamed(&file, &final_path) {
                // Rewriting a cassette: a name cannot be linked over, so link a temporary one
                // and rename it over the old file.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let tmp = atomic_file::temp_path(&final_path);
                    link_unnamed(&file, &tmp).and_then(|()| {
                        fs::rename(&tmp, &final_path).inspect_err(|_| {
                            let _ = fs::remove_file(&tmp);
                        })
                    })
                }
                r => r,
            }
        }
        Target::Named(a) => a.commit(durable()),
    }
    .map_err(io_err)?;
    // Make the new name durable; failure here does not undo a complete file.
    if durable()
        && let Ok(d) = File::open(&parent)
    {
        let _ = d.sync_all();
    }
    Ok(final_path)
}

/// A failure of [`encode`]: serializing, or the writer.
enum EncodeError {
    Serialize(serde_json::Error),
    Io(std::io::Error),
}

impl EncodeError {
    fn into_error(self, io_err: impl Fn(std::io::Error) -> Error) -> Error {
        match self {
            Self::Serialize(e) => Error::Serialize(e),
            Self::Io(e) => io_err(e),
        }
    }
}

/// Writes `c` as pretty JSON (and a newline) into `w`, compressed as asked.
fn encode(w: &mut impl Write, c: &Cassette, compression: Compression) -> Result<(), EncodeError> {
    match compression {
        Compression::None => {
            serde_json::to_writer_pretty(&mut *w, c).map_err(EncodeError::Serialize)?;
            w.write_all(b"\n").map_err(EncodeError::Io)
        }
        Compression::Zstd => {
            let mut enc =
                zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(EncodeError::Io)?;
            serde_json::to_writer_pretty(&mut enc, c).map_err(EncodeError::Serialize)?;
            enc.write_all(b"\n").map_err(EncodeError::Io)?;
            enc.finish().map(drop).map_err(EncodeError::Io)
        }
    }
}

/// Where a cassette is written before it gets its name.
enum Target {
    /// `O_TMPFILE`: no name until [`link_unnamed`].
    Unnamed(File),
    /// A hidden temporary name, renamed on commit.
    Named(AtomicFile),
}

/// Runs `open` (a create in `parent`), making `parent` (0700) first when it is missing. The
/// directory is made only then (first cassette of a day / endpoint, or deleted since):
/// checking it before every file cost the agent a mkdir and stats per cassette.
fn in_parent<T>(
    parent: &Path,
    open: impl Fn() -> std::io::Result<T>,
) -> Result<std::io::Result<T>, Error> {
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| Error::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            Ok(open())
        }
        r => Ok(r),
    }
}

/// An unnamed regular file in `dir` (`O_TMPFILE`), mode 0600.
fn open_unnamed(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// The file system (or kernel) has no `O_TMPFILE`: use a temporary name.
fn unnamed_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
    )
}

/// Gives the unnamed `file` its name; fails if `path` exists (names are unique per cassette).
fn link_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::io::AsRawFd as _;
    // No std or nix API links an O_TMPFILE descriptor; `linkat` through /proc/self/fd with
    // AT_SYMLINK_FOLLOW is the documented way that needs no CAP_DAC_READ_SEARCH.
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `TIMETRACER_FSYNC=1` makes every cassette durable against power loss (file and directory
/// fsync). Off by default: the temp-file + rename already guarantees that a crash or SIGKILL of
/// the agent never leaves a partial cassette, and two fsyncs per request cost a recorder
/// writing thousands of cassettes per second most of its throughput (docs/performance notes in
/// docs/ARCHITECTURE.md).
fn durable() -> bool {
    static DURABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DURABLE.get_or_init(|| {
        std::env::var("TIMETRACER_FSYNC")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    })
}
