//! `timetracer config`: the effective configuration and where each value came from.
use std::io::Write;

use super::{Ctx, Exit};

/// Print the effective configuration and where each value came from.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer config
  TIMETRACER_DIR=/srv/cassettes timetracer config --json

Precedence: flag > TIMETRACER_* variable > ./timetracer.toml (or the nearest parent's, or the
file named by TIMETRACER_CONFIG) > ~/.config/timetracer/timetracer.toml > default.")]
pub struct ConfigArgs {
    /// One JSON object: {key: {value, source, env}}.
    #[arg(short, long)]
    pub json: bool,
}

/// `timetracer config`.
pub fn run(ctx: &mut Ctx, a: &ConfigArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    if a.json {
        let mut m = serde_json::Map::new();
        for (k, v) in ctx.cfg.iter() {
            m.insert(
                k.name.to_owned(),
                serde_json::json!({
                    "value": v.map(|v| v.value.clone()),
                    "source": v.map_or_else(|| "unset".to_owned(), |v| v.source.to_string()),
                    "env": k.env,
                }),
            );
        }
        serde_json::to_writer_pretty(&mut *out, &serde_json::Value::Object(m))?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    if ctx.cfg.files.is_empty() {
        writeln!(
            out,
            "# no timetracer.toml found (looked in . and parents, then ~/.config/timetracer/)"
        )?;
    }
    for f in &ctx.cfg.files {
        writeln!(out, "# read {}", f.display())?;
    }
    for (k, v) in ctx.cfg.iter() {
        let (value, src) = match v {
            Some(v) => (format!("{:?}", v.value), v.source.to_string()),
            None => ("(unset)".to_owned(), "unset".to_owned()),
        };
        writeln!(out, "{:<17} = {:<28} # {src}; env {}", k.name, value, k.env)?;
    }
    Ok(Exit::Ok)
}
