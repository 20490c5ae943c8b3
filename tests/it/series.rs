//! The metric series that exist from the start: fixed label sets at 0, so
//! an alert on `increase(...)` sees the first event, and no tunnel series
//! where no tunnel can happen.

use crate::common::*;

#[tokio::test]
async fn a_scrape_right_after_start_shows_every_fixed_series_at_zero() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    dir.write("site/static/a.txt", "a");
    let toml = format!(
        r#"
[server]
admin = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
[upstream.web]
servers = ["{0}", "127.0.0.1:9"]
[[route]]
path = "/"
upstream = "web"
[[route]]
path = "/static/"
root = "site"
[[route]]
scheme = "http"
path = "/old/"
redirect = "https://{{host}}{{uri}}"
"#,
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let s = scrape(proxy.admin.unwrap()).await;
    let at = |name: &str, labels: &[(&str, &str)]| metric(&s, name, labels);

    for result in ["ok", "error"] {
        assert_eq!(
            at("switchyard_reloads_total", &[("result", result)]),
            Some(0.0),
            "{result}"
        );
    }
    for result in ["ok", "error"] {
        assert_eq!(
            at("switchyard_acme_renewals_total", &[("result", result)]),
            Some(0.0),
            "{result}"
        );
    }
    for kind in ["out-of-files", "other"] {
        assert_eq!(
            at("switchyard_accept_errors_total", &[("kind", kind)]),
            Some(0.0),
            "{kind}"
        );
    }
    for server in [backend.addr.to_string(), "127.0.0.1:9".to_string()] {
        assert_eq!(
            at(
                "switchyard_upstream_connect_failures_total",
                &[("upstream", "web"), ("server", &server)]
            ),
            Some(0.0),
            "{server}"
        );
    }
    for route in ["/", "/static/", "http://*/old/", "none"] {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            assert_eq!(
                at(
                    "switchyard_requests_total",
                    &[("route", route), ("status", class)]
                ),
                Some(0.0),
                "{route} {class}"
            );
        }
        assert_eq!(
            at(
                "switchyard_request_duration_seconds_count",
                &[("route", route)]
            ),
            Some(0.0),
            "{route}"
        );
    }
    assert_eq!(
        at(
            "switchyard_client_connections",
            &[("listener", &proxy.http().to_string())]
        ),
        Some(0.0)
    );
    assert_eq!(at("switchyard_config_generation", &[]), Some(1.0));

    // Tunnel and upgrade series only for the route with an upstream.
    assert_eq!(at("switchyard_tunnels_open", &[("route", "/")]), Some(0.0));
    for result in ["pong", "timeout"] {
        assert_eq!(
            at(
                "switchyard_tunnel_pings_total",
                &[("route", "/"), ("result", result)]
            ),
            Some(0.0)
        );
    }
    for reason in ["not-101", "origin", "bad-accept"] {
        assert_eq!(
            at(
                "switchyard_upgrades_refused_total",
                &[("route", "/"), ("reason", reason)]
            ),
            Some(0.0)
        );
    }
    let tunnel_series = [
        "switchyard_tunnels_open",
        "switchyard_tunnel_bytes_total",
        "switchyard_tunnel_duration_seconds_count",
        "switchyard_upgrades_refused_total",
        "switchyard_tunnel_messages_total",
        "switchyard_tunnel_pings_total",
    ];
    for route in ["/static/", "http://*/old/", "none"] {
        for name in tunnel_series {
            assert_eq!(at(name, &[("route", route)]), None, "{name} for {route}");
        }
    }
    assert_eq!(
        at(
            "switchyard_tunnel_bytes_total",
            &[("route", "/"), ("direction", "client_to_upstream")]
        ),
        Some(0.0)
    );
}
