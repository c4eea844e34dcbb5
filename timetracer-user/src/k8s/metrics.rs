//! What node mode shares between the recording, the pod watcher and the `/metrics` server,
//! and the Prometheus text it serves.
//!
//! The exposition is written by hand (text format 0.0.4, what Prometheus scrapes and
//! `promtool check metrics` checks): every value is a snapshot of counters that already exist
//! elsewhere (the recording's [`Counters`], the kernel's per-CPU drop maps, the per-pod tallies
//! below), so a metrics library's registry would only duplicate them; what such a library would
//! add is the escaping of label values, done in [`escape`].
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use crate::record::report::KernelDrops;
use crate::telemetry::{Counter, Counters, Group};

use super::pods::PodFacts;

/// A selected container: the pod it belongs to and its name there.
#[derive(Clone, Debug)]
pub struct Attached {
    pub pod: Arc<PodFacts>,
    pub container: String,
}

/// Requests and cassettes of one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCounts {
    pub requests: u64,
    pub cassettes: u64,
}

/// State shared by the node target (recording thread), the sinks (writer thread) and the
/// watcher / metrics server (the k8s thread).
#[derive(Debug)]
pub struct Shared {
    /// Container id → its pod, for every container of a selected pod (kept a grace period
    /// after the pod is released, for its last requests).
    pub containers: RwLock<HashMap<String, Attached>>,
    /// (namespace, pod) → tallies.
    pub pods: Mutex<BTreeMap<(String, String), PodCounts>>,
    /// Selected pods and followed container cgroups now.
    pub attached_pods: AtomicU64,
    pub attached_containers: AtomicU64,
    /// Pods of this node the watcher reported (selected or not) and not deleted.
    pub known_pods: AtomicU64,
    /// Requests of no selected pod (their process's cgroup names no selected container).
    pub unattributed: AtomicU64,
    /// Watch errors after which kube's watcher re-established the watch.
    pub watch_restarts: AtomicU64,
    /// Full relists after the first (a 410 Gone, or a restart that could not resume).
    pub watch_relists: AtomicU64,
    /// Pod annotations ignored because they were malformed.
    pub annotation_errors: AtomicU64,
    /// The first list of every watched namespace is complete.
    pub synced: AtomicBool,
    /// Tracing is in place.
    pub started: AtomicBool,
    /// When the recording loop last polled the target (ms since `epoch`).
    pub last_poll_ms: AtomicU64,
    pub epoch: Instant,
    pub counters: OnceLock<Counters>,
    pub kernel_drops: Mutex<KernelDrops>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            containers: RwLock::default(),
            pods: Mutex::default(),
            attached_pods: AtomicU64::new(0),
            attached_containers: AtomicU64::new(0),
            known_pods: AtomicU64::new(0),
            unattributed: AtomicU64::new(0),
            watch_restarts: AtomicU64::new(0),
            watch_relists: AtomicU64::new(0),
            annotation_errors: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            started: AtomicBool::new(false),
            last_poll_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            counters: OnceLock::new(),
            kernel_drops: Mutex::default(),
        }
    }
}

impl Shared {
    /// The pod of container `id`, if it is selected.
    #[must_use]
    pub fn container(&self, id: &str) -> Option<Attached> {
        self.containers.read().ok()?.get(id).cloned()
    }

    /// Adds to a pod's tallies.
    pub fn count(&self, pod: &PodFacts, f: impl FnOnce(&mut PodCounts)) {
        if let Ok(mut m) = self.pods.lock() {
            f(m.entry((pod.namespace.clone(), pod.pod.clone()))
                .or_default());
        }
    }

    /// Milliseconds since the recording loop last polled.
    #[must_use]
    pub fn since_poll_ms(&self) -> u64 {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(self.last_poll_ms.load(Ordering::Relaxed))
    }

    /// Marks the recording loop alive.
    pub fn polled(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_poll_ms.store(now, Ordering::Relaxed);
    }

    /// `/readyz`: `Ok` once tracing is in place and every namespace was listed.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.started.load(Ordering::Relaxed) {
            Err("tracing is not in place yet")
        } else if !self.synced.load(Ordering::Relaxed) {
            Err("the pods of this node have not been listed yet (is the API server reachable?)")
        } else {
            Ok(())
        }
    }

    /// `/healthz`: `Ok` while the recording loop runs (it polls every 10 ms).
    pub fn healthy(&self) -> Result<(), String> {
        let since = self.since_poll_ms();
        if self.started.load(Ordering::Relaxed) && since > 30_000 {
            Err(format!(
                "the recording loop has not run for {} s",
                since / 1000
            ))
        } else {
            Ok(())
        }
    }

    /// The Prometheus text exposition of everything above.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        let pods = self.pods.lock().map(|m| m.clone()).unwrap_or_default();
        out.family(
            "timetracer_pod_requests_total",
            "Inbound requests completed, by pod.",
            "counter",
            pods.iter().map(|((ns, pod), c)| {
                (
                    vec![("namespace", ns.as_str()), ("pod", pod.as_str())],
                    c.requests,
                )
            }),
        );
        out.family(
            "timetracer_pod_cassettes_total",
            "Cassettes written, by pod.",
            "counter",
            pods.iter().map(|((ns, pod), c)| {
                (
                    vec![("namespace", ns.as_str()), ("pod", pod.as_str())],
                    c.cassettes,
                )
            }),
        );
        let snap = self.counters.get().map(Counters::snapshot);
        let kernel = self
            .kernel_drops
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default();
        // Kernel drops (events and bytes) and the agent's own losses, by reason.
        let mut events: Vec<(Vec<(&str, &str)>, u64)> = kernel
            .iter()
            .map(|(reason, ev, _)| (vec![("reason", *reason)], *ev))
            .collect();
        if let Some(s) = &snap {
            events.extend(
                s.group(Group::Drop)
                    .map(|(c, n)| (vec![("reason", c.name())], n)),
            );
        }
        out.family(
            "timetracer_dropped_events_total",
            "Events lost before a cassette was written, by reason (kernel ring full, \
             payload caps, undecodable records, ...).",
            "counter",
            events,
        );
        out.family(
            "timetracer_dropped_bytes_total",
            "Payload bytes the kernel did not deliver, by reason.",
            "counter",
            kernel
                .iter()
                .map(|(reason, _, bytes)| (vec![("reason", *reason)], *bytes)),
        );
        if let Some(s) = &snap {
            for c in Counter::ALL {
                if c.group() == Group::Drop {
                    continue;
                }
                out.family(
                    &format!("timetracer_{}_total", c.name()),
                    counter_help(*c),
                    "counter",
                    [(Vec::new(), s.get(*c))],
                );
            }
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, kind, v) in [
            (
                "timetracer_attached_pods",
                "Selected pods of this node being traced.",
                "gauge",
                load(&self.attached_pods),
            ),
            (
                "timetracer_attached_containers",
                "Container cgroups followed.",
                "gauge",
                load(&self.attached_containers),
            ),
            (
                "timetracer_k8s_known_pods",
                "Pods of this node known from the API server (selected or not).",
                "gauge",
                load(&self.known_pods),
            ),
            (
                "timetracer_k8s_known_containers",
                "Container ids held for selected pods (released ones for a grace period).",
                "gauge",
                self.containers.read().map_or(0, |m| m.len() as u64),
            ),
            (
                "timetracer_unattributed_requests_total",
                "Requests of processes in no selected pod (not written).",
                "counter",
                load(&self.unattributed),
            ),
            (
                "timetracer_k8s_watch_restarts_total",
                "Pod watch errors after which the watch was re-established.",
                "counter",
                load(&self.watch_restarts),
            ),
            (
                "timetracer_k8s_watch_relists_total",
                "Full relists of the pods after the first (410 Gone, or a restart that could \
                 not resume).",
                "counter",
                load(&self.watch_relists),
            ),
            (
                "timetracer_k8s_annotation_errors_total",
                "Malformed timetracer.dev/* pod annotations ignored.",
                "counter",
                load(&self.annotation_errors),
            ),
            (
                "timetracer_ready",
                "1 once tracing is in place and the node's pods are listed.",
                "gauge",
                u64::from(self.ready().is_ok()),
            ),
        ] {
            out.family(name, help, kind, [(Vec::new(), v)]);
        }
        out.0
    }
}

/// The counter's doc line, for `# HELP`.
fn counter_help(c: Counter) -> &'static str {
    match c {
        Counter::Requests => "Inbound requests completed.",
        Counter::Cassettes => "Cassettes written to disk.",
        Counter::Events => "Ring-buffer records read.",
        Counter::Bytes => "Payload bytes read.",
        Counter::Excluded => "Requests not recorded because their path is excluded.",
        Counter::SampledOut => "Requests not recorded because of the sample rate.",
        Counter::NotError => "Requests not recorded because only errors are.",
        Counter::WriteErrors => "Cassettes that could not be written.",
        Counter::WriteErrorsNoSpace => "Cassettes lost because the file system was full.",
        Counter::WriteErrorsOther => "Cassettes lost for another reason than a full disk.",
        Counter::ProcessesStarted => "Processes that started while traced.",
        Counter::ProcessesForgotten => "Exited processes whose state the agent freed.",
        Counter::StderrDropped => "Messages to stderr dropped because nobody read it.",
        Counter::OutDirRemoved => "Times the cassette directory was found removed (recreated).",
        Counter::RetentionDeleted => "Cassettes deleted by retention (--retain).",
        Counter::RetentionDeletedBytes => "Bytes of the cassettes deleted by retention.",
        Counter::RetentionErrors => "Old cassettes retention could not delete or list.",
        Counter::S3Uploaded => "Cassettes uploaded to S3.",
        Counter::S3Errors => "Cassettes whose S3 upload failed.",
        _ => "An agent counter (see docs/ARCHITECTURE.md, Stages, channels and counters).",
    }
}

#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                self.0.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.0.push(',');
                    }
                    let _ = write!(self.0, "{k}=\"{}\"", escape(val));
                }
                self.0.push('}');
            }
            let _ = writeln!(self.0, " {v}");
        }
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::pods::Policy;

    #[test]
    fn exposition() {
        let shared = Shared::default();
        let counters = Counters::default();
        counters.add(Counter::Requests, 3);
        counters.inc(Counter::UndecodableRecords);
        let _ = shared.counters.set(counters);
        *shared.kernel_drops.lock().unwrap() = vec![("ring_full", 5, 4096)];
        let pod = PodFacts {
            namespace: "shop".into(),
            pod: "api-\"1\"".into(),
            uid: "u".into(),
            node: "n".into(),
            labels: BTreeMap::new(),
            policy: Policy::default(),
        };
        shared.count(&pod, |c| c.requests += 2);
        shared.count(&pod, |c| c.cassettes += 1);
        let text = shared.render();
        for want in [
            "# TYPE timetracer_pod_requests_total counter\n",
            "timetracer_pod_requests_total{namespace=\"shop\",pod=\"api-\\\"1\\\"\"} 2\n",
            "timetracer_pod_cassettes_total{namespace=\"shop\",pod=\"api-\\\"1\\\"\"} 1\n",
            "timetracer_dropped_events_total{reason=\"ring_full\"} 5\n",
            "timetracer_dropped_events_total{reason=\"undecodable_records\"} 1\n",
            "timetracer_dropped_bytes_total{reason=\"ring_full\"} 4096\n",
            "timetracer_requests_total 3\n",
            "timetracer_ready 0\n",
            "timetracer_k8s_watch_restarts_total 0\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        // One HELP and one TYPE per family, every sample under its family.
        let mut families = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(
                    families.insert(rest.split(' ').next().unwrap().to_owned()),
                    "{l}"
                );
            }
        }
        assert!(!text.contains("timetracer_undecodable_records_total"));
        shared.started.store(true, Ordering::Relaxed);
        assert!(shared.ready().is_err());
        shared.synced.store(true, Ordering::Relaxed);
        assert!(shared.ready().is_ok());
        shared.polled();
        assert!(shared.healthy().is_ok());
    }
}
