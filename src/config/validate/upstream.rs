//! `[upstream.NAME]`: servers and timeouts.

use super::Checker;
use crate::config::doc::Table;
use crate::config::{ServerAddr, UpstreamConfig, defaults};
use std::collections::BTreeMap;
use std::ops::Range;

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
        })
    }
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
}
