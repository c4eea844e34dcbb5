//! `timetracer import --from py|har`: convert into schema 2.0 cassettes.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use super::{Ctx, Exit, expand_inputs};
use crate::cassette::body::encode_body;
use crate::cassette::format::{
    AttributionInfo, Cassette, Connection, EventRequest, Generator, JsonMap, Request, Response,
    SCHEMA_VERSION, Session, Timing,
};
use crate::cassette::{self, Compression};

/// `generator.name` of imported cassettes.
pub const IMPORT_GENERATOR: &str = "timetracer-import";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// The Python timetracer's 1.0 / 0.1 cassettes.
    Py,
    /// HTTP Archive 1.2: one cassette per entry.
    Har,
}

/// Convert Python timetracer cassettes or a HAR file into our cassette format.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer import --from py ./old-cassettes --out ./cassettes
  timetracer import --from har session.har --out ./cassettes --service web

Imported cassettes have generator.name \"timetracer-import\"; what the source did not record
(process id, kernel connection facts and timings) is 0 / null.")]
pub struct ImportArgs {
    /// Source format.
    #[arg(long, value_enum)]
    pub from: ImportFormat,
    /// Files or directories to import.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Cassette directory to write to [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compression of the written files [default: compression from config, else none].
    #[arg(long, value_parser = ["none", "zstd"])]
    pub compress: Option<String>,
    /// HAR: session.service of the new cassettes.
    #[arg(long, default_value = "har-import")]
    pub service: String,
}

fn generator() -> Option<Generator> {
    Some(Generator {
        name: IMPORT_GENERATOR.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

fn unknown_connection() -> Option<Connection> {
    Some(Connection {
        pid: 0,
        fd: -1,
        conn_id: 0,
        local: None,
        remote: None,
        tls: false,
        server_name: None,
        preexisting: false,
    })
}

fn header_list(h: &JsonMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect()
}

fn target_of(path: &str, query: &JsonMap) -> String {
    let mut pairs = Vec::new();
    for (k, v) in query {
        match v {
            Value::Array(a) => pairs.extend(
                a.iter()
                    .map(|x| format!("{k}={}", x.as_str().unwrap_or_default())),
            ),
            Value::String(s) => pairs.push(format!("{k}={s}")),
            other => pairs.push(format!("{k}={other}")),
        }
    }
    if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// Fill what schema 2.0 always writes, keeping everything the 1.0 file had.
#[must_use]
pub fn upgrade(mut c: Cassette) -> Cassette {
    c.schema_version = SCHEMA_VERSION.to_owned();
    c.generator = generator();
    c.session.pid.get_or_insert(0);
    c.session.cmdline.get_or_insert_with(Vec::new);
    let r = &mut c.request;
    r.target.get_or_insert_with(|| target_of(&r.path, &r.query));
    r.header_list.get_or_insert_with(|| header_list(&r.headers));
    r.http_version.get_or_insert_with(|| "1.1".to_owned());
    c.connection
        .get_or_insert_with(|| unknown_connection().unwrap_or_default());
    c.timing.get_or_insert_with(Timing::default);
    for e in &mut c.events {
        e.request.get_or_insert_with(EventRequest::default);
        e.connection
            .get_or_insert_with(|| unknown_connection().unwrap_or_default());
        e.timing.get_or_insert_with(Timing::default);
        e.attribution.get_or_insert_with(|| AttributionInfo::Exact {
            evidence: "python-contextvar".to_owned(),
            facts: None,
        });
        e.signature.url.get_or_insert_with(String::new);
    }
    let red = &mut c.policies.redaction;
    red.header_names
        .get_or_insert_with(|| red.rules.clone().unwrap_or_default());
    red.body_keys.get_or_insert_with(Vec::new);
    red.applied.get_or_insert(0);
    let cap = &mut c.policies.capture;
    cap.max_body_bytes
        .get_or_insert(cap.max_body_kb.unwrap_or(0) * 1024);
    c.stats.drops.get_or_insert_with(BTreeMap::new);
    c
}

fn har_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    Some((
                        h.get("name")?.as_str()?.to_owned(),
                        h.get("value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs_to_map(p: &[(String, String)], lower: bool) -> JsonMap {
    let mut m = JsonMap::new();
    for (k, v) in p {
        let k = if lower {
            k.to_ascii_lowercase()
        } else {
            k.clone()
        };
        match m.get_mut(&k) {
            Some(Value::String(s)) if lower => {
                s.push_str(", ");
                s.push_str(v);
            }
            Some(Value::String(s)) => {
                let first = s.clone();
                m.insert(k, Value::Array(vec![first.into(), v.clone().into()]));
            }
            Some(Value::Array(a)) => a.push(v.clone().into()),
            _ => {
                m.insert(k, v.clone().into());
            }
        }
    }
    m
}

/// Cassettes for the entries of a HAR document.
pub fn from_har(har: &Value, service: &str) -> anyhow::Result<Vec<Cassette>> {
    let entries = har
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .context("not a HAR file: no log.entries array")?;
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let req = e
            .get("request")
            .with_context(|| format!("entry {i}: no request"))?;
        let resp = e.get("response").cloned().unwrap_or(Value::Null);
        let url = req
            .get("url")
            .and_then(Value::as_str)
            .with_context(|| format!("entry {i}: no request.url"))?;
        let target = crate::urls::url_path(url);
        let target = target.split('#').next().unwrap_or("/");
        let path = crate::urls::decode_str(target.split('?').next().unwrap_or("/"));
        let rh = har_pairs(&req["headers"]);
        let qs = har_pairs(&req["queryString"]);
        let req_body = req
            .pointer("/postData/text")
            .and_then(Value::as_str)
            .and_then(|t| encode_body(t.as_bytes(), t.len() as u64, false, Vec::new()));
        let text = resp.pointer("/content/text").and_then(Value::as_str);
        let bytes = match (
            text,
            resp.pointer("/content/encoding").and_then(Value::as_str),
        ) {
            (Some(t), Some("base64")) => base64::engine::general_purpose::STANDARD
                .decode(t)
                .with_context(|| format!("entry {i}: response.content.text is not base64"))?,
            (Some(t), _) => t.as_bytes().to_vec(),
            (None, _) => Vec::new(),
        };
        let size = resp
            .pointer("/content/size")
            .and_then(Value::as_u64)
            .unwrap_or(bytes.len() as u64)
            .max(bytes.len() as u64);
        let resp_h = har_pairs(&resp["headers"]);
        let started = e
            .get("startedDateTime")
            .and_then(Value::as_str)
            .unwrap_or("");
        let recorded_at = crate::index::summary::parse_rfc3339(started)
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp_nanos((t * 1e9) as i128).ok())
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
                ))
                .ok()
            })
            .unwrap_or_else(|| started.to_owned());
        let version = req
            .get("httpVersion")
            .and_then(Value::as_str)
            .unwrap_or("HTTP/1.1");
        let version = version.strip_prefix("HTTP/").unwrap_or(version).to_owned();
        let status = resp.get("status").and_then(Value::as_i64).unwrap_or(0);
        let duration = e
            .get("time")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .max(0.0);
        let user_agent = rh
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
            .map(|x| x.1.clone());
        let c = Cassette {
            startup: None,
            db_sessions: Vec::new(),
            schema_version: SCHEMA_VERSION.to_owned(),
            generator: generator(),
            session: Session {
                id: uuid::Uuid::new_v4().to_string(),
                recorded_at,
                service: service.to_owned(),
                env: "har".to_owned(),
                framework: None,
                timetracer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                python_version: None,
                git_sha: None,
                pid: Some(0),
                cmdline: Some(Vec::new()),
                cwd: None,
                k8s: None,
                recording: None,
            },
            request: Request {
                method: req
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("GET")
                    .to_owned(),
                path,
                route_template: None,
                target: Some(target.to_owned()),
                query: pairs_to_map(&qs, false),
                headers: pairs_to_map(&rh, true),
                header_list: Some(rh),
                http_version: Some(version),
                body: req_body,
                client_ip: None,
                user_agent,
            },
            response: Response {
                status,
                reason: resp
                    .get("statusText")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                duration_ms: duration,
                headers: pairs_to_map(&resp_h, true),
                header_list: Some(resp_h),
                body: encode_body(&bytes, size, size > bytes.len() as u64, Vec::new()),
            },
            error: None,
            events: Vec::new(),
            connection: unknown_connection(),
            timing: Some(Timing::default()),
            policies: Default::default(),
            stats: Default::default(),
        };
        out.push(upgrade(c));
    }
    Ok(out)
}

/// Write one imported cassette; `false` when a file of that name already exists (kept).
fn write_one(
    ctx: &mut Ctx,
    out_dir: &Path,
    c: &Cassette,
    comp: Compression,
    src: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let dest = out_dir.join(cassette::naming::relative_path(c, comp));
    if dest.exists() {
        writeln!(
            out,
            "{} -> {} already exists, skipped",
            src.display(),
            dest.display()
        )?;
        return Ok(false);
    }
    match cassette::write(out_dir, c, comp) {
        Ok(p) => {
            writeln!(out, "{} -> {}", src.display(), p.display())?;
            return Ok(true);
        }
        Err(e) => ctx.file_error(src, &crate::index::error_chain(&e)),
    }
    Ok(false)
}

/// `timetracer import`.
pub fn run(ctx: &mut Ctx, a: &ImportArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let out_dir = ctx.dir(a.out.as_deref());
    let comp = match a.compress.as_deref().or_else(|| ctx.cfg.str("compression")) {
        Some("zstd") => Compression::Zstd,
        _ => Compression::None,
    };
    let (mut n, mut skipped) = (0, 0);
    match a.from {
        ImportFormat::Py => {
            for f in expand_inputs(&a.paths)? {
                match cassette::read(&f) {
                    Ok(c) if c.is_python_legacy() => {
                        if write_one(ctx, &out_dir, &upgrade(c), comp, &f, out)? {
                            n += 1;
                        } else {
                            skipped += 1;
                        }
                    }
                    Ok(_) => eprintln!("timetracer: {}: already schema 2.x, skipped", f.display()),
                    Err(cassette::Error::MissingSchema { .. }) if !a.paths.contains(&f) => {}
                    Err(e) => ctx.file_error(&f, &crate::index::error_chain(&e)),
                }
            }
        }
        ImportFormat::Har => {
            for f in &a.paths {
                let parsed = std::fs::read(f)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice::<Value>(&b)?))
                    .and_then(|v| from_har(&v, &a.service));
                match parsed {
                    Ok(cs) => {
                        for c in cs {
                            if write_one(ctx, &out_dir, &c, comp, f, out)? {
                                n += 1;
                            } else {
                                skipped += 1;
                            }
                        }
                    }
                    Err(e) => ctx.file_error(f, &format!("{e:#}")),
                }
            }
        }
    }
    writeln!(
        out,
        "Imported {n} cassettes into {} ({skipped} skipped: already there)",
        out_dir.display()
    )?;
    Ok(Exit::Ok)
}
