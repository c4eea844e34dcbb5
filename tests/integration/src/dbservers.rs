//! Real database servers for the end-to-end tests: PostgreSQL, MariaDB and Redis from the
//! Debian packages, each on a free loopback port with its data under a temp dir, stopped when
//! dropped. Packages are installed with `apt-get` when missing (root only).
//!
//! Every server requires a password over TCP, so the apps' authentication exchanges go over
//! the wire (and must not end up in a cassette): PostgreSQL `scram-sha-256` for host
//! connections (trust only on the Unix socket the harness uses for setup), MariaDB
//! `mysql_native_password` for the app user, Redis `requirepass`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

use crate::prereq::which;
use crate::util::{self, ProcGuard};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// User, password and database the apps use on every server.
pub const APP_USER: &str = "ttapp";
/// Password of [`APP_USER`] (PostgreSQL, MariaDB) and Redis' `requirepass`. Must never appear
/// in a cassette.
pub const APP_PASSWORD: &str = "Tt-db-S3cret-7e5d";
/// Database name on PostgreSQL and MariaDB.
pub const APP_DB: &str = "ttdb";

/// Rows of `items` on both SQL servers: `(id, name)`.
pub const ITEMS: &[(i64, &str)] = &[(1, "ada"), (2, "bob"), (3, "cy")];

/// Which servers a test needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub postgres: bool,
    pub mariadb: bool,
    pub redis: bool,
    /// PostgreSQL serves TLS with a certificate of a throwaway CA made at start ([`TestCa`]);
    /// the apps are told to verify it (`PG_SSLMODE=verify-full`, `PG_SSLROOTCERT`). MariaDB
    /// does not (`start_mariadb` can): PyMySQL >= 1.2 upgrades whenever the server offers TLS,
    /// and the recorder does not parse MySQL sessions over TLS yet (after the upgrade the
    /// plaintext starts with the handshake response, which detection does not recognise).
    pub tls: bool,
}

/// A CA and a server certificate for `127.0.0.1` / `localhost`, made with `openssl` when a
/// test starts (no private key is ever committed).
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate the apps trust.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Makes the CA and the server certificate under `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)?;
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=timetracer test CA",
                ])
                .args(ec)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.pem")),
            "openssl CA",
        )?;
        run(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=localhost"])
                .args(ec)
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl server key",
        )?;
        fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("ext.cnf"))
                .arg("-out")
                .arg(p("server.pem")),
            "openssl server certificate",
        )?;
        fs::set_permissions(p("server.key"), fs::Permissions::from_mode(0o600))?;
        fs::set_permissions(p("ca.key"), fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        })
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub port: u16,
    /// Unix socket directory (PostgreSQL) or socket path (MariaDB); unused for Redis.
    pub socket: PathBuf,
    guard: Option<ProcGuard>,
    /// Signal for a clean, quick shutdown.
    stop_signal: Signal,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = g.signal(self.stop_signal);
            if g.wait_timeout(Duration::from_secs(10)).is_none() {
                eprintln!("{} did not stop within 10 s; killing it", g.name);
            }
            // ProcGuard's drop kills whatever is left of the process group.
        }
    }
}

/// The servers a test asked for.
#[derive(Debug, Default)]
pub struct DbServers {
    pub postgres: Option<Server>,
    pub mariadb: Option<Server>,
    pub redis: Option<Server>,
    /// The CA of the servers' certificates ([`Needs::tls`]).
    pub tls: Option<TestCa>,
}

impl DbServers {
    /// Environment for the apps (`PG_*`, `MYSQL_*`, `REDIS_*`).
    pub fn app_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut add = |k: &str, v: String| env.push((k.to_owned(), v));
        if let Some(pg) = &self.postgres {
            add("PG_HOST", "127.0.0.1".into());
            add("PG_PORT", pg.port.to_string());
            add("PG_USER", APP_USER.into());
            add("PG_PASSWORD", APP_PASSWORD.into());
            add("PG_DB", APP_DB.into());
            if let Some(t) = &self.tls {
                add("PG_SSLMODE", "verify-full".into());
                add("PG_SSLROOTCERT", t.ca.display().to_string());
            }
        }
        if let Some(my) = &self.mariadb {
            add("MYSQL_HOST", "127.0.0.1".into());
            add("MYSQL_PORT", my.port.to_string());
            add("MYSQL_USER", APP_USER.into());
            add("MYSQL_PASSWORD", APP_PASSWORD.into());
            add("MYSQL_DB", APP_DB.into());
        }
        if let Some(r) = &self.redis {
            add("REDIS_PORT", r.port.to_string());
            add("REDIS_PASSWORD", APP_PASSWORD.into());
        }
        env
    }
}

/// Why the servers cannot be provided here, if they cannot (not root, install failed).
pub fn missing_prerequisite(needs: Needs) -> Option<String> {
    match ensure_packages(needs) {
        Ok(()) => None,
        Err(e) => Some(format!("{e:#}")),
    }
}

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    // Newest major version first.
    dirs.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    dirs.into_iter().next()
}

fn mariadb_bins() -> Option<(PathBuf, PathBuf, PathBuf)> {
    Some((
        which("mariadb-install-db").or_else(|| which("mysql_install_db"))?,
        which("mariadbd").or_else(|| which("mysqld"))?,
        which("mariadb").or_else(|| which("mysql"))?,
    ))
}

/// Installs the Debian packages of the needed servers when their binaries are missing
/// (idempotent; serialised across tests). Fails when not root.
pub fn ensure_packages(needs: Needs) -> anyhow::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut missing = Vec::new();
    if needs.postgres && postgres_bin_dir().is_none() {
        missing.push("postgresql");
    }
    if needs.mariadb && mariadb_bins().is_none() {
        missing.extend(["mariadb-server", "mariadb-client"]);
    }
    if needs.redis && which("redis-server").is_none() {
        missing.push("redis-server");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("database packages {missing:?} are not installed and installing them needs root");
    }
    eprintln!("installing {missing:?} with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    let ok = apt(&install).is_ok_and(|s| s.success());
    if !ok {
        // A fresh machine may have no package lists yet.
        let updated = apt(&["update"]).context("apt-get update")?;
        if !updated.success() {
            bail!("apt-get update failed ({updated})");
        }
        let s = apt(&install).context("apt-get install")?;
        if !s.success() {
            bail!("apt-get install {missing:?} failed ({s})");
        }
    }
    // Packaged services may have been started by the install; ours use their own ports and
    // data directories, so they are left alone.
    Ok(())
}

/// Starts the servers in `needs` under `root` (a test's temp dir). Panics with the servers'
/// logs when one does not come up.
pub fn start(needs: Needs, root: &Path) -> anyhow::Result<DbServers> {
    ensure_packages(needs)?;
    // Let the `postgres` user traverse the temp dir to its data directory.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    let mut s = DbServers::default();
    if needs.tls {
        s.tls = Some(TestCa::make(&root.join("tls")).context("make the test CA")?);
    }
    if needs.postgres {
        s.postgres = Some(start_postgres(root, s.tls.as_ref()).context("start PostgreSQL")?);
    }
    if needs.mariadb {
        s.mariadb = Some(start_mariadb(root, None).context("start MariaDB")?);
    }
    if needs.redis {
        s.redis = Some(start_redis(root).context("start Redis")?);
    }
    Ok(s)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program` run as the `postgres` user (initdb and the server refuse to run as root). The
/// server is our direct child, so a stop signal reaches it.
fn as_postgres(program: &Path) -> anyhow::Result<Command> {
    let user = nix::unistd::User::from_name("postgres")?
        .context("no `postgres` user (is the postgresql package installed?)")?;
    let mut c = Command::new(program);
    c.uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .env("HOME", &user.dir)
        .env("USER", "postgres");
    Ok(c)
}

fn wait_port(guard: &mut ProcGuard, port: u16, log: &Path) -> anyhow::Result<()> {
    guard.wait_for_port(port, START_TIMEOUT).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n{}\n----- {} -----\n{}",
            guard.diagnostics(),
            log.display(),
            util::tail(&fs::read_to_string(log).unwrap_or_default(), 40)
        )
    })
}

fn start_postgres(root: &Path, tls: Option<&TestCa>) -> anyhow::Result<Server> {
    let bin = postgres_bin_dir().context("no /usr/lib/postgresql/*/bin")?;
    let base = root.join("postgres");
    let data = base.join("data");
    let sock = base.join("sock");
    fs::create_dir_all(&sock)?;
    // The server reads its key as `postgres` and refuses one others can read.
    if let Some(t) = tls {
        fs::copy(&t.cert, base.join("server.pem"))?;
        fs::copy(&t.key, base.join("server.key"))?;
        fs::set_permissions(base.join("server.key"), fs::Permissions::from_mode(0o600))?;
    }
    run(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base),
        "chown postgres dir",
    )?;
    let pwfile = base.join("pw");
    fs::write(&pwfile, "postgres-superuser-unused\n")?;
    run(
        Command::new("chown").arg("postgres").arg(&pwfile),
        "chown pwfile",
    )?;
    run(
        as_postgres(&bin.join("initdb"))?
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display())),
        "initdb",
    )?;
    let port = util::free_port();
    let log = base.join("postgres.log");
    let mut cmd = as_postgres(&bin.join("postgres"))?;
    cmd.arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&sock)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "password_encryption=scram-sha-256"]);
    if tls.is_some() {
        cmd.args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                base.join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                base.join("server.key").display()
            ));
    }
    let mut guard = ProcGuard::spawn("postgres", cmd, &base)?;
    wait_port(&mut guard, port, &log)?;
    let psql = |db: &str, sql: &str| {
        let psql = if bin.join("psql").is_file() {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        run(
            as_postgres(&psql)?
                .arg("-h")
                .arg(&sock)
                .args(["-p", &port.to_string(), "-U", "postgres", "-d", db])
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]),
            "psql",
        )
    };
    // The port opens before recovery ends ("the database system is starting up"): wait for a
    // query to succeed (a loaded machine takes seconds).
    let t = std::time::Instant::now();
    while let Err(e) = psql("postgres", "SELECT 1") {
        if !format!("{e:#}").contains("starting up") || t.elapsed() > START_TIMEOUT {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    psql(
        "postgres",
        &format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"),
    )?;
    psql(
        "postgres",
        &format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"),
    )?;
    psql(
        APP_DB,
        &format!("SET ROLE {APP_USER}; {}", schema_sql(false)),
    )?;
    Ok(Server {
        port,
        socket: sock,
        guard: Some(guard),
        stop_signal: Signal::SIGINT,
    })
}

/// The tables both SQL servers get.
fn schema_sql(mysql: bool) -> String {
    let serial = if mysql {
        "INT AUTO_INCREMENT PRIMARY KEY"
    } else {
        "SERIAL PRIMARY KEY"
    };
    let rows: Vec<String> = ITEMS
        .iter()
        .map(|(id, name)| format!("({id}, '{name}')"))
        .collect();
    format!(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL); \
         INSERT INTO items (id, name) VALUES {}; \
         CREATE TABLE audit (id {serial}, note VARCHAR(200) NOT NULL);",
        rows.join(", ")
    )
}

fn start_mariadb(root: &Path, tls: Option<&TestCa>) -> anyhow::Result<Server> {
    let (install_db, mariadbd, client) = mariadb_bins().context("MariaDB binaries")?;
    let base = root.join("mariadb");
    let data = base.join("data");
    fs::create_dir_all(&base)?;
    run(
        Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ]),
        "mariadb-install-db",
    )?;
    let port = util::free_port();
    let sock = base.join("mysqld.sock");
    let log = base.join("mariadbd.log");
    let mut cmd = Command::new(&mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", base.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0",
        ]);
    if let Some(t) = tls {
        cmd.arg(format!("--ssl-ca={}", t.ca.display()))
            .arg(format!("--ssl-cert={}", t.cert.display()))
            .arg(format!("--ssl-key={}", t.key.display()));
    }
    let mut guard = ProcGuard::spawn("mariadbd", cmd, &base)?;
    wait_port(&mut guard, port, &log)?;
    let sql = format!(
        "CREATE DATABASE {APP_DB}; \
         CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT ALL PRIVILEGES ON {APP_DB}.* TO '{APP_USER}'@'127.0.0.1'; \
         USE {APP_DB}; {}",
        schema_sql(true)
    );
    run(
        Command::new(&client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", sock.display()))
            .args(["-u", "root", "-e", &sql]),
        "mariadb setup",
    )?;
    Ok(Server {
        port,
        socket: sock,
        guard: Some(guard),
        stop_signal: Signal::SIGTERM,
    })
}

fn start_redis(root: &Path) -> anyhow::Result<Server> {
    let base = root.join("redis");
    fs::create_dir_all(&base)?;
    let port = util::free_port();
    let log = base.join("redis.log");
    let mut cmd = Command::new(which("redis-server").context("redis-server")?);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&base)
        .args(["--requirepass", APP_PASSWORD])
        .arg("--logfile")
        .arg(&log);
    let mut guard = ProcGuard::spawn("redis-server", cmd, &base)?;
    wait_port(&mut guard, port, &log)?;
    Ok(Server {
        port,
        socket: PathBuf::new(),
        guard: Some(guard),
        stop_signal: Signal::SIGTERM,
    })
}
