//! What a run measures: the workloads, the targets, and the knobs read from
//! the environment (`BENCH_ROUNDS`, `BENCH_SECONDS`, `BENCH_ONLY`,
//! `BENCH_TARGETS`).

use std::fmt;

/// One kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Small HTTP GETs over keep-alive connections (wrk, else `switchyard bench http`).
    Http,
    /// The same, with the proxy writing an access log file (Switchyard's
    /// `access_log = FILE`, nginx's `access_log FILE buffer=64k`).
    HttpLog,
    /// WebSocket echo: 64 connections, 64-byte messages, one in flight each.
    Echo,
    /// WebSocket bulk: 4 connections streaming 64 KiB messages both ways.
    Bulk,
    /// WebSocket handshakes per second over ws://.
    HandshakeWs,
    /// WebSocket handshakes per second over wss:// (TLS ends at the proxy).
    HandshakeWss,
    /// 9,500 idle tunnels held: memory per tunnel, echo p99 at 1,000 and 9,500.
    Hold,
    /// A reconnect storm: 5,000 clients at once against a backend that
    /// accepts 1,000 handshakes/s, no handshake queue in the proxy.
    Storm,
    /// The same storm with the proxy's handshake queue (Switchyard's
    /// `max_handshakes`, HAProxy's server `maxconn` + queue).
    StormQueued,
    /// A 20 KiB JSON document, the client accepting no encoding: what a
    /// compressing route costs when it does not compress.
    JsonIdentity,
    /// The same document with `Accept-Encoding: gzip`: the proxies compress
    /// (Switchyard `compress = true`, nginx `gzip on`, HAProxy `compression`).
    JsonGzip,
    /// Small HTTP/2 GETs over TLS: h2load, 4 connections × 16 streams.
    Http2,
    /// WebSocket echo over HTTP/2 (RFC 8441): 64 streams on 4 connections.
    EchoH2,
    /// WebSocket bulk over wss:// with HTTP/1.1, the baseline of `BulkH2`.
    BulkWss,
    /// WebSocket bulk over HTTP/2: 4 streams on one connection.
    BulkH2,
    /// The hold workload with the WebSockets over HTTP/2, 100 per connection.
    HoldH2,
}

impl Workload {
    pub const ALL: [Workload; 16] = [
        Workload::Http,
        Workload::HttpLog,
        Workload::Echo,
        Workload::Bulk,
        Workload::HandshakeWs,
        Workload::HandshakeWss,
        Workload::Hold,
        Workload::Storm,
        Workload::StormQueued,
        Workload::JsonIdentity,
        Workload::JsonGzip,
        Workload::Http2,
        Workload::EchoH2,
        Workload::BulkWss,
        Workload::BulkH2,
        Workload::HoldH2,
    ];

    /// The workloads of HTTP/2 (`BENCH_ONLY=h2`), with their HTTP/1.1
    /// baseline over TLS.
    const H2: [Workload; 5] = [
        Workload::Http2,
        Workload::EchoH2,
        Workload::BulkWss,
        Workload::BulkH2,
        Workload::HoldH2,
    ];

    /// Held-connection workloads (memory per tunnel), measured by `hold.rs`.
    pub fn is_hold(self) -> bool {
        matches!(self, Workload::Hold | Workload::HoldH2)
    }

    /// Bulk workloads: CPU is per MB.
    pub fn is_bulk(self) -> bool {
        matches!(self, Workload::Bulk | Workload::BulkWss | Workload::BulkH2)
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Http => "http",
            Workload::HttpLog => "http-log",
            Workload::Echo => "echo",
            Workload::Bulk => "bulk",
            Workload::HandshakeWs => "handshake-ws",
            Workload::HandshakeWss => "handshake-wss",
            Workload::Hold => "hold",
            Workload::Storm => "storm",
            Workload::StormQueued => "storm-queued",
            Workload::JsonIdentity => "json-identity",
            Workload::JsonGzip => "json-gzip",
            Workload::Http2 => "http2",
            Workload::EchoH2 => "echo-h2",
            Workload::BulkWss => "bulk-wss",
            Workload::BulkH2 => "bulk-h2",
            Workload::HoldH2 => "hold-h2",
        }
    }

    /// Whether this is one of the 20 KiB JSON workloads (path `/json`).
    pub fn is_json(self) -> bool {
        matches!(self, Workload::JsonIdentity | Workload::JsonGzip)
    }

    /// The row label in the results table.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Http => "HTTP GET (small body, keep-alive)",
            Workload::HttpLog => "HTTP GET, access log to a file",
            Workload::Echo => "WS echo 64 conns × 64 B",
            Workload::Bulk => "WS bulk 4 conns × 64 KiB",
            Workload::HandshakeWs => "WS handshakes ws://",
            Workload::HandshakeWss => "WS handshakes wss://",
            Workload::Hold => "9,500 held tunnels",
            Workload::Storm => "Storm: 5,000 at once, backend 1,000 hs/s",
            Workload::StormQueued => "Storm, with the proxy's handshake queue",
            Workload::JsonIdentity => "JSON 20 KiB, not compressed",
            Workload::JsonGzip => "JSON 20 KiB, gzip by the proxy",
            Workload::Http2 => "HTTP/2 GET 4 conns × 16 streams (h2load)",
            Workload::EchoH2 => "WS echo over h2, 64 streams on 4 conns × 64 B",
            Workload::BulkWss => "WS bulk wss:// (HTTP/1.1) 4 conns × 64 KiB",
            Workload::BulkH2 => "WS bulk over h2, 4 streams × 64 KiB",
            Workload::HoldH2 => "9,500 held WebSockets over h2 (100 per conn)",
        }
    }

    /// Unit of the throughput column.
    pub fn rate_unit(self) -> &'static str {
        match self {
            Workload::Http
            | Workload::HttpLog
            | Workload::JsonIdentity
            | Workload::JsonGzip
            | Workload::Http2 => "req/s",
            Workload::Echo | Workload::EchoH2 => "msg/s",
            Workload::Bulk | Workload::BulkWss | Workload::BulkH2 => "MB/s",
            Workload::HandshakeWs | Workload::HandshakeWss => "hs/s",
            Workload::Storm | Workload::StormQueued => "conn/s",
            Workload::Hold | Workload::HoldH2 => "",
        }
    }

    /// Unit of the CPU-per-operation column.
    pub fn cpu_unit(self) -> &'static str {
        match self {
            Workload::Http
            | Workload::HttpLog
            | Workload::JsonIdentity
            | Workload::JsonGzip
            | Workload::Http2 => "µs/req",
            Workload::Echo | Workload::EchoH2 => "µs/msg",
            Workload::Bulk | Workload::BulkWss | Workload::BulkH2 => "ms/MB",
            Workload::HandshakeWs | Workload::HandshakeWss => "µs/hs",
            Workload::Storm | Workload::StormQueued => "µs/conn",
            Workload::Hold | Workload::HoldH2 => "",
        }
    }

    fn parse(word: &str) -> Result<Vec<Workload>, String> {
        Ok(match word {
            "http" => vec![Workload::Http],
            "http-log" => vec![Workload::HttpLog],
            "echo" => vec![Workload::Echo],
            "bulk" => vec![Workload::Bulk],
            "handshake" => vec![Workload::HandshakeWs, Workload::HandshakeWss],
            "handshake-ws" => vec![Workload::HandshakeWs],
            "handshake-wss" => vec![Workload::HandshakeWss],
            "hold" => vec![Workload::Hold],
            "storm" => vec![Workload::Storm, Workload::StormQueued],
            "storm-queued" => vec![Workload::StormQueued],
            "json" => vec![Workload::JsonIdentity, Workload::JsonGzip],
            "json-identity" => vec![Workload::JsonIdentity],
            "json-gzip" => vec![Workload::JsonGzip],
            "h2" => Workload::H2.to_vec(),
            "http2" => vec![Workload::Http2],
            "echo-h2" => vec![Workload::EchoH2],
            "bulk-wss" => vec![Workload::BulkWss],
            "bulk-h2" => vec![Workload::BulkH2],
            "hold-h2" => vec![Workload::HoldH2],
            other => {
                return Err(format!(
                    "unknown workload {other:?} (http, http-log, echo, bulk, handshake, \
                     handshake-ws, handshake-wss, hold, storm, storm-queued, json, json-identity, \
                     json-gzip; h2 = http2, echo-h2, bulk-wss, bulk-h2, hold-h2)"
                ));
            }
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the load goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    /// Straight to the backend: the ceiling of client plus backend.
    Direct,
    Switchyard,
    Nginx,
    Haproxy,
    /// hyper's server and client joined with nothing else (HTTP only): the
    /// floor of a proxy built on hyper.
    BareHyper,
}

impl TargetKind {
    pub const ALL: [TargetKind; 5] = [
        TargetKind::Direct,
        TargetKind::Switchyard,
        TargetKind::Nginx,
        TargetKind::Haproxy,
        TargetKind::BareHyper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Switchyard => "switchyard",
            TargetKind::Nginx => "nginx",
            TargetKind::Haproxy => "haproxy",
            TargetKind::BareHyper => "bare-hyper",
        }
    }

    /// Whether this target takes part in `workload`.
    pub fn serves(self, workload: Workload) -> bool {
        match self {
            TargetKind::BareHyper => workload == Workload::Http,
            // nginx has no queue of its own to turn on, and no WebSockets
            // over HTTP/2 (RFC 8441).
            TargetKind::Nginx => !matches!(
                workload,
                Workload::StormQueued | Workload::EchoH2 | Workload::BulkH2 | Workload::HoldH2
            ),
            // The backend speaks plain ws:// and HTTP/1.1 only.
            TargetKind::Direct => {
                !matches!(
                    workload,
                    Workload::HandshakeWss | Workload::StormQueued | Workload::HttpLog
                ) && !Workload::H2.contains(&workload)
            }
            // HAProxy logs only to syslog: no file of its own to compare.
            TargetKind::Haproxy => workload != Workload::HttpLog,
            TargetKind::Switchyard => true,
        }
    }

    pub fn is_proxy(self) -> bool {
        self != TargetKind::Direct
    }

    fn parse(word: &str) -> Result<TargetKind, String> {
        TargetKind::ALL
            .into_iter()
            .find(|t| t.name() == word)
            .ok_or_else(|| {
                format!("unknown target {word:?} (direct, switchyard, nginx, haproxy, bare-hyper)")
            })
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The run's knobs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rounds: usize,
    /// Length of each measurement, in seconds.
    pub seconds: u64,
    /// How long the hold workload watches the proxy idle with every tunnel
    /// held (`BENCH_IDLE_SECONDS`): longer than the 30 s ping interval, so
    /// the proxy's pings are in it.
    pub idle_seconds: u64,
    pub workloads: Vec<Workload>,
    pub targets: Vec<TargetKind>,
}

impl Settings {
    /// Reads the knobs from the environment; a malformed value is an error.
    pub fn from_env() -> Result<Settings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let rounds = match var("BENCH_ROUNDS") {
            Some(v) => parse_count("BENCH_ROUNDS", &v, 1, 100)?,
            None => 3,
        };
        let seconds = match var("BENCH_SECONDS") {
            Some(v) => parse_count("BENCH_SECONDS", &v, 1, 600)? as u64,
            None => 5,
        };
        let idle_seconds = match var("BENCH_IDLE_SECONDS") {
            Some(v) => parse_count("BENCH_IDLE_SECONDS", &v, 1, 600)? as u64,
            None => 35,
        };
        let mut workloads = match var("BENCH_ONLY") {
            Some(v) => {
                let mut all = Vec::new();
                for word in words(&v) {
                    all.extend(Workload::parse(&word).map_err(|e| format!("BENCH_ONLY: {e}"))?);
                }
                all
            }
            None => Workload::ALL.to_vec(),
        };
        workloads.sort();
        workloads.dedup();
        let mut targets = match var("BENCH_TARGETS") {
            Some(v) => words(&v)
                .map(|w| TargetKind::parse(&w).map_err(|e| format!("BENCH_TARGETS: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            None => TargetKind::ALL.to_vec(),
        };
        targets.sort();
        targets.dedup();
        if workloads.is_empty() || targets.is_empty() {
            return Err("BENCH_ONLY and BENCH_TARGETS must each name at least one item".into());
        }
        Ok(Settings {
            rounds,
            seconds,
            idle_seconds,
            workloads,
            targets,
        })
    }
}

fn words(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(|w| w.trim().to_ascii_lowercase())
        .filter(|w| !w.is_empty())
}

fn parse_count(name: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name}={value:?}: expected a whole number from {min} to {max}"
        )),
    }
}
