//! [`RecordPlan`]: validated recording options, resolved from the effective [`Config`]
//! (command-line flags, `TIMETRACER_*` variables, `timetracer.toml`, defaults — in that order of
//! precedence; the front end applies its flags with [`Config::set_flag`]).
use std::path::PathBuf;
use std::sync::Arc;

use crate::capture::EbpfLogLevel;
use crate::cassette::{BuildOptions, Compression, crypt::Recipients};
use crate::config::{Config, Source};
use crate::privilege::Identity;
use crate::redact::RedactionPolicy;

/// A value that cannot be used, with where it came from.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{source_desc}: `{key}` = {value} is out of range: use a value from 0.0 to 1.0")]
    SampleRate {
        key: &'static str,
        value: f64,
        source_desc: String,
    },
    #[error("{source_desc}: `{key}` = {value} KiB is too large")]
    MaxBody {
        key: &'static str,
        value: u64,
        source_desc: String,
    },
    #[error("{source_desc}: `encrypt_to`: {error}")]
    EncryptTo { error: String, source_desc: String },
    #[error(
        "{source_desc}: `retain` = {value} is too short: cassettes would be deleted as they are \
         written; use at least 1s (e.g. 30d, 12h)"
    )]
    Retain { value: String, source_desc: String },
    #[error("{source_desc}: `{key}` = {value} is out of range: use 1 to 64 concurrent uploads")]
    S3Uploads {
        key: &'static str,
        value: u64,
        source_desc: String,
    },
}

/// Where and how written cassettes are uploaded (the `s3.*` keys), when a bucket is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Plan {
    pub settings: crate::s3::Settings,
    /// Where cassettes wait for upload: `s3.backlog_dir`, else `.s3-backlog` in the cassette
    /// directory (hidden: no cassette listing walks it).
    pub backlog_dir: PathBuf,
    /// `s3.backlog_max`, `s3.backlog_max_age`.
    pub limits: crate::s3::backlog::Limits,
    /// Concurrent uploads (`s3.uploads`).
    pub uploads: usize,
}

impl S3Plan {
    /// The plan for `cfg`, with cassettes in `out`; `None` without a bucket.
    pub fn from_config(cfg: &Config, out: &std::path::Path) -> Result<Option<Self>, PlanError> {
        let Some(settings) = crate::s3::Settings::from_config(cfg) else {
            return Ok(None);
        };
        let uploads = cfg.u64("s3.uploads").unwrap_or(4);
        if !(1..=64).contains(&uploads) {
            return Err(PlanError::S3Uploads {
                key: "s3.uploads",
                value: uploads,
                source_desc: cfg
                    .get("s3.uploads")
                    .map_or_else(|| Source::Default.to_string(), |v| v.source.to_string()),
            });
        }
        let defaults = crate::s3::backlog::Limits::default();
        Ok(Some(Self {
            settings,
            backlog_dir: cfg
                .str("s3.backlog_dir")
                .filter(|s| !s.is_empty())
                .map_or_else(|| out.join(".s3-backlog"), PathBuf::from),
            limits: crate::s3::backlog::Limits {
                max_bytes: cfg.size("s3.backlog_max").unwrap_or(defaults.max_bytes),
                max_age: cfg
                    .duration("s3.backlog_max_age")
                    .unwrap_or(defaults.max_age),
            },
            uploads: usize::try_from(uploads).unwrap_or(4),
        }))
    }
}

/// Which requests are stored (the filter sinks, `record::sink`).
#[derive(Clone, Debug, PartialEq)]
pub struct Filters {
    /// Fraction of requests recorded, 0.0–1.0.
    pub sample_rate: f64,
    /// Only failed requests (status >= 400, no response, or a traceback).
    pub errors_only: bool,
    /// Paths not recorded: exact, prefix followed by `/`, or `/x/*`.
    pub exclude_paths: Vec<String>,
}

impl Default for Filters {
    fn default() -> Self {
        Self {
            sample_rate: 1.0,
            errors_only: false,
            exclude_paths: Vec::new(),
        }
    }
}

/// Options that exist only as flags (no configuration key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagOnly {
    /// `--max-body` in bytes; overrides `max_body_kb`.
    pub max_body: Option<u64>,
    /// `--no-redact`.
    pub no_redact: bool,
    /// `--redact-header`, added to the default list.
    pub redact_headers: Vec<String>,
    /// `--redact-key`, added to the default list.
    pub redact_keys: Vec<String>,
    /// `--redact-redis-key` (added to the defaults and `redact_redis_keys`).
    pub redact_redis_keys: Vec<String>,
    /// `--ebpf-log` (or `TIMETRACER_EBPF_LOG`).
    pub ebpf_log: Option<EbpfLogLevel>,
}

/// Everything a recording needs to know, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordPlan {
    /// The cassette directory (created 0700 when missing, even when nothing is saved: the live
    /// view saves there on demand).
    pub out: PathBuf,
    /// Bytes of each message body kept.
    pub max_body: u64,
    pub compression: Compression,
    /// Encrypt cassettes for these age recipients (`--encrypt-to`, key `encrypt_to`).
    pub encrypt_to: Option<Arc<Recipients>>,
    pub filters: Filters,
    /// Delete cassettes older than this while recording (`--retain`, key `retain`).
    pub retain: Option<std::time::Duration>,
    /// How cassettes are built (session, redaction, recorded policies).
    pub build: BuildOptions,
    /// A viewer owns the terminal: no status line, messages go to the log.
    pub quiet: bool,
    /// Kernel-side diagnostics: `--ebpf-log`, else a `timetracer::ebpf` directive in `log`.
    pub ebpf_log: EbpfLogLevel,
    /// The invoking user (`--user`, else `sudo`'s): owns every directory and file the
    /// recording writes, and is who a launched app runs as ([`crate::privilege`]). `None`: the
    /// agent's own user.
    pub owner: Option<Identity>,
    /// Uploads to S3 (a bucket is configured).
    pub s3: Option<S3Plan>,
    /// The agent is root and nothing named a user: `record` refuses to launch the app (as
    /// root) until `--user root` says so; `attach`/`top` write as root.
    pub owner_unspecified: bool,
}

impl RecordPlan {
    /// The plan for `cfg` (flags already applied) and the flag-only options.
    pub fn from_config(cfg: &Config, flags: &FlagOnly) -> Result<Self, PlanError> {
        let source_desc = |key: &str| {
            cfg.get(key)
                .map_or_else(|| Source::Default.to_string(), |v| v.source.to_string())
        };
        let sample_rate = cfg.f64("sample_rate").unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_rate) {
            return Err(PlanError::SampleRate {
                key: "sample_rate",
                value: sample_rate,
                source_desc: source_desc("sample_rate"),
            });
        }
        let max_body = match flags.max_body {
            Some(b) => b,
            None => {
                let kb = cfg.u64("max_body_kb").unwrap_or(1024);
                kb.checked_mul(1024)
                    .filter(|b| usize::try_from(*b).is_ok())
                    .ok_or_else(|| PlanError::MaxBody {
                        key: "max_body_kb",
                        value: kb,
                        source_desc: source_desc("max_body_kb"),
                    })?
            }
        };
        let errors_only = cfg
            .str("errors_only")
            .and_then(crate::config::parse_bool)
            .unwrap_or(false);
        let exclude_paths = cfg
            .str("exclude_paths")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let compression = match cfg.str("compression").map(str::trim) {
            Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        };
        let encrypt_to = cfg
            .str("encrypt_to")
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                Recipients::parse(&[v]).map_err(|e| PlanError::EncryptTo {
                    error: e.to_string(),
                    source_desc: source_desc("encrypt_to"),
                })
            })
            .transpose()?
            .map(Arc::new);
        let retain = cfg.duration("retain");
        if let Some(r) = retain
            && r < std::time::Duration::from_secs(1)
        {
            return Err(PlanError::Retain {
                value: cfg.str("retain").unwrap_or_default().to_owned(),
                source_desc: source_desc("retain"),
            });
        }
        let mut redaction = RedactionPolicy {
            enabled: !flags.no_redact,
            ..RedactionPolicy::default()
        };
        redaction
            .header_names
            .extend(flags.redact_headers.iter().map(|h| h.to_ascii_lowercase()));
        redaction
            .body_keys
            .extend(flags.redact_keys.iter().map(|k| k.to_ascii_lowercase()));
        redaction.add_configured(
            cfg.str("redact_keys").unwrap_or_default(),
            cfg.str("redact_redis_keys").unwrap_or_default(),
            &flags.redact_redis_keys,
        );
        let text = |key: &str, default: &str| cfg.str(key).unwrap_or(default).to_owned();
        let build = BuildOptions {
            service: cfg.str("service").map(str::to_owned),
            env: text("env", "local"),
            git_sha: cfg
                .str("git_sha")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            redaction,
            sample_rate,
            errors_only,
            recording: None,
        };
        let out = PathBuf::from(text("dir", "./cassettes"));
        Ok(Self {
            s3: S3Plan::from_config(cfg, &out)?,
            out,
            max_body,
            compression,
            encrypt_to,
            filters: Filters {
                sample_rate,
                errors_only,
                exclude_paths,
            },
            retain,
            build,
            quiet: false,
            ebpf_log: EbpfLogLevel::resolve(flags.ebpf_log, cfg.str("log")),
            owner: None,
            owner_unspecified: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Locations;

    /// A project file, a variable and a flag for three different keys, and one key set by all
    /// three: the flag wins, then the variable, then the file, then the default.
    #[test]
    fn precedence_flags_env_file_default() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("timetracer.toml");
        std::fs::write(
            &file,
            "service = \"from-file\"\nsample_rate = 0.5\nenv = \"staging\"\nmax_body_kb = 4\n\
             exclude_paths = [\"/health\", \"/admin/*\"]\ndir = \"rec\"\n",
        )
        .unwrap();
        let loc = Locations {
            project: Some(file.clone()),
            user: None,
        };
        let env = |k: &str| match k {
            "TIMETRACER_SAMPLE_RATE" => Some("0.25".to_owned()),
            "TIMETRACER_ENV" => Some("prod".to_owned()),
            "TIMETRACER_ERRORS_ONLY" => Some("yes".to_owned()),
            _ => None,
        };
        let mut cfg = Config::load_from(&loc, env).unwrap();
        let plan = RecordPlan::from_config(&cfg, &FlagOnly::default()).unwrap();
        assert_eq!(plan.build.service.as_deref(), Some("from-file"));
        assert_eq!(plan.build.env, "prod");
        assert!((plan.filters.sample_rate - 0.25).abs() < f64::EPSILON);
        assert!(plan.filters.errors_only);
        assert_eq!(plan.max_body, 4096);
        assert_eq!(plan.filters.exclude_paths, ["/health", "/admin/*"]);
        assert_eq!(plan.out, d.path().join("rec"));
        assert_eq!(plan.compression, Compression::None);

        cfg.set_flag("sample_rate", "--sample-rate", "1".to_owned());
        cfg.set_flag("dir", "--out", "/x".to_owned());
        let flags = FlagOnly {
            max_body: Some(100),
            ..FlagOnly::default()
        };
        let plan = RecordPlan::from_config(&cfg, &flags).unwrap();
        assert!((plan.filters.sample_rate - 1.0).abs() < f64::EPSILON);
        assert_eq!(plan.out, PathBuf::from("/x"));
        assert_eq!(plan.max_body, 100);
        assert_eq!(plan.build.max_body, 100);
    }

    /// The S3 keys: a bucket turns uploads on; the backlog sits in the cassette directory
    /// unless placed elsewhere; limits from flags over variables over the file.
    #[test]
    fn s3_plan() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("timetracer.toml");
        std::fs::write(
            &file,
            "dir = \"rec\"\n[s3]\nbacklog_max = \"2MiB\"\nbacklog_max_age = \"2h\"\n",
        )
        .unwrap();
        let loc = Locations {
            project: Some(file.clone()),
            user: None,
        };
        let cfg = Config::load_from(&loc, |_| None).unwrap();
        assert_eq!(
            RecordPlan::from_config(&cfg, &FlagOnly::default())
                .unwrap()
                .s3,
            None
        );
        let env = |k: &str| match k {
            "TIMETRACER_S3_BUCKET" => Some("b".to_owned()),
            "TIMETRACER_S3_BACKLOG_MAX" => Some("3MiB".to_owned()),
            _ => None,
        };
        let mut cfg = Config::load_from(&loc, env).unwrap();
        let s3 = RecordPlan::from_config(&cfg, &FlagOnly::default())
            .unwrap()
            .s3
            .unwrap();
        assert_eq!(s3.settings.bucket, "b");
        assert_eq!(s3.settings.prefix, "cassettes");
        assert_eq!(s3.backlog_dir, d.path().join("rec").join(".s3-backlog"));
        assert_eq!(s3.limits.max_bytes, 3 << 20);
        assert_eq!(s3.limits.max_age, std::time::Duration::from_secs(7200));
        assert_eq!(s3.uploads, 4);
        cfg.set_flag("s3.backlog_max", "--s3-backlog-max", "10KiB".to_owned());
        cfg.set_flag("s3.backlog_dir", "--s3-backlog-dir", "/var/b".to_owned());
        cfg.set_flag("s3.uploads", "--x", "0".to_owned());
        let e = RecordPlan::from_config(&cfg, &FlagOnly::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`s3.uploads`") && e.contains("1 to 64"), "{e}");
        cfg.set_flag("s3.uploads", "--x", "8".to_owned());
        let s3 = RecordPlan::from_config(&cfg, &FlagOnly::default())
            .unwrap()
            .s3
            .unwrap();
        assert_eq!(s3.limits.max_bytes, 10 << 10);
        assert_eq!(s3.backlog_dir, PathBuf::from("/var/b"));
        assert_eq!(s3.uploads, 8);
    }

    #[test]
    fn defaults_without_any_setting() {
        let cfg = Config::load_from(&Locations::default(), |_| None).unwrap();
        let plan = RecordPlan::from_config(&cfg, &FlagOnly::default()).unwrap();
        assert_eq!(plan.out, PathBuf::from("./cassettes"));
        assert_eq!(plan.max_body, 1 << 20);
        assert_eq!(plan.filters, Filters::default());
        assert_eq!(plan.build, BuildOptions::default());
    }

    #[test]
    fn out_of_range_sample_rate_names_its_source() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("timetracer.toml");
        std::fs::write(&file, "sample_rate = 2\n").unwrap();
        let loc = Locations {
            project: Some(file.clone()),
            user: None,
        };
        let cfg = Config::load_from(&loc, |_| None).unwrap();
        let e = RecordPlan::from_config(&cfg, &FlagOnly::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("`sample_rate`"),
            "{e}"
        );
    }
}
