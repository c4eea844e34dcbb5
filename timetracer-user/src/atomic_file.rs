//! Writing a file so that no reader and no crash ever sees it half-written: the bytes go to a
//! hidden temporary file (`.tmp-<uuid>-NAME`, skipped by every cassette listing) in the same
//! directory, which is then renamed over the destination. Created mode 0600 by default, before
//! any byte is written: what we write (cassettes, exports of them, pages showing them) holds
//! request data.
//!
//! Cassettes from the agent take another path to the same guarantee (see
//! `cassette::writer`): an unnamed `O_TMPFILE` file linked into place, which costs one
//! directory update instead of two at thousands of cassettes a second; they fall back to
//! [`AtomicFile`] where the file system has no `O_TMPFILE`.
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Mode of the files written here unless a caller asks for another.
pub const DEFAULT_MODE: u32 = 0o600;

/// A file could not be written (the destination is unchanged).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The destination.
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to `dest` atomically with mode 0600, durable (fsynced) before the rename.
/// The parent directory must exist.
///
/// # Errors
/// Creating, writing, syncing or renaming the temporary file failed; it is removed.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_with_mode(dest, bytes, DEFAULT_MODE)
}

/// [`write`] with another file mode.
///
/// # Errors
/// As [`write`].
pub fn write_with_mode(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: dest.to_path_buf(),
        source,
    };
    let mut f = AtomicFile::create(dest, mode).map_err(err)?;
    f.file().write_all(bytes).map_err(err)?;
    f.commit(true).map_err(err)
}

/// A temporary file that becomes `dest` on [`commit`](Self::commit), or disappears when
/// dropped uncommitted.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file for `dest` in `dest`'s directory, with `mode`; never follows
    /// or reuses an existing file (`O_EXCL`). Fails with `NotFound` when the directory is
    /// missing.
    ///
    /// # Errors
    /// The file could not be created.
    pub fn create(dest: &Path, mode: u32) -> std::io::Result<Self> {
        let tmp = temp_path(dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The file to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The temporary file's path (for messages).
    #[must_use]
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Makes the written file `dest`: fsynced first when `durable`, then renamed over it.
    ///
    /// # Errors
    /// Syncing or renaming failed; the temporary file is removed and `dest` is unchanged.
    pub fn commit(mut self, durable: bool) -> std::io::Result<()> {
        if durable {
            self.file.sync_all()?;
        }
        std::fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `DIR/.tmp-<uuid>-NAME` for `DIR/NAME` (the current directory for a bare name).
#[must_use]
pub fn temp_path(dest: &Path) -> PathBuf {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".tmp-{}-{name}", uuid::Uuid::new_v4().simple()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_replace_atomically_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.html");
        write(&dest, b"one").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        assert_eq!(mode(&dest), 0o600);
        write(&dest, b"two").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        write_with_mode(&dest, b"three", 0o640).unwrap();
        assert_eq!(mode(&dest), 0o640);
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failures_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/x.json");
        let e = write(&missing, b"x").unwrap_err();
        assert_eq!(e.path, missing);
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
        // A directory in the way: the rename fails, the temporary file goes.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("keep"), b"").unwrap();
        assert!(write(&blocked, b"x").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["blocked"]);
        // Uncommitted: dropped.
        let f = AtomicFile::create(&dir.path().join("y"), DEFAULT_MODE).unwrap();
        let tmp = f.temp_path().to_path_buf();
        assert!(tmp.exists());
        drop(f);
        assert!(!tmp.exists());
    }
}
