//! A small fake Kubernetes API server for node mode's tests (no control plane can be installed
//! here): `GET /api/v1/pods` and `/api/v1/namespaces/NS/pods`, list and watch, over plain
//! HTTP ([`FakeApi::start`]) or HTTPS with a test CA's certificate ([`FakeApi::start_tls`],
//! for the in-cluster path), with a bearer token, as the real API answers them:
//!
//! - list: a `PodList` with `metadata.resourceVersion`; `fieldSelector=spec.nodeName=N` and
//!   `labelSelector` (`k=v`, `k!=v`, `k`, `!k`, `k in (…)`, `k notin (…)`) filter it;
//! - watch (`watch=true&resourceVersion=RV`): a chunked stream of JSON lines (`ADDED`,
//!   `MODIFIED`, `DELETED` with the object's new resourceVersion; `BOOKMARK` every second when
//!   `allowWatchBookmarks=true`), the events after RV that pass the selectors;
//! - [`FakeApi::expire`]: the watch cache forgot everything so far: open watches get an
//!   `ERROR` event with a 410 `Status` ("too old resource version") and end, and so does every
//!   watch from an older resourceVersion: the client must relist;
//! - [`FakeApi::outage`]: the server goes away (open watches cut, connections refused) and
//!   comes back on the same port;
//! - without the token: 401 with a `Status`.
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410.
    expired_below: u64,
    /// Bumped to end every open watch.
    generation: u64,
    /// Request lines received (`GET /api/v1/pods?…`).
    requests: Vec<String>,
    /// Not accepting connections.
    down: bool,
    /// Requests that carried the token over TLS.
    tls_authorized: usize,
}

/// The fake API server (see the module doc). Stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    token: String,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl FakeApi {
    /// Listens on a free loopback port, plain HTTP; requests must carry
    /// `Authorization: Bearer TOKEN`.
    pub fn start(token: &str) -> anyhow::Result<Self> {
        Self::listen(token, None)
    }

    /// Like [`FakeApi::start`], over HTTPS only, presenting `pki.cert` (signed by `pki.ca`;
    /// [`crate::util::make_test_pki`] names `127.0.0.1`, as a real API server's certificate
    /// names the `kubernetes` Service's ClusterIP).
    pub fn start_tls(token: &str, pki: &crate::util::Pki) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&pki.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&pki.key)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        Self::listen(token, Some(Arc::new(config)))
    }

    fn listen(token: &str, tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let api = Self {
            addr,
            token: token.to_owned(),
            shared: Arc::new((Mutex::new(State::default()), Condvar::new())),
            stop: Arc::new(AtomicBool::new(false)),
            tls,
        };
        api.serve(listener);
        Ok(api)
    }

    fn serve(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let stop = Arc::clone(&self.stop);
        let token = self.token.clone();
        let tls = self.tls.clone();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        thread::spawn(move || {
            loop {
                if stop.load(Ordering::SeqCst) || shared.0.lock().unwrap().down {
                    return;
                }
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let shared = Arc::clone(&shared);
                        let stop = Arc::clone(&stop);
                        let token = token.clone();
                        let tls = tls.clone();
                        thread::spawn(move || {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
                            let _ = match tls {
                                Some(config) => rustls::ServerConnection::new(config)
                                    .map_err(std::io::Error::other)
                                    .and_then(|conn| {
                                        let s = rustls::StreamOwned::new(conn, s);
                                        handle(s, true, &shared, &stop, &token)
                                    }),
                                None => handle(s, false, &shared, &stop, &token),
                            };
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }

    /// A kubeconfig that reaches this server over plain HTTP with the token.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: agent\n  user:\n    token: {}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: agent\ncurrent-context: fake\n",
            self.addr, self.token
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Creates or replaces a pod (`ADDED` / `MODIFIED`).
    pub fn apply(&self, mut pod: Value) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
        let kind = if st.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.pods.insert(uid, pod.clone());
        st.log.push((rv, kind, pod));
        cv.notify_all();
    }

    /// Deletes a pod (`DELETED` with its last state).
    pub fn delete(&self, uid: &str) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let Some(mut pod) = st.pods.remove(uid) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.log.push((rv, "DELETED", pod));
        cv.notify_all();
    }

    /// Forgets the history: open watches get a 410 `ERROR` event, older resourceVersions 410.
    pub fn expire(&self) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.expired_below = st.rv + 1;
        st.generation += 1;
        cv.notify_all();
    }

    /// The server goes away for `d` (watches cut, connections refused), then comes back on
    /// the same port.
    pub fn outage(&mut self, d: Duration) {
        {
            let (lock, cv) = &*self.shared;
            let mut st = lock.lock().unwrap();
            st.down = true;
            st.generation += 1;
            cv.notify_all();
        }
        thread::sleep(d);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("fake API: rebinding {}: {e}", self.addr);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("fake API: cannot rebind {}: {e}", self.addr),
            }
        };
        self.shared.0.lock().unwrap().down = false;
        self.serve(listener);
    }

    /// Request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().requests.clone()
    }

    /// How many requests carried the token over TLS.
    pub fn tls_authorized(&self) -> usize {
        self.shared.0.lock().unwrap().tls_authorized
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.shared.1.notify_all();
    }
}

/// A pod as the API returns it: `Running` with one container `web` whose status carries
/// `containerd://ID` when `container_id` is given (else `Pending`, no container yet).
pub fn pod_json(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    container_id: Option<&str>,
) -> Value {
    let map = |p: &[(&str, &str)]| {
        Value::Object(p.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
    };
    let status = match container_id {
        Some(id) => json!({
            "phase": "Running",
            "podIP": "10.0.0.7",
            "containerStatuses": [{
                "name": "web", "image": "shop/api:1", "imageID": "sha256:1", "ready": true,
                "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2026-12-07T10:00:00Z"}},
                "containerID": format!("containerd://{id}")
            }]
        }),
        None => json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": "web", "image": "shop/api:1", "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]
        }),
    };
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid,
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "labels": map(labels), "annotations": map(annotations)
        },
        "spec": {"nodeName": node, "containers": [{"name": "web", "image": "shop/api:1"}]},
        "status": status
    })
}

struct Query {
    namespace: Option<String>,
    node: Option<String>,
    labels: Vec<Req>,
    watch: bool,
    rv: u64,
    bookmarks: bool,
}

/// Serves one connection (plain or TLS: `s` reads and writes; the reader only buffers reads).
fn handle<S: Read + Write>(
    s: S,
    tls: bool,
    shared: &(Mutex<State>, Condvar),
    stop: &AtomicBool,
    token: &str,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(s);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_owned();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                auth = Some(v.trim().to_owned());
            }
        }
        shared.0.lock().unwrap().requests.push(request_line.clone());
        if shared.0.lock().unwrap().down {
            return Ok(());
        }
        let target = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let w = reader.get_mut();
        if auth.as_deref() != Some(&format!("Bearer {token}")) {
            respond(w, 401, &status(401, "Unauthorized", "Unauthorized"))?;
            continue;
        }
        if tls {
            shared.0.lock().unwrap().tls_authorized += 1;
        }
        let q = match parse_query(&target) {
            Ok(q) => q,
            Err(e) => {
                respond(w, 400, &status(400, "BadRequest", &e))?;
                continue;
            }
        };
        if q.watch {
            return watch(w, shared, stop, &q);
        }
        let (items, rv) = {
            let st = shared.0.lock().unwrap();
            let items: Vec<Value> = st.pods.values().filter(|p| q.matches(p)).cloned().collect();
            (items, st.rv)
        };
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items
        });
        respond(w, 200, &list)?;
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(w: &mut impl Write, code: u16, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).expect("json");
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        _ => "Unauthorized",
    };
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    w.write_all(&body)?;
    w.flush()
}

fn chunk(w: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).expect("json");
    line.push(b'\n');
    write!(w, "{:x}\r\n", line.len())?;
    w.write_all(&line)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn watch(
    w: &mut impl Write,
    shared: &(Mutex<State>, Condvar),
    stop: &AtomicBool,
    q: &Query,
) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let gone =
        json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
    let (lock, cv) = shared;
    let mut st = lock.lock().unwrap();
    if q.rv < st.expired_below {
        drop(st);
        chunk(w, &gone)?;
        return end(w);
    }
    let generation = st.generation;
    let mut sent = q.rv;
    let mut last_bookmark = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || st.down {
            return Ok(());
        }
        if st.generation != generation {
            let expired = sent < st.expired_below;
            drop(st);
            if expired {
                chunk(w, &gone)?;
            }
            return end(w);
        }
        let events: Vec<Value> = st
            .log
            .iter()
            .filter(|(rv, _, obj)| *rv > sent && q.matches(obj))
            .map(|(_, kind, obj)| json!({"type": kind, "object": obj}))
            .collect();
        let rv = st.rv;
        drop(st);
        for e in &events {
            chunk(w, e)?;
        }
        sent = rv;
        if q.bookmarks && last_bookmark.elapsed() >= Duration::from_secs(1) {
            last_bookmark = Instant::now();
            chunk(
                w,
                &json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                        "metadata": {"resourceVersion": rv.to_string()}}}),
            )?;
        }
        st = lock.lock().unwrap();
        if st.rv == sent && st.generation == generation && !st.down {
            st = cv.wait_timeout(st, Duration::from_millis(250)).unwrap().0;
        }
    }
}

/// The last chunk of a watch.
fn end(w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

impl Query {
    fn matches(&self, pod: &Value) -> bool {
        let meta = &pod["metadata"];
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        if let Some(n) = &self.node
            && pod["spec"]["nodeName"].as_str() != Some(n)
        {
            return false;
        }
        let labels = &meta["labels"];
        self.labels.iter().all(|r| r.matches(labels))
    }
}

fn parse_query(target: &str) -> Result<Query, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let namespace = match path.strip_prefix("/api/v1/") {
        Some("pods") => None,
        Some(rest) => match rest
            .strip_prefix("namespaces/")
            .and_then(|r| r.strip_suffix("/pods"))
        {
            Some(ns) => Some(ns.to_owned()),
            None => return Err(format!("the fake serves pods only, not {path}")),
        },
        None => return Err(format!("the fake serves /api/v1 only, not {path}")),
    };
    let mut q = Query {
        namespace,
        node: None,
        labels: Vec::new(),
        watch: false,
        rv: 0,
        bookmarks: false,
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = decode(v);
        match k {
            "fieldSelector" => {
                let node = v
                    .strip_prefix("spec.nodeName==")
                    .or_else(|| v.strip_prefix("spec.nodeName="))
                    .ok_or_else(|| format!("unsupported fieldSelector {v:?}"))?;
                q.node = Some(node.to_owned());
            }
            "labelSelector" => q.labels = parse_labels(&v)?,
            "watch" => q.watch = v == "true" || v == "1",
            "resourceVersion" => q.rv = v.parse().unwrap_or(0),
            "allowWatchBookmarks" => q.bookmarks = v == "true",
            _ => {}
        }
    }
    Ok(q)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(c) => {
                        out.push(c);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Req {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Self::Eq(k, v) => get(k) == Some(v),
            Self::Ne(k, v) => get(k) != Some(v),
            Self::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Self::Exists(k) => get(k).is_some(),
            Self::Absent(k) => get(k).is_none(),
        }
    }
}

fn parse_labels(s: &str) -> Result<Vec<Req>, String> {
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let set = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_owned())
            .collect()
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some(k) = p.strip_prefix('!') {
                Ok(Req::Absent(k.trim().to_owned()))
            } else if let Some((k, v)) = p.split_once("!=") {
                Ok(Req::Ne(k.trim().to_owned(), v.trim().to_owned()))
            } else if let Some((k, v)) = p.split_once('=') {
                Ok(Req::Eq(
                    k.trim().to_owned(),
                    v.trim_start_matches('=').trim().to_owned(),
                ))
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Ok(Req::NotIn(k.trim().to_owned(), set(v)))
            } else if let Some((k, v)) = p.split_once(" in ") {
                Ok(Req::In(k.trim().to_owned(), set(v)))
            } else if p.contains(' ') {
                Err(format!("unsupported label requirement {p:?}"))
            } else {
                Ok(Req::Exists(p.to_owned()))
            }
        })
        .collect()
}
