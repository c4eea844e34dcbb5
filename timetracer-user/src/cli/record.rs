//! `attach`, `top` and `record`: flags → [`Config`] → [`RecordPlan`] → a target and sinks →
//! [`crate::record`]; signals; the exit summary.
use std::{
    ffi::OsString,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc,
    },
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::Config,
    record::{
        self, FlagOnly, Outputs, RecordPlan, Recording, Summary,
        sink::Chain,
        target::{Cgroups, Launched, Pid, Target},
    },
};

/// What `attach` and `top` trace.
#[derive(Debug, Args, Clone, Default)]
pub struct Selection {
    /// Process id to trace (its child processes are traced too).
    #[arg(long, required_unless_present = "cgroup", conflicts_with = "cgroup")]
    pub pid: Option<u32>,
    /// Trace every process in this cgroup v2 directory and the cgroups below it, including
    /// processes that start there later (from their first syscall after exec), e.g. a
    /// container's `/sys/fs/cgroup/…/cri-containerd-<id>.scope`. Repeatable; stops when all
    /// are gone.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Vec<PathBuf>,
}

impl Selection {
    fn target(&self) -> Result<Box<dyn Target + Send>, record::Error> {
        Ok(match self.pid {
            Some(pid) => Box::new(Pid::new(pid)?),
            None => Box::new(Cgroups::new(self.cgroup.clone())?),
        })
    }
}

/// Options shared by `attach`, `top` and `record`. Each one with a configuration key overrides
/// it (flag > `TIMETRACER_*` variable > `timetracer.toml` > default; `timetracer config` shows
/// the rest of the agent's settings and where they come from).
#[derive(Debug, Args, Clone, Default)]
pub struct RecordArgs {
    /// Directory cassettes are written to [key `dir`, TIMETRACER_DIR; default ./cassettes].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bytes of each message body kept (the rest is counted as truncated)
    /// [key `max_body_kb` in KiB, TIMETRACER_MAX_BODY_KB; default 1 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<u64>,
    /// Fraction of requests recorded, 0.0–1.0 [key `sample_rate`, TIMETRACER_SAMPLE_RATE].
    #[arg(long)]
    pub sample_rate: Option<f64>,
    /// Write only requests that failed (status >= 400, no response, or a traceback)
    /// [key `errors_only`, TIMETRACER_ERRORS_ONLY].
    #[arg(long, value_parser = flag_bool, default_missing_value = "true", num_args = 0..=1)]
    pub errors_only: Option<bool>,
    /// Do not record requests to this path (exact, or prefix followed by `/`; `/admin/*` also
    /// works). Repeatable; replaces the configured list [key `exclude_paths`,
    /// TIMETRACER_EXCLUDE_PATHS, comma-separated].
    #[arg(long = "exclude-path", value_name = "PATH")]
    pub exclude_paths: Vec<String>,
    /// Compress cassettes [key `compression`, TIMETRACER_COMPRESSION].
    #[arg(long, value_parser = ["zstd", "none"])]
    pub compress: Option<String>,
    /// Encrypt every cassette for this age recipient (`age1…`, or a file of them, one per
    /// line; repeatable): files become `….json.age` (`.json.zst.age` with `--compress zstd`),
    /// read with `--identity FILE` [key `encrypt_to`, TIMETRACER_ENCRYPT_TO, comma-separated].
    #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
    pub encrypt_to: Vec<String>,
    /// Delete cassettes older than this while recording, at start and then periodically
    /// (`30d`, `12h`, `90m`; by modification time; only files that are cassettes, under the
    /// directory; objects already uploaded to S3 stay: use a bucket lifecycle rule)
    /// [key `retain`, TIMETRACER_RETAIN; default: keep everything].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub retain: Option<String>,
    /// Do not redact secrets (headers such as Authorization, password/token fields).
    #[arg(long)]
    pub no_redact: bool,
    /// Extra header names to redact (repeatable).
    #[arg(long = "redact-header", value_name = "NAME")]
    pub redact_headers: Vec<String>,
    /// Extra keys to redact, matched on the whole key, any case (repeatable): body/query
    /// fields, SQL columns and placeholders bound to them, MongoDB document fields, Redis hash
    /// fields [key `redact_keys`, TIMETRACER_REDACT_KEYS, added to].
    #[arg(long = "redact-key", value_name = "KEY")]
    pub redact_keys: Vec<String>,
    /// Extra Redis key glob patterns whose values are redacted (`*`, `?`, `[a-z]`, any
    /// case; repeatable; the defaults `*session*`, `*token*`, … stay) [key
    /// `redact_redis_keys`, TIMETRACER_REDACT_REDIS_KEYS, added to].
    #[arg(long = "redact-redis-key", value_name = "GLOB")]
    pub redact_redis_keys: Vec<String>,
    /// Service name written in each cassette [key `service`, TIMETRACER_SERVICE].
    #[arg(long)]
    pub service: Option<String>,
    /// Environment name written in each cassette [key `env`, TIMETRACER_ENV].
    #[arg(long)]
    pub env: Option<String>,
    /// Kernel-side diagnostics (why a socket or TLS call was skipped): off, error, warn, info,
    /// debug, trace. Also a `timetracer::ebpf=LEVEL` directive in TIMETRACER_LOG. Default off.
    #[arg(long, env = "TIMETRACER_EBPF_LOG", value_name = "LEVEL")]
    pub ebpf_log: Option<crate::capture::EbpfLogLevel>,
    /// Run the app as USER[:GROUP] (a name or numeric id), who also owns the cassettes,
    /// their directories and the index. Default: the user who ran `sudo` (`SUDO_UID`/
    /// `SUDO_GID`). The agent never runs the app as root unless told: `--user root`.
    #[arg(long, env = "TIMETRACER_USER", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Uploads to S3. Each flag overrides its configuration key (flag > `TIMETRACER_S3_*` >
/// `timetracer.toml` `[s3]` > default).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "S3 upload")]
pub struct S3Args {
    /// Upload every written cassette to this bucket [key `s3.bucket`, TIMETRACER_S3_BUCKET].
    /// Uploads never slow the recording: while S3 is slow or down, cassettes wait in the
    /// backlog and are uploaded, oldest first, when it answers again.
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket [key `s3.prefix`, TIMETRACER_S3_PREFIX; default cassettes].
    #[arg(long, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// Endpoint URL of an S3-compatible server, e.g. http://127.0.0.1:8333
    /// [key `s3.endpoint`, TIMETRACER_S3_ENDPOINT].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Where cassettes wait for upload (0700; a later run with the same directory uploads what
    /// is left) [key `s3.backlog_dir`, TIMETRACER_S3_BACKLOG_DIR; default
    /// `<cassette dir>/.s3-backlog`].
    #[arg(long, value_name = "DIR")]
    pub s3_backlog_dir: Option<PathBuf>,
    /// Most bytes waiting for upload; above it the oldest uploads are dropped and counted
    /// (`s3_dropped`; the cassettes stay on disk) [key `s3.backlog_max`,
    /// TIMETRACER_S3_BACKLOG_MAX; default 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub s3_backlog_max: Option<String>,
    /// Longest wait for upload; older cassettes' uploads are dropped and counted [key
    /// `s3.backlog_max_age`, TIMETRACER_S3_BACKLOG_MAX_AGE; default 24h].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub s3_backlog_max_age: Option<String>,
}

fn size_arg(s: &str) -> Result<String, String> {
    crate::config::parse_size(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("expected a size such as 1GiB, 500MiB, 64KiB or bytes, got {s:?}"))
}

fn duration_arg(s: &str) -> Result<String, String> {
    crate::config::parse_duration(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("expected a duration such as 24h, 30m or 90s, got {s:?}"))
}

/// `--errors-only[=BOOL]`, with the configuration's boolean words.
fn flag_bool(s: &str) -> Result<bool, String> {
    crate::config::parse_bool(s)
        .ok_or_else(|| format!("expected true/false (or 1/0, yes/no, on/off), got {s:?}"))
}

impl RecordArgs {
    /// The plan: these flags over `cfg` (variables, files, defaults).
    pub(super) fn plan(&self, mut cfg: Config) -> anyhow::Result<RecordPlan> {
        let mut flag = |key: &'static str, name: &str, value: Option<String>| {
            if let Some(v) = value {
                cfg.set_flag(key, name, v);
            }
        };
        flag(
            "dir",
            "--out",
            self.out.as_ref().map(|p| p.display().to_string()),
        );
        flag(
            "sample_rate",
            "--sample-rate",
            self.sample_rate.map(|r| r.to_string()),
        );
        flag(
            "errors_only",
            "--errors-only",
            self.errors_only.map(|b| b.to_string()),
        );
        flag(
            "exclude_paths",
            "--exclude-path",
            (!self.exclude_paths.is_empty()).then(|| self.exclude_paths.join(",")),
        );
        flag("compression", "--compress", self.compress.clone());
        flag(
            "encrypt_to",
            "--encrypt-to",
            (!self.encrypt_to.is_empty()).then(|| self.encrypt_to.join(",")),
        );
        flag("retain", "--retain", self.retain.clone());
        flag("service", "--service", self.service.clone());
        flag("env", "--env", self.env.clone());
        let s3 = &self.s3;
        flag("s3.bucket", "--s3-bucket", s3.s3_bucket.clone());
        flag("s3.prefix", "--s3-prefix", s3.s3_prefix.clone());
        flag("s3.endpoint", "--s3-endpoint", s3.s3_endpoint.clone());
        flag(
            "s3.backlog_dir",
            "--s3-backlog-dir",
            s3.s3_backlog_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag(
            "s3.backlog_max",
            "--s3-backlog-max",
            s3.s3_backlog_max.clone(),
        );
        flag(
            "s3.backlog_max_age",
            "--s3-backlog-max-age",
            s3.s3_backlog_max_age.clone(),
        );
        let only = FlagOnly {
            max_body: self.max_body,
            no_redact: self.no_redact,
            redact_headers: self.redact_headers.clone(),
            redact_keys: self.redact_keys.clone(),
            redact_redis_keys: self.redact_redis_keys.clone(),
            ebpf_log: self.ebpf_log,
        };
        let mut plan = RecordPlan::from_config(&cfg, &only)?;
        match crate::privilege::resolve(self.user.as_deref(), |k| std::env::var(k).ok()) {
            Ok(owner) => plan.owner = owner,
            Err(crate::privilege::Error::ImplicitRoot) => plan.owner_unspecified = true,
            Err(e) => return Err(e.into()),
        }
        Ok(plan)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let child = CHILD_PID.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

/// Set by SIGINT / SIGTERM: the recording flushes and stops.
pub(super) fn stop_flag() -> &'static AtomicBool {
    &STOP
}

pub(super) fn install_signal_handlers() -> anyhow::Result<()> {
    super::on_stop_signals(on_signal)
}

/// The filters, cassette files and index, S3 when a bucket is configured, and the live view.
/// A configured bucket that cannot be used stops the agent before it traces anything.
fn sinks(
    plan: &RecordPlan,
    save: bool,
    live: Option<mpsc::SyncSender<crate::live::LiveUpdate>>,
) -> anyhow::Result<Chain> {
    let s3 = match &plan.s3 {
        Some(s3) if save => Some(spool(plan, s3)?),
        _ => None,
    };
    Ok(Chain::standard(plan, Outputs { save, s3, live }))
}

/// The S3 client and the backlog (what a previous run left is uploaded first), made by the
/// cassettes' owner like every file the recording writes.
pub(super) fn spool(
    plan: &RecordPlan,
    s3: &record::S3Plan,
) -> anyhow::Result<crate::s3::spool::Spool> {
    let uploader = crate::s3::Uploader::for_spool(s3.settings.clone())?;
    let open = || crate::s3::backlog::Backlog::open(&s3.backlog_dir, s3.limits);
    let backlog = match &plan.owner {
        Some(owner) => owner.with_fs(open),
        None => open(),
    }?;
    Ok(crate::s3::spool::Spool::new(uploader, backlog, s3.uploads))
}

pub(super) fn print_summary(summary: &Summary) {
    for line in summary.lines() {
        crate::say!("{line}");
    }
}

pub(super) fn attach(sel: &Selection, plan: &RecordPlan) -> anyhow::Result<ExitCode> {
    let mut target = sel.target()?;
    let what = target.describe();
    install_signal_handlers()?;
    let summary = record::run(plan, &mut *target, sinks(plan, true, None)?, &STOP)?;
    if target.finished() {
        crate::say!("timetracer-agent: {what} is gone");
    }
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

/// `top` and `attach --tui`: tracing starts here (errors are reported before the UI takes the
/// terminal), the recording runs on a worker thread and feeds the terminal UI, which owns the
/// terminal on this thread until the user quits (or a signal arrives).
pub(super) fn top(sel: &Selection, mut plan: RecordPlan, save: bool) -> anyhow::Result<ExitCode> {
    let mut target = sel.target()?;
    plan.quiet = true;
    let (tx, rx) = mpsc::sync_channel(4096);
    let recording = Recording::start(&plan, &mut *target, sinks(&plan, save, Some(tx))?)?;
    install_signal_handlers()?;
    let worker = std::thread::Builder::new()
        .name("tt-session".into())
        .spawn(move || recording.run(&mut *target, &STOP))?;
    let opts = crate::tui::TuiOptions {
        out_dir: plan.out.clone(),
        save_enabled: save,
        compression: plan.compression,
        encrypt_to: plan.encrypt_to.clone(),
        owner: plan.owner.clone(),
    };
    let ui = crate::tui::run(rx, opts, &STOP);
    STOP.store(true, Ordering::SeqCst);
    let summary = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the recording thread panicked"))?;
    ui.context("the terminal UI failed")?;
    print_summary(&summary?);
    Ok(ExitCode::SUCCESS)
}

/// `record -- CMD`: exits with the command's exit code.
pub(super) fn launch(cmd: &[OsString], plan: &RecordPlan) -> anyhow::Result<ExitCode> {
    if plan.owner_unspecified {
        return Err(crate::privilege::Error::ImplicitRoot.into());
    }
    let mut target = Launched::spawn(cmd, plan.owner.as_ref())?;
    CHILD_PID.store(target.pid() as i32, Ordering::SeqCst);
    install_signal_handlers()?;
    let summary = record::run(plan, &mut target, sinks(plan, true, None)?, &STOP)?;
    let status = target.wait().context("waiting for the command")?;
    print_summary(&summary);
    Ok(exit_code_of(status))
}

fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::agent::{Cli, Command};
    use crate::config::{Locations, Source};
    use clap::Parser as _;

    /// Flags override the file and the variables; what no flag sets comes from them.
    #[test]
    fn flags_over_config() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("timetracer.toml");
        std::fs::write(
            &file,
            "service = \"svc\"\nsample_rate = 0.5\nerrors_only = true\ncompression = \"zstd\"\n",
        )
        .unwrap();
        let loc = Locations {
            project: Some(file),
            user: None,
        };
        let env = |k: &str| (k == "TIMETRACER_ENV").then(|| "ci".to_owned());
        let cfg = Config::load_from(&loc, env).unwrap();
        let Command::Record { opts, .. } = Cli::try_parse_from([
            "timetracer-agent",
            "record",
            "--errors-only=false",
            "--exclude-path",
            "/a",
            "--exclude-path",
            "/b",
            "--max-body",
            "10",
            "--",
            "x",
        ])
        .unwrap()
        .command
        else {
            panic!("record");
        };
        let plan = opts.plan(cfg.clone()).unwrap();
        assert_eq!(plan.build.service.as_deref(), Some("svc"));
        assert_eq!(plan.build.env, "ci");
        assert!((plan.filters.sample_rate - 0.5).abs() < f64::EPSILON);
        assert!(!plan.filters.errors_only);
        assert_eq!(plan.filters.exclude_paths, ["/a", "/b"]);
        assert_eq!(plan.max_body, 10);
        assert_eq!(plan.compression, crate::cassette::Compression::Zstd);
        assert_eq!(
            cfg.get("env").unwrap().source,
            Source::Env("TIMETRACER_ENV")
        );
        let plan = RecordArgs {
            sample_rate: Some(2.0),
            ..RecordArgs::default()
        }
        .plan(cfg)
        .unwrap_err()
        .to_string();
        assert!(
            plan.contains("flag --sample-rate") && plan.contains("`sample_rate`"),
            "{plan}"
        );
    }
}
