//! The pinned toolchain of the eBPF build (`ebpf-toolchain.toml` at the workspace root) and the
//! check that rustc and bpf-linker agree on the LLVM major.
//!
//! One file for both readers: `timetracer-user/build.rs` includes it to pick aya-build's
//! toolchain and to refuse a mismatched build, `xtask` includes it (`#[path]`) to install exactly
//! this toolchain and to run the same check before `build`, `lint` and `test`.
//! Why the check: rustc hands bpf-linker LLVM bitcode; bitcode from a newer LLVM than the
//! linker's fails deep in the link with `ERROR llvm: Invalid record`, which names no fix.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The pin file, relative to the workspace root.
pub(crate) const PIN_FILE: &str = "ebpf-toolchain.toml";

/// What `ebpf-toolchain.toml` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    /// A rustup toolchain name, e.g. `nightly-2026-07-01`.
    pub(crate) channel: String,
    /// The LLVM major of `channel`, of Debian's `llvm-<N>-dev` and of bpf-linker.
    pub(crate) llvm: u32,
    /// The bpf-linker release to build.
    pub(crate) bpf_linker: String,
}

impl Pin {
    /// Reads the pin from `workspace_root/ebpf-toolchain.toml`.
    pub(crate) fn load(workspace_root: &Path) -> Result<Self, String> {
        let path = workspace_root.join(PIN_FILE);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the pin file's text.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let string = |key: &str| -> Result<String, String> {
            table
                .get(key)
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("`{key}` must be a string"))
        };
        let channel = string("channel")?;
        if !channel.starts_with("nightly-") || channel.len() != "nightly-YYYY-MM-DD".len() {
            return Err(format!(
                "`channel = \"{channel}\"` must be a dated nightly (`nightly-YYYY-MM-DD`): the \
                 floating `nightly` moves to newer LLVMs than bpf-linker's"
            ));
        }
        let llvm = table
            .get("llvm")
            .and_then(toml::Value::as_integer)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or("`llvm` must be an LLVM major version, e.g. 22")?;
        Ok(Self {
            channel,
            llvm,
            bpf_linker: string("bpf-linker")?,
        })
    }
}

/// The versions found on this machine for the pinned toolchain.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// `rustc -V` of the pinned channel, e.g. `rustc 1.98.0-nightly (f46ec5218 2026-06-30)`.
    pub(crate) rustc: String,
    /// The full LLVM version of that rustc, e.g. `22.1.8`.
    pub(crate) rustc_llvm: String,
    /// The bpf-linker binary that was checked.
    pub(crate) bpf_linker: PathBuf,
    /// The LLVM shared library bpf-linker links, e.g. `libLLVM.so.22.1`.
    pub(crate) bpf_linker_llvm: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (LLVM {}); {} links {}",
            self.rustc,
            self.rustc_llvm,
            self.bpf_linker.display(),
            self.bpf_linker_llvm
        )
    }
}

/// The major of a version such as `22.1.8`.
fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// `rustc -vV` of `channel` through rustup: (`rustc -V` line, LLVM version).
pub(crate) fn rustc_version(channel: &str) -> Result<(String, String), String> {
    let out = Command::new("rustup")
        .args(["run", channel, "rustc", "-vV"])
        .output()
        .map_err(|e| {
            format!("cannot run rustup: {e} (install rustup, then `cargo xtask install`)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "the pinned eBPF toolchain {channel} is not installed ({}); run `cargo xtask install`",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default().to_owned();
    let llvm = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| format!("`rustc +{channel} -vV` names no LLVM version"))?;
    Ok((first, llvm.trim().to_owned()))
}

/// The LLVM library that the bpf-linker at `path` links (its `DT_NEEDED` `libLLVM*` entry).
pub(crate) fn bpf_linker_llvm(path: &Path) -> Result<String, String> {
    use object::{
        Endianness,
        read::elf::{Dyn as _, FileHeader as _},
    };
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let elf_err = |e: object::Error| format!("{}: not a readable ELF file: {e}", path.display());
    let not_dynamic = || {
        format!(
            "{} links no shared libLLVM, so its LLVM version cannot be checked; remove it and \
             run `cargo xtask install` (it builds bpf-linker against Debian's libLLVM)",
            path.display()
        )
    };
    let header = object::elf::FileHeader64::<Endianness>::parse(&*data).map_err(elf_err)?;
    let endian = header.endian().map_err(elf_err)?;
    let sections = header.sections(endian, &*data).map_err(elf_err)?;
    let (dynamic, strtab) = sections
        .dynamic(endian, &*data)
        .map_err(elf_err)?
        .ok_or_else(not_dynamic)?;
    let strings = sections.strings(endian, &*data, strtab).map_err(elf_err)?;
    dynamic
        .iter()
        .filter(|d| d.tag32(endian) == Some(object::elf::DT_NEEDED))
        .filter_map(|d| d.string(endian, strings).ok())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .find(|name| name.starts_with("libLLVM"))
        .ok_or_else(not_dynamic)
}

/// The LLVM major in a library name: `libLLVM.so.22.1` (Debian) or `libLLVM-22.so`.
pub(crate) fn llvm_lib_major(lib: &str) -> Option<u32> {
    let rest = lib
        .strip_prefix("libLLVM.so.")
        .or_else(|| lib.strip_prefix("libLLVM-"))?;
    major(rest.trim_end_matches(".so"))
}

/// Checks that the pinned rustc and the bpf-linker at `linker` share `pin.llvm` as LLVM major.
/// The error says what differs and names the fix.
pub(crate) fn check(pin: &Pin, linker: &Path) -> Result<Found, String> {
    let (rustc, rustc_llvm) = rustc_version(&pin.channel)?;
    let lib = bpf_linker_llvm(linker)?;
    let found = Found {
        rustc,
        rustc_llvm,
        bpf_linker: linker.to_path_buf(),
        bpf_linker_llvm: lib,
    };
    let rustc_major = major(&found.rustc_llvm);
    let linker_major = llvm_lib_major(&found.bpf_linker_llvm);
    if rustc_major != Some(pin.llvm) {
        return Err(format!(
            "{PIN_FILE} pins {} with `llvm = {}`, but that toolchain is built on LLVM {}: set \
             `llvm` to its major, or pick a nightly on LLVM {} (docs/toolchain.md)",
            pin.channel, pin.llvm, found.rustc_llvm, pin.llvm
        ));
    }
    if linker_major != Some(pin.llvm) {
        return Err(format!(
            "bpf-linker ({}) is built against {}, but the eBPF toolchain {} is on LLVM {}: \
             bitcode from a newer LLVM fails with `Invalid record`; run `cargo xtask install` \
             (it rebuilds bpf-linker {} against LLVM {})",
            linker.display(),
            found.bpf_linker_llvm,
            pin.channel,
            found.rustc_llvm,
            pin.bpf_linker,
            pin.llvm
        ));
    }
    Ok(found)
}
