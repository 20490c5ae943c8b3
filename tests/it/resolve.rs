//! Host names in `servers`: every address a name resolves to is a server;
//! answers are refreshed every `resolve_interval`; an address that vanishes
//! gets no new work while its tunnels stay; a failed lookup keeps the last
//! answer. Names go through a resolver the test controls, and `localhost`
//! through the system's.

use crate::common::*;
use crate::fleet::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_tungstenite::tungstenite::Message;

/// Two backends on one port, at 127.0.0.1 and 127.0.0.2, as two pods of a
/// headless Service would be.
async fn two_pods() -> (ChatBackend, ChatBackend) {
    for _ in 0..20 {
        let a = ChatBackend::start("a").await;
        let other: SocketAddr = format!("127.0.0.2:{}", a.addr.port()).parse().unwrap();
        if tokio::net::TcpListener::bind(other).await.is_ok() {
            return (a, ChatBackend::start_on("b", other).await);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test]
async fn every_address_of_a_name_is_a_server_and_answers_are_followed() {
    let (a, b) = two_pods().await;
    let resolver = Arc::new(TestResolver::default());
    resolver.set("chat.test", &["127.0.0.1", "127.0.0.2"]);
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "servers = [\"chat.test:{}\"]\nbalance = \"round-robin\"\nresolve_interval = \"100ms\"",
        a.addr.port()
    ));
    let proxy = start_with_resolver(&dir, &file, resolver.clone()).await;
    let admin = proxy.admin.unwrap();
    let mut client = Client::connect(proxy.http()).await;
    for _ in 0..4 {
        assert_eq!(client.get("/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!((a.requests(), b.requests()), (2, 2));
    for backend in [&a, &b] {
        assert_eq!(
            server_metric(admin, "switchyard_upstream_server_up", backend).await,
            Some(1.0)
        );
    }
    // A tunnel on a.
    let mut on_a = loop {
        let (ws, name) = tunnel(proxy.http(), &[]).await;
        if name == "a" {
            break ws;
        }
    };

    // a leaves the answer: no new work for it, its tunnel stays.
    resolver.set("chat.test", &["127.0.0.2"]);
    until("a gets no more requests", async || {
        let before = a.requests();
        for _ in 0..4 {
            client.get("/", &[]).await;
        }
        a.requests() == before
    })
    .await;
    let (_ws, name) = tunnel(proxy.http(), &[]).await;
    assert_eq!(name, "b");
    assert_eq!(
        echo(&mut on_a, Message::text("still open")).await,
        Message::text("still open")
    );
    assert_eq!(
        server_metric(admin, "switchyard_upstream_tunnels_open", &a).await,
        Some(1.0),
        "the vanished server's tunnel is still counted"
    );

    // Lookups fail: the last answer stays in force.
    resolver.fail("chat.test");
    let lookups = resolver.lookups.load(Ordering::SeqCst);
    until("the name is looked up again", async || {
        resolver.lookups.load(Ordering::SeqCst) >= lookups + 2
    })
    .await;
    for _ in 0..4 {
        let (status, body) = client.get("/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend b"));
    }

    // a comes back.
    resolver.set("chat.test", &["127.0.0.1", "127.0.0.2"]);
    until("a gets requests again", async || {
        let before = a.requests();
        client.get("/", &[]).await;
        client.get("/", &[]).await;
        a.requests() > before
    })
    .await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_is_502_until_it_does() {
    let a = ChatBackend::start("a").await;
    let resolver = Arc::new(TestResolver::default());
    let dir = TestDir::new();
    let file = fleet_file(&format!(
        "servers = [\"chat.test:{}\"]\nresolve_interval = \"100ms\"",
        a.addr.port()
    ));
    let proxy = start_with_resolver(&dir, &file, resolver.clone()).await;
    let mut client = Client::connect(proxy.http()).await;
    assert_eq!(client.get("/", &[]).await.0, StatusCode::BAD_GATEWAY);
    resolver.set("chat.test", &["127.0.0.1"]);
    until("the name resolves", async || {
        client.get("/", &[]).await.0 == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn localhost_goes_through_the_system_resolver() {
    let a = ChatBackend::start("a").await;
    let dir = TestDir::new();
    let file = fleet_file(&format!("servers = [\"localhost:{}\"]", a.addr.port()));
    let proxy = TestProxy::start(&dir, &file).await;
    let (status, body) = Client::connect(proxy.http()).await.get("/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backend a"));
    let (_ws, name) = tunnel(proxy.http(), &[]).await;
    assert_eq!(name, "a");
}
