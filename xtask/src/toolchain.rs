//! The eBPF toolchain: installs exactly the pinned nightly (`ebpf-toolchain.toml`) and a
//! bpf-linker built against the same LLVM, checks that they agree before every build, and lints
//! host and BPF code (`cargo xtask lint`, as aya's own xtask does).
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{cargo_bin_dir, path_env, root, run};

#[path = "../../timetracer-user/ebpf_toolchain.rs"]
mod pin;

pub(crate) use pin::Pin;

/// Components of the pinned toolchain: `rust-src` for `-Z build-std=core`, clippy for the lint.
const COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// The pin of this workspace.
pub(crate) fn load() -> Result<Pin> {
    Pin::load(&root()).map_err(|e| anyhow!(e))
}

/// The Debian packages that bpf-linker's build needs for the pinned LLVM.
pub(crate) fn apt_packages(pin: &Pin) -> Vec<String> {
    let n = pin.llvm;
    vec![
        format!("llvm-{n}-dev"),
        format!("libpolly-{n}-dev"),
        "libzstd-dev".into(),
        "zlib1g-dev".into(),
        "libxml2-dev".into(),
    ]
}

fn installed_components(channel: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", channel])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the pinned toolchain with its components, beside whatever other toolchains the
/// user has (never touching them, nor the default).
pub(crate) fn install_rust(pin: &Pin) -> Result<()> {
    match installed_components(&pin.channel) {
        None => run(Command::new("rustup")
            .args(["toolchain", "install", &pin.channel, "--profile", "minimal"])
            .args(COMPONENTS.iter().flat_map(|c| ["--component", c]))),
        Some(have) => {
            let missing: Vec<&str> = COMPONENTS
                .iter()
                .copied()
                // `rust-src` is listed bare, target-specific ones as `clippy-x86_64-...`.
                .filter(|c| {
                    !have
                        .lines()
                        .any(|l| l == *c || l.starts_with(&format!("{c}-")))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            run(Command::new("rustup")
                .args(["component", "add", "--toolchain", &pin.channel])
                .args(missing))
        }
    }
}

fn bpf_linker_path() -> PathBuf {
    cargo_bin_dir().join("bpf-linker")
}

/// Whether the installed bpf-linker is the pinned release linked against the pinned LLVM.
fn bpf_linker_ok(pin: &Pin) -> bool {
    let path = bpf_linker_path();
    let version = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {}", pin.bpf_linker)
        });
    version
        && pin::bpf_linker_llvm(&path)
            .ok()
            .and_then(|lib| pin::llvm_lib_major(&lib))
            == Some(pin.llvm)
}

/// Installs the pinned toolchain and bpf-linker (rebuilt when it is another release or links
/// another LLVM), then checks that they agree.
pub(crate) fn install(pin: &Pin) -> Result<()> {
    install_rust(pin)?;
    if !bpf_linker_ok(pin) {
        let llvm = format!("/usr/lib/llvm-{}", pin.llvm);
        let mut path = vec![PathBuf::from(&llvm).join("bin")];
        path.extend(std::env::split_paths(&path_env()));
        run(Command::new("cargo")
            .args(["install", "--force", "--locked", "bpf-linker", "--version"])
            .arg(&pin.bpf_linker)
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", pin.llvm))
            .env("PATH", std::env::join_paths(path)?)
            // llvm-sys finds LLVM through these (its variable carries the LLVM version).
            .env("LLVM_PREFIX", &llvm)
            .env(format!("LLVM_SYS_{}1_PREFIX", pin.llvm), &llvm))?;
    }
    check(pin).map(drop)
}

/// Checks that the pinned rustc and the installed bpf-linker share the pinned LLVM major.
pub(crate) fn check(pin: &Pin) -> Result<pin::Found> {
    let linker = bpf_linker_path();
    if !linker.exists() {
        bail!(
            "bpf-linker is missing ({}); run `cargo xtask install`",
            linker.display()
        );
    }
    pin::check(pin, &linker).map_err(|e| anyhow!(e))
}

/// `cargo xtask toolchain`: prints the pin, what this machine has for it, and what the last
/// release build of the eBPF object used; fails when any of them differs from the pin.
pub(crate) fn report(pin: &Pin) -> Result<()> {
    println!(
        "pin ({}): {}, LLVM {}, bpf-linker {}",
        pin::PIN_FILE,
        pin.channel,
        pin.llvm,
        pin.bpf_linker
    );
    let found = check(pin)?;
    println!("installed: {found}");
    let used = last_build_record()?;
    println!(
        "last eBPF build used: {}",
        used.replace('\n', "; ").trim_end_matches("; ")
    );
    let mut lines = used.lines();
    if lines.next() != Some(pin.channel.as_str())
        || lines.next() != Some(found.to_string().as_str())
    {
        bail!(
            "the last eBPF build did not use the pinned toolchain as installed now; rebuild with \
             `cargo xtask build`"
        );
    }
    let ident = ebpf_object_rustc()?;
    println!("eBPF object compiled by: {ident}");
    if !ident.starts_with(&found.rustc) {
        bail!(
            "the eBPF object was compiled by {ident}, not by the pinned {}",
            found.rustc
        );
    }
    Ok(())
}

/// What `timetracer-user/build.rs` wrote for the newest release build: the channel, then the
/// versions it checked.
fn last_build_record() -> Result<String> {
    let dir = root().join("target/release/build");
    let newest = fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{}: no release build yet; run `cargo xtask build`",
                dir.display()
            )
        })?
        .flatten()
        .map(|e| e.path().join("out/ebpf-toolchain.txt"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            anyhow!(
                "no eBPF build recorded under {}; run `cargo xtask build`",
                dir.display()
            )
        })?;
    Ok(fs::read_to_string(&newest)?)
}

/// The rustc that compiled the newest release eBPF object, from the DWARF producer string in its
/// `.debug_str` (e.g. `clang LLVM (rustc version 1.98.0-nightly (f46ec5218 2026-06-30))`; the
/// object keeps its debug info: `[profile.release.package.timetracer-ebpf] debug = 2`).
fn ebpf_object_rustc() -> Result<String> {
    use object::{Object as _, ObjectSection as _};
    let dir = root().join("target/release/build");
    let obj = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path().join("out/timetracer"))
        .filter_map(|p| {
            let m = fs::metadata(&p).ok()?;
            (m.len() > 0).then_some((m.modified().ok()?, p))
        })
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            anyhow!(
                "no eBPF object under {}; run `cargo xtask build`",
                dir.display()
            )
        })?;
    let data = fs::read(&obj)?;
    let file = object::File::parse(&*data).with_context(|| obj.display().to_string())?;
    let strings = file
        .section_by_name(".debug_str")
        .and_then(|s| s.data().ok())
        .ok_or_else(|| anyhow!("{} has no .debug_str section", obj.display()))?;
    strings
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .find_map(|s| {
            let v = s.split_once("rustc version ")?.1;
            Some(format!("rustc {}", v.strip_suffix(')').unwrap_or(v)))
        })
        .ok_or_else(|| anyhow!("{}: no DWARF producer names a rustc", obj.display()))
}

/// `cargo xtask lint`: rustfmt, clippy `-D warnings` on the host crates, and clippy on the eBPF
/// crate for its BPF target with the pinned toolchain.
pub(crate) fn lint(pin: &Pin) -> Result<()> {
    let root = root();
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "timetracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        // The host lint needs no eBPF object: the BPF code is linted below, on its target.
        .env("AYA_BUILD_SKIP", "1"))?;
    run(Command::new("rustup")
        .current_dir(&root)
        .args([
            "run",
            &pin.channel,
            "cargo",
            "clippy",
            "-p",
            "timetracer-ebpf",
        ])
        .args([
            "--bins",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        // Its own directory: other flags than the host build, so neither invalidates the other.
        .arg("--target-dir")
        .arg(root.join("target/lint-bpf"))
        .args(["--", "-D", "warnings"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER"))
}

/// Whether bpf-linker is installed at all (`bench` installs only when it is not).
pub(crate) fn have_bpf_linker() -> bool {
    bpf_linker_path().exists()
}

#[cfg(test)]
mod tests {
    use super::{Pin, apt_packages, pin};

    #[test]
    fn the_workspace_pin_is_a_dated_nightly() {
        let p = super::load().unwrap();
        assert!(p.channel.starts_with("nightly-20"), "{p:?}");
        assert!(apt_packages(&p).contains(&format!("llvm-{}-dev", p.llvm)));
    }

    #[test]
    fn pin_parsing_names_what_is_wrong() {
        let ok =
            Pin::parse("channel = \"nightly-2026-07-01\"\nllvm = 22\nbpf-linker = \"0.13.0\"\n");
        assert_eq!(
            ok,
            Ok(Pin {
                channel: "nightly-2026-07-01".into(),
                llvm: 22,
                bpf_linker: "0.13.0".into()
            })
        );
        let floating = Pin::parse("channel = \"nightly\"\nllvm = 22\nbpf-linker = \"0.13.0\"\n");
        assert!(floating.unwrap_err().contains("dated nightly"));
        let no_llvm = Pin::parse("channel = \"nightly-2026-07-01\"\nbpf-linker = \"0.13.0\"\n");
        assert!(no_llvm.unwrap_err().contains("`llvm`"));
    }

    #[test]
    fn llvm_majors_from_library_names() {
        assert_eq!(pin::llvm_lib_major("libLLVM.so.22.1"), Some(22));
        assert_eq!(pin::llvm_lib_major("libLLVM-23.so"), Some(23));
        assert_eq!(pin::llvm_lib_major("libLLVM.so"), None);
        assert_eq!(pin::llvm_lib_major("libc.so.6"), None);
    }
}
