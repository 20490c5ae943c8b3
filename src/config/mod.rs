//! The route file: what an operator writes, checked into a [`Config`].
//!
//! Loading reads the TOML text once, keeping the position of every key and
//! value (`doc`), then checks it (`validate`): types, unknown keys,
//! addresses, durations and sizes (`units`), files, cross-references. It
//! collects *every* problem it finds, each with the `FILE:LINE:COL` it comes
//! from; only a TOML syntax error stops the reading at itself. Only a file
//! with no problem at all becomes a [`Config`]: there is no half-valid state.

mod doc;
pub mod fleet;
mod host;
pub mod units;
mod validate;

pub use fleet::{Balance, HashKey, HealthCheck, UpstreamTls};
pub use host::HostPattern;

use crate::header_rules::HeaderRules;
use crate::redirect::Template;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A fully checked route file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from.
    pub path: PathBuf,
    pub server: ServerSettings,
    pub listeners: Vec<ListenerConfig>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    /// Routes in file order.
    pub routes: Vec<Arc<RouteConfig>>,
    /// Where `[server] admin` is written, for messages about its port.
    pub admin_at: Option<Position>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub admin: Option<SocketAddr>,
    /// How long open connections may drain on stop.
    pub shutdown_timeout: Duration,
    /// How long, after SIGTERM, the proxy keeps accepting while `/readyz`
    /// already answers 503, so load balancers stop sending first.
    pub shutdown_delay: Duration,
    pub log_format: LogFormat,
    pub client_header_timeout: Duration,
    /// Worker threads serving traffic (one per core by default).
    pub workers: usize,
    /// Open client connections the process accepts at most; `0` = no cap.
    /// Beyond it, new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Where access events go.
    pub access_log: AccessLog,
    /// The longest a request body may stall between two reads.
    pub client_body_timeout: Duration,
    /// The longest a write to a client may stay blocked (a client that
    /// does not read).
    pub send_timeout: Duration,
    /// Over how long a drain spreads its goodbyes (Close 1001) to tunnels.
    pub shutdown_spread: Duration,
    /// Reload the route file when it changes on disk (`watch`).
    pub watch: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            admin: None,
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            log_format: LogFormat::Text,
            client_header_timeout: Duration::from_secs(10),
            workers: crate::workers::default_count(),
            max_connections: 0,
            access_log: AccessLog::Stderr,
            client_body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            shutdown_spread: defaults::shutdown_spread(Duration::from_secs(30)),
            watch: false,
        }
    }
}

/// `access_log`: where access events go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// With the other log lines, on stderr.
    #[default]
    Stderr,
    /// Nowhere: routine access events are not even formatted.
    Off,
    /// A file of its own, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// TLS listeners: ALPN offers `h2` before `http/1.1` (the `http2` key;
    /// always `false` on a plain listener).
    pub http2: bool,
    /// Where its `bind` is written, for messages about its port.
    pub bind_at: Option<Position>,
    /// Each connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Open connections one client address may have; `0` = no cap.
    pub max_connections_per_ip: usize,
}

impl ListenerConfig {
    /// `http` or `https`: what `X-Forwarded-Proto` says for this listener.
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

/// What identifies a listener across reloads: its `bind` as written, and
/// which one it is among listeners with that same `bind` (only port-0
/// listeners may share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub bind: SocketAddr,
    pub nth: usize,
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bind)
    }
}

/// Whether a listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener's certificates: one or more sources, the first the default
/// (see [`crate::certs`]). File pairs are already loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub sources: Vec<crate::certs::Source>,
}

impl TlsConfig {
    /// How a reload report compares two listeners' certificates.
    pub fn describe(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.describe()).collect()
    }
}

/// One `[upstream.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub balance: Balance,
    /// Active health checks; `None`: passive only.
    pub health: Option<HealthCheck>,
    /// Upgrade handshakes in flight per server; 0 = no limit.
    pub max_handshakes: usize,
    /// How long a handshake may wait for its turn before a `503`.
    pub queue_timeout: Duration,
    /// TLS to the servers; `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// How often host names in `servers` are resolved again.
    pub resolve_interval: Duration,
    /// Tunnels per second moved off the busiest servers; 0 = never.
    pub rebalance_rate: u32,
}

/// One upstream server, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// `host:port` as an URI authority, ready to put in a request.
    pub authority: http::uri::Authority,
}

impl ServerAddr {
    /// The host as written, without brackets around an IPv6 address.
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }

    /// The address, when the host is an IP literal (no DNS needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host()
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port()))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub host: Option<HostPattern>,
    /// The path prefix, always starting with `/`.
    pub path: String,
    /// Only requests that arrived over this scheme (`None`: any).
    pub scheme: Option<Scheme>,
    pub target: RouteTarget,
    /// `response_headers`: set or removed on every response of the route.
    pub response_headers: HeaderRules,
    /// `compress`: compress compressible responses the client accepts.
    pub compress: bool,
}

impl RouteConfig {
    /// A short name for logs and metric labels: `host` + `path`, with
    /// `scheme://` in front for a route narrowed to one scheme (`*` for any
    /// host): `/`, `chat.example.com/`, `http://*/`.
    pub fn name(&self) -> String {
        match (&self.scheme, &self.host) {
            (None, Some(host)) => format!("{host}{}", self.path),
            (None, None) => self.path.clone(),
            (Some(scheme), Some(host)) => format!("{scheme}://{host}{}", self.path),
            (Some(scheme), None) => format!("{scheme}://*{}", self.path),
        }
    }
}

/// What a route does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    /// Forward to an upstream (WebSocket upgrades included).
    Proxy(ProxyRoute),
    /// Serve files from a folder.
    Static(StaticRoute),
    /// Answer every request with a redirect.
    Redirect(RedirectRoute),
}

/// `redirect = "…"` with its `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectRoute {
    pub to: Template,
    pub status: http::StatusCode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRoute {
    pub upstream: String,
    /// An upgraded connection silent both ways this long is closed.
    pub idle_timeout: Duration,
    pub allow_origins: OriginPolicy,
    /// A tunnel side silent this long is sent a Ping; zero: never.
    pub ping_interval: Duration,
    /// No frame back within this of the Ping: that side is dead.
    pub ping_timeout: Duration,
    /// The largest message a client may send (sum of its frames' payloads).
    pub max_message_size: u64,
    /// A tunnel older than this (±10 %) is closed; zero: never.
    pub max_lifetime: Duration,
    /// `request_headers`: set or removed on requests sent upstream, after
    /// the forwarding headers.
    pub request_headers: HeaderRules,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticRoute {
    /// nginx `root`: the file served is `root` + request path.
    pub root: PathBuf,
}

/// Which `Origin` values may open a WebSocket through a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    Any,
    /// Exact origins (`scheme://host[:port]`), compared case-insensitively.
    Only(Vec<String>),
}

impl OriginPolicy {
    /// Whether a request carrying `origin` (or none) may pass.
    ///
    /// Requests without an `Origin` header come from non-browser clients and
    /// pass: the check defends browsers against cross-site WebSocket hijacking.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (OriginPolicy::Any, _) | (OriginPolicy::Only(_), None) => true,
            (OriginPolicy::Only(list), Some(origin)) => list
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Defaults for keys an operator may leave out.
pub mod defaults {
    use std::time::Duration;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const PING_INTERVAL: Duration = Duration::from_secs(30);
    pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_MESSAGE_SIZE: u64 = 16 << 20;
    pub const MAX_LIFETIME: Duration = Duration::ZERO;

    /// `shutdown_spread` when not set: the smaller of 10 s and half of
    /// `shutdown_timeout`.
    pub fn shutdown_spread(shutdown_timeout: Duration) -> Duration {
        Duration::from_secs(10).min(shutdown_timeout / 2)
    }

    /// `status` of a redirect route.
    pub const REDIRECT_STATUS: http::StatusCode = http::StatusCode::PERMANENT_REDIRECT;
}

/// A line and column in the route file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (columns count characters).
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position { line, column }
    }
}

/// One problem in a route file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => {
                write!(
                    f,
                    "{}:{line}:{column}: {}",
                    self.file.display(),
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in a route file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read and check the route file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: None,
                message: format!("cannot read the route file: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Check `text` as if it were the content of `path` (relative paths in
    /// it resolve against `path`'s folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        validate::parse(path, text)
    }

    /// Every listener with its key.
    pub fn listener_keys(&self) -> impl Iterator<Item = (ListenerKey, &ListenerConfig)> {
        self.listeners.iter().enumerate().map(|(i, listener)| {
            let nth = self.listeners[..i]
                .iter()
                .filter(|l| l.bind == listener.bind)
                .count();
            (
                ListenerKey {
                    bind: listener.bind,
                    nth,
                },
                listener,
            )
        })
    }

    /// The listener with `key`, if this configuration has it.
    pub fn listener(&self, key: ListenerKey) -> Option<&ListenerConfig> {
        self.listener_keys()
            .find(|(k, _)| *k == key)
            .map(|(_, listener)| listener)
    }
}
