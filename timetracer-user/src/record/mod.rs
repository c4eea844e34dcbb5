//! Recording as a library: [`run`] traces a [`Target`] with a [`RecordPlan`] and hands every
//! finished request to a chain of [`Sink`]s until the target is gone or `stop` is set.
//!
//! ```text
//! Target ──seed──▶ capture (kernel ring) ──▶ correlate ──▶ writer thread: Chain of sinks
//!   Pid | Launched                            (this thread)   exclude → sample → errors-only
//!                                                             → files → index → s3 → live
//! ```
//!
//! `cli::agent` is the front end: flags → [`crate::config::Config`] → [`RecordPlan`] → a
//! target and sinks → [`run`] → prints the [`Summary`].
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use timetracer::config::Config;
//! use timetracer::record::{self, FlagOnly, Outputs, RecordPlan, sink::Chain, target::Pid};
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let plan = RecordPlan::from_config(&Config::load()?, &FlagOnly::default())?;
//! let sinks = Chain::standard(&plan, Outputs { save: true, s3: None, live: None });
//! let stop = AtomicBool::new(false);
//! let summary = record::run(&plan, &mut Pid::new(1234)?, sinks, &stop)?;
//! for line in summary.lines() {
//!     eprintln!("{line}");
//! }
//! # Ok(()) }
//! ```
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;

use crate::live::LiveUpdate;

mod discover;
pub mod plan;
pub mod report;
pub mod retain;
mod session;
pub mod sink;
pub mod target;

pub use plan::{Filters, FlagOnly, PlanError, RecordPlan, S3Plan};
pub use report::Summary;
pub use sink::Sink;
pub use target::Target;

use session::Session;
use sink::Chain;
use target::Seeder;

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Capture(#[from] crate::capture::LoadError),
    #[error("cannot create the output directory {}", path.display())]
    OutputDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the output directory {} is not writable by {user}, who the cassettes belong to: \
         give it to them (chown -R), choose another --out, or pass --user",
        path.display()
    )]
    OutputNotWritable {
        path: std::path::PathBuf,
        user: String,
    },
    #[error("no process with pid {pid} (check `ps -p {pid}`)")]
    NoProcess { pid: u32 },
    #[error("cannot trace pid {pid}")]
    AddTarget {
        pid: u32,
        #[source]
        source: crate::capture::LoadError,
    },
    #[error("cannot trace the cgroup {}", dir.display())]
    AddCgroup {
        dir: std::path::PathBuf,
        #[source]
        source: Box<crate::capture::LoadError>,
    },
    #[error("{} is not a cgroup v2 directory (give a directory under {}, e.g. the container's \
             `…/cri-containerd-<id>.scope`)", dir.display(), mount.display())]
    NotACgroup {
        dir: std::path::PathBuf,
        mount: std::path::PathBuf,
    },
    #[error("cannot read the cgroup hierarchy")]
    CgroupFs(#[source] std::io::Error),
    #[error("cannot start {program:?}")]
    Spawn {
        program: std::ffi::OsString,
        #[source]
        source: std::io::Error,
    },
    #[error("locating timetracer-agent to start the held child")]
    CurrentExe(#[source] std::io::Error),
    #[error("holding the command until it is traced ({call})")]
    Hold {
        call: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start the {what} thread")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where finished requests go besides the filters (see [`Chain::standard`]).
#[derive(Debug, Default)]
pub struct Outputs {
    /// Write cassette files and index them (false for `top --no-save`).
    pub save: bool,
    /// Upload each written cassette (through the backlog, off the writer thread).
    pub s3: Option<crate::s3::spool::Spool>,
    /// The live view's channel (`top`, `attach --tui`).
    pub live: Option<SyncSender<LiveUpdate>>,
}

impl Chain {
    /// The agent's chain: the plan's filters, then files, index, retention, S3 and the live view as
    /// `outputs` asks.
    #[must_use]
    pub fn standard(plan: &RecordPlan, outputs: Outputs) -> Self {
        let mut sinks = Self::filters(&plan.filters);
        if outputs.save {
            sinks.push(Box::new(sink::Files::new(
                plan.out.clone(),
                plan.compression,
                plan.encrypt_to.clone(),
            )));
            sinks.push(Box::new(sink::Index::new(&plan.out)));
            if let Some(max_age) = plan.retain {
                sinks.push(Box::new(retain::Retain::new(&plan.out, max_age)));
            }
            if let Some(spool) = outputs.s3 {
                sinks.push(Box::new(sink::S3 {
                    dir: plan.out.clone(),
                    spool,
                }));
            }
        }
        if let Some(tx) = outputs.live {
            sinks.push(Box::new(sink::Live::new(tx)));
        }
        Self::new(sinks)
    }
}

/// A recording whose tracing is in place (see [`run`]). Starting is separate so a front end
/// can report start-up errors before it hands the terminal to a viewer, then run the recording
/// on another thread.
#[derive(Debug)]
pub struct Recording {
    session: Session,
}

impl Recording {
    /// Checks the system, loads the eBPF programs, starts the sinks' writer thread, seeds the
    /// target's processes and lets the target run.
    pub fn start(plan: &RecordPlan, target: &mut dyn Target, sinks: Chain) -> Result<Self, Error> {
        crate::capture::preflight()?;
        let mut session = Session::start(plan, sinks, target.describe())?;
        target.seed(&mut Seeder {
            session: &mut session,
        })?;
        // The asyncio probes are in place before the target runs or the caller is told tracing
        // started.
        session.scan_python();
        target.start()?;
        if !plan.quiet {
            crate::say!("timetracer-agent: {}", target.ready_message(&plan.out));
        }
        Ok(Self { session })
    }

    /// Records until `target` is gone or `stop` is set, then flushes every open request
    /// through the sinks and reports.
    pub fn run(mut self, target: &mut dyn Target, stop: &AtomicBool) -> Result<Summary, Error> {
        let res = self.session.run(target, stop);
        let summary = self.session.finish();
        res.map(|()| summary)
    }
}

/// Records `target` until it is gone or `stop` is set; every finished request goes through
/// `sinks`. Returns what the recording saw.
pub fn run(
    plan: &RecordPlan,
    target: &mut dyn Target,
    sinks: Chain,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    Recording::start(plan, target, sinks)?.run(target, stop)
}
