//! The S3 backlog: cassettes waiting for upload, in a directory, bounded in bytes and age.
//!
//! Every cassette the agent uploads passes through here (see [`super::spool`]): the writer
//! thread links the written file into the backlog directory ([`Backlog::push_file`], a hard
//! link, or a copy across file systems), an upload worker takes the oldest waiting entry
//! ([`Backlog::take_oldest`]) and removes it once S3 acknowledged it ([`Backlog::done`]). While S3 is
//! reachable the backlog holds only what is being uploaded; while it is slow or down it grows,
//! and the agent never waits for it. A backlog left by a previous run (agent killed, S3 down at
//! exit) is found again by [`Backlog::open`] and uploaded first.
//!
//! **Layout.** One file per cassette, mode 0600, in a 0700 directory, named
//! `NNNNNNNNNNNNNNNNNNNN-SSSSSSSSSS.KEY`: the time it was queued (nanoseconds since the epoch,
//! 20 digits), a sequence number (10 digits), and its S3 key below the prefix, percent-encoded
//! (`/` is `%2F`). Names sort oldest first. Hidden files (`.tmp-*`, a copy in progress) are
//! removed when the backlog is opened; files with other names are left alone and logged.
//!
//! **Limits** ([`Limits`]). Above `max_bytes` the oldest entries are dropped until the backlog
//! fits; entries queued longer than `max_age` ago are dropped too. An entry being uploaded at
//! that moment is dropped like the others (its file is unlinked; the upload in progress still
//! reads it): if that upload then succeeds, the cassette did arrive and its drop is taken back
//! ([`Backlog::done`] says so). Every drop is counted (`s3_dropped`) and the cassette itself
//! stays in the cassette directory: only its upload is given up.
//!
//! ```
//! use timetracer::s3::backlog::{Backlog, Limits};
//! use timetracer::telemetry::{Counter, Counters};
//! # fn main() -> Result<(), timetracer::s3::backlog::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let limits = Limits { max_bytes: 1 << 20, max_age: std::time::Duration::from_secs(3600) };
//! let mut b = Backlog::open(&dir.path().join("backlog"), limits)?;
//! let counters = Counters::default();
//! b.attach(&counters);
//! b.push_bytes("2026-11-22/GET__users_42__e92ca5c8.json", b"{}", std::time::SystemTime::now())?;
//! let job = b.take_oldest().expect("one entry waits");
//! assert_eq!(job.key, "2026-11-22/GET__users_42__e92ca5c8.json");
//! b.done(&job);
//! assert_eq!(counters.get(Counter::S3BacklogFiles), 0);
//! # Ok(()) }
//! ```
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::telemetry::{Counter, Counters};

/// Longest file name most Linux file systems accept.
const NAME_MAX: usize = 255;

/// What is encoded in a key to make it one file name: `/` (a separator there), `%` (the escape
/// itself), controls (refused by the key check anyway).
const NAME_ENCODE: &AsciiSet = &CONTROLS.add(b'/').add(b'%');

/// Backlog errors; each names the path and what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "S3 backlog directory {}: {source} (check the path is a directory the agent can write, or set s3.backlog_dir / --s3-backlog-dir)",
        path.display()
    )]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot queue {key} in the S3 backlog {}: {source} (check free space)", path.display())]
    Queue {
        key: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "key {0:?} cannot be queued (no `..`, empty segments or control characters; at most ~220 bytes)"
    )]
    BadKey(String),
}

/// How much the backlog may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of cassettes waiting; above it the oldest are dropped.
    pub max_bytes: u64,
    /// How long a cassette may wait; older ones are dropped.
    pub max_age: Duration,
}

impl Default for Limits {
    /// 1 GiB, 24 hours: a day of outage at a few cassettes a second.
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// One cassette to upload, taken with [`Backlog::take_oldest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The backlog file's name (its identity in the backlog).
    pub name: String,
    /// The S3 key below the prefix.
    pub key: String,
    /// The backlog file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    bytes: u64,
    /// Queued at, nanoseconds since the epoch (from the name).
    queued_ns: u128,
    in_flight: bool,
}

/// What [`Backlog::open`] found of a previous run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub files: u64,
    pub bytes: u64,
}

/// The bounded on-disk queue (see the module documentation).
#[derive(Debug)]
pub struct Backlog {
    dir: PathBuf,
    limits: Limits,
    /// Oldest first (names sort by queue time, then sequence).
    entries: BTreeMap<String, Entry>,
    bytes: u64,
    seq: u64,
    /// The last queue time given, so names keep their order if the clock steps back.
    last_ns: u128,
    recovered: Recovered,
    /// Drops made before [`Self::attach`] (while opening).
    dropped_unattached: u64,
    counters: Option<Counters>,
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `(queued_ns, seq, key)` of a backlog file name, if it is one.
fn parse_name(name: &str) -> Option<(u128, u64, String)> {
    let (stamp, enc) = name.split_once('.')?;
    let (ns, seq) = stamp.split_once('-')?;
    if ns.len() != 20 || seq.len() != 10 {
        return None;
    }
    let key = percent_decode_str(enc).decode_utf8().ok()?.into_owned();
    super::check_key(&key).ok()?;
    Some((ns.parse().ok()?, seq.parse().ok()?, key))
}

impl Backlog {
    /// Opens (creates 0700) the backlog directory and loads what a previous run left in it,
    /// applying the limits to it (drops are counted once [`Self::attach`] is called).
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, limits: Limits) -> Result<Self, Error> {
        let dir_err = |source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        // Ours alone: cassettes hold request data.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
        let mut b = Self {
            dir: dir.to_path_buf(),
            limits,
            entries: BTreeMap::new(),
            bytes: 0,
            seq: 0,
            last_ns: 0,
            recovered: Recovered::default(),
            dropped_unattached: 0,
            counters: None,
        };
        for e in fs::read_dir(dir).map_err(dir_err)? {
            let e = e.map_err(dir_err)?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            if name.starts_with(".tmp-") {
                // A copy interrupted by a crash: its cassette is still in the cassette
                // directory, but was never queued.
                let _ = fs::remove_file(e.path());
                continue;
            }
            let Some((ns, seq, key)) = parse_name(&name) else {
                tracing::warn!(file = %e.path().display(), "Not an S3 backlog entry; left alone");
                continue;
            };
            b.last_ns = b.last_ns.max(ns);
            b.seq = b.seq.max(seq + 1);
            b.bytes += md.len();
            b.recovered.files += 1;
            b.recovered.bytes += md.len();
            b.entries.insert(
                name,
                Entry {
                    key,
                    bytes: md.len(),
                    queued_ns: ns,
                    in_flight: false,
                },
            );
        }
        b.enforce(SystemTime::now());
        Ok(b)
    }

    /// Reports to `counters` from now on: the backlog's size (`s3_backlog_files`,
    /// `s3_backlog_bytes`), what was recovered (`s3_recovered`) and dropped so far.
    pub fn attach(&mut self, counters: &Counters) {
        counters.add(Counter::S3BacklogFiles, self.entries.len() as u64);
        counters.add(Counter::S3BacklogBytes, self.bytes);
        counters.add(Counter::S3Recovered, self.recovered.files);
        counters.add(
            Counter::S3Dropped,
            std::mem::take(&mut self.dropped_unattached),
        );
        self.counters = Some(counters.clone());
        self.peak();
    }

    fn peak(&self) {
        if let Some(c) = &self.counters {
            c.max(Counter::S3BacklogPeakFiles, self.entries.len() as u64);
            c.max(Counter::S3BacklogPeakBytes, self.bytes);
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What the previous run left (as found by [`Self::open`], before the limits).
    #[must_use]
    pub fn recovered(&self) -> Recovered {
        self.recovered
    }

    /// Entries waiting or being uploaded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting or being uploaded.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The keys in the order they will be uploaded (for tests and diagnostics).
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        self.entries.values().map(|e| e.key.clone()).collect()
    }

    fn new_name(&mut self, key: &str, now: SystemTime) -> Result<String, Error> {
        super::check_key(key).map_err(|_| Error::BadKey(key.to_owned()))?;
        let ns = nanos(now).max(self.last_ns);
        self.last_ns = ns;
        let seq = self.seq % 10_000_000_000;
        self.seq += 1;
        let name = format!(
            "{ns:020}-{seq:010}.{}",
            utf8_percent_encode(key, NAME_ENCODE)
        );
        if name.len() > NAME_MAX {
            return Err(Error::BadKey(key.to_owned()));
        }
        Ok(name)
    }

    /// Queues the cassette file `src` for upload as `key`: a hard link into the backlog (it
    /// costs no copy and survives the cassette's deletion), or a copy (0600) when `src` is on
    /// another file system or readable by others. Then applies the limits; returns how many
    /// entries were dropped for them (the new one included, when it alone is over the size).
    ///
    /// # Errors
    /// The key is not valid, or the link and the copy both failed (nothing was queued).
    pub fn push_file(&mut self, key: &str, src: &Path, now: SystemTime) -> Result<u64, Error> {
        let name = self.new_name(key, now)?;
        let dest = self.dir.join(&name);
        let queue_err = |source| Error::Queue {
            key: key.to_owned(),
            path: dest.clone(),
            source,
        };
        let private = fs::metadata(src).map_err(queue_err)?.permissions().mode() & 0o077 == 0;
        if !(private && fs::hard_link(src, &dest).is_ok()) {
            let tmp = self.dir.join(format!(".tmp-{name}"));
            let copied = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut out| io::copy(&mut fs::File::open(src)?, &mut out))
                .and_then(|_| fs::rename(&tmp, &dest));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(queue_err(e));
            }
        }
        let bytes = fs::metadata(&dest).map_err(queue_err)?.size();
        Ok(self.insert(name, key, bytes, now))
    }

    /// Queues `bytes` for upload as `key` (written 0600, atomically). As [`Self::push_file`].
    ///
    /// # Errors
    /// The key is not valid, or the file could not be written.
    pub fn push_bytes(&mut self, key: &str, bytes: &[u8], now: SystemTime) -> Result<u64, Error> {
        let name = self.new_name(key, now)?;
        let dest = self.dir.join(&name);
        crate::atomic_file::write_with_mode(&dest, bytes, 0o600).map_err(|e| Error::Queue {
            key: key.to_owned(),
            path: e.path,
            source: e.source,
        })?;
        Ok(self.insert(name, key, bytes.len() as u64, now))
    }

    fn insert(&mut self, name: String, key: &str, bytes: u64, now: SystemTime) -> u64 {
        self.entries.insert(
            name,
            Entry {
                key: key.to_owned(),
                bytes,
                // The time in its name (`new_name` just set it): never before an older entry's.
                queued_ns: self.last_ns,
                in_flight: false,
            },
        );
        self.bytes += bytes;
        if let Some(c) = &self.counters {
            c.inc(Counter::S3BacklogFiles);
            c.add(Counter::S3BacklogBytes, bytes);
        }
        let dropped = self.enforce(now);
        self.peak();
        dropped
    }

    /// Drops entries over the limits, oldest first: those older than `max_age`, and the oldest
    /// while the backlog holds more than `max_bytes`. Returns how many were dropped (counted as
    /// `s3_dropped`).
    pub fn enforce(&mut self, now: SystemTime) -> u64 {
        let max_age_ns = self.limits.max_age.as_nanos();
        let now_ns = nanos(now);
        let mut dropped = 0;
        // Entries sort by queue time (names start with it, and it never goes back), so the
        // expired ones are a prefix: this costs what it drops, not the backlog's length (the
        // workers call it before every upload).
        while let Some((name, e)) = self.entries.first_key_value() {
            let over_age = now_ns.saturating_sub(e.queued_ns) > max_age_ns;
            if !over_age && self.bytes <= self.limits.max_bytes {
                break;
            }
            let name = name.clone();
            self.drop_entry(
                &name,
                if over_age {
                    "older than s3.backlog_max_age"
                } else {
                    "over s3.backlog_max"
                },
            );
            dropped += 1;
        }
        dropped
    }

    fn drop_entry(&mut self, name: &str, why: &str) {
        if let Some(e) = self.remove(name) {
            tracing::warn!(key = %e.key, bytes = e.bytes, "S3 upload given up: {why} (the cassette stays in the cassette directory)");
            match &self.counters {
                Some(c) => c.inc(Counter::S3Dropped),
                None => self.dropped_unattached += 1,
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.bytes -= e.bytes;
        if let Some(c) = &self.counters {
            c.sub(Counter::S3BacklogFiles, 1);
            c.sub(Counter::S3BacklogBytes, e.bytes);
        }
        let _ = fs::remove_file(self.dir.join(name));
        Some(e)
    }

    /// The oldest entry not being uploaded, now marked as being uploaded.
    pub fn take_oldest(&mut self) -> Option<Job> {
        let (name, e) = self.entries.iter_mut().find(|(_, e)| !e.in_flight)?;
        e.in_flight = true;
        Some(Job {
            name: name.clone(),
            key: e.key.clone(),
            path: self.dir.join(name),
            bytes: e.bytes,
        })
    }

    /// `job` was uploaded: removed from the backlog (file and entry). Returns `false` when the
    /// limits had dropped it meanwhile: its drop is taken back (`s3_dropped` decremented), it
    /// arrived.
    pub fn done(&mut self, job: &Job) -> bool {
        if self.remove(&job.name).is_some() {
            return true;
        }
        if let Some(c) = &self.counters {
            c.sub(Counter::S3Dropped, 1);
        }
        false
    }

    /// `job` could not be uploaded (or its file vanished): given up and counted as dropped.
    pub fn give_up(&mut self, job: &Job, why: &str) {
        self.drop_entry(&job.name, why);
    }

    /// `job`'s upload failed: it waits again, in its place (oldest first).
    pub fn retry(&mut self, job: &Job) {
        if let Some(e) = self.entries.get_mut(&job.name) {
            e.in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn limits(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            max_age: Duration::from_secs(3600),
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Oldest first, whatever the keys; an upload that failed keeps its place.
    #[test]
    fn oldest_first_and_retry_keeps_the_place() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&d.path().join("b"), limits(1 << 20)).unwrap();
        let c = Counters::default();
        b.attach(&c);
        for (i, k) in ["z/3.json", "a/1.json", "m/2.json"].iter().enumerate() {
            b.push_bytes(k, k.as_bytes(), at(i as u64)).unwrap();
        }
        assert_eq!(b.keys(), ["z/3.json", "a/1.json", "m/2.json"]);
        let j1 = b.take_oldest().unwrap();
        let j2 = b.take_oldest().unwrap();
        assert_eq!((j1.key.as_str(), j2.key.as_str()), ("z/3.json", "a/1.json"));
        b.retry(&j1);
        b.done(&j2);
        assert_eq!(b.take_oldest().unwrap().key, "z/3.json");
        assert_eq!(b.take_oldest().unwrap().key, "m/2.json");
        assert!(b.take_oldest().is_none(), "both are being uploaded");
        assert_eq!(c.get(Counter::S3BacklogFiles), 2);
        assert_eq!(c.get(Counter::S3BacklogBytes), 16);
        assert_eq!(fs::read(&j1.path).unwrap(), b"z/3.json");
        assert!(!j2.path.exists(), "an uploaded entry's file is removed");
    }

    /// Over the size limit the oldest entries go (counted), one being uploaded too (if its
    /// upload succeeds after all, the drop is taken back); an entry bigger than the limit
    /// alone is dropped itself.
    #[test]
    fn size_limit_drops_the_oldest() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&d.path().join("b"), limits(300)).unwrap();
        let c = Counters::default();
        b.attach(&c);
        let kb = [b'x'; 100];
        for i in 0..3 {
            assert_eq!(b.push_bytes(&format!("k{i}.json"), &kb, at(i)).unwrap(), 0);
        }
        let uploading = b.take_oldest().unwrap();
        assert_eq!(uploading.key, "k0.json");
        // k3 makes 400 bytes: k0, the oldest, goes although it is being uploaded.
        assert_eq!(b.push_bytes("k3.json", &kb, at(3)).unwrap(), 1);
        assert_eq!(b.keys(), ["k1.json", "k2.json", "k3.json"]);
        assert_eq!(c.get(Counter::S3Dropped), 1);
        assert_eq!(b.bytes(), 300);
        assert_eq!(c.get(Counter::S3BacklogBytes), 300);
        assert_eq!(c.get(Counter::S3BacklogFiles), 3);
        assert_eq!(c.get(Counter::S3BacklogPeakFiles), 3);
        assert_eq!(c.get(Counter::S3BacklogPeakBytes), 300);
        // Its upload failed: nothing comes back. Had it succeeded, the drop is taken back.
        b.retry(&uploading);
        assert_eq!(b.keys(), ["k1.json", "k2.json", "k3.json"]);
        assert!(!b.done(&uploading));
        assert_eq!(c.get(Counter::S3Dropped), 0);
        let big = [b'y'; 301];
        assert_eq!(b.push_bytes("big.json", &big, at(4)).unwrap(), 4);
        assert!(b.is_empty());
        assert_eq!(c.get(Counter::S3Dropped), 4);
        assert_eq!(c.get(Counter::S3BacklogFiles), 0);
        assert_eq!(c.get(Counter::S3BacklogBytes), 0);
        let files = fs::read_dir(b.dir()).unwrap().count();
        assert_eq!(files, 0, "dropped entries' files are removed");
    }

    #[test]
    fn age_limit() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&d.path().join("b"), limits(1 << 20)).unwrap();
        let c = Counters::default();
        b.attach(&c);
        b.push_bytes("old.json", b"1", at(0)).unwrap();
        b.push_bytes("new.json", b"2", at(3000)).unwrap();
        assert_eq!(b.enforce(at(3601)), 1);
        assert_eq!(b.keys(), ["new.json"]);
        assert_eq!(c.get(Counter::S3Dropped), 1);
        assert_eq!(b.enforce(at(3601)), 0);
    }

    /// What a previous run left is found again in order, in-progress copies are removed,
    /// foreign files left alone, and the limits apply to it (counted once attached).
    #[test]
    fn restart_recovers_in_order() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("b");
        {
            let mut b = Backlog::open(&dir, limits(1 << 20)).unwrap();
            b.push_bytes("2026-11-22/GET__a__1.json", b"aa", at(1))
                .unwrap();
            b.push_bytes("2026-11-22/GET__b__2.json", b"bbb", at(2))
                .unwrap();
            b.push_bytes("2026-11-23/GET__c__3.json", b"c", at(3))
                .unwrap();
            let taken = b.take_oldest().unwrap();
            assert_eq!(taken.key, "2026-11-22/GET__a__1.json");
            // The agent dies mid-upload: nothing else happens.
        }
        fs::write(
            dir.join(".tmp-00000000000000000009-0000000009.x.json"),
            b"half",
        )
        .unwrap();
        fs::write(dir.join("README"), b"not ours").unwrap();
        let mut b = Backlog::open(&dir, limits(1 << 20)).unwrap();
        assert_eq!(
            b.keys(),
            [
                "2026-11-22/GET__a__1.json",
                "2026-11-22/GET__b__2.json",
                "2026-11-23/GET__c__3.json"
            ]
        );
        assert_eq!(b.recovered(), Recovered { files: 3, bytes: 6 });
        assert!(
            !dir.join(".tmp-00000000000000000009-0000000009.x.json")
                .exists()
        );
        assert!(dir.join("README").exists());
        let c = Counters::default();
        b.attach(&c);
        assert_eq!(c.get(Counter::S3Recovered), 3);
        assert_eq!(c.get(Counter::S3BacklogFiles), 3);
        assert_eq!(c.get(Counter::S3BacklogBytes), 6);
        // New entries go after the recovered ones even if the clock went back.
        b.push_bytes("late.json", b"l", at(0)).unwrap();
        assert_eq!(b.keys().last().unwrap(), "late.json");
        let j = b.take_oldest().unwrap();
        assert_eq!(fs::read(&j.path).unwrap(), b"aa");
        drop(b);
        // Reopened with a smaller limit: the oldest are dropped, counted at attach.
        let mut b = Backlog::open(&dir, limits(2)).unwrap();
        assert_eq!(b.keys(), ["2026-11-23/GET__c__3.json", "late.json"]);
        let c = Counters::default();
        b.attach(&c);
        assert_eq!(c.get(Counter::S3Dropped), 2);
        assert_eq!(c.get(Counter::S3BacklogBytes), 2);
    }

    /// The directory is 0700 (even when it existed wider), entries 0600: a hard link of a
    /// private cassette, a copy of a file others could read.
    #[test]
    fn private_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("b");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let mut b = Backlog::open(&dir, limits(1 << 20)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let private = d.path().join("private.json");
        crate::atomic_file::write(&private, b"secret").unwrap();
        let public = d.path().join("public.json");
        fs::write(&public, b"shared").unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).unwrap();
        b.push_file("a/private.json", &private, at(0)).unwrap();
        b.push_file("a/public.json", &public, at(1)).unwrap();
        let j1 = b.take_oldest().unwrap();
        let j2 = b.take_oldest().unwrap();
        assert_eq!(mode(&j1.path), 0o600);
        assert_eq!(mode(&j2.path), 0o600);
        assert_eq!(
            fs::metadata(&j1.path).unwrap().ino(),
            fs::metadata(&private).unwrap().ino(),
            "a private cassette is linked, not copied"
        );
        assert_ne!(
            fs::metadata(&j2.path).unwrap().ino(),
            fs::metadata(&public).unwrap().ino()
        );
        assert_eq!(fs::read(&j2.path).unwrap(), b"shared");
        // Deleting the cassette does not lose the queued upload.
        fs::remove_file(&private).unwrap();
        assert_eq!(fs::read(&j1.path).unwrap(), b"secret");
        assert_eq!(b.bytes(), 12);
    }

    #[test]
    fn bad_keys_are_refused_and_names_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Backlog::open(&d.path().join("b"), limits(1 << 20)).unwrap();
        assert!(matches!(
            b.push_bytes("../x", b"", at(0)),
            Err(Error::BadKey(_))
        ));
        assert!(matches!(
            b.push_bytes(&"a".repeat(300), b"", at(0)),
            Err(Error::BadKey(_))
        ));
        assert!(b.is_empty());
        let key = "2026-11-22/GET__caf%C3%A9 x__1.json";
        b.push_bytes(key, b"", at(0)).unwrap();
        let j = b.take_oldest().unwrap();
        assert!(!j.name.contains('/'));
        assert_eq!(parse_name(&j.name).unwrap().2, key);
        assert_eq!(j.key, key);
    }
}
