//! TLS for the HTTP server (rustls with the ring provider).

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no certificate in PEM format")]
    NoCertificate { path: String },
    #[error("{path} holds no private key in PEM format (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its private key, as a TLS end presents them.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Loads a PEM certificate chain and private key into a server configuration.
pub fn load_tls_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load_identity(cert_path, key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the node's certificate chain and private key (`--tls-cert`,
/// `--tls-key`): what it serves with, and what it presents as a client
/// where the other end asks for a certificate (MIGRATE to a Redis).
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&cert_pem[..]))
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.display().to_string(),
        })?;
    Ok((certs, key))
}
