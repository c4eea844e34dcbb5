//! `timetracer serve --dir D`: the dashboard, live, with replay and compare.
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::timeline::open_in_browser;
use super::{Ctx, Exit};
use crate::web::replay_client;
use crate::web::server::{ServeConfig, Server};

/// Serve the dashboard live on 127.0.0.1, with one-click replay and compare.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  timetracer serve --dir cassettes --open
  timetracer serve --dir cassettes --port 0        # any free port; the URL is printed
  timetracer serve --dir team --namespace shop --pod 'api-*'   # node mode's cassettes

Only 127.0.0.1 listens unless --host says otherwise. Every request needs this run's token,
which the printed URL carries (open that URL; it sets a cookie). Only cassette files under
--dir are ever read. New cassettes appear without reloading. Each replay, export, download
and view of a cassette is appended to the audit log (--audit-log). \"Replay now\" asks the
privileged replay service (`sudo timetracer-agent replay-server`, socket
/run/timetracer/replay.sock or TIMETRACER_REPLAY_SOCKET) to replay the cassette and shows its
verdict; when the service is not running the page shows the command that starts it.
Stop with Ctrl-C.")]
pub struct ServeArgs {
    /// Cassette directory [default: TIMETRACER_DIR, else ./cassettes].
    #[arg(short, long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port (0 = any free port).
    #[arg(short, long, default_value_t = 8765)]
    pub port: u16,
    /// Address to listen on. Anything but a loopback address exposes your cassettes (and the
    /// replay button) to the network, token or not: think twice.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Newest cassettes shown.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 500)]
    pub limit: usize,
    /// The replay service's socket [default: TIMETRACER_REPLAY_SOCKET, else /run/timetracer/replay.sock].
    #[arg(long, value_name = "PATH")]
    pub replay_socket: Option<PathBuf>,
    /// Seconds to wait for a replay verdict.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub replay_timeout: u64,
    /// Append one JSON line per replay, export, download and view of a cassette (who: peer
    /// address and, for a local client, its user; what; when) to this file (0600, never
    /// truncated, synced per line) [default: `$XDG_STATE_HOME/timetracer/audit/<dir>-<hash>.jsonl`,
    /// else under ~/.local/state].
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Open the page in the default browser (xdg-open, or $BROWSER).
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub k8s: super::K8sFilter,
}

pub fn run(ctx: &mut Ctx, a: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<Exit> {
    let dir = ctx.dir(a.dir.as_deref());
    if !a.host.is_loopback() {
        eprintln!(
            "timetracer: warning: listening on {}: anyone who can reach this address and learns the \
             token can read every cassette under {} and start replays",
            a.host,
            dir.display()
        );
    }
    let cfg = ServeConfig {
        dir,
        addr: SocketAddr::new(a.host, a.port),
        limit: a.limit,
        replay_socket: a
            .replay_socket
            .clone()
            .unwrap_or_else(replay_client::default_socket),
        replay_timeout: Duration::from_secs(a.replay_timeout),
        refresh: Duration::from_secs(1),
        audit_log: a.audit_log.clone(),
        namespace: a.k8s.namespace.clone(),
        pod: a.k8s.pod.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = Server::bind(cfg.clone()).await?;
        let url = server.url();
        writeln!(
            out,
            "Serving {}{} at {url}",
            cfg.dir.display(),
            a.k8s.describe()
        )?;
        writeln!(out, "Audit log: {}", server.audit_path().display())?;
        writeln!(
            out,
            "Replay service socket: {} (start it with: {})",
            cfg.replay_socket.display(),
            replay_client::start_command(&cfg.replay_socket)
        )?;
        writeln!(out, "Press Ctrl-C to stop.")?;
        out.flush()?;
        if a.open {
            open_in_browser(&url)?;
        }
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(())
    })?;
    Ok(Exit::Ok)
}
