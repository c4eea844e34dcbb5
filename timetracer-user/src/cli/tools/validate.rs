//! `timetracer validate FILE|DIR...`: check cassettes against `docs/cassette.schema.json`;
//! with `--secrets`, also report values that look like secrets (`crate::secrets`).
use std::io::Write;
use std::path::PathBuf;

use super::{Ctx, Exit, expand_inputs};
use crate::cassette::reader::{MAX_CASSETTE_BYTES, read_decompressed};

/// The cassette JSON Schema (draft 2020-12), compiled into the binary.
pub const CASSETTE_SCHEMA: &str = include_str!("../../../../docs/cassette.schema.json");

/// Check cassettes against the cassette JSON Schema.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer validate cassettes/
  timetracer validate GET__users_42__e92ca5c8.json.zst --quiet
  timetracer validate --secrets cassettes/

Each problem is printed as FILE: $.json.path: message. Exit 0 when every file is valid (and,
with --secrets, holds nothing that looks like a secret), 1 otherwise.")]
pub struct ValidateArgs {
    /// Cassette files or directories (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print only problems, not the `ok` lines.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also scan every value for what looks like a secret redaction missed: JWTs, AWS
    /// access keys, PEM private keys, credit-card numbers (valid Luhn digit), high-entropy
    /// tokens; base64 wire bytes and bodies are scanned decoded.
    #[arg(long)]
    pub secrets: bool,
}

/// JSON pointer `/a/0/b` → `$.a[0].b`.
#[must_use]
pub fn pointer_to_path(ptr: &str) -> String {
    let mut s = String::from("$");
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            s.push_str(&format!("[{seg}]"));
        } else if seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !seg.is_empty() {
            s.push('.');
            s.push_str(&seg);
        } else {
            s.push_str(&format!("[{seg:?}]"));
        }
    }
    s
}

/// Problems of one JSON document: `(json path, message)`.
pub fn check(validator: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = validator
        .iter_errors(doc)
        .map(|e| (pointer_to_path(&e.instance_path.to_string()), e.to_string()))
        .collect();
    v.sort();
    v
}

/// The compiled cassette schema.
pub fn validator() -> anyhow::Result<jsonschema::Validator> {
    let schema: serde_json::Value = serde_json::from_str(CASSETTE_SCHEMA)?;
    jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("cassette schema does not compile: {e}"))
}

/// `timetracer validate`.
pub fn run(ctx: &mut Ctx, a: &ValidateArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let validator = validator()?;
    let files = expand_inputs(&a.paths)?;
    let (mut ok, mut bad) = (0usize, 0usize);
    for f in &files {
        let problems: Vec<(String, String)> = match read_decompressed(f, MAX_CASSETTE_BYTES)
            .map_err(|e| crate::index::error_chain(&e))
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b)
                    .map_err(|e| format!("not JSON: {e}"))
            }) {
            Err(e) => vec![("$".to_owned(), e)],
            Ok(doc) => {
                let mut p = check(&validator, &doc);
                // The schema accepts what the reader accepts; also make sure it really reads.
                let reread = if p.is_empty() {
                    crate::cassette::reader::parse(f, &serde_json::to_vec(&doc)?).err()
                } else {
                    None
                };
                if let Some(e) = reread {
                    p.push(("$".to_owned(), crate::index::error_chain(&e)));
                }
                if a.secrets {
                    p.extend(crate::secrets::scan(&doc).into_iter().map(|f| {
                        (
                            f.path,
                            format!("looks like a secret ({}): {}", f.kind, f.sample),
                        )
                    }));
                }
                p
            }
        };
        if problems.is_empty() {
            ok += 1;
            if !a.quiet {
                writeln!(out, "{}: {}", f.display(), ctx.paint("32", "ok"))?;
            }
        } else {
            bad += 1;
            for (path, msg) in problems {
                writeln!(out, "{}: {}: {msg}", f.display(), ctx.paint("31", &path))?;
            }
        }
    }
    writeln!(out, "{ok} valid, {bad} invalid")?;
    Ok(if bad > 0 { Exit::Differences } else { Exit::Ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        assert_eq!(pointer_to_path(""), "$");
        assert_eq!(
            pointer_to_path("/events/0/signature/url"),
            "$.events[0].signature.url"
        );
        assert_eq!(
            pointer_to_path("/headers/content-type"),
            "$.headers[\"content-type\"]"
        );
    }
}
