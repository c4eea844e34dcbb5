//! Finding the CPython runtime of a traced process, and where to probe it (issue #7).
//!
//! For each process the agent looks for the ELF file that holds the interpreter (a mapped
//! `libpython3.X.so`, else the executable when it exports `_PyRuntime`, as Debian's static
//! `/usr/bin/python3.11` does) and derives:
//! - the version (file name, and `Py_Version` where exported) and the struct offsets of that
//!   minor version from [`offsets::TABLE`] (generated from DWARF by `tools/pyoffsets/gen.sh`);
//! - `_PyRuntime` and `PyCoro_Type` (exported, `.dynsym`), mapped to process addresses;
//! - `PyContext_CopyCurrent` (exported) for the copy probe;
//! - `_asyncio_Task___init__` for the task probe: from `.symtab` when present (accepting
//!   `.lto_priv.N` suffixes), else — stripped builds — as the `tp_init` of the static
//!   `_asyncio.Task` type (3.9–3.11) or the `Py_tp_init` slot of its `PyType_Spec` (3.12+),
//!   both found through the pointer to the `"_asyncio.Task"` name string;
//! - a self-check: walk the live thread list through `/proc/PID/mem` and find the main
//!   thread's `PyThreadState` (`native_thread_id == pid`, `interp` pointing back).
//!
//! Anything missing gives [`Discovery::Unsupported`] with a reason; the agent then flags every
//! call of that process `ambiguous/unsupported-runtime` instead of guessing.
mod offsets;

use std::{
    fs,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};
use timetracer_common::PyProc;

use super::tls::in_process_root;

/// Struct member offsets of one CPython minor version (`-1`: the member does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub runtime_interpreters_head: i64,
    pub interp_threads_head: i64,
    pub tstate_next: i64,
    pub tstate_interp: i64,
    pub tstate_thread_id: i64,
    pub tstate_native_thread_id: i64,
    pub tstate_context: i64,
    pub context_vars: i64,
    /// `PyContext.ctx_entered` (an `int`, non-zero while the context is entered).
    pub context_entered: i64,
    pub task_coro: i64,
    pub task_context: i64,
    pub coro_qualname: i64,
    pub unicode_ascii_data: i64,
}

/// The offsets of CPython `major.minor`, if the table has them.
#[must_use]
pub fn offsets_for(major: u32, minor: u32) -> Option<Offsets> {
    offsets::TABLE
        .iter()
        .find(|(a, b, _)| *a == major && *b == minor)
        .map(|(_, _, o)| *o)
}

/// A probe site: file (as the agent opens it) and file offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    pub path: PathBuf,
    pub offset: u64,
    /// How it was found (`.dynsym`, `.symtab`, `tp_init of _asyncio.Task`, ...).
    pub how: String,
    /// The first instruction is one the kernel emulates (cheap probe).
    pub emulated: bool,
}

/// A supported CPython runtime.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// `3.11.7` (or `3.11` when the patch level is unknown).
    pub version: String,
    /// The file holding the interpreter (host path).
    pub interpreter: PathBuf,
    /// What the kernel needs.
    pub proc: PyProc,
    pub copy_site: ProbeSite,
    /// `None` while `_asyncio` cannot be found yet (it is imported lazily).
    pub task_site: Option<ProbeSite>,
    /// Why `task_site` is missing.
    pub task_missing: Option<String>,
}

/// What looking at a process found.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// No CPython in this process.
    NotPython,
    /// CPython, not initialised far enough yet (no thread state): look again shortly.
    Pending(String),
    /// CPython this agent cannot follow; every call of the process is flagged.
    Unsupported {
        version: String,
        reason: String,
    },
    Supported(Box<Runtime>),
}

/// One line of `/proc/PID/maps`.
struct MapLine {
    start: u64,
    offset: u64,
    path: String,
}

fn maps(pid: u32) -> Vec<MapLine> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let range = it.next()?;
            let _perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.next()?.to_owned();
            let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
            Some(MapLine {
                start,
                offset,
                path,
            })
        })
        .collect()
}

/// `3.11` from `libpython3.11.so.1.0`, `python3.11`, `_asyncio.cpython-311-...`; also tells
/// build flags after the number (`t` free-threaded, `d` debug).
fn version_in_name(name: &str) -> Option<(u32, u32, String)> {
    let i = name.find("python3.")?;
    let rest = &name[i + "python3.".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let minor = digits.parse().ok()?;
    let flags: String = rest[digits.len()..]
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    Some((3, minor, flags))
}

/// Looks at process `pid`.
#[must_use]
pub fn discover(pid: u32) -> Discovery {
    let lines = maps(pid);
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    // The interpreter's file: a mapped libpython, else the executable.
    let lib = lines
        .iter()
        .find(|m| {
            Path::new(&m.path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libpython3"))
        })
        .map(|m| PathBuf::from(&m.path));
    let file = lib.clone().unwrap_or_else(|| exe.clone());
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = in_process_root(pid, &file);
    let Ok(data) = fs::read(&host) else {
        return Discovery::NotPython;
    };
    let Ok(elf) = object::File::parse(&*data) else {
        return Discovery::NotPython;
    };
    let dynsym = |n: &str| -> Option<u64> {
        elf.dynamic_symbols()
            .find(|s| s.name() == Ok(n) && s.address() != 0)
            .map(|s| s.address())
    };
    let Some(runtime_vaddr) = dynsym("_PyRuntime") else {
        // Right after `exec` the loader may not have mapped libpython yet.
        let exe_name = exe.file_name().unwrap_or_default().to_string_lossy();
        if lib.is_none() && exe_name.starts_with("python3") {
            return Discovery::Pending(format!(
                "{} has no _PyRuntime and no libpython is mapped yet",
                exe.display()
            ));
        }
        return Discovery::NotPython;
    };
    let Some((major, minor, flags)) = version_in_name(&name)
        .or_else(|| version_in_name(&exe.file_name().unwrap_or_default().to_string_lossy()))
    else {
        return Discovery::Unsupported {
            version: "unknown".into(),
            reason: format!("cannot tell the CPython version of {}", file.display()),
        };
    };
    let version = match dynsym("Py_Version").and_then(|a| read_file_u32(&elf, &data, a)) {
        Some(hex) if hex >> 24 == major && (hex >> 16) & 0xff == minor => {
            format!("{major}.{minor}.{}", (hex >> 8) & 0xff)
        }
        _ => format!("{major}.{minor}"),
    };
    let unsupported = |reason: String| Discovery::Unsupported {
        version: version.clone(),
        reason,
    };
    if flags.contains('t') {
        return unsupported(
            "free-threaded CPython build (no GIL): contexts are not followed".into(),
        );
    }
    if flags.contains('d') {
        return unsupported("debug CPython build (different object headers)".into());
    }
    let Some(off) = offsets_for(major, minor) else {
        return unsupported(format!(
            "no struct offsets for CPython {major}.{minor} (table covers 3.9-3.13; regenerate with tools/pyoffsets/gen.sh)"
        ));
    };
    if off.tstate_native_thread_id < 0 {
        return unsupported(format!(
            "CPython {major}.{minor} has no PyThreadState.native_thread_id (added in 3.11); the kernel cannot find a thread's state"
        ));
    }
    // Load bias: process address = file vaddr + bias.
    let first_vaddr = elf.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let Some(base) = lines
        .iter()
        .find(|m| Path::new(&m.path) == file && m.offset == 0)
        .map(|m| m.start)
    else {
        return Discovery::Pending(format!("{} not mapped yet", file.display()));
    };
    let bias = base.wrapping_sub(first_vaddr);
    let runtime = runtime_vaddr.wrapping_add(bias);
    let coro_type = dynsym("PyCoro_Type").map_or(0, |a| a.wrapping_add(bias));
    let proc = PyProc {
        runtime,
        coro_type,
        runtime_interpreters_head: off.runtime_interpreters_head as u32,
        interp_threads_head: off.interp_threads_head as u32,
        tstate_next: off.tstate_next as u32,
        tstate_native_thread_id: off.tstate_native_thread_id as u32,
        tstate_context: off.tstate_context as u32,
        task_coro: off.task_coro as u32,
        task_context: off.task_context as u32,
        coro_qualname: off.coro_qualname as u32,
        unicode_ascii_data: off.unicode_ascii_data as u32,
        context_entered: off.context_entered as u32,
    };
    match self_check(pid, &proc, &off) {
        Ok(()) => {}
        Err(SelfCheck::NotYet(why)) => return Discovery::Pending(why),
        Err(SelfCheck::Failed(why)) => {
            return unsupported(format!("self-check failed: {why}"));
        }
    }
    let Some(copy) = dynsym("PyContext_CopyCurrent").and_then(|a| addr_to_offset(&elf, a)) else {
        return unsupported("PyContext_CopyCurrent is not exported".into());
    };
    let copy_site = ProbeSite {
        path: host.clone(),
        offset: copy,
        how: ".dynsym PyContext_CopyCurrent".into(),
        emulated: super::tls::first_insn_emulated(&data, copy),
    };
    let (task_site, task_missing) = match find_task_init(pid, &lines, &file, &elf, &data, minor) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    Discovery::Supported(Box::new(Runtime {
        version,
        interpreter: file,
        proc,
        copy_site,
        task_site,
        task_missing,
    }))
}

enum SelfCheck {
    NotYet(String),
    Failed(String),
}

/// Walks the live thread list and finds the main thread's state.
fn self_check(pid: u32, p: &PyProc, off: &Offsets) -> Result<(), SelfCheck> {
    let mem = fs::File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| SelfCheck::Failed(format!("cannot read /proc/{pid}/mem: {e}")))?;
    let rd = |addr: u64| -> Result<u64, SelfCheck> {
        let mut b = [0u8; 8];
        mem.read_exact_at(&mut b, addr)
            .map_err(|e| SelfCheck::Failed(format!("reading {addr:#x}: {e}")))?;
        Ok(u64::from_ne_bytes(b))
    };
    let interp = rd(p.runtime + u64::from(p.runtime_interpreters_head))?;
    if interp == 0 {
        return Err(SelfCheck::NotYet("interpreter not initialised yet".into()));
    }
    let mut t = rd(interp + u64::from(p.interp_threads_head))?;
    let mut seen = 0;
    while t != 0 && seen < 4096 {
        seen += 1;
        if rd(t + u64::from(p.tstate_native_thread_id))? == u64::from(pid) {
            let back = rd(t + off.tstate_interp as u64)?;
            if back != interp {
                return Err(SelfCheck::Failed(format!(
                    "thread state {t:#x} of the main thread points to interpreter {back:#x}, not {interp:#x} (wrong offsets for this build?)"
                )));
            }
            return Ok(());
        }
        t = rd(t + u64::from(p.tstate_next))?;
    }
    if seen == 0 {
        return Err(SelfCheck::NotYet("no thread state yet".into()));
    }
    Err(SelfCheck::Failed(format!(
        "none of {seen} thread states has native_thread_id {pid} (wrong offsets for this build?)"
    )))
}

/// Where `_asyncio_Task___init__` is: built into the interpreter's file, or in the
/// `_asyncio` extension module (mapped, or where it will be loaded from).
fn find_task_init(
    pid: u32,
    lines: &[MapLine],
    interp_file: &Path,
    interp_elf: &object::File<'_>,
    interp_data: &[u8],
    minor: u32,
) -> Result<ProbeSite, String> {
    if interp_elf
        .dynamic_symbols()
        .chain(interp_elf.symbols())
        .any(|s| s.name() == Ok("PyInit__asyncio"))
    {
        return task_init_in(
            &in_process_root(pid, interp_file),
            interp_elf,
            interp_data,
            minor,
        );
    }
    let mapped = lines.iter().find(|m| {
        Path::new(&m.path)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("_asyncio."))
    });
    let path = match mapped {
        Some(m) => PathBuf::from(&m.path),
        None => predicted_asyncio(pid, interp_file, minor)
            .ok_or_else(|| "the _asyncio module is neither loaded nor found on disk".to_owned())?,
    };
    let host = in_process_root(pid, &path);
    let data = fs::read(&host).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let elf = object::File::parse(&*data).map_err(|e| format!("{}: {e}", path.display()))?;
    task_init_in(&host, &elf, &data, minor)
}

/// `.../lib/python3.X/lib-dynload/_asyncio.cpython-3X-*.so` next to the interpreter.
fn predicted_asyncio(pid: u32, interp_file: &Path, minor: u32) -> Option<PathBuf> {
    let dir = interp_file.parent()?;
    let mut cands = vec![
        dir.join(format!("python3.{minor}/lib-dynload")),
        dir.join(format!("../lib/python3.{minor}/lib-dynload")),
        PathBuf::from(format!("/usr/lib/python3.{minor}/lib-dynload")),
        PathBuf::from(format!("/usr/local/lib/python3.{minor}/lib-dynload")),
    ];
    cands.dedup();
    for d in cands {
        let Ok(rd) = fs::read_dir(in_process_root(pid, &d)) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("_asyncio.cpython-3{minor}")) && n.ends_with(".so") {
                return Some(d.join(n));
            }
        }
    }
    None
}

/// Finds `_asyncio_Task___init__` in one ELF file.
fn task_init_in(
    host: &Path,
    elf: &object::File<'_>,
    data: &[u8],
    minor: u32,
) -> Result<ProbeSite, String> {
    let site = |addr: u64, how: String| -> Result<ProbeSite, String> {
        let offset = addr_to_offset(elf, addr)
            .ok_or_else(|| format!("{how}: address {addr:#x} is in no section"))?;
        Ok(ProbeSite {
            path: host.to_owned(),
            offset,
            how,
            emulated: super::tls::first_insn_emulated(data, offset),
        })
    };
    if let Some(s) = elf.symbols().chain(elf.dynamic_symbols()).find(|s| {
        s.address() != 0
            && s.name().is_ok_and(|n| {
                n == "_asyncio_Task___init__" || n.starts_with("_asyncio_Task___init__.")
            })
    }) {
        return site(s.address(), ".symtab _asyncio_Task___init__".into());
    }
    match tp_init_of(elf, data, b"_asyncio.Task\0", minor) {
        Some((addr, how)) => site(addr, how),
        None => Err(format!(
            "{}: no symbol _asyncio_Task___init__ and no _asyncio.Task type object found (stripped build)",
            host.display()
        )),
    }
}

/// Symbol-free path: the `tp_init` of the type named `name`, through the pointer to its name
/// string: a static `PyTypeObject` (`tp_name` at +24, `tp_init` at +296) or a `PyType_Spec`
/// (`name` at +0, `slots` at +24; slot `Py_tp_init` = 60).
fn tp_init_of(
    elf: &object::File<'_>,
    data: &[u8],
    name: &[u8],
    minor: u32,
) -> Option<(u64, String)> {
    let str_addr = find_bytes_vaddr(elf, data, name)?;
    let ptrs = Pointers::new(elf, data);
    let is_text = |a: u64| {
        elf.sections()
            .any(|s| s.name() == Ok(".text") && a >= s.address() && a < s.address() + s.size())
    };
    for at in ptrs.locations_of(str_addr) {
        // Static type object (3.9-3.11).
        if minor <= 11
            && let Some(f) = ptrs.value_at(at.wrapping_sub(24).wrapping_add(296))
            && is_text(f)
        {
            return Some((f, "tp_init of the static _asyncio.Task type".into()));
        }
        // PyType_Spec (3.12+): walk its slots.
        if let Some(slots) = ptrs.value_at(at + 24) {
            for i in 0..128u64 {
                let slot = read_file_u32(elf, data, slots + 16 * i)?;
                if slot == 0 {
                    break;
                }
                if slot == 60
                    && let Some(f) = ptrs.value_at(slots + 16 * i + 8)
                    && is_text(f)
                {
                    return Some((f, "Py_tp_init slot of the _asyncio.Task PyType_Spec".into()));
                }
            }
        }
    }
    None
}

/// Pointer values stored in the file: `R_X86_64_RELATIVE` addends (PIC) or raw values
/// (non-PIE executables).
struct Pointers<'a, 'd> {
    elf: &'a object::File<'d>,
    data: &'a [u8],
    relative: std::collections::HashMap<u64, u64>,
}

impl<'a, 'd> Pointers<'a, 'd> {
    fn new(elf: &'a object::File<'d>, data: &'a [u8]) -> Self {
        let mut relative = std::collections::HashMap::new();
        if let Some(relocs) = elf.dynamic_relocations() {
            for (at, r) in relocs {
                if matches!(r.flags(), object::RelocationFlags::Elf { r_type } if r_type == object::elf::R_X86_64_RELATIVE)
                {
                    relative.insert(at, r.addend() as u64);
                }
            }
        }
        Self {
            elf,
            data,
            relative,
        }
    }

    fn value_at(&self, vaddr: u64) -> Option<u64> {
        if let Some(v) = self.relative.get(&vaddr) {
            return Some(*v);
        }
        let off = addr_to_offset(self.elf, vaddr)?;
        let b = self.data.get(off as usize..off as usize + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Virtual addresses holding a pointer to `target`.
    fn locations_of(&self, target: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .relative
            .iter()
            .filter(|(_, v)| **v == target)
            .map(|(k, _)| *k)
            .collect();
        if out.is_empty() {
            // Non-PIE: absolute pointers in the data sections.
            let needle = target.to_le_bytes();
            for s in self.elf.sections() {
                let Ok(name) = s.name() else { continue };
                if !(name.starts_with(".data") || name == ".data.rel.ro") {
                    continue;
                }
                let Some((off, size)) = s.file_range() else {
                    continue;
                };
                let Some(bytes) = self.data.get(off as usize..(off + size) as usize) else {
                    continue;
                };
                for (i, w) in bytes.chunks_exact(8).enumerate() {
                    if w == needle {
                        out.push(s.address() + 8 * i as u64);
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Virtual address of the first occurrence of `needle` in a read-only data section.
fn find_bytes_vaddr(elf: &object::File<'_>, data: &[u8], needle: &[u8]) -> Option<u64> {
    for s in elf.sections() {
        let Ok(name) = s.name() else { continue };
        if !name.starts_with(".rodata") {
            continue;
        }
        let (off, size) = s.file_range()?;
        let bytes = data.get(off as usize..(off + size) as usize)?;
        // The name must start a string: preceded by NUL or at the section start.
        let mut from = 0;
        while let Some(i) = bytes[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
        {
            if i == 0 || bytes[i - 1] == 0 {
                return Some(s.address() + i as u64);
            }
            from = i + 1;
        }
    }
    None
}

fn read_file_u32(elf: &object::File<'_>, data: &[u8], vaddr: u64) -> Option<u32> {
    let off = addr_to_offset(elf, vaddr)? as usize;
    Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
}

/// File offset of a virtual address.
fn addr_to_offset(elf: &object::File<'_>, addr: u64) -> Option<u64> {
    elf.segments().find_map(|s| {
        let (start, size) = (s.address(), s.size());
        let (off, fsize) = s.file_range();
        (addr >= start && addr < start + size && addr - start < fsize).then(|| addr - start + off)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<prefix>` of `<prefix>/bin/python3.X` (symlinks resolved).
    fn prefix_of(python: &Path) -> PathBuf {
        python
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()))
            .parent()
            .and_then(Path::parent)
            .expect("<prefix>/bin/python3.X")
            .to_path_buf()
    }

    fn asyncio_so(prefix: &Path, minor: u32) -> Option<PathBuf> {
        let d = prefix.join(format!("lib/python3.{minor}/lib-dynload"));
        fs::read_dir(&d)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("_asyncio."))
            })
    }

    #[test]
    fn versions_from_names() {
        assert_eq!(
            version_in_name("libpython3.11.so.1.0"),
            Some((3, 11, String::new()))
        );
        assert_eq!(
            version_in_name("python3.13t"),
            Some((3, 13, "t".to_owned()))
        );
        assert_eq!(version_in_name("ld-linux.so"), None);
    }

    #[test]
    fn table_matches_the_study_for_3_11() {
        // attribution-study §2.1, read with gdb from the pyenv 3.11.7 DWARF.
        let o = offsets_for(3, 11).unwrap();
        assert_eq!(o.tstate_context, 0xe0);
        assert_eq!(o.tstate_native_thread_id, 0xa0);
        assert_eq!(o.runtime_interpreters_head, 0x28);
        assert_eq!(o.interp_threads_head, 0x10);
        assert_eq!(o.task_coro, 0x88);
        assert_eq!(o.task_context, 0x98);
        assert_eq!(o.coro_qualname, 0x28);
        assert_eq!(o.unicode_ascii_data, 48);
        for minor in 9..=13 {
            assert!(offsets_for(3, minor).is_some(), "3.{minor}");
        }
    }

    /// The symbol-free path finds the same function as `.symtab`, for a non-distribution
    /// build (pyenv, uv, /usr/local: with `.symtab`) of each supported version (3.9-3.11
    /// static types, 3.12+ `PyType_Spec`). A version not found skips the test, which is a
    /// failure under `TIMETRACER_REQUIRE_PRIVILEGED=1`.
    #[test]
    fn tp_init_path_agrees_with_symtab() {
        let mut missing = Vec::new();
        for minor in 9..=13 {
            let Some(python) = crate::prereq::find_cpython(minor) else {
                missing.push(format!("3.{minor}"));
                continue;
            };
            let prefix = prefix_of(&python);
            let so = asyncio_so(&prefix, minor).unwrap_or_else(|| {
                panic!(
                    "{}: no lib/python3.{minor}/lib-dynload/_asyncio.*.so",
                    prefix.display()
                )
            });
            let data = fs::read(&so).unwrap();
            let elf = object::File::parse(&*data).unwrap();
            let sym = elf
                .symbols()
                .find(|s| s.name() == Ok("_asyncio_Task___init__"))
                .map(|s| s.address())
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no _asyncio_Task___init__ in .symtab (a stripped build cannot check \
                         the symbol-free path)",
                        so.display()
                    )
                });
            let (found, how) = tp_init_of(&elf, &data, b"_asyncio.Task\0", minor)
                .unwrap_or_else(|| panic!("3.{minor}: not found"));
            assert_eq!(found, sym, "3.{minor} via {how}");
        }
        if !missing.is_empty() {
            crate::prereq::skip_or_fail(&format!(
                "no CPython {} with a .symtab to check (searched {})",
                missing.join(", "),
                crate::prereq::CPYTHON_SEARCH
            ));
        }
    }

    /// The distribution's stripped `_asyncio` (Debian 3.11: attribution-study §2.3, `tp_init`
    /// at 0x7230).
    #[test]
    fn stripped_debian_asyncio() {
        let Some((python, minor)) = crate::prereq::require(crate::prereq::distro_python(), || {
            "no distribution python3 at /usr/bin/python3 (Debian package python3-minimal)"
                .to_owned()
        }) else {
            return;
        };
        let so = asyncio_so(&prefix_of(&python), minor)
            .unwrap_or_else(|| panic!("{}: no lib-dynload/_asyncio.*.so", python.display()));
        let data = fs::read(&so).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        assert!(elf.symbols().next().is_none(), "expected a stripped module");
        let site = task_init_in(&so, &elf, &data, minor).unwrap();
        eprintln!("{}: {:#x} via {}", so.display(), site.offset, site.how);
        assert!(site.how.contains("tp_init"));
    }
}
