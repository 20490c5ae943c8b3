//! The HTTPS client the ACME protocol runs over: hyper's client with
//! rustls (ring), trusting the public web's roots and, for a private ACME
//! CA, the `directory_ca` file. Every request has a deadline.

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// The longest one request to the ACME server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

struct Https(Client<Connector, BodyWrapper<Bytes>>);

/// A client for the ACME server, trusting `directory_ca` besides the
/// public roots.
pub fn client(directory_ca: Option<&Path>) -> Result<Box<dyn HttpClient>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = directory_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read directory_ca {}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("directory_ca {}: {e}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Box::new(Https(
        Client::builder(TokioExecutor::new()).build(connector),
    )))
}

impl HttpClient for Https {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let uri = req.uri().clone();
        let response = self.0.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, response).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(Error::Other(format!("{uri}: {}", error_chain(&e)).into())),
                Err(_) => Err(Error::Other(
                    format!("{uri}: no answer within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// An error with its causes, `outer: inner: innermost`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
