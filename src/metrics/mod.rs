//! Prometheus metrics: every series Switchyard exports, in one registry.
//!
//! Per-route handles are created once per configuration generation
//! ([`RouteStats`]) so the request path only touches atomics. Series keep
//! their values across reloads: a route that keeps its name keeps its series.
//! The admin listener serves [`Metrics::encode`] at `/metrics`.
//!
//! Every series whose labels are known in advance exists from the start,
//! at 0, so that an alert on `increase(…[5m])` sees the first event: the
//! status classes of every route, both reload results, both accept error
//! kinds, the connect failures of every upstream server. Tunnel and upgrade
//! series exist only for routes with an upstream, where tunnels can happen.
//!
//! `route` holds a route's handles, `certificates` the certificate
//! series worked out at each scrape; the families live here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

mod certificates;
mod route;

pub use certificates::CertificateExpiry;
use certificates::ExpiryCollector;
pub use route::{Refusal, RouteStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    route: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    route: String,
    by: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PingLabels {
    route: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    route: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOnlyLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    listener: String,
    http: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~105 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

fn tunnel_histogram() -> Histogram {
    // 100 ms … ~7 days.
    Histogram::new(exponential_buckets(0.1, 4.0, 13))
}

/// Every metric family, registered once per process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    client_connections: Family<ListenerLabels, Gauge>,
    tunnels_open: Family<RouteLabels, Gauge>,
    tunnel_bytes: Family<BytesLabels, Counter>,
    tunnel_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tunnel_messages: Family<BytesLabels, Counter>,
    tunnel_closes: Family<CloseLabels, Counter>,
    tunnel_pings: Family<PingLabels, Counter>,
    upgrades_refused: Family<RefusedLabels, Counter>,
    connect_failures: Family<UpstreamLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    config_generation: Gauge,
    accept_errors: Family<KindLabels, Counter>,
    http_connections: Family<HttpLabels, Counter>,
    http2_goaways: Family<ReasonLabels, Counter>,
    connections_open: Gauge,
    max_connections_reached: Counter,
    over_ip_cap: Family<ListenerLabels, Counter>,
    proxy_header_errors: Family<ListenerLabels, Counter>,
    acme_renewals: Family<ResultLabels, Counter>,
    certificates: Arc<ExpiryCollector>,
    fleet: FleetFamilies,
}

/// The per-server and per-upstream series of upstream fleets.
struct FleetFamilies {
    server_up: Family<UpstreamLabels, Gauge>,
    server_tunnels: Family<UpstreamLabels, Gauge>,
    queue_length: Family<UpstreamOnlyLabels, Gauge>,
    queue_timeouts: Family<UpstreamOnlyLabels, Counter>,
    rebalanced: Family<UpstreamOnlyLabels, Counter>,
}

impl FleetFamilies {
    fn register(registry: &mut Registry) -> FleetFamilies {
        let fleet = FleetFamilies {
            server_up: Family::default(),
            server_tunnels: Family::default(),
            queue_length: Family::default(),
            queue_timeouts: Family::default(),
            rebalanced: Family::default(),
        };
        registry.register(
            "upstream_server_up",
            "Whether an upstream server takes new work (1) or is down (0): health checks, or refused connections",
            fleet.server_up.clone(),
        );
        registry.register(
            "upstream_tunnels_open",
            "Open WebSocket tunnels, by upstream server",
            fleet.server_tunnels.clone(),
        );
        registry.register(
            "upstream_queue_length",
            "WebSocket handshakes waiting for their turn (max_handshakes), by upstream",
            fleet.queue_length.clone(),
        );
        registry.register(
            "upstream_queue_timeouts",
            "WebSocket handshakes answered 503 after waiting queue_timeout, by upstream",
            fleet.queue_timeouts.clone(),
        );
        registry.register(
            "upstream_rebalanced_tunnels",
            "Tunnels closed with 1001 to even out an upstream's servers (rebalance_rate)",
            fleet.rebalanced.clone(),
        );
        fleet
    }
}

/// One upstream server's series.
#[derive(Clone, Debug)]
pub struct ServerStats {
    pub up: Gauge,
    pub tunnels_open: Gauge,
    pub connect_failures: Counter,
}

/// One upstream's series.
#[derive(Clone, Debug)]
pub struct UpstreamStats {
    pub queue_length: Gauge,
    pub queue_timeouts: Counter,
    pub rebalanced: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests answered, by route and status class",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the last byte of the response, by route",
            request_duration.clone(),
        );
        let client_connections = Family::default();
        registry.register(
            "client_connections",
            "Open client connections speaking HTTP, by listener (upgraded ones count in tunnels_open)",
            client_connections.clone(),
        );
        let tunnels_open = Family::default();
        registry.register(
            "tunnels_open",
            "Open WebSocket tunnels, by route",
            tunnels_open.clone(),
        );
        let tunnel_bytes = Family::default();
        registry.register(
            "tunnel_bytes",
            "Bytes relayed through WebSocket tunnels, by route and direction",
            tunnel_bytes.clone(),
        );
        let tunnel_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                tunnel_histogram,
            );
        registry.register(
            "tunnel_duration_seconds",
            "Lifetime of closed WebSocket tunnels, by route",
            tunnel_duration.clone(),
        );
        let tunnel_messages = Family::default();
        registry.register(
            "tunnel_messages",
            "WebSocket messages relayed through tunnels, by route and direction",
            tunnel_messages.clone(),
        );
        let tunnel_closes = Family::default();
        registry.register(
            "tunnel_closes",
            "Closed WebSocket tunnels, by route, who sent the first Close (client, upstream, proxy) and its code (1006: no Close frame at all)",
            tunnel_closes.clone(),
        );
        let tunnel_pings = Family::default();
        registry.register(
            "tunnel_pings",
            "The proxy's own pings, by route and result (pong: answered; timeout: the side was declared dead)",
            tunnel_pings.clone(),
        );
        let upgrades_refused = Family::default();
        registry.register(
            "upgrades_refused",
            "WebSocket upgrades that did not become tunnels, by route and reason",
            upgrades_refused.clone(),
        );
        let connect_failures = Family::default();
        registry.register(
            "upstream_connect_failures",
            "Failed connection attempts to upstream servers",
            connect_failures.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Configuration reloads, by result (ok or error)",
            reloads.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the configuration in force (1 at start, +1 per successful reload)",
            config_generation.clone(),
        );
        let accept_errors = Family::default();
        registry.register(
            "accept_errors",
            "Errors accepting client connections, by kind (out-of-files, other)",
            accept_errors.clone(),
        );
        let http_connections = Family::default();
        registry.register(
            "http_connections",
            "Client connections served, by listener and the HTTP version they chose (1.1, 2)",
            http_connections.clone(),
        );
        let http2_goaways = Family::default();
        registry.register(
            "http2_goaways",
            "HTTP/2 connections the proxy closed for the client's errors, by error code \
             (enhance_your_calm: the rapid-reset and flood defences)",
            http2_goaways.clone(),
        );
        for result in ["ok", "error"] {
            reloads.get_or_create_owned(&ResultLabels {
                result: result.to_string(),
            });
        }
        for kind in ["out-of-files", "other"] {
            accept_errors.get_or_create_owned(&KindLabels {
                kind: kind.to_string(),
            });
        }
        // The one an alert watches for: the flood defences closed a client.
        http2_goaways.get_or_create_owned(&ReasonLabels {
            reason: "enhance_your_calm".to_string(),
        });
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open in the process, tunnels included (what max_connections caps)",
            connections_open.clone(),
        );
        let max_connections_reached = Counter::default();
        registry.register(
            "max_connections_reached",
            "Times accepting paused because max_connections client connections were open",
            max_connections_reached.clone(),
        );
        let over_ip_cap = Family::default();
        registry.register(
            "connections_over_ip_cap",
            "Connections over max_connections_per_ip, whose requests were answered 429, by listener",
            over_ip_cap.clone(),
        );
        let proxy_header_errors = Family::default();
        registry.register(
            "proxy_header_errors",
            "Connections closed for a missing, invalid or late PROXY protocol header, by listener",
            proxy_header_errors.clone(),
        );
        let fleet = FleetFamilies::register(&mut registry);
        let acme_renewals: Family<ResultLabels, Counter> = Family::default();
        for result in ["ok", "error"] {
            acme_renewals.get_or_create_owned(&ResultLabels {
                result: result.to_string(),
            });
        }
        registry.register(
            "acme_renewals",
            "ACME certificate orders (first issuance and renewals), by result (ok or error)",
            acme_renewals.clone(),
        );
        let certificates = Arc::new(ExpiryCollector::default());
        registry.register_collector(Box::new(certificates.clone()));
        Metrics {
            fleet,
            registry,
            acme_renewals,
            certificates,
            requests,
            request_duration,
            client_connections,
            tunnels_open,
            tunnel_bytes,
            tunnel_duration,
            tunnel_messages,
            tunnel_closes,
            tunnel_pings,
            upgrades_refused,
            connect_failures,
            reloads,
            config_generation,
            accept_errors,
            http_connections,
            http2_goaways,
            connections_open,
            max_connections_reached,
            over_ip_cap,
            proxy_header_errors,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Gauge of open client connections on one listener.
    pub fn client_connections(&self, listener: &str) -> Gauge {
        self.client_connections
            .get_or_create_owned(&ListenerLabels {
                listener: listener.to_string(),
            })
    }

    /// Counter of client connections on one listener that chose `http`
    /// (`"1.1"`, `"2"`).
    pub fn http_connections(&self, listener: &str, http: &str) -> Counter {
        self.http_connections.get_or_create_owned(&HttpLabels {
            listener: listener.to_string(),
            http: http.to_string(),
        })
    }

    /// Count an HTTP/2 connection closed with GOAWAY `reason` (an error
    /// code such as `enhance_your_calm`) for the client's misbehaviour.
    pub fn http2_goaway(&self, reason: &str) {
        self.http2_goaways
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn connect_failure(&self, upstream: &str, server: &str) {
        self.connect_failures
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
                server: server.to_string(),
            })
            .inc();
    }

    /// Handles for one upstream server's series.
    pub fn server(&self, upstream: &str, server: &str) -> ServerStats {
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
            server: server.to_string(),
        };
        let stats = ServerStats {
            up: self.fleet.server_up.get_or_create_owned(&labels),
            tunnels_open: self.fleet.server_tunnels.get_or_create_owned(&labels),
            connect_failures: self.connect_failures.get_or_create_owned(&labels),
        };
        stats.up.set(1);
        stats
    }

    /// Drop the series of a server no configuration names any more.
    pub fn forget_server(&self, upstream: &str, server: &str) {
        let labels = UpstreamLabels {
            upstream: upstream.to_string(),
            server: server.to_string(),
        };
        self.fleet.server_up.remove(&labels);
        self.fleet.server_tunnels.remove(&labels);
    }

    /// Handles for one upstream's series.
    pub fn upstream(&self, upstream: &str) -> UpstreamStats {
        let labels = UpstreamOnlyLabels {
            upstream: upstream.to_string(),
        };
        UpstreamStats {
            queue_length: self.fleet.queue_length.get_or_create_owned(&labels),
            queue_timeouts: self.fleet.queue_timeouts.get_or_create_owned(&labels),
            rebalanced: self.fleet.rebalanced.get_or_create_owned(&labels),
        }
    }

    pub fn reload(&self, ok: bool, generation: u64) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.set_generation(generation);
    }

    pub fn set_generation(&self, generation: u64) {
        self.config_generation.set(generation as i64);
    }

    pub fn accept_error(&self, out_of_files: bool) {
        let kind = if out_of_files {
            "out-of-files"
        } else {
            "other"
        };
        self.accept_errors
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}

impl Metrics {
    /// Gauge of client connections open in the process.
    pub fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    pub fn max_connections_reached(&self) {
        self.max_connections_reached.inc();
    }

    pub fn over_ip_cap(&self, listener: &str) {
        self.over_ip_cap
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .inc();
    }

    pub fn proxy_header_error(&self, listener: &str) {
        self.proxy_header_errors
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .inc();
    }
}
