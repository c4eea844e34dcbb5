//! `timetracer-agent node`: flags → [`NodeOptions`] and a [`RecordPlan`] → the node's pods as
//! a target ([`crate::k8s::node::Pods`]) with node mode's sinks → [`crate::record`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::record::{RecordArgs, install_signal_handlers, print_summary, spool, stop_flag};
use crate::config::Config;
use crate::k8s::node::{self, NodeOptions, Pods};
use crate::k8s::pods::Selection;
use crate::k8s::selector::LabelSelector;

/// Default `--metrics-addr`: loopback only (a DaemonSet that wants Prometheus to scrape it
/// says `--metrics-addr 0.0.0.0:9477`).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9477";

/// Which pods of this node are recorded, and where the API and the metrics are.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Record only in this namespace (repeatable, or comma-separated). Default: all.
    #[arg(
        short = 'n',
        long = "namespace",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Record the pods whose labels match, `kubectl -l` syntax:
    /// `app=api,tier in (web,edge),!canary` (`''` matches every pod). Without it, only pods
    /// annotated `timetracer.dev/record: "true"` are recorded; `"false"` always opts out.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// This node's name (the pods with `spec.nodeName` = NAME are watched).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig file to reach the API server. Default: the pod's service account when
    /// running in a pod, else KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Where `/metrics` (Prometheus), `/healthz` and `/readyz` are served.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
}

impl NodeArgs {
    /// The options, with the selector parsed (a mistake is reported with its position).
    pub fn options(&self) -> anyhow::Result<NodeOptions> {
        let selector = self
            .selector
            .as_deref()
            .map(LabelSelector::parse)
            .transpose()?;
        let mut namespaces: Vec<String> = self
            .namespaces
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Ok(NodeOptions {
            selection: Selection {
                namespaces,
                selector,
            },
            node: self.node_name.clone().unwrap_or_default(),
            kubeconfig: self.kubeconfig.clone(),
            metrics_addr: self.metrics_addr,
        })
    }
}

/// `timetracer-agent node`: records until SIGINT/SIGTERM.
/// Cassettes go to `PREFIX/NAMESPACE/POD/DATE/` in the bucket when one is configured (the
/// record options' `--s3-*`).
pub(super) fn run(args: &NodeArgs, opts: &RecordArgs, cfg: Config) -> anyhow::Result<ExitCode> {
    let plan = opts.plan(cfg)?;
    let node_opts = args.options()?;
    let s3 = plan.s3.as_ref().map(|s3| spool(&plan, s3)).transpose()?;
    let mut target = Pods::start(node_opts)?;
    let sinks = node::chain(&plan, &target.shared(), s3);
    install_signal_handlers()?;
    let summary = crate::record::run(&plan, &mut target, sinks, stop_flag())?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}
