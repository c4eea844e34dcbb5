//! Finding OpenSSL in a traced process and choosing where to probe it.
//!
//! Every `libssl*.so*` a process maps (found in `/proc/PID/maps`, opened through
//! `/proc/PID/root` so containers work) is inspected with the `object` crate:
//! - preferred sites: OpenSSL's internal `ssl_read_internal` / `ssl_write_internal`, located
//!   through the `call` at the start of the exported `SSL_read_ex` / `SSL_write_ex`
//!   (`sub $N,%rsp; call <internal>`). Both `SSL_read` and `SSL_read_ex` go through them, and
//!   their first instruction is a `push`, which the kernel emulates: an entry + return probe
//!   there costs about 1 µs, against about 12 µs at the exported functions whose first
//!   instruction (`sub`) the kernel single-steps on our VMs (docs/ARCHITECTURE.md has the
//!   measurements);
//! - fallback: the exported `SSL_read_ex`, `SSL_read`, `SSL_write_ex`, `SSL_write`.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// Which entry program a site gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// `(SSL*, buf, num, size_t *readbytes)`.
    ReadEx,
    /// `(SSL*, buf, int num)`, returns the count.
    Read,
    /// `(SSL*, buf, num, size_t *written)`.
    WriteEx,
    /// `(SSL*, buf, int num)`, returns the count.
    Write,
}

impl SiteKind {
    /// Name of the entry program in the eBPF object.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Self::ReadEx => "ssl_read_ex_enter",
            Self::Read => "ssl_read_enter",
            Self::WriteEx => "ssl_write_ex_enter",
            Self::Write => "ssl_write_enter",
        }
    }
}

/// One probe site: entry program at `offset`, plus the return program at the same offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub kind: SiteKind,
    /// File offset of the function's first instruction.
    pub offset: u64,
    /// Human description (`ssl_read_internal via SSL_read_ex`, `SSL_write`).
    pub what: String,
    /// The first instruction is one the kernel emulates (cheap probe).
    pub emulated: bool,
}

/// Probe plan for one library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibPlan {
    pub sites: Vec<Site>,
}

/// Why a library cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an ELF shared object this agent understands: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error(
        "{} exports none of SSL_read_ex, SSL_read, SSL_write_ex, SSL_write (unsupported OpenSSL build); this process' TLS traffic is not recorded, its plaintext traffic is",
        path.display()
    )]
    NoSymbols { path: PathBuf },
}

/// Paths (as the process sees them) of the OpenSSL libraries a process maps.
#[must_use]
pub fn mapped_ssl_libs(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let base = path.rsplit('/').next().unwrap_or(path);
        if base.starts_with("libssl") && base.contains(".so") {
            out.insert(PathBuf::from(path));
        }
    }
    out.into_iter().collect()
}

/// OpenSSL libraries in the standard library directories of `pid`'s mount namespace, whether
/// or not the process maps them yet: a uprobe on a file applies as soon as the process maps
/// it, so probing these up front covers an `import ssl` made after tracing started.
#[must_use]
pub fn system_ssl_libs(pid: u32) -> Vec<PathBuf> {
    const DIRS: [&str; 7] = [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ];
    let mut out = Vec::new();
    for dir in DIRS {
        let Ok(rd) = fs::read_dir(in_process_root(pid, Path::new(dir))) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // libssl.so.3, libssl.so.1.1 (not the unversioned dev symlink, not libssl3.so of NSS)
            if name.starts_with("libssl.so.") {
                out.push(Path::new(dir).join(&*name));
            }
        }
    }
    out
}

/// The path through which the agent opens a file of process `pid`'s mount namespace.
#[must_use]
pub fn in_process_root(pid: u32, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(rel)
}

/// Decides where to probe the library at `path`.
pub fn plan(path: &Path) -> Result<LibPlan, TlsError> {
    let data = fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    plan_bytes(&data).map_err(|e| match e {
        PlanError::Parse(source) => TlsError::Parse {
            path: path.to_owned(),
            source,
        },
        PlanError::NoSymbols => TlsError::NoSymbols {
            path: path.to_owned(),
        },
    })
}

#[derive(Debug)]
enum PlanError {
    Parse(object::Error),
    NoSymbols,
}

/// A function found in the ELF: virtual address and file offset.
#[derive(Clone, Copy, Debug)]
struct Func {
    addr: u64,
    offset: u64,
}

fn plan_bytes(data: &[u8]) -> Result<LibPlan, PlanError> {
    let file = object::File::parse(data).map_err(PlanError::Parse)?;
    let find = |name: &str| -> Option<Func> {
        let sym = file.dynamic_symbols().chain(file.symbols()).find(|s| {
            s.name()
                .is_ok_and(|n| n == name || n.split('@').next() == Some(name))
                && s.address() != 0
        })?;
        let addr = sym.address();
        let offset = addr_to_offset(&file, addr)?;
        Some(Func { addr, offset })
    };
    let internal = |wrapper: Option<Func>| -> Option<Func> {
        let w = wrapper?;
        let target = call_target_after_prologue(data, w)?;
        let offset = addr_to_offset(&file, target)?;
        Some(Func {
            addr: target,
            offset,
        })
    };
    let (read_ex, read, write_ex, write) = (
        find("SSL_read_ex"),
        find("SSL_read"),
        find("SSL_write_ex"),
        find("SSL_write"),
    );
    if read_ex.is_none() && read.is_none() && write_ex.is_none() && write.is_none() {
        return Err(PlanError::NoSymbols);
    }
    let mut sites = Vec::new();
    let mut add_side = |ex: Option<Func>,
                        plain: Option<Func>,
                        ex_kind: SiteKind,
                        plain_kind: SiteKind,
                        names: (&str, &str, &str)| {
        if let Some(i) = internal(ex).filter(|i| first_insn_emulated(data, i.offset)) {
            sites.push(Site {
                kind: ex_kind,
                offset: i.offset,
                what: format!("{} via {}", names.0, names.1),
                emulated: true,
            });
            return;
        }
        if let Some(f) = ex {
            sites.push(Site {
                kind: ex_kind,
                offset: f.offset,
                what: names.1.to_owned(),
                emulated: first_insn_emulated(data, f.offset),
            });
        }
        if let Some(f) = plain {
            sites.push(Site {
                kind: plain_kind,
                offset: f.offset,
                what: names.2.to_owned(),
                emulated: first_insn_emulated(data, f.offset),
            });
        }
    };
    add_side(
        read_ex,
        read,
        SiteKind::ReadEx,
        SiteKind::Read,
        ("ssl_read_internal", "SSL_read_ex", "SSL_read"),
    );
    add_side(
        write_ex,
        write,
        SiteKind::WriteEx,
        SiteKind::Write,
        ("ssl_write_internal", "SSL_write_ex", "SSL_write"),
    );
    Ok(LibPlan { sites })
}

fn addr_to_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.sections().find_map(|s| {
        let (start, size) = (s.address(), s.size());
        let (off, _) = s.file_range()?;
        (addr >= start && addr < start + size).then(|| addr - start + off)
    })
}

/// For `[endbr64;] sub $imm8,%rsp; call rel32` at `f`, the call's target address.
fn call_target_after_prologue(data: &[u8], f: Func) -> Option<u64> {
    let at = usize::try_from(f.offset).ok()?;
    let code = data.get(at..at + 16)?;
    let mut i = 0;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        i += 4;
    }
    // REX.W 83 /5 ib = sub $imm8, %rsp
    if code.get(i..i + 3)? != [0x48, 0x83, 0xec] {
        return None;
    }
    i += 4;
    if *code.get(i)? != 0xe8 {
        return None;
    }
    let rel = i32::from_le_bytes(code.get(i + 1..i + 5)?.try_into().ok()?);
    let next = f.addr + (i as u64) + 5;
    Some(next.wrapping_add_signed(i64::from(rel)))
}

/// True when the instruction at file offset `off` is one x86 uprobes emulate instead of
/// single-stepping: `push %reg` (50–57, 41 50–57), `nop`, `call`, `jmp`.
pub(crate) fn first_insn_emulated(data: &[u8], off: u64) -> bool {
    let Some(b) = usize::try_from(off).ok().and_then(|o| data.get(o..o + 2)) else {
        return false;
    };
    matches!(b[0], 0x50..=0x57 | 0x90 | 0xe8 | 0xe9 | 0xeb)
        || (b[0] == 0x41 && (0x50..=0x57).contains(&b[1]))
}

/// Parses the server name (SNI) out of the first bytes of a TLS connection (a ClientHello).
/// Hand-written: it is one extension of one message, and pulling a TLS library in for it would
/// be more code to review than these lines.
#[must_use]
pub fn parse_sni(b: &[u8]) -> Option<String> {
    // Record: type 22 (handshake), version 3.x, length.
    if b.len() < 5 || b[0] != 22 || b[1] != 3 {
        return None;
    }
    let hs = b.get(5..)?;
    // Handshake: type 1 (ClientHello), 3-byte length, version(2), random(32).
    if *hs.first()? != 1 {
        return None;
    }
    let mut i = 4 + 2 + 32;
    let sid = *hs.get(i)? as usize;
    i += 1 + sid;
    let suites = u16::from_be_bytes([*hs.get(i)?, *hs.get(i + 1)?]) as usize;
    i += 2 + suites;
    let comp = *hs.get(i)? as usize;
    i += 1 + comp;
    let ext_len = u16::from_be_bytes([*hs.get(i)?, *hs.get(i + 1)?]) as usize;
    i += 2;
    let end = (i + ext_len).min(hs.len());
    while i + 4 <= end {
        let ty = u16::from_be_bytes([hs[i], hs[i + 1]]);
        let len = u16::from_be_bytes([hs[i + 2], hs[i + 3]]) as usize;
        let body = hs.get(i + 4..i + 4 + len)?;
        if ty == 0 {
            // server_name_list: len(2), then entries: type(1) len(2) name.
            let name_len = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]) as usize;
            if *body.get(2)? != 0 {
                return None;
            }
            let name = body.get(5..5 + name_len)?;
            return std::str::from_utf8(name).ok().map(str::to_owned);
        }
        i += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_call_of_a_wrapper() {
        // sub $8,%rsp; call +0x100
        let mut data = vec![0u8; 0x200];
        data[0x10..0x19].copy_from_slice(&[0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x01, 0x00, 0x00]);
        let t = call_target_after_prologue(
            &data,
            Func {
                addr: 0x1010,
                offset: 0x10,
            },
        )
        .unwrap();
        assert_eq!(t, 0x1010 + 9 + 0x100);
        // endbr64 first
        data[0x40..0x4d].copy_from_slice(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18, 0xe8, 0xf0, 0xff, 0xff, 0xff,
        ]);
        let t = call_target_after_prologue(
            &data,
            Func {
                addr: 0x40,
                offset: 0x40,
            },
        )
        .unwrap();
        assert_eq!(t, 0x40 + 13 - 0x10);
        // not the pattern
        assert!(call_target_after_prologue(&data, Func { addr: 0, offset: 0 }).is_none());
    }

    #[test]
    fn emulated_instructions() {
        let d = [0x41, 0x55, 0x55, 0x00, 0x48, 0x83];
        assert!(first_insn_emulated(&d, 0));
        assert!(first_insn_emulated(&d, 2));
        assert!(!first_insn_emulated(&d, 4));
    }

    #[test]
    fn system_libssl_plan_uses_internal_functions() {
        const DIRS: [&str; 4] = [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ];
        let found = DIRS
            .iter()
            .map(|d| Path::new(d).join("libssl.so.3"))
            .find(|p| p.exists());
        let Some(lib) = crate::prereq::require(found, || {
            format!("no system libssl.so.3 in {DIRS:?} (Debian package libssl3)")
        }) else {
            return;
        };
        let plan = plan(&lib).unwrap();
        assert!(
            plan.sites.iter().any(|s| s.kind == SiteKind::ReadEx),
            "{plan:?}"
        );
        assert!(
            plan.sites.iter().any(|s| s.kind == SiteKind::WriteEx),
            "{plan:?}"
        );
        for s in &plan.sites {
            eprintln!(
                "{lib:?}: {} at {:#x} emulated={}",
                s.what, s.offset, s.emulated
            );
        }
    }

    #[test]
    fn sni_from_client_hello() {
        // A minimal ClientHello with one server_name extension for "example.com".
        let name = b"example.com";
        let mut sni = vec![0u8, 0]; // type server_name
        let list_len = 3 + name.len();
        let ext_body_len = 2 + list_len;
        sni.extend_from_slice(&(ext_body_len as u16).to_be_bytes());
        sni.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7u8; 32]);
        hello.push(0); // session id
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        hello.extend_from_slice(&[1, 0]); // compression null
        hello.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        hello.extend_from_slice(&sni);
        let mut hs = vec![1, 0, 0, hello.len() as u8];
        hs.extend_from_slice(&hello);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        assert_eq!(parse_sni(&rec).as_deref(), Some("example.com"));
        assert_eq!(parse_sni(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(parse_sni(&rec[..20]), None);
    }
}
