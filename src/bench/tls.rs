//! TLS client configuration for wss:// and https:// targets: trust a private
//! CA (`--ca`), the system roots, or nothing at all (`--insecure`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::BenchError;

/// Where the system CA bundle usually lives (first match wins).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Builds the client config. Returns the config and, when the system roots
/// could not be found, a note for the report.
pub fn client_config(
    ca: Option<&Path>,
    insecure: bool,
    alpn: &[u8],
) -> Result<(Arc<ClientConfig>, Option<String>), BenchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::TlsSetup(e.to_string()))?;
    let mut note = None;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let roots = match ca {
            Some(path) => load_roots(path)?,
            None => match system_roots() {
                Some(roots) => roots,
                None => {
                    note = Some(
                        "no system CA bundle found (set SSL_CERT_FILE or use --ca); \
                         certificates cannot be verified"
                            .to_string(),
                    );
                    RootCertStore::empty()
                }
            },
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok((Arc::new(config), note))
}

/// Loads every certificate of a PEM file into a root store.
fn load_roots(path: &Path) -> Result<RootCertStore, BenchError> {
    let fail = |reason: String| BenchError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("no PEM certificate found in the file".into()));
    }
    Ok(roots)
}

/// The system roots: `$SSL_CERT_FILE` or the usual bundle locations.
fn system_roots() -> Option<RootCertStore> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        let Ok(certs) = CertificateDer::pem_file_iter(&path) else {
            continue;
        };
        let mut roots = RootCertStore::empty();
        // A bundle may hold a few certificates rustls rejects; skip those.
        let (_added, _ignored) = roots.add_parsable_certificates(certs.flatten());
        if !roots.is_empty() {
            return Some(roots);
        }
    }
    None
}

/// The server name to send in SNI and to verify against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, BenchError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| BenchError::TlsSetup(format!("{host:?} is not a valid TLS server name: {e}")))
}

/// `--insecure`: accepts any certificate, but still checks the handshake
/// signatures so the connection behaves like a normal TLS one.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
