//! Where finished requests go: one [`Sink`] trait, composed in a [`Chain`].
//!
//! The writer thread hands every finished request, as a [`Finished`], to each sink of the chain
//! in order. Filters decide its [`Fate`] (exclude, sample, errors-only), [`Files`] writes the
//! cassette and records where, [`Index`] and [`S3`] act on what was written, [`Live`] shows
//! everything that was not discarded. The cassette is built once, by the first sink that needs
//! it, so a request no sink wants costs nothing (ripgrep's push-model `Sink`, vector's
//! transforms and sinks).
//!
//! ```
//! use timetracer::record::{Filters, sink::Chain};
//! let filters = Filters { sample_rate: 0.5, errors_only: true, exclude_paths: vec!["/health".into()] };
//! let chain = Chain::new(Chain::filters(&filters));
//! assert_eq!(chain.names(), ["exclude", "sample", "errors-only"]);
//! ```
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::cassette::{self, BuildOptions, Cassette, Compression};
use crate::correlate::model::RecordedRequest;
use crate::live::{LiveUpdate, Phase};
use crate::protocols::http::types::StartLine;
use crate::telemetry::{Counter, Counters};

use super::plan::Filters;

/// What happens to a request, decided by the filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Stored (written, indexed, uploaded) and shown.
    Store,
    /// Not stored (sampled out, not an error), still shown in the live view, which can save it.
    Show,
    /// Neither stored nor shown (excluded path); later sinks do not see it.
    Discard,
}

/// One finished request on its way through the chain.
#[derive(Debug)]
pub struct Finished {
    pub request: RecordedRequest,
    pub fate: Fate,
    /// Where the cassette was written, once it was.
    pub written: Option<PathBuf>,
    /// Node mode: the pod and container that served it (`session.k8s`, the cassette's
    /// `NAMESPACE/POD/` directory); set before the cassette is built.
    pub pod: Option<crate::k8s::metrics::Attached>,
    cassette: Option<Cassette>,
}

impl Finished {
    #[must_use]
    pub fn new(request: RecordedRequest) -> Self {
        Self {
            request,
            fate: Fate::Store,
            written: None,
            pod: None,
            cassette: None,
        }
    }

    fn build(&self, build: &BuildOptions) -> Cassette {
        let mut c = cassette::build(&self.request, build);
        if let Some(a) = &self.pod {
            c.session.k8s = Some(a.pod.cassette(&a.container));
        }
        c
    }

    /// The cassette, built on first use (redacted, bodies capped).
    pub fn cassette(&mut self, build: &BuildOptions) -> &Cassette {
        let c = match self.cassette.take() {
            Some(c) => c,
            None => self.build(build),
        };
        self.cassette.insert(c)
    }

    /// The cassette, moved out (for the last sink that needs it).
    pub fn take_cassette(&mut self, build: &BuildOptions) -> Cassette {
        match self.cassette.take() {
            Some(c) => c,
            None => self.build(build),
        }
    }

    /// The request's path, without the query.
    #[must_use]
    pub fn path(&self) -> &str {
        match &self.request.inbound.request.start {
            StartLine::Request { target, .. } => target.split('?').next().unwrap_or(""),
            StartLine::Response { .. } => "",
        }
    }

    /// Failed: status >= 400, no response, or a traceback.
    #[must_use]
    pub fn is_error(&self) -> bool {
        let status = self
            .request
            .inbound
            .response
            .as_ref()
            .and_then(|m| match m.start {
                StartLine::Response { status, .. } => Some(status),
                StartLine::Request { .. } => None,
            });
        self.request.traceback.is_some() || status.is_none_or(|s| s >= 400)
    }
}

/// What every sink may use.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub counters: Counters,
    pub build: BuildOptions,
    /// A viewer owns the terminal: report problems to the log, not to stderr.
    pub quiet: bool,
}

impl Ctx {
    /// A message for the user, as written (paths keep their case): stderr, or the log when a
    /// viewer owns the terminal.
    fn note(&self, msg: &str) {
        if self.quiet {
            tracing::warn!("{msg}");
        } else {
            crate::say!("\ntimetracer-agent: {msg}");
        }
    }

    fn problem(&self, msg: &str, error: &dyn std::fmt::Display) {
        if self.quiet {
            tracing::warn!(error = %error, "{msg}");
        } else {
            crate::say!("\ntimetracer-agent: {}: {error}", msg.to_lowercase());
        }
    }
}

/// Receives finished requests on the writer thread.
pub trait Sink: Send {
    /// A short name (`--help`-style), for logs and tests.
    fn name(&self) -> &'static str;
    /// Once, on the writer thread, before the first request.
    fn start(&mut self, _ctx: &Ctx) {}
    /// One finished request. Sinks after this one see what it changed.
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx);
    /// A snapshot of a request whose response ended and that still accepts late calls (sent
    /// only while a sink has a [`Self::live_feed`]); its final version comes to
    /// [`Self::accept`] with the same id. Only viewers show it; a filter that would discard
    /// the final version discards it too, uncounted.
    fn provisional(&mut self, _item: &mut Finished, _ctx: &Ctx) {}
    /// A process's startup cassette (its calls before its first request). Not a request:
    /// filters do not apply; [`Files`] writes it under `.startup/`.
    fn startup(&mut self, _cassette: &Cassette, _ctx: &Ctx) {}
    /// The queue is empty for now: a batching sink flushes.
    fn idle(&mut self, _ctx: &Ctx) {}
    /// The recording ended; flush everything.
    fn finish(&mut self, ctx: &Ctx) {
        self.idle(ctx);
    }
    /// A channel for the session's periodic counter snapshots (the live view has one).
    fn live_feed(&self) -> Option<SyncSender<LiveUpdate>> {
        None
    }
}

/// Sinks in order; itself a [`Sink`].
pub struct Chain(Vec<Box<dyn Sink>>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Chain").field(&self.names()).finish()
    }
}

impl Chain {
    #[must_use]
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self(sinks)
    }

    /// The filter sinks `filters` asks for, in their order: exclude, sample, errors-only.
    #[must_use]
    pub fn filters(filters: &Filters) -> Vec<Box<dyn Sink>> {
        let mut v: Vec<Box<dyn Sink>> = Vec::new();
        if !filters.exclude_paths.is_empty() {
            v.push(Box::new(Exclude(filters.exclude_paths.clone())));
        }
        if filters.sample_rate < 1.0 {
            v.push(Box::new(Sample::new(filters.sample_rate)));
        }
        if filters.errors_only {
            v.push(Box::new(ErrorsOnly));
        }
        v
    }

    /// The names of the sinks, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.name()).collect()
    }
}

impl Sink for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }
    fn start(&mut self, ctx: &Ctx) {
        self.0.iter_mut().for_each(|s| s.start(ctx));
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        for s in &mut self.0 {
            if item.fate == Fate::Discard {
                return;
            }
            s.accept(item, ctx);
        }
    }
    fn provisional(&mut self, item: &mut Finished, ctx: &Ctx) {
        for s in &mut self.0 {
            if item.fate == Fate::Discard {
                return;
            }
            s.provisional(item, ctx);
        }
    }
    fn startup(&mut self, cassette: &Cassette, ctx: &Ctx) {
        self.0.iter_mut().for_each(|s| s.startup(cassette, ctx));
    }
    fn idle(&mut self, ctx: &Ctx) {
        self.0.iter_mut().for_each(|s| s.idle(ctx));
    }
    fn finish(&mut self, ctx: &Ctx) {
        self.0.iter_mut().for_each(|s| s.finish(ctx));
    }
    fn live_feed(&self) -> Option<SyncSender<LiveUpdate>> {
        self.0.iter().find_map(|s| s.live_feed())
    }
}

/// Discards requests to excluded paths (counted as `excluded`).
#[derive(Debug)]
pub struct Exclude(pub Vec<String>);

/// `true` when `path` is excluded by one of the patterns: exact, prefix followed by `/`, or
/// `/x/*` (and `/x/` as a prefix).
#[must_use]
pub fn excluded(path: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.strip_suffix("/*").unwrap_or(p);
        path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
            || (p.ends_with('/') && path.starts_with(p))
    })
}

impl Sink for Exclude {
    fn name(&self) -> &'static str {
        "exclude"
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        if excluded(item.path(), &self.0) {
            ctx.counters.inc(Counter::Excluded);
            item.fate = Fate::Discard;
        }
    }
    fn provisional(&mut self, item: &mut Finished, _ctx: &Ctx) {
        if excluded(item.path(), &self.0) {
            item.fate = Fate::Discard;
        }
    }
}

/// Keeps a fraction of the requests it sees stored (the rest counted as `sampled_out`).
pub struct Sample {
    rate: f64,
    draw: Box<dyn FnMut() -> f64 + Send>,
}

impl std::fmt::Debug for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample").field("rate", &self.rate).finish()
    }
}

impl Sample {
    /// Sampling at `rate` with the OS's randomness.
    #[must_use]
    pub fn new(rate: f64) -> Self {
        Self::with_draw(rate, random_unit)
    }

    /// Sampling at `rate` with `draw` giving numbers in [0, 1) (for tests).
    #[must_use]
    pub fn with_draw(rate: f64, draw: impl FnMut() -> f64 + Send + 'static) -> Self {
        Self {
            rate,
            draw: Box::new(draw),
        }
    }
}

/// A uniform number in [0, 1): 53 of the random bits of a v4 UUID (the OS's randomness;
/// sampling needs no more).
pub(crate) fn random_unit() -> f64 {
    // The low 64 bits of a v4 UUID hold the 2 variant bits at the top, then 62 random bits.
    let bits = uuid::Uuid::new_v4().as_u128() as u64 & ((1 << 53) - 1);
    bits as f64 / (1u64 << 53) as f64
}

impl Sink for Sample {
    fn name(&self) -> &'static str {
        "sample"
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        if item.fate == Fate::Store && (self.draw)() >= self.rate {
            ctx.counters.inc(Counter::SampledOut);
            item.fate = Fate::Show;
        }
    }
}

/// Stores only failed requests (the rest counted as `not_error`).
#[derive(Debug)]
pub struct ErrorsOnly;

impl Sink for ErrorsOnly {
    fn name(&self) -> &'static str {
        "errors-only"
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        if item.fate == Fate::Store && !item.is_error() {
            ctx.counters.inc(Counter::NotError);
            item.fate = Fate::Show;
        }
    }
}

/// Writes cassette files (atomically, 0600) under the directory (`cassettes`, `write_errors`
/// and its reasons `write_errors_no_space` / `write_errors_other`, `out_dir_removed`).
///
/// A failing disk is reported once per outage, not once per cassette: the first loss says what
/// failed and why, the first cassette written afterwards says how many were lost meanwhile. A
/// full disk loses thousands of cassettes a second; a message each would flood the terminal and,
/// on a pipe nobody reads, fill it and block the writer. The directory is checked once a second
/// (and when the writer is idle): removed, it is recreated (0700) and that is reported.
#[derive(Debug)]
pub struct Files {
    pub dir: PathBuf,
    pub compression: Compression,
    /// Encrypt every cassette for these recipients (`--encrypt-to`).
    pub encrypt_to: Option<std::sync::Arc<cassette::crypt::Recipients>>,
    /// The directory's (device, inode) when last checked; `None` while it is missing.
    dir_id: Option<(u64, u64)>,
    /// When the directory was last checked.
    checked: Option<Instant>,
    /// Cassettes lost since the last one written, while writing fails.
    outage: Option<Outage>,
}

/// How often [`Files`] checks that its directory is still there.
const DIR_CHECK: Duration = Duration::from_secs(1);

/// The cassettes lost during one outage of [`Files`], by reason.
#[derive(Debug, Default)]
struct Outage {
    no_space: u64,
    other: u64,
}

/// Why a cassette could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// `ENOSPC` / `EDQUOT`: the file system (or the user's quota) is full.
    NoSpace,
    /// Anything else (permissions, a read-only file system, I/O errors).
    Other,
}

impl Loss {
    /// The reason of a writer error: any `io::Error` in its chain (or wrapped in one, as
    /// encoders do: `io::Error::source` skips the wrapped error) saying the disk is full.
    fn of(e: &cassette::Error) -> Self {
        fn full(io: &std::io::Error) -> bool {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<std::io::Error>())
                    .is_some_and(full)
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if c.downcast_ref::<std::io::Error>().is_some_and(full) {
                return Self::NoSpace;
            }
            cause = c.source();
        }
        Self::Other
    }
}

impl Files {
    #[must_use]
    pub fn new(
        dir: PathBuf,
        compression: Compression,
        encrypt_to: Option<std::sync::Arc<cassette::crypt::Recipients>>,
    ) -> Self {
        Self {
            dir,
            compression,
            encrypt_to,
            dir_id: None,
            checked: None,
            outage: None,
        }
    }

    fn stat_dir(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map(|m| (m.dev(), m.ino()))
    }

    /// Notices the directory removed or replaced (at most once per [`DIR_CHECK`] unless
    /// `force`), recreates it when missing, and says so once.
    fn check_dir(&mut self, ctx: &Ctx, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .checked
                .is_some_and(|t| now.duration_since(t) < DIR_CHECK)
        {
            return;
        }
        self.checked = Some(now);
        let seen = self.stat_dir();
        if seen.is_some() && seen == self.dir_id {
            return;
        }
        let dir = self.dir.display();
        match seen {
            // The writer recreated it (a cassette was written since), or someone else did.
            Some(id) => {
                if self.dir_id.is_some() {
                    ctx.counters.inc(Counter::OutDirRemoved);
                }
                ctx.note(&format!(
                    "the cassette directory {dir} was removed or replaced during the recording; \
                     cassettes go to the new directory (those written before went with the old one)"
                ));
                self.dir_id = Some(id);
            }
            None => {
                if self.dir_id.is_some() {
                    ctx.counters.inc(Counter::OutDirRemoved);
                }
                let made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir);
                match made {
                    Ok(()) => {
                        ctx.note(&format!(
                            "the cassette directory {dir} was removed during the recording; \
                             recreated it (0700): cassettes written before went with it"
                        ));
                        self.dir_id = self.stat_dir();
                    }
                    Err(e) if self.dir_id.is_some() => {
                        ctx.note(&format!(
                            "the cassette directory {dir} was removed during the recording and \
                             cannot be recreated ({e}); cassettes are lost (write_errors) until \
                             it exists again"
                        ));
                        self.dir_id = None;
                    }
                    // Already reported; a cassette's own error says the rest.
                    Err(_) => {}
                }
            }
        }
    }

    /// A cassette was written: the end of an outage is reported with what it lost.
    fn resumed(&mut self, ctx: &Ctx) {
        if let Some(o) = self.outage.take() {
            ctx.note(&format!(
                "writing cassettes to {} again; {} lost while it failed (no space left: {}, \
                 other errors: {})",
                self.dir.display(),
                o.no_space + o.other,
                o.no_space,
                o.other
            ));
        }
    }

    /// A cassette was lost: counted by reason; the first loss of each reason in an outage is
    /// reported.
    fn lost(&mut self, e: &cassette::Error, ctx: &Ctx) {
        let loss = Loss::of(e);
        ctx.counters.inc(Counter::WriteErrors);
        let outage = self.outage.get_or_insert_with(Outage::default);
        let n = match loss {
            Loss::NoSpace => {
                ctx.counters.inc(Counter::WriteErrorsNoSpace);
                &mut outage.no_space
            }
            Loss::Other => {
                ctx.counters.inc(Counter::WriteErrorsOther);
                &mut outage.other
            }
        };
        *n += 1;
        if *n == 1 {
            let why = crate::index::error_chain(e);
            let what = match loss {
                Loss::NoSpace => "until space is freed",
                Loss::Other => "until writing works again",
            };
            ctx.note(&format!(
                "cannot write cassettes to {}: {why}; recording goes on, and every cassette that \
                 cannot be written is counted as lost (write_errors) {what}",
                self.dir.display()
            ));
        }
        // A removed directory shows as a failed write first.
        self.check_dir(ctx, true);
    }
}

impl Sink for Files {
    fn name(&self) -> &'static str {
        "files"
    }
    fn start(&mut self, _ctx: &Ctx) {
        self.dir_id = self.stat_dir();
        self.checked = Some(Instant::now());
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        if item.fate != Fate::Store {
            return;
        }
        self.check_dir(ctx, false);
        match cassette::write_sealed(
            &self.dir,
            item.cassette(&ctx.build),
            self.compression,
            self.encrypt_to.as_deref(),
        ) {
            Ok(p) => {
                ctx.counters.inc(Counter::Cassettes);
                self.resumed(ctx);
                item.written = Some(p);
            }
            Err(e) => self.lost(&e, ctx),
        }
    }
    fn startup(&mut self, cassette: &Cassette, ctx: &Ctx) {
        self.check_dir(ctx, false);
        match cassette::write(&self.dir, cassette, self.compression) {
            Ok(_) => {
                ctx.counters.inc(Counter::StartupCassettes);
                self.resumed(ctx);
            }
            Err(e) => self.lost(&e, ctx),
        }
    }
    fn idle(&mut self, ctx: &Ctx) {
        self.check_dir(ctx, false);
    }
}

/// Adds written cassettes to the directory's index (`index/`), one transaction per burst:
/// whenever the queue is empty, or 256 are waiting (`index_errors`).
pub struct Index {
    dir: PathBuf,
    index: Option<crate::index::Index>,
    pending: Vec<(PathBuf, crate::index::Summary)>,
    /// The directory's (device, inode) when the index was opened: a removed and recreated
    /// directory gets a new index (the old one was removed with it).
    dir_id: Option<(u64, u64)>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// The index of `dir`, opened when the writer starts.
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            index: None,
            pending: Vec::new(),
            dir_id: None,
        }
    }

    fn dir_id(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
}

impl Sink for Index {
    fn name(&self) -> &'static str {
        "index"
    }
    fn start(&mut self, _ctx: &Ctx) {
        self.dir_id = self.dir_id();
        match crate::index::Index::open(&self.dir) {
            Ok(i) => self.index = Some(i),
            Err(e) => {
                tracing::warn!(error = %e, "Cassette index unavailable; `timetracer index` rebuilds it");
            }
        }
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        if self.index.is_none() {
            return;
        }
        if let Some(p) = item.written.clone() {
            if self.pending.len() >= 256 {
                self.idle(ctx);
            }
            let summary = crate::index::summarize(item.cassette(&ctx.build));
            self.pending.push((p, summary));
        }
    }
    fn idle(&mut self, ctx: &Ctx) {
        if self.pending.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.pending);
        let n = items.len() as u64;
        // The directory was removed and recreated ([`Files`] says so): the open index is an
        // unlinked file; start a new one in the new directory.
        if self.index.is_some() {
            let now = self.dir_id();
            if now.is_some() && now != self.dir_id {
                self.dir_id = now;
                self.index = crate::index::Index::open(&self.dir)
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "Cannot reopen the cassette index; `timetracer index` rebuilds it");
                    })
                    .ok();
            }
        }
        if let Some(idx) = &mut self.index
            && let Err(e) = idx.add_all(items)
        {
            tracing::warn!(error = %e, "Cannot index cassettes; `timetracer index` rebuilds it");
            ctx.counters.add(Counter::IndexErrors, n);
        }
    }
}

/// Queues each written cassette for upload under its path relative to the cassette directory.
/// The writer thread only links the file into the S3 backlog; the spool's workers upload it
/// (`s3_uploaded`, `s3_errors`, `s3_backlog_*`, `s3_dropped`; the cassette stays on disk either
/// way). At the end, waits for the backlog to drain while S3 answers ([`crate::s3::spool`]).
#[derive(Debug)]
pub struct S3 {
    pub dir: PathBuf,
    pub spool: crate::s3::spool::Spool,
}

impl Sink for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }
    fn start(&mut self, ctx: &Ctx) {
        if let Err(e) = self.spool.start(&ctx.counters) {
            ctx.problem("Cannot start the S3 upload workers", &e);
        }
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        let Some(path) = &item.written else { return };
        let key = path
            .strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        if let Err(e) = self.spool.queue(&key, path) {
            ctx.counters.inc(Counter::S3Dropped);
            ctx.problem("Cannot queue a cassette for S3", &e);
        }
    }
    fn finish(&mut self, ctx: &Ctx) {
        let left = self.spool.close(crate::s3::spool::CLOSE_IDLE);
        if left.files > 0 {
            let msg = format!(
                "{} cassettes ({}) wait in the S3 backlog for {}: the next run with the same \
                 backlog directory uploads them",
                left.files,
                crate::analysis::format::fmt_bytes(left.bytes),
                self.spool.destination(),
            );
            ctx.problem("S3 is not answering", &msg);
        }
    }
}

/// The live view (`top`, `attach --tui`): every request not discarded, with where it was
/// written. Never waits for the viewer: what does not fit is counted as `live_skipped`; once
/// the viewer is gone nothing more is built for it.
#[derive(Debug)]
pub struct Live {
    tx: SyncSender<LiveUpdate>,
    closed: bool,
}

impl Live {
    #[must_use]
    pub fn new(tx: SyncSender<LiveUpdate>) -> Self {
        Self { tx, closed: false }
    }
}

impl Sink for Live {
    fn name(&self) -> &'static str {
        "live"
    }
    fn accept(&mut self, item: &mut Finished, ctx: &Ctx) {
        self.send(item, Phase::Final, ctx);
    }
    fn provisional(&mut self, item: &mut Finished, ctx: &Ctx) {
        self.send(item, Phase::Open, ctx);
    }
    fn live_feed(&self) -> Option<SyncSender<LiveUpdate>> {
        (!self.closed).then(|| self.tx.clone())
    }
}

impl Live {
    fn send(&mut self, item: &mut Finished, phase: Phase, ctx: &Ctx) {
        if self.closed {
            return;
        }
        let update = LiveUpdate::Request {
            cassette: Box::new(item.take_cassette(&ctx.build)),
            path: item.written.clone(),
            phase,
        };
        match self.tx.try_send(update) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => ctx.counters.inc(Counter::LiveSkipped),
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Arc, Mutex, mpsc};

    use super::*;
    use crate::correlate::model::{ConnFacts, ProcessInfo, Timings};
    use crate::protocols::http::types::{Exchange, Framing, HttpMessage, Mark};

    fn msg(start: StartLine) -> HttpMessage {
        HttpMessage {
            start,
            version: 1,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            body_size: 0,
            truncated: false,
            lost_bytes: 0,
            framing: Framing::None,
            trailers: Vec::new(),
            first: Mark::default(),
            head_done: Mark::default(),
            last: Mark::default(),
            wire_size: 0,
            incomplete: false,
        }
    }

    /// A finished request for `target` answered with `status` (none: no response).
    pub(crate) fn finished(target: &str, status: Option<u16>) -> Finished {
        Finished::new(RecordedRequest {
            id: uuid::Uuid::new_v4(),
            process: ProcessInfo::default(),
            inbound: Exchange {
                request: msg(StartLine::Request {
                    method: "GET".into(),
                    target: target.into(),
                }),
                response: status.map(|status| {
                    msg(StartLine::Response {
                        status,
                        reason: String::new(),
                    })
                }),
                interim: Vec::new(),
                index: 0,
            },
            conn: ConnFacts::default(),
            timings: Timings::default(),
            deps: Vec::new(),
            traceback: None,
            mono_to_unix_ns: 0,
            drops: Vec::new(),
            db_sessions: Vec::new(),
        })
    }

    fn ctx() -> Ctx {
        Ctx {
            counters: Counters::default(),
            build: BuildOptions::default(),
            quiet: true,
        }
    }

    /// Records the fate of each request it sees, and whether its cassette was built.
    struct Probe(Arc<Mutex<Vec<(String, Fate)>>>);

    impl Sink for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn accept(&mut self, item: &mut Finished, _ctx: &Ctx) {
            let path = item.path().to_owned();
            self.0.lock().unwrap().push((path, item.fate));
        }
    }

    #[test]
    fn exclusion_rules() {
        let p = vec!["/health".to_owned(), "/admin/*".to_owned()];
        assert!(excluded("/health", &p));
        assert!(excluded("/health/live", &p));
        assert!(!excluded("/healthz", &p));
        assert!(excluded("/admin/users", &p));
        assert!(!excluded("/users", &p));
    }

    /// Exclude discards (later sinks never see it), sampling and errors-only keep the request
    /// for the viewer, each decision counted once, by the first filter that made it.
    #[test]
    fn filters_compose_in_order() {
        let filters = Filters {
            sample_rate: 0.5,
            errors_only: true,
            exclude_paths: vec!["/health".into()],
        };
        let mut sinks = Chain::filters(&filters);
        // Replace the random sampler with one that alternates drop, keep, drop, keep...
        let mut n = 0_u32;
        sinks[1] = Box::new(Sample::with_draw(0.5, move || {
            n += 1;
            if n % 2 == 1 { 0.9 } else { 0.1 }
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        sinks.push(Box::new(Probe(Arc::clone(&seen))));
        let mut chain = Chain::new(sinks);
        assert_eq!(chain.names(), ["exclude", "sample", "errors-only", "probe"]);
        let ctx = ctx();
        for (target, status) in [
            ("/health?x=1", Some(200)), // excluded
            ("/a", Some(500)),          // sampled out
            ("/b", Some(500)),          // kept: an error
            ("/c", Some(200)),          // sampled out
            ("/d", Some(200)),          // not an error
            ("/e", None),               // sampled out
            ("/f", None),               // no response: an error, kept
        ] {
            chain.accept(&mut finished(target, status), &ctx);
        }
        let seen = seen.lock().unwrap().clone();
        let expect = [
            ("/a", Fate::Show),
            ("/b", Fate::Store),
            ("/c", Fate::Show),
            ("/d", Fate::Show),
            ("/e", Fate::Show),
            ("/f", Fate::Store),
        ];
        assert_eq!(
            seen,
            expect
                .iter()
                .map(|(p, f)| ((*p).to_owned(), *f))
                .collect::<Vec<_>>()
        );
        let c = &ctx.counters;
        assert_eq!(c.get(Counter::Excluded), 1);
        assert_eq!(c.get(Counter::SampledOut), 3);
        assert_eq!(c.get(Counter::NotError), 1);
    }

    #[test]
    fn no_filters_when_nothing_is_asked() {
        assert!(Chain::filters(&Filters::default()).is_empty());
    }

    /// Files writes only what is stored, Index and the live view follow what Files did; a
    /// request the viewer alone wants is built but not written.
    #[test]
    fn files_index_and_live() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::sync_channel(1);
        let mut sinks = Chain::filters(&Filters {
            errors_only: true,
            ..Filters::default()
        });
        sinks.push(Box::new(Files::new(
            d.path().to_path_buf(),
            Compression::None,
            None,
        )));
        sinks.push(Box::new(Index::new(d.path())));
        sinks.push(Box::new(Live::new(tx)));
        let mut chain = Chain::new(sinks);
        assert!(chain.live_feed().is_some());
        let ctx = ctx();
        chain.start(&ctx);
        chain.accept(&mut finished("/ok", Some(200)), &ctx);
        let Ok(LiveUpdate::Request { path: None, .. }) = rx.try_recv() else {
            panic!("the viewer gets the unsaved request");
        };
        let mut failed = finished("/boom", Some(500));
        chain.accept(&mut failed, &ctx);
        let written = failed.written.clone().expect("written");
        assert!(written.starts_with(d.path()));
        // The viewer is full: counted, not waited for.
        chain.accept(&mut finished("/boom2", Some(503)), &ctx);
        chain.finish(&ctx);
        let c = &ctx.counters;
        assert_eq!(c.get(Counter::Cassettes), 2);
        assert_eq!(c.get(Counter::NotError), 1);
        assert_eq!(c.get(Counter::LiveSkipped), 1);
        let idx = crate::index::Index::open(d.path()).unwrap();
        drop(idx);
        assert!(d.path().join(".timetracer-index.sqlite3").exists());
        // Once the viewer is gone, nothing more is sent or counted.
        drop(rx);
        chain.accept(&mut finished("/late", Some(500)), &ctx);
        chain.accept(&mut finished("/later", Some(500)), &ctx);
        assert_eq!(c.get(Counter::LiveSkipped), 1);
        assert!(chain.live_feed().is_none());
    }

    /// A provisional snapshot reaches the viewer only (nothing written, indexed or counted),
    /// marked open, with the id its final version has; an excluded path is not shown.
    #[test]
    fn provisional_reaches_only_the_viewer() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::sync_channel(8);
        let mut sinks = Chain::filters(&Filters {
            errors_only: true,
            exclude_paths: vec!["/health".into()],
            ..Filters::default()
        });
        sinks.push(Box::new(Files::new(
            d.path().to_path_buf(),
            Compression::None,
            None,
        )));
        sinks.push(Box::new(Live::new(tx)));
        let mut chain = Chain::new(sinks);
        let ctx = ctx();
        chain.start(&ctx);
        let mut open = finished("/boom", Some(500));
        let id = open.request.id;
        chain.provisional(&mut open, &ctx);
        chain.provisional(&mut finished("/health", Some(200)), &ctx);
        let Ok(LiveUpdate::Request {
            cassette,
            path: None,
            phase: Phase::Open,
        }) = rx.try_recv()
        else {
            panic!("the viewer gets the open request");
        };
        assert_eq!(cassette.session.id, id.to_string());
        assert!(rx.try_recv().is_err(), "the excluded path is not shown");
        assert!(open.written.is_none());
        let mut last = finished("/boom", Some(500));
        last.request.id = id;
        chain.accept(&mut last, &ctx);
        let Ok(LiveUpdate::Request {
            cassette,
            path: Some(_),
            phase: Phase::Final,
        }) = rx.try_recv()
        else {
            panic!("the final version, written");
        };
        assert_eq!(cassette.session.id, id.to_string());
        chain.finish(&ctx);
        let c = &ctx.counters;
        assert_eq!(c.get(Counter::Cassettes), 1);
        assert_eq!(c.get(Counter::Excluded), 0);
        assert_eq!(c.get(Counter::NotError), 0);
    }

    /// A full disk is `no_space` wherever the `io::Error` sits in the chain; anything else is
    /// `other`.
    #[test]
    fn loss_reasons() {
        let write = |errno| cassette::Error::Write {
            path: PathBuf::from("/c/x.json"),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(Loss::of(&write(libc::ENOSPC)), Loss::NoSpace);
        assert_eq!(Loss::of(&write(libc::EDQUOT)), Loss::NoSpace);
        assert_eq!(Loss::of(&write(libc::EROFS)), Loss::Other);
        assert_eq!(Loss::of(&write(libc::EACCES)), Loss::Other);
        let nested = cassette::Error::Write {
            path: PathBuf::from("/c/x.json"),
            source: std::io::Error::other(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        };
        assert_eq!(Loss::of(&nested), Loss::NoSpace);
    }

    /// Losses are counted by reason, reported once per outage, and the outage ends with the
    /// next cassette written; a removed directory is recreated and counted.
    #[test]
    fn outage_and_removed_directory() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let ctx = ctx();
        let mut files = Files::new(out.clone(), Compression::None, None);
        files.start(&ctx);
        let e = cassette::Error::Write {
            path: out.join("x.json"),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        for _ in 0..3 {
            files.lost(&e, &ctx);
        }
        let c = ctx.counters.snapshot();
        assert_eq!(c.get(Counter::WriteErrors), 3);
        assert_eq!(c.get(Counter::WriteErrorsNoSpace), 3);
        assert_eq!(c.get(Counter::WriteErrorsOther), 0);
        assert_eq!(files.outage.as_ref().map(|o| o.no_space), Some(3));
        let mut f = finished("/a", Some(200));
        files.accept(&mut f, &ctx);
        assert!(f.written.is_some());
        assert!(files.outage.is_none(), "a written cassette ends the outage");
        assert_eq!(ctx.counters.snapshot().get(Counter::Cassettes), 1);

        std::fs::remove_dir_all(&out).unwrap();
        files.checked = None;
        files.idle(&ctx);
        assert!(out.is_dir(), "recreated");
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(ctx.counters.snapshot().get(Counter::OutDirRemoved), 1);
        let mut f = finished("/b", Some(200));
        files.accept(&mut f, &ctx);
        assert!(f.written.as_ref().is_some_and(|p| p.starts_with(&out)));
        // Checked again: nothing changed, nothing counted.
        files.checked = None;
        files.idle(&ctx);
        assert_eq!(ctx.counters.snapshot().get(Counter::OutDirRemoved), 1);
        assert_eq!(ctx.counters.snapshot().get(Counter::WriteErrors), 3);
    }
}
