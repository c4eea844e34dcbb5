//! Per-process discovery while recording: OpenSSL libraries to probe (TLS plaintext) and the
//! CPython runtime for asyncio attribution (issue #7). Both run on the session's thread
//! between drains and are cheap when nothing changed.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::capture::{TlsReport, procfs};
use crate::correlate::monotonic_ns;

use super::session::Session;

/// Where CPython discovery stands for one process.
pub(crate) struct PyScan {
    /// The executable it was done for (a launched child is looked at before its `exec`).
    exe: PathBuf,
    /// Settled (probes attached, unsupported, or not a CPython).
    done: bool,
    /// The copy probe and `PY_PROCS` are in place; only the task probe is missing.
    copy_attached: bool,
    last: Instant,
    /// When discovery started for this executable (pending gives up after 10 s).
    first: Instant,
}

impl Session {
    /// Attaches TLS probes to OpenSSL libraries of traced processes not handled yet.
    pub(super) fn scan_tls(&mut self) {
        for pid in self.correlator.pids() {
            if !procfs::exists(pid) {
                continue;
            }
            for r in self.capture.attach_tls(pid) {
                match r {
                    TlsReport::Attached { pid, lib, sites } => {
                        let what: Vec<String> = sites.iter().map(|s| s.what.clone()).collect();
                        tracing::info!(pid, lib = %lib.display(), sites = ?what, "TLS probes attached");
                    }
                    TlsReport::Unsupported { pid, lib, reason } => {
                        self.note(&format!("pid {pid}: {}: {reason}", lib.display()));
                    }
                }
            }
        }
    }

    /// Finds the CPython runtime of traced processes and attaches the asyncio probes. Cheap
    /// when nothing changed: one `readlink` per process.
    pub(super) fn scan_python(&mut self) {
        use crate::capture::python::{Discovery, discover};
        use crate::correlate::python::Runtime;
        let pids = self.correlator.pids();
        // Exited processes leave the correlator's process map, and their scan state goes too.
        self.py_scans.retain(|pid, _| pids.contains(pid));
        for pid in pids {
            let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
                continue;
            };
            if let Some(s) = self.py_scans.get(&pid)
                && s.exe == exe
                && (s.done || s.last.elapsed() < Duration::from_millis(50))
            {
                continue;
            }
            let prev = self.py_scans.get(&pid).filter(|s| s.exe == exe);
            let copy_attached = prev.is_some_and(|s| s.copy_attached);
            let first = prev.map_or_else(Instant::now, |s| s.first);
            let mut scan = PyScan {
                exe: exe.clone(),
                done: true,
                copy_attached,
                last: Instant::now(),
                first,
            };
            let found = match discover(pid) {
                Discovery::Pending(why) if first.elapsed() > Duration::from_secs(10) => {
                    Discovery::Unsupported {
                        version: "?".into(),
                        reason: format!("runtime not usable after 10 s: {why}"),
                    }
                }
                d => d,
            };
            match found {
                Discovery::NotPython => {}
                Discovery::Pending(why) => {
                    tracing::debug!(pid, %why, "CPython not ready yet");
                    self.correlator.py.set_runtime(pid, Runtime::Pending);
                    scan.done = false;
                }
                Discovery::Unsupported { version, reason } => {
                    self.correlator.py.set_runtime(pid, Runtime::Unsupported);
                    self.note(&format!(
                        "pid {pid}: CPython {version}: unsupported-runtime: {reason}; its dependency calls are flagged ambiguous, not attributed"
                    ));
                }
                Discovery::Supported(rt) => {
                    let mut rt = *rt;
                    if copy_attached {
                        // Only the task probe was missing.
                        rt.copy_site.offset = u64::MAX;
                    }
                    match self.capture.attach_python(pid, &rt) {
                        Ok(sites) => {
                            scan.copy_attached = true;
                            scan.done = rt.task_site.is_some();
                            if !copy_attached {
                                self.correlator.py.set_runtime(pid, Runtime::Supported);
                                self.correlator.py.set_probes_on(pid, monotonic_ns());
                            }
                            tracing::info!(
                                pid,
                                version = %rt.version,
                                interpreter = %rt.interpreter.display(),
                                ?sites,
                                task_missing = ?rt.task_missing,
                                "CPython asyncio attribution on"
                            );
                        }
                        Err(e) => {
                            self.correlator.py.set_runtime(pid, Runtime::Unsupported);
                            self.note(&format!(
                                "pid {pid}: CPython {}: unsupported-runtime: {e}; its dependency calls are flagged ambiguous",
                                rt.version
                            ));
                        }
                    }
                }
            }
            self.py_scans.insert(pid, scan);
        }
    }
}
