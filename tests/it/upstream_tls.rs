//! TLS to the servers: plain requests and tunnels over TLS with the
//! certificate checked against `ca` for the server's host or
//! `server_name`, ALPN `http/1.1` only; a certificate the proxy cannot
//! verify is a 502.

use crate::common::*;
use crate::fleet::*;
use http::StatusCode;
use tokio_tungstenite::tungstenite::{self, Message};

fn tls_file(backend: &ChatBackend, tls: &str) -> String {
    fleet_file(&format!("{}\ntls = {{ {tls} }}", servers(&[backend])))
}

#[tokio::test]
async fn requests_and_tunnels_reach_a_tls_backend() {
    let dir = TestDir::new();
    TestCa::create(&dir);
    let backend = ChatBackend::start_tls("secure", &dir).await;
    // The server is written as 127.0.0.1: the certificate is checked for it.
    let proxy = TestProxy::start(&dir, &tls_file(&backend, "ca = \"certs/ca.crt\"")).await;
    let mut client = Client::connect(proxy.http()).await;
    for _ in 0..3 {
        let (status, body) = client.get("/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend secure"));
    }
    let (mut ws, name) = tunnel(proxy.http(), &[]).await;
    assert_eq!(name, "secure");
    assert_eq!(
        echo(&mut ws, Message::text("over tls")).await,
        Message::text("over tls")
    );
    let offered = backend.knobs.alpn.lock().unwrap().clone();
    // Keep-alive: the three requests shared one connection; the tunnel
    // had its own.
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(
        offered
            .iter()
            .all(|p| p.as_deref() == Some(&b"http/1.1"[..])),
        "{offered:?}"
    );

    // A server_name of the certificate's works too.
    let dir2 = TestDir::new();
    std::fs::create_dir_all(dir2.path().join("certs")).unwrap();
    std::fs::copy(
        dir.path().join("certs/ca.crt"),
        dir2.path().join("certs/ca.crt"),
    )
    .unwrap();
    let proxy = TestProxy::start(
        &dir2,
        &tls_file(
            &backend,
            "ca = \"certs/ca.crt\", server_name = \"localhost\"",
        ),
    )
    .await;
    let (status, body) = Client::connect(proxy.http()).await.get("/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backend secure"));
}

#[tokio::test]
async fn a_certificate_the_proxy_cannot_verify_is_502() {
    let dir = TestDir::new();
    TestCa::create(&dir);
    let backend = ChatBackend::start_tls("secure", &dir).await;
    // Another CA, which did not sign the backend's certificate.
    let other = TestDir::new();
    TestCa::create(&other);
    std::fs::copy(
        other.path().join("certs/ca.crt"),
        dir.path().join("certs/other-ca.crt"),
    )
    .unwrap();
    for tls in [
        "ca = \"certs/other-ca.crt\"",
        // The right CA, the wrong name.
        "ca = \"certs/ca.crt\", server_name = \"chat.internal\"",
    ] {
        let proxy = TestProxy::start(&dir, &tls_file(&backend, tls)).await;
        let (status, _) = Client::connect(proxy.http()).await.get("/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{tls}");
        // A tunnel fails the same way (on a proxy of its own: the first one
        // skips the server for a second now).
        let proxy = TestProxy::start(&dir, &tls_file(&backend, tls)).await;
        match ws_connect(proxy.http(), "/ws/chat", &[]).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{tls}")
            }
            other => panic!("expected 502, got {other:?}"),
        }
    }
    assert_eq!(backend.requests(), 0);
}
