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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

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

/// Why a WebSocket upgrade did not become a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The upstream answered something other than `101`.
    Not101,
    /// The `Origin` is not in the route's `allow_origins`.
    Origin,
    /// The upstream's `101` carried a wrong `Sec-WebSocket-Accept` or `Upgrade`.
    BadAccept,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Not101 => "not-101",
            Refusal::Origin => "origin",
            Refusal::BadAccept => "bad-accept",
        }
    }
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

    /// Handles for one route's series; `tunnels`: the route can open
    /// WebSocket tunnels (it has an upstream), so it has tunnel series too.
    pub fn route(&self, name: &str, tunnels: bool) -> Arc<RouteStats> {
        let route = || RouteLabels {
            route: name.to_string(),
        };
        let status = |class: &str| {
            self.requests.get_or_create_owned(&RequestLabels {
                route: name.to_string(),
                status: class.to_string(),
            })
        };
        let bytes = |direction: &str| {
            self.tunnel_bytes.get_or_create_owned(&BytesLabels {
                route: name.to_string(),
                direction: direction.to_string(),
            })
        };
        let messages = |direction: &str| {
            self.tunnel_messages.get_or_create_owned(&BytesLabels {
                route: name.to_string(),
                direction: direction.to_string(),
            })
        };
        let pings = |result: &str| {
            self.tunnel_pings.get_or_create_owned(&PingLabels {
                route: name.to_string(),
                result: result.to_string(),
            })
        };
        let refused = |reason: Refusal| {
            self.upgrades_refused.get_or_create_owned(&RefusedLabels {
                route: name.to_string(),
                reason: reason.label().to_string(),
            })
        };
        let tunnel = tunnels.then(|| TunnelStats {
            tunnels_open: self.tunnels_open.get_or_create_owned(&route()),
            bytes_to_upstream: bytes("client_to_upstream"),
            bytes_to_client: bytes("upstream_to_client"),
            tunnel_duration: self.tunnel_duration.get_or_create_owned(&route()),
            messages_to_upstream: messages("client_to_upstream"),
            messages_to_client: messages("upstream_to_client"),
            pongs: pings("pong"),
            ping_timeouts: pings("timeout"),
            closes: self.tunnel_closes.clone(),
            refused: [Refusal::Not101, Refusal::Origin, Refusal::BadAccept].map(refused),
        });
        Arc::new(RouteStats {
            name: Arc::from(name),
            by_status: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(status),
            duration: self.request_duration.get_or_create_owned(&route()),
            tunnel,
        })
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
    /// Count one ACME order, `ok` or not.
    pub fn acme_renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.acme_renewals
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Where `certificate_expiry_seconds` reads the certificates in service.
    pub fn certificates_from(&self, source: std::sync::Weak<dyn CertificateExpiry>) {
        *self
            .certificates
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }
}

/// What holds the certificates in service: `(listener, name, not_after)`
/// for each.
pub trait CertificateExpiry: Send + Sync {
    fn expiries(&self) -> Vec<(String, String, std::time::SystemTime)>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    listener: String,
    name: String,
}

/// `switchyard_certificate_expiry_seconds`, worked out at each scrape:
/// seconds left until each certificate in service expires.
#[derive(Default)]
struct ExpiryCollector {
    source: std::sync::Mutex<Option<std::sync::Weak<dyn CertificateExpiry>>>,
}

impl std::fmt::Debug for ExpiryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExpiryCollector")
    }
}

impl prometheus_client::collector::Collector for ExpiryCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let source = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        let family =
            Family::<CertificateLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let now = std::time::SystemTime::now();
        for (listener, name, not_after) in source.map(|s| s.expiries()).unwrap_or_default() {
            let left = match not_after.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            family
                .get_or_create(&CertificateLabels { listener, name })
                .set(left.round());
        }
        let metric = encoder.encode_descriptor(
            "certificate_expiry_seconds",
            "Seconds until each certificate in service expires (negative once expired), by listener and first name",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
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

/// The `code` label of a close: the codes RFC 6455 defines as they are;
/// the ranges left to libraries (3000–3999) and applications (4000–4999)
/// as `3xxx` and `4xxx`, and anything else as `other`, so that peers
/// cannot grow the number of series.
fn close_code_label(code: u16) -> String {
    match code {
        1000..=1015 => code.to_string(),
        3000..=3999 => "3xxx".to_string(),
        4000..=4999 => "4xxx".to_string(),
        _ => "other".to_string(),
    }
}

/// One route's series, resolved once per configuration generation.
#[derive(Debug)]
pub struct RouteStats {
    pub name: Arc<str>,
    by_status: [Counter; 5],
    duration: Histogram,
    /// Only routes with an upstream have tunnel series.
    tunnel: Option<TunnelStats>,
}

/// The tunnel and upgrade series of a route with an upstream.
#[derive(Debug)]
struct TunnelStats {
    tunnels_open: Gauge,
    bytes_to_upstream: Counter,
    bytes_to_client: Counter,
    tunnel_duration: Histogram,
    messages_to_upstream: Counter,
    messages_to_client: Counter,
    pongs: Counter,
    ping_timeouts: Counter,
    closes: Family<CloseLabels, Counter>,
    refused: [Counter; 3],
}

impl RouteStats {
    pub fn request_done(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_status[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    // Tunnels happen only on routes with an upstream, whose stats have
    // tunnel series; on any other route these have nothing to count.

    pub fn tunnel_opened(&self) {
        if let Some(t) = &self.tunnel {
            t.tunnels_open.inc();
        }
    }

    /// A tunnel closed: `by` sent the first Close (`client`, `upstream`,
    /// `proxy`), with `code`.
    pub fn tunnel_closed(&self, lifetime: Duration, by: &str, code: u16) {
        if let Some(t) = &self.tunnel {
            // Counted closed before it stops counting as open: a scrape in
            // between never sees a tunnel in neither.
            t.tunnel_duration.observe(lifetime.as_secs_f64());
            t.closes
                .get_or_create(&CloseLabels {
                    route: self.name.to_string(),
                    by: by.to_string(),
                    code: close_code_label(code),
                })
                .inc();
            t.tunnels_open.dec();
        }
    }

    /// Count messages relayed: `to_upstream` from the client, or back.
    pub fn tunnel_messages(&self, to_upstream: bool, n: u64) {
        if let Some(t) = &self.tunnel {
            if to_upstream {
                t.messages_to_upstream.inc_by(n);
            } else {
                t.messages_to_client.inc_by(n);
            }
        }
    }

    /// Pongs answering the proxy's own pings.
    pub fn tunnel_pongs(&self, n: u64) {
        if let Some(t) = &self.tunnel
            && n > 0
        {
            t.pongs.inc_by(n);
        }
    }

    /// A side that did not answer the proxy's Ping in time.
    pub fn tunnel_ping_timeout(&self) {
        if let Some(t) = &self.tunnel {
            t.ping_timeouts.inc();
        }
    }

    /// Count bytes relayed: `to_upstream` from the client, or back.
    pub fn tunnel_bytes(&self, to_upstream: bool, n: u64) {
        if let Some(t) = &self.tunnel {
            if to_upstream {
                t.bytes_to_upstream.inc_by(n);
            } else {
                t.bytes_to_client.inc_by(n);
            }
        }
    }

    pub fn refused(&self, reason: Refusal) {
        let i = match reason {
            Refusal::Not101 => 0,
            Refusal::Origin => 1,
            Refusal::BadAccept => 2,
        };
        if let Some(t) = &self.tunnel {
            t.refused[i].inc();
        }
    }
}
