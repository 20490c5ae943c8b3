//! The handshake queue: a storm of upgrades reaches a slow backend at most
//! `max_handshakes` at a time, in order, and every client gets its `101`;
//! one that waits past `queue_timeout` gets a 503 with `Retry-After`.

use crate::common::*;
use crate::fleet::*;
use http::StatusCode;
use std::sync::atomic::Ordering;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn a_storm_reaches_the_backend_at_most_max_handshakes_at_a_time() {
    let backend = ChatBackend::start("a").await;
    backend.knobs.handshake_delay_ms.store(50, Ordering::SeqCst);
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "{}\nmax_handshakes = 4\nqueue_timeout = \"10s\"",
        servers(&[&backend])
    ));
    let proxy = TestProxy::start(&dir, &file).await;
    let admin = proxy.admin.unwrap();
    let addr = proxy.http();
    // 200 clients at once.
    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { tunnel(addr, &[]).await }))
        .collect();
    // While they wait, the queue shows them.
    until("the queue fills", async || {
        let scrape = scrape(admin).await;
        metric(
            &scrape,
            "switchyard_upstream_queue_length",
            &[("upstream", "chat")],
        )
        .is_some_and(|n| n > 100.0)
    })
    .await;
    let mut tunnels = Vec::new();
    for client in clients {
        let (ws, name) = within(client).await.expect("client task");
        assert_eq!(name, "a");
        tunnels.push(ws);
    }
    assert_eq!(backend.knobs.handshakes.load(Ordering::SeqCst), 200);
    let most = backend.knobs.most_handshaking.load(Ordering::SeqCst);
    assert!(most <= 4, "the backend saw {most} handshakes at once");
    assert_eq!(most, 4, "the queue let fewer through than it may");
    let scrape = scrape(admin).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upstream_queue_length",
            &[("upstream", "chat")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_handshake_waiting_past_queue_timeout_gets_503_with_retry_after() {
    let backend = ChatBackend::start("a").await;
    backend
        .knobs
        .handshake_delay_ms
        .store(1500, Ordering::SeqCst);
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "{}\nmax_handshakes = 1\nqueue_timeout = \"200ms\"",
        servers(&[&backend])
    ));
    let proxy = TestProxy::start(&dir, &file).await;
    let addr = proxy.http();
    let first = tokio::spawn(async move { tunnel(addr, &[]).await });
    until("the first handshake reaches the backend", async || {
        backend.knobs.handshaking.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = std::time::Instant::now();
    match ws_connect(addr, "/ws/chat", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=5).contains(&retry), "Retry-After: {retry}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(200)
            && waited < std::time::Duration::from_secs(1),
        "{waited:?}"
    );
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(
            &scrape,
            "switchyard_upstream_queue_timeouts_total",
            &[("upstream", "chat")]
        ),
        Some(1.0)
    );
    // The one in flight was not disturbed.
    let (_ws, name) = within(first).await.unwrap();
    assert_eq!(name, "a");
    assert_eq!(backend.knobs.handshakes.load(Ordering::SeqCst), 1);
}
