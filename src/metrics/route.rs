//! One route's series: requests by status class and their durations, and
//! for routes with an upstream the tunnel and upgrade series.

use super::{
    BytesLabels, CloseLabels, Metrics, PingLabels, RefusedLabels, RequestLabels, RouteLabels,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;

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

impl Metrics {
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
