//! Kernel-side diagnostics: the eBPF programs' `aya_log_ebpf` messages (why a socket, a syscall
//! or a TLS call was skipped, where bytes were lost), forwarded to the agent's `tracing` output
//! under the target [`TARGET`]. Off by default; `--ebpf-log LEVEL`, `TIMETRACER_EBPF_LOG=LEVEL`
//! or a `timetracer::ebpf=LEVEL` directive in `TIMETRACER_LOG` turns it on
//! (docs/troubleshooting.md).
//!
//! # Why off costs nothing
//!
//! The level the programs test is aya-log's `AYA_LOG_LEVEL`, a global in the object's `.rodata`.
//! [`Capture::load`](super::Capture::load) overrides it before loading (0 when off). aya creates
//! `.rodata` with `BPF_F_RDONLY_PROG` and freezes it, so the verifier reads the level as a
//! constant, explores only the branch taken and removes the other: with logging off the loaded
//! programs contain no log code (measured in docs/troubleshooting.md). The log ring buffer
//! (`AYA_LOGS`) is then shrunk to one page and never read.
//!
//! # When on
//!
//! Every message is one record in `AYA_LOGS` (1 MiB), submitted with a wakeup; the agent reads
//! it on its 10 ms drain. A message that does not fit is lost without a count (aya-log has none),
//! so the drop counters stay the authority on *how many*; the messages say *which and why*.
use std::{fmt, str::FromStr};

use aya::Ebpf;
use tracing_subscriber::EnvFilter;

/// The `tracing` target of forwarded kernel messages.
pub const TARGET: &str = "timetracer::ebpf";

/// The environment variable behind `--ebpf-log`.
pub const ENV: &str = "TIMETRACER_EBPF_LOG";

/// Name of aya-log's ring buffer map in the object.
const LOG_MAP: &str = "AYA_LOGS";

/// Size of the log ring buffer while logging is on.
const LOG_RING_BYTES: u32 = 1 << 20;

/// How much the kernel programs log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum EbpfLogLevel {
    /// Nothing; the log code is removed by the verifier (the default).
    #[default]
    Off,
    /// Nothing logs at this level yet.
    Error,
    /// Lost bytes and records: ring buffer or map full, unreadable memory, per-syscall cap.
    Warn,
    /// Per connection: sockets tracked or skipped and why, TLS sockets tied to an `SSL*`,
    /// processes followed.
    Info,
    /// Per call: skipped reads (`MSG_PEEK`), SSL calls that returned no bytes, `SSL*`s not tied
    /// and why, Python writes without a thread state, closes.
    Debug,
    /// Per syscall of a traced process: every fd that is not a traced socket, TLS ciphertext
    /// not copied. Very verbose.
    Trace,
}

impl EbpfLogLevel {
    /// Every level, in order.
    pub const ALL: [Self; 6] = [
        Self::Off,
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Debug,
        Self::Trace,
    ];

    /// The lowercase name (`off`, `error`, ... `trace`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The value of `AYA_LOG_LEVEL`: a message of `aya_log_common::Level` `l` is emitted when
    /// `l as u8 <= value` (Error = 1 ... Trace = 5), so 0 is off.
    #[must_use]
    pub const fn aya_value(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Error => aya_log::Level::Error as u8,
            Self::Warn => aya_log::Level::Warn as u8,
            Self::Info => aya_log::Level::Info as u8,
            Self::Debug => aya_log::Level::Debug as u8,
            Self::Trace => aya_log::Level::Trace as u8,
        }
    }

    /// The level a `tracing` filter string asks of [`TARGET`]: the last directive naming exactly
    /// that target (`timetracer::ebpf=debug`; the bare target means trace). `None` when no
    /// directive names it — a global `debug` does not turn kernel logging on.
    #[must_use]
    pub fn from_filter(filter: &str) -> Option<Self> {
        filter.split(',').rev().find_map(|d| {
            let (target, level) = match d.trim().split_once('=') {
                Some((t, l)) => (t.trim(), l.trim()),
                None => (d.trim(), "trace"),
            };
            if target == TARGET {
                level.parse().ok()
            } else {
                None
            }
        })
    }

    /// `flag` (`--ebpf-log`, which clap also fills from [`ENV`]) when given, else what the
    /// agent's log filter (`log` key, `TIMETRACER_LOG`) asks of [`TARGET`], else off.
    #[must_use]
    pub fn resolve(flag: Option<Self>, log_filter: Option<&str>) -> Self {
        flag.or_else(|| log_filter.and_then(Self::from_filter))
            .unwrap_or_default()
    }
}

impl fmt::Display for EbpfLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A level name that is not one of `off error warn info debug trace`.
#[derive(Debug, thiserror::Error)]
#[error("unknown eBPF log level {0:?}: use off, error, warn, info, debug or trace")]
pub struct UnknownLevel(String);

impl FromStr for EbpfLogLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "0" | "false" | "no" => return Ok(Self::Off),
            "1" | "true" | "yes" | "on" => return Ok(Self::Debug),
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or(UnknownLevel(s))
    }
}

/// The agent's log filter: the configured `log` value (`TIMETRACER_LOG`, default `error`), plus
/// `timetracer::ebpf=trace` unless it names that target itself. Kernel messages exist only at the
/// level the programs were loaded with, so letting the target through shows exactly what
/// `--ebpf-log` asked for.
#[must_use]
pub fn log_filter(configured: Option<&str>) -> EnvFilter {
    EnvFilter::builder().parse_lossy(filter_directives(configured))
}

fn filter_directives(env: Option<&str>) -> String {
    let base = match env.map(str::trim) {
        Some(s) if !s.is_empty() => s,
        _ => "error",
    };
    if EbpfLogLevel::from_filter(base).is_some() {
        base.to_owned()
    } else {
        format!("{base},{TARGET}=trace")
    }
}

/// Sets the level and the log ring's size on `loader`, before the object is loaded.
pub(super) fn configure(loader: &mut aya::EbpfLoader<'_>, level: EbpfLogLevel) {
    loader.override_global(aya_log::LEVEL, &LEVEL_VALUES[level as usize], true);
    // Off: one page (aya rounds any ring-buffer size up to a power-of-two number of pages).
    let bytes = if level == EbpfLogLevel::Off {
        1
    } else {
        LOG_RING_BYTES
    };
    loader.map_max_entries(LOG_MAP, bytes);
}

/// `AYA_LOG_LEVEL` values by level, with the `'static` lifetime `override_global` borrows for.
static LEVEL_VALUES: [u8; 6] = [
    EbpfLogLevel::Off.aya_value(),
    EbpfLogLevel::Error.aya_value(),
    EbpfLogLevel::Warn.aya_value(),
    EbpfLogLevel::Info.aya_value(),
    EbpfLogLevel::Debug.aya_value(),
    EbpfLogLevel::Trace.aya_value(),
];

/// Reads `AYA_LOGS` and forwards each record to `tracing`. Must live as long as the programs
/// are loaded: it owns the map's fd, and dropping it fails every later program load with
/// "fd N is not pointing to valid bpf_map" (docs/toolchain.md).
pub(super) struct Reader(aya_log::EbpfLogger<Forward>);

impl Reader {
    /// Takes `AYA_LOGS` out of `ebpf`. Call only when logging is on.
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, aya_log::Error> {
        aya_log::EbpfLogger::init_with_logger(ebpf, Forward).map(Self)
    }

    /// Forwards every pending record.
    pub(super) fn flush(&mut self) {
        self.0.flush();
    }
}

/// A `log::Log` that re-emits aya-log records as `tracing` events of [`TARGET`], with the
/// program's module and line as fields.
pub(super) struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let module = r.module_path().unwrap_or_else(|| r.target());
        let line = r.line().unwrap_or(0);
        let msg = r.args();
        match r.level() {
            log::Level::Error => tracing::error!(target: TARGET, module, line, "{msg}"),
            log::Level::Warn => tracing::warn!(target: TARGET, module, line, "{msg}"),
            log::Level::Info => tracing::info!(target: TARGET, module, line, "{msg}"),
            log::Level::Debug => tracing::debug!(target: TARGET, module, line, "{msg}"),
            log::Level::Trace => tracing::trace!(target: TARGET, module, line, "{msg}"),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_map_to_aya_values() {
        for (i, l) in EbpfLogLevel::ALL.into_iter().enumerate() {
            assert_eq!(l.name().parse::<EbpfLogLevel>().unwrap(), l);
            assert_eq!(usize::from(l.aya_value()), i);
            assert_eq!(LEVEL_VALUES[l as usize], l.aya_value());
        }
        assert_eq!(
            " DEBUG ".parse::<EbpfLogLevel>().unwrap(),
            EbpfLogLevel::Debug
        );
        assert_eq!("1".parse::<EbpfLogLevel>().unwrap(), EbpfLogLevel::Debug);
        assert!("verbose".parse::<EbpfLogLevel>().is_err());
    }

    #[test]
    fn only_a_directive_naming_the_target_turns_logging_on() {
        assert_eq!(EbpfLogLevel::from_filter("debug"), None);
        assert_eq!(EbpfLogLevel::from_filter("timetracer=debug"), None);
        assert_eq!(
            EbpfLogLevel::from_filter("info,timetracer::ebpf=debug"),
            Some(EbpfLogLevel::Debug)
        );
        assert_eq!(
            EbpfLogLevel::from_filter("timetracer::ebpf"),
            Some(EbpfLogLevel::Trace)
        );
        assert_eq!(
            EbpfLogLevel::from_filter("timetracer::ebpf=warn, timetracer::ebpf=off"),
            Some(EbpfLogLevel::Off)
        );
    }

    #[test]
    fn the_filter_lets_kernel_messages_through_unless_told_otherwise() {
        assert_eq!(filter_directives(None), "error,timetracer::ebpf=trace");
        assert_eq!(filter_directives(Some(" ")), "error,timetracer::ebpf=trace");
        assert_eq!(
            filter_directives(Some("timetracer=debug")),
            "timetracer=debug,timetracer::ebpf=trace"
        );
        assert_eq!(
            filter_directives(Some("info,timetracer::ebpf=warn")),
            "info,timetracer::ebpf=warn"
        );
    }
}
