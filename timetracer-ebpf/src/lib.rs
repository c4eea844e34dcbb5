//! Stub library target so the crate can be a build dependency; the programs are in the bin.
#![no_std]
// Not `use aya_log_ebpf as _`: every bin links this lib, and the replay object must not carry
// aya-log's ring buffer (see replay.rs).
#![expect(
    unused_crate_dependencies,
    reason = "aya-log-ebpf is used by the recorder bin only"
)]
use aya_ebpf as _;
use timetracer_common as _;
