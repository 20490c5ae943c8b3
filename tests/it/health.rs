//! Server health: active checks take a failing server out after `fall`
//! checks and back after `rise`; a refusing server is skipped; with no
//! server up the answer is an immediate 502.

use crate::common::*;
use crate::fleet::*;
use http::StatusCode;
use std::time::{Duration, Instant};

fn checked(list: &[&ChatBackend], fall: u32, rise: u32) -> String {
    fleet_file(&format!(
        "{}\nbalance = \"round-robin\"\n\
         health = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", fall = {fall}, rise = {rise} }}",
        servers(list)
    ))
}

#[tokio::test]
async fn a_failing_server_is_taken_out_after_fall_checks_and_back_after_rise() {
    let (a, b) = (ChatBackend::start("a").await, ChatBackend::start("b").await);
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &checked(&[&a, &b], 3, 2)).await;
    let admin = proxy.admin.unwrap();
    let mut client = Client::connect(proxy.http()).await;
    // Both up: requests alternate.
    for _ in 0..4 {
        assert_eq!(client.get("/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!((a.requests(), b.requests()), (2, 2));

    let checks_before = a.health_checks();
    a.set_health(500);
    until("a is marked down", async || {
        server_metric(admin, "switchyard_upstream_server_up", &a).await == Some(0.0)
    })
    .await;
    assert!(
        a.health_checks() >= checks_before + 3,
        "down before `fall` failed checks"
    );
    let served_by_a = a.requests();
    for _ in 0..10 {
        let (status, body) = client.get("/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend b"));
    }
    assert_eq!(a.requests(), served_by_a, "a down server got requests");
    // Tunnels avoid it too.
    let (_ws, name) = tunnel(proxy.http(), &[]).await;
    assert_eq!(name, "b");

    let checks_before = a.health_checks();
    a.set_health(200);
    until("a is back up", async || {
        server_metric(admin, "switchyard_upstream_server_up", &a).await == Some(1.0)
    })
    .await;
    assert!(
        a.health_checks() >= checks_before + 2,
        "up before `rise` checks"
    );
    for _ in 0..4 {
        client.get("/", &[]).await;
    }
    assert_eq!(a.requests(), served_by_a + 2, "a did not get requests back");
}

#[tokio::test]
async fn with_every_server_down_the_answer_is_502_at_once() {
    let (a, b) = (ChatBackend::start("a").await, ChatBackend::start("b").await);
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &checked(&[&a, &b], 1, 1)).await;
    let admin = proxy.admin.unwrap();
    a.set_health(503);
    b.set_health(503);
    for backend in [&a, &b] {
        until("the server is marked down", async || {
            server_metric(admin, "switchyard_upstream_server_up", backend).await == Some(0.0)
        })
        .await;
    }
    let mut client = Client::connect(proxy.http()).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = client.get("/", &[]).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, "502 bad gateway: no upstream server is up\n");
        assert!(took < Duration::from_millis(100), "502 took {took:?}");
    }
    match ws_connect(proxy.http(), "/ws/chat", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY)
        }
        other => panic!("expected 502, got {other:?}"),
    }
    assert_eq!((a.requests(), b.requests()), (0, 0));
    assert_eq!(
        (a.knobs.handshakes.load(std::sync::atomic::Ordering::SeqCst)),
        0
    );
}

#[tokio::test]
async fn a_refusing_server_is_skipped_and_the_request_goes_elsewhere() {
    let b = ChatBackend::start("b").await;
    // A port nothing listens on: connections are refused.
    let refusing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "servers = [\"{refusing}\", \"{}\"]\nbalance = \"round-robin\"",
        b.addr
    ));
    let proxy = TestProxy::start(&dir, &file).await;
    let mut client = Client::connect(proxy.http()).await;
    // Every request is answered by b: the first one that tried the
    // refusing server moved on, the next ones skip it.
    for _ in 0..6 {
        let (status, body) = client.get("/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend b"));
    }
    let scrape = scrape(proxy.admin.unwrap()).await;
    let labels = [("upstream", "chat"), ("server", &*refusing.to_string())];
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upstream_connect_failures_total",
            &labels
        ),
        Some(1.0),
        "skipped for a second after one refusal"
    );
    assert_eq!(
        metric(&scrape, "switchyard_upstream_server_up", &labels),
        Some(0.0)
    );

    // With only a refusing server: 502 at once, then at once again.
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &fleet_file(&format!("servers = [\"{refusing}\"]"))).await;
    let mut client = Client::connect(proxy.http()).await;
    assert_eq!(client.get("/", &[]).await.0, StatusCode::BAD_GATEWAY);
    let started = Instant::now();
    let (status, body) = client.get("/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "502 bad gateway: no upstream server is up\n");
    assert!(started.elapsed() < Duration::from_millis(100));
}
