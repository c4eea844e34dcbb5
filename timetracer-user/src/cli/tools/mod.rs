//! `timetracer`: the unprivileged cassette tools (one module per subcommand).
//!
//! Exit codes (also in `docs/cli.md`): 0 success / no differences; 1 `diff` found differences,
//! `validate` found invalid cassettes; 2 `diff` found a regression, or the command line was
//! wrong; 3 some files could not be read (each named on stderr) but the rest was processed;
//! 4 the command failed.
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

use crate::cassette::{self, Cassette};
use crate::config::Config;

pub mod clean;
pub mod config_cmd;
pub mod dashboard;
pub mod diff;
pub mod export;
pub mod import;
pub mod list;
pub mod s3_cmd;
pub mod serve;
pub mod stats;
pub mod timeline;
pub mod validate;
pub mod watch;

/// Process exit status of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    Differences = 1,
    Regression = 2,
    Partial = 3,
    Failure = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

const ABOUT: &str = "Inspect, search, compare and move timetracer cassettes (ours and the Python timetracer's 1.0 files; .json, .json.gz, .json.zst).";

const EXAMPLES: &str = "\
Examples:
  timetracer list --dir ./cassettes -n 20
  timetracer search --status 0 --errors --endpoint '/users/*'
  timetracer watch --errors                 # each new failed request as it is written
  timetracer show cassettes/2026-11-22/GET__users_42__e92ca5c8.json --events
  timetracer diff --a before.json --b after.json --threshold 25
  timetracer stats --group-by dependency
  timetracer export --to har cassettes/ -o requests.har
  timetracer config
  timetracer dashboard --dir ./cassettes --open
  timetracer serve --dir ./cassettes

Settings come from flags, TIMETRACER_* variables and timetracer.toml (see `timetracer config`).
Exit codes: 0 ok, 1 differences/invalid, 2 regression or usage error, 3 some files unreadable, 4 failure.";

/// Command line of `timetracer`.
#[derive(Debug, Parser)]
#[command(name = "timetracer", version, about = ABOUT, after_help = EXAMPLES, term_width = 100)]
pub struct Cli {
    /// Coloured output: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    pub color: Option<ColorChoice>,
    /// Identity file (age) that opens encrypted cassettes (`*.age`); also
    /// TIMETRACER_IDENTITY. Make one with `timetracer keygen`.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    List(list::ListArgs),
    Show(list::ShowArgs),
    Search(list::SearchArgs),
    Index(list::IndexArgs),
    Diff(diff::DiffArgs),
    Validate(validate::ValidateArgs),
    Clean(clean::CleanArgs),
    Stats(stats::StatsArgs),
    Export(export::ExportArgs),
    Import(import::ImportArgs),
    Config(config_cmd::ConfigArgs),
    S3(s3_cmd::S3Args),
    Timeline(timeline::TimelineArgs),
    Dashboard(dashboard::DashboardArgs),
    Serve(serve::ServeArgs),
    Watch(watch::WatchArgs),
    Keygen(KeygenArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

/// Make an age identity for encrypted cassettes: writes the secret key to FILE (0600) and
/// prints the recipient to pass to `timetracer-agent … --encrypt-to`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer keygen -o ~/.config/timetracer/key.txt
  sudo timetracer-agent record --encrypt-to age1… -- uvicorn app:app
  timetracer --identity ~/.config/timetracer/key.txt list")]
pub struct KeygenArgs {
    /// Where to write the identity (never overwritten).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `timetracer keygen`.
fn keygen(a: &KeygenArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if a.out.exists() {
        anyhow::bail!(
            "{} exists: not overwriting an identity (pick another path, or delete it first)",
            a.out.display()
        );
    }
    let (text, recipient) = cassette::crypt::generate();
    crate::atomic_file::write_with_mode(&a.out, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!("timetracer: identity written to {} (0600)", a.out.display());
    writeln!(out, "{recipient}")?;
    Ok(Exit::Ok)
}

/// Print a shell completion script.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer completions bash > ~/.local/share/bash-completion/completions/timetracer
  timetracer completions zsh > ~/.zfunc/_timetracer
  timetracer completions fish > ~/.config/fish/completions/timetracer.fish")]
pub struct CompletionsArgs {
    /// Shell to generate for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff), or write one page per command into a directory.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer man | man -l -
  timetracer man --out-dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// Write timetracer.1 and timetracer-COMMAND.1 files here instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `--namespace` / `--pod`: only cassettes recorded in these pods (node mode's `session.k8s`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct K8sFilter {
    /// Only cassettes recorded in this Kubernetes namespace (`session.k8s.namespace`).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only cassettes recorded in this pod (`session.k8s.pod`): a name, or a glob (`api-*`).
    #[arg(long, value_name = "POD|GLOB")]
    pub pod: Option<String>,
}

impl K8sFilter {
    /// Whether a filter is given.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.namespace.is_some() || self.pod.is_some()
    }

    /// ` (namespace shop, pod api-*)` for messages; empty without a filter.
    #[must_use]
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [("namespace", &self.namespace), ("pod", &self.pod)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

/// Shared state of one invocation.
pub struct Ctx {
    pub cfg: Config,
    /// Colour escapes allowed on stdout.
    pub color: bool,
    /// Some file could not be read (exit 3 unless something worse).
    pub partial: bool,
}

impl Ctx {
    /// The cassette directory: `--dir`, else `dir` from env/config, else `./cassettes`.
    #[must_use]
    pub fn dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.cfg.str("dir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./cassettes"))
    }

    /// Report a per-file problem on stderr and remember it for the exit code.
    pub fn file_error(&mut self, path: &Path, msg: &str) {
        let shown = path.display().to_string();
        let msg = msg.strip_prefix(&format!("{shown}: ")).unwrap_or(msg);
        eprintln!("timetracer: {shown}: {msg}");
        self.partial = true;
    }

    /// Wrap `s` in an SGR colour when colour is on.
    #[must_use]
    pub fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

/// Reads every cassette under the given files/directories; unreadable files are reported
/// through `ctx` and skipped. Files given explicitly are read whatever their name.
pub fn read_inputs(ctx: &mut Ctx, inputs: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Cassette)>> {
    let mut out = Vec::new();
    for p in expand_inputs(inputs)? {
        match cassette::read(&p) {
            Ok(c) => out.push((p, c)),
            Err(cassette::Error::MissingSchema { .. }) if !inputs.contains(&p) => {}
            Err(e) => ctx.file_error(
                &p,
                &format!(
                    "{} (skipped: repair or delete the file; `timetracer validate FILE` shows details)",
                    crate::index::error_chain(&e)
                ),
            ),
        }
    }
    Ok(out)
}

/// Files named, plus every cassette candidate under directories named.
pub fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in inputs {
        if i.is_dir() {
            let (files, errs) = crate::index::walk(i)
                .with_context(|| format!("cannot read directory {}", i.display()))?;
            for (p, e) in errs {
                eprintln!("timetracer: {}: {e}", p.display());
            }
            out.extend(files.into_iter().map(|f| i.join(f.rel)));
        } else if i.exists() {
            out.push(i.clone());
        } else {
            anyhow::bail!(
                "{} does not exist (pass a cassette file or a directory of cassettes)",
                i.display()
            );
        }
    }
    Ok(out)
}

/// Parse `30d`, `12h`, `90m`, `45s`, `2w` into seconds.
pub fn parse_age(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| {
        anyhow::anyhow!(
            "{s:?} is not a duration: use a number and a unit, e.g. 30d, 12h, 90m, 45s, 2w"
        )
    })?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => anyhow::bail!("{s:?}: unknown unit {unit:?}: use s, m, h, d or w (e.g. 30d)"),
    };
    Ok(n * mult)
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `2026-11-22T10:00:00Z`, `2026-11-22` (UTC midnight), or an age like `2h` (= 2 hours ago).
pub fn parse_time(s: &str) -> anyhow::Result<f64> {
    if let Some(t) = crate::index::summary::parse_rfc3339(s) {
        return Ok(t);
    }
    let date = if s.len() == 10 {
        crate::index::summary::parse_rfc3339(&format!("{s}T00:00:00Z"))
    } else {
        None
    };
    if let Some(t) = date {
        return Ok(t);
    }
    parse_age(s).map(|age| now_unix() - age).map_err(|_| {
        anyhow::anyhow!(
            "{s:?} is not a time: use RFC 3339 (2026-11-22T10:00:00Z), a date (2026-11-22) or an age (2h = two hours ago)"
        )
    })
}

fn run_command(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if let Some(id) = &cli.identity {
        cassette::crypt::set_identity_file(id);
    }
    let cfg = Config::load()?;
    let color_word = match cli.color {
        Some(ColorChoice::Always) => "always",
        Some(ColorChoice::Never) => "never",
        Some(ColorChoice::Auto) => "auto",
        None => cfg.str("color").unwrap_or("auto"),
    };
    let color = match color_word {
        "always" => true,
        "never" => false,
        _ => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let mut ctx = Ctx {
        cfg,
        color,
        partial: false,
    };
    let code = match cli.command {
        Command::List(a) => list::list(&mut ctx, &a, out)?,
        Command::Keygen(a) => keygen(&a, out)?,
        Command::Show(a) => list::show(&mut ctx, &a, out)?,
        Command::Search(a) => list::search(&mut ctx, &a, out)?,
        Command::Index(a) => list::index(&mut ctx, &a, out)?,
        Command::Diff(a) => diff::run(&mut ctx, &a, out)?,
        Command::Validate(a) => validate::run(&mut ctx, &a, out)?,
        Command::Clean(a) => clean::run(&mut ctx, &a, out)?,
        Command::Stats(a) => stats::run(&mut ctx, &a, out)?,
        Command::Export(a) => export::run(&mut ctx, &a, out)?,
        Command::Import(a) => import::run(&mut ctx, &a, out)?,
        Command::Config(a) => config_cmd::run(&mut ctx, &a, out)?,
        Command::S3(a) => s3_cmd::run(&mut ctx, &a, out)?,
        Command::Timeline(a) => timeline::run(&mut ctx, &a, out)?,
        Command::Dashboard(a) => dashboard::run(&mut ctx, &a, out)?,
        Command::Serve(a) => serve::run(&mut ctx, &a, out)?,
        Command::Watch(a) => watch::run(&mut ctx, &a, out)?,
        Command::Completions(a) => {
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "timetracer", out);
            Exit::Ok
        }
        Command::Man(a) => {
            let cmd = Cli::command();
            match a.out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    clap_mangen::generate_to(cmd, &dir)
                        .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
                    writeln!(out, "man pages written to {}", dir.display())?;
                }
                None => clap_mangen::Man::new(cmd).render(out)?,
            }
            Exit::Ok
        }
    };
    out.flush()?;
    Ok(if ctx.partial {
        code.max(Exit::Partial)
    } else {
        code
    })
}

/// Entry point of the `timetracer` binary.
#[must_use]
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match run_command(cli, &mut out) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            let _ = out.flush();
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("timetracer: error: {e:#}");
            std::process::ExitCode::from(Exit::Failure as u8)
        }
    }
}
