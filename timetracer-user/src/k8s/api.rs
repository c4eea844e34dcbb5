//! Reaching the Kubernetes API server: where the configuration comes from, and one request at
//! start that turns a misconfiguration into an error naming the fix instead of a watch that
//! retries forever.
//!
//! The configuration is looked for in controller-runtime's order (what operators do):
//! `--kubeconfig FILE`; `KUBECONFIG`; in a pod (`KUBERNETES_SERVICE_HOST` is set), the
//! service account (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the token
//! and `ca.crt` under [`SERVICE_ACCOUNT_DIR`], as client-go's `rest.InClusterConfig`); else
//! `~/.kube/config`. kube's own `Config::infer` tries the kubeconfig first even in a pod; an
//! agent given `KUBERNETES_SERVICE_HOST` by the kubelet is meant to use its service account.
//!
//! In a pod the API server is reached at the `kubernetes` Service's ClusterIP (what the
//! kubelet puts in `KUBERNETES_SERVICE_HOST`), so its certificate must name that IP (an IP
//! SAN): kube-apiserver adds the first IP of `--service-cluster-ip-range` to its serving
//! certificate for this, next to `kubernetes.default.svc`. rustls verifies IP SANs; kube's
//! `tls_server_name` (a kubeconfig's `tls-server-name`) is only needed to verify another name.
//! Both the token and `ca.crt` are re-read by kube when they change (bound tokens rotate).
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

/// Where the kubelet mounts the pod's service account (`token`, `ca.crt`, `namespace`).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long the start-up request may take before the agent goes on (and the watch retries).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the API server cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "running in a pod (KUBERNETES_SERVICE_HOST is set) but its service account cannot be \
         used: mount it at {SERVICE_ACCOUNT_DIR} (automountServiceAccountToken: true, and a \
         serviceAccountName bound to `pods: get, list, watch`, as the chart does), or pass \
         --kubeconfig FILE"
    )]
    InCluster(#[source] kube::config::InClusterError),
    #[error(
        "no Kubernetes configuration found: not in a pod (no service account) and no \
         kubeconfig (pass --kubeconfig FILE or set KUBECONFIG)"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot make a Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot verify the certificate of the API server {url}: {fix}")]
    Tls {
        url: String,
        fix: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the API server {url} refused the agent ({code} {reason}: {message}): {fix}")]
    Refused {
        url: String,
        code: u16,
        reason: String,
        message: String,
        fix: &'static str,
    },
}

/// Where the configuration came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--kubeconfig` or `KUBECONFIG`.
    Kubeconfig(PathBuf),
    /// The pod's service account.
    InCluster,
    /// kube's inference (`~/.kube/config`).
    Default,
}

/// Picks the configuration's source (see the module doc): `--kubeconfig`, `KUBECONFIG`,
/// in-cluster when `KUBERNETES_SERVICE_HOST` is set, else the default kubeconfig.
#[must_use]
pub fn source(
    flag: Option<&Path>,
    kubeconfig_env: Option<&str>,
    service_host_env: Option<&str>,
) -> Source {
    match (flag, kubeconfig_env.filter(|v| !v.is_empty())) {
        (Some(p), _) => Source::Kubeconfig(p.to_path_buf()),
        (None, Some(v)) => Source::Kubeconfig(PathBuf::from(v)),
        (None, None) if service_host_env.is_some_and(|h| !h.is_empty()) => Source::InCluster,
        (None, None) => Source::Default,
    }
}

/// The client configuration from `source`.
pub async fn config(source: &Source) -> Result<kube::Config, Error> {
    let config = match source {
        Source::Kubeconfig(path) => {
            let err = |source| Error::Kubeconfig {
                path: path.clone(),
                source,
            };
            let options = kube::config::KubeConfigOptions::default();
            // KUBECONFIG may list several files (`a:b`); kube merges them.
            if std::env::var_os("KUBECONFIG").is_some_and(|v| path.as_os_str() == v) {
                kube::Config::from_kubeconfig(&options).await.map_err(err)?
            } else {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(err)?
            }
        }
        Source::InCluster => kube::Config::incluster_env().map_err(Error::InCluster)?,
        Source::Default => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    Ok(config)
}

/// The client, after one list of this node's pods (`limit=1`): a certificate that does not
/// verify or credentials the API server refuses stop the agent with the fix; an API server
/// that does not answer (yet) is logged and left to the watch's retries.
pub async fn connect(
    source: &Source,
    node: &str,
    namespace: Option<&str>,
) -> Result<kube::Client, Error> {
    // kube's rustls connector uses the process's default provider; ours is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = config(source).await?;
    let url = config.cluster_url.to_string();
    let host = config.cluster_url.host().unwrap_or_default().to_owned();
    let ca = config.root_cert_file.clone();
    tracing::info!(api = %url, via = ?source, "Kubernetes API server");
    let client = kube::Client::try_from(config).map_err(Error::Client)?;
    let api: kube::Api<Pod> = match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let params = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .limit(1);
    match tokio::time::timeout(CHECK_TIMEOUT, api.list(&params)).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => match refusal(&e, &url, &host, ca.as_deref(), source) {
            Some(fatal) => Err(fatal),
            None => {
                tracing::warn!(api = %url, error = %e, "The API server cannot be reached yet; \
                               the watch retries with backoff");
                Ok(client)
            }
        },
        Err(_) => {
            tracing::warn!(api = %url, "The API server did not answer within {}s; the watch \
                           retries with backoff", CHECK_TIMEOUT.as_secs());
            Ok(client)
        }
    }
}

/// A failure that retrying cannot fix (a certificate, the credentials, the RBAC), as the
/// error to stop with; `None` for the rest (connection refused, timeouts, 5xx).
fn refusal(
    e: &kube::Error,
    url: &str,
    host: &str,
    ca: Option<&Path>,
    source: &Source,
) -> Option<Error> {
    if let kube::Error::Api(status) = e {
        let fix = match status.code {
            401 => match source {
                Source::InCluster => {
                    "the service account token is not accepted (expired, or of another \
                     cluster): the kubelet mounts and rotates it as \
                     /var/run/secrets/kubernetes.io/serviceaccount/token"
                }
                _ => "the kubeconfig's user credentials are not accepted: refresh them",
            },
            403 => {
                "the agent's account may not list pods: bind it to `pods: get, list, watch` \
                 (the chart's ClusterRole, or a Role in each -n namespace)"
            }
            _ => return None,
        };
        return Some(Error::Refused {
            url: url.to_owned(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            fix,
        });
    }
    let tls = tls_error(e)?;
    Some(Error::Tls {
        url: url.to_owned(),
        fix: tls_fix(tls, host, ca, source),
        source: tls.clone(),
    })
}

/// The rustls error in `e`'s chain. tokio-rustls reports it inside an `io::Error`, which
/// hyper-rustls may wrap in another; an `io::Error`'s `source()` skips the error it wraps,
/// hence `get_ref` to go down.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// What to change for a certificate that does not verify.
fn tls_fix(e: &rustls::Error, host: &str, ca: Option<&Path>, source: &Source) -> String {
    use rustls::CertificateError as C;
    let ca = ca.map_or_else(
        || "the kubeconfig's certificate-authority-data".to_owned(),
        |p| p.display().to_string(),
    );
    let rustls::Error::InvalidCertificate(cert) = e else {
        return "the TLS handshake failed".to_owned();
    };
    match (cert, source) {
        (C::NotValidForName | C::NotValidForNameContext { .. }, Source::InCluster) => format!(
            "it does not name {host}: KUBERNETES_SERVICE_HOST must be the `kubernetes` \
             Service's ClusterIP, which kube-apiserver puts in its certificate"
        ),
        (C::NotValidForName | C::NotValidForNameContext { .. }, _) => format!(
            "it does not name {host}: use a server address the certificate names, or set the \
             cluster's tls-server-name in the kubeconfig"
        ),
        (
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            _,
        ) => "it has expired or is not valid yet: check the node's clock and the API server's \
             certificate"
            .to_owned(),
        (_, Source::InCluster) => format!(
            "it is not signed by the CA in {ca}: that file must be the cluster's CA (the \
             kubelet mounts it from the kube-root-ca.crt ConfigMap; a pod that mounts its own \
             {SERVICE_ACCOUNT_DIR} must copy it from there)"
        ),
        (_, _) => format!(
            "it is not signed by the CA in {ca}: set the cluster's certificate-authority \
             (or certificate-authority-data) in the kubeconfig to the cluster's CA"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_follows_controller_runtime_order() {
        let flag = Path::new("/etc/kc");
        assert_eq!(
            source(Some(flag), Some("/env/kc"), Some("10.96.0.1")),
            Source::Kubeconfig(flag.into())
        );
        assert_eq!(
            source(None, Some("/env/kc"), Some("10.96.0.1")),
            Source::Kubeconfig("/env/kc".into())
        );
        assert_eq!(source(None, Some(""), Some("10.96.0.1")), Source::InCluster);
        assert_eq!(source(None, None, Some("")), Source::Default);
        assert_eq!(source(None, None, None), Source::Default);
    }

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, bad.clone());
        #[derive(Debug, thiserror::Error)]
        #[error("connect")]
        struct Wrap(#[source] std::io::Error);
        let wrapped = Wrap(io);
        assert_eq!(tls_error(&wrapped), Some(&bad));
        let twice = Wrap(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            bad.clone(),
        )));
        assert_eq!(tls_error(&twice), Some(&bad));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_error(&plain), None);
    }

    #[test]
    fn tls_fixes_name_the_file_or_the_address() {
        let url = "127.0.0.1";
        let ca = Path::new("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
        let issuer = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let fix = tls_fix(&issuer, url, Some(ca), &Source::InCluster);
        assert!(
            fix.contains(
                "not signed by the CA in /var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
            ),
            "{fix}"
        );
        let fix = tls_fix(&issuer, url, None, &Source::Kubeconfig("/kc".into()));
        assert!(fix.contains("certificate-authority"), "{fix}");
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let fix = tls_fix(&name, url, Some(ca), &Source::InCluster);
        assert!(
            fix.contains("does not name 127.0.0.1") && fix.contains("ClusterIP"),
            "{fix}"
        );
    }
}
