//! Kubernetes node mode (issue #20): which processes of this node belong to the selected pods.
//!
//! [`cgroup`] maps processes to containers and pods from their cgroup paths; the kernel follows
//! the selected containers' cgroups (`record::target::Cgroups`).
pub mod cgroup;
