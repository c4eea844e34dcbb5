//! Configuration: `timetracer.toml` files and `TIMETRACER_*` environment variables.
//!
//! Precedence, highest first: command-line flag, environment variable, project file
//! (`timetracer.toml` in the current directory or the nearest parent that has one; or the file
//! named by `TIMETRACER_CONFIG`), user file (`$XDG_CONFIG_HOME/timetracer/timetracer.toml`, else
//! `~/.config/timetracer/timetracer.toml`), built-in default. Every value remembers where it
//! came from ([`Source`]); `timetracer config` prints them. The table of keys is [`KEYS`] and
//! `docs/configuration.md`.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Configuration errors; each names the file or variable and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message} (fix the TOML syntax)", path.display())]
    Toml { path: PathBuf, message: String },
    #[error(
        "config file {}: unknown key `{key}` (known keys: {}; see docs/configuration.md)",
        path.display(),
        known_keys()
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("{source_desc}: `{key}` = {value:?} is not valid: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
        source_desc: String,
    },
}

/// Value types, used to check values when loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Path,
    Bool,
    Float,
    Int,
    /// Comma-separated list in env vars, array or string in TOML.
    List,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// A byte size: `1GiB`, `500MiB`, `64KiB`, `4096` ([`parse_size`]).
    Size,
    /// A duration: `24h`, `90s`, `1h 30m` ([`parse_duration`]).
    Duration,
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// TOML key (`s3.bucket` is `bucket` in the `[s3]` table).
    pub name: &'static str,
    pub env: &'static str,
    pub default: Option<&'static str>,
    pub kind: Kind,
    /// `cli`, `agent` or `cli, agent`.
    pub used_by: &'static str,
    pub help: &'static str,
}

/// Every key (the table in `docs/configuration.md` mirrors this).
pub const KEYS: &[Key] = &[
    Key {
        name: "dir",
        env: "TIMETRACER_DIR",
        default: Some("./cassettes"),
        kind: Kind::Path,
        used_by: "cli, agent",
        help: "cassette directory",
    },
    Key {
        name: "service",
        env: "TIMETRACER_SERVICE",
        default: None,
        kind: Kind::Str,
        used_by: "agent",
        help: "session.service written into cassettes (unset: the traced process's program and app, e.g. `uvicorn shop.app:app`)",
    },
    Key {
        name: "env",
        env: "TIMETRACER_ENV",
        default: Some("local"),
        kind: Kind::Str,
        used_by: "agent",
        help: "session.env written into cassettes",
    },
    Key {
        name: "git_sha",
        env: "TIMETRACER_GIT_SHA",
        default: None,
        kind: Kind::Str,
        used_by: "agent",
        help: "session.git_sha written into cassettes",
    },
    Key {
        name: "compression",
        env: "TIMETRACER_COMPRESSION",
        default: Some("none"),
        kind: Kind::Choice(&["none", "zstd"]),
        used_by: "cli, agent",
        help: "compression of written cassettes (agent, import, s3 download keeps the original)",
    },
    Key {
        name: "encrypt_to",
        env: "TIMETRACER_ENCRYPT_TO",
        default: None,
        kind: Kind::Str,
        used_by: "agent",
        help: "encrypt cassettes for these age recipients (age1…, or files of them; comma-separated)",
    },
    Key {
        name: "retain",
        env: "TIMETRACER_RETAIN",
        default: None,
        kind: Kind::Duration,
        used_by: "agent",
        help: "delete cassettes older than this while recording (`30d`, `12h`; local files only)",
    },
    Key {
        name: "sample_rate",
        env: "TIMETRACER_SAMPLE_RATE",
        default: Some("1.0"),
        kind: Kind::Float,
        used_by: "agent",
        help: "fraction of requests recorded, 0.0-1.0",
    },
    Key {
        name: "errors_only",
        env: "TIMETRACER_ERRORS_ONLY",
        default: Some("false"),
        kind: Kind::Bool,
        used_by: "agent",
        help: "record only failed requests",
    },
    Key {
        name: "exclude_paths",
        env: "TIMETRACER_EXCLUDE_PATHS",
        default: None,
        kind: Kind::List,
        used_by: "agent",
        help: "paths not recorded (exact, prefix + `/`, or `/x/*`)",
    },
    Key {
        name: "redact_keys",
        env: "TIMETRACER_REDACT_KEYS",
        default: None,
        kind: Kind::List,
        used_by: "agent",
        help: "extra keys redacted: body/query fields, SQL columns, MongoDB fields (`--redact-key` adds)",
    },
    Key {
        name: "redact_redis_keys",
        env: "TIMETRACER_REDACT_REDIS_KEYS",
        default: None,
        kind: Kind::List,
        used_by: "agent",
        help: "extra Redis key globs whose values are redacted (`--redact-redis-key` adds)",
    },
    Key {
        name: "max_body_kb",
        env: "TIMETRACER_MAX_BODY_KB",
        default: Some("1024"),
        kind: Kind::Int,
        used_by: "agent",
        help: "KiB of each body kept",
    },
    Key {
        name: "log",
        env: "TIMETRACER_LOG",
        default: Some("error"),
        kind: Kind::Str,
        used_by: "agent",
        help: "log filter (tracing EnvFilter syntax)",
    },
    Key {
        name: "color",
        env: "TIMETRACER_COLOR",
        default: Some("auto"),
        kind: Kind::Choice(&["auto", "always", "never"]),
        used_by: "cli",
        help: "coloured output (`NO_COLOR` also turns it off)",
    },
    Key {
        name: "diff.threshold",
        env: "TIMETRACER_DIFF_THRESHOLD",
        default: Some("20"),
        kind: Kind::Float,
        used_by: "cli",
        help: "`diff`: % slower that counts as a regression",
    },
    Key {
        name: "stats.n_plus_one",
        env: "TIMETRACER_N_PLUS_ONE",
        default: Some("3"),
        kind: Kind::Int,
        used_by: "cli",
        help: "`stats`: repeats of one query shape in one request reported as N+1",
    },
    Key {
        name: "s3.bucket",
        env: "TIMETRACER_S3_BUCKET",
        default: None,
        kind: Kind::Str,
        used_by: "cli, agent",
        help: "S3 bucket (enables uploads)",
    },
    Key {
        name: "s3.prefix",
        env: "TIMETRACER_S3_PREFIX",
        default: Some("cassettes"),
        kind: Kind::Str,
        used_by: "cli, agent",
        help: "key prefix inside the bucket",
    },
    Key {
        name: "s3.region",
        env: "TIMETRACER_S3_REGION",
        default: None,
        kind: Kind::Str,
        used_by: "cli, agent",
        help: "region (else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1)",
    },
    Key {
        name: "s3.endpoint",
        env: "TIMETRACER_S3_ENDPOINT",
        default: None,
        kind: Kind::Str,
        used_by: "cli, agent",
        help: "endpoint URL of an S3-compatible server (MinIO, SeaweedFS, R2...)",
    },
    Key {
        name: "s3.backlog_dir",
        env: "TIMETRACER_S3_BACKLOG_DIR",
        default: None,
        kind: Kind::Path,
        used_by: "agent",
        help: "where cassettes wait for upload while S3 is slow or down (default: `.s3-backlog` in the cassette directory)",
    },
    Key {
        name: "s3.backlog_max",
        env: "TIMETRACER_S3_BACKLOG_MAX",
        default: Some("1GiB"),
        kind: Kind::Size,
        used_by: "agent",
        help: "bytes the S3 backlog may hold; above it the oldest cassettes' uploads are dropped (counted)",
    },
    Key {
        name: "s3.backlog_max_age",
        env: "TIMETRACER_S3_BACKLOG_MAX_AGE",
        default: Some("24h"),
        kind: Kind::Duration,
        used_by: "agent",
        help: "how long a cassette may wait for upload; older ones are dropped (counted)",
    },
    Key {
        name: "s3.uploads",
        env: "TIMETRACER_S3_UPLOADS",
        default: Some("4"),
        kind: Kind::Int,
        used_by: "agent",
        help: "concurrent S3 uploads of the agent (1-64)",
    },
];

fn known_keys() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    UserFile(PathBuf),
    ProjectFile(PathBuf),
    Env(&'static str),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::UserFile(p) => write!(f, "user file {}", p.display()),
            Self::ProjectFile(p) => write!(f, "project file {}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// One effective value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: String,
    pub source: Source,
}

/// The effective configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    values: BTreeMap<&'static str, Value>,
    /// Files that were read, in the order applied.
    pub files: Vec<PathBuf>,
}

/// Where config files are looked for.
#[derive(Clone, Debug, Default)]
pub struct Locations {
    pub project: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

impl Locations {
    /// The standard locations for this process.
    #[must_use]
    pub fn standard() -> Self {
        let project = match std::env::var_os("TIMETRACER_CONFIG") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => std::env::current_dir().ok().and_then(|cwd| {
                cwd.ancestors()
                    .map(|d| d.join("timetracer.toml"))
                    .find(|p| p.is_file())
            }),
        };
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("timetracer").join("timetracer.toml"));
        Self { project, user }
    }
}

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn check(k: &Key, value: &str, src: &Source) -> Result<(), Error> {
    let bad = |expected| Error::Invalid {
        key: k.name.to_owned(),
        value: value.to_owned(),
        expected,
        source_desc: src.to_string(),
    };
    match k.kind {
        Kind::Str | Kind::Path | Kind::List => Ok(()),
        Kind::Bool => parse_bool(value)
            .map(|_| ())
            .ok_or_else(|| bad("true/false (or 1/0, yes/no, on/off)")),
        Kind::Float => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|_| ())
            .ok_or_else(|| bad("a non-negative number")),
        Kind::Int => value
            .trim()
            .parse::<u64>()
            .map(|_| ())
            .map_err(|_| bad("a non-negative integer")),
        Kind::Size => parse_size(value)
            .map(|_| ())
            .ok_or_else(|| bad("a size such as 1GiB, 500MiB, 64KiB or a number of bytes")),
        Kind::Duration => parse_duration(value)
            .map(|_| ())
            .ok_or_else(|| bad("a duration such as 24h, 30m, 90s or 1h 30m")),
        Kind::Choice(words) => {
            if words.contains(&value.trim()) {
                Ok(())
            } else {
                Err(bad(match k.name {
                    "color" => "auto, always or never",
                    _ => "none or zstd",
                }))
            }
        }
    }
}

/// A byte size: a number with an optional binary unit (`B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`,
/// `T`/`TiB`, any case; `KB`, `MB`... are read as binary too, like `ls -h`).
///
/// Written here: the tree has no size parser, and these ten lines are all it takes.
#[must_use]
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A duration in humantime's syntax (`24h`, `90s`, `1h 30m`, `2days`); a bare number is seconds.
#[must_use]
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    match s.parse::<u64>() {
        Ok(secs) => Some(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).ok(),
    }
}

/// `true|1|yes|on` / `false|0|no|off|""`, case-insensitive.
#[must_use]
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn toml_to_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(toml_to_string).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Config {
    /// Load from the standard locations and this process's environment.
    pub fn load() -> Result<Self, Error> {
        Self::load_from(&Locations::standard(), |k| std::env::var(k).ok())
    }

    /// Load from `locations` with `env` as the environment (for tests).
    pub fn load_from(
        locations: &Locations,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let mut cfg = Self::default();
        for k in KEYS {
            if let Some(d) = k.default {
                cfg.values.insert(
                    k.name,
                    Value {
                        value: d.to_owned(),
                        source: Source::Default,
                    },
                );
            }
        }
        if let Some(p) = locations.user.as_ref().filter(|p| p.is_file()) {
            cfg.apply_file(p, Source::UserFile(p.clone()))?;
        }
        if let Some(p) = &locations.project {
            // An explicit TIMETRACER_CONFIG that does not exist is an error; read it anyway.
            cfg.apply_file(p, Source::ProjectFile(p.clone()))?;
        }
        for k in KEYS {
            if let Some(v) = env(k.env).filter(|v| !v.is_empty()) {
                let src = Source::Env(k.env);
                check(k, &v, &src)?;
                cfg.values.insert(
                    k.name,
                    Value {
                        value: v,
                        source: src,
                    },
                );
            }
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, path: &Path, src: Source) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let mut flat: Vec<(String, &toml::Value)> = Vec::new();
        for (k, v) in &table {
            match v {
                toml::Value::Table(t) => {
                    for (k2, v2) in t {
                        flat.push((format!("{k}.{k2}"), v2));
                    }
                }
                other => flat.push((k.clone(), other)),
            }
        }
        for (name, v) in flat {
            let k = key(&name).ok_or_else(|| Error::UnknownKey {
                path: path.to_path_buf(),
                key: name.clone(),
            })?;
            let value = toml_to_string(v);
            check(k, &value, &src)?;
            // Relative paths in a file are relative to the file's directory.
            let value = if k.kind == Kind::Path && Path::new(&value).is_relative() {
                path.parent()
                    .map_or_else(|| value.clone(), |d| d.join(&value).display().to_string())
            } else {
                value
            };
            self.values.insert(
                k.name,
                Value {
                    value,
                    source: src.clone(),
                },
            );
        }
        if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Override a key from a command-line flag.
    pub fn set_flag(&mut self, name: &'static str, flag: &str, value: String) {
        self.values.insert(
            name,
            Value {
                value,
                source: Source::Flag(flag.to_owned()),
            },
        );
    }

    /// The effective value of `name` (None when unset and without default).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The value as a string.
    #[must_use]
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v.value.as_str())
    }

    /// A float value (checked when loaded).
    #[must_use]
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.str(name).and_then(|v| v.trim().parse().ok())
    }

    /// An integer value (checked when loaded).
    #[must_use]
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(|v| v.trim().parse().ok())
    }

    /// A size value (checked when loaded).
    #[must_use]
    pub fn size(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(parse_size)
    }

    /// A duration value (checked when loaded).
    #[must_use]
    pub fn duration(&self, name: &str) -> Option<std::time::Duration> {
        self.str(name).and_then(parse_duration)
    }

    /// Every key with its effective value (None = unset) in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Key, Option<&Value>)> {
        KEYS.iter().map(|k| (k, self.values.get(k.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_provenance() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("user.toml");
        let proj = d.path().join("proj").join("timetracer.toml");
        std::fs::create_dir_all(proj.parent().unwrap()).unwrap();
        std::fs::write(
            &user,
            "dir = \"/u/c\"\nservice = \"u\"\n[s3]\nbucket = \"ub\"\n",
        )
        .unwrap();
        std::fs::write(
            &proj,
            "dir = \"cas\"\n[s3]\nbucket = \"pb\"\nprefix = \"p\"\n",
        )
        .unwrap();
        let loc = Locations {
            project: Some(proj.clone()),
            user: Some(user.clone()),
        };
        let cfg = Config::load_from(&loc, |k| {
            (k == "TIMETRACER_S3_BUCKET").then(|| "envb".to_owned())
        })
        .unwrap();
        assert_eq!(cfg.get("s3.bucket").unwrap().value, "envb");
        assert_eq!(
            cfg.get("s3.bucket").unwrap().source,
            Source::Env("TIMETRACER_S3_BUCKET")
        );
        assert_eq!(cfg.str("s3.prefix"), Some("p"));
        assert_eq!(cfg.str("service"), Some("u"));
        assert_eq!(
            cfg.str("dir"),
            Some(proj.parent().unwrap().join("cas").to_str().unwrap())
        );
        assert_eq!(cfg.get("env").unwrap().source, Source::Default);
        assert_eq!(cfg.files, vec![user, proj]);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size(" 500 MiB "), Some(500 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1.5GiB"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow");
        assert_eq!(
            parse_duration("90"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("1h 30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("soon"), None);
        let e = Config::load_from(&Locations::default(), |k| {
            (k == "TIMETRACER_S3_BACKLOG_MAX").then(|| "big".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("TIMETRACER_S3_BACKLOG_MAX") && e.contains("1GiB"),
            "{e}"
        );
        let cfg = Config::load_from(&Locations::default(), |_| None).unwrap();
        assert_eq!(cfg.size("s3.backlog_max"), Some(1 << 30));
        assert_eq!(
            cfg.duration("s3.backlog_max_age"),
            Some(std::time::Duration::from_secs(24 * 3600))
        );
    }

    #[test]
    fn errors_name_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("timetracer.toml");
        std::fs::write(&p, "bukcet = 1\n").unwrap();
        let loc = Locations {
            project: Some(p.clone()),
            user: None,
        };
        let e = Config::load_from(&loc, |_| None).unwrap_err().to_string();
        assert!(
            e.contains("unknown key `bukcet`") && e.contains("s3.bucket"),
            "{e}"
        );
        std::fs::write(&p, "color = \"blue\"\n").unwrap();
        let e = Config::load_from(&loc, |_| None).unwrap_err().to_string();
        assert!(e.contains("auto, always or never"), "{e}");
        let e = Config::load_from(&Locations::default(), |k| {
            (k == "TIMETRACER_SAMPLE_RATE").then(|| "lots".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("env TIMETRACER_SAMPLE_RATE") && e.contains("number"),
            "{e}"
        );
    }
}
