//! Atomic cassette writer: temp file (mode 0600) in the target directory, rename (fsync with `TIMETRACER_FSYNC=1`).
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use super::Error;
use super::format::Cassette;
use super::naming::relative_path;

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

/// Removes the temp file unless disarmed.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(self.path);
        }
    }
}

/// Write `c` under `dir` (`DIR/YYYY-MM-DD/METHOD__route__id8.json[.zst]`), atomically: the file
/// is created 0600 under a `.tmp-` name in the same directory, written (fsynced with
/// `TIMETRACER_FSYNC=1`), then renamed.
/// Directories are created 0700. Returns the final path.
pub fn write(dir: &Path, c: &Cassette, compression: Compression) -> Result<PathBuf, Error> {
    let final_path = dir.join(relative_path(c, compression));
    let parent = final_path.parent().unwrap_or(dir).to_path_buf();
    let file_name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".tmp-{}-{file_name}",
        uuid::Uuid::new_v4().simple()
    ));
    let io_err = |source| Error::Write {
        path: tmp.clone(),
        source,
    };
    // The directory is made only when missing (first cassette of a day / endpoint, or
    // deleted since): checking it before every file cost the agent a mkdir and stats per
    // cassette.
    let in_parent = |open: &dyn Fn() -> std::io::Result<File>| match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(|source| Error::CreateDir {
                    path: parent.clone(),
                    source,
                })?;
            Ok(open())
        }
        r => Ok(r),
    };
    // Preferred: an unnamed file (O_TMPFILE) that gets its name only once complete. Else a
    // hidden temporary name renamed at the end. Either way a reader or a crash never sees a
    // partial cassette; the unnamed file costs one directory entry instead of two directory
    // updates (create + rename were a third of the agent's CPU at 2k cassettes/s).
    let (file, mut guard) = match in_parent(&|| open_unnamed(&parent))? {
        Ok(f) => (f, None),
        Err(e) if unnamed_unsupported(&e) => {
            let named = || {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
            };
            let f = in_parent(&named)?.map_err(io_err)?;
            let guard = TempGuard {
                path: &tmp,
                armed: true,
            };
            (f, Some(guard))
        }
        Err(e) => return Err(io_err(e)),
    };

    let file = match compression {
        Compression::None => {
            let mut w = BufWriter::new(file);
            serde_json::to_writer_pretty(&mut w, c).map_err(Error::Serialize)?;
            w.write_all(b"\n").map_err(io_err)?;
            w.into_inner().map_err(|e| io_err(e.into_error()))?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(BufWriter::new(file), ZSTD_LEVEL)
                .map_err(io_err)?;
            serde_json::to_writer_pretty(&mut enc, c).map_err(Error::Serialize)?;
            enc.write_all(b"\n").map_err(io_err)?;
            let w = enc.finish().map_err(io_err)?;
            w.into_inner().map_err(|e| io_err(e.into_error()))?
        }
    };
    if durable() {
        file.sync_all().map_err(io_err)?;
    }
    let named = match &mut guard {
        // Rewriting a cassette: a name cannot be linked over, so link a temporary one and
        // rename it over the old file.
        None => match link_unnamed(&file, &final_path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => link_unnamed(&file, &tmp)
                .and_then(|()| {
                    fs::rename(&tmp, &final_path).inspect_err(|_| {
                        let _ = fs::remove_file(&tmp);
                    })
                }),
            r => r,
        },
        Some(g) => fs::rename(&tmp, &final_path).map(|()| g.armed = false),
    };
    drop(file);
    named.map_err(|source| Error::Write {
        path: final_path.clone(),
        source,
    })?;
    // Make the new name durable; failure here does not undo a complete file.
    if durable()
        && let Ok(d) = File::open(&parent)
    {
        let _ = d.sync_all();
    }
    Ok(final_path)
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
