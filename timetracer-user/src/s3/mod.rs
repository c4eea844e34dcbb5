//! S3-compatible storage for cassettes (AWS S3, MinIO, R2, SeaweedFS...), through `object_store`.
//!
//! Settings: bucket, prefix, region, endpoint ([`Settings`], from `TIMETRACER_S3_*` or
//! `timetracer.toml`). Credentials: the standard AWS chain as `object_store` implements it
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity, ECS and EC2
//! instance metadata) plus the shared credentials file (`~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`) when the environment has no keys.
//!
//! Every object is written with one PUT (S3 makes it visible only when complete: no partial
//! objects); requests are retried with exponential backoff. Downloads go to a temp file that is
//! renamed into place. The API is blocking (it owns a small tokio runtime). The agent never
//! calls it on its writer thread: its cassettes go through the [`spool`] (upload workers) and
//! the on-disk [`backlog`], so a slow or absent bucket never slows the recording.
//!
//! ```no_run
//! # fn f(bytes: Vec<u8>) -> Result<(), timetracer::s3::Error> {
//! let cfg = timetracer::config::Config::load().expect("valid configuration");
//! if let Some(settings) = timetracer::s3::Settings::from_config(&cfg) {
//!     let up = timetracer::s3::Uploader::new(settings)?;
//!     up.put("2026-11-22/GET__users_42__e92ca5c8.json", bytes)?; // key below the prefix
//! }
//! # Ok(()) }
//! ```
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod backlog;
pub mod spool;

use futures::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};

/// S3 errors; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no S3 bucket configured: pass --bucket, set TIMETRACER_S3_BUCKET, or add `[s3] bucket = \"...\"` to timetracer.toml"
    )]
    NoBucket,
    #[error(
        "cannot configure S3 client: {0} (check TIMETRACER_S3_ENDPOINT / _REGION and AWS credentials)"
    )]
    Config(#[source] object_store::Error),
    #[error("S3 {op} {key}: {source} (check the bucket exists, the endpoint, and AWS credentials)")]
    Request {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot start the S3 I/O runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key {0:?} is not valid (no `..`, empty segments or control characters)")]
    BadKey(String),
}

/// Where cassettes go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub bucket: String,
    /// Key prefix without leading/trailing `/` (may be empty).
    pub prefix: String,
    pub region: Option<String>,
    /// `http(s)://host:port` of an S3-compatible server.
    pub endpoint: Option<String>,
}

impl Settings {
    /// From the effective configuration (`s3.bucket`, `s3.prefix`, `s3.region`,
    /// `s3.endpoint`: flags, `TIMETRACER_S3_*`, `timetracer.toml`); `None` without a bucket.
    #[must_use]
    pub fn from_config(cfg: &crate::config::Config) -> Option<Self> {
        let get = |k: &str| cfg.str(k).filter(|v| !v.is_empty()).map(str::to_owned);
        Some(Self {
            bucket: get("s3.bucket")?,
            prefix: get("s3.prefix").unwrap_or_else(|| "cassettes".to_owned()),
            region: get("s3.region"),
            endpoint: get("s3.endpoint"),
        })
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Object {
    /// Key below the prefix.
    pub key: String,
    pub size: u64,
    /// RFC 3339.
    pub last_modified: String,
    /// The server's entity tag (changes when the object is rewritten), when it sends one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// A blocking S3 client bound to a bucket and prefix.
pub struct Uploader {
    settings: Settings,
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `[profile]` keys of the shared credentials file, when the environment has no keys.
fn profile_credentials() -> Option<(String, String, Option<String>)> {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        return None;
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_owned());
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut in_profile = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            in_profile = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        let Some((k, v)) = line.split_once('=').filter(|_| in_profile) else {
            continue;
        };
        let v = v.trim().to_owned();
        match k.trim() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some((id?, secret?, token))
}

fn check_key(key: &str) -> Result<(), Error> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || key.chars().any(char::is_control);
    if bad {
        Err(Error::BadKey(key.to_owned()))
    } else {
        Ok(())
    }
}

impl Uploader {
    /// A client for `settings`, for the `timetracer s3` commands: each request is retried for
    /// up to a minute.
    pub fn new(settings: Settings) -> Result<Self, Error> {
        Self::build(
            settings,
            RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            },
            profile_credentials(),
        )
    }

    /// A client for the agent's upload workers ([`spool`]): a request is retried twice within
    /// ten seconds, then the cassette goes back to the backlog and the spool's own backoff
    /// takes over (it knows S3 is down; object_store's retries would hold a worker for a
    /// minute per cassette).
    pub fn for_spool(settings: Settings) -> Result<Self, Error> {
        Self::build(settings, Self::SPOOL_RETRY, profile_credentials())
    }

    const SPOOL_RETRY: RetryConfig = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    };

    /// [`Self::for_spool`] with fixed keys (tests: no credential chain to consult).
    #[cfg(test)]
    pub(crate) fn for_spool_with_keys(
        settings: Settings,
        id: &str,
        secret: &str,
    ) -> Result<Self, Error> {
        Self::build(
            settings,
            Self::SPOOL_RETRY,
            Some((id.to_owned(), secret.to_owned(), None)),
        )
    }

    /// `keys`: id, secret, session token over the environment's (the shared credentials file's
    /// profile, or fixed keys in tests).
    fn build(
        settings: Settings,
        retry: RetryConfig,
        keys: Option<(String, String, Option<String>)>,
    ) -> Result<Self, Error> {
        if settings.bucket.is_empty() {
            return Err(Error::NoBucket);
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        let region = settings
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        b = b.with_region(region);
        if let Some(ep) = &settings.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some((id, secret, token)) = keys {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        b = b.with_retry(retry);
        let store = b.build().map_err(Error::Config)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Self {
            settings,
            store: Arc::new(store),
            rt,
        })
    }

    /// The settings in use.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn full(&self, key: &str) -> Result<ObjPath, Error> {
        check_key(key)?;
        let p = self.settings.prefix.trim_matches('/');
        let full = if p.is_empty() {
            key.to_owned()
        } else {
            format!("{p}/{key}")
        };
        ObjPath::parse(&full).map_err(|_| Error::BadKey(full))
    }

    /// Store `bytes` at `prefix/key` (one PUT: the object appears whole or not at all).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let path = self.full(key)?;
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|source| Error::Request {
                op: "PUT",
                key: path.to_string(),
                source,
            })
    }

    /// Upload several `(key, local file)` pairs, `parallel` at a time. Returns per-file results
    /// in input order.
    pub fn put_files(
        &self,
        files: &[(String, PathBuf)],
        parallel: usize,
    ) -> Vec<Result<u64, Error>> {
        self.rt.block_on(async {
            let jobs = files.iter().map(|(key, file)| {
                let store = Arc::clone(&self.store);
                let path = self.full(key);
                let file = file.clone();
                async move {
                    let path = path?;
                    let bytes = tokio::fs::read(&file)
                        .await
                        .map_err(|source| Error::Io { path: file, source })?;
                    let n = bytes.len() as u64;
                    store
                        .put(&path, PutPayload::from(bytes))
                        .await
                        .map_err(|source| Error::Request {
                            op: "PUT",
                            key: path.to_string(),
                            source,
                        })?;
                    Ok(n)
                }
            });
            futures::stream::iter(jobs)
                .buffered(parallel.max(1))
                .collect()
                .await
        })
    }

    /// The bytes of `prefix/key`.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, Error> {
        let path = self.full(key)?;
        let err = |source| Error::Request {
            op: "GET",
            key: path.to_string(),
            source,
        };
        self.rt.block_on(async {
            let r = self.store.get(&path).await.map_err(err)?;
            r.bytes().await.map(|b| b.to_vec()).map_err(err)
        })
    }

    /// Download `prefix/key` to `dest` atomically (temp file in the same directory, renamed).
    pub fn download(&self, key: &str, dest: &Path) -> Result<u64, Error> {
        let bytes = self.get(key)?;
        write_atomic(dest, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Download several `(key, local file)` pairs, `parallel` at a time, each atomically as
    /// [`Self::download`] does. Returns per-file results (bytes written) in input order.
    pub fn download_files(
        &self,
        files: &[(String, PathBuf)],
        parallel: usize,
    ) -> Vec<Result<u64, Error>> {
        self.rt.block_on(async {
            let jobs = files.iter().map(|(key, dest)| {
                let store = Arc::clone(&self.store);
                let path = self.full(key);
                let dest = dest.clone();
                async move {
                    let path = path?;
                    let err = |source| Error::Request {
                        op: "GET",
                        key: path.to_string(),
                        source,
                    };
                    let bytes = store
                        .get(&path)
                        .await
                        .map_err(err)?
                        .bytes()
                        .await
                        .map_err(err)?;
                    tokio::task::spawn_blocking(move || {
                        write_atomic(&dest, &bytes).map(|()| bytes.len() as u64)
                    })
                    .await
                    .map_err(|e| Error::Runtime(std::io::Error::other(e)))?
                }
            });
            futures::stream::iter(jobs)
                .buffered(parallel.max(1))
                .collect()
                .await
        })
    }

    /// Every object below the prefix (and below `sub` inside it, when given), sorted by key.
    pub fn list(&self, sub: Option<&str>) -> Result<Vec<Object>, Error> {
        let p = self.settings.prefix.trim_matches('/');
        let base = match (p.is_empty(), sub.map(|s| s.trim_matches('/'))) {
            (true, None | Some("")) => None,
            (true, Some(s)) => Some(s.to_owned()),
            (false, None | Some("")) => Some(p.to_owned()),
            (false, Some(s)) => Some(format!("{p}/{s}")),
        };
        let base_path = base.as_deref().map(ObjPath::from);
        let strip = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let mut out = self.rt.block_on(async {
            let mut stream = self.store.list(base_path.as_ref());
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let m = item.map_err(|source| Error::Request {
                    op: "LIST",
                    key: base.clone().unwrap_or_default(),
                    source,
                })?;
                let full = m.location.to_string();
                out.push(Object {
                    key: full.strip_prefix(&strip).unwrap_or(&full).to_owned(),
                    size: m.size,
                    last_modified: m.last_modified.to_rfc3339(),
                    e_tag: m.e_tag,
                });
            }
            Ok::<_, Error>(out)
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Writes `bytes` to `dest` atomically (mode 0600, fsynced), creating its directories.
fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    crate::atomic_file::write(dest, bytes).map_err(|e| Error::Io {
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("2026-11-22/GET__x__1.json").is_ok());
        assert!(check_key("../x").is_err());
        assert!(check_key("a//b").is_err());
        assert!(check_key("/a").is_err());
        assert!(check_key("").is_err());
    }
}
