//! `timetracer watch`: one line per new cassette of a directory as it is written (the row of
//! `list`/`search`), with the filters of `search`, optionally following an S3 bucket.
//!
//! New files are noticed by inotify (the `notify` crate, recursive: the agent's date
//! directories appear while it runs), not by listing the directory again and again. A file
//! appears either whole (the agent writes a hidden temporary file and renames it into place,
//! `atomic_file.rs`: one "moved to" event) or by a copy that writes it in place (created, then
//! written, then closed): a file that cannot be read yet is tried again at its next event, and
//! reported only once its writer closed it. A new directory is listed once when it appears, for
//! the files written into it before its watch was in place.
//!
//! The filters are the index's: each new file is summarized into an index in memory and
//! selected with the same [`Query`] SQL as `search`, so `watch` and `search` agree by
//! construction.
//!
//! `--follow-s3` brings the bucket's new objects into the directory every `--interval` with the
//! incremental `s3 sync down` (it lists the prefix and downloads what is new or changed, each
//! file atomically), and the directory's watch prints them like any other new file.
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::list::{QueryArgs, json_lines, table_header, table_row};
use super::s3_cmd::{S3Location, settings, sync_down};
use super::{Ctx, Exit};
use crate::index::{Index, Query, is_candidate_name};

/// Print each new cassette of a directory as it is written, until Ctrl-C.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer watch                                  # ./cassettes (or TIMETRACER_DIR)
  timetracer watch --dir /srv/cassettes --errors    # only failed requests
  timetracer watch --endpoint '/users/*' --min-duration 250 --json
  timetracer watch --dir ./from-prod --follow-s3 --s3-bucket my-bucket --interval 10s

Files already there are not printed (`timetracer list` shows them). The filters are those of
`search`. With --follow-s3, the objects already in the bucket are brought first without being
printed; the new ones are printed as they arrive.")]
pub struct WatchArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub filter: QueryArgs,
    /// One JSON object per line (the fields of `search --json`).
    #[arg(short, long)]
    pub json: bool,
    /// Also bring the new objects of the S3 bucket (--s3-bucket, --s3-prefix, or the `s3`
    /// command's settings) into DIR and print them.
    #[arg(long)]
    pub follow_s3: bool,
    /// How often the bucket is listed with --follow-s3 (`5s`, `1m`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = interval_arg)]
    pub interval: Duration,
    #[command(flatten)]
    pub s3: WatchS3,
}

/// The bucket of `--follow-s3`. Named `--s3-*` as the agent's options are: `--endpoint`,
/// `--prefix`... are `search`'s filters here.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WatchS3 {
    /// Bucket [default: s3.bucket / TIMETRACER_S3_BUCKET].
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix [default: s3.prefix / TIMETRACER_S3_PREFIX, else cassettes].
    #[arg(long, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Region [default: s3.region / TIMETRACER_S3_REGION, AWS_REGION, us-east-1].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Endpoint URL of an S3-compatible server [default: s3.endpoint / TIMETRACER_S3_ENDPOINT].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

impl WatchS3 {
    fn location(&self) -> S3Location {
        S3Location {
            bucket: self.s3_bucket.clone(),
            prefix: self.s3_prefix.clone(),
            region: self.s3_region.clone(),
            endpoint: self.s3_endpoint.clone(),
        }
    }
}

fn interval_arg(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?}: {e} (use e.g. 5s, 500ms or 1m)"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

/// Set by SIGINT / SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// How long the loop waits for an event before it looks at the stop flag and the bucket.
const TICK: Duration = Duration::from_millis(100);
/// Files printed, remembered so that their later events (a copy's close after its creation)
/// do not print them again; the oldest are forgotten beyond this many.
const REMEMBERED: usize = 10_000;
/// A new directory is listed when it appears and once more this much later: `notify` adds
/// its watch after handing out the event, so a file written into it in between has no event.
const RESCAN_AFTER: Duration = Duration::from_millis(250);

/// What the loop keeps between events.
struct Tail<'a> {
    dir: PathBuf,
    query: Query,
    /// One file at a time is summarized here and selected with `query`.
    scratch: Index,
    json: bool,
    printed: HashSet<PathBuf>,
    order: VecDeque<PathBuf>,
    shown: usize,
    out: &'a mut dyn Write,
}

impl Tail<'_> {
    /// A candidate file appeared or changed. `closed`: its writer is done with it (moved into
    /// place or closed after writing), so an unreadable file is reported, not waited for.
    fn file(&mut self, ctx: &mut Ctx, path: &Path, closed: bool) -> anyhow::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !is_candidate_name(name) || self.printed.contains(path) {
            return Ok(());
        }
        let c = match crate::cassette::read(path) {
            Ok(c) => c,
            // Gone already (retention, a rename further on): nothing to show.
            Err(_) if !path.exists() => return Ok(()),
            Err(e) if closed => {
                self.remember(path);
                ctx.file_error(path, &crate::index::error_chain(&e));
                return Ok(());
            }
            // Still being written: its next event tries again.
            Err(_) => return Ok(()),
        };
        self.remember(path);
        self.scratch.clear()?;
        self.scratch.add(path, &c)?;
        for e in self.scratch.search(&self.query)? {
            self.shown += 1;
            if self.json {
                json_lines(std::slice::from_ref(&e), self.out)?;
            } else {
                table_row(ctx, self.shown, &e, &self.dir, self.out)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }

    fn remember(&mut self, path: &Path) {
        if self.printed.insert(path.to_path_buf()) {
            self.order.push_back(path.to_path_buf());
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.printed.remove(&old);
            }
        }
    }

    /// Every candidate under `sub` (a directory that just appeared, or all of DIR after the
    /// kernel's event queue overflowed), oldest name first.
    fn scan(&mut self, ctx: &mut Ctx, sub: &Path) -> anyhow::Result<()> {
        let Ok((files, _)) = crate::index::walk(sub) else {
            return Ok(());
        };
        let mut paths: Vec<PathBuf> = files.into_iter().map(|f| sub.join(f.rel)).collect();
        paths.sort();
        for p in paths {
            self.file(ctx, &p, true)?;
        }
        Ok(())
    }
}

/// `timetracer watch`.
pub fn run(ctx: &mut Ctx, a: &WatchArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    if a.filter.tag.is_some() {
        // A tag is given in `serve` after its cassette was written: a new cassette has none.
        anyhow::bail!(
            "--tag does not apply to `watch` (new cassettes have no tags yet): use `timetracer search --tag`"
        );
    }
    let query = a.filter.query()?;
    let s3 = if a.follow_s3 {
        let up = crate::s3::Uploader::new(settings(ctx, &a.s3.location())?)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Some(up)
    } else {
        None
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: start the agent with `--out {}` first, or pass --dir",
            dir.display(),
            dir.display()
        );
    }
    // Absolute: event paths are the watched path joined with the names the kernel reports.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    crate::cli::on_stop_signals(on_signal)?;
    // What the bucket already holds is brought now, before the watch starts: not printed.
    let mut next_sync = Instant::now();
    if let Some(up) = &s3 {
        eprintln!(
            "timetracer: bringing s3://{}/{} into {} before watching",
            up.settings().bucket,
            up.settings().prefix,
            dir.display()
        );
        if let Err(e) = sync_down(ctx, up, &dir, false, &mut std::io::sink()) {
            eprintln!("timetracer: s3: {e:#} (trying again in {:?})", a.interval);
        }
        next_sync = Instant::now() + a.interval;
    }
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    let mut rescans: VecDeque<(Instant, PathBuf)> = VecDeque::new();
    let mut tail = Tail {
        query,
        scratch: Index::open_at(&dir, Path::new(":memory:"))?,
        dir: dir.clone(),
        json: a.json,
        printed: HashSet::new(),
        order: VecDeque::new(),
        shown: 0,
        out,
    };
    eprintln!(
        "timetracer: watching {} for new cassettes (Ctrl-C to stop)",
        dir.display()
    );
    if !a.json {
        table_header(tail.out)?;
        tail.out.flush()?;
    }
    while !STOP.load(Ordering::SeqCst) {
        if let Some(up) = &s3
            && Instant::now() >= next_sync
        {
            // What it brought is printed now (its events would be too, unless a new date
            // directory's watch came late); a bucket that does not answer is said and tried
            // again, the watch goes on.
            match sync_down(ctx, up, &dir, false, &mut std::io::sink()) {
                Ok(files) => {
                    for f in files {
                        tail.file(ctx, &f, true)?;
                    }
                }
                Err(e) => eprintln!("timetracer: s3: {e:#} (trying again in {:?})", a.interval),
            }
            next_sync = Instant::now() + a.interval;
        }
        while rescans.front().is_some_and(|(at, _)| *at <= Instant::now()) {
            if let Some((_, d)) = rescans.pop_front() {
                tail.scan(ctx, &d)?;
            }
        }
        let event = match rx.recv_timeout(TICK) {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                eprintln!("timetracer: watching {}: {e}", dir.display());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if event.need_rescan() {
            tail.scan(ctx, &dir)?;
            continue;
        }
        for path in &event.paths {
            match event.kind {
                // A directory made or moved into place: files that landed before its watch
                // had no events of their own.
                EventKind::Create(CreateKind::Folder)
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                    if path.is_dir() =>
                {
                    tail.scan(ctx, path)?;
                    rescans.push_back((Instant::now() + RESCAN_AFTER, path.clone()));
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                | EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    tail.file(ctx, path, true)?;
                }
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => {
                    tail.file(ctx, path, false)?;
                }
                _ => {}
            }
        }
    }
    drop(watcher);
    eprintln!("timetracer: {} new cassettes shown", tail.shown);
    Ok(Exit::Ok)
}
