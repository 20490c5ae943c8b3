//! Challenge answers while an order is open: TLS-ALPN-01 certificates
//! (RFC 8737), served by the listeners' resolver to a client that offers
//! only ALPN `acme-tls/1`, and HTTP-01 key authorizations (RFC 8555 section
//! 8.3), answered on plain listeners at `/.well-known/acme-challenge/TOKEN`.
//! Each answer is published for the time of its order and withdrawn after.

use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path prefix of HTTP-01 answers.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The answers published now, shared by every listener.
#[derive(Debug, Default)]
pub struct Challenges {
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http01: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// The TLS-ALPN-01 certificate for `name`, if an order awaits it.
    pub fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.tls_alpn.read().unwrap_or_else(|p| p.into_inner());
        map.get(&name.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }

    /// The HTTP-01 key authorization for a request path, if it asks for a
    /// token an order awaits.
    pub fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let map = self.http01.read().unwrap_or_else(|p| p.into_inner());
        map.get(token).cloned()
    }

    /// Whether any HTTP-01 answer is published (a cheap check for every
    /// request on a plain listener).
    pub fn any_http01(&self) -> bool {
        !self
            .http01
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// The answers one order published; withdrawn when dropped.
pub struct Published {
    challenges: Arc<Challenges>,
    names: Vec<String>,
    tokens: Vec<String>,
}

impl Published {
    pub fn new(challenges: Arc<Challenges>) -> Published {
        Published {
            challenges,
            names: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Serve the TLS-ALPN-01 certificate for `name` with the digest of the
    /// key authorization.
    pub fn tls_alpn(&mut self, name: &str, digest: &[u8]) -> Result<(), String> {
        let certified = challenge_certificate(name, digest)?;
        let name = name.to_ascii_lowercase();
        self.challenges
            .tls_alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), Arc::new(certified));
        self.names.push(name);
        Ok(())
    }

    /// Answer `token` with `key_authorization` over HTTP.
    pub fn http01(&mut self, token: &str, key_authorization: &str) {
        self.challenges
            .http01
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
        self.tokens.push(token.to_string());
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let mut certs = self
            .challenges
            .tls_alpn
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for name in &self.names {
            certs.remove(name);
        }
        drop(certs);
        let mut tokens = self
            .challenges
            .http01
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for token in &self.tokens {
            tokens.remove(token);
        }
    }
}

/// A self-signed certificate for `name` carrying the critical
/// `id-pe-acmeIdentifier` extension with `digest` (RFC 8737 section 3).
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(fail)?;
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not through `tls::certified_key`: its check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_as_long_as_their_order() {
        let challenges = Arc::new(Challenges::default());
        {
            let mut published = Published::new(challenges.clone());
            published.tls_alpn("Chat.Example.com", &[7; 32]).unwrap();
            published.http01("tok", "tok.thumb");
            assert!(challenges.tls_alpn("chat.example.com.").is_some());
            assert!(challenges.tls_alpn("other.example.com").is_none());
            assert!(challenges.any_http01());
            assert_eq!(
                challenges
                    .http01("/.well-known/acme-challenge/tok")
                    .as_deref(),
                Some("tok.thumb")
            );
            assert_eq!(challenges.http01("/.well-known/acme-challenge/x"), None);
            assert_eq!(challenges.http01("/tok"), None);
        }
        assert!(challenges.tls_alpn("chat.example.com").is_none());
        assert!(!challenges.any_http01());
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest() {
        let certified = challenge_certificate("chat.example.com", &[9; 32]).unwrap();
        let der = certified.end_entity_cert().unwrap();
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of 32 bytes.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &[9; 32]);
    }
}
