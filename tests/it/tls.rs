//! TLS termination: TLS 1.2 and 1.3 accepted, ALPN `http/1.1`, older
//! versions refused, slow handshakes cut.

use crate::common::*;
use http::StatusCode;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_proxy() -> (TestDir, TestCa, TestProxy, HttpBackend) {
    let backend = HttpBackend::start("tls").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        r#"
[server]
client_header_timeout = "500ms"
[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}
[upstream.a]
servers = ["{}"]
[[route]]
path = "/"
upstream = "a"
"#,
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    (dir, ca, proxy, backend)
}

fn client(
    ca: &TestCa,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/2 has tests of its own (http2.rs): this one speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn tls_12_and_13_work_and_alpn_http_11_is_chosen_when_offered_alone() {
    let (_dir, ca, proxy, backend) = tls_proxy().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = tls_connect(proxy.https(), client(&ca, version))
            .await
            .unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(session.protocol_version(), Some(version.version));
        let req = http::Request::get("/")
            .header("host", "localhost")
            .body(Default::default())
            .unwrap();
        let got = send_on(stream, req).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.text(), "backend tls");
    }
    assert_eq!(backend.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn tls_11_is_refused() {
    let (_dir, _ca, proxy, _backend) = tls_proxy().await;
    // A minimal TLS 1.1 ClientHello: version 3.2, cipher suites the server
    // knows (ECDHE-ECDSA/RSA-AES128-GCM-SHA256), no extensions.
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);

    let mut stream = tokio::net::TcpStream::connect(proxy.https()).await.unwrap();
    stream.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    let _ = within(stream.read_to_end(&mut answer)).await;
    assert!(!answer.is_empty(), "the server answers with an alert");
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a ServerHello: {answer:02x?}"
    );
    // A fatal alert: protocol_version (70) or handshake_failure (40).
    assert_eq!(answer[answer.len() - 2], 2, "fatal: {answer:02x?}");
    assert!(matches!(answer.last(), Some(70 | 40)), "{answer:02x?}");
}

#[tokio::test]
async fn a_stalled_handshake_is_cut() {
    let (_dir, _ca, proxy, _backend) = tls_proxy().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.https()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = within(stream.read_to_end(&mut buf)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(buf.is_empty());
}
