//! Maps shared by all programs, and small helpers around them.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use timetracer_common::{Config, DROP_SLOTS, Drop, RING_BYTES, SockState};

/// Every record goes here; submitted with `BPF_RB_NO_WAKEUP`, drained by the agent on a timer.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Traced processes (tgid -> 1). Seeded by the agent, extended on fork.
#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);

/// Traced cgroups (cgroup v2 id -> 1), node mode: a process that calls `exec` in one of them
/// joins `TARGETS`. Filled by the agent from the selected containers' cgroup directories.
#[map]
pub(crate) static TARGET_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Traced sockets: (tgid << 32 | fd) -> state. LRU so dead processes' sockets age out.
#[map]
pub(crate) static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// Syscall arguments saved at entry, keyed by pid_tgid, consumed at exit.
#[map]
pub(crate) static ARGS: LruHashMap<u64, Args> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU drop counters, see [`Drop`].
#[map]
pub(crate) static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// Global configuration (index 0).
#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Scratch state of the payload-chunking loop (one per CPU, see `syscalls::on_data_exit`).
#[map]
pub(crate) static LOOP: PerCpuArray<crate::syscalls::LoopState> =
    PerCpuArray::with_max_entries(1, 0);

/// Arguments of an in-flight syscall.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Args {
    /// Our syscall id (`timetracer_common::sys`).
    pub(crate) sys: u32,
    pub(crate) fd: i32,
    /// Buffer, iovec array, msghdr or sockaddr pointer, depending on `sys`.
    pub(crate) ptr: u64,
    /// Buffer length or iovec count.
    pub(crate) count: u64,
}

// Kernel-side logs (`--ebpf-log`, docs/troubleshooting.md): the level is aya-log's
// `AYA_LOG_LEVEL`, a global in `.rodata` that the agent overrides before loading (0, off, unless
// asked). aya freezes `.rodata` and creates it `BPF_F_RDONLY_PROG`, so the verifier reads the
// level as a constant, follows only the branch taken and removes the other one: with logging
// off no log code is left in the loaded programs (every `aya_log_ebpf` macro tests it).

#[inline(always)]
pub(crate) fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

#[inline(always)]
pub(crate) fn count_drop(reason: Drop, bytes: u64) {
    if let Some(p) = DROPS.get_ptr_mut(reason.events_slot()) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
    if let Some(p) = DROPS.get_ptr_mut(reason.bytes_slot()) {
        // SAFETY: as above.
        unsafe { *p += bytes };
    }
}

#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    TARGETS.get_ptr(tgid).is_some()
}

#[inline(always)]
pub(crate) fn sock_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// A fresh connection id, unique across the agent run without a shared counter (the BPF
/// target has no fetch-and-add before cpu v3): the monotonic clock shifted left by 6 bits, with
/// the CPU number in the low bits. Fits below 2^63 for 4.5 years of uptime; ids the agent
/// assigns to sockets found at attach have bit 63 set (`PREEXISTING_CONN_ID_BASE`).
#[inline(always)]
pub(crate) fn next_conn_id() -> u64 {
    // SAFETY: helper call without arguments.
    let ts = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    ((ts << 6) | (cpu as u64 & 63)) & !(1u64 << 63)
}

/// Inserts a socket state; counts a drop when the map refuses.
#[inline(always)]
pub(crate) fn track_socket(key: u64, state: &SockState) {
    if SOCKS.insert(key, state, 0).is_err() {
        count_drop(Drop::SocksFull, 0);
        aya_log_ebpf::warn!(
            &(),
            "Dropped: socket map full, pid {} fd {} not traced",
            (key >> 32) as u32,
            key as u32 as i32
        );
    }
}

/// Inserts a process into the target set unless it is there already.
#[inline(always)]
pub(crate) fn add_target(tgid: u32) {
    let _ = TARGETS.insert(tgid, 1, BPF_NOEXIST as u64);
}
