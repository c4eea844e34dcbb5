//! `list`, `show`, `search`, `index`: answered from the embedded index.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Ctx, Exit, parse_time};
use crate::index::{Entry, Index, Query};

/// List the newest cassettes of a directory.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer list                      # the 10 newest under ./cassettes (or TIMETRACER_DIR)
  timetracer list --dir /srv/cassettes -n 50
  timetracer list -n 0 --json          # all of them, as JSON lines
  timetracer list --namespace shop --pod 'api-*'   # recorded in these pods (node mode)")]
pub struct ListArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// How many to show, newest first (0 = all).
    #[arg(short = 'n', long, default_value_t = 10)]
    pub last: usize,
    #[command(flatten)]
    pub k8s: super::K8sFilter,
    /// One JSON object per line instead of a table.
    #[arg(short, long)]
    pub json: bool,
}

/// Print one cassette readably.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer show cassettes/2026-11-22/GET__users_42__e92ca5c8.json
  timetracer show cassettes/2026-11-22/GET__users_42__e92ca5c8.json.zst --events")]
pub struct ShowArgs {
    /// Cassette file (.json, .json.gz or .json.zst, each optionally encrypted .age; ours or the
    /// Python tool's).
    pub file: PathBuf,
    /// Also list every dependency call.
    #[arg(short, long)]
    pub events: bool,
}

/// Find cassettes by request, response and dependency calls.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer search --method POST --endpoint /login
  timetracer search --endpoint '/users/*' --status 0        # requests that got no response
  timetracer search --errors --since 2h --service billing
  timetracer search --dep-type db.query --min-duration 500
  timetracer search --dep-host api.stripe.com --json
  timetracer search --namespace shop --pod 'api-*' --errors   # cassettes of node mode
  timetracer search --tag flaky                               # tagged in `timetracer serve`

The index (DIR/.timetracer-index.sqlite3) is brought up to date first: only new or changed
files are read. `--endpoint` is a case-insensitive substring, or a glob when it contains * ? [.")]
pub struct SearchArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub filter: QueryArgs,
    /// At most this many results, newest first (0 = all).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(short, long)]
    pub json: bool,
    /// Answer from the index as it is, without looking for new files.
    #[arg(long)]
    pub no_refresh: bool,
}

/// The conditions of `search` (and `watch`): one [`Query`] of the index, whose SQL is the
/// only implementation of these filters.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// HTTP method (case-insensitive).
    #[arg(short, long)]
    pub method: Option<String>,
    /// Path substring, or glob over the whole path (`/users/*`).
    #[arg(short, long, value_name = "TEXT|GLOB")]
    pub endpoint: Option<String>,
    /// Exact response status; 0 = no response (the app raised or the connection dropped).
    #[arg(long)]
    pub status: Option<i64>,
    /// Only failed requests: status 0 or >= 400, or a recorded error.
    #[arg(long)]
    pub errors: bool,
    /// session.service.
    #[arg(short, long)]
    pub service: Option<String>,
    /// session.env.
    #[arg(long)]
    pub env: Option<String>,
    /// Recorded at or after: RFC 3339, a date, or an age (2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Recorded before: RFC 3339, a date, or an age.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Has a dependency call of this type (http.client, db.query, redis, ...).
    #[arg(long, value_name = "TYPE")]
    pub dep_type: Option<String>,
    /// Has a dependency call to this host (with or without :port).
    #[arg(long, value_name = "HOST")]
    pub dep_host: Option<String>,
    /// Response took at least this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub min_duration: Option<f64>,
    /// Tagged with this (case-insensitive; tags are set in `timetracer serve` and kept in
    /// DIR/.timetracer-notes.json).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    #[command(flatten)]
    pub k8s: super::K8sFilter,
}

impl QueryArgs {
    /// The index query (no limit); `--since`/`--until` are resolved now.
    pub fn query(&self) -> anyhow::Result<Query> {
        Ok(Query {
            method: self.method.clone(),
            endpoint: self.endpoint.clone(),
            status: self.status,
            errors: self.errors,
            service: self.service.clone(),
            env: self.env.clone(),
            since: self
                .since
                .as_deref()
                .map(parse_time)
                .transpose()
                .context("--since")?,
            until: self
                .until
                .as_deref()
                .map(parse_time)
                .transpose()
                .context("--until")?,
            dep_type: self.dep_type.clone(),
            dep_host: self.dep_host.clone(),
            min_duration_ms: self.min_duration,
            namespace: self.k8s.namespace.clone(),
            pod: self.k8s.pod.clone(),
            limit: None,
        })
    }
}

/// Build or update the embedded index.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer index                  # update: read new and changed files only
  timetracer index --rebuild        # forget everything and read every file again

The index is DIR/.timetracer-index.sqlite3. list and search update it themselves; the agent
adds each cassette as it writes it.")]
pub struct IndexArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Drop the index and read every file again.
    #[arg(long)]
    pub rebuild: bool,
}

/// The index of `dir`, refreshed when asked; its walk errors and unreadable files reported.
pub(super) fn open_fresh(ctx: &mut Ctx, dir: &Path, refresh: bool) -> anyhow::Result<Index> {
    let mut idx = Index::open(dir)?;
    if refresh {
        let rep = idx.refresh()?;
        for (p, e) in rep.walk_errors {
            ctx.file_error(&p, &e);
        }
    }
    for fe in idx.errors()? {
        ctx.file_error(&fe.file, &fe.error);
    }
    Ok(idx)
}

fn status_cell(ctx: &Ctx, status: i64, failed: bool) -> String {
    if failed {
        ctx.paint("31", &format!("[ERR]{status}"))
    } else {
        ctx.paint("32", &format!("[OK]{status}"))
    }
}

fn table(ctx: &Ctx, entries: &[Entry], dir: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    table_header(out)?;
    for (i, e) in entries.iter().enumerate() {
        table_row(ctx, i + 1, e, dir, out)?;
    }
    Ok(())
}

/// The column titles of `list`, `search` and `watch`.
pub(super) fn table_header(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>3}  {:<32}  {:<7} {:<30} {:>9} {:>10} {:>6}  File",
        "#", "Recorded", "Method", "Endpoint", "Status", "Duration", "Deps"
    )
}

/// Row `n` of the table: one cassette, its file relative to `dir`.
pub(super) fn table_row(
    ctx: &Ctx,
    n: usize,
    e: &Entry,
    dir: &Path,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let s = &e.summary;
    let st = status_cell(ctx, s.status, s.has_error);
    // Pad by the visible width: colour escapes have no width.
    let vis = if s.has_error { 5 } else { 4 } + s.status.to_string().len();
    let pad = " ".repeat(9usize.saturating_sub(vis));
    let rel = e.file.strip_prefix(dir).unwrap_or(&e.file);
    writeln!(
        out,
        "{:>3}  {:<32}  {:<7} {:<30} {pad}{st} {:>8.1}ms {:>6}  {}",
        n,
        s.recorded_at,
        s.method,
        s.path,
        s.duration_ms,
        s.event_count,
        rel.display()
    )
}

pub(super) fn json_lines(entries: &[Entry], out: &mut dyn Write) -> anyhow::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *out, e)?;
        writeln!(out)?;
    }
    Ok(())
}

/// `timetracer list`.
pub fn list(ctx: &mut Ctx, a: &ListArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let idx = open_fresh(ctx, &dir, true)?;
    let q = Query {
        limit: (a.last > 0).then_some(a.last),
        namespace: a.k8s.namespace.clone(),
        pod: a.k8s.pod.clone(),
        ..Query::default()
    };
    let total = if a.k8s.is_set() {
        idx.count_matching(&q)?
    } else {
        idx.count()?
    };
    let entries = idx.search(&q)?;
    if a.json {
        json_lines(&entries, out)?;
    } else if total == 0 {
        writeln!(
            out,
            "No cassettes found in {}{}",
            dir.display(),
            a.k8s.describe()
        )?;
    } else {
        table(ctx, &entries, &dir, out)?;
        writeln!(
            out,
            "\nShowing {} of {total} cassettes in {}{}",
            entries.len(),
            dir.display(),
            a.k8s.describe()
        )?;
    }
    Ok(Exit::Ok)
}

/// `timetracer show`.
pub fn show(_ctx: &mut Ctx, a: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    crate::cli::show::run(&a.file, a.events, out)?;
    Ok(Exit::Ok)
}

/// `timetracer search`.
pub fn search(ctx: &mut Ctx, a: &SearchArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let tag = a
        .filter
        .tag
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let q = Query {
        // Tags are not in the index: filter first, cut after.
        limit: (a.limit > 0 && tag.is_none()).then_some(a.limit),
        ..a.filter.query()?
    };
    let idx = open_fresh(ctx, &dir, !a.no_refresh)?;
    let mut hits = idx.search(&q)?;
    if let Some(tag) = tag {
        let store = crate::index::notes::load(&dir)?;
        hits.retain(|h| {
            crate::web::paths::rel_of(&dir, &h.file)
                .and_then(|rel| store.cassettes.get(&rel))
                .is_some_and(|n| n.has_tag(tag))
        });
        if a.limit > 0 {
            hits.truncate(a.limit);
        }
    }
    if a.json {
        json_lines(&hits, out)?;
    } else if hits.is_empty() {
        writeln!(out, "No matching cassettes in {}", dir.display())?;
    } else {
        table(ctx, &hits, &dir, out)?;
        writeln!(out, "\n{} matching", hits.len())?;
    }
    Ok(Exit::Ok)
}

/// `timetracer index`.
pub fn index(ctx: &mut Ctx, a: &IndexArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let mut idx = Index::open(&dir)?;
    if a.rebuild {
        idx.clear()?;
    }
    let started = std::time::Instant::now();
    let rep = idx.refresh()?;
    for (p, e) in &rep.walk_errors {
        ctx.file_error(p, e);
    }
    let errors = idx.errors()?;
    for fe in &errors {
        ctx.file_error(&fe.file, &fe.error);
    }
    writeln!(
        out,
        "Indexed {} cassettes in {} ({} added, {} updated, {} removed, {} unchanged, {} unreadable) in {:.2}s",
        idx.count()?,
        dir.display(),
        rep.added,
        rep.updated,
        rep.removed,
        rep.unchanged,
        errors.len(),
        started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "Index: {}", idx.db_path().display())?;
    Ok(Exit::Ok)
}
