//! A recording in progress: kernel capture → correlator on this thread, sinks on the writer
//! thread behind a bounded channel.
use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timetracer_common::decode;

use crate::capture::{Capture, CaptureOptions, procfs};
use crate::correlate::{
    CorrelateOptions, Correlator,
    model::{RecordedRequest, StartupRecord},
    monotonic_ns,
};
use crate::live::LiveUpdate;
use crate::telemetry::{Counter, Counters};

use super::Error;
use super::discover::PyScan;
use super::plan::RecordPlan;
use super::report::{self, KernelDrops, Summary};
use super::sink::{Chain, Ctx, Finished, Sink as _};
use super::target::{Seeder, Target};

/// Finished requests waiting for the writer; when it is slow the correlator waits, the ring
/// buffer fills and the kernel counts `ring_full` drops (never the traced process).
const WRITER_QUEUE: usize = 1024;

/// What the writer thread receives (requests, the common case, unboxed: no allocation per
/// request).
enum ToWriter {
    Request(RecordedRequest),
    /// A snapshot of a request still open to late calls, for the live view.
    Provisional(RecordedRequest),
    Startup(StartupRecord),
}

pub(crate) struct Session {
    pub(super) capture: Capture,
    pub(super) correlator: Correlator,
    pub(super) counters: Counters,
    writer: Option<JoinHandle<()>>,
    tx: Option<SyncSender<ToWriter>>,
    /// The live view's feed for counter snapshots.
    live: Option<SyncSender<LiveUpdate>>,
    plan: RecordPlan,
    target: String,
    preexisting_seq: u64,
    started: Instant,
    /// Print the status line (stderr is a terminal and no viewer owns it).
    tty: bool,
    /// CPython discovery per process (issue #7).
    pub(super) py_scans: HashMap<u32, PyScan>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("out", &self.plan.out)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Loads the eBPF programs and starts the writer thread with `sinks`.
    pub(super) fn start(
        plan: &RecordPlan,
        mut sinks: Chain,
        target: String,
    ) -> Result<Self, Error> {
        // Private when we make it (cassettes and index are 0600 in 0700 directories), and the
        // invoking user's, made with their access rights.
        let mkdir = || {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&plan.out)
        };
        match &plan.owner {
            Some(owner) => owner.with_fs(mkdir),
            None => mkdir(),
        }
        .map_err(|source| Error::OutputDir {
            path: plan.out.clone(),
            source,
        })?;
        // A directory made by an earlier root run: say so now, not once per cassette.
        if let Some(owner) = &plan.owner
            && !owner.with_fs(|| crate::privilege::writable_dir(&plan.out))
        {
            return Err(Error::OutputNotWritable {
                path: plan.out.clone(),
                user: owner.name.clone(),
            });
        }
        let per_syscall =
            u32::try_from(plan.max_body.saturating_add(64 * 1024)).unwrap_or(u32::MAX);
        let capture = Capture::load(CaptureOptions {
            max_bytes_per_syscall: per_syscall,
            ebpf_log: plan.ebpf_log,
        })?;
        let counters = Counters::default();
        let live = sinks.live_feed();
        let opts = CorrelateOptions {
            max_body: usize::try_from(plan.max_body).unwrap_or(usize::MAX),
            redaction: plan.build.redaction.clone(),
            // A viewer sees each request as soon as its response ended.
            provisional: live.is_some(),
            ..CorrelateOptions::default()
        };
        let correlator = Correlator::new(opts, counters.clone(), Box::new(procfs::Procfs));
        let (tx, rx) = mpsc::sync_channel::<ToWriter>(WRITER_QUEUE);
        // One id for everything this recording writes: replay finds a cassette's startup
        // cassettes by it.
        let mut build = plan.build.clone();
        build.recording = Some(uuid::Uuid::new_v4().hyphenated().to_string());
        let ctx = Ctx {
            counters: counters.clone(),
            build,
            quiet: plan.quiet,
        };
        let owner = plan.owner.clone();
        let writer = std::thread::Builder::new()
            .name("tt-writer".into())
            .spawn(move || {
                // Every file and directory the sinks create is the invoking user's.
                if let Some(owner) = &owner {
                    owner.enter_fs();
                }
                write_loop(&rx, &mut sinks, &ctx);
            })
            .map_err(|source| Error::Thread {
                what: "writer",
                source,
            })?;
        Ok(Self {
            capture,
            correlator,
            counters,
            writer: Some(writer),
            tx: Some(tx),
            live,
            plan: plan.clone(),
            target,
            preexisting_seq: 0,
            started: Instant::now(),
            tty: !plan.quiet && std::io::stderr().is_terminal(),
            py_scans: HashMap::new(),
        })
    }

    /// A message for the user: on stderr, or in the log when a viewer owns the terminal.
    pub(super) fn note(&self, msg: &str) {
        if self.plan.quiet {
            tracing::warn!("{msg}");
        } else {
            crate::say!("\ntimetracer-agent: {msg}");
        }
    }

    /// Adds a process to the target set; with `seed_sockets`, registers its open connections.
    pub(super) fn add_process(&mut self, pid: u32, seed_sockets: bool) -> Result<(), Error> {
        let target_err = |source| Error::AddTarget { pid, source };
        self.capture.add_target(pid).map_err(target_err)?;
        self.correlator.add_process(procfs::process_info(pid));
        if !seed_sockets {
            // A launched command (`record`): traced from before its `exec`.
            self.correlator.seen_from_start(pid);
        }
        if seed_sockets {
            for s in procfs::open_sockets(pid) {
                self.preexisting_seq += 1;
                let added = self
                    .capture
                    .add_socket(pid, s.fd, s.server, self.preexisting_seq)
                    .map_err(target_err)?;
                tracing::debug!(pid, fd = s.fd, server = s.server, local = %s.local, remote = %s.remote, ?added, "Open connection at attach");
                if let Some(id) = added {
                    self.correlator
                        .add_preexisting(pid, s.fd, id, s.server, s.local, s.remote);
                }
            }
        }
        Ok(())
    }

    /// Drains and processes until the target is gone or `stop` is set.
    pub(super) fn run(&mut self, target: &mut dyn Target, stop: &AtomicBool) -> Result<(), Error> {
        let mut last_status = Instant::now();
        let mut last_tls_scan: Option<Instant> = None;
        let mut known_pids = 0;
        loop {
            target.poll(&mut Seeder {
                session: &mut *self,
            })?;
            // New worker processes get their TLS probes at once; libraries loaded later
            // (wheels bundling their own libssl) within a second.
            let pids = self.correlator.pids().len();
            if pids != known_pids
                || last_tls_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                known_pids = pids;
                last_tls_scan = Some(Instant::now());
                self.scan_tls();
            }
            self.scan_python();
            let stopped = stop.load(Ordering::SeqCst);
            let finished = target.finished();
            self.step();
            if stopped || finished {
                // Let in-flight syscalls of other CPUs land.
                std::thread::sleep(Duration::from_millis(50));
                self.step();
                return Ok(());
            }
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                self.status_tick();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn step(&mut self) {
        let correlator = &mut self.correlator;
        let counters = &self.counters;
        let n = self.capture.drain(|raw| match decode(raw) {
            Ok(rec) => correlator.handle(rec),
            Err(_) => counters.inc(Counter::UndecodableRecords),
        });
        self.counters.add(Counter::Events, n as u64);
        let now = monotonic_ns();
        self.correlator.pump(now);
        let ready = self.correlator.take_ready(now);
        let startup = self.correlator.take_startup();
        let provisional = self.correlator.take_provisional();
        if ready.is_empty() && startup.is_empty() && provisional.is_empty() {
            return;
        }
        // One read of the kernel's drop counters per drain (a map lookup per CPU and
        // counter), not per request: it was a tenth of the agent's CPU at 2k req/s.
        let drops = report::drops(&self.counters.snapshot(), &self.capture.drops());
        for mut s in startup {
            s.drops.clone_from(&drops);
            self.send(ToWriter::Startup(s));
        }
        for mut r in ready {
            r.drops.clone_from(&drops);
            self.submit(r);
        }
        for mut r in provisional {
            r.drops.clone_from(&drops);
            self.send(ToWriter::Provisional(r));
        }
    }

    fn submit(&self, r: RecordedRequest) {
        self.send(ToWriter::Request(r));
    }

    fn send(&self, item: ToWriter) {
        if let Some(tx) = &self.tx {
            // Blocking send: a slow disk slows the agent (and eventually the kernel counts
            // ring drops), it never blocks the traced app.
            let _ = tx.send(item);
        }
    }

    /// The status line on the terminal, the counters to the live view.
    fn status_tick(&mut self) {
        if !self.tty && self.live.is_none() {
            return;
        }
        let snap = self.counters.snapshot();
        let kernel: KernelDrops = self.capture.drops();
        if self.tty {
            let line = report::status_line(&snap, &kernel, self.correlator.open_connections());
            crate::stderr::write(format!("\r\x1b[2K{line}").into_bytes());
        }
        if let Some(live) = &self.live {
            let stats = report::live_stats(&self.target, self.started.elapsed(), &snap, &kernel);
            match live.try_send(LiveUpdate::Stats(stats)) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => self.counters.inc(Counter::LiveSkipped),
                // The viewer is gone; the final flush does not wait for it.
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    self.live = None;
                    self.correlator.set_provisional(false);
                }
            }
        }
    }

    /// Flushes every open request, waits for the writer, and reports.
    pub(super) fn finish(mut self) -> Summary {
        let drops = report::drops(&self.counters.snapshot(), &self.capture.drops());
        for mut r in self.correlator.finish() {
            r.drops.clone_from(&drops);
            self.submit(r);
        }
        for mut s in self.correlator.take_startup() {
            s.drops.clone_from(&drops);
            self.send(ToWriter::Startup(s));
        }
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.counters
            .add(Counter::StderrDropped, crate::stderr::dropped());
        if self.tty {
            crate::stderr::write(b"\r\x1b[2K".to_vec());
        }
        let py = &self.correlator.py;
        let summary = Summary {
            elapsed: self.started.elapsed(),
            out: self.plan.out.clone(),
            counters: self.counters.snapshot(),
            kernel_drops: self.capture.drops(),
            python_probes: self.capture.py_hits(),
            python_engine: [py.tasks, py.roots, py.copies, py.stamps],
            python_rules: py.rules.iter().map(|(k, n)| (k.clone(), *n)).collect(),
        };
        // Everything is written: stop tracing and detach here. (`Capture::release`, detaching in
        // a forked child in the background, made exit fast but stalled the attach of an agent
        // started within seconds after: its first requests went without Python probes.)
        drop(self.capture);
        summary
    }
}

/// How often the idle writer thread calls the sinks' `idle`.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// The writer thread: every finished request through the sinks; batching sinks flush whenever
/// the queue is empty.
fn write_loop(rx: &mpsc::Receiver<ToWriter>, sinks: &mut Chain, ctx: &Ctx) {
    sinks.start(ctx);
    loop {
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => {
                sinks.idle(ctx);
                // Wake once a second even when nothing arrives: periodic sinks (retention)
                // work in `idle`.
                loop {
                    match rx.recv_timeout(IDLE_TICK) {
                        Ok(r) => break r,
                        Err(mpsc::RecvTimeoutError::Timeout) => sinks.idle(ctx),
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            sinks.finish(ctx);
                            return;
                        }
                    }
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        match r {
            ToWriter::Request(r) => sinks.accept(&mut Finished::new(r), ctx),
            ToWriter::Provisional(r) => sinks.provisional(&mut Finished::new(r), ctx),
            ToWriter::Startup(s) => {
                sinks.startup(&crate::cassette::build_startup(&s, &ctx.build), ctx)
            }
        }
    }
    sinks.finish(ctx);
}
