//! The agent's counters: one typed list ([`Counter`]), stored as atomics ([`Counters`]).
//!
//! Every counter is declared once, in the `counters!` invocation below, with the name it has
//! wherever it is shown and the [`Group`] that decides where that is (see
//! `record::report`, which renders the status line, the exit summary, the live view's header
//! and each cassette's `stats.drops` by iterating [`Counter::ALL`]). Kernel-side drops are
//! counted by the eBPF programs (`timetracer_common::Drop`) and shown next to these.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Where a counter is shown (besides the exit summary, which shows every non-zero counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Totals: the status line, the first line of the exit summary, the live view's rates.
    Total,
    /// Data lost by the agent: each cassette's `stats.drops` (always, zero or not), the live
    /// view's drops (when non-zero), the status line's drop sum.
    Drop,
    /// Updates the live view could not take: its header ("skipped updates").
    Viewer,
    /// S3 uploads and their backlog: the status line's `s3` part (when any is non-zero).
    Upload,
    /// Everything else: the exit summary's "agent counters" line (when non-zero).
    Detail,
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, $group:ident; )+) => {
        /// One counter of the agent. Increment with [`Counters::inc`] / [`Counters::add`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Counter {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl Counter {
            /// Every counter, in the order they are shown.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// How many counters there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The name shown in the status line, the summary, the live view and cassettes.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// Where it is shown.
            #[must_use]
            pub const fn group(self) -> Group {
                match self {
                    $(Self::$variant => Group::$group,)+
                }
            }
        }
    };
}

counters! {
    /// Inbound requests completed.
    Requests = "requests", Total;
    /// Cassettes written to disk.
    Cassettes = "cassettes", Total;
    /// Ring-buffer records read.
    Events = "events", Total;
    /// Payload bytes read (plaintext and ciphertext).
    Bytes = "bytes", Total;
    /// Ring records the agent could not decode.
    UndecodableRecords = "undecodable_records", Drop;
    /// Data records of a socket whose accept/connect record was lost.
    DataUnknownConn = "data_unknown_conn", Drop;
    /// TLS plaintext of an `SSL*` never tied to a socket, beyond what is held (bytes).
    TlsUnboundBytesDropped = "tls_unbound_bytes_dropped", Detail;
    /// Live-view updates not sent because the viewer was behind.
    LiveSkipped = "live_skipped", Viewer;
    /// Inbound connections accepted.
    Accepted = "accepted", Detail;
    /// Outbound connections established.
    Connected = "connected", Detail;
    /// Connections whose local address could not be read (closed before /proc was read, and
    /// an inbound one accepted on a wildcard-bound socket).
    LocalAddrUnknown = "local_addr_unknown", Detail;
    /// Outbound connections that failed.
    ConnectFailed = "connect_failed", Detail;
    /// Connections that switched to TLS plaintext.
    TlsConnections = "tls_connections", Detail;
    /// Ciphertext in flight when a connection became TLS, ignored (bytes).
    TlsCiphertextIgnored = "tls_ciphertext_ignored", Detail;
    /// Bytes sent with `sendfile` (not copied; the body is marked lost).
    SendfileBytes = "sendfile_bytes", Detail;
    /// Connections upgraded away from HTTP/1 (WebSocket, h2c).
    Upgraded = "upgraded", Detail;
    /// Bytes the HTTP parser skipped to resynchronise.
    SkippedBytes = "skipped_bytes", Detail;
    /// Bytes of connections that are neither HTTP nor a known database protocol.
    UnparsedBytes = "unparsed_bytes", Detail;
    /// Database and cache calls parsed.
    DbCalls = "db_calls", Detail;
    /// Bytes a database parser skipped.
    DbSkippedBytes = "db_skipped_bytes", Detail;
    /// Dependency calls of event-loop threads outside any request.
    BackgroundCalls = "background_calls", Detail;
    /// Calls decided after their request was written.
    LateCalls = "late_calls", Detail;
    /// Dependency calls a process made before its first inbound request (its startup
    /// cassette).
    StartupCalls = "startup_calls", Detail;
    /// Startup cassettes written (one per process whose startup made calls).
    StartupCassettes = "startup_cassettes", Detail;
    /// Ambiguous calls with no open request to list them in.
    AmbiguousUnpinnedCalls = "ambiguous_unpinned_calls", Detail;
    /// Requests not recorded because their path is excluded.
    Excluded = "excluded", Detail;
    /// Requests not recorded because of `sample_rate`.
    SampledOut = "sampled_out", Detail;
    /// Requests not recorded because of `errors_only`.
    NotError = "not_error", Detail;
    /// Cassettes that could not be written (lost), for any reason: the sum of the
    /// `write_errors_*` reasons below.
    WriteErrors = "write_errors", Detail;
    /// Cassettes lost because the file system (or quota) was full (`ENOSPC`, `EDQUOT`).
    WriteErrorsNoSpace = "write_errors_no_space", Detail;
    /// Cassettes lost for any other reason (permissions, a read-only file system, I/O errors,
    /// a removed directory that could not be recreated).
    WriteErrorsOther = "write_errors_other", Detail;
    /// Processes that started while traced (forks of a traced process, execs in a traced
    /// cgroup).
    ProcessesStarted = "processes_started", Detail;
    /// Exited processes whose state the agent freed (once nothing of theirs was pending).
    ProcessesForgotten = "processes_forgotten", Detail;
    /// Messages to stderr dropped because nobody read it (a full pipe): `crate::stderr`.
    StderrDropped = "stderr_dropped", Detail;
    /// Times the cassette directory was found removed or replaced during the recording (it is
    /// recreated; the cassettes written before went with it).
    OutDirRemoved = "out_dir_removed", Detail;
    /// Cassettes that could not be indexed (`timetracer index` rebuilds the index).
    IndexErrors = "index_errors", Detail;
    /// Cassettes deleted by retention (`--retain`: older than the duration).
    RetentionDeleted = "retention_deleted", Detail;
    /// Bytes of the cassettes deleted by retention.
    RetentionDeletedBytes = "retention_deleted_bytes", Detail;
    /// Old cassettes (or directories) retention could not delete or list.
    RetentionErrors = "retention_errors", Detail;
    /// Cassettes uploaded to S3.
    S3Uploaded = "s3_uploaded", Upload;
    /// S3 upload attempts that failed (the cassette waits in the backlog and is retried).
    S3Errors = "s3_errors", Upload;
    /// Cassettes in the S3 backlog: waiting or being uploaded (a gauge).
    S3BacklogFiles = "s3_backlog_files", Upload;
    /// Bytes in the S3 backlog (a gauge).
    S3BacklogBytes = "s3_backlog_bytes", Upload;
    /// The most cassettes the S3 backlog held at once in this run (an outage's size).
    S3BacklogPeakFiles = "s3_backlog_peak_files", Upload;
    /// The most bytes the S3 backlog held at once in this run.
    S3BacklogPeakBytes = "s3_backlog_peak_bytes", Upload;
    /// Cassettes whose upload was given up: over the backlog's size or age limit, or not
    /// queued (the cassette file stays in the cassette directory).
    S3Dropped = "s3_dropped", Upload;
    /// Cassettes found in the S3 backlog at start, left by a previous run.
    S3Recovered = "s3_recovered", Upload;
}

/// Cheaply clonable handle to the agent's counters (one atomic per [`Counter`]).
#[derive(Clone, Debug)]
pub struct Counters(Arc<[AtomicU64; Counter::COUNT]>);

impl Default for Counters {
    fn default() -> Self {
        Self(Arc::new(std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

impl Counters {
    /// Adds one.
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n`.
    pub fn add(&self, c: Counter, n: u64) {
        self.0[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n`, stopping at zero (for gauges such as `s3_backlog_bytes`).
    pub fn sub(&self, c: Counter, n: u64) {
        let _ = self.0[c as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    /// Raises to `v` if lower (for peaks such as `s3_backlog_peak_bytes`).
    pub fn max(&self, c: Counter, v: u64) {
        self.0[c as usize].fetch_max(v, Ordering::Relaxed);
    }

    /// The current value.
    #[must_use]
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize].load(Ordering::Relaxed)
    }

    /// Every value at once.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

/// The value of every counter at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot([u64; Counter::COUNT]);

impl Default for Snapshot {
    fn default() -> Self {
        Self([0; Counter::COUNT])
    }
}

impl Snapshot {
    /// The value of `c`.
    #[must_use]
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Sets `c` (for tests and for building reports by hand).
    pub fn set(&mut self, c: Counter, n: u64) {
        self.0[c as usize] = n;
    }

    /// `(counter, value)` for every counter of `group`, in list order.
    pub fn group(&self, group: Group) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .iter()
            .filter(move |c| c.group() == group)
            .map(|&c| (c, self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let c = Counters::default();
        c.inc(Counter::LateCalls);
        c.add(Counter::LateCalls, 2);
        c.add(Counter::Bytes, 5);
        c.sub(Counter::LateCalls, 1);
        c.add(Counter::S3BacklogBytes, 2);
        c.sub(Counter::S3BacklogBytes, 3);
        assert_eq!(c.get(Counter::S3BacklogBytes), 0, "gauges stop at zero");
        c.max(Counter::S3BacklogPeakBytes, 9);
        c.max(Counter::S3BacklogPeakBytes, 4);
        assert_eq!(c.get(Counter::S3BacklogPeakBytes), 9);
        c.add(Counter::LateCalls, 1);
        assert_eq!(c.get(Counter::LateCalls), 3);
        assert_eq!(c.snapshot().get(Counter::Bytes), 5);
    }

    #[test]
    fn names_are_unique_and_indexes_match() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    /// Each counter is incremented somewhere outside this file: a counter nothing increments
    /// would be shown as a permanent zero (as `non_http_bytes` was).
    #[test]
    fn every_counter_is_incremented_somewhere() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut text = String::new();
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("telemetry.rs") {
                    text.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let missing: Vec<&str> = Counter::ALL
            .iter()
            .filter(|c| {
                let v = format!("Counter::{c:?}");
                !flat.contains(&format!(".inc({v})"))
                    && !flat.contains(&format!(".add({v},"))
                    && !flat.contains(&format!(".max({v},"))
            })
            .map(|c| c.name())
            .collect();
        assert!(missing.is_empty(), "never incremented: {missing:?}");
    }
}
