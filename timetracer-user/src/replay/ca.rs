//! The per-install mock CA and the certificates of TLS-terminating mocks.
//!
//! The CA is created on first use under the user's data directory (`ca.pem` 0644, `ca.key`
//! 0600, directory 0700) and never leaves it: the replayed app trusts it through the Python
//! hook (`TIMETRACER_REPLAY_CA`), nothing is installed system-wide, and no key is in the repo
//! or the package. Leaf certificates are made per replay, in memory, for the recorded server
//! names.
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CA_NAME: &str = "timetracer replay mock CA (this machine only)";

/// Where timetracer keeps per-user state: `$TIMETRACER_DATA_DIR`, else
/// `$XDG_DATA_HOME/timetracer`, else `~/.local/share/timetracer`.
#[must_use]
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TIMETRACER_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("timetracer");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".local/share/timetracer")
}

/// The mock CA: its certificate (trusted by the app) and what signs the leaves.
pub struct MockCa {
    /// PEM file of the CA certificate.
    pub cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for MockCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "timetracer");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params
}

impl MockCa {
    /// Loads the CA from `dir`, creating it on first use.
    ///
    /// # Errors
    /// The directory cannot be created or the files are unreadable / corrupt (the message
    /// names the files to delete to start over).
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if !key_path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let key = KeyPair::generate().context("cannot generate the mock CA key")?;
            let cert = ca_params()
                .self_signed(&key)
                .context("cannot make the mock CA")?;
            write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
        }
        let key_pem = fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).with_context(|| {
            format!(
                "{} is not a valid key; delete {} and {} to make a new mock CA",
                key_path.display(),
                key_path.display(),
                cert_path.display()
            )
        })?;
        let cert_pem =
            fs::read(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
        let cert_der = rustls_pemfile_first(&cert_pem).with_context(|| {
            format!(
                "{} holds no certificate; delete it and {} to make a new mock CA",
                cert_path.display(),
                key_path.display()
            )
        })?;
        // The issuer used for signing: same name and key as the trusted certificate, which is
        // all chain validation compares (subject/issuer name, key identifier, signature).
        let issuer = ca_params()
            .self_signed(&key)
            .context("cannot rebuild the mock CA")?;
        Ok(Self {
            cert_path,
            cert_der,
            issuer,
            key,
        })
    }

    /// A TLS server configuration for `names` (DNS names or IP addresses), signed by the CA,
    /// offering the ALPN protocol `alpn` when given (a client that offers ALPN without it is
    /// refused, as by the real server).
    ///
    /// # Errors
    /// A name that is not a valid DNS name or IP address.
    pub fn server_config(
        &self,
        names: &[String],
        alpn: Option<&[u8]>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("timetracer mock", String::as_str),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(
                    n.clone()
                        .try_into()
                        .with_context(|| format!("{n:?} is not a DNS name"))?,
                )),
            })
            .collect::<anyhow::Result<_>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Python 3.13 (VERIFY_X509_STRICT) wants the authority key identifier on leaves.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.issuer, &self.key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        if let Some(p) = alpn {
            cfg.alpn_protocols = vec![p.to_vec()];
        }
        Ok(Arc::new(cfg))
    }
}

/// The first `CERTIFICATE` block of a PEM file, as DER.
fn rustls_pemfile_first(pem: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
}

/// Creates `path` with `mode` (refusing to follow or overwrite an existing file) and writes it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if path.extension().is_some_and(|e| e == "key") {
        let m = fs::metadata(path)?.permissions();
        use std::os::unix::fs::PermissionsExt as _;
        if m.mode() & 0o077 != 0 {
            bail!("{} must be mode 0600", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn ca_created_once_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("mock-ca");
        let ca = MockCa::load_or_create(&ca_dir).unwrap();
        let pem1 = fs::read(&ca.cert_path).unwrap();
        assert_eq!(
            fs::metadata(ca_dir.join("ca.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&ca_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let ca2 = MockCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(pem1, fs::read(&ca2.cert_path).unwrap());
        ca2.server_config(
            &["auth.internal".into(), "127.0.0.1".into()],
            Some(b"http/1.1"),
        )
        .unwrap();
    }
}
