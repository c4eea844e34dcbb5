//! `timetracer-agent node`: the selected pods of this node as a recording [`Target`].
//!
//! ```text
//! k8s thread (tokio, current-thread)             recording thread (record::run)
//!   kube watcher per namespace ──PodEvent──▶ Pods::poll (every 10 ms): decide (pods.rs),
//!   (list + watch spec.nodeName=NODE,          container id → cgroup dir (cgroup.rs walk),
//!    resume from resourceVersion, relist        Cgroups target: add/remove dirs, seed pids
//!    on 410, backoff on errors)              writer thread: PodSink (pod facts, per-pod
//!   /metrics /healthz /readyz (axum) ◀─Shared─  sampling) … Files … PodCassettes
//! ```
//!
//! A pod is *attached* while it is selected: its containers' ids are in [`Shared`]'s map (the
//! writer's sinks find a request's pod from its process's cgroup path) and their cgroup
//! directories are followed by the [`Cgroups`] target (processes there now are seeded; those
//! that `exec` there later are traced from their first syscall). A deleted or deselected pod
//! is released: its cgroups and processes leave the kernel's sets at once, its container ids
//! and tallies are freed after [`GRACE`] (its last requests are still being written).
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::record::target::{Cgroups, Seeder, Target};
use crate::record::{self, sink};

use super::metrics::{Attached, Shared};
use super::pods::{self, PodFacts, PodView, Selection};
use super::{api, cgroup};

/// How long a released pod's container ids (and tallies) are kept for its last requests
/// (a request is written at most ~3.3 s after its response).
pub const GRACE: Duration = Duration::from_secs(15);
/// How often the cgroup tree is walked while a selected container's cgroup is not found (a
/// status can name a container a moment before its cgroup is visible). A walk reads one
/// directory per cgroup: 1,000 cgroups took 10 ms with Python's `scandir` on our 2-vCPU VM,
/// an upper bound for this walk.
const WALK_EVERY: Duration = Duration::from_millis(200);

/// Why node mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no node name: pass --node-name or set NODE_NAME (in a DaemonSet, from the downward \
         API: `env: [{{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}]`)"
    )]
    NoNodeName,
    #[error(transparent)]
    Api(#[from] api::Error),
    #[error(
        "cannot serve metrics on {addr} (is another agent running? choose another \
         --metrics-addr)"
    )]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the Kubernetes thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Record(#[from] record::Error),
}

/// What `timetracer-agent node` was asked.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub selection: Selection,
    pub node: String,
    /// `--kubeconfig`; `None`: `KUBECONFIG`, in-cluster, `~/.kube/config` ([`api::source`]).
    pub kubeconfig: Option<PathBuf>,
    pub metrics_addr: SocketAddr,
}

/// What the watcher tells the target.
#[derive(Debug)]
enum PodEvent {
    Upsert(Box<PodView>),
    Delete(String),
    /// Every namespace has been listed once.
    Synced,
}

/// One pod the watcher reported.
#[derive(Debug)]
struct PodState {
    view: PodView,
    /// Selected: its facts (with the per-pod policy).
    facts: Option<Arc<PodFacts>>,
    /// Its followed containers: id → cgroup directory (`None` until found).
    containers: HashMap<String, Option<PathBuf>>,
    problems: Vec<String>,
}

/// The selected pods of this node (see the module doc).
pub struct Pods {
    opts: NodeOptions,
    shared: Arc<Shared>,
    rx: Receiver<PodEvent>,
    cgroups: Cgroups,
    mount: PathBuf,
    pods: HashMap<String, PodState>,
    /// Container id → cgroup directory, from the last walk.
    found: HashMap<String, PathBuf>,
    last_walk: Option<Instant>,
    /// Released containers and pods, freed after [`GRACE`].
    releasing: VecDeque<(Instant, Release)>,
    last_publish: Option<Instant>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
enum Release {
    Container(String),
    Pod(String, String),
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods")
            .field("node", &self.opts.node)
            .field("pods", &self.pods.len())
            .finish_non_exhaustive()
    }
}

impl Pods {
    /// Connects to the API server (in-cluster, or the kubeconfig), starts watching this node's
    /// pods and serving `/metrics`; tracing starts when the recording seeds the target.
    pub fn start(opts: NodeOptions) -> Result<Self, Error> {
        if opts.node.is_empty() {
            return Err(Error::NoNodeName);
        }
        let cgroups = Cgroups::empty()?;
        let mount = cgroup::host_v2_mount().map_err(record::Error::CgroupFs)?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let opts = opts.clone();
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tt-k8s".into())
                .spawn(move || k8s_thread(&opts, &shared, &tx, &ready_tx, stop_rx))
                .map_err(Error::Thread)?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Thread(std::io::Error::other(
                    "the Kubernetes thread ended before it started",
                )));
            }
        }
        Ok(Self {
            opts,
            shared,
            rx,
            cgroups,
            mount,
            pods: HashMap::new(),
            found: HashMap::new(),
            last_walk: None,
            releasing: VecDeque::new(),
            last_publish: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// What the sinks and the metrics server share with this target.
    #[must_use]
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Applies what the watcher reported; true when something arrived.
    fn drain(&mut self, seeder: &mut Seeder<'_>) -> bool {
        let mut any = false;
        while let Ok(ev) = self.rx.try_recv() {
            any = true;
            match ev {
                PodEvent::Upsert(view) => self.upsert(*view, seeder),
                PodEvent::Delete(uid) => self.delete(&uid, seeder),
                PodEvent::Synced => {
                    self.shared.synced.store(true, Ordering::Relaxed);
                    tracing::info!(pods = self.pods.len(), "Pods of this node listed");
                }
            }
        }
        any
    }

    fn upsert(&mut self, view: PodView, seeder: &mut Seeder<'_>) {
        let decision = pods::decide(&self.opts.selection, &view);
        let uid = view.uid.clone();
        let state = self.pods.entry(uid).or_insert_with(|| PodState {
            view: view.clone(),
            facts: None,
            containers: HashMap::new(),
            problems: Vec::new(),
        });
        if decision.problems != state.problems {
            for p in &decision.problems {
                tracing::warn!(pod = %view.key(), "{p}");
            }
            self.shared
                .annotation_errors
                .fetch_add(decision.problems.len() as u64, Ordering::Relaxed);
            state.problems = decision.problems;
        }
        let wanted: HashMap<String, String> = match &decision.record {
            Ok(_) => view
                .containers
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let was_selected = state.facts.is_some();
        state.facts = decision
            .record
            .ok()
            .map(|policy| PodFacts::new(&view, policy));
        match (&decision.record, was_selected) {
            (Ok(_), false) => tracing::info!(pod = %view.key(), "Pod selected"),
            (Err(why), true) => tracing::info!(pod = %view.key(), ?why, "Pod no longer selected"),
            _ => {}
        }
        state.view = view;
        // Containers gone from the pod (restarted: a new id) or from the selection.
        let gone: Vec<String> = state
            .containers
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(Some(dir)) = state.containers.remove(&id) {
                self.cgroups.remove_dir(&dir, seeder);
            }
            self.releasing
                .push_back((Instant::now() + GRACE, Release::Container(id)));
        }
        if let Some(facts) = &state.facts
            && let Ok(mut map) = self.shared.containers.write()
        {
            for (id, name) in &wanted {
                map.insert(
                    id.clone(),
                    Attached {
                        pod: Arc::clone(facts),
                        container: name.clone(),
                    },
                );
                state.containers.entry(id.clone()).or_insert(None);
            }
        }
    }

    fn delete(&mut self, uid: &str, seeder: &mut Seeder<'_>) {
        let Some(state) = self.pods.remove(uid) else {
            return;
        };
        if state.facts.is_some() {
            tracing::info!(pod = %state.view.key(), "Pod deleted; released");
        }
        let until = Instant::now() + GRACE;
        for (id, dir) in state.containers {
            if let Some(dir) = dir {
                self.cgroups.remove_dir(&dir, seeder);
            }
            self.releasing.push_back((until, Release::Container(id)));
        }
        self.releasing
            .push_back((until, Release::Pod(state.view.namespace, state.view.name)));
    }

    /// Finds the cgroup directories of selected containers not found yet (walking the
    /// hierarchy at most every [`WALK_EVERY`], unless `now`: pod events just arrived).
    fn resolve(&mut self, now: bool) {
        let missing = self
            .pods
            .values()
            .flat_map(|p| p.containers.iter())
            .any(|(id, dir)| dir.is_none() && !self.found.contains_key(id));
        if missing && (now || self.last_walk.is_none_or(|t| t.elapsed() >= WALK_EVERY)) {
            self.last_walk = Some(Instant::now());
            self.found.clear();
            walk_containers(&self.mount, &self.mount, &mut self.found);
        }
        for p in self.pods.values_mut() {
            for (id, dir) in &mut p.containers {
                if dir.is_none()
                    && let Some(d) = self.found.get(id)
                {
                    tracing::info!(pod = %p.view.key(), container = %id, cgroup = %d.display(), "Following container");
                    self.cgroups.add_dir(d.clone());
                    *dir = Some(d.clone());
                }
            }
        }
    }

    /// Frees what was released more than [`GRACE`] ago.
    fn free(&mut self) {
        let now = Instant::now();
        while self.releasing.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, r)) = self.releasing.pop_front() else {
                break;
            };
            match r {
                Release::Container(id) => {
                    // Still wanted by a pod (a relist brought it back): keep it.
                    if !self.pods.values().any(|p| p.containers.contains_key(&id))
                        && let Ok(mut m) = self.shared.containers.write()
                    {
                        m.remove(&id);
                    }
                }
                Release::Pod(ns, name) => {
                    let back = self
                        .pods
                        .values()
                        .any(|p| p.view.namespace == ns && p.view.name == name);
                    if !back && let Ok(mut m) = self.shared.pods.lock() {
                        m.remove(&(ns, name));
                    }
                }
            }
        }
    }

    fn publish(&mut self, seeder: &mut Seeder<'_>) {
        if self
            .last_publish
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_publish = Some(Instant::now());
        let attached = self.pods.values().filter(|p| p.facts.is_some()).count();
        self.shared
            .attached_pods
            .store(attached as u64, Ordering::Relaxed);
        self.shared
            .attached_containers
            .store(self.cgroups.dirs().len() as u64, Ordering::Relaxed);
        self.shared
            .known_pods
            .store(self.pods.len() as u64, Ordering::Relaxed);
        let drops = seeder.kernel_drops();
        if let Ok(mut k) = self.shared.kernel_drops.lock() {
            *k = drops;
        }
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Target for Pods {
    fn describe(&self) -> String {
        format!("node {}", self.opts.node)
    }
    fn seed(&mut self, seeder: &mut Seeder<'_>) -> Result<(), record::Error> {
        let _ = self.shared.counters.set(seeder.counters());
        // The pods listed so far (up to 5 s): the ones already running are traced before the
        // agent says it is ready.
        let until = Instant::now() + Duration::from_secs(5);
        while !self.shared.synced.load(Ordering::Relaxed) && Instant::now() < until {
            if !self.drain(seeder) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.resolve(true);
        self.cgroups.seed(seeder)
    }
    fn start(&mut self) -> Result<(), record::Error> {
        self.shared.started.store(true, Ordering::Relaxed);
        self.shared.polled();
        Ok(())
    }
    fn ready_message(&self, out: &Path) -> String {
        let sel = &self.opts.selection;
        let what = match &sel.selector {
            Some(s) if s.is_empty() => "every pod".to_owned(),
            Some(s) => format!("pods matching `{s}`"),
            None => format!("pods annotated {}=\"true\"", pods::ANNOTATION_RECORD),
        };
        let ns = if sel.namespaces.is_empty() {
            "all namespaces".to_owned()
        } else {
            format!("namespaces {}", sel.namespaces.join(","))
        };
        format!(
            "node {}: recording {what} in {ns} ({} attached); writing cassettes to {}; \
             metrics on http://{}/metrics; Ctrl-C to stop",
            self.opts.node,
            self.pods.values().filter(|p| p.facts.is_some()).count(),
            out.display(),
            self.opts.metrics_addr,
        )
    }
    fn poll(&mut self, seeder: &mut Seeder<'_>) -> Result<(), record::Error> {
        self.shared.polled();
        // New pods or containers: look for their cgroups at once (one walk per batch).
        let arrived = self.drain(seeder);
        self.resolve(arrived);
        self.free();
        self.publish(seeder);
        self.cgroups.poll(seeder)
    }
    fn finished(&mut self) -> bool {
        false
    }
}

/// Every container cgroup below `dir`: id → directory (a container's own sub-cgroups are
/// not entered).
fn walk_containers(mount: &Path, dir: &Path, out: &mut HashMap<String, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let rel = path.strip_prefix(mount).unwrap_or(&path);
        let rel = format!("/{}", rel.display());
        match cgroup::container_of(&rel) {
            Some(c) if c.cgroup == rel => {
                out.insert(c.id, path);
            }
            _ => walk_containers(mount, &path, out),
        }
    }
}

/// The k8s thread: the client, the watchers and the metrics server on one current-thread
/// runtime; start-up errors go back through `ready`.
fn k8s_thread(
    opts: &NodeOptions,
    shared: &Arc<Shared>,
    tx: &Sender<PodEvent>,
    ready: &mpsc::SyncSender<Result<(), Error>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(Error::Thread(e)));
            return;
        }
    };
    rt.block_on(async move {
        let started = async {
            let client = client(opts).await?;
            let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
                .await
                .map_err(|source| Error::Metrics {
                    addr: opts.metrics_addr,
                    source,
                })?;
            Ok::<_, Error>((client, listener))
        };
        let (client, listener) = match started.await {
            Ok(v) => {
                let _ = ready.send(Ok(()));
                v
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let app = metrics_router(Arc::clone(shared));
        let serve = axum::serve(listener, app);
        tokio::select! {
            () = watch_pods(client, opts, shared, tx) => {}
            r = serve => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "The metrics server stopped");
                }
            }
            _ = stop => {}
        }
    });
}

/// The API client (see [`api`]: where its configuration comes from, and the start-up check).
async fn client(opts: &NodeOptions) -> Result<kube::Client, api::Error> {
    let kubeconfig_env = std::env::var("KUBECONFIG").ok();
    let service_host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    let source = api::source(
        opts.kubeconfig.as_deref(),
        kubeconfig_env.as_deref(),
        service_host.as_deref(),
    );
    api::connect(
        &source,
        &opts.node,
        opts.selection.namespaces.first().map(String::as_str),
    )
    .await
}

/// Lists and watches the node's pods in each namespace (all namespaces when none was given)
/// with kube-runtime's watcher (resumes from the last resourceVersion, relists after a 410,
/// backs off on errors), and reports what changed. A relist's pods that no longer exist are
/// reported deleted once it completes.
async fn watch_pods(
    client: kube::Client,
    opts: &NodeOptions,
    shared: &Shared,
    tx: &Sender<PodEvent>,
) {
    let mut config = watcher::Config::default().fields(&format!("spec.nodeName={}", opts.node));
    if let Some(s) = opts.selection.selector.as_ref().filter(|s| !s.is_empty()) {
        config = config.labels(&s.to_string());
    }
    let apis: Vec<kube::Api<Pod>> = if opts.selection.namespaces.is_empty() {
        vec![kube::Api::all(client)]
    } else {
        opts.selection
            .namespaces
            .iter()
            .map(|ns| kube::Api::namespaced(client.clone(), ns))
            .collect()
    };
    let n = apis.len();
    let streams = apis.into_iter().enumerate().map(|(i, api)| {
        watcher(api, config.clone())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    });
    let mut all = futures::stream::select_all(streams);
    // Per stream: the pods it reported, the pods of the relist in progress, listed once.
    let mut known: Vec<HashSet<String>> = vec![HashSet::new(); n];
    let mut relisting: Vec<Option<HashSet<String>>> = vec![None; n];
    let mut listed = vec![false; n];
    let send = |ev: PodEvent| {
        let _ = tx.send(ev);
    };
    while let Some((i, ev)) = all.next().await {
        match ev {
            Ok(watcher::Event::Init) => {
                if listed[i] {
                    shared.watch_relists.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("Relisting the pods of this node");
                }
                relisting[i] = Some(HashSet::new());
            }
            Ok(watcher::Event::InitApply(pod) | watcher::Event::Apply(pod)) => {
                if let Some(view) = PodView::from_pod(&pod) {
                    if let Some(r) = &mut relisting[i] {
                        r.insert(view.uid.clone());
                    }
                    known[i].insert(view.uid.clone());
                    send(PodEvent::Upsert(Box::new(view)));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(seen) = relisting[i].take() {
                    for uid in known[i].difference(&seen) {
                        send(PodEvent::Delete(uid.clone()));
                    }
                    known[i] = seen;
                }
                if !listed[i] {
                    listed[i] = true;
                    if listed.iter().all(|l| *l) {
                        send(PodEvent::Synced);
                    }
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid {
                    known[i].remove(&uid);
                    send(PodEvent::Delete(uid));
                }
            }
            Err(e) => {
                shared.watch_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Pod watch failed; retrying");
            }
        }
    }
}

fn metrics_router(shared: Arc<Shared>) -> axum::Router {
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    /// 200 with `ok`, or 503 with the reason.
    fn probe(r: Result<(), String>, ok: &str) -> (StatusCode, String) {
        match r {
            Ok(()) => (StatusCode::OK, format!("{ok}\n")),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }
    axum::Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    s.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(|State(s): State<Arc<Shared>>| async move { probe(s.healthy(), "ok") }),
        )
        .route(
            "/readyz",
            get(|State(s): State<Arc<Shared>>| async move {
                probe(s.ready().map_err(str::to_owned), "ready")
            }),
        )
        .with_state(shared)
}

/// The first sink of node mode: finds the request's pod from its process's cgroup and
/// attaches the pod's facts (`session.k8s`, the cassette's directory); a request of no
/// selected pod is discarded and counted. Then it applies the pod's sampling and
/// errors-only overrides (after `exclude`, which [`chain`] puts first).
#[derive(Debug)]
pub struct PodSink {
    shared: Arc<Shared>,
    filters: record::Filters,
}

impl sink::Sink for PodSink {
    fn name(&self) -> &'static str {
        "pod"
    }
    fn accept(&mut self, item: &mut sink::Finished, ctx: &sink::Ctx) {
        let p = &item.request.process;
        let path = p.cgroup.clone().or_else(|| {
            // Described before node mode read cgroups (or /proc was gone): try now.
            std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid))
                .ok()
                .and_then(|c| cgroup::v2_path(&c).map(str::to_owned))
        });
        let attached = path
            .as_deref()
            .and_then(cgroup::container_of)
            .and_then(|c| self.shared.container(&c.id));
        let Some(a) = attached else {
            self.shared.unattributed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pid = p.pid, cgroup = ?path, "Request of no selected pod; not written");
            item.fate = sink::Fate::Discard;
            return;
        };
        self.shared.count(&a.pod, |c| c.requests += 1);
        let policy = a.pod.policy;
        let rate = policy.sample_rate.unwrap_or(self.filters.sample_rate);
        let errors_only = policy.errors_only.unwrap_or(self.filters.errors_only);
        item.pod = Some(a);
        if item.fate != sink::Fate::Store {
            return;
        }
        if rate < 1.0 && sink::random_unit() >= rate {
            ctx.counters.inc(crate::telemetry::Counter::SampledOut);
            item.fate = sink::Fate::Show;
        } else if errors_only && !item.is_error() {
            ctx.counters.inc(crate::telemetry::Counter::NotError);
            item.fate = sink::Fate::Show;
        }
    }
}

/// Counts each pod's written cassettes (last in the chain).
#[derive(Debug)]
pub struct PodCassettes(Arc<Shared>);

impl sink::Sink for PodCassettes {
    fn name(&self) -> &'static str {
        "pod-cassettes"
    }
    fn accept(&mut self, item: &mut sink::Finished, _ctx: &sink::Ctx) {
        if item.written.is_some()
            && let Some(a) = &item.pod
        {
            self.0.count(&a.pod, |c| c.cassettes += 1);
        }
    }
}

/// Node mode's chain: exclude → pod (facts, per-pod sampling and errors-only) → files →
/// index → retention (`--retain`) → S3 (when configured) → per-pod cassette tallies.
#[must_use]
pub fn chain(
    plan: &record::RecordPlan,
    shared: &Arc<Shared>,
    s3: Option<crate::s3::spool::Spool>,
) -> sink::Chain {
    let mut sinks: Vec<Box<dyn sink::Sink>> = Vec::new();
    if !plan.filters.exclude_paths.is_empty() {
        sinks.push(Box::new(sink::Exclude(plan.filters.exclude_paths.clone())));
    }
    sinks.push(Box::new(PodSink {
        shared: Arc::clone(shared),
        filters: plan.filters.clone(),
    }));
    sinks.push(Box::new(sink::Files::new(
        plan.out.clone(),
        plan.compression,
        plan.encrypt_to.clone(),
    )));
    sinks.push(Box::new(sink::Index::new(&plan.out)));
    if let Some(max_age) = plan.retain {
        sinks.push(Box::new(record::retain::Retain::new(&plan.out, max_age)));
    }
    if let Some(spool) = s3 {
        sinks.push(Box::new(sink::S3 {
            dir: plan.out.clone(),
            spool,
        }));
    }
    sinks.push(Box::new(PodCassettes(Arc::clone(shared))));
    sink::Chain::new(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cassette::BuildOptions;
    use crate::correlate::model::ProcessInfo;
    use crate::k8s::pods::Policy;
    use crate::record::sink::Sink as _;
    use crate::telemetry::{Counter, Counters};

    const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn cgroup_of(id: &str) -> String {
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b7c5a3e_1d2f_4a6b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-{id}.scope"
        )
    }

    fn request(cgroup: Option<String>, status: u16) -> sink::Finished {
        let mut f = sink::tests::finished("/x", Some(status));
        f.request.process = ProcessInfo {
            pid: u32::MAX,
            cgroup,
            ..ProcessInfo::default()
        };
        f
    }

    fn attach(shared: &Shared, id: &str, ns: &str, policy: Policy) {
        let pod = Arc::new(PodFacts {
            namespace: ns.into(),
            pod: format!("{ns}-pod"),
            uid: "u".into(),
            node: "n1".into(),
            labels: [("app".to_owned(), "api".to_owned())].into(),
            policy,
        });
        shared.containers.write().unwrap().insert(
            id.to_owned(),
            Attached {
                pod,
                container: "web".into(),
            },
        );
    }

    /// The pod sink attaches the pod's facts, applies its overrides, and discards (and
    /// counts) requests of processes in no selected container.
    #[test]
    fn pod_sink_facts_overrides_and_strangers() {
        let shared = Arc::new(Shared::default());
        attach(&shared, ID_A, "shop", Policy::default());
        attach(
            &shared,
            ID_B,
            "pay",
            Policy {
                sample_rate: None,
                errors_only: Some(true),
            },
        );
        let mut s = PodSink {
            shared: Arc::clone(&shared),
            filters: record::Filters::default(),
        };
        let ctx = sink::Ctx {
            counters: Counters::default(),
            build: BuildOptions::default(),
            quiet: true,
        };
        let mut a = request(Some(cgroup_of(ID_A)), 200);
        s.accept(&mut a, &ctx);
        assert_eq!(a.fate, sink::Fate::Store);
        let k = a
            .cassette(&ctx.build)
            .session
            .k8s
            .clone()
            .expect("k8s facts");
        assert_eq!(
            (
                k.namespace.as_str(),
                k.pod.as_str(),
                k.container.as_str(),
                k.node.as_str()
            ),
            ("shop", "shop-pod", "web", "n1")
        );
        assert_eq!(k.labels.get("app").map(String::as_str), Some("api"));
        // errors-only for the pay pod: a 200 is shown, not stored; a 500 is stored.
        let mut b = request(Some(cgroup_of(ID_B)), 200);
        s.accept(&mut b, &ctx);
        assert_eq!(b.fate, sink::Fate::Show);
        let mut b500 = request(Some(cgroup_of(ID_B)), 500);
        s.accept(&mut b500, &ctx);
        assert_eq!(b500.fate, sink::Fate::Store);
        assert_eq!(ctx.counters.get(Counter::NotError), 1);
        // A process outside every selected container.
        for cg in [
            None,
            Some("/user.slice/session-1.scope".to_owned()),
            Some(cgroup_of(&"c".repeat(64))),
        ] {
            let mut x = request(cg, 200);
            s.accept(&mut x, &ctx);
            assert_eq!(x.fate, sink::Fate::Discard);
        }
        assert_eq!(shared.unattributed.load(Ordering::Relaxed), 3);
        let pods = shared.pods.lock().unwrap().clone();
        assert_eq!(
            pods[&("shop".to_owned(), "shop-pod".to_owned())].requests,
            1
        );
        assert_eq!(pods[&("pay".to_owned(), "pay-pod".to_owned())].requests, 2);
    }

    /// A pod at sample rate 0 stores nothing; the agent's rate applies to the others.
    #[test]
    fn per_pod_sample_rate() {
        let shared = Arc::new(Shared::default());
        attach(
            &shared,
            ID_A,
            "shop",
            Policy {
                sample_rate: Some(0.0),
                errors_only: None,
            },
        );
        attach(&shared, ID_B, "pay", Policy::default());
        let mut s = PodSink {
            shared,
            filters: record::Filters::default(),
        };
        let ctx = sink::Ctx {
            counters: Counters::default(),
            build: BuildOptions::default(),
            quiet: true,
        };
        for _ in 0..20 {
            let mut a = request(Some(cgroup_of(ID_A)), 500);
            s.accept(&mut a, &ctx);
            assert_eq!(a.fate, sink::Fate::Show);
            let mut b = request(Some(cgroup_of(ID_B)), 200);
            s.accept(&mut b, &ctx);
            assert_eq!(b.fate, sink::Fate::Store);
        }
        assert_eq!(ctx.counters.get(Counter::SampledOut), 20);
    }

    #[test]
    fn container_walk() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let a = root.join(format!(
            "kubepods.slice/kubepods-pod0b7c5a3e_1d2f_4a6b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-{ID_A}.scope"
        ));
        let b = root.join(format!(
            "kubepods/burstable/pod0b7c5a3e-1d2f-4a6b-8c9d-0e1f2a3b4c5d/{ID_B}"
        ));
        std::fs::create_dir_all(a.join("init.scope")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(root.join("system.slice/containerd.service")).unwrap();
        let mut found = HashMap::new();
        walk_containers(root, root, &mut found);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[ID_A], a);
        assert_eq!(found[ID_B], b);
    }
}
