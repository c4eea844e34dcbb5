//! Which pods are recorded, and how: the selection (`-n`, `-l`), the pod's annotations, and
//! the facts cassettes carry. Pure (no API, no kernel), so every decision is unit-tested.
//!
//! - `-n` limits the namespaces (none: all);
//! - `-l SELECTOR`: pods whose labels match are recorded, unless annotated
//!   `timetracer.dev/record: "false"`;
//! - without `-l`, only pods annotated `timetracer.dev/record: "true"` are (opt-in: an agent on
//!   every node must not record every pod of the cluster because nobody chose any);
//! - `timetracer.dev/sample-rate` (0.0–1.0) and `timetracer.dev/errors-only` (true/false)
//!   override the agent's `--sample-rate` / `--errors-only` for the pod.
//!
//! A malformed annotation is the pod owner's mistake, not the agent's: it is ignored (the
//! agent's setting applies) and reported once per pod version with what would be accepted.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::cgroup::{Runtime, parse_container_id};
use super::selector::LabelSelector;

/// `"true"` opts a pod in (when no selector is given), `"false"` opts it out (always).
pub const ANNOTATION_RECORD: &str = "timetracer.dev/record";
/// A fraction 0.0–1.0 of the pod's requests recorded.
pub const ANNOTATION_SAMPLE_RATE: &str = "timetracer.dev/sample-rate";
/// `"true"`: only the pod's failed requests are recorded.
pub const ANNOTATION_ERRORS_ONLY: &str = "timetracer.dev/errors-only";

/// What the agent was told to record (`-n`, `-l`).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Namespaces to record in; empty: every namespace.
    pub namespaces: Vec<String>,
    /// `-l`; `None`: only pods that opt in by annotation.
    pub selector: Option<LabelSelector>,
}

/// What the agent needs of a pod, taken from the API object.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown` (empty when not reported yet).
    pub phase: String,
    /// The pod's containers that have been created (init containers, sidecars included).
    pub containers: Vec<ContainerView>,
}

/// One container of a pod, from `status.containerStatuses[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub runtime: Runtime,
    /// The runtime's container id (64 hex digits).
    pub id: String,
}

impl PodView {
    /// The parts of `pod` the agent uses; `None` for an object without a uid, namespace or
    /// name (the API always sends them).
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let statuses = status.into_iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        let containers = statuses
            .filter_map(|c| {
                let (runtime, id) = parse_container_id(c.container_id.as_deref()?)?;
                Some(ContainerView {
                    name: c.name.clone(),
                    runtime,
                    id: id.to_owned(),
                })
            })
            .collect();
        Some(Self {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            containers,
        })
    }

    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// How a selected pod is recorded: overrides of the agent's filters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Policy {
    pub sample_rate: Option<f64>,
    pub errors_only: Option<bool>,
}

/// Why a pod is not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Namespace,
    Selector,
    NotOptedIn,
    OptedOut,
    /// `Succeeded` / `Failed`: no process left to trace.
    Finished,
}

/// The decision for one pod, with the annotation problems found on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub record: Result<Policy, Skip>,
    /// Messages for the log: `annotation X = "v" ignored: ...`.
    pub problems: Vec<String>,
}

/// Decides whether `pod` is recorded under `sel`, and with which overrides.
#[must_use]
pub fn decide(sel: &Selection, pod: &PodView) -> Decision {
    let mut problems = Vec::new();
    let record = decide_inner(sel, pod, &mut problems);
    Decision { record, problems }
}

fn decide_inner(
    sel: &Selection,
    pod: &PodView,
    problems: &mut Vec<String>,
) -> Result<Policy, Skip> {
    if !sel.namespaces.is_empty() && !sel.namespaces.contains(&pod.namespace) {
        return Err(Skip::Namespace);
    }
    let flag = annotation_bool(pod, ANNOTATION_RECORD, problems);
    match (&sel.selector, flag) {
        (_, Some(false)) => return Err(Skip::OptedOut),
        (Some(s), _) if !s.matches(&pod.labels) => return Err(Skip::Selector),
        (None, None) => return Err(Skip::NotOptedIn),
        _ => {}
    }
    if matches!(pod.phase.as_str(), "Succeeded" | "Failed") {
        return Err(Skip::Finished);
    }
    let sample_rate =
        pod.annotations
            .get(ANNOTATION_SAMPLE_RATE)
            .and_then(|v| match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
                _ => {
                    problems.push(format!(
                        "annotation {ANNOTATION_SAMPLE_RATE} = {v:?} ignored: use a number from \
                     0.0 to 1.0 (e.g. \"0.1\")"
                    ));
                    None
                }
            });
    let errors_only = annotation_bool(pod, ANNOTATION_ERRORS_ONLY, problems);
    Ok(Policy {
        sample_rate,
        errors_only,
    })
}

fn annotation_bool(pod: &PodView, key: &str, problems: &mut Vec<String>) -> Option<bool> {
    let v = pod.annotations.get(key)?;
    let b = crate::config::parse_bool(v.trim());
    if b.is_none() {
        problems.push(format!(
            "annotation {key} = {v:?} ignored: use \"true\" or \"false\""
        ));
    }
    b
}

/// What a cassette says about the pod (`session.k8s`), shared by every request of the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub policy: Policy,
}

impl PodFacts {
    #[must_use]
    pub fn new(pod: &PodView, policy: Policy) -> Arc<Self> {
        Arc::new(Self {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            node: pod.node.clone(),
            labels: pod.labels.clone(),
            policy,
        })
    }

    /// The cassette's `session.k8s` for a request served by `container`.
    #[must_use]
    pub fn cassette(&self, container: &str) -> crate::cassette::format::K8s {
        crate::cassette::format::K8s {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            pod_uid: self.uid.clone(),
            container: container.to_owned(),
            node: self.node.clone(),
            labels: self.labels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodView {
        let map = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        PodView {
            uid: "u".into(),
            namespace: ns.into(),
            name: "p".into(),
            node: "n1".into(),
            labels: map(labels),
            annotations: map(annotations),
            phase: "Running".into(),
            containers: Vec::new(),
        }
    }

    fn sel(namespaces: &[&str], selector: Option<&str>) -> Selection {
        Selection {
            namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            selector: selector.map(|s| LabelSelector::parse(s).unwrap()),
        }
    }

    #[test]
    fn selector_namespaces_and_opt_in_out() {
        let api = &[("app", "api"), ("tier", "web")][..];
        let with_l = sel(&[], Some("app=api,tier in (web,edge),!canary"));
        let cases: Vec<(&Selection, PodView, Result<Policy, Skip>)> = vec![
            (&with_l, pod("shop", api, &[]), Ok(Policy::default())),
            (
                &with_l,
                pod("shop", &[("app", "api"), ("canary", "1")], &[]),
                Err(Skip::Selector),
            ),
            (
                &with_l,
                pod("shop", api, &[(ANNOTATION_RECORD, "false")]),
                Err(Skip::OptedOut),
            ),
            // "true" does not override a selector the labels do not match.
            (
                &with_l,
                pod("shop", &[("app", "db")], &[(ANNOTATION_RECORD, "true")]),
                Err(Skip::Selector),
            ),
        ];
        let no_l = sel(&[], None);
        let only_shop = sel(&["shop", "pay"], Some("app=api"));
        let more = vec![
            (&no_l, pod("shop", api, &[]), Err(Skip::NotOptedIn)),
            (
                &no_l,
                pod("shop", &[], &[(ANNOTATION_RECORD, "true")]),
                Ok(Policy::default()),
            ),
            (
                &no_l,
                pod("shop", &[], &[(ANNOTATION_RECORD, "False")]),
                Err(Skip::OptedOut),
            ),
            (&only_shop, pod("pay", api, &[]), Ok(Policy::default())),
            (
                &only_shop,
                pod("kube-system", api, &[]),
                Err(Skip::Namespace),
            ),
        ];
        for (s, p, want) in cases.into_iter().chain(more) {
            let d = decide(s, &p);
            assert_eq!(d.record, want, "{s:?} {p:?}");
            assert!(d.problems.is_empty(), "{:?}", d.problems);
        }
        let mut done = pod("shop", api, &[]);
        done.phase = "Succeeded".into();
        assert_eq!(decide(&with_l, &done).record, Err(Skip::Finished));
    }

    #[test]
    fn per_pod_overrides() {
        let s = sel(&[], Some("app"));
        let p = pod(
            "shop",
            &[("app", "x")],
            &[
                (ANNOTATION_SAMPLE_RATE, "0.25"),
                (ANNOTATION_ERRORS_ONLY, "true"),
            ],
        );
        assert_eq!(
            decide(&s, &p).record,
            Ok(Policy {
                sample_rate: Some(0.25),
                errors_only: Some(true)
            })
        );
        let p = pod(
            "shop",
            &[("app", "x")],
            &[
                (ANNOTATION_ERRORS_ONLY, "no"),
                (ANNOTATION_SAMPLE_RATE, "0"),
            ],
        );
        assert_eq!(
            decide(&s, &p).record,
            Ok(Policy {
                sample_rate: Some(0.0),
                errors_only: Some(false)
            })
        );
    }

    /// A bad annotation is ignored (the agent's setting applies) and said why.
    #[test]
    fn malformed_annotations_are_ignored_and_reported() {
        let s = sel(&[], Some("app"));
        let p = pod(
            "shop",
            &[("app", "x")],
            &[
                (ANNOTATION_SAMPLE_RATE, "10%"),
                (ANNOTATION_ERRORS_ONLY, "sometimes"),
                (ANNOTATION_RECORD, "maybe"),
            ],
        );
        let d = decide(&s, &p);
        assert_eq!(d.record, Ok(Policy::default()));
        assert_eq!(d.problems.len(), 3, "{:?}", d.problems);
        assert!(d.problems[0].contains(ANNOTATION_RECORD));
        assert!(d.problems.iter().any(|m| m.contains("0.0 to 1.0")));
        // Without a selector, a malformed opt-in is not an opt-in.
        let d = decide(&sel(&[], None), &p);
        assert_eq!(d.record, Err(Skip::NotOptedIn));
    }

    #[test]
    fn from_the_api_object() {
        let id = "4f2a0c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-1", "namespace": "shop", "uid": "0b7c5a3e-1d2f-4a6b-8c9d-0e1f2a3b4c5d",
                         "labels": {"app": "api"}, "annotations": {"timetracer.dev/record": "true"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "web"}, {"name": "side"}]},
            "status": {"phase": "Running",
                       "initContainerStatuses": [{"name": "init", "image": "", "imageID": "", "ready": false,
                                                  "restartCount": 0, "containerID": format!("cri-o://{id}")}],
                       "containerStatuses": [
                          {"name": "web", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                           "containerID": format!("containerd://{id}")},
                          {"name": "side", "image": "", "imageID": "", "ready": false, "restartCount": 0}]}
        }))
        .unwrap();
        let v = PodView::from_pod(&pod).unwrap();
        assert_eq!(v.key(), "shop/api-1");
        assert_eq!(v.node, "node-1");
        assert_eq!(v.phase, "Running");
        assert_eq!(
            v.containers
                .iter()
                .map(|c| (c.name.as_str(), c.runtime))
                .collect::<Vec<_>>(),
            [("init", Runtime::CriO), ("web", Runtime::Containerd)]
        );
        let facts = PodFacts::new(&v, Policy::default()).cassette("web");
        assert_eq!(
            (
                facts.namespace.as_str(),
                facts.pod.as_str(),
                facts.container.as_str()
            ),
            ("shop", "api-1", "web")
        );
        assert_eq!(facts.labels.get("app").map(String::as_str), Some("api"));
    }
}
