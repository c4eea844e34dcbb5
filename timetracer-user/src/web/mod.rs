//! The HTML views of `timetracer`: `timeline` (one cassette), `dashboard` (a directory) and
//! `serve` (the same, live, with replay and compare). See `docs/ui.md`.
//!
//! - [`model`] turns cassettes into plain view data (no HTML);
//! - [`render`] prints it through auto-escaping templates, with the page's inline CSS and
//!   script allowed by a hash-based Content-Security-Policy;
//! - [`server`] is `serve` (axum, loopback by default, per-run token, reads only files under
//!   the served directory: [`paths`]);
//! - [`replay_client`] asks the privileged replay service for a verdict.
//!
//! ```no_run
//! # fn f() -> anyhow::Result<()> {
//! use timetracer::web;
//! let path = std::path::Path::new("cassettes/2026-11-22/GET__users_42__e92ca5c8.json");
//! let html = web::timeline_html(path, &web::render::PageOpts::default())?;
//! std::fs::write("timeline.html", html)?;
//! # Ok(()) }
//! ```
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cassette::reader::{MAX_CASSETTE_BYTES, parse, read_decompressed};
use crate::cassette::{self, Cassette};
use crate::index::{self, FileError, Index, Query, notes};

pub mod audit;
pub mod json_view;
pub mod model;
pub mod paths;
pub mod render;
pub mod replay_client;
pub mod server;

use model::{CassetteView, DepType, Row};
use render::{DashboardPage, Detail, PageOpts, Renderer};

/// A cassette and its JSON as written in the file.
#[derive(Debug)]
pub struct Loaded {
    pub cassette: Cassette,
    pub raw: Value,
}

/// Reads a cassette (plain, gzip or zstd; schema 2.x or the Python tool's 1.0).
pub fn load(path: &Path) -> Result<Loaded, cassette::Error> {
    let bytes = read_decompressed(path, MAX_CASSETTE_BYTES)?;
    let cassette = parse(path, &bytes)?;
    let raw = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Loaded { cassette, raw })
}

/// The view of the cassette at `path`; `shown` is how the page names the file, `rel` its
/// name under a served directory (empty when not served).
#[must_use]
pub fn view(uid: &str, shown: &str, rel: &str, path: &Path, l: &Loaded) -> CassetteView {
    let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut v = model::cassette_view(uid, shown, rel, &abs, &l.cassette, Some(&l.raw));
    // The static pages' curl download (served pages ask `/api/export`).
    v.curl = crate::analysis::export::to_curl(&[(abs.clone(), l.cassette.clone())], false, None);
    v
}

/// Puts the tags and note of `v`'s cassette from `store` into it.
pub fn annotate(v: &mut CassetteView, store: &notes::Store) {
    if let Some(a) = store.cassettes.get(&v.rel) {
        v.tags.clone_from(&a.tags);
        v.user_note.clone_from(&a.note);
    }
}

/// `2026-11-22 23:28:08 UTC`, now.
#[must_use]
pub fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    now.format(&f).unwrap_or_default()
}

/// The self-contained timeline page of one cassette file.
pub fn timeline_html(path: &Path, opts: &PageOpts) -> anyhow::Result<String> {
    let l = load(path)?;
    let v = view("c", &path.display().to_string(), "", path, &l);
    Ok(Renderer::new().timeline(&v, opts)?)
}

/// The dashboard rows of a cassette directory, kept up to date from the index; rows of
/// unchanged files (same mtime and size) are not read again.
pub struct Collector {
    dir: PathBuf,
    index: Index,
    cache: HashMap<String, ((i64, i64), Row)>,
    /// The namespace and pod filters every collection applies.
    scope: Query,
    /// The tags-and-notes store's stamp when last read (edits by others are noticed).
    notes_stamp: Option<(i64, i64)>,
    /// Why the store could not be read, when it could not (shown as a file error).
    notes_error: Option<String>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("dir", &self.dir).finish()
    }
}

/// The newest rows of a directory.
#[derive(Debug, Default)]
pub struct Collected {
    /// Newest first, with the file of each.
    pub rows: Vec<(Row, PathBuf)>,
    /// Readable cassettes in the directory (more than `rows` when the limit cut).
    pub total: usize,
    pub errors: Vec<FileError>,
}

impl Collector {
    /// Opens (creating if needed) the index of `dir`, which must be canonical.
    pub fn open(dir: &Path) -> Result<Self, index::Error> {
        Ok(Self {
            dir: dir.to_path_buf(),
            index: Index::open(dir)?,
            cache: HashMap::new(),
            scope: Query::default(),
            notes_stamp: None,
            notes_error: None,
        })
    }

    /// Only the cassettes of this Kubernetes namespace and pod (exact, or a glob) from now on
    /// (`--namespace` / `--pod`); totals count only those.
    #[must_use]
    pub fn scoped(mut self, namespace: Option<String>, pod: Option<String>) -> Self {
        self.scope = Query {
            namespace,
            pod,
            ..Query::default()
        };
        self
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the index up to date; `true` when some file was added, changed or removed.
    pub fn refresh(&mut self) -> Result<bool, index::Error> {
        let r = self.index.refresh()?;
        let notes = notes::stamp(&self.dir);
        let notes_changed = notes != self.notes_stamp;
        self.notes_stamp = notes;
        Ok(r.added + r.updated + r.removed > 0 || notes_changed)
    }

    /// The directory's tags and notes (empty, with the reason kept for the page, when the
    /// store cannot be read: the dashboard still shows the cassettes).
    pub fn notes(&mut self) -> notes::Store {
        match notes::load(&self.dir) {
            Ok(s) => {
                self.notes_error = None;
                s
            }
            Err(e) => {
                self.notes_error = Some(index::error_chain(&e));
                notes::Store::default()
            }
        }
    }

    /// The newest `limit` cassettes as rows.
    pub fn collect(&mut self, limit: usize) -> Result<Collected, index::Error> {
        let entries = self.index.search(&Query {
            limit: Some(limit),
            ..self.scope.clone()
        })?;
        let store = self.notes();
        let mut rows = Vec::with_capacity(entries.len());
        let mut seen = HashMap::new();
        for e in entries {
            let Some(rel) = paths::rel_of(&self.dir, &e.file) else {
                continue;
            };
            let Ok(stamp) = index::files::stamp(&e.file) else {
                continue; // deleted since the refresh
            };
            let row = match self.cache.get(&rel) {
                Some((s, row)) if *s == stamp => row.clone(),
                _ => match cassette::read(&e.file) {
                    Ok(c) => Row::new(0, &rel, &c),
                    Err(_) => continue, // replaced by something unreadable: next refresh says
                },
            };
            seen.insert(rel.clone(), (stamp, row.clone()));
            let mut row = row;
            row.n = rows.len();
            if let Some(a) = store.cassettes.get(&rel) {
                row.tags.clone_from(&a.tags);
                row.note.clone_from(&a.note);
            }
            rows.push((row, e.file));
        }
        self.cache = seen;
        let mut errors = self.index.errors()?;
        if let Some(e) = &self.notes_error {
            errors.push(FileError {
                file: notes::store_path(&self.dir),
                error: e.clone(),
            });
        }
        Ok(Collected {
            rows,
            total: self.index.count_matching(&self.scope)?,
            errors,
        })
    }
}

/// The dashboard's content for `rows` (details embedded only for static pages).
#[must_use]
pub fn dashboard_page(
    dir_shown: &str,
    c: Collected,
    details: Vec<Detail>,
    version: u64,
) -> DashboardPage {
    let rows: Vec<Row> = c.rows.into_iter().map(|(r, _)| r).collect();
    let methods: BTreeSet<String> = rows.iter().map(|r| r.method.to_ascii_uppercase()).collect();
    let dep_types: BTreeSet<DepType> = rows
        .iter()
        .flat_map(|r| r.dep_types.iter())
        .map(|d| DepType {
            key: d.key,
            label: d.label.clone(),
        })
        .collect();
    // One filter choice per key (HTTP and HTTPS are both `http`).
    let mut seen = BTreeSet::new();
    let dep_types: Vec<DepType> = dep_types
        .into_iter()
        .filter(|d| seen.insert(d.key))
        .map(|d| match d.key {
            "http" => DepType {
                key: "http",
                label: "HTTP(S)".into(),
            },
            "sql" => DepType {
                key: "sql",
                label: "SQL".into(),
            },
            _ => d,
        })
        .collect();
    DashboardPage {
        dir: dir_shown.to_owned(),
        total: c.total.max(rows.len()),
        truncated: c.total > rows.len(),
        totals: model::totals(&rows),
        trends: model::trends(&rows, 12),
        graphs: model::dependency_graphs(&rows, 24),
        methods: methods.into_iter().collect(),
        dep_types,
        errors: c.errors,
        details,
        version,
        rows,
    }
}
