//! `cargo xtask image`: the agent's container image without a registry or a container engine.
//!
//! The root file system is made by `mmdebstrap` (Debian package) from Debian packages of the
//! host's release: `--variant=extract` of `base-files`, `libc6`, `libgcc-s1` (what the
//! binaries link: `ldd target/release/timetracer-agent`) and `ca-certificates` (HTTPS to S3
//! and the API server), plus the release binaries in `/usr/local/bin`, the CA bundle
//! `update-ca-certificates` would make, and the empty mount points the chart uses. That tar is
//! the image's one layer, unchanged.
//!
//! The archive around it is written here: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that is also a docker archive (`manifest.json` naming the same blobs, as
//! `docker save` writes since Docker 25), so both `ctr images import` and `docker load` take
//! it. By hand because it is three small JSON documents and a tar of four entries around the
//! layer mmdebstrap already wrote; the Debian tools that write image layouts (umoci, skopeo)
//! would unpack and repack that layer, and neither writes both formats in one file.
//!
//! `SOURCE_DATE_EPOCH` (default: the last commit's time) fixes every time stamp, so the same
//! sources and Debian packages give the same image digest.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::Digest as _;

/// The image's name; the chart's default `image.repository` (deploy/helm/timetracer).
pub(crate) const REPOSITORY: &str = "localhost/timetracer";

/// The packages of the root file system (see the module doc).
const PACKAGES: &str = "base-files,libc6,libgcc-s1,ca-certificates";

/// `localhost/timetracer:<workspace version>`.
pub(crate) fn reference() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// `target/image/timetracer-<version>.tar`.
pub(crate) fn tarball(root: &Path) -> PathBuf {
    root.join("target/image")
        .join(format!("timetracer-{}.tar", env!("CARGO_PKG_VERSION")))
}

fn host_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME: this needs a Debian host")
}

fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return v
            .to_str()
            .and_then(|v| v.parse().ok())
            .context("SOURCE_DATE_EPOCH is not a number of seconds");
    }
    let out = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .context("git log (or set SOURCE_DATE_EPOCH)")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no commit time from git (set SOURCE_DATE_EPOCH)")
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((format!("{:x}", h.finalize()), n))
}

/// Stores `bytes` as a blob; returns its descriptor (digest, size).
fn blob(blobs: &Path, media_type: &str, bytes: &[u8]) -> Result<serde_json::Value> {
    let digest = format!("{:x}", sha2::Sha256::digest(bytes));
    fs::write(blobs.join(&digest), bytes)?;
    Ok(serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{digest}"),
        "size": bytes.len(),
    }))
}

/// Builds the image tarball from the release binaries in `target/release`; returns its path.
pub(crate) fn build(root: &Path) -> Result<PathBuf> {
    let bins = ["timetracer-agent", "timetracer"].map(|b| root.join("target/release").join(b));
    for b in &bins {
        if !b.is_file() {
            bail!("{} is missing: run `cargo xtask build` first", b.display());
        }
    }
    let epoch = source_date_epoch(root)?;
    let work = root.join("target/image/work");
    let _ = fs::remove_dir_all(&work);
    let blobs = work.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer = work.join("rootfs.tar");

    // The layer: mmdebstrap's tar of the root file system. The hooks run on the host with the
    // root directory as $1, after the packages are extracted (the extract variant runs no
    // customize hooks).
    let copy_bins = format!(
        "install -d \"$1/usr/local/bin\" && install -m 0755 {} {} \"$1/usr/local/bin/\"",
        bins[0].display(),
        bins[1].display()
    );
    let hooks = [
        copy_bins.as_str(),
        // What update-ca-certificates makes from the package's certificates (extract runs no
        // maintainer scripts).
        "mkdir -p \"$1/etc/ssl/certs\" && cat \"$1\"/usr/share/ca-certificates/mozilla/*.crt \
         > \"$1/etc/ssl/certs/ca-certificates.crt\"",
        // Mount points of the DaemonSet (read-only root: they must exist in the image).
        "mkdir -p \"$1/sys/fs/cgroup\" \"$1/sys/kernel/tracing\" \"$1/var/lib/timetracer\" \
         \"$1/proc\" \"$1/dev\" \"$1/tmp\" && chmod 1777 \"$1/tmp\"",
    ];
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=extract", "--include", PACKAGES, "--quiet"])
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    for h in hooks {
        cmd.arg(format!("--extract-hook={h}"));
    }
    cmd.arg(host_codename()?).arg(&layer);
    crate::run(&mut cmd)?;

    let (layer_digest, layer_size) = sha256_file(&layer)?;
    fs::rename(&layer, blobs.join(&layer_digest))?;
    let created = Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .context("date")?;
    let reference = reference();
    let version = env!("CARGO_PKG_VERSION");
    let config = serde_json::json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/timetracer-agent"],
            "Cmd": ["node"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/var/lib/timetracer",
            "Labels": {
                "org.opencontainers.image.title": "timetracer",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.description":
                    "timetracer-agent (node mode by default) and timetracer",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": created, "created_by": format!("mmdebstrap --variant=extract --include {PACKAGES} (cargo xtask image)")}],
    });
    let config_desc = blob(
        &blobs,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config)?,
    )?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let mut manifest_desc = blob(
        &blobs,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest)?,
    )?;
    manifest_desc["annotations"] = serde_json::json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": version,
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    fs::write(work.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        work.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let config_path = format!(
        "blobs/sha256/{}",
        config_desc["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .context("config digest")?
    );
    let docker = serde_json::json!([{
        "Config": config_path,
        "RepoTags": [reference],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);
    fs::write(work.join("manifest.json"), serde_json::to_vec(&docker)?)?;

    let out = tarball(root);
    crate::run(
        Command::new("tar")
            .current_dir(&work)
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                &format!("--mtime=@{epoch}"),
                "-cf",
            ])
            .arg(&out)
            .args(["oci-layout", "index.json", "manifest.json", "blobs"]),
    )?;
    fs::remove_dir_all(&work)?;
    let (digest, size) = sha256_file(&out)?;
    eprintln!(
        "xtask: image {reference} written to {} ({:.1} MiB, sha256 {digest}; layer sha256:{layer_digest})",
        out.display(),
        size as f64 / 1_048_576.0
    );
    eprintln!(
        "xtask: load it with `ctr -n k8s.io images import {}` or `docker load -i {}`",
        out.display(),
        out.display()
    );
    Ok(out)
}
