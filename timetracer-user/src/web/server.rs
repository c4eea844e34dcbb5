//! `timetracer serve`: the dashboard, live, with replay and compare.
//!
//! Security model (the Python tool's `serve` bound 0.0.0.0, read any JSON file on disk and had
//! no authentication; this is the reverse on each point):
//! - binds `127.0.0.1` unless told otherwise;
//! - a per-run random token (256 bits) is required for **every** route: the printed URL
//!   carries it once (`/?token=…`), the server answers with an `HttpOnly`, `SameSite=Strict`
//!   cookie and a redirect that drops it from the address bar; state-changing requests (POST)
//!   must also send it in the `X-Timetracer-Token` header, which a cross-site form cannot do;
//! - the `Host` header must name the server's own address (`127.0.0.1:PORT`,
//!   `localhost:PORT`), which defeats DNS rebinding; a POST's `Origin`, when sent, must too;
//! - cassettes are named relative to the served directory and resolved by [`super::paths`]:
//!   no `..`, no absolute path, no symlink out, cassette file names only;
//! - every response carries a strict Content-Security-Policy, `nosniff`, `no-referrer`,
//!   `DENY` framing and `no-store`;
//! - every replay, export, download and view of a cassette is written to the audit log
//!   ([`super::audit`]: who, what, when) before its response is sent.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::analysis::diff::{Report, compare};

use super::audit::{Action, AuditError, AuditLog, What, Who};
use super::paths::{self, PathError};
use super::render::{self, PageOpts, Renderer, Unavailable};
use super::replay_client::{self, ReplayError};
use super::{Collector, dashboard_page};

/// Name of the header that carries the token on API requests.
pub const TOKEN_HEADER: &str = "x-timetracer-token";

/// What `serve` needs to know.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The served directory (made canonical by [`Server::bind`]).
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// Newest cassettes shown.
    pub limit: usize,
    /// The replay service's socket.
    pub replay_socket: PathBuf,
    /// How long to wait for a verdict.
    pub replay_timeout: Duration,
    /// How often the directory is checked for new cassettes.
    pub refresh: Duration,
    /// The audit log (`--audit-log`); `None`: [`super::audit::default_path`] of the directory.
    pub audit_log: Option<PathBuf>,
    /// Only the cassettes of this Kubernetes namespace (`--namespace`).
    pub namespace: Option<String>,
    /// Only the cassettes of this pod, a name or a glob (`--pod`).
    pub pod: Option<String>,
}

struct Snapshot {
    version: u64,
    page: render::DashboardPage,
}

struct AppState {
    cfg: ServeConfig,
    /// The listening address (whose port the audit log's peer lookup needs).
    addr: SocketAddr,
    audit: AuditLog,
    token: String,
    cookie: String,
    hosts: Vec<String>,
    renderer: Renderer,
    collector: Mutex<Collector>,
    snap: RwLock<Snapshot>,
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

/// Serving failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot serve {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a random token")]
    Token(#[source] std::io::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn random_token() -> Result<String, std::io::Error> {
    use std::io::Read as _;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal strings, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn build_snapshot(
    collector: &mut Collector,
    limit: usize,
    version: u64,
) -> Result<Snapshot, crate::index::Error> {
    let collected = collector.collect(limit)?;
    let dir = collector.dir().display().to_string();
    Ok(Snapshot {
        version,
        page: dashboard_page(&dir, collected, Vec::new(), version),
    })
}

impl Server {
    /// Opens the directory's index, reads the cassettes and binds the address.
    pub async fn bind(mut cfg: ServeConfig) -> Result<Self, ServeError> {
        cfg.dir = cfg.dir.canonicalize().map_err(|source| ServeError::Dir {
            path: cfg.dir.clone(),
            source,
        })?;
        let dir = cfg.dir.clone();
        let limit = cfg.limit;
        let (namespace, pod) = (cfg.namespace.clone(), cfg.pod.clone());
        let (collector, snap) = tokio::task::spawn_blocking(move || {
            let mut c = Collector::open(&dir)?.scoped(namespace, pod);
            c.refresh()?;
            let s = build_snapshot(&mut c, limit, 1)?;
            Ok::<_, crate::index::Error>((c, s))
        })
        .await
        .expect("indexing thread panicked")?;
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: cfg.addr,
            source,
        })?;
        let port = addr.port();
        let mut hosts = vec![format!("localhost:{port}")];
        match addr {
            SocketAddr::V4(a) => hosts.push(format!("{}:{port}", a.ip())),
            SocketAddr::V6(a) => hosts.push(format!("[{}]:{port}", a.ip())),
        }
        let token = random_token().map_err(ServeError::Token)?;
        let audit_path = match &cfg.audit_log {
            Some(p) => p.clone(),
            None => super::audit::default_path(&cfg.dir, |k| std::env::var(k).ok())?,
        };
        let audit = AuditLog::open(&audit_path, &cfg.dir)?;
        Ok(Self {
            listener,
            addr,
            state: Arc::new(AppState {
                cfg,
                addr,
                audit,
                token,
                cookie: format!("timetracer_token_{port}"),
                hosts,
                renderer: Renderer::new(),
                collector: Mutex::new(collector),
                snap: RwLock::new(snap),
            }),
        })
    }

    /// The address to open: it carries the token.
    #[must_use]
    pub fn url(&self) -> String {
        let host = match self.addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        format!(
            "http://{host}:{}/?token={}",
            self.addr.port(),
            self.state.token
        )
    }

    /// Where replays, exports, downloads and views are logged.
    #[must_use]
    pub fn audit_path(&self) -> &Path {
        self.state.audit.path()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let refresher = tokio::spawn(refresh_loop(state.clone()));
        let app = router(state);
        let r = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        refresher.abort();
        r
    }
}

async fn refresh_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(state.cfg.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut c = st
                .collector
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !c.refresh()? {
                return Ok(None);
            }
            let version = st
                .snap
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .version
                + 1;
            build_snapshot(&mut c, st.cfg.limit, version).map(Some)
        })
        .await;
        match res {
            Ok(Ok(Some(s))) => {
                *state
                    .snap
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Cannot refresh the cassette index"),
            Err(e) => tracing::warn!(error = %e, "Index refresh task failed"),
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index_page))
        .route("/timeline", get(timeline_page))
        .route("/api/rows", get(api_rows))
        .route("/api/detail", get(api_detail))
        .route("/api/compare", get(api_compare))
        .route("/api/replay", post(api_replay))
        .route("/api/download", get(api_download))
        .route("/api/export", get(api_export))
        .route("/api/notes", post(api_notes))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn message_page(st: &AppState, status: StatusCode, title: &str, msg: &str) -> Response {
    match st.renderer.message(title, msg, &page_opts(st)) {
        Ok(b) => html(status, b),
        Err(e) => (status, format!("{title}: {msg} ({e})")).into_response(),
    }
}

fn page_opts(st: &AppState) -> PageOpts {
    PageOpts {
        live: true,
        token: Some(st.token.clone()),
        generated_at: super::now_text(),
    }
}

fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_token(req: &Request) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

/// Host, token and origin checks for every request, and the security headers of every
/// response.
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let mut resp = check(&st, req, next).await;
    let h = resp.headers_mut();
    let csp = render::csp(true);
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn check(st: &AppState, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !st.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "timetracer serve answers only requests addressed to its own address\n",
        )
            .into_response();
    }
    // First visit through the printed URL: trade the token for a cookie, drop it from the URL.
    let first_visit = (req.method() == Method::GET && req.uri().path() == "/")
        .then(|| query_token(&req))
        .flatten();
    if let Some(t) = first_visit {
        if same(t, &st.token) {
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                st.cookie, st.token
            );
            // The rest of the query (a shared link's filters) survives the trade.
            let rest: Vec<&str> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("token"))
                .collect();
            let to = if rest.is_empty() {
                "/".to_owned()
            } else {
                format!("/?{}", rest.join("&"))
            };
            let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
        return message_page(
            st,
            StatusCode::UNAUTHORIZED,
            "Wrong token",
            "This token is not the one of this run: open the address `timetracer serve` printed when it started.",
        );
    }
    let header_token = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let from_cookie = cookie_token(req.headers(), &st.cookie).is_some_and(|t| same(t, &st.token));
    let from_header = header_token.is_some_and(|t| same(t, &st.token));
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if reads {
        if !(from_cookie || from_header) {
            return message_page(
                st,
                StatusCode::UNAUTHORIZED,
                "Token required",
                "Open the address `timetracer serve` printed when it started: it carries this run's token.",
            );
        }
    } else {
        // Actions: the header is required (a cross-site form or image cannot set it).
        if !from_header {
            return (
                StatusCode::FORBIDDEN,
                "this action needs the X-Timetracer-Token header of this run\n",
            )
                .into_response();
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin.to_str().ok().is_some_and(|o| {
                o.strip_prefix("http://")
                    .is_some_and(|h| st.hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
            });
            if !ok {
                return (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response();
            }
        }
    }
    next.run(req).await
}

async fn not_found(State(st): State<Arc<AppState>>) -> Response {
    message_page(
        &st,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing here.",
    )
}

async fn index_page(State(st): State<Arc<AppState>>) -> Response {
    let snap = st
        .snap
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match st.renderer.dashboard(&snap.page, &page_opts(&st)) {
        Ok(b) => html(StatusCode::OK, b),
        Err(e) => message_page(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            &crate::index::error_chain(&e),
        ),
    }
}

#[derive(Deserialize)]
struct FileQ {
    #[serde(default)]
    f: String,
}

#[derive(Deserialize)]
struct PairQ {
    #[serde(default)]
    a: String,
    #[serde(default)]
    b: String,
}

#[derive(Deserialize)]
struct RowsQ {
    v: Option<u64>,
}

fn path_status(e: &PathError) -> StatusCode {
    match e {
        PathError::NotFound => StatusCode::NOT_FOUND,
        PathError::Outside => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A refused or failed request: its response and why (for the audit log).
struct Failed {
    resp: Response,
    why: String,
}

/// Resolves and reads the cassette `rel`, or the error response.
async fn load_rel(st: &Arc<AppState>, rel: &str) -> Result<(PathBuf, super::Loaded), Failed> {
    let path = paths::resolve(&st.cfg.dir, rel).map_err(|e| {
        let why = format!("{rel}: {e}");
        Failed {
            resp: message_page(st, path_status(&e), "Refused", &why),
            why,
        }
    })?;
    let p = path.clone();
    let loaded = tokio::task::spawn_blocking(move || super::load(&p))
        .await
        .map_err(|e| Failed {
            resp: message_page(
                st,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                &e.to_string(),
            ),
            why: e.to_string(),
        })?
        .map_err(|e| {
            let why = crate::index::error_chain(&e);
            Failed {
                resp: message_page(
                    st,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Unreadable cassette",
                    &why,
                ),
                why,
            }
        })?;
    Ok((path, loaded))
}

/// `ok` for a success, `refused` for a client error, `error` otherwise.
fn result_of(status: StatusCode) -> &'static str {
    if status.is_success() {
        "ok"
    } else if status.is_client_error() && status != StatusCode::UNPROCESSABLE_ENTITY {
        "refused"
    } else {
        "error"
    }
}

/// Writes the audit line of `what` done for `peer` (off the async threads: it waits for the
/// disk), then returns `resp`; when the line cannot be written, a 503 instead, unless the
/// action already happened (a replay), which is then reported on stderr and in the log.
async fn audited(st: &Arc<AppState>, peer: SocketAddr, what: What<'_>, resp: Response) -> Response {
    let st2 = Arc::clone(st);
    let (action, cassette, other, result, detail) = (
        what.action,
        what.cassette.to_owned(),
        what.other.map(str::to_owned),
        what.result.to_owned(),
        what.detail.map(str::to_owned),
    );
    let status = what.status;
    let written = tokio::task::spawn_blocking(move || {
        let who = Who::of(peer, st2.addr);
        st2.audit.record(
            &who,
            &What {
                action,
                cassette: &cassette,
                other: other.as_deref(),
                result: &result,
                status,
                detail: detail.as_deref(),
            },
        )
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match written {
        Ok(()) => resp,
        Err(e) => {
            let msg = format!(
                "cannot write the audit log {}: {e}",
                st.audit.path().display()
            );
            tracing::error!(error = %e, path = %st.audit.path().display(), "Cannot write the audit log");
            eprintln!("timetracer: {msg}");
            // A replay ran, a note was saved: say so rather than pretend nothing happened.
            if matches!(action, Action::Replay | Action::Annotate) {
                resp
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{msg}; nothing was sent (fix the log's disk or permissions)\n"),
                )
                    .into_response()
            }
        }
    }
}

/// The audit record of a response to `action` on `rel`.
fn what<'a>(action: Action, rel: &'a str, resp: &Response, why: Option<&'a str>) -> What<'a> {
    What {
        action,
        cassette: rel,
        other: None,
        result: result_of(resp.status()),
        status: resp.status().as_u16(),
        detail: why,
    }
}

async fn timeline_page(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<FileQ>,
) -> Response {
    let (path, l) = match load_rel(&st, &q.f).await {
        Ok(x) => x,
        Err(f) => {
            let w = what(Action::View, &q.f, &f.resp, Some(&f.why));
            return audited(&st, peer, w, f.resp).await;
        }
    };
    let store = load_notes(&st).await;
    let resp = timeline_of(&st, &q.f, &path, &l, &store);
    audited(&st, peer, what(Action::View, &q.f, &resp, None), resp).await
}

/// The directory's tags and notes. A store that cannot be read is reported in the
/// dashboard's file errors; pages still show the cassettes.
async fn load_notes(st: &AppState) -> crate::index::notes::Store {
    let dir = st.cfg.dir.clone();
    tokio::task::spawn_blocking(move || crate::index::notes::load(&dir))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

fn timeline_of(
    st: &AppState,
    rel: &str,
    path: &Path,
    l: &super::Loaded,
    store: &crate::index::notes::Store,
) -> Response {
    let mut v = super::view("c", rel, rel, path, l);
    super::annotate(&mut v, store);
    match st.renderer.timeline(&v, &page_opts(st)) {
        Ok(b) => html(StatusCode::OK, b),
        Err(e) => message_page(
            st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            &crate::index::error_chain(&e),
        ),
    }
}

async fn api_rows(State(st): State<Arc<AppState>>, Query(q): Query<RowsQ>) -> Response {
    let snap = st
        .snap
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if q.v == Some(snap.version) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let page = &snap.page;
    let parts = (|| {
        Ok::<_, render::RenderError>(serde_json::json!({
            "data": render::ScriptData {
                live: true,
                version: snap.version,
                rows: page.rows.iter().map(super::model::Row::data).collect(),
            },
            "tbody": st.renderer.rows(&page.rows)?,
            "cards": st.renderer.cards(&page.totals)?,
            "trends": st.renderer.trends(&page.trends)?,
            "graphs": st.renderer.graphs(&page.graphs)?,
        }))
    })();
    match parts {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::index::error_chain(&e),
        )
            .into_response(),
    }
}

async fn api_detail(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<FileQ>,
) -> Response {
    let (path, l) = match load_rel(&st, &q.f).await {
        Ok(x) => x,
        Err(f) => {
            let w = what(Action::View, &q.f, &f.resp, Some(&f.why));
            return audited(&st, peer, w, f.resp).await;
        }
    };
    let mut v = super::view("live", &q.f, &q.f, &path, &l);
    super::annotate(&mut v, &load_notes(&st).await);
    let resp = match st.renderer.detail(&v, true) {
        Ok(b) => html(StatusCode::OK, b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::index::error_chain(&e),
        )
            .into_response(),
    };
    audited(&st, peer, what(Action::View, &q.f, &resp, None), resp).await
}

/// `GET /api/download?f=REL`: the cassette file as stored (compressed or encrypted stays so).
async fn api_download(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<FileQ>,
) -> Response {
    let (resp, why) = match paths::resolve(&st.cfg.dir, &q.f) {
        Err(e) => {
            let why = format!("{}: {e}", q.f);
            (
                (path_status(&e), format!("{why}\n")).into_response(),
                Some(why),
            )
        }
        Ok(path) => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || std::fs::read(&p)).await {
                Ok(Ok(bytes)) => (
                    (
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                            (header::CONTENT_DISPOSITION, attachment(&path, None)),
                        ],
                        bytes,
                    )
                        .into_response(),
                    None,
                ),
                Ok(Err(e)) => {
                    let why = format!("{}: {e}", q.f);
                    (
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
                        Some(why),
                    )
                }
                Err(e) => {
                    let why = e.to_string();
                    (
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
                        Some(why),
                    )
                }
            }
        }
    };
    let w = what(Action::Download, &q.f, &resp, why.as_deref());
    audited(&st, peer, w, resp).await
}

#[derive(Deserialize)]
struct ExportQ {
    #[serde(default)]
    f: String,
    /// `har` (default) or `curl`.
    #[serde(default)]
    to: Option<String>,
}

/// `GET /api/export?f=REL&to=har|curl`: the cassette as HAR 1.2 (its dependency calls
/// included) or as a curl command for the inbound request, like `timetracer export`.
async fn api_export(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<ExportQ>,
) -> Response {
    let to = q.to.as_deref().unwrap_or("har");
    if !matches!(to, "har" | "curl") {
        let why = format!("to={to}: export formats are har and curl");
        let resp = (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response();
        let w = what(Action::Export, &q.f, &resp, Some(&why));
        return audited(&st, peer, w, resp).await;
    }
    let (path, l) = match load_rel(&st, &q.f).await {
        Ok(x) => x,
        Err(f) => {
            let w = what(Action::Export, &q.f, &f.resp, Some(&f.why));
            return audited(&st, peer, w, f.resp).await;
        }
    };
    let one = [(path.clone(), l.cassette)];
    let (body, kind, ext) = if to == "har" {
        let mut s = serde_json::to_string_pretty(&crate::analysis::export::to_har(&one, true))
            .unwrap_or_default();
        s.push('\n');
        (s, "application/json", "har")
    } else {
        (
            crate::analysis::export::to_curl(&one, false, None),
            "text/plain; charset=utf-8",
            "sh",
        )
    };
    let resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CONTENT_DISPOSITION, attachment(&path, Some(ext))),
        ],
        body,
    )
        .into_response();
    let w = What {
        detail: Some(to),
        ..what(Action::Export, &q.f, &resp, None)
    };
    audited(&st, peer, w, resp).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesBody {
    file: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    note: String,
}

/// `POST /api/notes` `{"file": REL, "tags": [...], "note": "..."}`: sets the cassette's tags
/// and note in the directory's store (beside the cassettes, never inside one) and answers
/// what was stored, as JSON. The guard has already required the token header and a same
/// origin; the path is resolved like every other (inside the directory, a cassette that
/// exists), and the change is audited.
async fn api_notes(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let refuse = |status: StatusCode, why: String| {
        (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
    };
    let req: NotesBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let why = format!(
                "expected {{\"file\": \"relative/path.json\", \"tags\": [\"tag\"], \"note\": \"text\"}}: {e}"
            );
            let resp = refuse(StatusCode::BAD_REQUEST, why.clone());
            let w = what(Action::Annotate, "", &resp, Some(&why));
            return audited(&st, peer, w, resp).await;
        }
    };
    if let Err(e) = paths::resolve(&st.cfg.dir, &req.file) {
        let why = format!("{}: {e}", req.file);
        let resp = refuse(path_status(&e), why.clone());
        let w = what(Action::Annotate, &req.file, &resp, Some(&why));
        return audited(&st, peer, w, resp).await;
    }
    // The store's key: the name as the listings write it (`a//b.json` is `a/b.json`).
    let key = paths::rel_of(Path::new(""), Path::new(&req.file)).unwrap_or_default();
    let st2 = Arc::clone(&st);
    let (file, tags, note) = (key, req.tags, req.note);
    let saved = tokio::task::spawn_blocking(move || {
        let a = crate::index::notes::set(&st2.cfg.dir, &file, &tags, &note)?;
        // The rows show tags: publish them now rather than at the next refresh tick.
        let mut c = st2
            .collector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = c.refresh();
        let version = st2
            .snap
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .version
            + 1;
        match build_snapshot(&mut c, st2.cfg.limit, version) {
            Ok(s) => {
                *st2.snap
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
            }
            Err(e) => tracing::warn!(error = %e, "Cannot refresh the dashboard after a note"),
        }
        Ok::<_, crate::index::notes::NotesError>(a)
    })
    .await;
    let (resp, why) = match saved {
        Ok(Ok(a)) => (axum::Json(a).into_response(), None),
        Ok(Err(e)) => {
            let status = match e {
                crate::index::notes::NotesError::BadTag(_)
                | crate::index::notes::NotesError::TooManyTags(_)
                | crate::index::notes::NotesError::NoteTooLong(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let why = crate::index::error_chain(&e);
            (refuse(status, why.clone()), Some(why))
        }
        Err(e) => {
            let why = e.to_string();
            (
                refuse(StatusCode::INTERNAL_SERVER_ERROR, why.clone()),
                Some(why),
            )
        }
    };
    let w = what(Action::Annotate, &req.file, &resp, why.as_deref());
    audited(&st, peer, w, resp).await
}

/// `attachment; filename="…"` for the file at `path` (its name, with `ext` replacing the
/// cassette suffix when given), reduced to characters safe in a header.
fn attachment(path: &Path, ext: Option<&str>) -> String {
    let name = match ext {
        Some(ext) => format!("{}.{ext}", super::model::download_name(path)),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    format!("attachment; filename=\"{}\"", paths::plain_name(&name))
}

async fn api_compare(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<PairQ>,
) -> Response {
    let loaded = match load_rel(&st, &q.a).await {
        Ok(a) => load_rel(&st, &q.b).await.map(|b| (a, b)),
        Err(f) => Err(f),
    };
    let ((pa, la), (pb, lb)) = match loaded {
        Ok(x) => x,
        Err(f) => {
            let w = What {
                other: Some(&q.b),
                ..what(Action::View, &q.a, &f.resp, Some(&f.why))
            };
            return audited(&st, peer, w, f.resp).await;
        }
    };
    let resp = compare_of(&st, &q, (&pa, &la), (&pb, &lb));
    let w = What {
        other: Some(&q.b),
        ..what(Action::View, &q.a, &resp, None)
    };
    audited(&st, peer, w, resp).await
}

fn compare_of(
    st: &AppState,
    q: &PairQ,
    (pa, la): (&Path, &super::Loaded),
    (pb, lb): (&Path, &super::Loaded),
) -> Response {
    let threshold = 20.0;
    let report = Report::new(
        q.a.clone(),
        q.b.clone(),
        format!(
            "{} {} vs {} {}",
            la.cassette.request.method,
            la.cassette.request.path,
            lb.cassette.request.method,
            lb.cassette.request.path
        ),
        threshold,
        compare(&la.cassette, &lb.cassette, threshold, 1.0, &[]),
    );
    let a = super::view("cmp-a", &q.a, &q.a, pa, la);
    let b = super::view("cmp-b", &q.b, &q.b, pb, lb);
    match st.renderer.compare(&a, &b, &report, true) {
        Ok(b) => html(StatusCode::OK, b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::index::error_chain(&e),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ReplayBody {
    file: String,
}

fn verdict_fragment(st: &AppState, status: StatusCode, u: &Unavailable) -> Response {
    match st.renderer.verdict("replay", Err(u)) {
        Ok(b) => html(status, b),
        Err(e) => (status, format!("{}: {} ({e})", u.title, u.message)).into_response(),
    }
}

async fn api_replay(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let req: ReplayBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("expected {{\"file\": \"relative/path.json\"}}: {e}");
            let resp = verdict_fragment(
                &st,
                StatusCode::BAD_REQUEST,
                &Unavailable {
                    title: "Bad request".into(),
                    message: why.clone(),
                    command: None,
                },
            );
            let w = what(Action::Replay, "", &resp, Some(&why));
            return audited(&st, peer, w, resp).await;
        }
    };
    let path = match paths::resolve(&st.cfg.dir, &req.file) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("{}: {e}", req.file);
            let resp = verdict_fragment(
                &st,
                path_status(&e),
                &Unavailable {
                    title: "Refused".into(),
                    message: why.clone(),
                    command: None,
                },
            );
            let w = what(Action::Replay, &req.file, &resp, Some(&why));
            return audited(&st, peer, w, resp).await;
        }
    };
    let socket = st.cfg.replay_socket.clone();
    let (resp, result, why) =
        match replay_client::replay(&socket, &path, st.cfg.replay_timeout).await {
            Ok(v) => {
                let outcome = v.verdict.clone();
                let resp = match st.renderer.verdict("replay", Ok(&v)) {
                    Ok(b) => html(StatusCode::OK, b),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        crate::index::error_chain(&e),
                    )
                        .into_response(),
                };
                (resp, outcome, Some(v.summary))
            }
            Err(e) => (
                verdict_fragment(&st, StatusCode::OK, &unavailable(&socket, &e)),
                "error".to_owned(),
                Some(crate::index::error_chain(&e)),
            ),
        };
    let w = What {
        result: &result,
        ..what(Action::Replay, &req.file, &resp, why.as_deref())
    };
    audited(&st, peer, w, resp).await
}

fn unavailable(socket: &Path, e: &ReplayError) -> Unavailable {
    match e {
        ReplayError::NotRunning { .. } => Unavailable {
            title: "The replay service is not running".into(),
            message: format!(
                "Replaying runs the recorded app under eBPF, which needs root; a small privileged \
                 service does it for this page. Nothing listens on {}.",
                socket.display()
            ),
            command: Some(replay_client::start_command(socket)),
        },
        ReplayError::Permission { .. } => Unavailable {
            title: "Not allowed to use the replay service".into(),
            message: format!(
                "{}: permission denied. The service decides who may connect (its socket's owner, \
                 group and mode); run this server as a user it allows.",
                socket.display()
            ),
            command: None,
        },
        other => Unavailable {
            title: "Replay failed".into(),
            message: crate::index::error_chain(other),
            command: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn fixture_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cassettes");
        for sub in ["py", "ours"] {
            std::fs::create_dir(tmp.path().join(sub)).unwrap();
            for e in std::fs::read_dir(src.join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), tmp.path().join(sub).join(e.file_name())).unwrap();
            }
        }
        tmp
    }

    /// One HTTP/1.1 exchange; returns (status, headers + body text).
    fn http(addr: SocketAddr, raw: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }

    /// `serve` of `dir` on a free loopback port, audit log under `state`.
    struct Running {
        rt: tokio::runtime::Runtime,
        addr: SocketAddr,
        token: String,
        url: String,
        stop: tokio::sync::oneshot::Sender<()>,
        handle: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Running {
        fn start(dir: &Path, state: &Path) -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let server = rt
                .block_on(Server::bind(ServeConfig {
                    dir: dir.to_path_buf(),
                    addr: "127.0.0.1:0".parse().unwrap(),
                    limit: 100,
                    replay_socket: dir.join("no-such.sock"),
                    replay_timeout: Duration::from_secs(5),
                    refresh: Duration::from_millis(200),
                    audit_log: Some(state.join("audit/serve.jsonl")),
                    namespace: None,
                    pod: None,
                }))
                .unwrap();
            let (addr, token, url) = (server.addr, server.state.token.clone(), server.url());
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let handle = rt.spawn(server.run(async {
                let _ = rx.await;
            }));
            Self {
                rt,
                addr,
                token,
                url,
                stop,
                handle,
            }
        }

        fn stop(self) {
            self.stop.send(()).unwrap();
            self.rt.block_on(self.handle).unwrap().unwrap();
        }
    }

    #[test]
    fn tokens_hosts_and_paths() {
        let dir = fixture_dir();
        let state = tempfile::tempdir().unwrap();
        let running = Running::start(dir.path(), state.path());
        let (addr, token, url) = (running.addr, running.token.clone(), running.url.clone());
        assert!(url.starts_with(&format!("http://127.0.0.1:{}/?token=", addr.port())));
        let host = format!("127.0.0.1:{}", addr.port());
        let get = |path: &str, extra: &str| {
            http(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"),
            )
        };
        let cookie = format!("Cookie: timetracer_token_{}={token}\r\n", addr.port());

        // No token: refused everywhere.
        assert_eq!(get("/", "").0, 401);
        assert_eq!(get("/api/rows", "").0, 401);
        assert_eq!(get("/?token=nope", "").0, 401);
        // The printed URL sets the cookie and redirects.
        let (st, text) = get(&format!("/?token={token}"), "");
        assert_eq!(st, 303, "{text}");
        assert!(text.contains("HttpOnly; SameSite=Strict"));
        let (st, page) = get("/", &cookie);
        assert_eq!(st, 200);
        assert!(
            page.contains("content-security-policy: default-src 'none'"),
            "{page}"
        );
        assert!(page.contains("/users/42"));
        // DNS rebinding: another Host is refused even with the token.
        let (st, _) = http(
            addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n{cookie}\r\n",
                addr.port()
            ),
        );
        assert_eq!(st, 421);
        // Paths outside the directory.
        for bad in [
            "../../etc/passwd",
            "%2Fetc%2Fpasswd",
            "..%2F..%2Fx.json",
            ".timetracer-index.sqlite3",
        ] {
            let (st, _) = get(&format!("/api/detail?f={bad}"), &cookie);
            assert!(st == 400 || st == 403 || st == 404, "{bad}: {st}");
        }
        assert_eq!(
            get("/api/detail?f=py/GET__users_42__e92ca5c8.json", &cookie).0,
            200
        );
        // Actions need the header, a cookie is not enough.
        let body = r#"{"file":"py/GET__users_42__e92ca5c8.json"}"#;
        let post = |extra: &str| {
            http(
                addr,
                &format!(
                    "POST /api/replay HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                ),
            )
        };
        assert_eq!(post(&cookie).0, 403);
        assert_eq!(post(&format!("{TOKEN_HEADER}: wrong\r\n")).0, 403);
        let (st, _) = post(&format!(
            "{TOKEN_HEADER}: {token}\r\nOrigin: http://evil.example\r\n"
        ));
        assert_eq!(st, 403);
        // With the token: the service is absent here, so the answer says how to start it.
        let (st, text) = post(&format!("{TOKEN_HEADER}: {token}\r\n"));
        assert_eq!(st, 200, "{text}");
        assert!(text.contains("The replay service is not running"), "{text}");
        assert!(
            text.contains("sudo timetracer-agent replay-server --socket"),
            "{text}"
        );

        // Downloads (the file as stored) and exports, each audited like the views and the
        // replay above.
        let good = "py/GET__users_42__e92ca5c8.json";
        let (st, text) = get(&format!("/api/download?f={good}"), &cookie);
        assert_eq!(st, 200, "{text}");
        assert!(text.contains("attachment; filename=\"GET__users_42__e92ca5c8.json\""));
        let stored = std::fs::read_to_string(dir.path().join(good)).unwrap();
        assert!(text.ends_with(&stored), "the bytes as stored");
        assert_eq!(get("/api/download?f=../../etc/passwd", &cookie).0, 400);
        assert_eq!(get(&format!("/api/download?f={good}"), "").0, 401);
        let (st, har) = get(&format!("/api/export?f={good}&to=har"), &cookie);
        assert_eq!(st, 200, "{har}");
        assert!(har.contains("\"log\"") && har.contains("GET__users_42__e92ca5c8.har"));
        let (st, curl) = get(&format!("/api/export?f={good}&to=curl"), &cookie);
        assert_eq!(st, 200);
        assert!(
            curl.contains("curl ") && curl.contains("/users/42"),
            "{curl}"
        );
        assert_eq!(get(&format!("/api/export?f={good}&to=pdf"), &cookie).0, 400);

        let log_path = state.path().join("audit/serve.jsonl");
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let find = |action: &str, cassette: &str, result: &str| {
            lines.iter().find(|l| {
                l["action"] == action && l["cassette"] == cassette && l["result"] == result
            })
        };
        let me = nix::unistd::geteuid().as_raw();
        let dl = find("download", good, "ok").expect("download audited");
        assert_eq!(dl["status"], 200);
        assert_eq!(dl["uid"], me, "the client's uid, from its socket");
        assert!(dl["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(dl["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            dl["dir"],
            dir.path().canonicalize().unwrap().display().to_string()
        );
        let refused = find("download", "../../etc/passwd", "refused").expect("refusal audited");
        assert!(refused["detail"].as_str().is_some());
        assert!(find("export", good, "ok").is_some_and(|l| l["detail"] == "har"));
        assert!(find("export", good, "ok").is_some());
        assert!(find("export", good, "refused").is_some(), "to=pdf");
        assert!(find("view", good, "ok").is_some(), "the detail pane");
        assert!(find("view", "../../etc/passwd", "refused").is_some());
        // The replay service is absent: the attempt is still audited, as an error.
        let rp = find("replay", good, "error").expect("replay audited");
        assert!(
            rp["detail"].as_str().unwrap().contains("no-such.sock"),
            "{rp}"
        );
        // Unauthenticated requests never reach a handler: not audited as actions.
        assert_eq!(
            lines
                .iter()
                .filter(|l| l["action"] == "download" && l["cassette"] == good)
                .count(),
            1
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&log_path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        // New cassettes appear without reload: the version moves.
        let (_, rows) = get("/api/rows", &cookie);
        let v: u64 = rows
            .split("\"version\":")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert_eq!(get(&format!("/api/rows?v={v}"), &cookie).0, 204);
        std::fs::copy(
            dir.path().join("py/GET__users_42__e92ca5c8.json"),
            dir.path().join("py/GET__users_43__00000000.json"),
        )
        .unwrap();
        let t = std::time::Instant::now();
        loop {
            let (st, _) = get(&format!("/api/rows?v={v}"), &cookie);
            if st == 200 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no update");
            std::thread::sleep(Duration::from_millis(100));
        }
        running.stop();
    }

    #[test]
    fn notes_api_needs_the_token_a_same_origin_and_a_cassette_inside() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = fixture_dir();
        let state = tempfile::tempdir().unwrap();
        let running = Running::start(dir.path(), state.path());
        let (addr, token) = (running.addr, running.token.clone());
        let host = format!("127.0.0.1:{}", addr.port());
        let cookie = format!("Cookie: timetracer_token_{}={token}\r\n", addr.port());
        let post = |body: &str, extra: &str| {
            http(
                addr,
                &format!(
                    "POST /api/notes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                ),
            )
        };
        let good = "py/GET__users_42__e92ca5c8.json";
        let body = format!(
            r#"{{"file":"{good}","tags":["Flaky","ticket-7"],"note":"<script>alert(1)</script>"}}"#
        );
        let with_token = format!("{TOKEN_HEADER}: {token}\r\n");
        let store = dir.path().join(crate::index::notes::NOTES_FILE);
        let outside = tempfile::NamedTempFile::with_suffix(".json").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out.json")).unwrap();
        // CSRF: a cookie alone (what a cross-site form sends), a wrong token, a foreign Origin.
        assert_eq!(post(&body, &cookie).0, 403);
        assert_eq!(post(&body, &format!("{TOKEN_HEADER}: nope\r\n")).0, 403);
        assert_eq!(
            post(
                &body,
                &format!(
                    "{with_token}Origin: http://evil.example:{}\r\n",
                    addr.port()
                )
            )
            .0,
            403
        );
        assert_eq!(post(&body, "").0, 403);
        assert!(!store.exists(), "nothing written by refused requests");
        // Path traversal and other names that are not a cassette inside the directory.
        for (bad, want) in [
            ("../../etc/passwd", 400),
            ("/etc/passwd", 400),
            ("py/../../x.json", 400),
            (".timetracer-notes.json", 400),
            ("py/none__such.json", 404),
            ("out.json", 403),
        ] {
            let b = format!(r#"{{"file":"{bad}","tags":["x"]}}"#);
            let (st, text) = post(&b, &with_token);
            assert_eq!(st, want, "{bad}: {text}");
            assert!(text.contains("\"error\""), "{text}");
        }
        assert!(!store.exists());
        // Bad tags, long notes, unknown fields: refused with the reason.
        let (st, text) = post(
            &format!(r#"{{"file":"{good}","tags":["two words"]}}"#),
            &with_token,
        );
        assert_eq!(st, 400);
        assert!(text.contains("not allowed"), "{text}");
        assert_eq!(
            post(&format!(r#"{{"file":"{good}","owner":"x"}}"#), &with_token).0,
            400
        );
        // Allowed: stored beside the cassette, 0600, the cassette untouched.
        let before = std::fs::read(dir.path().join(good)).unwrap();
        let (st, text) = post(&body, &format!("{with_token}Origin: http://{host}\r\n"));
        assert_eq!(st, 200, "{text}");
        let (st, _) = post(&body.replace("py/GET", "py//GET"), &with_token);
        assert_eq!(st, 200, "the same cassette under one key");
        assert!(text.contains(r#""tags":["flaky","ticket-7"]"#), "{text}");
        assert_eq!(std::fs::read(dir.path().join(good)).unwrap(), before);
        let mode = std::fs::metadata(&store).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let saved = crate::index::notes::load(dir.path()).unwrap();
        assert_eq!(saved.cassettes[good].note, "<script>alert(1)</script>");
        // Shown escaped in the detail and in the rows at once.
        let get = |path: &str| {
            http(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{cookie}\r\n"
                ),
            )
        };
        let (st, detail) = get(&format!("/api/detail?f={good}"));
        assert_eq!(st, 200);
        assert!(
            detail.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{detail}"
        );
        assert!(!detail.contains("<script>alert"), "{detail}");
        assert!(detail.contains("ticket-7"));
        let (_, rows) = get("/api/rows");
        assert!(rows.contains(r#""g":["flaky","ticket-7"]"#), "{rows}");
        // Audited.
        let log = std::fs::read_to_string(state.path().join("audit/serve.jsonl")).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains(r#""action":"annotate""#) && l.contains(r#""result":"ok""#)),
            "{log}"
        );
        assert!(log.lines().any(|l| l.contains(r#""action":"annotate""#)
            && l.contains("../../etc/passwd")
            && l.contains(r#""result":"refused""#)));
        // Empty tags and note: forgotten.
        assert_eq!(
            post(
                &format!(r#"{{"file":"{good}","tags":[],"note":""}}"#),
                &with_token
            )
            .0,
            200
        );
        assert!(
            crate::index::notes::load(dir.path())
                .unwrap()
                .cassettes
                .is_empty()
        );
        running.stop();
    }

    #[test]
    fn the_printed_url_keeps_a_shared_links_filters() {
        let dir = fixture_dir();
        let state = tempfile::tempdir().unwrap();
        let running = Running::start(dir.path(), state.path());
        let (addr, token) = (running.addr, running.token.clone());
        let (st, text) = http(
            addr,
            &format!(
                "GET /?q=users&token={token}&status=5xx%2C4xx HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                addr.port()
            ),
        );
        assert_eq!(st, 303);
        assert!(
            text.contains("location: /?q=users&status=5xx%2C4xx\r\n"),
            "{text}"
        );
        assert!(!text.contains("location: /?token"), "{text}");
        running.stop();
    }
}
