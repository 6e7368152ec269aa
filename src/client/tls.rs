//! TLS for `https://` endpoints: rustls (ring) trusting the certificates of one CA
//! file. walrus bundles no system roots, so an `https://` endpoint needs a CA file.
//!
//! A server may also present, as its own, exactly a certificate from that file:
//! the self-signed certificate `openssl req -x509` makes is marked as a CA, which
//! WebPKI refuses as a server's certificate, yet a user who passes it with
//! `--cacert` means "trust this certificate". Such an exact match is trusted as
//! it is (pinned), the handshake's signature still checked against its key.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
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
    if let (Some(ca_file), Some(plain)) = (
        ca_file,
        endpoints.iter().find(|endpoint| !endpoint.is_tls()),
    ) {
        return Err(ClientError::Tls(format!(
            "--cacert {} is for https:// endpoints, but {} is plain HTTP: write the \
             endpoint as https://HOST:PORT (or leave out --cacert)",
            ca_file.display(),
            plain.url()
        )));
    }
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
    client_config(ca_file, None).map(TlsConnector::from)
}

/// A client configuration that trusts every certificate in the PEM file at
/// `ca_file` and, given an identity (a certificate chain and its key),
/// presents it to a server that asks for one, as a Redis with
/// `tls-auth-clients yes` (its default) does.
pub fn client_config(
    ca_file: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, ClientError> {
    let tls_error = |reason: String| ClientError::Tls(format!("{}: {reason}", ca_file.display()));
    let file = std::fs::File::open(ca_file).map_err(|error| tls_error(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    for certificate in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let certificate = certificate.map_err(|error| tls_error(error.to_string()))?;
        pinned.push(certificate.clone());
        roots
            .add(certificate)
            .map_err(|error| tls_error(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls_error(
            "no certificates in the file (expected PEM, \"-----BEGIN CERTIFICATE-----\")"
                .to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| tls_error(error.to_string()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaFileVerifier { webpki, pinned }));
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((chain, key)) => config
            .with_client_auth_cert(chain, key)
            .map_err(|error| ClientError::Tls(format!("the client certificate: {error}")))?,
    };
    Ok(Arc::new(config))
}

/// WebPKI against the CA file's certificates, and those certificates
/// themselves pinned (see the module notes).
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|pinned| pinned.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(error) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
        .map_err(|cause| match untrusted_certificate(&cause) {
            Some(reason) => ClientError::Tls(format!(
                "{} presented a certificate the CA file does not trust ({reason}): --cacert \
                 must hold the certificate the server was started with (its --tls-cert), or \
                 the CA that signed it",
                endpoint.url()
            )),
            None => ClientError::Connect {
                endpoint: endpoint.url().to_string(),
                cause,
            },
        })
}

/// The reason, when a handshake failed because the server's certificate was
/// refused (rather than the connection).
fn untrusted_certificate(cause: &std::io::Error) -> Option<String> {
    match cause.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
        _ => None,
    }
}
