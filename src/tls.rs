//! TLS termination: certificate loading and the rustls server settings.
//!
//! Switchyard speaks TLS 1.2 and 1.3 only (rustls has nothing older) and
//! offers `http/1.1` by ALPN (and `acme-tls/1` on listeners that answer
//! ACME challenges). Which certificate a handshake gets is decided by a
//! resolver ([`crate::certs`]); this module turns PEM material into rustls
//! objects and builds the settings around that resolver. The handshake
//! itself runs inside each connection's task, under a timeout (see
//! [`crate::server`]).

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
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

/// Read a PEM certificate chain and a PEM private key from files; also
/// returns the text read (chain, then key).
pub fn read_pem_pair(
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        Vec<u8>,
    ),
    TlsError,
> {
    let read_cert = |source| TlsError::ReadCert {
        path: cert.to_path_buf(),
        source,
    };
    let mut pem =
        std::fs::read(cert).map_err(|e| read_cert(rustls::pki_types::pem::Error::Io(e)))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let read_key = |source| TlsError::ReadKey {
        path: key.to_path_buf(),
        source,
    };
    let key_pem = std::fs::read(key).map_err(|e| read_key(rustls::pki_types::pem::Error::Io(e)))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(read_key)?;
    pem.extend_from_slice(&key_pem);
    Ok((chain, private_key, pem))
}

/// A chain and its key as rustls signs with them, after checking that the
/// key is the certificate's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(chain, key, &provider())
}

/// What a listener's settings are built from, besides its certificates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// The listener answers ACME TLS-ALPN-01 challenges (RFC 8737).
    pub acme_tls_alpn: bool,
}

/// The ALPN protocols a listener offers, in order of preference.
pub fn alpn_protocols(settings: Settings) -> Vec<Vec<u8>> {
    let mut protocols = vec![b"http/1.1".to_vec()];
    if settings.acme_tls_alpn {
        // Chosen only by a client that offers nothing else: an ACME server
        // validating a challenge.
        protocols.push(ACME_TLS_ALPN.to_vec());
    }
    protocols
}

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Server settings whose certificate `resolver` picks per handshake.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    settings: Settings,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn_protocols(settings);
    // The server's order of cipher suites (every one AEAD with forward
    // secrecy, strongest first) rather than the client's, as TLS scanners
    // expect of a public endpoint.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
