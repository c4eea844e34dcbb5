//! `timetracer diff --a A --b B`: compare two recordings of the same request (the comparison
//! is [`crate::analysis::diff`]; this prints it).
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::{Ctx, Exit};
use crate::analysis::diff::{Change, Report, compare};
use crate::analysis::format::fmt_pct_change as pct;
use crate::cassette::{self, Cassette};

/// Compare two cassettes: response, headers, body and dependency calls.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer diff --a cassettes/before.json --b cassettes/after.json.zst
  timetracer diff -a A.json -b B.json --json -o report.json
  timetracer diff -a A.json -b B.json --threshold 50 --ignore-header x-request-id

Exit status: 0 no differences, 1 differences, 2 regression (the response or a dependency call
became an error, something got slower than --threshold, or a dependency call went to another
URL/query), 4 a cassette could not be read.")]
pub struct DiffArgs {
    /// Baseline cassette.
    #[arg(short = 'a', long = "a", value_name = "A")]
    pub a: PathBuf,
    /// Cassette to compare with the baseline.
    #[arg(short = 'b', long = "b", value_name = "B")]
    pub b: PathBuf,
    /// Print the report as JSON.
    #[arg(short, long)]
    pub json: bool,
    /// Also write the report (JSON with --json, else text) to this file.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Percent slower that counts as a regression [default: diff.threshold, else 20].
    #[arg(short, long, value_name = "PCT")]
    pub threshold: Option<f64>,
    /// Ignore slowdowns smaller than this many milliseconds (timer noise).
    #[arg(long, value_name = "MS", default_value_t = 1.0)]
    pub min_delta: f64,
    /// Header to ignore when comparing (repeatable; `date` is always ignored).
    #[arg(long, value_name = "NAME")]
    pub ignore_header: Vec<String>,
}

fn render(
    ctx: &Ctx,
    r: &Report,
    a: &Cassette,
    b: &Cassette,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let bold = |s: &str| ctx.paint("1", s);
    writeln!(out, "{} {}", bold("A:"), r.cassette_a)?;
    writeln!(out, "{} {}", bold("B:"), r.cassette_b)?;
    writeln!(out, "Request: {}", r.request)?;
    writeln!(out, "\n{}", bold("RESPONSE"))?;
    if a.response.status == b.response.status {
        writeln!(out, "  status: {} (unchanged)", a.response.status)?;
    }
    writeln!(
        out,
        "  duration: {:.1}ms → {:.1}ms ({})",
        a.response.duration_ms,
        b.response.duration_ms,
        pct(a.response.duration_ms, b.response.duration_ms)
    )?;
    let line = |c: &Change| {
        let (mark, code) = if c.regression {
            ("!", "31")
        } else {
            ("~", "33")
        };
        ctx.paint(code, &format!("  {mark} {}", c.summary))
    };
    for c in &r.response {
        writeln!(out, "{}", line(c))?;
    }
    writeln!(
        out,
        "\n{} (a: {}, b: {}, paired: {})",
        bold("EVENTS"),
        r.events.count_a,
        r.events.count_b,
        r.events.paired
    )?;
    let mut last_dest = None;
    for c in &r.events.changes {
        if last_dest != c.destination.as_ref() {
            writeln!(out, "  {}", c.destination.as_deref().unwrap_or(""))?;
            last_dest = c.destination.as_ref();
        }
        let ids = format!(
            "#{}→#{}",
            c.eid_a.map_or_else(|| "-".to_owned(), |v| v.to_string()),
            c.eid_b.map_or_else(|| "-".to_owned(), |v| v.to_string())
        );
        let (mark, code) = match (c.regression, c.what.as_str()) {
            (true, _) => ("!", "31"),
            (false, "event.extra") => ("+", "32"),
            (false, "event.missing") => ("-", "31"),
            _ => ("~", "33"),
        };
        writeln!(
            out,
            "{}",
            ctx.paint(code, &format!("    {mark} {ids} {}", c.summary))
        )?;
    }
    let n = r.response.len() + r.events.changes.len();
    let verdict = if r.is_regression {
        ctx.paint("1;31", "REGRESSION")
    } else if r.has_differences {
        ctx.paint("33", "DIFFERENT")
    } else {
        ctx.paint("32", "SAME")
    };
    writeln!(
        out,
        "\n{} {verdict}: {n} difference(s), threshold {}%",
        bold("SUMMARY"),
        r.threshold_pct
    )?;
    Ok(())
}

/// `timetracer diff`.
pub fn run(ctx: &mut Ctx, a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let ca = cassette::read(&a.a).with_context(|| "cannot read --a (pass a cassette file)")?;
    let cb = cassette::read(&a.b).with_context(|| "cannot read --b (pass a cassette file)")?;
    let threshold = a
        .threshold
        .or_else(|| ctx.cfg.f64("diff.threshold"))
        .unwrap_or(20.0);
    if !(threshold.is_finite() && threshold >= 0.0) {
        anyhow::bail!("--threshold must be a non-negative percentage, e.g. 20");
    }
    let mut request = format!("{} {}", cb.request.method, cb.request.path);
    if (ca.request.method.as_str(), ca.request.path.as_str())
        != (cb.request.method.as_str(), cb.request.path.as_str())
    {
        request = format!(
            "{} {} vs {request} (different requests)",
            ca.request.method, ca.request.path
        );
    }
    let report = Report::new(
        a.a.display().to_string(),
        a.b.display().to_string(),
        request,
        threshold,
        compare(&ca, &cb, threshold, a.min_delta, &a.ignore_header),
    );
    let mut text = Vec::new();
    if a.json {
        serde_json::to_writer_pretty(&mut text, &report)?;
        writeln!(text)?;
        out.write_all(&text)?;
    } else {
        render(ctx, &report, &ca, &cb, out)?;
        if a.out.is_some() {
            let plain = Ctx {
                cfg: ctx.cfg.clone(),
                color: false,
                partial: false,
            };
            render(&plain, &report, &ca, &cb, &mut text)?;
        }
    }
    if let Some(p) = &a.out {
        crate::atomic_file::write(p, &text)?;
    }
    Ok(if report.is_regression {
        Exit::Regression
    } else if report.has_differences {
        Exit::Differences
    } else {
        Exit::Ok
    })
}
