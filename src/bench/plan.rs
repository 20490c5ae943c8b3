//! [`Plan`]: a validated description of one benchmark run, built from the
//! command line ([`BenchArgs`]) or directly by library users, and
//! [`Target`]: the parsed URL (scheme, host, port, path).

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::args::{BenchArgs, Mode};
use super::error::BenchError;

/// Default connection rate for `hold` when `--rate` is not given.
pub const DEFAULT_HOLD_RATE: f64 = 1000.0;

/// Largest message size accepted for echo and bulk.
pub const MAX_SIZE: usize = 64 << 20;

/// Everything a run needs. Build it with [`Plan::new`] and adjust the public
/// fields, or convert it from [`BenchArgs`].
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// `ws://`, `wss://`, `http://` or `https://` URL.
    pub url: String,
    /// Run length; for `hold`, how long the connections are held once open.
    pub duration: Duration,
    /// Concurrent workers (for `hold`: connections to open).
    pub connections: usize,
    /// Message size in bytes (echo, bulk).
    pub size: usize,
    /// New connections per second over all workers (hold, handshake).
    pub rate: Option<f64>,
    /// PEM CA file to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Local source addresses 127.0.0.1..=127.0.0.N (1 = let the OS choose).
    pub source_addrs: u8,
    /// Extra request headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Limit for each single operation.
    pub timeout: Duration,
    /// WebSockets as RFC 8441 streams of HTTP/2 connections (wss:// only).
    pub http2: bool,
    /// With `http2`: WebSockets opened per HTTP/2 connection.
    pub streams: u32,
}

impl Plan {
    /// A plan with the command-line defaults: 10 s, 10 connections,
    /// 64-byte messages, 5 s timeout.
    pub fn new(mode: Mode, url: impl Into<String>) -> Self {
        Plan {
            mode,
            url: url.into(),
            duration: Duration::from_secs(10),
            connections: 10,
            size: 64,
            rate: None,
            ca: None,
            insecure: false,
            source_addrs: 1,
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            http2: false,
            streams: 100,
        }
    }

    /// Checks the options against each other; [`crate::bench::run`] calls it.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |msg: String| Err(BenchError::InvalidOption(msg));
        if self.connections == 0 {
            return bad("--connections must be at least 1".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0".into());
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be more than 0".into());
        }
        if matches!(self.mode, Mode::Echo | Mode::Bulk) && self.size == 0 {
            return bad("--size must be at least 1 byte for echo and bulk".into());
        }
        if self.size > MAX_SIZE {
            return bad(format!("--size must be at most {MAX_SIZE} bytes (64MiB)"));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return bad(format!("--rate must be a positive number, not {rate}"));
        }
        if self.source_addrs == 0 {
            return bad("--source-addrs must be at least 1".into());
        }
        if self.insecure && self.ca.is_some() {
            return bad("--ca and --insecure exclude each other".into());
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(BenchError::InvalidHeader(format!("{name}: {value}")));
            }
        }
        let target = Target::parse(&self.url, self.mode)?;
        if self.http2 {
            if self.mode == Mode::Http {
                return bad(
                    "--http2 is for the WebSocket modes; the http mode speaks HTTP/1.1".into(),
                );
            }
            if !target.tls {
                return bad("--http2 needs a wss:// URL: HTTP/2 is chosen by ALPN over TLS".into());
            }
            if self.streams == 0 {
                return bad("--streams must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The connection rate in effect: `--rate`, or the hold default.
    pub fn effective_rate(&self) -> Option<f64> {
        match (self.mode, self.rate) {
            (_, Some(rate)) => Some(rate),
            (Mode::Hold, None) => Some(DEFAULT_HOLD_RATE),
            _ => None,
        }
    }
}

impl TryFrom<BenchArgs> for Plan {
    type Error = BenchError;

    fn try_from(args: BenchArgs) -> Result<Self, Self::Error> {
        let plan = Plan {
            mode: args.mode,
            url: args.url,
            duration: args.duration,
            connections: args.connections,
            size: args.size,
            rate: args.rate,
            ca: args.ca,
            insecure: args.insecure,
            source_addrs: args.source_addrs,
            headers: args
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            timeout: args.timeout,
            http2: args.http2,
            streams: args.streams,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// The parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TLS (wss:// or https://).
    pub tls: bool,
    /// Host as written in the URL, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Authority for the Host header (`host[:port]` as written).
    pub authority: String,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl Target {
    /// Parses the URL; ws/wss and http/https are interchangeable, the mode
    /// decides which protocol is spoken.
    pub fn parse(url: &str, mode: Mode) -> Result<Target, BenchError> {
        let bad = |reason: &str| BenchError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if !url.contains("://") {
            let scheme = if mode == Mode::Http { "http" } else { "ws" };
            let example = if url.trim().is_empty() {
                format!("{scheme}://127.0.0.1:8080/")
            } else {
                format!("{scheme}://{}", url.trim())
            };
            return Err(bad(&format!(
                "it needs a scheme: write {example} (wss:// or https:// for TLS; the mode decides \
                 whether WebSocket or plain HTTP is spoken)"
            )));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("ws") | Some("http") => false,
            Some("wss") | Some("https") => true,
            Some(other) => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?} (use ws://, wss://, http:// or https://)"
                )));
            }
            None => {
                let hint = if mode == Mode::Http {
                    "http://"
                } else {
                    "ws://"
                };
                return Err(bad(&format!(
                    "missing scheme (for example {hint}host:port/)"
                )));
            }
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user:password@ in the URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_string();
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path_and_query,
        })
    }

    /// The URL as a WebSocket URI (ws:// or wss://).
    pub fn ws_uri(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority, self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("wss://example.com/chat?x=1", Mode::Echo).unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.path_and_query, "/chat?x=1");
        assert_eq!(t.ws_uri(), "wss://example.com/chat?x=1");

        let t = Target::parse("ws://[::1]:9000", Mode::Echo).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 9000);
        assert_eq!(t.path_and_query, "/");

        let t = Target::parse("http://127.0.0.1:8080/", Mode::Http).unwrap();
        assert!(!t.tls);
        assert_eq!(t.ws_uri(), "ws://127.0.0.1:8080/");

        assert!(Target::parse("ftp://x/", Mode::Echo).is_err());
        for (url, mode, hint) in [
            ("127.0.0.1:80", Mode::Echo, "write ws://127.0.0.1:80"),
            (
                "127.0.0.1:8080/ws/chat",
                Mode::Hold,
                "write ws://127.0.0.1:8080/ws/chat",
            ),
            (
                "localhost:8080/",
                Mode::Http,
                "write http://localhost:8080/",
            ),
        ] {
            let error = Target::parse(url, mode).unwrap_err().to_string();
            assert!(error.contains(hint), "{url}: {error}");
            assert!(!error.contains("invalid format"), "{url}: {error}");
        }
        assert!(Target::parse("ws://u:p@host/", Mode::Echo).is_err());
    }

    #[test]
    fn validates_plans() {
        let ok = Plan::new(Mode::Echo, "ws://127.0.0.1:1/");
        assert!(ok.validate().is_ok());
        let mut p = ok.clone();
        p.connections = 0;
        assert!(p.validate().is_err());
        let mut p = ok.clone();
        p.rate = Some(0.0);
        assert!(p.validate().is_err());
        let mut p = ok.clone();
        p.size = 0;
        assert!(p.validate().is_err());
        let mut p = ok;
        p.headers.push(("Bad Name".into(), "v".into()));
        assert!(p.validate().is_err());
        assert_eq!(
            Plan::new(Mode::Hold, "ws://h/").effective_rate(),
            Some(DEFAULT_HOLD_RATE)
        );
        assert_eq!(Plan::new(Mode::Handshake, "ws://h/").effective_rate(), None);
    }
}
