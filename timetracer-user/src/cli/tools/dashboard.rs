//! `timetracer dashboard --dir D`: one self-contained HTML page over a cassette directory.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use super::timeline::open_in_browser;
use super::{Ctx, Exit};
use crate::web::{self, render::Detail, render::PageOpts};

/// Write a self-contained HTML dashboard of a cassette directory.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer dashboard --dir cassettes --open
  timetracer dashboard --dir cassettes -n 2000 -o /tmp/all.html
  timetracer dashboard --dir team --namespace shop --pod 'api-*'   # node mode's cassettes

The page needs no network. Its table sorts by any column and filters by endpoint, method,
status class (2xx ... 5xx, exception, no response), duration, time and dependency type;
clicking a request shows its waterfall, dependency calls, traceback, raw JSON and the exact
`timetracer-agent replay` command; two selected requests can be compared side by side. Each
endpoint gets a duration trend chart. The file is written with mode 0600.")]
pub struct DashboardArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Output file.
    #[arg(short, long, value_name = "FILE", default_value = "dashboard.html")]
    pub out: PathBuf,
    /// Newest cassettes included.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 500)]
    pub limit: usize,
    /// Open the page in the default browser (xdg-open, or $BROWSER).
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub k8s: super::K8sFilter,
}

pub fn run(ctx: &mut Ctx, a: &DashboardArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    let canon = dir
        .canonicalize()
        .with_context(|| format!("cassette directory {} does not exist", dir.display()))?;
    let mut col = web::Collector::open(&canon)?.scoped(a.k8s.namespace.clone(), a.k8s.pod.clone());
    col.refresh()?;
    let collected = col.collect(a.limit)?;
    for e in &collected.errors {
        ctx.file_error(&e.file, &e.error);
    }
    let notes = col.notes();
    let mut details = Vec::with_capacity(collected.rows.len());
    for (row, path) in &collected.rows {
        match web::load(path) {
            Ok(l) => {
                let shown = dir.join(&row.rel).display().to_string();
                let mut view = web::view(&format!("d{}", row.n), &shown, &row.rel, path, &l);
                web::annotate(&mut view, &notes);
                details.push(Detail { n: row.n, view });
            }
            Err(e) => ctx.file_error(path, &crate::index::error_chain(&e)),
        }
    }
    let page = web::dashboard_page(&dir.display().to_string(), collected, details, 0);
    let html = web::render::Renderer::new().dashboard(
        &page,
        &PageOpts {
            generated_at: web::now_text(),
            ..PageOpts::default()
        },
    )?;
    crate::atomic_file::write(&a.out, html.as_bytes())?;
    writeln!(out, "Dashboard written: {}", a.out.display())?;
    writeln!(
        out,
        "Cassettes: {} shown of {} · succeeded {} · 4xx {} · 5xx {} · exceptions/no response {}",
        page.rows.len(),
        page.total,
        page.totals.ok,
        page.totals.client_errors,
        page.totals.server_errors,
        page.totals.exceptions
    )?;
    if a.open {
        open_in_browser(&a.out.display().to_string())?;
    }
    Ok(Exit::Ok)
}
