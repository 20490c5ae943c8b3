//! The checked form of an upstream's fleet keys: how servers are chosen
//! (`balance`, `hash_key`), active health checks (`health`) and TLS to the
//! servers (`tls`). Checked by `validate::upstream`.

use rustls::pki_types::CertificateDer;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `balance`: how a request or tunnel picks a server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// New tunnels to the server with the fewest open tunnels (ties
    /// round-robin); plain requests round-robin.
    #[default]
    LeastTunnels,
    RoundRobin,
    /// Consistent (rendezvous) hashing of the key; requests without the key
    /// fall back to least-tunnels.
    Hash(HashKey),
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::LeastTunnels => f.write_str("least-tunnels"),
            Balance::RoundRobin => f.write_str("round-robin"),
            Balance::Hash(key) => write!(f, "hash on {key}"),
        }
    }
}

/// `hash_key`: what a request is hashed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this request header (all of its lines, in order).
    Header(http::HeaderName),
    /// The client's IP address.
    ClientIp,
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::ClientIp => f.write_str("client-ip"),
        }
    }
}

/// `health = { path, interval, timeout, fall, rise }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path and query of the `GET`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed checks in a row that mark a server down.
    pub fall: u32,
    /// Passed checks in a row that bring it back.
    pub rise: u32,
}

/// `tls = { ca, server_name }`: the proxy speaks TLS to every server.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The CA file, when not the system's roots.
    pub ca: Option<PathBuf>,
    /// The name to verify; `None`: the host of each server.
    pub server_name: Option<String>,
    /// The certificates of `ca` as they were read (a reload that finds the
    /// file changed is a change); empty with the system's roots.
    pub roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Defaults of the fleet keys.
pub mod defaults {
    use std::time::Duration;
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
    pub const HEALTH_PATH: &str = "/";
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
    pub const HEALTH_FALL: u32 = 3;
    pub const HEALTH_RISE: u32 = 2;
}

impl super::UpstreamConfig {
    /// One line for `switchyard validate`: servers, balance, and the fleet
    /// keys that are set.
    pub fn describe(&self) -> String {
        let servers: Vec<String> = self.servers.iter().map(ToString::to_string).collect();
        let mut line = format!(
            "upstream {}: {} over {} ({})",
            self.name,
            self.balance,
            count(self.servers.len(), "server"),
            servers.join(", ")
        );
        if let Some(health) = &self.health {
            line.push_str(&format!(
                "; health GET {} every {:?} (down after {} failed, up after {} passed)",
                health.path, health.interval, health.fall, health.rise
            ));
        }
        if self.max_handshakes > 0 {
            line.push_str(&format!(
                "; at most {} handshakes per server, queued up to {:?}",
                self.max_handshakes, self.queue_timeout
            ));
        }
        if let Some(tls) = &self.tls {
            let roots = tls.ca.as_ref().map_or_else(
                || "the system's CAs".to_string(),
                |ca| ca.display().to_string(),
            );
            line.push_str(&format!("; TLS verified against {roots}"));
            if let Some(name) = &tls.server_name {
                line.push_str(&format!(" for {name}"));
            }
        }
        if self.servers.iter().any(|s| s.literal().is_none()) {
            line.push_str(&format!(
                "; host names resolved every {:?}",
                self.resolve_interval
            ));
        }
        if self.rebalance_rate > 0 {
            line.push_str(&format!("; rebalancing {} tunnels/s", self.rebalance_rate));
        }
        line
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
