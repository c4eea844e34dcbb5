//! Embedded cassette index (SQLite, file `DIR/.timetracer-index.sqlite3`).
//!
//! One row per candidate file (path relative to the cassette directory, mtime, size, and either
//! the cassette's summary or why it could not be read) plus one row per dependency call. It is
//! refreshed incrementally: only new or changed files (by mtime + size) are parsed, rows of
//! removed files are deleted. The agent adds each cassette as it writes it ([`Index::add`]).
//!
//! ```no_run
//! # fn f(c: &timetracer::cassette::Cassette, path: &std::path::Path) -> Result<(), timetracer::index::Error> {
//! let mut idx = timetracer::index::Index::open(std::path::Path::new("cassettes"))?;
//! idx.add(path, c)?; // agent side, right after writing the cassette
//! let report = idx.refresh()?; // CLI side, before answering
//! let hits = idx.search(&timetracer::index::Query { status: Some(0), ..Default::default() })?;
//! # Ok(()) }
//! ```
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::cassette::{self, Cassette};

pub mod files;
pub mod notes;
pub mod summary;

pub use files::{FileStamp, SUFFIXES, is_candidate_name, walk};
pub use summary::{DepSummary, Summary, summarize};

/// Index file name inside the cassette directory (hidden: never listed as a cassette).
pub const INDEX_FILE: &str = ".timetracer-index.sqlite3";
/// Bumped when the table layout or what a column holds changes; an index of another version
/// is rebuilt (its tables dropped and made anew). 2: `deps.host` drops an explicit default port
/// (`http://h:80/` is `h`). 3: `files.k8s_namespace`, `files.k8s_pod` (`session.k8s`).
/// 4: what `stats` reads instead of the cassettes: `files.endpoint`, `deps.dependency`,
/// `deps.fingerprint`, `deps.start_ms`, `deps.failed`, `deps.session_level`.
const LAYOUT_VERSION: &str = "4";

/// Index errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cassette directory {} does not exist (create it, or pass --dir / set TIMETRACER_DIR)", .0.display())]
    NoDir(PathBuf),
    #[error("cannot read cassette directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index {}: {source} (delete the file or run `timetracer index --rebuild`)", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not inside the indexed directory {}", path.display(), dir.display())]
    Outside { path: PathBuf, dir: PathBuf },
    #[error("cannot stat {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`Index::refresh`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Subdirectories or files that could not be listed or stat'ed.
    pub walk_errors: Vec<(PathBuf, String)>,
}

/// One indexed cassette.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Absolute (or as given) path of the file.
    pub file: PathBuf,
    #[serde(flatten)]
    pub summary: Summary,
    pub size_bytes: i64,
}

/// A file the index could not read as a cassette.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileError {
    pub file: PathBuf,
    pub error: String,
}

/// Search filters; every `Some` must match.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Exact method, case-insensitive.
    pub method: Option<String>,
    /// Case-insensitive substring of the path, or a glob (`*`, `?`, `[..]`) matched against the
    /// whole path when it contains one of those.
    pub endpoint: Option<String>,
    /// Exact response status (0 = no response / exception).
    pub status: Option<i64>,
    /// Only failed requests: status 0 or >= 400, or an `error` object.
    pub errors: bool,
    pub service: Option<String>,
    pub env: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<f64>,
    /// Unix seconds, exclusive.
    pub until: Option<f64>,
    /// At least one dependency call of this type (`http.client`, `db.query`, `redis`, ...).
    pub dep_type: Option<String>,
    /// At least one dependency call to this host (with or without `:port`).
    pub dep_host: Option<String>,
    pub min_duration_ms: Option<f64>,
    /// `session.k8s.namespace`, exact.
    pub namespace: Option<String>,
    /// `session.k8s.pod`: exact, or a glob (`api-*`) when it contains `*`, `?` or `[`.
    pub pod: Option<String>,
    /// Newest first; `None` = all.
    pub limit: Option<usize>,
}

/// The embedded index of one cassette directory.
pub struct Index {
    dir: PathBuf,
    db_path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("db", &self.db_path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
  rel TEXT PRIMARY KEY,
  mtime_ns INTEGER NOT NULL,
  size INTEGER NOT NULL,
  error TEXT,
  not_cassette INTEGER NOT NULL DEFAULT 0,
  schema_version TEXT, id TEXT, recorded_at TEXT, recorded_unix REAL,
  service TEXT, env TEXT, method TEXT, path TEXT, status INTEGER, duration_ms REAL,
  event_count INTEGER, has_error INTEGER, legacy INTEGER,
  k8s_namespace TEXT, k8s_pod TEXT, endpoint TEXT
);
CREATE INDEX IF NOT EXISTS files_time ON files(recorded_unix);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
CREATE INDEX IF NOT EXISTS files_k8s ON files(k8s_namespace, k8s_pod);
CREATE TABLE IF NOT EXISTS deps(
  rel TEXT NOT NULL, eid INTEGER, kind TEXT, lib TEXT, method TEXT, host TEXT, url TEXT,
  status INTEGER, duration_ms REAL,
  dependency TEXT, fingerprint TEXT, start_ms REAL, failed INTEGER, session_level INTEGER
);
CREATE INDEX IF NOT EXISTS deps_rel ON deps(rel);
CREATE INDEX IF NOT EXISTS deps_host ON deps(host);
";

/// Where the index of `dir` goes when `dir` is not writable:
/// `$XDG_CACHE_HOME/timetracer/index/<sha256 of the directory's absolute path>.sqlite3` (else
/// `~/.cache/…`). `None` without a cache or home directory.
#[must_use]
pub fn cache_path(dir: &Path) -> Option<PathBuf> {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt as _;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let digest = sha2::Sha256::digest(abs.as_os_str().as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Some(
        base.join("timetracer/index")
            .join(format!("{name}.sqlite3")),
    )
}

/// Outcome of reading one file for the index.
enum Parsed {
    Ok(Box<Summary>),
    NotCassette(String),
    Bad(String),
}

fn parse_file(path: &Path) -> Parsed {
    match cassette::read(path) {
        Ok(c) => Parsed::Ok(Box::new(summarize(&c))),
        Err(e @ cassette::Error::MissingSchema { .. }) => Parsed::NotCassette(e.to_string()),
        Err(e) => Parsed::Bad(format!(
            "{} (skipped: repair or delete the file; `timetracer validate FILE` shows details)",
            error_chain(&e)
        )),
    }
}

/// `error: cause: cause` of an error.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl Index {
    /// Open (or create) the index of `dir`: `DIR/.timetracer-index.sqlite3`, or, when the
    /// directory is not writable by this user (a read-only copy, another user's recording) or
    /// its index cannot be opened, an index of that directory in the user's cache directory
    /// ([`cache_path`]). Reading cassettes never needs write access to them.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        if !dir.is_dir() {
            return Err(Error::NoDir(dir.to_path_buf()));
        }
        let db_path = dir.join(INDEX_FILE);
        if !crate::privilege::writable_dir(dir) {
            return Self::open_cached(dir, None);
        }
        match Self::open_at(dir, &db_path) {
            Ok(idx) => Ok(idx),
            Err(e) => Self::open_cached(dir, Some(e)),
        }
    }

    /// The index of `dir` kept in the user's cache directory; `first`: why the directory's own
    /// index could not be used (returned when the cache cannot be used either).
    fn open_cached(dir: &Path, first: Option<Error>) -> Result<Self, Error> {
        let cached = || -> Result<Self, Error> {
            let db_path = cache_path(dir).ok_or_else(|| Error::ReadDir {
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    "the directory is not writable and there is no cache directory for its index (set XDG_CACHE_HOME or HOME)",
                ),
            })?;
            if let Some(parent) = db_path.parent() {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|source| Error::ReadDir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
            }
            Self::open_at(dir, &db_path)
        };
        cached().map_err(|e| first.unwrap_or(e))
    }

    /// Open an index stored at `db_path` for the cassettes under `dir` (`:memory:` works).
    pub fn open_at(dir: &Path, db_path: &Path) -> Result<Self, Error> {
        let sq = |source| Error::Sqlite {
            path: db_path.to_path_buf(),
            source,
        };
        // The index holds every cassette's method, path and dependency URLs: private like the
        // cassettes (0600). SQLite gives its -wal and -shm files the database file's mode.
        if db_path != Path::new(":memory:") {
            use std::os::unix::fs::OpenOptionsExt as _;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(db_path);
        }
        let conn = Connection::open(db_path).map_err(sq)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sq)?;
        // WAL lets the agent write while the CLI reads; not available for :memory:.
        let _: Option<String> = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .optional()
            .map_err(sq)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(sq)?;
        conn.execute_batch(SCHEMA).map_err(sq)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='layout'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sq)?;
        if version.as_deref() != Some(LAYOUT_VERSION) {
            // Another layout: its tables may lack columns, so they are made anew (the files
            // are read again by the next refresh).
            conn.execute_batch("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS deps;")
                .map_err(sq)?;
            conn.execute_batch(SCHEMA).map_err(sq)?;
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('layout', ?1)",
                [LAYOUT_VERSION],
            )
            .map_err(sq)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            db_path: db_path.to_path_buf(),
            conn,
        })
    }

    fn sq(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Sqlite {
            path: self.db_path.clone(),
            source,
        }
    }

    /// The index file.
    #[must_use]
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The indexed directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rel_of(&self, path: &Path) -> Result<String, Error> {
        let rel = path.strip_prefix(&self.dir).map_err(|_| Error::Outside {
            path: path.to_path_buf(),
            dir: self.dir.clone(),
        })?;
        Ok(rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"))
    }

    /// Record a cassette just written at `path` (inside the indexed directory). The agent
    /// calls this after each write; cost: one stat and one small transaction.
    pub fn add(&mut self, path: &Path, c: &Cassette) -> Result<(), Error> {
        self.add_all([(path, summarize(c))])
    }

    /// [`add`](Self::add) for many cassettes in one transaction (the agent's writer indexes
    /// what it wrote since it last waited: one commit per batch instead of one per file).
    /// Every file is added or none is.
    pub fn add_all<P: AsRef<Path>>(
        &mut self,
        items: impl IntoIterator<Item = (P, Summary)>,
    ) -> Result<(), Error> {
        let mut rows = Vec::new();
        for (path, summary) in items {
            let path = path.as_ref();
            let rel = self.rel_of(path)?;
            let (mtime_ns, size) = files::stamp(path).map_err(|source| Error::Stat {
                path: path.to_path_buf(),
                source,
            })?;
            let stamp = FileStamp {
                rel,
                mtime_ns,
                size,
            };
            rows.push((stamp, Parsed::Ok(Box::new(summary))));
        }
        let sq = |source| Error::Sqlite {
            path: self.db_path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        for (stamp, parsed) in &rows {
            store(&tx, stamp, parsed).map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    /// Forget a file (e.g. after deleting it).
    pub fn remove(&mut self, path: &Path) -> Result<(), Error> {
        let rel = self.rel_of(path)?;
        let sq = self.sq();
        self.conn
            .execute("DELETE FROM files WHERE rel=?1", [&rel])
            .map_err(&sq)?;
        self.conn
            .execute("DELETE FROM deps WHERE rel=?1", [&rel])
            .map_err(&sq)?;
        Ok(())
    }

    /// [`remove`](Self::remove) for many files in one transaction (retention's sweep).
    pub fn remove_all(&mut self, paths: &[PathBuf]) -> Result<(), Error> {
        let rels = paths
            .iter()
            .map(|p| self.rel_of(p))
            .collect::<Result<Vec<_>, _>>()?;
        let sq = |source| Error::Sqlite {
            path: self.db_path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        for rel in &rels {
            tx.execute("DELETE FROM files WHERE rel=?1", [rel])
                .map_err(sq)?;
            tx.execute("DELETE FROM deps WHERE rel=?1", [rel])
                .map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    /// Drop every row, so that the next [`refresh`](Self::refresh) re-reads every file.
    pub fn clear(&mut self) -> Result<(), Error> {
        self.conn
            .execute_batch("DELETE FROM files; DELETE FROM deps;")
            .map_err(self.sq())
    }

    /// Bring the index up to date with the directory: parse new and changed files (mtime or
    /// size differ), delete rows of removed files.
    pub fn refresh(&mut self) -> Result<RefreshReport, Error> {
        let (on_disk, walk_errors) = walk(&self.dir).map_err(|source| Error::ReadDir {
            path: self.dir.clone(),
            source,
        })?;
        let mut known: HashMap<String, (i64, i64)> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT rel, mtime_ns, size FROM files")
                .map_err(self.sq())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))
                .map_err(self.sq())?;
            for row in rows {
                let (rel, st) = row.map_err(self.sq())?;
                known.insert(rel, st);
            }
        }
        let mut report = RefreshReport {
            walk_errors: walk_errors
                .into_iter()
                .map(|(p, e)| (p, e.to_string()))
                .collect(),
            ..RefreshReport::default()
        };
        let mut todo: Vec<(FileStamp, bool)> = Vec::new();
        for f in on_disk {
            match known.remove(&f.rel) {
                Some(st) if st == (f.mtime_ns, f.size) => report.unchanged += 1,
                Some(_) => todo.push((f, true)),
                None => todo.push((f, false)),
            }
        }
        let removed: Vec<String> = known.into_keys().collect();
        let parsed = parse_parallel(&self.dir, &todo);

        let tx = self.conn.transaction().map_err(|source| Error::Sqlite {
            path: self.db_path.clone(),
            source,
        })?;
        let res = (|| -> rusqlite::Result<()> {
            for rel in &removed {
                tx.execute("DELETE FROM files WHERE rel=?1", [rel])?;
                tx.execute("DELETE FROM deps WHERE rel=?1", [rel])?;
            }
            for ((stamp, _), p) in todo.iter().zip(&parsed) {
                store(&tx, stamp, p)?;
            }
            Ok(())
        })();
        res.and_then(|()| tx.commit())
            .map_err(|source| Error::Sqlite {
                path: self.db_path.clone(),
                source,
            })?;
        report.removed = removed.len();
        report.updated = todo.iter().filter(|(_, upd)| *upd).count();
        report.added = todo.len() - report.updated;
        Ok(report)
    }

    /// Every readable cassette as `stats` needs it, from the rows alone (no file is read):
    /// sorted by path, calls in `eid` order.
    pub fn stats_requests(&self) -> Result<Vec<crate::analysis::stats::Request>, Error> {
        use crate::analysis::stats::{Call, Request};
        let mut by_rel: std::collections::BTreeMap<String, Request> =
            std::collections::BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rel, endpoint, duration_ms, has_error FROM files \
                 WHERE error IS NULL AND not_cassette=0",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                let rel: String = r.get(0)?;
                Ok((
                    rel.clone(),
                    Request {
                        file: self.dir.join(&rel),
                        endpoint: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        duration_ms: r.get::<_, Option<f64>>(2)?.unwrap_or_default(),
                        failed: r.get::<_, Option<bool>>(3)?.unwrap_or_default(),
                        calls: Vec::new(),
                    },
                ))
            })
            .map_err(self.sq())?;
        for row in rows {
            let (rel, req) = row.map_err(self.sq())?;
            by_rel.insert(rel, req);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rel, dependency, fingerprint, start_ms, duration_ms, failed, session_level \
                 FROM deps ORDER BY rel, eid",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Call {
                        dependency: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        fingerprint: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        start_ms: r.get::<_, Option<f64>>(3)?.unwrap_or_default(),
                        duration_ms: r.get::<_, Option<f64>>(4)?.unwrap_or_default(),
                        failed: r.get::<_, Option<bool>>(5)?.unwrap_or_default(),
                        session_level: r.get::<_, Option<bool>>(6)?.unwrap_or_default(),
                    },
                ))
            })
            .map_err(self.sq())?;
        for row in rows {
            let (rel, call) = row.map_err(self.sq())?;
            if let Some(req) = by_rel.get_mut(&rel) {
                req.calls.push(call);
            }
        }
        Ok(by_rel.into_values().collect())
    }

    /// Files that look like cassettes but could not be read, with the reason.
    pub fn errors(&self) -> Result<Vec<FileError>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT rel, error FROM files WHERE error IS NOT NULL ORDER BY rel")
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.sq())?;
        let mut out = Vec::new();
        for row in rows {
            let (rel, error) = row.map_err(self.sq())?;
            out.push(FileError {
                file: self.dir.join(rel),
                error,
            });
        }
        Ok(out)
    }

    /// Number of readable cassettes.
    pub fn count(&self) -> Result<usize, Error> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM files WHERE error IS NULL AND not_cassette=0",
                [],
                |r| r.get(0),
            )
            .map_err(self.sq())?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// How many cassettes match `q` (its `limit` aside).
    pub fn count_matching(&self, q: &Query) -> Result<usize, Error> {
        let mut sql =
            String::from("SELECT count(*) FROM files f WHERE error IS NULL AND not_cassette=0");
        let args = filter(&mut sql, q);
        let n: i64 = self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))
            .map_err(self.sq())?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Cassettes matching `q`, newest first (by `recorded_at`, then path).
    pub fn search(&self, q: &Query) -> Result<Vec<Entry>, Error> {
        use rusqlite::types::Value as V;
        let mut sql = String::from(
            "SELECT rel, size, schema_version, id, recorded_at, recorded_unix, service, env, \
             method, path, status, duration_ms, event_count, has_error, legacy, k8s_namespace, \
             k8s_pod, endpoint FROM files f WHERE error IS NULL AND not_cassette=0",
        );
        let mut args = filter(&mut sql, q);
        sql.push_str(" ORDER BY recorded_unix DESC, rel DESC");
        if let Some(l) = q.limit {
            args.push(V::Integer(i64::try_from(l).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        let mut stmt = self.conn.prepare(&sql).map_err(self.sq())?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                let rel: String = r.get(0)?;
                Ok(Entry {
                    file: self.dir.join(&rel),
                    size_bytes: r.get(1)?,
                    summary: Summary {
                        schema_version: r.get(2)?,
                        id: r.get(3)?,
                        recorded_at: r.get(4)?,
                        recorded_unix: r.get(5)?,
                        service: r.get(6)?,
                        env: r.get(7)?,
                        method: r.get(8)?,
                        path: r.get(9)?,
                        status: r.get(10)?,
                        duration_ms: r.get(11)?,
                        event_count: r.get(12)?,
                        has_error: r.get(13)?,
                        legacy: r.get(14)?,
                        namespace: r.get(15)?,
                        pod: r.get(16)?,
                        endpoint: r.get::<_, Option<String>>(17)?.unwrap_or_default(),
                        deps: Vec::new(),
                    },
                })
            })
            .map_err(self.sq())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sq())
    }
}

/// Appends `q`'s conditions (all but the limit) to `sql` as ` AND ...` clauses with numbered
/// parameters; returns their values.
fn filter(sql: &mut String, q: &Query) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    let mut args: Vec<V> = Vec::new();
    fn arg(sql: &mut String, args: &mut Vec<V>, clause: &str, v: V) {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    }
    if let Some(m) = &q.method {
        arg(
            sql,
            &mut args,
            " AND upper(method) = upper(?)",
            V::Text(m.clone()),
        );
    }
    if let Some(e) = &q.endpoint {
        if e.contains(['*', '?', '[']) {
            arg(sql, &mut args, " AND path GLOB ?", V::Text(e.clone()));
        } else {
            arg(
                sql,
                &mut args,
                " AND instr(lower(path), lower(?)) > 0",
                V::Text(e.clone()),
            );
        }
    }
    if let Some(s) = q.status {
        arg(sql, &mut args, " AND status = ?", V::Integer(s));
    }
    if q.errors {
        sql.push_str(" AND (status = 0 OR status >= 400 OR has_error = 1)");
    }
    if let Some(s) = &q.service {
        arg(sql, &mut args, " AND service = ?", V::Text(s.clone()));
    }
    if let Some(s) = &q.env {
        arg(sql, &mut args, " AND env = ?", V::Text(s.clone()));
    }
    if let Some(t) = q.since {
        arg(sql, &mut args, " AND recorded_unix >= ?", V::Real(t));
    }
    if let Some(t) = q.until {
        arg(sql, &mut args, " AND recorded_unix < ?", V::Real(t));
    }
    if let Some(d) = q.min_duration_ms {
        arg(sql, &mut args, " AND duration_ms >= ?", V::Real(d));
    }
    match (&q.dep_type, &q.dep_host) {
        (None, None) => {}
        (t, h) => {
            sql.push_str(" AND EXISTS (SELECT 1 FROM deps d WHERE d.rel = f.rel");
            if let Some(t) = t {
                arg(sql, &mut args, " AND d.kind = ?", V::Text(t.clone()));
            }
            if let Some(h) = h {
                let h = h.to_ascii_lowercase();
                args.push(V::Text(h));
                let n = args.len();
                sql.push_str(&format!(
                    " AND (d.host = ?{n} OR d.host GLOB (?{n} || ':[0-9]*'))"
                ));
            }
            sql.push(')');
        }
    }
    if let Some(ns) = &q.namespace {
        arg(
            sql,
            &mut args,
            " AND k8s_namespace = ?",
            V::Text(ns.clone()),
        );
    }
    if let Some(p) = &q.pod {
        let op = if p.contains(['*', '?', '[']) {
            "GLOB"
        } else {
            "="
        };
        arg(
            sql,
            &mut args,
            &format!(" AND k8s_pod {op} ?"),
            V::Text(p.clone()),
        );
    }
    args
}

fn store(tx: &rusqlite::Transaction<'_>, f: &FileStamp, p: &Parsed) -> rusqlite::Result<()> {
    // Cached statements: the agent stores one row set per cassette it writes, and parsing
    // the SQL each time was a visible share of its CPU.
    tx.prepare_cached("DELETE FROM deps WHERE rel=?1")?
        .execute([&f.rel])?;
    match p {
        Parsed::Ok(s) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO files(rel, mtime_ns, size, error, not_cassette, \
                 schema_version, id, recorded_at, recorded_unix, service, env, method, path, \
                 status, duration_ms, event_count, has_error, legacy, k8s_namespace, k8s_pod, \
                 endpoint) \
                 VALUES(?1, ?2, ?3, NULL, 0, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                 ?16, ?17, ?18, ?19)",
            )?
            .execute(params![
                f.rel,
                f.mtime_ns,
                f.size,
                s.schema_version,
                s.id,
                s.recorded_at,
                s.recorded_unix.unwrap_or(f.mtime_ns as f64 / 1e9),
                s.service,
                s.env,
                s.method,
                s.path,
                s.status,
                s.duration_ms,
                s.event_count,
                s.has_error,
                s.legacy,
                s.namespace,
                s.pod,
                s.endpoint,
            ])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO deps(rel, eid, kind, lib, method, host, url, status, duration_ms, \
                 dependency, fingerprint, start_ms, failed, session_level) \
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for d in &s.deps {
                ins.execute(params![
                    f.rel,
                    d.eid,
                    d.kind,
                    d.lib,
                    d.method,
                    d.host,
                    d.url,
                    d.status,
                    d.duration_ms,
                    d.stats.dependency,
                    d.stats.fingerprint,
                    d.stats.start_ms,
                    d.stats.failed,
                    d.stats.session_level,
                ])?;
            }
        }
        Parsed::NotCassette(why) | Parsed::Bad(why) => {
            let not = matches!(p, Parsed::NotCassette(_));
            tx.execute(
                "INSERT OR REPLACE INTO files(rel, mtime_ns, size, error, not_cassette) \
                 VALUES(?1, ?2, ?3, ?4, ?5)",
                params![
                    f.rel,
                    f.mtime_ns,
                    f.size,
                    if not { None } else { Some(why.as_str()) },
                    not
                ],
            )?;
        }
    }
    Ok(())
}

fn parse_parallel(dir: &Path, todo: &[(FileStamp, bool)]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(8);
    if todo.len() < 64 || threads == 1 {
        return todo
            .iter()
            .map(|(f, _)| parse_file(&dir.join(&f.rel)))
            .collect();
    }
    let chunk = todo.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                let h = s.spawn(move || {
                    part.iter()
                        .map(|(f, _)| parse_file(&dir.join(&f.rel)))
                        .collect::<Vec<_>>()
                });
                (part.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Parsed::Bad("parser thread panicked".into()))
                        .collect()
                })
            })
            .collect()
    })
}
