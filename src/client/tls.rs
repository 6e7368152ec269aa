//! TLS for `https://` endpoints: rustls (ring) trusting the certificates of one CA
//! file. walrus bundles no system roots, so an `https://` endpoint needs a CA file.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use super::endpoint::Endpoint;

/// The connector for `endpoints`: `None` when none of them is `https://`; an
/// error when one is and there is no CA file.
pub fn for_endpoints(
    endpoints: &[Arc<Endpoint>],
    ca_file: Option<&Path>,
) -> Result<Option<TlsConnector>, ClientError> {
    match (endpoints.iter().find(|endpoint| endpoint.is_tls()), ca_file) {
        (_, Some(ca_file)) => connector(ca_file).map(Some),
        (None, None) => Ok(None),
        (Some(endpoint), None) => Err(ClientError::Tls(format!(
            "{} is https: give the CA file that signed its certificate",
            endpoint.url()
        ))),
    }
}

/// A connector that trusts every certificate in the PEM file at `ca_file`.
pub fn connector(ca_file: &Path) -> Result<TlsConnector, ClientError> {
    let tls_error = |reason: String| ClientError::Tls(format!("{}: {reason}", ca_file.display()));
    let file = std::fs::File::open(ca_file).map_err(|error| tls_error(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let certificate = certificate.map_err(|error| tls_error(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| tls_error(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls_error("no certificates in the file".to_string()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Runs the TLS handshake on `stream`, checking the certificate against the
/// endpoint's host name.
pub async fn handshake(
    connector: &TlsConnector,
    endpoint: &Endpoint,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = ServerName::try_from(endpoint.host().to_string())
        .map_err(|error| ClientError::Tls(format!("{}: {error}", endpoint.url())))?;
    connector
        .connect(name, stream)
        .await
        .map_err(|cause| ClientError::Connect {
            endpoint: endpoint.url().to_string(),
            cause,
        })
}
