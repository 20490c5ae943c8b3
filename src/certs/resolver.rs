//! The rustls certificate resolver of a TLS listener: the ACME challenge
//! certificate for a client offering only `acme-tls/1`, else the slot whose
//! names match the SNI (exact, then wildcard), else the first slot that has
//! a certificate. Runs in every handshake: it only reads atomically swapped
//! pointers.

use super::Slot;
use super::acme::challenge::Challenges;
use super::sni;
use crate::tls::ACME_TLS_ALPN;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct Resolver {
    slots: Vec<Arc<Slot>>,
    challenges: Arc<Challenges>,
}

impl Resolver {
    pub fn new(slots: Vec<Arc<Slot>>, challenges: Arc<Challenges>) -> Resolver {
        Resolver { slots, challenges }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(mut protocols) = hello.alpn()
            && protocols.any(|p| p == ACME_TLS_ALPN)
        {
            // RFC 8737 section 3: the validation handshake offers only
            // acme-tls/1 and must get the challenge certificate.
            return self.challenges.tls_alpn(hello.server_name()?);
        }
        if let [only] = self.slots.as_slice() {
            return only.current().map(|m| m.key.clone());
        }
        let current: Vec<_> = self.slots.iter().map(|s| s.current()).collect();
        let chosen = hello
            .server_name()
            .and_then(|name| {
                sni::pick(
                    name,
                    current
                        .iter()
                        .map(|m| m.as_ref().map_or(&[][..], |m| m.names.as_slice())),
                )
            })
            .or_else(|| current.iter().position(Option::is_some))?;
        current[chosen].as_ref().map(|m| m.key.clone())
    }
}
