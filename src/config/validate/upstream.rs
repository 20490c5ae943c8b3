//! `[upstream.NAME]`: servers, timeouts, and the fleet keys: `balance`
//! and `hash_key`, `health`, `max_handshakes` and `queue_timeout`, `tls`,
//! `resolve_interval`, `rebalance_rate`.

use super::Checker;
use crate::config::doc::Table;
use crate::config::fleet::{self, Balance, HashKey, HealthCheck, UpstreamTls};
use crate::config::{ServerAddr, UpstreamConfig, defaults};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

/// The most handshakes in flight per server a file may ask for.
const MAX_HANDSHAKES: i64 = 100_000;
/// The fastest rebalancing a file may ask for, tunnels per second.
const MAX_REBALANCE_RATE: i64 = 10_000;
/// The most checks in a row `fall` and `rise` may count.
const MAX_FALL_RISE: i64 = 1_000;

/// Each upstream by name, with the span of its table.
pub(super) type Upstreams = BTreeMap<String, (UpstreamConfig, Range<usize>)>;

impl Checker<'_> {
    pub(super) fn upstreams(&self, table: Option<&Table>) -> Upstreams {
        let mut upstreams = BTreeMap::new();
        let Some(table) = table else {
            return upstreams;
        };
        for entry in table.entries() {
            let name = entry.key.get_ref().clone();
            let Some(upstream) = entry.table() else {
                continue;
            };
            if let Some(config) = self.upstream(&name, &upstream) {
                upstreams.insert(name, (config, upstream.span()));
            }
        }
        upstreams
    }

    fn upstream(&self, name: &str, table: &Table) -> Option<UpstreamConfig> {
        let listed = table.strings("servers", "a server as \"host:port\"");
        let connect_timeout =
            self.positive_duration(table, "connect_timeout", defaults::CONNECT_TIMEOUT);
        let read_timeout = self.positive_duration(table, "read_timeout", defaults::READ_TIMEOUT);
        let balance = table.string("balance", "\"least-tunnels\", \"round-robin\" or \"hash\"");
        let hash_key = table.string(
            "hash_key",
            "\"cookie:NAME\", \"header:NAME\" or \"client-ip\"",
        );
        let health = table.table("health");
        let max_handshakes = self.bounded(
            table,
            "max_handshakes",
            "handshakes in flight per server (0 = no limit)",
            MAX_HANDSHAKES,
        );
        let queue_timeout =
            self.positive_duration(table, "queue_timeout", fleet::defaults::QUEUE_TIMEOUT);
        let tls = table.table("tls");
        let resolve_interval =
            self.positive_duration(table, "resolve_interval", fleet::defaults::RESOLVE_INTERVAL);
        let rebalance_rate = self.bounded(
            table,
            "rebalance_rate",
            "tunnels per second (0 = never)",
            MAX_REBALANCE_RATE,
        );
        let balance = self.balance(balance, hash_key, rebalance_rate.as_ref());
        let health = health.as_ref().and_then(|h| self.health(h));
        let tls = tls.as_ref().and_then(|t| self.upstream_tls(t));
        let mut servers: Vec<ServerAddr> = Vec::new();
        match &listed {
            None if !table.has("servers") => self.error(
                table.span(),
                format!("upstream {name:?} needs `servers = [\"host:port\", …]`"),
            ),
            None => {}
            Some(list) if list.get_ref().is_empty() => {
                self.error_at(list, format!("upstream {name:?} has no servers"));
            }
            Some(list) => {
                for server in list.get_ref() {
                    match parse_server(server.get_ref()) {
                        Ok(addr) if servers.contains(&addr) => {
                            self.error_at(server, format!("server {addr} is listed twice"));
                        }
                        Ok(addr) => servers.push(addr),
                        Err(message) => self.error_at(server, message),
                    }
                }
            }
        }
        Some(UpstreamConfig {
            name: name.to_string(),
            servers,
            connect_timeout,
            read_timeout,
            balance,
            health,
            max_handshakes: max_handshakes.map_or(0, |n| *n.get_ref() as usize),
            queue_timeout,
            tls,
            resolve_interval,
            rebalance_rate: rebalance_rate.map_or(0, |n| *n.get_ref() as u32),
        })
    }

    /// A whole number from 0 to `max`.
    fn bounded(&self, table: &Table, key: &str, what: &str, max: i64) -> Option<Spanned<i64>> {
        let value = table.integer(key, &format!("a whole number of {what}"))?;
        if !(0..=max).contains(value.get_ref()) {
            self.error_at(
                &value,
                format!("{key} must be from 0 to {max}, not {}", value.get_ref()),
            );
            return None;
        }
        Some(value)
    }

    fn balance(
        &self,
        balance: Option<Spanned<String>>,
        hash_key: Option<Spanned<String>>,
        rebalance_rate: Option<&Spanned<i64>>,
    ) -> Balance {
        let key = hash_key.as_ref().and_then(|key| {
            parse_hash_key(key.get_ref())
                .map_err(|message| self.error_at(key, message))
                .ok()
        });
        let Some(balance) = balance else {
            if let Some(key) = &hash_key {
                self.error_at(key, "hash_key needs balance = \"hash\"");
            }
            return Balance::LeastTunnels;
        };
        match balance.get_ref().as_str() {
            "least-tunnels" | "round-robin" => {
                if let Some(key) = &hash_key {
                    self.error_at(
                        key,
                        format!(
                            "hash_key applies only to balance = \"hash\", not {:?}",
                            balance.get_ref()
                        ),
                    );
                }
                if balance.get_ref() == "round-robin" {
                    Balance::RoundRobin
                } else {
                    Balance::LeastTunnels
                }
            }
            "hash" => {
                if let Some(rate) = rebalance_rate.filter(|r| *r.get_ref() > 0) {
                    self.error_at(
                        rate,
                        "rebalance_rate does not work with balance = \"hash\": a moved client \
                         hashes to the same server again",
                    );
                }
                match key {
                    Some(key) => Balance::Hash(key),
                    None => {
                        if hash_key.is_none() {
                            self.error_at(
                                &balance,
                                "balance = \"hash\" needs hash_key = \"cookie:NAME\", \
                                 \"header:NAME\" or \"client-ip\"",
                            );
                        }
                        Balance::LeastTunnels
                    }
                }
            }
            other => {
                if let Some(key) = &hash_key {
                    self.error_at(
                        key,
                        format!("hash_key applies only to balance = \"hash\", not {other:?}"),
                    );
                }
                self.error_at(
                    &balance,
                    format!(
                        "balance {other:?} is not one of \"least-tunnels\", \"round-robin\", \"hash\""
                    ),
                );
                Balance::LeastTunnels
            }
        }
    }

    fn health(&self, table: &Table) -> Option<HealthCheck> {
        use fleet::defaults as d;
        let path = table.string("path", "a path such as \"/healthz\"");
        let interval = self.duration_spanned(table, "interval");
        let timeout = self.duration_spanned(table, "timeout");
        let fall = table.integer("fall", "a whole number of failed checks");
        let rise = table.integer("rise", "a whole number of passed checks");
        let mut ok = true;
        if let Some(path) = &path
            && (!path.get_ref().starts_with('/')
                || path.get_ref().contains('#')
                || path.get_ref().parse::<http::uri::PathAndQuery>().is_err())
        {
            self.error_at(
                path,
                format!(
                    "health path {:?} must be a path such as \"/healthz\"",
                    path.get_ref()
                ),
            );
            ok = false;
        }
        for (value, key) in [(&interval, "interval"), (&timeout, "timeout")] {
            if let Some(value) = value
                && value.get_ref().is_zero()
            {
                self.error_at(value, format!("health {key} must be longer than zero"));
                ok = false;
            }
        }
        if let (Some(interval), Some(timeout)) = (&interval, &timeout)
            && timeout.get_ref() > interval.get_ref()
        {
            self.error_at(
                timeout,
                format!(
                    "health timeout ({:?}) must not be longer than its interval ({:?})",
                    timeout.get_ref(),
                    interval.get_ref()
                ),
            );
            ok = false;
        }
        let mut count = |value: Option<Spanned<i64>>, key: &str, default: u32| match value {
            Some(n) if (1..=MAX_FALL_RISE).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.error_at(
                    &n,
                    format!(
                        "health {key} must be from 1 to {MAX_FALL_RISE}, not {}",
                        n.get_ref()
                    ),
                );
                ok = false;
                default
            }
            None => default,
        };
        let fall = count(fall, "fall", d::HEALTH_FALL);
        let rise = count(rise, "rise", d::HEALTH_RISE);
        let interval = interval.map_or(d::HEALTH_INTERVAL, Spanned::into_inner);
        let timeout = timeout.map_or(d::HEALTH_TIMEOUT.min(interval), Spanned::into_inner);
        ok.then(|| HealthCheck {
            path: path.map_or_else(|| d::HEALTH_PATH.to_string(), Spanned::into_inner),
            interval,
            timeout,
            fall,
            rise,
        })
    }

    fn upstream_tls(&self, table: &Table) -> Option<UpstreamTls> {
        let ca = table.string("ca", "the path of a PEM file of CA certificates");
        let server_name = table.string("server_name", "a host name such as \"chat.internal\"");
        let mut ok = true;
        if let Some(name) = &server_name
            && rustls::pki_types::ServerName::try_from(name.get_ref().as_str()).is_err()
        {
            self.error_at(
                name,
                format!(
                    "server_name {:?} is not a host name or IP address",
                    name.get_ref()
                ),
            );
            ok = false;
        }
        let mut roots = Vec::new();
        let ca_path = ca.as_ref().map(|ca| self.path(ca.get_ref()));
        if let (Some(ca), Some(path)) = (&ca, &ca_path) {
            match read_roots(path) {
                Ok(certs) => roots = certs,
                Err(message) => {
                    self.error_at(ca, message);
                    ok = false;
                }
            }
        }
        ok.then(|| UpstreamTls {
            ca: ca_path,
            server_name: server_name.map(Spanned::into_inner),
            roots,
        })
    }
}

/// `cookie:NAME`, `header:NAME` or `client-ip`.
fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let hint =
        || format!("hash_key {text:?} is not \"cookie:NAME\", \"header:NAME\" or \"client-ip\"");
    if text == "client-ip" {
        return Ok(HashKey::ClientIp);
    }
    let (kind, name) = text.split_once(':').ok_or_else(hint)?;
    let name = name.trim();
    match kind.trim() {
        "cookie"
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
        {
            Ok(HashKey::Cookie(name.to_string()))
        }
        "header" => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("hash_key {text:?}: {name:?} is not a header name")),
        "cookie" => Err(format!("hash_key {text:?}: {name:?} is not a cookie name")),
        _ => Err(hint()),
    }
}

/// The CA certificates of a PEM file, each one checked to be usable as a
/// trust anchor.
fn read_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if !path.is_file() {
        return Err(format!("CA file {} not found", path.display()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no certificate found in CA file {} (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("CA file {}: unusable certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

/// `host:port` for an upstream server.
fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let hint = || format!("server {text:?} is not host:port (for example \"127.0.0.1:3000\")");
    let authority: http::uri::Authority = text.parse().map_err(|_| hint())?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(hint());
    }
    match authority.port_u16() {
        Some(0) | None => Err(hint()),
        Some(_) => Ok(ServerAddr { authority }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_host_and_port() {
        assert!(parse_server("127.0.0.1:3000").is_ok());
        assert!(parse_server("chat.internal:80").is_ok());
        assert!(parse_server("[::1]:3000").is_ok());
        assert!(parse_server("127.0.0.1").is_err());
        assert!(parse_server("127.0.0.1:0").is_err());
        assert!(parse_server("user@host:80").is_err());
        assert!(parse_server("http://host:80").is_err());
    }

    #[test]
    fn hash_keys() {
        assert_eq!(parse_hash_key("client-ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            parse_hash_key("cookie:name"),
            Ok(HashKey::Cookie("name".into()))
        );
        assert_eq!(
            parse_hash_key("header:X-User"),
            Ok(HashKey::Header(http::HeaderName::from_static("x-user")))
        );
        assert!(parse_hash_key("cookie:").is_err());
        assert!(parse_hash_key("cookie:a=b").is_err());
        assert!(parse_hash_key("header:bad header").is_err());
        assert!(parse_hash_key("ip").is_err());
        assert!(parse_hash_key("query:x").is_err());
    }
}
