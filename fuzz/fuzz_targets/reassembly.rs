#![no_main]
#![expect(
    unused_crate_dependencies,
    reason = "one package's dependencies are every target's; each uses the harness only"
)]
use timetracer_fuzz::{StreamCase, run_reassembly};

libfuzzer_sys::fuzz_target!(|case: StreamCase| run_reassembly(&case));
