//! Templates (minijinja, HTML auto-escaping on for every template), the page assets and the
//! Content-Security-Policy that goes with them.
//!
//! Safety rules, all enforced here:
//! - every value printed by a template is HTML-escaped (`<`, `>`, `&`, `"`, `'`, `/`); the
//!   only values marked safe are the page's own CSS and script and [`script_json`]'s output;
//! - JSON embedded in a `<script type="application/json">` data block is escaped for that
//!   context ([`script_json`]): `<`, `>`, `&`, U+2028 and U+2029 become `\u` escapes, so no
//!   string in a cassette can close the element or start a comment;
//! - the CSP allows exactly the page's one inline style and one inline script (by hash):
//!   no other script, no inline event handler, no `javascript:` URL, no `style` attribute, no
//!   network access (static pages) or only the page's own origin (`serve`).
use base64::Engine as _;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::analysis::diff::{Change, Report};

use super::model::{self, CassetteView, DepType, EndpointGraph, Row, Totals, Trend};
use super::replay_client::Verdict;

/// The page's stylesheet (inlined).
pub const CSS: &str = include_str!("assets/app.css");
/// The page's script (inlined).
pub const JS: &str = include_str!("assets/app.js");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("timeline.html", include_str!("templates/timeline.html")),
    ("dashboard.html", include_str!("templates/dashboard.html")),
    ("message.html", include_str!("templates/message.html")),
    ("_cassette.html", include_str!("templates/_cassette.html")),
    ("_cards.html", include_str!("templates/_cards.html")),
    ("_rows.html", include_str!("templates/_rows.html")),
    ("_trends.html", include_str!("templates/_trends.html")),
    ("_graphs.html", include_str!("templates/_graphs.html")),
    ("_verdict.html", include_str!("templates/_verdict.html")),
    ("_compare.html", include_str!("templates/_compare.html")),
    (
        "_detail.html",
        "{% from \"_cassette.html\" import cassette %}{{ cassette(c, live) }}",
    ),
];

/// Rendering failed (a bug in a template: the tests render every one).
#[derive(Debug, thiserror::Error)]
#[error("cannot render {template}")]
pub struct RenderError {
    template: &'static str,
    #[source]
    source: minijinja::Error,
}

/// JSON for a `<script type="application/json">` block: `<`, `>`, `&`, U+2028 and U+2029
/// are written as `\u` escapes (valid JSON, identical once parsed).
#[must_use]
pub fn script_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for ch in json.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A template value from anything serializable.
fn sv<T: Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

fn sha256_b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// The Content-Security-Policy of every page. `live` pages (served by `timetracer serve`)
/// may also fetch from their own origin.
#[must_use]
pub fn csp(live: bool) -> String {
    let mut s = format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; img-src data:; \
         base-uri 'none'; form-action 'none'",
        sha256_b64(CSS),
        sha256_b64(JS)
    );
    if live {
        s.push_str("; connect-src 'self'; frame-ancestors 'none'");
    }
    s
}

/// Page-wide settings.
#[derive(Clone, Debug, Default)]
pub struct PageOpts {
    /// Served by `timetracer serve` (live updates, replay, server-side compare).
    pub live: bool,
    /// The per-run token (live pages only), read by the page's script for its requests.
    pub token: Option<String>,
    /// Shown in the footer.
    pub generated_at: String,
}

/// A dashboard's content.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardPage {
    pub dir: String,
    pub rows: Vec<Row>,
    pub total: usize,
    pub truncated: bool,
    pub totals: Totals,
    pub trends: Vec<Trend>,
    /// The dependency graph of each busy endpoint.
    pub graphs: Vec<EndpointGraph>,
    pub methods: Vec<String>,
    pub dep_types: Vec<DepType>,
    pub errors: Vec<crate::index::FileError>,
    /// Per-row details embedded in a static page (`<template>` elements); empty when live.
    pub details: Vec<Detail>,
    pub version: u64,
}

/// A row's embedded detail.
#[derive(Clone, Debug, Serialize)]
pub struct Detail {
    pub n: usize,
    pub view: CassetteView,
}

/// The status filter's choices.
#[derive(Serialize)]
struct StatusChoice {
    key: &'static str,
    label: &'static str,
}

const STATUS_CHOICES: &[StatusChoice] = &[
    StatusChoice {
        key: "2xx",
        label: "2xx",
    },
    StatusChoice {
        key: "3xx",
        label: "3xx",
    },
    StatusChoice {
        key: "4xx",
        label: "4xx",
    },
    StatusChoice {
        key: "5xx",
        label: "5xx",
    },
    StatusChoice {
        key: "exception",
        label: "exception",
    },
    StatusChoice {
        key: "no-response",
        label: "no response",
    },
];

/// What the dashboard's script reads from its JSON data block.
#[derive(Serialize)]
pub struct ScriptData {
    pub live: bool,
    pub version: u64,
    pub rows: Vec<model::RowData>,
}

/// What a replay button shows when there is no verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Unavailable {
    pub title: String,
    pub message: String,
    /// The command that fixes it (start the service), when there is one.
    pub command: Option<String>,
}

#[derive(Serialize)]
struct VerdictView<'a> {
    #[serde(flatten)]
    v: &'a Verdict,
    verdict_class: &'static str,
}

/// The templates, ready to render.
pub struct Renderer {
    env: Environment<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// Loads every template (they are compiled into the binary).
    ///
    /// # Panics
    /// When a template does not parse: a bug caught by the unit tests.
    #[must_use]
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("template {name}: {e:#}"));
        }
        // A query-string value (the cassette links of `serve`).
        env.add_filter("urlq", |v: String| {
            const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
                .remove(b'-')
                .remove(b'_')
                .remove(b'.')
                .remove(b'/');
            percent_encoding::utf8_percent_encode(&v, SET).to_string()
        });
        env.add_filter("pct", |v: f64| format!("{:.3}%", v.clamp(0.0, 100.0)));
        env.add_filter("json", |v: Value| {
            serde_json::to_string(&v).unwrap_or_else(|_| String::from("?"))
        });
        env.add_filter(
            "script_json",
            |v: Value| -> Result<Value, minijinja::Error> {
                let s = serde_json::to_string(&v).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
                })?;
                Ok(Value::from_safe_string(script_json(&s)))
            },
        );
        Self { env }
    }

    fn render(&self, template: &'static str, ctx: Value) -> Result<String, RenderError> {
        self.env
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .map_err(|source| RenderError { template, source })
    }

    fn page_ctx(opts: &PageOpts) -> Value {
        context! {
            css => Value::from_safe_string(CSS.to_owned()),
            js => Value::from_safe_string(JS.to_owned()),
            csp => csp(opts.live),
            csp_meta => !opts.live,
            live => opts.live,
            token => opts.token.clone(),
            version => env!("CARGO_PKG_VERSION"),
            generated_at => opts.generated_at.clone(),
        }
    }

    /// The timeline page of one cassette.
    pub fn timeline(&self, c: &CassetteView, opts: &PageOpts) -> Result<String, RenderError> {
        let ctx = context! { c => sv(c), ..Self::page_ctx(opts) };
        self.render("timeline.html", ctx)
    }

    /// The dashboard page.
    pub fn dashboard(&self, d: &DashboardPage, opts: &PageOpts) -> Result<String, RenderError> {
        let data = ScriptData {
            live: opts.live,
            version: d.version,
            rows: d.rows.iter().map(Row::data).collect(),
        };
        let ctx = context! {
            data => sv(&data),
            status_classes => sv(STATUS_CHOICES),
            w => model::TREND_W,
            h => model::TREND_H,
            box => sv(model::GRAPH_BOX),
            ..minijinja::value::merge_maps([sv(d), Self::page_ctx(opts)])
        };
        self.render("dashboard.html", ctx)
    }

    /// A page with a title and one message (errors of `serve`).
    pub fn message(
        &self,
        title: &str,
        message: &str,
        opts: &PageOpts,
    ) -> Result<String, RenderError> {
        let ctx = context! { title, message, ..Self::page_ctx(opts) };
        self.render("message.html", ctx)
    }

    /// The `<tr>` rows of the dashboard table.
    pub fn rows(&self, rows: &[Row]) -> Result<String, RenderError> {
        self.render("_rows.html", context! { rows => sv(rows) })
    }

    /// The totals cards.
    pub fn cards(&self, totals: &Totals) -> Result<String, RenderError> {
        self.render("_cards.html", context! { totals => sv(totals) })
    }

    /// The trend charts.
    pub fn trends(&self, trends: &[Trend]) -> Result<String, RenderError> {
        self.render(
            "_trends.html",
            context! {
                trends => sv(trends),
                w => model::TREND_W,
                h => model::TREND_H,
            },
        )
    }

    /// The dependency graphs per endpoint.
    pub fn graphs(&self, graphs: &[EndpointGraph]) -> Result<String, RenderError> {
        self.render(
            "_graphs.html",
            context! { graphs => sv(graphs), box => sv(model::GRAPH_BOX) },
        )
    }

    /// One cassette's detail (dashboard side panel).
    pub fn detail(&self, c: &CassetteView, live: bool) -> Result<String, RenderError> {
        self.render("_detail.html", context! { c => sv(c), live })
    }

    /// Two cassettes side by side with the differences `timetracer diff` finds.
    pub fn compare(
        &self,
        a: &CassetteView,
        b: &CassetteView,
        report: &Report,
        live: bool,
    ) -> Result<String, RenderError> {
        let changes: Vec<&Change> = report.changes().collect();
        self.render(
            "_compare.html",
            context! {
                a => sv(a),
                b => sv(b),
                changes => sv(&changes),
                request => report.request.clone(),
                is_regression => report.is_regression,
                threshold => report.threshold_pct,
                live,
            },
        )
    }

    /// A replay verdict (or why there is none).
    pub fn verdict(
        &self,
        uid: &str,
        v: Result<&Verdict, &Unavailable>,
    ) -> Result<String, RenderError> {
        let ctx = match v {
            Ok(v) => {
                let verdict_class = match v.verdict.as_str() {
                    "same" => "same",
                    "differs" => "differs",
                    "dependency-mismatch" => "dependency-mismatch",
                    _ => "error",
                };
                context! {
                    uid,
                    v => sv(&VerdictView { v, verdict_class }),
                    unavailable => Value::from(()),
                }
            }
            Err(u) => context! { uid, unavailable => sv(u) },
        };
        self.render("_verdict.html", ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_the_element() {
        let v = serde_json::json!({"p": "</script><script>alert(1)</script><!-- \u{2028}\u{2029} &amp;"});
        let s = script_json(&serde_json::to_string(&v).unwrap());
        for bad in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!s.contains(bad), "{bad:?} in {s}");
        }
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn csp_hashes_the_inline_assets() {
        let c = csp(false);
        assert!(c.contains(&format!("'sha256-{}'", sha256_b64(JS))));
        assert!(c.contains(&format!("'sha256-{}'", sha256_b64(CSS))));
        assert!(!c.contains("unsafe"));
        assert!(!c.contains("connect-src"));
        assert!(csp(true).contains("connect-src 'self'"));
    }

    #[test]
    fn the_script_never_parses_html_from_strings_it_builds() {
        // Text goes through textContent; markup only comes from our own templates.
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!JS.contains(bad), "app.js uses {bad}");
        }
        for bad in [
            " style=\"",
            " style='",
            "onclick",
            "onerror",
            "onload",
            "javascript:",
        ] {
            for (name, src) in TEMPLATES {
                assert!(!src.contains(bad), "{name} contains {bad}");
            }
        }
    }

    #[test]
    fn messages_are_escaped() {
        let r = Renderer::new();
        let html = r
            .message(
                "<b>t</b>",
                "<img src=x onerror=alert(1)>",
                &PageOpts::default(),
            )
            .unwrap();
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(!html.contains("<img"));
        assert!(html.contains("Content-Security-Policy"));
    }
}
