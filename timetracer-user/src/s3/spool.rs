//! The agent's S3 uploads: a pool of worker threads that drain the on-disk [`Backlog`], oldest
//! first, off the recording's hot path.
//!
//! The writer thread only *queues* a written cassette ([`Spool::queue`]: a hard link into the
//! backlog directory and a map insert); it never waits for S3. Workers take the oldest entry,
//! PUT it and remove it. When a PUT fails (S3 down, slow, refusing) the cassette goes back to
//! its place, S3 is considered down, and from then on **one** worker probes it with an
//! exponential backoff (0.5 s doubling to 5 s) while the others wait; the first success ends
//! the outage and every worker drains the backlog again. Nothing is lost while the backlog is
//! within its limits ([`super::backlog::Limits`]); above them the oldest uploads are dropped
//! and counted (`s3_dropped`).
//!
//! At the end of a recording, [`Spool::close`] keeps uploading while uploads succeed (until the
//! backlog is empty), and gives up after [`CLOSE_IDLE`] without a successful upload (S3 is still
//! down): what is left stays in the backlog directory and the next run with the same backlog
//! directory uploads it first.
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::telemetry::{Counter, Counters};

use super::Uploader;
use super::backlog::{Backlog, Error, Job};

/// The first retry after a failed upload.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two probes of an S3 that is down: an outage ends at most this long
/// (plus one request) before uploads resume.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At exit, how long the spool waits for an upload to succeed before it leaves the rest in the
/// backlog for the next run.
pub const CLOSE_IDLE: Duration = Duration::from_secs(10);
/// How often idle workers apply the age limit.
const AGE_CHECK: Duration = Duration::from_secs(1);

/// What [`Spool::close`] left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// Cassettes still waiting in the backlog directory.
    pub files: u64,
    pub bytes: u64,
}

struct State {
    backlog: Backlog,
    /// Consecutive failed uploads (0: S3 is up).
    failures: u32,
    /// No upload starts before this (set while S3 is down).
    retry_at: Option<Instant>,
    /// Uploads in progress.
    in_flight: usize,
    /// Workers still running.
    workers: usize,
    /// `close` was called: workers stop when nothing is left.
    closing: bool,
    /// Workers stop now (close gave up).
    stop: bool,
    /// The last successful upload (or the start of `close`).
    last_success: Instant,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    uploader: Uploader,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked left the state consistent (every step is one call under the
        // lock); keep uploading.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Upload workers over a [`Backlog`] (see the module documentation).
pub struct Spool {
    destination: String,
    pending: Option<(Uploader, Backlog, usize)>,
    shared: Option<Arc<Shared>>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("workers", &self.handles.len())
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// A spool that will upload `backlog` (what a previous run left first) with `uploader`,
    /// `workers` at a time, once [`Self::start`]ed.
    #[must_use]
    pub fn new(uploader: Uploader, backlog: Backlog, workers: usize) -> Self {
        let settings = uploader.settings();
        Self {
            destination: format!("s3://{}/{}", settings.bucket, settings.prefix),
            pending: Some((uploader, backlog, workers.clamp(1, 64))),
            shared: None,
            handles: Vec::new(),
        }
    }

    /// The bucket and prefix (for messages).
    #[must_use]
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Starts the workers, reporting to `counters`. Idempotent.
    ///
    /// # Errors
    /// A worker thread cannot be started (the spool then has the workers that did start).
    pub fn start(&mut self, counters: &Counters) -> std::io::Result<()> {
        let Some((uploader, mut backlog, workers)) = self.pending.take() else {
            return Ok(());
        };
        backlog.attach(counters);
        let recovered = backlog.recovered();
        if recovered.files > 0 {
            tracing::info!(
                files = recovered.files,
                bytes = recovered.bytes,
                dir = %backlog.dir().display(),
                "Uploading the S3 backlog a previous run left"
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                backlog,
                failures: 0,
                retry_at: None,
                in_flight: 0,
                workers: 0,
                closing: false,
                stop: false,
                last_success: Instant::now(),
            }),
            cv: Condvar::new(),
            uploader,
            counters: counters.clone(),
        });
        self.shared = Some(Arc::clone(&shared));
        for i in 0..workers {
            let sh = Arc::clone(&shared);
            sh.lock().workers += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("tt-s3-{i}"))
                .spawn(move || {
                    work(&sh);
                    sh.lock().workers -= 1;
                    sh.cv.notify_all();
                });
            match spawned {
                Ok(h) => self.handles.push(h),
                Err(e) => {
                    shared.lock().workers -= 1;
                    if self.handles.is_empty() {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// Queues the written cassette `src` for upload as `key` (on the writer thread: a hard
    /// link, no network). Returns the uploads the limits dropped.
    ///
    /// # Errors
    /// The key is not valid, or the file could not be linked or copied.
    pub fn queue(&mut self, key: &str, src: &std::path::Path) -> Result<u64, Error> {
        let Some(shared) = &self.shared else {
            // Not started yet: it waits with the rest.
            return match &mut self.pending {
                Some((_, backlog, _)) => backlog.push_file(key, src, SystemTime::now()),
                None => Ok(0),
            };
        };
        let dropped = shared
            .lock()
            .backlog
            .push_file(key, src, SystemTime::now())?;
        shared.cv.notify_one();
        Ok(dropped)
    }

    /// Uploads what is left while uploads succeed; after `idle` without a successful upload
    /// (S3 still down) stops and leaves the rest in the backlog directory. Returns what was
    /// left.
    pub fn close(&mut self, idle: Duration) -> Left {
        let Some(shared) = self.shared.take() else {
            return Left::default();
        };
        let mut st = shared.lock();
        st.closing = true;
        st.last_success = Instant::now();
        shared.cv.notify_all();
        loop {
            if st.workers == 0 {
                break;
            }
            let waited = st.last_success.elapsed();
            if waited >= idle {
                // S3 is still down: the workers stop after their current request (whose
                // cassette stays queued until S3 acknowledged it).
                st.stop = true;
                shared.cv.notify_all();
                break;
            }
            st = shared
                .cv
                .wait_timeout(st, idle - waited)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let left = Left {
            files: st.backlog.len() as u64,
            bytes: st.backlog.bytes(),
        };
        let busy = st.in_flight;
        drop(st);
        if busy == 0 {
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
        // Otherwise a worker is inside a request that can take the client's timeout: it is not
        // waited for (its cassette stays in the backlog unless S3 acknowledges it).
        left
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lock().stop = true;
            shared.cv.notify_all();
        }
    }
}

fn backoff(failures: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// One worker: take the oldest waiting cassette, upload it, repeat.
fn work(sh: &Shared) {
    loop {
        let job = {
            let mut st = sh.lock();
            loop {
                if st.stop {
                    return;
                }
                let now = Instant::now();
                st.backlog.enforce(SystemTime::now());
                let wait = match st.retry_at {
                    Some(t) if t > now => Some(t - now),
                    // S3 is down: one probe at a time.
                    _ if st.failures > 0 && st.in_flight > 0 => None,
                    _ => match st.backlog.take_oldest() {
                        Some(job) => {
                            st.in_flight += 1;
                            break job;
                        }
                        None if st.closing && st.in_flight == 0 => {
                            // Done: wake close() and the other workers.
                            st.stop = true;
                            sh.cv.notify_all();
                            return;
                        }
                        None => None,
                    },
                };
                st = sh
                    .cv
                    .wait_timeout(st, wait.unwrap_or(AGE_CHECK).min(AGE_CHECK))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        };
        let res = std::fs::read(&job.path)
            .map_err(|e| (true, e.to_string()))
            .and_then(|bytes| {
                sh.uploader
                    .put(&job.key, bytes)
                    .map_err(|e| (false, e.to_string()))
            });
        finish(sh, &job, res);
    }
}

fn finish(sh: &Shared, job: &Job, res: Result<(), (bool, String)>) {
    let mut st = sh.lock();
    st.in_flight -= 1;
    match res {
        Ok(()) => {
            st.backlog.done(job);
            sh.counters.inc(Counter::S3Uploaded);
            if st.failures > 0 {
                tracing::info!(
                    waiting = st.backlog.len(),
                    "S3 answers again; uploading the backlog"
                );
            }
            st.failures = 0;
            st.retry_at = None;
            st.last_success = Instant::now();
        }
        Err((true, e)) => {
            // The backlog file is gone (removed by hand): nothing to upload.
            st.backlog
                .give_up(job, &format!("cannot read its backlog file: {e}"));
        }
        Err((false, e)) => {
            sh.counters.inc(Counter::S3Errors);
            st.backlog.retry(job);
            st.failures = st.failures.saturating_add(1);
            let wait = backoff(st.failures);
            st.retry_at = Some(Instant::now() + wait);
            if st.failures == 1 {
                tracing::warn!(
                    key = %job.key,
                    error = %e,
                    dir = %st.backlog.dir().display(),
                    "S3 upload failed; cassettes wait in the backlog and are retried"
                );
            } else {
                tracing::debug!(key = %job.key, error = %e, retry_in = ?wait, "S3 still failing");
            }
        }
    }
    drop(st);
    sh.cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::Settings;
    use crate::s3::backlog::Limits;

    /// An S3 that accepts connections and never answers (a hung server): queueing stays a
    /// file-system operation, every cassette waits in the backlog, and `close` returns after
    /// its idle time without waiting for the requests in flight, leaving the backlog for the
    /// next run.
    #[test]
    fn a_hung_s3_never_slows_queueing_or_exit() {
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = Settings {
            bucket: "b".into(),
            prefix: "p".into(),
            region: None,
            endpoint: Some(format!("http://{}", hung.local_addr().unwrap())),
        };
        let up = Uploader::for_spool_with_keys(settings, "id", "secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        let backlog = Backlog::open(&d.path().join("backlog"), Limits::default()).unwrap();
        let mut spool = Spool::new(up, backlog, 4);
        let counters = Counters::default();
        spool.start(&counters).unwrap();
        let src = d.path().join("c.json");
        crate::atomic_file::write(&src, &[b'x'; 4096]).unwrap();
        let t = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let q = Instant::now();
            assert_eq!(spool.queue(&format!("d/{i}.json"), &src).unwrap(), 0);
            slowest = slowest.max(q.elapsed());
        }
        let queued = t.elapsed();
        assert!(
            queued < Duration::from_secs(2) && slowest < Duration::from_millis(200),
            "queueing 200 cassettes took {queued:?} (slowest {slowest:?})"
        );
        assert_eq!(counters.get(Counter::S3BacklogFiles), 200);
        assert_eq!(counters.get(Counter::S3BacklogPeakBytes), 200 * 4096);
        let t = Instant::now();
        let left = spool.close(Duration::from_millis(300));
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "close took {:?}",
            t.elapsed()
        );
        assert_eq!(
            left,
            Left {
                files: 200,
                bytes: 200 * 4096
            }
        );
        assert_eq!(counters.get(Counter::S3Uploaded), 0);
        assert_eq!(counters.get(Counter::S3Dropped), 0);
        let files = std::fs::read_dir(d.path().join("backlog")).unwrap().count();
        assert_eq!(files, 200, "every cassette waits for the next run");
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(5), BACKOFF_MAX);
        assert_eq!(backoff(400), BACKOFF_MAX);
    }
}
