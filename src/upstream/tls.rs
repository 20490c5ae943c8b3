//! TLS to the servers of an upstream (`tls = { ca, server_name }`): a
//! rustls client offering only ALPN `http/1.1` (an `h2` answer would break
//! the WebSocket upgrade, which is HTTP/1.1 only), verifying each server's
//! certificate against `ca` or the system's roots, for `server_name` or the
//! host the server was written with.

use crate::config::UpstreamTls;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// An upstream's client settings, or why they could not be made.
pub type ClientTls = Result<Arc<rustls::ClientConfig>, String>;

/// How one server's connections are secured.
#[derive(Clone)]
pub struct Secure {
    connector: Result<TlsConnector, String>,
    /// The name to verify, or why the host cannot be one.
    name: Result<ServerName<'static>, String>,
}

impl Secure {
    /// The TLS settings for a server written as `host` in `servers`.
    pub fn new(tls: &UpstreamTls, config: &ClientTls, host: &str) -> Secure {
        let name = tls
            .server_name
            .as_deref()
            .unwrap_or(host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        Secure {
            connector: config.clone().map(TlsConnector::from),
            name: ServerName::try_from(name.to_string()).map_err(|_| {
                format!(
                    "{name:?} is not a name a certificate can be verified for; set tls.server_name"
                )
            }),
        }
    }

    /// The TLS handshake on a connected socket.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let refused =
            |message: &String| io::Error::new(io::ErrorKind::InvalidInput, message.clone());
        let connector = self.connector.as_ref().map_err(refused)?;
        let name = self.name.as_ref().map_err(refused)?;
        connector.connect(name.clone(), tcp).await
    }
}

/// The client settings for an upstream's `tls`.
pub fn client_config(tls: &UpstreamTls) -> ClientTls {
    let roots = if tls.roots.is_empty() {
        system_roots()
    } else {
        let mut store = rustls::RootCertStore::empty();
        // Validation checked each certificate.
        let _ = store.add_parsable_certificates(tls.roots.iter().cloned());
        Arc::new(store)
    };
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's trust anchors, read once per process.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's CA certificates");
            }
            let mut store = rustls::RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "no usable system CA certificate: TLS to upstreams without `ca` will fail"
                );
            }
            Arc::new(store)
        })
        .clone()
}
