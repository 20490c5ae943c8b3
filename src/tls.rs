//! TLS termination: certificate loading and the rustls server settings.
//!
//! Switchyard speaks TLS 1.2 and 1.3 only (rustls has nothing older). By
//! ALPN it offers `h2` then `http/1.1` on listeners with `http2` on (the
//! default), `http/1.1` alone otherwise: [`with_alpn`] is that last step
//! of building a listener's settings. The handshake itself runs inside each
//! connection's task, under a timeout (see [`crate::server`]).

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {path} (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCertificate { path: PathBuf },
    #[error("cannot read private key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate {cert} and key {key} cannot be used together: {source}")]
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The crypto provider every TLS object in Switchyard uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load a PEM certificate chain and a PEM private key into server settings.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    server_config_from(chain, private_key).map_err(|source| TlsError::Rejected {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// Server settings from certificate and key already in memory.
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn_protocols(false);
    Ok(Arc::new(config))
}

/// The ALPN protocol id of HTTP/2 over TLS (RFC 9113 §3.2).
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The protocols a listener offers by ALPN, in order of preference.
pub fn alpn_protocols(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
    } else {
        vec![ALPN_HTTP1.to_vec()]
    }
}

/// `config` offering [`alpn_protocols`]`(http2)`.
pub fn with_alpn(config: &ServerConfig, http2: bool) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = alpn_protocols(http2);
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_is_offered_first_and_only_when_asked() {
        assert_eq!(alpn_protocols(true), [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(alpn_protocols(false), [b"http/1.1".to_vec()]);
    }
}
