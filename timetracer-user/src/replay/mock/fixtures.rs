//! Test helper: the destinations of recorded cassettes under `tests/fixtures/replay/`.
use std::path::PathBuf;
use std::sync::Arc;

use crate::cassette::reader;
use crate::replay::ledger::{Destination, Journal, Protocol, RecordedCall};

/// The destination of `protocol` in the given fixture cassettes (`fastapi/pg_fail.json`), with
/// every call of that protocol in file order and the recorded session facts.
pub(crate) fn destination(protocol: Protocol, files: &[&str]) -> (Arc<Destination>, Arc<Journal>) {
    let journal = Arc::new(Journal::default());
    let mut dest: Option<Destination> = None;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/replay");
    for (i, f) in files.iter().enumerate() {
        let c = reader::read(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        for e in c.events {
            if crate::replay::ledger::mocked_protocol(&e) != Some(protocol) {
                continue;
            }
            let remote = e
                .connection
                .as_ref()
                .and_then(|c| c.remote.clone())
                .expect("remote");
            let d = dest.get_or_insert_with(|| {
                Destination::new(remote.parse().expect("addr"), protocol, journal.clone())
            });
            d.push(RecordedCall::new(i, protocol, e).expect("wire"));
        }
        if let Some(d) = dest.as_mut() {
            for s in &c.db_sessions {
                if s.protocol == protocol.name() && !d.facts.contains(&s.facts) {
                    d.facts.push(s.facts.clone());
                }
            }
        }
    }
    (Arc::new(dest.expect("no call of that protocol")), journal)
}

/// A TLS acceptor for `name` signed by a throwaway mock CA, and a client connector that trusts
/// only that CA and offers `alpn` (the CA directory is removed when the returned guard drops).
pub(crate) fn tls_pair(
    name: &str,
    alpn: Option<&[u8]>,
) -> (
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsConnector,
    tempfile::TempDir,
) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let ca = crate::replay::ca::MockCa::load_or_create(&dir.path().join("ca")).expect("mock CA");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        ca.server_config(&[name.to_owned()], alpn)
            .expect("server config"),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca.cert_path).expect("CA file") {
        roots.add(c.expect("CA certificate")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if let Some(p) = alpn {
        cfg.alpn_protocols = vec![p.to_vec()];
    }
    (
        acceptor,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        dir,
    )
}
