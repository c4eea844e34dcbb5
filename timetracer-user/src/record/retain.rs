//! Retention (`--retain DURATION`, key `retain`): cassettes older than the duration are deleted
//! while the agent runs, at start and then periodically.
//!
//! What is deleted: files under the cassette directory that the index would list as cassettes
//! (a cassette suffix of [`crate::index::SUFFIXES`], `.age` included, not hidden, not in a
//! hidden directory such as the S3 backlog) whose modification time is older than the
//! duration *and* whose content is a cassette (age-encrypted, or a JSON document with a
//! supported `schema_version`, compressed or not): a `notes.json` someone left there is never
//! deleted. Directories left empty by a sweep (the `YYYY-MM-DD/` date directories, node mode's
//! `NAMESPACE/POD/`) are removed too; the cassette directory itself never is. Deleted files
//! leave the index in the same sweep (one transaction).
//!
//! It runs on the writer thread (the [`Retain`] sink), so it never races the writer creating a
//! file in a date directory it is about to remove, and it deletes with the invoking user's
//! file-system identity, like everything else the writer does. Listing is cheap (a walk of
//! stats: ~0.15 s for 25,000 files); deleting may not be (the file system's work: ~3.6 ms per
//! file on an ext4 mounted with `discard`), so old files are deleted in batches of at most
//! [`BUDGET`] per second, oldest first, between requests. It is counted:
//! `retention_deleted`, `retention_deleted_bytes`, `retention_errors` (exit summary, node
//! mode's `/metrics`), and logged (`timetracer::record::retain`, info per sweep that deleted,
//! debug per file, warn per error).
//!
//! Only local files: objects uploaded to S3 stay in the bucket (use a bucket lifecycle rule,
//! `docs/s3.md`). A cassette still waiting in the S3 backlog is a hard link of its own there
//! and is uploaded even when retention deleted the cassette.
use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cassette;
use crate::telemetry::Counter;

use super::sink::{Ctx, Finished, Sink};

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// The files deleted.
    pub deleted: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
    /// Old files with a cassette's name that are not cassettes (kept).
    pub not_cassettes: u64,
    /// What could not be deleted.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// How often a retention of `max_age` sweeps: a tenth of it, from 1 s to 5 minutes (a file
/// lives at most `max_age` plus this).
#[must_use]
pub fn period(max_age: Duration) -> Duration {
    (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Whether the file at `path` holds a cassette: age-encrypted (its header; the content cannot
/// be checked without the identity) or JSON with a supported `schema_version`, compressed or
/// not. Read through the size-capped reader.
#[must_use]
pub fn is_cassette_file(path: &Path) -> bool {
    let mut head = [0u8; 32];
    let n = fs::File::open(path)
        .and_then(|mut f| io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    if head[..n].starts_with(cassette::crypt::MAGIC) {
        return true;
    }
    cassette::reader::read_decompressed(path, cassette::reader::MAX_CASSETTE_BYTES)
        .is_ok_and(|bytes| cassette::reader::has_supported_schema(&bytes))
}

/// Old files (path, size), oldest first, and the paths that could not be listed.
pub type OldFiles = (Vec<(PathBuf, u64)>, Vec<(PathBuf, io::Error)>);

/// The candidate cassettes under `dir` last modified before `cutoff`, oldest first, with
/// their sizes, and what could not be listed.
///
/// # Errors
/// `dir` cannot be listed (errors below it are returned with the listing).
pub fn old_files(dir: &Path, cutoff: SystemTime) -> io::Result<OldFiles> {
    let cutoff_ns = cutoff
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let (mut files, errors) = crate::index::walk(dir)?;
    files.retain(|f| f.mtime_ns < cutoff_ns);
    files.sort_by_key(|f| f.mtime_ns);
    let old = files
        .into_iter()
        .map(|f| (dir.join(&f.rel), u64::try_from(f.size).unwrap_or(0)))
        .collect();
    Ok((old, errors))
}

/// Deletes `files` that are cassettes ([`is_cassette_file`]), oldest first, until `budget`
/// has passed (what is left stays in `files`), then the directories under `dir` that this
/// left empty (never `dir` itself).
pub fn delete(dir: &Path, files: &mut VecDeque<(PathBuf, u64)>, budget: Duration) -> Swept {
    let began = Instant::now();
    let mut out = Swept::default();
    let mut emptied = BTreeSet::new();
    while began.elapsed() < budget {
        let Some((path, size)) = files.pop_front() else {
            break;
        };
        if !is_cassette_file(&path) {
            out.not_cassettes += 1;
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "Retention: deleted");
                out.bytes += size;
                if let Some(parent) = path.parent() {
                    emptied.insert(parent.to_path_buf());
                }
                out.deleted.push(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => out.errors.push((path, e)),
        }
    }
    // Deepest first, then up while empty: `remove_dir` only removes an empty directory.
    for d in emptied.iter().rev() {
        let mut d = d.as_path();
        while d != dir && d.starts_with(dir) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            d = match d.parent() {
                Some(p) => p,
                None => break,
            };
        }
    }
    out
}

/// Writer time a retention may take per second while old cassettes wait to be deleted: a
/// quarter. Deleting is mostly the file system's work (on an ext4 mounted with `discard`,
/// ~3.6 ms per file on our VMs), so a long backlog is deleted over several seconds while the
/// writer keeps writing.
pub const BUDGET: Duration = Duration::from_millis(250);

/// The retention sink: lists the old cassettes at start and then every [`period`], and
/// deletes them between requests, at most [`BUDGET`] of each second (the writer wakes at
/// least once a second when nothing arrives).
pub struct Retain {
    dir: PathBuf,
    max_age: Duration,
    every: Duration,
    /// When the directory is listed next.
    next: Instant,
    /// When the next batch of `pending` may be deleted.
    next_batch: Instant,
    budget: Duration,
    /// Old files found by the last listing, not yet deleted.
    pending: VecDeque<(PathBuf, u64)>,
    index: Option<crate::index::Index>,
}

impl std::fmt::Debug for Retain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retain")
            .field("dir", &self.dir)
            .field("max_age", &self.max_age)
            .field("every", &self.every)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Retain {
    /// Deletes cassettes under `dir` older than `max_age`.
    #[must_use]
    pub fn new(dir: &Path, max_age: Duration) -> Self {
        let now = Instant::now();
        Self {
            dir: dir.to_path_buf(),
            max_age,
            every: period(max_age),
            next: now,
            next_batch: now,
            budget: BUDGET,
            pending: VecDeque::new(),
            index: None,
        }
    }

    /// Lists when due, deletes a batch when one may be.
    fn tick(&mut self, ctx: &Ctx) {
        let now = Instant::now();
        if self.pending.is_empty() && now >= self.next {
            self.list(ctx);
        }
        if !self.pending.is_empty() && now >= self.next_batch {
            self.next_batch = now + Duration::from_secs(1);
            self.delete_batch(ctx);
        }
    }

    fn list(&mut self, ctx: &Ctx) {
        self.next = Instant::now() + self.every;
        let cutoff = SystemTime::now()
            .checked_sub(self.max_age)
            .unwrap_or(UNIX_EPOCH);
        match old_files(&self.dir, cutoff) {
            Ok((old, errors)) => {
                for (path, e) in &errors {
                    tracing::warn!(path = %path.display(), error = %e, "Retention: cannot list");
                }
                ctx.counters
                    .add(Counter::RetentionErrors, errors.len() as u64);
                self.pending = old.into();
            }
            Err(e) => {
                ctx.counters.inc(Counter::RetentionErrors);
                tracing::warn!(dir = %self.dir.display(), error = %e, "Retention: cannot list the cassette directory");
            }
        }
    }

    fn delete_batch(&mut self, ctx: &Ctx) {
        let began = Instant::now();
        let swept = delete(&self.dir, &mut self.pending, self.budget);
        for (path, e) in &swept.errors {
            tracing::warn!(path = %path.display(), error = %e, "Retention: cannot delete");
        }
        ctx.counters
            .add(Counter::RetentionErrors, swept.errors.len() as u64);
        if swept.deleted.is_empty() {
            return;
        }
        ctx.counters
            .add(Counter::RetentionDeleted, swept.deleted.len() as u64);
        ctx.counters
            .add(Counter::RetentionDeletedBytes, swept.bytes);
        tracing::info!(
            deleted = swept.deleted.len(),
            bytes = swept.bytes,
            took_ms = began.elapsed().as_millis(),
            left = self.pending.len(),
            older_than = %humantime::format_duration(self.max_age),
            "Retention: deleted old cassettes"
        );
        if let Some(idx) = &mut self.index
            && let Err(e) = idx.remove_all(&swept.deleted)
        {
            // `timetracer list` refreshes the index from the directory anyway.
            tracing::warn!(error = %e, "Retention: cannot remove deleted cassettes from the index");
            ctx.counters.inc(Counter::IndexErrors);
        }
    }
}

impl Sink for Retain {
    fn name(&self) -> &'static str {
        "retain"
    }
    fn start(&mut self, ctx: &Ctx) {
        // A missing index is the Index sink's to report; the sweep works without it.
        self.index = crate::index::Index::open(&self.dir).ok();
        self.tick(ctx);
    }
    fn accept(&mut self, _item: &mut Finished, ctx: &Ctx) {
        // Under a steady load the queue may never be empty: work between requests too.
        self.tick(ctx);
    }
    fn idle(&mut self, ctx: &Ctx) {
        self.tick(ctx);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::cassette::{BuildOptions, Compression};
    use crate::record::sink::{Files, tests::finished};
    use crate::telemetry::Counters;

    fn ctx() -> Ctx {
        Ctx {
            counters: Counters::default(),
            build: BuildOptions::default(),
            quiet: true,
        }
    }

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Old cassettes of every form go, with their emptied date directories and index rows;
    /// fresh cassettes, old files that are not cassettes, hidden files and the S3 backlog
    /// stay.
    #[test]
    fn sweeps_old_cassettes_only() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let ctx = ctx();
        let mut written = Vec::new();
        for (compression, encrypt) in [
            (Compression::None, false),
            (Compression::Zstd, false),
            (Compression::None, true),
            (Compression::Zstd, true),
            (Compression::None, false),
        ] {
            let (_, recipient) = cassette::crypt::generate();
            let mut files = Files::new(
                dir.to_path_buf(),
                compression,
                encrypt.then(|| {
                    std::sync::Arc::new(cassette::crypt::Recipients::parse(&[recipient]).unwrap())
                }),
            );
            let mut f = finished("/x", Some(200));
            files.accept(&mut f, &ctx);
            written.push(f.written.unwrap());
        }
        let fresh = written.pop().unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with(".json.zst.age")),
            "{names:?}"
        );
        // An old cassette in an old date directory of its own (emptied: removed).
        let old_day = dir.join("2020-01-01");
        fs::create_dir(&old_day).unwrap();
        let moved = old_day.join(written[0].file_name().unwrap());
        fs::rename(&written[0], &moved).unwrap();
        written[0] = moved;
        let mut idx = crate::index::Index::open(dir).unwrap();
        assert_eq!(idx.refresh().unwrap().added, 5);
        drop(idx);
        // Not cassettes, though old and named like one; hidden; the backlog's link.
        let notes = dir.join("notes.json");
        fs::write(&notes, b"{\"hello\": 1}").unwrap();
        let garbage = dir.join("GET__x__deadbeef.json.zst");
        fs::write(&garbage, b"not zstd").unwrap();
        let text = dir.join("readme.txt");
        fs::write(&text, b"keep").unwrap();
        fs::create_dir(dir.join(".s3-backlog")).unwrap();
        let backlog = dir.join(".s3-backlog/000001-x.json");
        fs::hard_link(&written[1], &backlog).unwrap();
        for p in written.iter().chain([&notes, &garbage, &text, &backlog]) {
            age(p, 3600);
        }

        let mut r = Retain::new(dir, Duration::from_secs(60));
        r.start(&ctx);
        for p in &written {
            assert!(!p.exists(), "{} deleted", p.display());
        }
        assert!(!old_day.exists(), "emptied date directory removed");
        for p in [&fresh, &notes, &garbage, &text, &backlog] {
            assert!(p.exists(), "{} kept", p.display());
        }
        assert!(fresh.parent().unwrap().exists());
        assert_eq!(ctx.counters.get(Counter::RetentionDeleted), 4);
        assert!(ctx.counters.get(Counter::RetentionDeletedBytes) > 0);
        assert_eq!(ctx.counters.get(Counter::RetentionErrors), 0);
        // The index no longer lists them, before any refresh.
        let idx = crate::index::Index::open(dir).unwrap();
        let left = idx.search(&crate::index::Query::default()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].file, fresh);

        // Not due yet: nothing happens; once due, the next request triggers a sweep.
        age(&fresh, 3600);
        r.idle(&ctx);
        assert!(fresh.exists());
        r.next = Instant::now();
        r.next_batch = Instant::now();
        r.accept(&mut finished("/y", Some(200)), &ctx);
        assert!(!fresh.exists());
        assert!(dir.exists(), "the cassette directory itself stays");
        assert_eq!(ctx.counters.get(Counter::RetentionDeleted), 5);
    }

    /// A file that cannot be deleted is counted and logged; the sweep goes on.
    #[test]
    fn errors_are_counted() {
        if nix::unistd::geteuid().is_root() {
            // Root ignores directory modes; the deletion error is then made by a missing
            // directory instead.
            let ctx = ctx();
            let mut r = Retain::new(
                Path::new("/nonexistent/timetracer-retain"),
                Duration::from_secs(1),
            );
            r.start(&ctx);
            assert_eq!(ctx.counters.get(Counter::RetentionErrors), 1);
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("2020-01-01");
        fs::create_dir(&sub).unwrap();
        let ctx = ctx();
        let mut files = Files::new(sub.clone(), Compression::None, None);
        let mut f = finished("/x", Some(200));
        files.accept(&mut f, &ctx);
        let p = f.written.unwrap();
        age(&p, 3600);
        fs::set_permissions(p.parent().unwrap(), fs::Permissions::from_mode(0o500)).unwrap();
        let mut r = Retain::new(d.path(), Duration::from_secs(60));
        r.start(&ctx);
        fs::set_permissions(p.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(p.exists());
        assert_eq!(ctx.counters.get(Counter::RetentionErrors), 1);
        assert_eq!(ctx.counters.get(Counter::RetentionDeleted), 0);
    }

    /// A batch stops when its time is up; what is left waits, oldest first.
    #[test]
    fn batches_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let ctx = ctx();
        let mut files = Files::new(d.path().to_path_buf(), Compression::None, None);
        for i in 0..3 {
            let mut f = finished("/x", Some(200));
            files.accept(&mut f, &ctx);
            age(&f.written.unwrap(), 3600 - i);
        }
        let (old, errors) =
            old_files(d.path(), SystemTime::now() - Duration::from_secs(60)).unwrap();
        assert!(errors.is_empty());
        assert_eq!(old.len(), 3);
        let ages: Vec<SystemTime> = old
            .iter()
            .map(|(p, _)| fs::metadata(p).unwrap().modified().unwrap())
            .collect();
        assert!(ages.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        let mut pending: VecDeque<_> = old.into();
        let none = delete(d.path(), &mut pending, Duration::ZERO);
        assert!(none.deleted.is_empty() && pending.len() == 3);
        let all = delete(d.path(), &mut pending, Duration::from_secs(60));
        assert_eq!(all.deleted.len(), 3);
        assert!(pending.is_empty());
    }

    #[test]
    fn sweep_period() {
        assert_eq!(period(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(
            period(Duration::from_secs(30 * 86400)),
            Duration::from_secs(300)
        );
    }
}
