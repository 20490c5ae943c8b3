//! Stage two of loading a route file: meaning.
//!
//! Takes the [`raw`](super::raw) structs and checks everything that types
//! alone cannot: addresses parse, durations carry units, files exist,
//! certificates load, routes name upstreams that exist, no upstream is left
//! unreachable, no two listeners share an address. Every problem is recorded
//! with its position and checking goes on, so an operator sees all of them at
//! once.

use super::raw::{RawFile, RawListener, RawRoute, RawServer, RawTls, RawUpstream};
use super::{
    Config, ConfigError, ConfigErrors, ListenerConfig, LogFormat, OriginPolicy, Position,
    ProxyRoute, RouteConfig, RouteTarget, ServerAddr, ServerSettings, StaticRoute, TlsConfig,
    UpstreamConfig, defaults,
};
use crate::router::HostPattern;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Parse and check `text`, the content of the route file at `path`.
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut checker = Checker {
        file: path.to_path_buf(),
        base: path.parent().unwrap_or(Path::new("")).to_path_buf(),
        text,
        errors: Vec::new(),
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            checker.error(e.span(), e.message().trim_end());
            return Err(checker.finish());
        }
    };
    let server = checker.server(&raw.server);
    let listeners = checker.listeners(&raw.listener, server.admin.as_ref());
    let upstreams = checker.upstreams(&raw.upstream);
    let routes = checker.routes(&raw.route, &upstreams);
    checker.unused_upstreams(&raw.upstream, &raw.route);
    if !checker.errors.is_empty() {
        return Err(checker.finish());
    }
    Ok(Config {
        path: path.to_path_buf(),
        server: server.settings,
        listeners,
        upstreams,
        routes: routes.into_iter().map(Arc::new).collect(),
    })
}

struct Checker<'t> {
    file: PathBuf,
    /// The route file's folder: relative paths start here.
    base: PathBuf,
    text: &'t str,
    errors: Vec<(usize, ConfigError)>,
}

/// `[server]` with the position of `admin`, for the listener overlap check.
struct CheckedServer {
    settings: ServerSettings,
    admin: Option<(SocketAddr, Range<usize>)>,
}

impl Checker<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let offset = span.as_ref().map_or(usize::MAX, |s| s.start);
        self.errors.push((
            offset,
            ConfigError {
                file: self.file.clone(),
                position: span.map(|s| self.position(s.start)),
                message: message.into(),
            },
        ));
    }

    fn error_at<T>(&mut self, value: &Spanned<T>, message: impl Into<String>) {
        self.error(Some(value.span()), message);
    }

    fn position(&self, offset: usize) -> Position {
        Position::of_offset(self.text, offset)
    }

    fn describe(&self, span: &Range<usize>) -> String {
        let Position { line, column } = self.position(span.start);
        format!("{line}:{column}")
    }

    fn finish(mut self) -> ConfigErrors {
        // File order; errors without a position go last.
        self.errors.sort_by_key(|(offset, _)| *offset);
        ConfigErrors(self.errors.into_iter().map(|(_, e)| e).collect())
    }

    fn duration(&mut self, value: Option<&Spanned<String>>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(message) => {
                self.error_at(value, message);
                default
            }
        }
    }

    fn positive_duration(
        &mut self,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(value, default);
        if let Some(value) = value.filter(|_| duration.is_zero()) {
            self.error_at(value, "must be longer than zero");
            return default;
        }
        duration
    }

    fn path(&self, value: &str) -> PathBuf {
        self.base.join(value)
    }

    fn server(&mut self, raw: &RawServer) -> CheckedServer {
        let base = ServerSettings::default();
        let admin =
            raw.admin
                .as_ref()
                .and_then(|admin| match admin.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some((addr, admin.span())),
                    Err(_) => {
                        self.error_at(
                        admin,
                        format!(
                            "admin address {:?} is not IP:port (for example \"127.0.0.1:9901\")",
                            admin.get_ref()
                        ),
                    );
                        None
                    }
                });
        let log_format = match raw.log_format.as_ref() {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.error_at(
                        f,
                        format!("log_format {other:?} is not \"text\" or \"json\""),
                    );
                    LogFormat::Text
                }
            },
        };
        let workers = match &raw.workers {
            None => base.workers,
            Some(n) if (1..=1024).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.error_at(n, "workers must be between 1 and 1024");
                base.workers
            }
        };
        let settings = ServerSettings {
            admin: admin.as_ref().map(|(addr, _)| *addr),
            shutdown_timeout: self.duration(raw.shutdown_timeout.as_ref(), base.shutdown_timeout),
            shutdown_delay: self.duration(raw.shutdown_delay.as_ref(), base.shutdown_delay),
            log_format,
            client_header_timeout: self.positive_duration(
                raw.client_header_timeout.as_ref(),
                base.client_header_timeout,
            ),
            workers,
        };
        CheckedServer { settings, admin }
    }

    fn listeners(
        &mut self,
        raw: &[Spanned<RawListener>],
        admin: Option<&(SocketAddr, Range<usize>)>,
    ) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.error(
                None,
                "no [[listener]]: add one, e.g. bind = \"0.0.0.0:8080\"",
            );
        }
        let mut bound: Vec<(SocketAddr, Range<usize>)> = Vec::new();
        let mut listeners = Vec::new();
        for listener in raw {
            let listener = listener.get_ref();
            let bind = match listener.bind.get_ref().parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.error_at(
                        &listener.bind,
                        format!(
                            "bind address {:?} is not IP:port (for example \"0.0.0.0:8080\")",
                            listener.bind.get_ref()
                        ),
                    );
                    continue;
                }
            };
            if let Some((other, span)) = bound.iter().find(|(other, _)| overlaps(*other, bind)) {
                let message = if *other == bind {
                    format!(
                        "two listeners on {bind}: the other is at {}",
                        self.describe(span)
                    )
                } else {
                    format!(
                        "{bind} overlaps the listener on {other} at {}",
                        self.describe(span)
                    )
                };
                self.error_at(&listener.bind, message);
            }
            bound.push((bind, listener.bind.span()));
            let tls = listener.tls.as_ref().and_then(|tls| self.tls(tls));
            listeners.push(ListenerConfig { bind, tls });
        }
        if let Some((admin, span)) = admin
            && let Some((other, at)) = bound.iter().find(|(other, _)| overlaps(*other, *admin))
        {
            let message = format!(
                "admin address {admin} shares a port with the listener on {other} at {}; \
                     the admin endpoint must have a port of its own",
                self.describe(at)
            );
            self.error(Some(span.clone()), message);
        }
        listeners
    }

    fn tls(&mut self, raw: &Spanned<RawTls>) -> Option<TlsConfig> {
        let RawTls { cert, key } = raw.get_ref();
        let cert_path = self.path(cert.get_ref());
        let key_path = self.path(key.get_ref());
        let mut found = true;
        for (value, path, what) in [(cert, &cert_path, "certificate"), (key, &key_path, "key")] {
            if !path.is_file() {
                self.error_at(value, format!("{what} file {} not found", path.display()));
                found = false;
            }
        }
        if !found {
            return None;
        }
        match crate::tls::server_config(&cert_path, &key_path) {
            Ok(server_config) => Some(TlsConfig {
                cert: cert_path,
                key: key_path,
                server_config,
            }),
            Err(e) => {
                self.error_at(raw, e.to_string());
                None
            }
        }
    }

    fn upstreams(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawUpstream>>,
    ) -> BTreeMap<String, Arc<UpstreamConfig>> {
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in raw {
            let upstream = upstream.get_ref();
            if upstream.servers.get_ref().is_empty() {
                self.error_at(
                    &upstream.servers,
                    format!("upstream {name:?} has no servers"),
                );
            }
            let mut servers: Vec<ServerAddr> = Vec::new();
            for server in upstream.servers.get_ref() {
                match parse_server(server.get_ref()) {
                    Ok(addr) if servers.contains(&addr) => {
                        self.error_at(server, format!("server {addr} is listed twice"));
                    }
                    Ok(addr) => servers.push(addr),
                    Err(message) => self.error_at(server, message),
                }
            }
            let config = UpstreamConfig {
                name: name.clone(),
                servers,
                connect_timeout: self.positive_duration(
                    upstream.connect_timeout.as_ref(),
                    defaults::CONNECT_TIMEOUT,
                ),
                read_timeout: self
                    .positive_duration(upstream.read_timeout.as_ref(), defaults::READ_TIMEOUT),
            };
            upstreams.insert(name.clone(), Arc::new(config));
        }
        upstreams
    }

    fn routes(
        &mut self,
        raw: &[Spanned<RawRoute>],
        upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    ) -> Vec<RouteConfig> {
        if raw.is_empty() {
            self.error(
                None,
                "no [[route]]: add one, e.g. path = \"/\" with an upstream",
            );
        }
        let mut routes: Vec<(RouteConfig, Range<usize>)> = Vec::new();
        for spanned in raw {
            let route = spanned.get_ref();
            let path = route.path.get_ref();
            if !path.starts_with('/') {
                self.error_at(&route.path, format!("path {path:?} must start with \"/\""));
            } else if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
                self.error_at(
                    &route.path,
                    format!("path {path:?} must be a plain prefix (no spaces, '?' or '#')"),
                );
            }
            let host = route.host.as_ref().and_then(|host| {
                HostPattern::parse(host.get_ref())
                    .map_err(|message| self.error_at(host, message))
                    .ok()
            });
            let Some(target) = self.target(spanned, upstreams) else {
                continue;
            };
            let config = RouteConfig {
                host,
                path: path.clone(),
                target,
            };
            if let Some((_, span)) = routes
                .iter()
                .find(|(other, _)| other.host == config.host && other.path == config.path)
            {
                let message = format!(
                    "route {} duplicates the route at {}",
                    config.name(),
                    self.describe(span)
                );
                self.error_at(&route.path, message);
            }
            routes.push((config, route.path.span()));
        }
        routes.into_iter().map(|(route, _)| route).collect()
    }

    fn target(
        &mut self,
        spanned: &Spanned<RawRoute>,
        upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    ) -> Option<RouteTarget> {
        let route = spanned.get_ref();
        match (&route.upstream, &route.root) {
            (Some(_), Some(root)) => {
                self.error_at(root, "a route has `upstream` or `root`, not both");
                None
            }
            (None, None) => {
                self.error_at(
                    &route.path,
                    "this route needs `upstream = \"NAME\"` (proxy) or `root = \"DIR\"` (static files)",
                );
                None
            }
            (Some(upstream), None) => {
                if !upstreams.contains_key(upstream.get_ref()) {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "none is defined".to_string()
                    } else {
                        format!("defined: {}", known.join(", "))
                    };
                    self.error_at(
                        upstream,
                        format!("no upstream named {:?} ({known})", upstream.get_ref()),
                    );
                }
                let idle_timeout =
                    self.positive_duration(route.idle_timeout.as_ref(), defaults::IDLE_TIMEOUT);
                let allow_origins = match &route.allow_origins {
                    None => OriginPolicy::Any,
                    Some(list) => {
                        let mut origins = Vec::new();
                        for origin in list.get_ref() {
                            match check_origin(origin.get_ref()) {
                                Ok(()) => origins.push(origin.get_ref().clone()),
                                Err(message) => self.error_at(origin, message),
                            }
                        }
                        OriginPolicy::Only(origins)
                    }
                };
                Some(RouteTarget::Proxy(ProxyRoute {
                    upstream: upstream.get_ref().clone(),
                    idle_timeout,
                    allow_origins,
                }))
            }
            (None, Some(root)) => {
                if let Some(idle) = &route.idle_timeout {
                    self.error_at(idle, "idle_timeout applies only to routes with an upstream");
                }
                if let Some(origins) = &route.allow_origins {
                    self.error_at(
                        origins,
                        "allow_origins applies only to routes with an upstream",
                    );
                }
                let dir = self.path(root.get_ref());
                if !dir.is_dir() {
                    let why = if dir.exists() {
                        "is not a folder"
                    } else {
                        "does not exist"
                    };
                    self.error_at(root, format!("root {} {why}", dir.display()));
                    return None;
                }
                Some(RouteTarget::Static(StaticRoute { root: dir }))
            }
        }
    }

    fn unused_upstreams(
        &mut self,
        upstreams: &BTreeMap<String, Spanned<RawUpstream>>,
        routes: &[Spanned<RawRoute>],
    ) {
        for (name, upstream) in upstreams {
            let named = routes
                .iter()
                .any(|route| route.get_ref().upstream.as_ref().map(|u| u.get_ref()) == Some(name));
            if !named {
                self.error_at(
                    upstream,
                    format!("upstream {name:?} is not used by any route"),
                );
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

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` (and combinations such as `"1m 30s"`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim().chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\""
        ));
    }
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration {text:?} ({e}): write it like \"250ms\", \"30s\", \"5m\" or \"1h\""
        )
    })
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

/// An origin is `scheme://host[:port]`, nothing more.
fn check_origin(text: &str) -> Result<(), String> {
    let hint = || {
        format!(
            "allow_origins entry {text:?} is not an origin such as \"https://chat.example.com\""
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(hint)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@'])
    {
        return Err(hint());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("five seconds").is_err());
    }

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
    fn origins_are_scheme_and_host() {
        assert!(check_origin("https://chat.example.com").is_ok());
        assert!(check_origin("http://localhost:8080").is_ok());
        assert!(check_origin("chat.example.com").is_err());
        assert!(check_origin("https://chat.example.com/").is_err());
        assert!(check_origin("ftp://x").is_err());
    }

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
