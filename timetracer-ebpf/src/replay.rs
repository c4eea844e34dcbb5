//! Replay redirection (`timetracer-agent replay`): cgroup `connect4/6` programs that send the
//! app's TCP connects to the agent's mock servers, and `getpeername4/6` programs that show the
//! app the address it asked for.
//!
//! A separate object from the recorder's (no ring buffer, no tracepoints): each replay loads
//! its own copy and attaches it to its own cgroup, so two replays never share rules or state.
//! - A rule for the destination: `RULE_REDIRECT` rewrites it to the mock listener and remembers
//!   the original per socket cookie; `RULE_LIVE` lets it through (hybrid replay).
//! - No rule: the connect is refused (`EPERM`) and counted in `BLOCKED`, so a replay never
//!   reaches a real service by accident and the verdict can name the unexpected destination.
//! - UDP and other non-stream sockets pass untouched (the Python hook resolves recorded names).
#![no_std]
#![no_main]
// Not `use aya_log_ebpf as _`: linking it would put its 128 KiB log ring buffer in this object
// too, created by every replay and never read. Only the recorder (`main.rs`) logs.
#![expect(
    unused_crate_dependencies,
    reason = "aya-log-ebpf is the recorder's (main.rs); replay logs nothing"
)]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, bpf_sock_addr},
    helpers::generated::bpf_get_socket_cookie,
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use timetracer_common::{DestKey, RULE_LIVE, RULE_REDIRECT, Rule};
use timetracer_ebpf as _;

const SOCK_STREAM: u32 = 1;
const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// Destination -> rule, filled by the agent before the app starts.
#[map]
static RULES: HashMap<DestKey, Rule> = HashMap::with_max_entries(4096, 0);

/// Refused destinations -> number of connects.
#[map]
static BLOCKED: LruHashMap<DestKey, u64> = LruHashMap::with_max_entries(1024, 0);

/// Socket cookie -> original destination of a redirected connect.
#[map]
static ORIG: LruHashMap<u64, DestKey> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn sa<'a>(ctx: &SockAddrContext) -> &'a mut bpf_sock_addr {
    let p = ctx.sock_addr;
    // SAFETY: the kernel passes a valid `bpf_sock_addr` to cgroup sock_addr programs, alive
    // for the whole program run; the verifier checks every field access against the attach
    // type.
    unsafe { &mut *p }
}

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: `bpf_get_socket_cookie` accepts a sock_addr context.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

/// `user_port` holds the port in network order in its low 16 bits.
#[inline(always)]
fn port_of(a: &bpf_sock_addr) -> u16 {
    u16::from_be(a.user_port as u16)
}

#[inline(always)]
fn key4(a: &bpf_sock_addr) -> DestKey {
    DestKey::v4(a.user_ip4.to_ne_bytes(), port_of(a))
}

#[inline(always)]
fn key6(a: &bpf_sock_addr) -> DestKey {
    let mut addr = [0u8; 16];
    let w = a.user_ip6;
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        addr[4 * i] = b[0];
        addr[4 * i + 1] = b[1];
        addr[4 * i + 2] = b[2];
        addr[4 * i + 3] = b[3];
        i += 1;
    }
    DestKey {
        addr,
        port: port_of(a),
        _pad: [0; 6],
    }
}

/// Applies the rules to a connect whose destination is `key`; `v6` says how to write the mock
/// address back (IPv4-mapped on an IPv6 socket).
#[inline(always)]
fn on_connect(ctx: &SockAddrContext, key: DestKey, v6: bool) -> i32 {
    let a = sa(ctx);
    if a.type_ != SOCK_STREAM {
        return ALLOW;
    }
    // SAFETY: read-only use of a hash map value copied out at once.
    let rule = match unsafe { RULES.get(key) } {
        Some(r) => *r,
        None => {
            let n = BLOCKED.get_ptr_mut(key);
            match n {
                // SAFETY: pointer into the map value, valid for this program run.
                Some(p) => unsafe { *p += 1 },
                None => {
                    let _ = BLOCKED.insert(key, 1, BPF_NOEXIST as u64);
                }
            }
            return DENY;
        }
    };
    if rule.action == RULE_LIVE {
        return ALLOW;
    }
    if rule.action != RULE_REDIRECT {
        return DENY;
    }
    let _ = ORIG.insert(cookie(ctx), key, 0);
    let port = u32::from(rule.mock_port.to_be());
    if v6 {
        let m = rule.mock_ip4;
        a.user_ip6 = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes(m),
        ];
    } else {
        a.user_ip4 = u32::from_ne_bytes(rule.mock_ip4);
    }
    a.user_port = port;
    ALLOW
}

#[cgroup_sock_addr(connect4)]
fn replay_connect4(ctx: SockAddrContext) -> i32 {
    let key = key4(sa(&ctx));
    on_connect(&ctx, key, false)
}

#[cgroup_sock_addr(connect6)]
fn replay_connect6(ctx: SockAddrContext) -> i32 {
    let key = key6(sa(&ctx));
    on_connect(&ctx, key, true)
}

#[cgroup_sock_addr(getpeername4)]
fn replay_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: value copied out at once.
    if let Some(orig) = unsafe { ORIG.get(cookie(&ctx)) }
        && let Some(v4) = orig.as_v4()
    {
        let a = sa(&ctx);
        a.user_ip4 = u32::from_ne_bytes(v4);
        a.user_port = u32::from(orig.port.to_be());
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
fn replay_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: value copied out at once.
    if let Some(orig) = unsafe { ORIG.get(cookie(&ctx)) } {
        let o = *orig;
        let a = sa(&ctx);
        let b = o.addr;
        a.user_ip6 = [
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        ];
        a.user_port = u32::from(o.port.to_be());
    }
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// "Dual MIT/GPL" is the crate's `MIT OR GPL-2.0-only` (Cargo.toml), as for the recording
// programs (src/main.rs), which need a GPL-compatible license for GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
