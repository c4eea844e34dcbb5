//! From cassettes to a replay plan: which destinations get a mock, which stay live, the
//! recorded hostnames, and the inbound requests to send.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::ledger::{Destination, Journal, Protocol, RecordedCall};
use crate::cassette::format::{CONNECT_EVENT, Event};
use crate::cassette::{self, Cassette};
use crate::urls;

/// `--mock` / `--live` selectors: protocol names or `host:port` destinations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    mock: Vec<Selector>,
    live: Vec<Selector>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Proto(Protocol),
    /// `host:port`, resolved at parse time to every address of the host.
    Dest {
        text: String,
        addrs: Vec<SocketAddr>,
    },
}

impl Selector {
    fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(p) = Protocol::parse(s) {
            if let crate::protocols::Replay::NotReplayable(why) = p.spec().replay {
                bail!("{s:?}: {why}");
            }
            return Ok(Selector::Proto(p));
        }
        if let Some((host, port)) = s.rsplit_once(':')
            && port.parse::<u16>().is_ok()
        {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = (host, port.parse::<u16>().unwrap_or(0))
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {s:?}"))?
                .collect();
            return Ok(Selector::Dest {
                text: s.to_string(),
                addrs,
            });
        }
        let names: Vec<&str> = Protocol::replayable().map(Protocol::name).collect();
        bail!(
            "unknown protocol or destination {s:?}: use one of {} or HOST:PORT",
            names.join(", ")
        )
    }

    fn matches(&self, proto: Protocol, addr: SocketAddr, names: &[String]) -> bool {
        match self {
            Selector::Proto(p) => *p == proto,
            Selector::Dest { text, addrs } => {
                addrs.iter().any(|a| same_dest(*a, addr))
                    || names
                        .iter()
                        .any(|n| text.eq_ignore_ascii_case(&format!("{n}:{}", addr.port())))
            }
        }
    }
}

/// Same address and port, treating IPv4-mapped IPv6 addresses as IPv4.
fn same_dest(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Selection {
    /// Parses comma-separated lists (flags may repeat).
    ///
    /// # Errors
    /// An unknown protocol name or an unresolvable destination.
    pub fn parse(mock: &[String], live: &[String]) -> anyhow::Result<Self> {
        let split = |v: &[String]| -> anyhow::Result<Vec<Selector>> {
            v.iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Selector::parse)
                .collect()
        };
        Ok(Self {
            mock: split(mock)?,
            live: split(live)?,
        })
    }

    /// A destination stays live when `--live` names it, or when `--mock` is given and does
    /// not name it.
    #[must_use]
    pub fn is_live(&self, proto: Protocol, addr: SocketAddr, names: &[String]) -> bool {
        self.live.iter().any(|s| s.matches(proto, addr, names))
            || (!self.mock.is_empty() && !self.mock.iter().any(|s| s.matches(proto, addr, names)))
    }

    /// Destinations named by `--live` (they are let through even when not recorded).
    #[must_use]
    pub fn live_addrs(&self) -> Vec<SocketAddr> {
        self.live
            .iter()
            .filter_map(|s| match s {
                Selector::Dest { addrs, .. } => Some(addrs.clone()),
                Selector::Proto(_) => None,
            })
            .flatten()
            .collect()
    }
}

/// One cassette to replay.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub cassette: Cassette,
}

/// Everything `replay` needs before it starts the app.
#[derive(Debug)]
pub struct Plan {
    /// In recorded order.
    pub inputs: Vec<Input>,
    /// The recordings' startup cassettes (calls the app makes before its first request), in
    /// recorded order. Their calls are answered like the others and come first in each
    /// destination; not making one is noted, not a failure. Index `k` in the ledger is
    /// cassette `inputs.len() + k`.
    pub startup: Vec<Input>,
    /// Mocked destinations.
    pub destinations: Vec<Arc<Destination>>,
    /// Recorded destinations left live (hybrid replay).
    pub live: Vec<(Protocol, SocketAddr)>,
    /// Recorded hostname → addresses (for the Python hook).
    pub hosts: BTreeMap<String, Vec<String>>,
    /// Destinations whose recorded connects were refused (`tcp.connect`, `ECONNREFUSED`) and
    /// that no mocked call answers: replay refuses them the same way.
    pub refused: Vec<SocketAddr>,
    pub journal: Arc<Journal>,
    /// Things the user should know (recorded with attach, unsupported events ...).
    pub notes: Vec<String>,
}

/// Reads cassettes from files and directories (recursively; the index and temp files are
/// skipped), sorted by `session.recorded_at`.
///
/// # Errors
/// A path that does not exist, a cassette that cannot be read, or no cassette at all.
pub fn load_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let files = cassette_files(paths)?;
    let mut inputs = Vec::new();
    for f in files {
        inputs.push(read_input(f)?);
    }
    if inputs.is_empty() {
        bail!("no cassettes found in {paths:?}");
    }
    sort_recorded(&mut inputs);
    Ok(inputs)
}

fn read_input(path: PathBuf) -> anyhow::Result<Input> {
    let cassette = cassette::read(&path).with_context(|| {
        format!(
            "{}: not a readable cassette (check it with `timetracer validate`)",
            path.display()
        )
    })?;
    Ok(Input { path, cassette })
}

fn sort_recorded(inputs: &mut [Input]) {
    inputs.sort_by(|a, b| {
        a.cassette
            .session
            .recorded_at
            .cmp(&b.cassette.session.recorded_at)
    });
}

/// How many directories up from a cassette replay looks for its recording's `.startup/`
/// (`DIR/YYYY-MM-DD/x.json` → `DIR/.startup/` is one up).
const STARTUP_SEARCH_DEPTH: usize = 3;

/// Splits `inputs` into request cassettes and startup cassettes, adding the startup cassettes
/// of every recording the request cassettes belong to (`session.recording`), found in a
/// `.startup/` directory next to a cassette or up to [`STARTUP_SEARCH_DEPTH`] directories
/// above it: so `replay ONE.json` answers the calls the app makes at startup too.
///
/// # Errors
/// Only request cassettes are an error to lack: no request cassette at all.
pub fn split_startup(inputs: Vec<Input>) -> anyhow::Result<(Vec<Input>, Vec<Input>, Vec<String>)> {
    let (mut startup, requests): (Vec<Input>, Vec<Input>) =
        inputs.into_iter().partition(|i| i.cassette.is_startup());
    if requests.is_empty() {
        bail!(
            "only startup cassettes given: give the request cassettes (or their directory) to replay"
        );
    }
    let recordings: std::collections::BTreeSet<&str> = requests
        .iter()
        .filter_map(|i| i.cassette.session.recording.as_deref())
        .collect();
    let mut notes = Vec::new();
    let mut seen: std::collections::BTreeSet<PathBuf> = startup
        .iter()
        .filter_map(|i| std::fs::canonicalize(&i.path).ok())
        .collect();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for i in &requests {
        let abs = std::fs::canonicalize(&i.path).unwrap_or_else(|_| i.path.clone());
        for dir in abs.ancestors().skip(1).take(STARTUP_SEARCH_DEPTH) {
            let d = dir.join(cassette::naming::STARTUP_DIR);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    if !recordings.is_empty() {
        for d in &dirs {
            let Ok(entries) = std::fs::read_dir(d) else {
                continue;
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with('.') || !name.contains(".json") {
                    continue;
                }
                let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
                if !seen.insert(key) {
                    continue;
                }
                match read_input(f) {
                    Ok(i)
                        if i.cassette.is_startup()
                            && i.cassette
                                .session
                                .recording
                                .as_deref()
                                .is_some_and(|r| recordings.contains(r)) =>
                    {
                        startup.push(i);
                    }
                    Ok(_) => {}
                    Err(e) => notes.push(format!("{e:#}: skipped")),
                }
            }
        }
    }
    sort_recorded(&mut startup);
    if !startup.is_empty() {
        let calls: usize = startup.iter().map(|i| i.cassette.events.len()).sum();
        notes.push(format!(
            "{calls} startup call(s) of {} process(es) from {} answer what the app does before its first request",
            startup.len(),
            startup
                .iter()
                .filter_map(|i| i.path.parent())
                .map(|p| p.display().to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok((requests, startup, notes))
}

/// The cassette files `paths` name: files as given, directories walked (hidden entries
/// skipped; `.json`, `.json.zst`, `.json.gz`), in path order.
///
/// # Errors
/// A path that does not exist or a directory that cannot be read.
pub fn cassette_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => collect(p, &mut files)?,
            Ok(_) => files.push(p.clone()),
            Err(e) => bail!("{}: {e}", p.display()),
        }
    }
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect(&p, out)?;
        } else if crate::index::SUFFIXES.iter().any(|s| name.ends_with(s)) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses `ip:port` / `[v6]:port`.
#[must_use]
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// Builds the plan.
///
/// # Errors
/// Corrupt `wire` bytes in a cassette.
pub fn plan(inputs: Vec<Input>, selection: &Selection) -> anyhow::Result<Plan> {
    let (inputs, startup, startup_notes) = split_startup(inputs)?;
    let journal = Arc::new(Journal::default());
    let mut dests: BTreeMap<(Protocol, SocketAddr), Destination> = BTreeMap::new();
    let mut live: Vec<(Protocol, SocketAddr)> = Vec::new();
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut notes = startup_notes;
    let mut unsupported: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused: Vec<SocketAddr> = Vec::new();
    // Startup calls first: the app makes them first, and a request's identical call must not
    // take a startup call's recorded answer.
    let ordered = startup
        .iter()
        .enumerate()
        .map(|(k, i)| (inputs.len() + k, i))
        .chain(inputs.iter().enumerate());
    for (ci, input) in ordered {
        let c = &input.cassette;
        if c.is_python_legacy() {
            notes.push(format!(
                "{}: recorded by the Python tool (schema {}): its database calls hold no wire bytes and its HTTP calls no destination address, so they cannot be mocked",
                input.path.display(),
                c.schema_version
            ));
        }
        for s in &c.db_sessions {
            if !s.missing.is_empty() {
                notes.push(format!(
                    "{}: the {} session to {} was already open when recording started (missing: {}); replay answers the handshake itself",
                    input.path.display(),
                    s.protocol,
                    s.remote.as_deref().unwrap_or("?"),
                    s.missing.join(", ")
                ));
            }
        }
        for ev in &c.events {
            if ev.kind == CONNECT_EVENT {
                match refused_destination(ev) {
                    Some(a) if !refused.contains(&a) => refused.push(a),
                    Some(_) => {}
                    None => {
                        *unsupported
                            .entry(format!(
                                "{CONNECT_EVENT} failing with {}",
                                ev.result.error.as_deref().unwrap_or("an unknown error")
                            ))
                            .or_default() += 1;
                    }
                }
                continue;
            }
            let Some(proto) = super::ledger::mocked_protocol(ev) else {
                *unsupported
                    .entry(format!("{} {}", ev.kind, ev.signature.lib))
                    .or_default() += 1;
                continue;
            };
            let Some(addr) = ev
                .connection
                .as_ref()
                .and_then(|k| k.remote.as_deref())
                .and_then(parse_addr)
            else {
                *unsupported
                    .entry(format!("{} without a recorded address", ev.kind))
                    .or_default() += 1;
                continue;
            };
            let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
            let mut names = Vec::new();
            if let Some(n) = ev.connection.as_ref().and_then(|k| k.server_name.clone()) {
                names.push(n.to_ascii_lowercase());
            }
            // The URL's host name; without a URL the event's host is the TLS name (above) or
            // the remote address, never a name.
            if let Some(h) = ev.signature.url.as_deref().and_then(urls::url_hostname)
                && h.parse::<IpAddr>().is_err()
            {
                names.push(h);
            }
            names.sort();
            names.dedup();
            for n in &names {
                let v = hosts.entry(n.clone()).or_default();
                if !v.contains(&addr.ip().to_string()) {
                    v.push(addr.ip().to_string());
                }
            }
            if selection.is_live(proto, addr, &names) {
                if !live.contains(&(proto, addr)) {
                    live.push((proto, addr));
                }
                continue;
            }
            let d = dests
                .entry((proto, addr))
                .or_insert_with(|| Destination::new(addr, proto, journal.clone()));
            if ev.connection.as_ref().is_some_and(|k| k.tls) {
                d.tls = true;
            }
            for n in names {
                if !d.server_names.contains(&n) {
                    d.server_names.push(n);
                }
            }
            d.push(RecordedCall::new(ci, proto, ev.clone()).map_err(|e| {
                anyhow::anyhow!("{}: {e} (the cassette is corrupt)", input.path.display())
            })?);
        }
        for s in &c.db_sessions {
            let Some(addr) = s.remote.as_deref().and_then(parse_addr) else {
                continue;
            };
            let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
            for ((_, a), d) in &mut dests {
                if *a == addr && !d.facts.contains(&s.facts) {
                    // Sessions seen from their start carry the most facts: keep them first.
                    if s.missing.is_empty() {
                        d.facts.insert(0, s.facts.clone());
                    } else {
                        d.facts.push(s.facts.clone());
                    }
                }
            }
        }
    }
    for (what, n) in unsupported {
        notes.push(format!(
            "{n} recorded call(s) of {what} cannot be mocked and are left out"
        ));
    }
    // A destination that also answered (the service came up later) is mocked: its calls
    // need answers, and a refusal could not be told from a later success by address alone.
    refused.retain(|a| !dests.keys().any(|(_, d)| d == a));
    Ok(Plan {
        inputs,
        startup,
        destinations: dests.into_values().map(Arc::new).collect(),
        live,
        hosts,
        refused,
        journal,
        notes,
    })
}

/// The destination of a recorded `tcp.connect` that was refused (`ECONNREFUSED`), in the
/// form the mocks are keyed by; `None` for other errors (unreachable, timed out), which replay
/// cannot reproduce yet, or an event without an address.
fn refused_destination(ev: &Event) -> Option<SocketAddr> {
    if ev.result.errno != Some(nix::errno::Errno::ECONNREFUSED as i32) {
        return None;
    }
    let a = ev
        .connection
        .as_ref()
        .and_then(|k| k.remote.as_deref())
        .and_then(parse_addr)?;
    Some(SocketAddr::new(canonical(a.ip()), a.port()))
}

/// The loopback twin of a loopback address (`127.0.0.1` ↔ `::1`): apps resolving `localhost`
/// may connect to either.
#[must_use]
pub fn loopback_twin(addr: SocketAddr) -> Option<SocketAddr> {
    match addr.ip() {
        IpAddr::V4(v4) if v4 == Ipv4Addr::LOCALHOST => Some(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            addr.port(),
        )),
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            addr.port(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_rules() {
        let a: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let s = Selection::parse(&[], &["http".into()]).unwrap();
        assert!(s.is_live(Protocol::Http, a, &[]));
        assert!(!s.is_live(Protocol::Postgres, a, &[]));
        let s = Selection::parse(&["postgres,redis".into()], &[]).unwrap();
        assert!(!s.is_live(Protocol::Postgres, a, &[]));
        assert!(s.is_live(Protocol::Http, a, &[]));
        let s = Selection::parse(&[], &["127.0.0.1:5432".into()]).unwrap();
        assert!(s.is_live(Protocol::Postgres, a, &[]));
        assert!(!s.is_live(Protocol::Postgres, "127.0.0.1:5433".parse().unwrap(), &[]));
        let err = Selection::parse(&["httpz".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown protocol"), "{err}");
        assert!(Selection::parse(&[], &["httpx".into()]).is_ok());
    }

    /// Issue #26: a cassette replayed alone finds its recording's startup cassettes in the
    /// `.startup/` next to its date directory, and only those of its recording.
    #[test]
    fn one_cassette_finds_its_recordings_startup() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cassettes/ours/POST__login_caf__e92ca5c8.json");
        let mut req = cassette::read(&fixture).unwrap();
        req.session.recording = Some("rec-a".into());
        let dir = tempfile::tempdir().unwrap();
        let one = cassette::write(dir.path(), &req, cassette::Compression::None).unwrap();
        let startup = |id: &str, recording: &str| {
            let mut c = req.clone();
            c.session.id = id.into();
            c.session.recording = Some(recording.into());
            c.startup = Some(cassette::format::StartupInfo {
                pid: 7,
                ended_by: "first-request".into(),
                ..Default::default()
            });
            cassette::write(dir.path(), &c, cassette::Compression::None).unwrap()
        };
        let mine = startup("aaaaaaaa-0000-4000-8000-000000000000", "rec-a");
        startup("bbbbbbbb-0000-4000-8000-000000000000", "rec-b");
        assert!(mine.starts_with(dir.path().join(".startup")));
        let inputs = load_inputs(std::slice::from_ref(&one)).unwrap();
        let (requests, found, notes) = split_startup(inputs).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(found.len(), 1, "{notes:?}");
        assert_eq!(found[0].path, std::fs::canonicalize(&mine).unwrap_or(mine));
        assert!(
            notes.iter().any(|n| n.contains("startup call")),
            "{notes:?}"
        );
        // The directory itself: `.startup/` is not walked as requests.
        let inputs = load_inputs(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(inputs.len(), 1);
        // Only startup cassettes: an error naming the fix.
        let only = load_inputs(&[dir.path().join(".startup")]).unwrap();
        let e = split_startup(only).unwrap_err().to_string();
        assert!(e.contains("request cassettes"), "{e}");
    }
}
