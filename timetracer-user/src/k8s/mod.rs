//! Kubernetes node mode (issue #20): `timetracer-agent node` records the selected pods of
//! the node it runs on.
//!
//! [`cgroup`] maps processes to containers and pods from their cgroup paths; [`selector`]
//! parses `-l` label selectors; [`pods`] decides which pods are recorded and how (namespaces,
//! selector, `timetracer.dev/*` annotations); [`node`] watches the node's pods through the
//! API server and is the recording's target (the selected containers' cgroups, followed by
//! `record::target::Cgroups`) and its sinks; [`metrics`] is what `/metrics` serves; [`api`]
//! finds the API server (kubeconfig or the pod's service account) and checks it answers.
pub mod api;
pub mod cgroup;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod selector;
