//! [`RecordPlan`]: validated recording options, resolved from the effective [`Config`]
//! (command-line flags, `TIMETRACER_*` variables, `timetracer.toml`, defaults — in that order of
//! precedence; the front end applies its flags with [`Config::set_flag`]).
use std::path::PathBuf;

use crate::capture::EbpfLogLevel;
use crate::cassette::{BuildOptions, Compression};
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
    pub filters: Filters,
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
            service: text("service", "timetracer-service"),
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
        Ok(Self {
            out: PathBuf::from(text("dir", "./cassettes")),
            max_body,
            compression,
            filters: Filters {
                sample_rate,
                errors_only,
                exclude_paths,
            },
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
        assert_eq!(plan.build.service, "from-file");
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
