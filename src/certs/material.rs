//! A certificate ready to serve: the chain and key as rustls holds them,
//! and what the certificate itself says (the names it is for, when it
//! expires). Loading checks that the key belongs to the certificate.

use crate::tls::{self, TlsError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One certificate chain with its key, checked and parsed.
#[derive(Debug)]
pub struct Material {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf certificate (subjectAltName, else the
    /// common name), lower-case, as written (`*.example.com` included).
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The PEM text it was read from (chain, then key), to tell a changed
    /// file from a touched one.
    pub pem: Vec<u8>,
}

impl Material {
    /// Read a PEM chain and a PEM key from files.
    pub fn load(cert: &Path, key: &Path) -> Result<Material, TlsError> {
        let (chain, private_key, pem) = tls::read_pem_pair(cert, key)?;
        Material::from_der(chain, private_key, pem).map_err(|source| TlsError::Rejected {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })
    }

    /// A chain and key in PEM text, as an ACME server hands them over (the
    /// chain) and as the cache keeps them.
    pub fn from_pem(chain: &str, key: &str) -> Result<Material, rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        let bad = |what: &str| rustls::Error::General(format!("cannot read the {what} PEM"));
        let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("certificate"))?;
        let private_key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| bad("key"))?;
        let mut pem = chain.as_bytes().to_vec();
        pem.extend_from_slice(key.as_bytes());
        Material::from_der(certs, private_key, pem)
    }

    /// A chain and key already decoded.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        pem: Vec<u8>,
    ) -> Result<Material, rustls::Error> {
        let leaf = chain
            .first()
            .ok_or(rustls::Error::NoCertificatesPresented)?
            .clone();
        let certified = tls::certified_key(chain, key)?;
        let facts = describe(&leaf)?;
        Ok(Material {
            key: Arc::new(certified),
            names: facts.names,
            not_before: facts.not_before,
            not_after: facts.not_after,
            pem,
        })
    }

    /// The name metrics and logs call this certificate by: its first name.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }

    /// How long the certificate is valid in all.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Whether the certificate names every one of `domains`.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains
            .iter()
            .all(|d| self.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    }
}

/// What a leaf certificate says about itself.
pub struct Facts {
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Read the names and validity of a DER certificate.
pub fn describe(der: &CertificateDer<'_>) -> Result<Facts, rustls::Error> {
    use x509_parser::prelude::*;
    let bad = |e: String| rustls::Error::General(format!("cannot parse the certificate: {e}"));
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let time = |t: &ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(Facts {
        names,
        not_before: time(&cert.validity().not_before),
        not_after: time(&cert.validity().not_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn names_and_validity_are_read() {
        let (cert, key) = self_signed(&["Chat.Example.com", "*.example.com"]);
        let material = Material::from_pem(&cert, &key).unwrap();
        assert_eq!(material.names, ["chat.example.com", "*.example.com"]);
        assert_eq!(material.label(), "chat.example.com");
        assert!(material.not_after > SystemTime::now());
        assert!(material.lifetime() > Duration::from_secs(86400));
        assert!(material.covers(&["chat.example.com".to_string()]));
        assert!(!material.covers(&["other.example.com".to_string()]));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["b.example"]);
        let error = Material::from_pem(&cert, &other_key).unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)
            ),
            "{error:?}"
        );
    }
}
