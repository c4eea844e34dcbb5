#![no_main]
#![expect(
    unused_crate_dependencies,
    reason = "one package's dependencies are every target's; each uses the harness only"
)]
use timetracer::protocols::Protocol;
use timetracer_fuzz::run_mock;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run_mock(Protocol::Mongodb, data));
