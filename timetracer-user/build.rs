//! Builds the eBPF object with aya-build, or writes an empty stub when eBPF is not wanted
//! (`AYA_BUILD_SKIP=1`) or cannot be built (no bpf-linker / nightly). A binary built from the
//! stub refuses to trace with a clear error (see `capture::loader`).
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let stub = out_dir.join("timetracer");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let have_linker = which::which("bpf-linker").is_ok();
    if skip || !have_linker {
        if !skip {
            println!(
                "cargo:warning=bpf-linker not found: building without eBPF (run `cargo xtask install`)"
            );
        }
        fs::write(&stub, [])?;
        fs::write(out_dir.join("timetracer-replay"), [])?;
        return Ok(());
    }
    let ebpf = aya_build::Package {
        name: "timetracer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../timetracer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
