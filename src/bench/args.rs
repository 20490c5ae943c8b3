//! Command-line arguments of `switchyard bench` and the small parsers they
//! use: durations (`10s`, `500ms`), sizes (`64`, `64KiB`) and headers
//! (`Origin: https://example.com`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::BenchError;

/// What the benchmark measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Open and cleanly close WebSocket connections as fast as possible.
    Handshake,
    /// Send a message, wait for its echo, repeat (round-trip latency).
    Echo,
    /// Stream messages as fast as possible while reading the echoes (MB/s).
    Bulk,
    /// Open N connections at a bounded rate, hold them, check they survived.
    Hold,
    /// Small HTTP/1.1 GETs over keep-alive connections.
    Http,
    /// Open N connections at the same moment; time until all are up.
    Storm,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Handshake => "handshake",
            Mode::Echo => "echo",
            Mode::Bulk => "bulk",
            Mode::Hold => "hold",
            Mode::Http => "http",
            Mode::Storm => "storm",
        }
    }
}

const AFTER_HELP: &str = "\
Examples:
  switchyard bench echo ws://127.0.0.1:8080/echo -c 50 -s 1KiB --duration 10s
  switchyard bench handshake wss://proxy.internal/ws --ca ca.pem -c 20
  switchyard bench hold ws://127.0.0.1:8080/ws -c 20000 --rate 2000 --duration 30s --source-addrs 8
  switchyard bench http http://127.0.0.1:8080/ -c 32 --json
  switchyard bench storm ws://127.0.0.1:8080/ws -c 5000 --timeout 30s -d 1s --source-addrs 8
  switchyard bench hold wss://127.0.0.1:8443/ws --http2 --streams 100 -c 5000 --ca ca.pem

Error kinds: refused, tls, handshake-status (with the HTTP status), closed-early,
timeout, too-many-open-files, mismatch (echo payload differs), other.
Exit code: 0 when the run completed, 1 on bad arguments or when nothing succeeded.";

/// Arguments of `switchyard bench MODE URL [options]`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "WebSocket load tool: handshake rate, echo latency, bulk throughput, held connections",
    after_help = AFTER_HELP
)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,

    /// Target: ws:// or wss:// (http:// or https:// for the http mode).
    pub url: String,

    /// How long to run: 10s, 500ms, 2m, "1m 30s" (the route file's units; a
    /// bare number is seconds). For hold: how long to hold the
    /// connections once they are all open; for storm: how long to keep them
    /// once every attempt is over.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Concurrent connections (for hold: how many connections to open and hold).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,

    /// Message size for echo and bulk (64, 4KiB, 1MiB).
    #[arg(short = 's', long, default_value = "64", value_parser = parse_size)]
    pub size: usize,

    /// New connections per second, all workers together (hold: default 1000;
    /// handshake: unlimited unless given).
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,

    /// PEM file with the CA certificate(s) to trust for wss:// and https://
    /// (replaces the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Do not verify the server's TLS certificate at all (prints a warning).
    #[arg(long)]
    pub insecure: bool,

    /// Print one JSON report on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,

    /// Spread connections over local source addresses 127.0.0.1..127.0.0.N
    /// (loopback targets only), so the ephemeral port range is not the limit.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub source_addrs: u8,

    /// Extra request header, repeatable (e.g. `-H 'Origin: https://app.example'`).
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<Header>,

    /// Limit for each single operation (connect, round trip, close...).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// WebSockets over HTTP/2 (RFC 8441, wss:// only): each connection is a
    /// stream of an HTTP/2 connection, as browsers open them.
    #[arg(long)]
    pub http2: bool,

    /// With --http2: WebSockets opened per HTTP/2 connection before the
    /// next one is made.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub streams: u32,
}

/// One extra request header given as `NAME:VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl FromStr for Header {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| BenchError::InvalidHeader(s.to_string()))?;
        let name = name.trim();
        if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(BenchError::InvalidHeader(s.to_string()));
        }
        let value = value.trim();
        if http::HeaderValue::from_str(value).is_err() {
            return Err(BenchError::InvalidHeader(s.to_string()));
        }
        Ok(Header {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

/// Parses durations as the route file writes them (`10s`, `500ms`, `2m`,
/// `1h`, `1m 30s`), plus fractions (`1.5s`) and `250us`. A bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, BenchError> {
    simple_duration(s).or_else(|e| {
        let t = s.trim();
        if t.is_empty() || t.starts_with('-') {
            return Err(e);
        }
        crate::config::units::parse_duration(t).map_err(|_| e)
    })
}

/// One number and one unit.
fn simple_duration(s: &str) -> Result<Duration, BenchError> {
    let bad = || BenchError::InvalidDuration(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// Parses `64`, `64B`, `4KiB`, `4KB`, `4k`, `1MiB`, `1MB`, `1m`.
/// `KiB`/`k` are 1024, `KB` is 1000 (likewise for M and G).
pub fn parse_size(s: &str) -> Result<usize, BenchError> {
    let bad = || BenchError::InvalidSize(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = value.checked_mul(scale).ok_or_else(bad)?;
    usize::try_from(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("3").ok(), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_duration("250us").ok(),
            Some(Duration::from_micros(250))
        );
        assert_eq!(parse_duration("1m 30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("2min").ok(), Some(Duration::from_secs(120)));
        for bad in ["", "s", "10x", "-1s", "1..2s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64").ok(), Some(64));
        assert_eq!(parse_size("64B").ok(), Some(64));
        assert_eq!(parse_size("64KiB").ok(), Some(64 * 1024));
        assert_eq!(parse_size("64kb").ok(), Some(64_000));
        assert_eq!(parse_size("1MiB").ok(), Some(1 << 20));
        assert_eq!(parse_size("2k").ok(), Some(2048));
        for bad in ["", "KiB", "1.5KiB", "12XB", "-3", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn headers() {
        let h: Header = "Origin: https://a.example".parse().unwrap();
        assert_eq!(h.name, "Origin");
        assert_eq!(h.value, "https://a.example");
        let h: Header = "Cookie:a=b; c=d".parse().unwrap();
        assert_eq!(h.value, "a=b; c=d");
        assert!("NoColon".parse::<Header>().is_err());
        assert!(": value".parse::<Header>().is_err());
        assert!("bad name: v".parse::<Header>().is_err());
    }
}
