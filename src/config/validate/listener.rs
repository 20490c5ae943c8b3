//! `[[listener]]`: addresses that do not overlap, their TLS material
//! (checked in [`super::tls`]) and whether they offer HTTP/2.

use super::Checker;
use crate::config::ListenerConfig;
use crate::config::doc::Table;
use std::net::SocketAddr;
use std::ops::Range;
use toml::Spanned;

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
        let mut http01 = Vec::new();
        for table in tables {
            let bind = table.string("bind", "an address such as \"0.0.0.0:8080\"");
            let tls = table.one_or_more_tables("tls");
            let http2 = table.boolean("http2");
            let proxy_protocol = table
                .boolean("proxy_protocol")
                .is_some_and(|b| *b.get_ref());
            let max_connections_per_ip = self.count(
                table,
                "max_connections_per_ip",
                "connections per client address",
            );
            table.misplaced(
                "acme",
                "acme belongs inside tls, which it makes a TLS listener: \
                 tls = { acme = { domains = [\"…\"], cache = \"…\" } }",
            );
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
            let wants_http2 = self.http2(http2.as_ref(), tls.is_some());
            let tls = tls.as_ref().and_then(|tls| {
                let checked = self.tls(tls);
                http01.extend(checked.http01);
                checked.config
            });
            listeners.push(ListenerConfig {
                bind: addr,
                http2: wants_http2 && tls.is_some(),
                tls,
                bind_at: Some(self.position(bind.span().start)),
                proxy_protocol,
                max_connections_per_ip,
            });
        }
        let has_plain = tables.iter().any(|t| !t.has("tls"));
        if !has_plain {
            for span in http01 {
                self.error(
                    span,
                    "the http-01 challenge is answered on a plain listener (port 80 for a \
                     public CA), and this file has none: add one, or use \"tls-alpn-01\"",
                );
            }
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

    /// `http2`: default on for TLS listeners. A plain listener speaks
    /// HTTP/1.1 only (HTTP/2 is chosen by ALPN, which needs TLS), so asking
    /// for it there is an error rather than a silent no-op.
    fn http2(&self, http2: Option<&Spanned<bool>>, tls: bool) -> bool {
        match http2 {
            Some(value) if *value.get_ref() && !tls => {
                self.error_at(
                    value,
                    "http2 = true needs `tls` on this listener: HTTP/2 is offered by ALPN \
                     during the TLS handshake, and plain listeners speak HTTP/1.1 only",
                );
                false
            }
            Some(value) => *value.get_ref(),
            None => tls,
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
