//! `timetracer s3 upload|download|list|sync`.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Ctx, Exit, expand_inputs};
use crate::s3::{Settings, Uploader};

/// Copy cassettes to and from S3-compatible storage.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer s3 sync up --dir ./cassettes --bucket my-bucket
  timetracer s3 list --bucket my-bucket -n 50
  timetracer s3 download 2026-11-22/GET__users_42__e92ca5c8.json -o ./x.json
  TIMETRACER_S3_ENDPOINT=http://127.0.0.1:9000 timetracer s3 upload cassettes/2026-11-22

Bucket, prefix, region and endpoint come from the flags, TIMETRACER_S3_* or timetracer.toml;
credentials from the standard AWS chain (AWS_ACCESS_KEY_ID/..., ~/.aws/credentials, instance
metadata). Keys are PREFIX/<path relative to the cassette directory>.")]
pub struct S3Args {
    /// Bucket [default: s3.bucket / TIMETRACER_S3_BUCKET].
    #[arg(short, long, global = true)]
    pub bucket: Option<String>,
    /// Key prefix [default: s3.prefix / TIMETRACER_S3_PREFIX, else cassettes].
    #[arg(short, long, global = true)]
    pub prefix: Option<String>,
    /// Region [default: s3.region / TIMETRACER_S3_REGION, AWS_REGION, us-east-1].
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible server [default: s3.endpoint / TIMETRACER_S3_ENDPOINT].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    #[command(subcommand)]
    pub action: S3Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum S3Action {
    /// Upload cassette files or directories.
    #[command(
        after_help = "Examples:\n  timetracer s3 upload cassettes/2026-11-22 --bucket my-bucket\n  timetracer s3 upload cassettes/2026-11-22/GET__users_42__e92ca5c8.json"
    )]
    Upload {
        /// Files or directories; keys are relative to --dir when inside it, else the file name.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Cassette directory keys are relative to [default: TIMETRACER_DIR, else ./cassettes].
        #[arg(short, long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Download one object.
    #[command(
        after_help = "Examples:\n  timetracer s3 download 2026-11-22/GET__users_42__e92ca5c8.json\n  timetracer s3 download 2026-11-22/GET__users_42__e92ca5c8.json -o /tmp/x.json"
    )]
    Download {
        /// Key below the prefix.
        key: String,
        /// Destination file [default: the key's file name in the current directory].
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List objects below the prefix, newest key first.
    #[command(
        after_help = "Examples:\n  timetracer s3 list\n  timetracer s3 list -n 0 --json --prefix staging/cassettes"
    )]
    List {
        /// At most this many (0 = all).
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line.
        #[arg(short, long)]
        json: bool,
    },
    /// Make the bucket (up) or the directory (down) have every cassette of the other side.
    #[command(
        after_help = "Examples:\n  timetracer s3 sync up --dir ./cassettes\n  timetracer s3 sync down --dir ./from-prod --dry-run\n\nA file is copied when the other side lacks it or has another size."
    )]
    Sync {
        /// up: local -> bucket; down: bucket -> local.
        #[arg(value_parser = ["up", "down"])]
        direction: String,
        /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
        #[arg(short, long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only print what would be copied.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
}

fn settings(ctx: &Ctx, a: &S3Args) -> anyhow::Result<Settings> {
    let pick = |flag: &Option<String>, key: &str| {
        flag.clone().or_else(|| ctx.cfg.str(key).map(str::to_owned))
    };
    let bucket = pick(&a.bucket, "s3.bucket").ok_or(crate::s3::Error::NoBucket)?;
    Ok(Settings {
        bucket,
        prefix: pick(&a.prefix, "s3.prefix").unwrap_or_else(|| "cassettes".to_owned()),
        region: pick(&a.region, "s3.region"),
        endpoint: pick(&a.endpoint, "s3.endpoint"),
    })
}

fn key_for(dir: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(dir)
        .ok()
        .filter(|r| !r.as_os_str().is_empty());
    match rel {
        Some(r) => r
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

fn upload(
    ctx: &mut Ctx,
    up: &Uploader,
    pairs: &[(String, PathBuf)],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let results = up.put_files(pairs, 8);
    let (mut n, mut bytes) = (0usize, 0u64);
    for ((key, file), r) in pairs.iter().zip(results) {
        match r {
            Ok(b) => {
                writeln!(
                    out,
                    "uploaded {} -> s3://{}/{}",
                    file.display(),
                    up.settings().bucket,
                    join(&up.settings().prefix, key)
                )?;
                n += 1;
                bytes += b;
            }
            Err(e) => ctx.file_error(file, &crate::index::error_chain(&e)),
        }
    }
    writeln!(out, "Uploaded {n} files ({bytes} bytes)")?;
    Ok(())
}

fn join(prefix: &str, key: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        key.to_owned()
    } else {
        format!("{p}/{key}")
    }
}

/// `timetracer s3`.
pub fn run(ctx: &mut Ctx, a: &S3Args, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let up = Uploader::new(settings(ctx, a)?)?;
    match &a.action {
        S3Action::Upload { paths, dir } => {
            let dir = ctx.dir(dir.as_deref());
            let files = expand_inputs(paths)?;
            let pairs: Vec<(String, PathBuf)> = files
                .into_iter()
                .map(|f| {
                    let base = paths
                        .iter()
                        .find(|p| p.is_dir() && f.starts_with(p))
                        .cloned();
                    let key = if f.starts_with(&dir) {
                        key_for(&dir, &f)
                    } else {
                        base.map_or_else(|| key_for(&dir, &f), |b| key_for(&b, &f))
                    };
                    (key, f)
                })
                .collect();
            upload(ctx, &up, &pairs, out)?;
        }
        S3Action::Download { key, out: dest } => {
            let dest = dest
                .clone()
                .unwrap_or_else(|| PathBuf::from(key.rsplit('/').next().unwrap_or(key)));
            let n = up.download(key, &dest)?;
            writeln!(out, "downloaded {key} -> {} ({n} bytes)", dest.display())?;
        }
        S3Action::List { limit, json } => {
            let mut objs = up.list(None)?;
            let total = objs.len();
            objs.sort_by(|x, y| y.key.cmp(&x.key));
            if *limit > 0 {
                objs.truncate(*limit);
            }
            for o in &objs {
                if *json {
                    serde_json::to_writer(&mut *out, o)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{:>10}  {}  {}", o.size, o.last_modified, o.key)?;
                }
            }
            if !*json {
                writeln!(
                    out,
                    "Showing {} of {total} objects in s3://{}/{}",
                    objs.len(),
                    up.settings().bucket,
                    up.settings().prefix
                )?;
            }
        }
        S3Action::Sync {
            direction,
            dir,
            dry_run,
        } => {
            let dir = ctx.dir(dir.as_deref());
            let remote: std::collections::HashMap<String, u64> = up
                .list(None)?
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            if direction == "up" {
                let (files, errs) = crate::index::walk(&dir)
                    .with_context(|| format!("cannot read {}", dir.display()))?;
                for (p, e) in errs {
                    ctx.file_error(&p, &e.to_string());
                }
                let todo: Vec<(String, PathBuf)> = files
                    .into_iter()
                    .filter(|f| {
                        remote
                            .get(&f.rel)
                            .is_none_or(|s| i64::try_from(*s).ok() != Some(f.size))
                    })
                    .map(|f| (f.rel.clone(), dir.join(&f.rel)))
                    .collect();
                if *dry_run {
                    for (k, f) in &todo {
                        writeln!(out, "would upload {} -> {k}", f.display())?;
                    }
                    writeln!(out, "Would upload {} files", todo.len())?;
                } else {
                    upload(ctx, &up, &todo, out)?;
                }
            } else {
                let mut n = 0;
                let mut keys: Vec<(&String, &u64)> = remote.iter().collect();
                keys.sort();
                for (key, size) in keys {
                    let name = key.rsplit('/').next().unwrap_or(key);
                    if !crate::index::is_candidate_name(name)
                        || key.split('/').any(|s| s == ".." || s.is_empty())
                    {
                        continue;
                    }
                    let dest = dir.join(key);
                    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == *size) {
                        continue;
                    }
                    if *dry_run {
                        writeln!(out, "would download {key} -> {}", dest.display())?;
                    } else {
                        match up.download(key, &dest) {
                            Ok(_) => writeln!(out, "downloaded {key} -> {}", dest.display())?,
                            Err(e) => {
                                ctx.file_error(&dest, &crate::index::error_chain(&e));
                                continue;
                            }
                        }
                    }
                    n += 1;
                }
                writeln!(
                    out,
                    "{} {n} files",
                    if *dry_run {
                        "Would download"
                    } else {
                        "Downloaded"
                    }
                )?;
            }
        }
    }
    Ok(Exit::Ok)
}
