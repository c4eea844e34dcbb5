//! Kernel-side diagnostics (`--ebpf-log`, docs/troubleshooting.md): with the flag the agent
//! prints why the kernel skipped a socket or a read; without it, nothing of the kind.
//!
//! The traced program is a short Python script whose skips are certain: a `connect()` to a
//! port nobody listens on (refused: the socket is not traced) and a `recv(MSG_PEEK)` on a
//! traced connection (peeked bytes are read again later, so the peek is not copied).

use std::ffi::OsString;
use std::time::Duration;

use crate::require_root;
use crate::util::{self, Paths, ProcGuard};

/// ECONNREFUSED, as the kernel returns it from `connect`.
const ECONNREFUSED: i32 = -111;

const SCRIPT: &str = r#"
import socket, sys, time
refused = int(sys.argv[1])
s = socket.socket()
try:
    s.connect(("127.0.0.1", refused))
except ConnectionRefusedError:
    pass
s.close()
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
c = socket.create_connection(srv.getsockname())
a, _ = srv.accept()
c.sendall(b"GET / HTTP/1.1\r\n\r\n")
assert a.recv(64, socket.MSG_PEEK)
a.recv(64)
for x in (a, c, srv):
    x.close()
time.sleep(0.5)  # a few agent drains before the command (and so the agent) exits
"#;

/// Runs `timetracer-agent record [extra] -- python -c SCRIPT`; returns its stderr and the
/// refused port.
fn record_script(paths: &Paths, name: &str, extra: &[&str]) -> (String, u16) {
    let dir = util::temp_dir(name);
    let refused = util::free_port();
    let mut args: Vec<OsString> = vec![
        "record".into(),
        "--out".into(),
        dir.path().join("cassettes").into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args.extend([
        OsString::from("--"),
        paths.venv_bin("python").into(),
        "-c".into(),
        SCRIPT.into(),
        refused.to_string().into(),
    ]);
    let mut cmd = util::command(&paths.agent, args);
    // Only what the test passes turns kernel logging on.
    cmd.env_remove("TIMETRACER_EBPF_LOG")
        .env_remove("TIMETRACER_LOG");
    let mut agent = ProcGuard::spawn("agent", cmd, dir.path()).expect("spawn agent");
    let status = agent
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("agent did not exit\n{}", agent.diagnostics()));
    assert!(status.success(), "agent: {status}\n{}", agent.diagnostics());
    (agent.stderr_text(), refused)
}

#[test]
fn ebpf_log_shows_skip_reasons() {
    let paths = require_root!();
    let (err, refused) = record_script(&paths, "ebpf_log_on", &["--ebpf-log", "debug"]);
    let has = |needle: &str| {
        err.lines()
            .any(|l| l.contains("timetracer::ebpf") && l.contains(needle))
    };
    assert!(has("Kernel-side logging on"), "no start line:\n{err}");
    assert!(
        has(&format!(
            "connect to port {refused} failed with {ECONNREFUSED}"
        )),
        "refused connect not explained:\n{err}"
    );
    assert!(
        has("read with MSG_PEEK"),
        "MSG_PEEK skip not explained:\n{err}"
    );
    assert!(has("Tracking: pid"), "tracked sockets not shown:\n{err}");
    // Debug does not include trace: per-syscall "not a traced socket" lines stay out.
    assert!(
        !has("is not a traced socket"),
        "trace line at debug:\n{err}"
    );
}

#[test]
fn ebpf_log_is_off_by_default() {
    let paths = require_root!();
    let (err, _) = record_script(&paths, "ebpf_log_off", &[]);
    assert!(
        !err.contains("timetracer::ebpf") && !err.contains("Skipped:"),
        "kernel log output without --ebpf-log:\n{err}"
    );
    // The recording itself worked: the exit summary is there.
    assert!(err.contains("kernel drops:"), "no exit summary:\n{err}");
}
