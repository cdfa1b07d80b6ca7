//! TLS termination with rustls: the certificate and key from the configuration, ALPN offering
//! HTTP/2 and HTTP/1.1.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};

use crate::{config::Tls, error::Error};

/// Builds the acceptor for the main listener.
///
/// # Errors
/// The files cannot be read or parsed, or the key does not match the certificate.
pub fn acceptor(tls: &Tls) -> Result<TlsAcceptor, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("TLS {what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| bad(&format!("certificate file {}", tls.cert_file.display()), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("certificate file {}", tls.cert_file.display()), &e))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "TLS certificate file {} holds no PEM certificate",
            tls.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| bad(&format!("key file {}", tls.key_file.display()), &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
