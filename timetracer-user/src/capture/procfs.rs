//! What /proc tells about a target at attach time: its descendants, its open TCP sockets
//! (connections open before tracing started) and a description of the process.
//!
//! The correlator asks its questions through [`ProcFacts`]: [`Procfs`] reads /proc,
//! [`FixedFacts`] answers from tables (tests and tools replaying records).
use std::{collections::HashMap, fs, net::SocketAddr, path::Path};

use crate::correlate::model::ProcessInfo;

/// What the pipeline asks /proc while it runs.
pub trait ProcFacts: Send {
    /// Describes process `pid` (an empty command line when it is gone).
    fn process_info(&self, pid: u32) -> ProcessInfo;
    /// Local and remote address of socket `fd` of process `pid`, if it is an IPv4/IPv6 TCP
    /// socket that is still open.
    fn socket_addrs(&self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)>;
}

/// [`ProcFacts`] from the live /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Procfs;

impl ProcFacts for Procfs {
    fn process_info(&self, pid: u32) -> ProcessInfo {
        process_info(pid)
    }
    fn socket_addrs(&self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        socket_addrs(pid, fd)
    }
}

/// [`ProcFacts`] from fixed tables: processes not listed are gone (empty description but
/// their pid), sockets not listed have no address.
#[derive(Clone, Debug, Default)]
pub struct FixedFacts {
    pub processes: HashMap<u32, ProcessInfo>,
    /// (pid, fd) → (local, remote).
    pub sockets: HashMap<(u32, i32), (SocketAddr, SocketAddr)>,
}

impl ProcFacts for FixedFacts {
    fn process_info(&self, pid: u32) -> ProcessInfo {
        self.processes.get(&pid).cloned().unwrap_or(ProcessInfo {
            pid,
            ..ProcessInfo::default()
        })
    }
    fn socket_addrs(&self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        self.sockets.get(&(pid, fd)).copied()
    }
}

/// `true` when `/proc/PID` exists.
#[must_use]
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// `pid` and all its live descendants.
#[must_use]
pub fn with_descendants(pid: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && let Some(pp) = ppid(p)
            {
                parent.insert(p, pp);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|&(_, &pp)| pp == cur).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// A TCP socket the process had open when tracing started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSocket {
    pub fd: i32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The local port is a listening port: the process accepted this connection.
    pub server: bool,
}

#[derive(Clone, Debug)]
struct TcpRow {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
}

fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if ip.len() == 8 {
        let v = u32::from_str_radix(ip, 16).ok()?;
        Some(SocketAddr::from((v.to_le_bytes(), port)))
    } else if ip.len() == 32 {
        let mut b = [0u8; 16];
        for w in 0..4 {
            let v = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
            b[w * 4..w * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        Some(SocketAddr::from((b, port)))
    } else {
        None
    }
}

/// Parses `/proc/net/tcp{,6}` text into inode -> row.
fn parse_tcp_table(text: &str, out: &mut HashMap<u64, TcpRow>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (parse_hex_addr(f[1]), parse_hex_addr(f[2])) else {
            continue;
        };
        let state = u8::from_str_radix(f[3], 16).unwrap_or(0);
        if let Ok(inode) = f[9].parse::<u64>() {
            out.insert(
                inode,
                TcpRow {
                    local,
                    remote,
                    state,
                },
            );
        }
    }
}

/// The uid owning the client socket at `peer` of a TCP connection to `server_port` on this
/// host (the row of `/proc/net/tcp{,6}` whose local address is `peer` and whose remote port is
/// `server_port`): who connected to a local server. `None` for a client on another host.
#[must_use]
pub fn tcp_peer_uid(peer: SocketAddr, server_port: u16) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|t| {
        let text = fs::read_to_string(t).ok()?;
        peer_uid_in(&text, peer, server_port)
    })
}

/// [`tcp_peer_uid`] over one table's text. IPv4 peers also match their v4-mapped form.
fn peer_uid_in(text: &str, peer: SocketAddr, server_port: u16) -> Option<u32> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let peer = canon(peer);
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = canon(parse_hex_addr(f.get(1)?)?);
        let remote = parse_hex_addr(f.get(2)?)?;
        (local == peer && remote.port() == server_port)
            .then(|| f.get(7)?.parse().ok())
            .flatten()
    })
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 0x0a;

/// Established TCP sockets of `pid` (in its own network namespace).
#[must_use]
pub fn open_sockets(pid: u32) -> Vec<OpenSocket> {
    let mut table = HashMap::new();
    for f in ["tcp", "tcp6"] {
        if let Ok(t) = fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            parse_tcp_table(&t, &mut table);
        }
    }
    let listening: Vec<SocketAddr> = table
        .values()
        .filter(|r| r.state == TCP_LISTEN)
        .map(|r| r.local)
        .collect();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(link) = fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(row) = table.get(&inode) else {
            continue;
        };
        if row.state != TCP_ESTABLISHED {
            continue;
        }
        let server = listening.iter().any(|l| {
            l.port() == row.local.port() && (l.ip().is_unspecified() || l.ip() == row.local.ip())
        });
        out.push(OpenSocket {
            fd,
            local: row.local,
            remote: row.remote,
            server,
        });
    }
    out
}

/// Local and remote address of one of `pid`'s sockets, if it is an IPv4/IPv6 TCP socket.
#[must_use]
pub fn socket_addrs(pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_string_lossy().into_owned();
    let inode: u64 = link
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let mut table = HashMap::new();
    for f in ["tcp", "tcp6"] {
        if let Ok(t) = fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            parse_tcp_table(&t, &mut table);
        }
    }
    table.get(&inode).map(|r| (r.local, r.remote))
}

/// The command a `record` held child runs: `[agent, __exec-held, FD, --, CMD...]` → `CMD...`
/// (anything else is returned as is).
#[must_use]
pub fn strip_exec_held(cmdline: &[String]) -> Vec<String> {
    match cmdline.get(1).map(String::as_str) {
        Some("__exec-held") if cmdline.len() > 4 => cmdline[4..].to_vec(),
        _ => cmdline.to_vec(),
    }
}

/// Describes a process for the cassette's `session`.
#[must_use]
pub fn process_info(pid: u32) -> ProcessInfo {
    let cmdline: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| crate::k8s::cgroup::v2_path(&c).map(str::to_owned));
    ProcessInfo {
        cgroup,
        cwd,
        pid,
        python_version: python_version(&exe, &maps),
        framework: framework(&cmdline),
        cmdline,
        exe,
    }
}

/// `3.11.7` from a pyenv-style path, else `3.11` from the interpreter or libpython name.
fn python_version(exe: &str, maps: &str) -> Option<String> {
    let from_path = |s: &str| -> Option<String> {
        let i = s.find("/versions/")?;
        let v: String = s[i + 10..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        (v.matches('.').count() == 2).then_some(v)
    };
    if let Some(v) = from_path(exe) {
        return Some(v);
    }
    let name_ver = |s: &str, prefix: &str| -> Option<String> {
        let i = s.rfind(prefix)?;
        let v: String = s[i + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let v = v.trim_end_matches('.').to_owned();
        v.contains('.').then_some(v)
    };
    name_ver(exe, "python").or_else(|| maps.lines().find_map(|l| name_ver(l, "libpython")))
}

fn framework(cmdline: &[String]) -> Option<String> {
    const KNOWN: [&str; 8] = [
        "uvicorn",
        "gunicorn",
        "hypercorn",
        "daphne",
        "granian",
        "flask",
        "waitress",
        "manage.py",
    ];
    for arg in cmdline.iter().take(4) {
        let base = arg.rsplit('/').next().unwrap_or(arg);
        for k in KNOWN {
            if base == k || base.starts_with(&format!("{k} ")) || (k == "flask" && base == "flask")
            {
                return Some(if k == "manage.py" {
                    "django".to_owned()
                } else {
                    k.to_owned()
                });
            }
        }
        if base == "-m" {
            continue;
        }
    }
    // `python -m uvicorn ...`
    cmdline
        .windows(2)
        .find(|w| w[0] == "-m")
        .map(|w| w[1].clone())
        .filter(|m| KNOWN.contains(&m.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_child_command() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            strip_exec_held(&v(&[
                "/bin/agent",
                "__exec-held",
                "5",
                "--",
                "uvicorn",
                "a:b"
            ])),
            v(&["uvicorn", "a:b"])
        );
        assert_eq!(
            strip_exec_held(&v(&["python", "x.py"])),
            v(&["python", "x.py"])
        );
    }

    /// The client side of a loopback connection names its owner; the server side, another
    /// port or a missing row do not.
    #[test]
    fn peer_uid_of_a_local_client() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5678 1 0000000000000000 20 4 30 10 -1\n   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 5679 1 0000000000000000 20 4 30 10 -1\n";
        let peer = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(peer_uid_in(t, peer, 8080), Some(1000));
        assert_eq!(peer_uid_in(t, peer, 8081), None);
        assert_eq!(
            peer_uid_in(t, "127.0.0.1:50001".parse().unwrap(), 8080),
            None
        );
        // The same client seen through an IPv6 socket's v4-mapped address.
        assert_eq!(
            peer_uid_in(t, "[::ffff:127.0.0.1]:50000".parse().unwrap(), 8080),
            Some(1000)
        );
        // A real connection of this process: its uid.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _s = l.accept().unwrap();
        assert_eq!(
            tcp_peer_uid(c.local_addr().unwrap(), l.local_addr().unwrap().port()),
            Some(nix::unistd::geteuid().as_raw())
        );
    }

    #[test]
    fn parses_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5678 1 0000000000000000 20 4 30 10 -1\n";
        let mut m = HashMap::new();
        parse_tcp_table(t, &mut m);
        assert_eq!(m[&1234].state, TCP_LISTEN);
        assert_eq!(m[&5678].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(m[&5678].remote, "127.0.0.1:50000".parse().unwrap());
    }

    #[test]
    fn python_versions() {
        assert_eq!(
            python_version("/root/.pyenv/versions/3.11.7/bin/python3.11", "").as_deref(),
            Some("3.11.7")
        );
        assert_eq!(
            python_version("/usr/bin/python3.11", "").as_deref(),
            Some("3.11")
        );
    }

    #[test]
    fn frameworks() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            framework(&v(&["/v/bin/python", "/v/bin/uvicorn", "app:app"])).as_deref(),
            Some("uvicorn")
        );
        assert_eq!(
            framework(&v(&["python", "-m", "gunicorn", "a:b"])).as_deref(),
            Some("gunicorn")
        );
        assert_eq!(framework(&v(&["python", "x.py"])), None);
    }
}
