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
    #[command(flatten)]
    pub location: S3Location,
    #[command(subcommand)]
    pub action: S3Action,
}

/// Which bucket, prefix, region and endpoint (`s3` and `watch --follow-s3`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Location {
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
        after_help = "Examples:\n  timetracer s3 sync up --dir ./cassettes\n  timetracer s3 sync down --dir ./from-prod --dry-run\n  timetracer s3 sync down --dir ./team && timetracer search --dir ./team --namespace shop\n\nA file is copied when the other side lacks it or has another size; down, also when the object's ETag changed since the last sync down (remembered in DIR/.timetracer-s3-sync.json). Down keeps the bucket's layout below the prefix (node mode: NAMESPACE/POD/DATE/)."
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

/// The flags over the configuration; a bucket is required.
pub(super) fn settings(ctx: &Ctx, a: &S3Location) -> anyhow::Result<Settings> {
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
    let up = Uploader::new(settings(ctx, &a.location)?)?;
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
            if direction == "up" {
                let remote: std::collections::HashMap<String, u64> = up
                    .list(None)?
                    .into_iter()
                    .map(|o| (o.key, o.size))
                    .collect();
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
                sync_down(ctx, &up, &dir, *dry_run, out)?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// What `sync down` remembers of each object it brought (or found) in the directory, so that a
/// rewritten object of the same size is noticed: `DIR/.timetracer-s3-sync.json` (hidden: never
/// read as a cassette), keyed by `BUCKET/PREFIX/KEY`.
const SYNC_STATE: &str = ".timetracer-s3-sync.json";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SyncState {
    objects: std::collections::BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Seen {
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
}

/// Whether the local copy of `o` at `dest` is current: same size, and the ETag last seen for it
/// (when one was) is the object's. Cassette names carry the request id, so an object is
/// normally written once; the ETag catches one rewritten in place.
fn is_current(o: &crate::s3::Object, dest: &Path, seen: Option<&Seen>) -> bool {
    let same_size = std::fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == o.size);
    let same_tag = match (seen.and_then(|s| s.e_tag.as_deref()), o.e_tag.as_deref()) {
        (Some(before), Some(now)) => before == now,
        _ => true,
    };
    same_size && same_tag
}

/// `timetracer s3 sync down`: the objects below the prefix that are new or changed, 8 at a
/// time, each to `DIR/KEY` (the bucket's layout kept). Returns the files it wrote.
/// `watch --follow-s3` calls it with a sink for `out` and prints the files itself.
pub(super) fn sync_down(
    ctx: &mut Ctx,
    up: &Uploader,
    dir: &Path,
    dry_run: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<PathBuf>> {
    let state_file = dir.join(SYNC_STATE);
    let mut state: SyncState = match std::fs::read(&state_file) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            // A damaged state file only costs a comparison by size.
            ctx.file_error(&state_file, &format!("{e} (ignored; it is rewritten)"));
            SyncState::default()
        }),
        Err(_) => SyncState::default(),
    };
    let base = join(&up.settings().bucket, &up.settings().prefix);
    let mut todo: Vec<(String, PathBuf)> = Vec::new();
    let mut pending: Vec<(String, Seen)> = Vec::new();
    let mut current = 0usize;
    for o in up.list(None)? {
        let name = o.key.rsplit('/').next().unwrap_or(&o.key);
        if !crate::index::is_candidate_name(name)
            || o.key
                .split('/')
                .any(|s| s == ".." || s == "." || s.is_empty())
        {
            continue;
        }
        let id = format!("{base}/{}", o.key);
        let dest = dir.join(&o.key);
        let seen = Seen {
            size: o.size,
            e_tag: o.e_tag.clone(),
        };
        if is_current(&o, &dest, state.objects.get(&id)) {
            current += 1;
            state.objects.insert(id, seen);
            continue;
        }
        if dry_run {
            writeln!(out, "would download {} -> {}", o.key, dest.display())?;
        }
        todo.push((o.key, dest));
        pending.push((id, seen));
    }
    if dry_run {
        writeln!(
            out,
            "Would download {} files, {current} already here",
            todo.len()
        )?;
        return Ok(Vec::new());
    }
    let (mut n, mut bytes) = (0usize, 0u64);
    let mut written = Vec::new();
    for (((key, dest), (id, seen)), r) in todo.iter().zip(pending).zip(up.download_files(&todo, 8))
    {
        match r {
            Ok(b) => {
                writeln!(out, "downloaded {key} -> {}", dest.display())?;
                written.push(dest.clone());
                n += 1;
                bytes += b;
                state.objects.insert(id, seen);
            }
            Err(e) => ctx.file_error(dest, &crate::index::error_chain(&e)),
        }
    }
    if n + current > 0 {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::atomic_file::write(&state_file, &serde_json::to_vec_pretty(&state)?)
            .with_context(|| format!("cannot write {}", state_file.display()))?;
    }
    writeln!(
        out,
        "Downloaded {n} files ({bytes} bytes), {current} already here"
    )?;
    Ok(written)
}
