//! `/metrics`, `/healthz` and `/readyz` on the admin listener, parsed with a
//! Prometheus text parser and checked against the traffic the test made.

use crate::common::*;
use http::StatusCode;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn metrics_match_the_traffic() {
    let ws = WsBackend::start().await;
    let http = HttpBackend::start("a").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TestDir::new();
    let toml = format!(
        r#"
[server]
admin = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
[upstream.ws]
servers = ["{}"]
[upstream.web]
servers = ["{}"]
[upstream.dead]
servers = ["{dead}"]
[[route]]
path = "/ws/"
upstream = "ws"
allow_origins = ["https://ok.example"]
[[route]]
path = "/"
upstream = "web"
[[route]]
path = "/dead"
upstream = "dead"
"#,
        ws.addr, http.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let admin = proxy.admin.unwrap();
    assert_eq!(get(admin, "/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(get(admin, "/readyz", &[]).await.text(), "ready\n");

    for _ in 0..5 {
        assert_eq!(get(proxy.http(), "/page", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(
        get(proxy.http(), "/status/404", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(proxy.http(), "/dead", &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    let refused = ws_connect(proxy.http(), "/ws/x", &[("origin", "https://evil.example")]).await;
    assert!(matches!(refused, Err(tungstenite::Error::Http(_))));

    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut t = ws_connect(proxy.http(), "/ws/x", &[]).await.unwrap();
        assert_eq!(
            echo(&mut t, Message::binary(vec![1u8; 1000])).await.len(),
            1000
        );
        tunnels.push(t);
    }
    let s = scrape(admin).await;
    let get_metric = |name: &str, labels: &[(&str, &str)]| metric(&s, name, labels);
    assert_eq!(
        get_metric("switchyard_tunnels_open", &[("route", "/ws/")]),
        Some(3.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_requests_total",
            &[("route", "/"), ("status", "2xx")]
        ),
        Some(5.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_requests_total",
            &[("route", "/"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_requests_total",
            &[("route", "/dead"), ("status", "5xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_request_duration_seconds_count",
            &[("route", "/")]
        ),
        Some(6.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_upgrades_refused_total",
            &[("route", "/ws/"), ("reason", "origin")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get_metric(
            "switchyard_upstream_connect_failures_total",
            &[("upstream", "dead")]
        ),
        Some(1.0)
    );
    let up = get_metric(
        "switchyard_tunnel_bytes_total",
        &[("route", "/ws/"), ("direction", "client_to_upstream")],
    )
    .unwrap();
    let down = get_metric(
        "switchyard_tunnel_bytes_total",
        &[("route", "/ws/"), ("direction", "upstream_to_client")],
    )
    .unwrap();
    assert!(
        up >= 3000.0 && down >= 3000.0,
        "bytes relayed: up {up}, down {down}"
    );
    assert_eq!(get_metric("switchyard_config_generation", &[]), Some(1.0));

    for mut t in tunnels {
        within(t.close(None)).await.unwrap();
        while let Some(Ok(_)) = within(futures_util::StreamExt::next(&mut t)).await {}
    }
    // Tunnels close asynchronously: wait for the gauge to come down.
    let mut open = None;
    for _ in 0..100 {
        let s = scrape(admin).await;
        open = metric(&s, "switchyard_tunnels_open", &[("route", "/ws/")]);
        if open == Some(0.0) {
            let closed = metric(
                &s,
                "switchyard_tunnel_duration_seconds_count",
                &[("route", "/ws/")],
            );
            assert_eq!(closed, Some(3.0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, Some(0.0));
}

#[tokio::test]
async fn readyz_turns_503_when_stopping() {
    let http = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\nshutdown_delay = \"500ms\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n",
        http.addr
    );
    let proxy = std::sync::Arc::new(TestProxy::start(&dir, &toml).await);
    let admin = proxy.admin.unwrap();
    let stopping = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.proxy.shutdown().await })
    };
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = get(admin, "/readyz", &[]).await.status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Still serving during the delay.
    assert_eq!(get(proxy.http(), "/", &[]).await.status, StatusCode::OK);
    within(stopping).await.unwrap();
    assert!(tokio::net::TcpStream::connect(proxy.http()).await.is_err());
}
