//! `[[listener]]`: addresses that do not overlap, and their TLS material.

use super::Checker;
use crate::config::doc::Table;
use crate::config::{ListenerConfig, TlsConfig};
use std::net::SocketAddr;
use std::ops::Range;

impl Checker<'_> {
    pub(super) fn listeners(
        &self,
        tables: &[Table],
        admin: Option<&(SocketAddr, Range<usize>)>,
    ) -> Vec<ListenerConfig> {
        if tables.is_empty() {
            self.error_unplaced("no [[listener]]: add one, e.g. bind = \"0.0.0.0:8080\"");
        }
        let mut bound: Vec<(SocketAddr, Range<usize>)> = Vec::new();
        let mut listeners = Vec::new();
        for table in tables {
            let bind = table.string("bind", "an address such as \"0.0.0.0:8080\"");
            let tls = table.table("tls");
            let Some(bind) = bind else {
                if !table.has("bind") {
                    self.error(
                        table.span(),
                        "this listener needs `bind = \"IP:port\"`, e.g. bind = \"0.0.0.0:8080\"",
                    );
                }
                continue;
            };
            let addr = match bind.get_ref().parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.error_at(
                        &bind,
                        format!(
                            "bind address {:?} is not IP:port (for example \"0.0.0.0:8080\")",
                            bind.get_ref()
                        ),
                    );
                    continue;
                }
            };
            if let Some((other, span)) = bound.iter().find(|(other, _)| overlaps(*other, addr)) {
                let message = if *other == addr {
                    format!(
                        "two listeners on {addr}: the other is at {}",
                        self.describe(span)
                    )
                } else {
                    format!(
                        "{addr} overlaps the listener on {other} at {}",
                        self.describe(span)
                    )
                };
                self.error_at(&bind, message);
            }
            bound.push((addr, bind.span()));
            let tls = tls.as_ref().and_then(|tls| self.tls(tls));
            listeners.push(ListenerConfig {
                bind: addr,
                tls,
                bind_at: Some(self.position(bind.span().start)),
            });
        }
        if let Some((admin, span)) = admin
            && let Some((other, at)) = bound.iter().find(|(other, _)| overlaps(*other, *admin))
        {
            let message = format!(
                "admin address {admin} shares a port with the listener on {other} at {}; \
                     the admin endpoint must have a port of its own",
                self.describe(at)
            );
            self.error(span.clone(), message);
        }
        listeners
    }

    fn tls(&self, table: &Table) -> Option<TlsConfig> {
        let cert = table.string("cert", "the path of a PEM certificate chain");
        let key = table.string("key", "the path of a PEM private key");
        let mut found = true;
        for (value, what, name) in [(&cert, "certificate", "cert"), (&key, "key", "key")] {
            match value {
                Some(value) => {
                    let path = self.path(value.get_ref());
                    if !path.is_file() {
                        self.error_at(value, format!("{what} file {} not found", path.display()));
                        found = false;
                    }
                }
                None => {
                    if !table.has(name) {
                        self.error(table.span(), format!("tls needs `{name} = \"FILE\"`"));
                    }
                    found = false;
                }
            }
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            return None;
        };
        if !found {
            return None;
        }
        let (cert_path, key_path) = (self.path(cert.get_ref()), self.path(key.get_ref()));
        match crate::tls::server_config(&cert_path, &key_path) {
            Ok(server_config) => Some(TlsConfig {
                cert: cert_path,
                key: key_path,
                server_config,
            }),
            Err(e) => {
                self.error(table.span(), e.to_string());
                None
            }
        }
    }
}

/// Whether two listen addresses would fight over one port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 || a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_overlap() {
        let a: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let z: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(overlaps(a, b));
        assert!(overlaps(b, b));
        assert!(!overlaps(b, c));
        assert!(!overlaps(z, z));
    }
}
