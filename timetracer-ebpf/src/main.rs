//! Kernel programs of timetracer: syscall tracepoints that copy socket payloads of the traced
//! processes into one ring buffer, plus process tracking (fork/exit).
//!
//! Every program follows `fn name(ctx) -> u32 { match try_name(ctx) { Ok(r) | Err(r) => r } }`.
//! Filtering happens before any copy: a syscall of a process that is not in `TARGETS`, or on a
//! file descriptor that is not a tracked socket (or stdout/stderr for tracebacks), returns
//! after one or two hash lookups.
#![no_std]
#![no_main]

use timetracer_ebpf as _;

mod maps;
mod python;
mod read;
mod syscalls;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// "Dual MIT/GPL" is the crate's `MIT OR GPL-2.0-only` (Cargo.toml). bpf_probe_read_user and
// bpf_probe_read_user_str, used here, are GPL-only helpers: the kernel accepts them only from
// programs with a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
