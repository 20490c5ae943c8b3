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
