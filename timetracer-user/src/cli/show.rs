//! `timetracer show CASSETTE [--events]`: a readable summary of one cassette.
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::cassette::format::{AttributionInfo, Body, Cassette};
use crate::cassette::read;

/// Lines of a traceback shown (the last ones).
const TRACEBACK_LINES: usize = 12;

/// Print a summary of the cassette at `path` (and every event with `events`).
pub fn run(path: &Path, events: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let c = read(path).with_context(|| format!("cannot show {}", path.display()))?;
    render(&c, path, events, out).context("cannot write output")
}

fn tag(status: i64) -> &'static str {
    if status == 0 || status >= 400 {
        "[ERR]"
    } else {
        "[OK]"
    }
}

fn size(b: Option<&Body>) -> String {
    match b {
        None => "0 B".to_owned(),
        Some(b) => {
            let n = b.size_bytes.unwrap_or(0);
            if b.truncated {
                format!("{n} B (truncated)")
            } else {
                format!("{n} B")
            }
        }
    }
}

/// Render an already read cassette.
pub fn render(c: &Cassette, path: &Path, events: bool, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Cassette: {}", path.display())?;
    match &c.generator {
        Some(g) => writeln!(
            out,
            "Schema:   {} ({} {})",
            c.schema_version, g.name, g.version
        )?,
        None => writeln!(out, "Schema:   {}", c.schema_version)?,
    }
    let s = &c.session;
    writeln!(out, "\nSession")?;
    writeln!(out, "  ID:          {}", s.id)?;
    writeln!(out, "  Recorded:    {}", s.recorded_at)?;
    writeln!(out, "  Service:     {}", s.service)?;
    writeln!(out, "  Environment: {}", s.env)?;
    if let Some(f) = &s.framework {
        writeln!(out, "  Framework:   {f}")?;
    }
    if let Some(pid) = s.pid {
        let cmd = s.cmdline.as_ref().map(|c| c.join(" ")).unwrap_or_default();
        writeln!(out, "  Process:     {pid} {cmd}")?;
    }

    let r = &c.request;
    writeln!(out, "\nRequest")?;
    writeln!(out, "  {} {}", r.method, r.path)?;
    if let Some(t) = &r.route_template {
        writeln!(out, "  Route: {t}")?;
    }
    if !r.query.is_empty() {
        let mut q: Vec<String> = Vec::new();
        for (k, v) in &r.query {
            match v {
                serde_json::Value::String(s) => q.push(format!("{k}={s}")),
                serde_json::Value::Array(items) => {
                    for item in items {
                        q.push(format!(
                            "{k}={}",
                            item.as_str()
                                .map_or_else(|| item.to_string(), str::to_owned)
                        ));
                    }
                }
                other => q.push(format!("{k}={other}")),
            }
        }
        writeln!(out, "  Query: {}", q.join("&"))?;
    }
    if let Some(ip) = &r.client_ip {
        writeln!(out, "  Client: {ip}")?;
    }
    if r.body.is_some() {
        writeln!(out, "  Body: {}", size(r.body.as_ref()))?;
    }

    let resp = &c.response;
    writeln!(out, "\nResponse")?;
    let reason = resp
        .reason
        .as_deref()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    writeln!(
        out,
        "  {} Status: {}{reason}",
        tag(resp.status),
        resp.status
    )?;
    writeln!(out, "  Duration: {:.2}ms", resp.duration_ms)?;
    if resp.body.is_some() {
        writeln!(out, "  Body: {}", size(resp.body.as_ref()))?;
    }

    if let Some(e) = &c.error {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        writeln!(out, "\nError: {kind} (status {})", e.status)?;
        if let Some(tb) = &e.traceback {
            let lines: Vec<&str> = tb.lines().collect();
            if lines.len() > TRACEBACK_LINES {
                writeln!(out, "  ... ({} more lines)", lines.len() - TRACEBACK_LINES)?;
            }
            for l in &lines[lines.len().saturating_sub(TRACEBACK_LINES)..] {
                writeln!(out, "  {l}")?;
            }
        }
    }

    writeln!(out, "\nEvents: {} total", c.events.len())?;
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for e in &c.events {
        match counts.iter_mut().find(|(k, _)| *k == e.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((&e.kind, 1)),
        }
    }
    for (k, n) in counts {
        writeln!(out, "  {k}: {n}")?;
    }
    if let Some(drops) = c
        .stats
        .drops
        .as_ref()
        .filter(|d| d.values().any(|n| *n > 0))
    {
        let d: Vec<String> = drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        writeln!(out, "Drops: {}", d.join(", "))?;
    }

    if events {
        for e in &c.events {
            let target = e.signature.url.as_deref().unwrap_or("");
            writeln!(
                out,
                "\n  #{} [{}] {} {target}",
                e.eid, e.kind, e.signature.method
            )?;
            writeln!(
                out,
                "     Offset: +{:.1}ms, Duration: {:.1}ms",
                e.start_offset_ms, e.duration_ms
            )?;
            match (e.result.status, &e.result.error) {
                (Some(st), err) => {
                    let reason = e
                        .result
                        .reason
                        .as_deref()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default();
                    let err = err
                        .as_deref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default();
                    let t = if e.kind == "http.client" { tag(st) } else { "" };
                    writeln!(out, "     {t} Response: {st}{reason}{err}")?;
                }
                (None, Some(err)) => writeln!(out, "     [ERR] Error: {err}")?,
                (None, None) => {}
            }
            let req_body = e.request.as_ref().and_then(|r| r.body.as_ref());
            writeln!(
                out,
                "     Sizes: request {}, response {}",
                size(req_body),
                size(e.result.body.as_ref())
            )?;
            match &e.attribution {
                Some(AttributionInfo::Exact { evidence, .. }) => {
                    writeln!(out, "     Attribution: exact ({evidence})")?
                }
                Some(AttributionInfo::Ambiguous { reason }) => {
                    writeln!(out, "     Attribution: ambiguous ({reason})")?;
                }
                None => {}
            }
        }
    }
    Ok(())
}
