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
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(|source| Error::CreateDir {
            path: parent.clone(),
            source,
        })?;

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
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    let mut guard = TempGuard {
        path: &tmp,
        armed: true,
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
    drop(file);
    fs::rename(&tmp, &final_path).map_err(|source| Error::Write {
        path: final_path.clone(),
        source,
    })?;
    guard.armed = false;
    // Make the rename durable; failure here does not undo a complete file.
    if durable()
        && let Ok(d) = File::open(&parent)
    {
        let _ = d.sync_all();
    }
    Ok(final_path)
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
