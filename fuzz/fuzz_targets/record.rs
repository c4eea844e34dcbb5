#![no_main]
#![expect(
    unused_crate_dependencies,
    reason = "one package's dependencies are every target's; each uses the harness only"
)]
use timetracer_fuzz::run_record;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run_record(data));
