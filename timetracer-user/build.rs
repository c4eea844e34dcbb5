//! Builds the eBPF object with aya-build on the pinned toolchain (`ebpf-toolchain.toml`), or
//! writes an empty stub when eBPF is not wanted (`AYA_BUILD_SKIP=1`) or cannot be built (no
//! bpf-linker). A binary built from the stub refuses to trace with a clear error (see
//! `capture::loader`). A pinned toolchain that is missing, or whose LLVM differs from
//! bpf-linker's, stops the build with a message naming the fix.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

#[path = "ebpf_toolchain.rs"]
mod ebpf_toolchain;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(ebpf_toolchain::PIN_FILE).display()
    );
    println!("cargo:rerun-if-changed=ebpf_toolchain.rs");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let linker = which::which("bpf-linker").ok();
    let Some(linker) = linker.filter(|_| !skip) else {
        if !skip {
            println!(
                "cargo:warning=bpf-linker not found: building without eBPF (run `cargo xtask install`)"
            );
        }
        return write_stubs(&out_dir);
    };
    let pin = ebpf_toolchain::Pin::load(workspace).map_err(anyhow::Error::msg)?;
    let found = ebpf_toolchain::check(&pin, &linker).map_err(anyhow::Error::msg)?;
    // Read by `cargo xtask toolchain` to show what the last build used.
    fs::write(
        out_dir.join("ebpf-toolchain.txt"),
        format!("{}\n{found}\n", pin.channel),
    )?;
    let ebpf = aya_build::Package {
        name: "timetracer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../timetracer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&pin.channel))
}

fn write_stubs(out_dir: &Path) -> anyhow::Result<()> {
    for name in ["timetracer", "timetracer-replay"] {
        fs::write(out_dir.join(name), [])?;
    }
    Ok(())
}
