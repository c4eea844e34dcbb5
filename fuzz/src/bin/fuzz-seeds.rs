//! `fuzz-seeds DIR [TARGET...]`: writes each target's seed corpus (from the repository's
//! recorded fixtures) into `DIR/TARGET/`, replacing the seeds it wrote before and keeping what
//! libFuzzer added. Run by `cargo xtask fuzz`.
#![expect(
    unused_crate_dependencies,
    reason = "one package's dependencies are every binary's; this one uses the harness only"
)]
// Built with the targets' coverage instrumentation, this binary needs libFuzzer's runtime
// (the `__sanitizer_cov_*` callbacks), so it links libfuzzer-sys and gives it an entry that
// is never called; its own `main` keeps libFuzzer's out of the link.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
use std::path::PathBuf;
use std::process::ExitCode;

use timetracer_fuzz::seeds::{TARGETS, corpus};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds DIR [TARGET...]");
        return ExitCode::FAILURE;
    };
    let wanted: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    for t in TARGETS
        .iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == *t))
    {
        let d = dir.join(t);
        if let Err(e) = std::fs::create_dir_all(&d) {
            eprintln!("fuzz-seeds: cannot create {}: {e}", d.display());
            return ExitCode::FAILURE;
        }
        let seeds = corpus(t);
        for (name, bytes) in &seeds {
            let p = d.join(format!("seed-{name}"));
            if let Err(e) = std::fs::write(&p, bytes) {
                eprintln!("fuzz-seeds: cannot write {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        }
        println!("{t}: {} seeds", seeds.len());
    }
    ExitCode::SUCCESS
}
