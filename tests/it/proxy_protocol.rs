//! `proxy_protocol = true`: PROXY v1 and v2 headers (written by the `ppp`
//! crate, as a load balancer would), before plain HTTP and before TLS.

use crate::common::*;
use ppp::v2::{Builder, Command, Protocol, Version};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn listener_with_proxy_protocol(backend: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\nclient_header_timeout = \"300ms\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n{extra}\n\
         [upstream.a]\nservers = [\"{backend}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n"
    )
}

fn v1(source: &str) -> String {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = "10.0.0.1:443".parse().unwrap();
    ppp::v1::Addresses::from((source, destination)).to_string()
}

fn v2(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = if source.is_ipv4() {
        "10.0.0.1:443".parse().unwrap()
    } else {
        "[2001:db8::1]:443".parse().unwrap()
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (source, destination),
    )
    .write_tlv(ppp::v2::Type::NoOp, b"pad".as_slice())
    .unwrap()
    .build()
    .unwrap()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn the_header_address_is_the_client_v1_and_v2() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &listener_with_proxy_protocol(backend.addr, "")).await;

    // v1, the header and the request in one write.
    let mut bytes = v1("192.0.2.7:51234").into_bytes();
    bytes.extend_from_slice(GET);
    let got = raw_exchange(proxy.http(), &bytes).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let seen = backend.last();
    assert_eq!(seen.headers["x-real-ip"], "192.0.2.7");
    assert_eq!(seen.headers["x-forwarded-for"], "192.0.2.7");

    // v2 over IPv6, the header in one write and the request in another.
    let mut stream = within(TcpStream::connect(proxy.http())).await.unwrap();
    stream.write_all(&v2("[2001:db8::7]:4000")).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let mut got = String::new();
    within(stream.read_to_string(&mut got)).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(backend.last().headers["x-real-ip"], "2001:db8::7");

    // v1 sent a byte at a time.
    let mut stream = within(TcpStream::connect(proxy.http())).await.unwrap();
    for byte in v1("198.51.100.9:1000").as_bytes() {
        stream.write_all(&[*byte]).await.unwrap();
        stream.flush().await.unwrap();
    }
    stream.write_all(GET).await.unwrap();
    let mut got = String::new();
    within(stream.read_to_string(&mut got)).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(backend.last().headers["x-real-ip"], "198.51.100.9");

    // LOCAL (a balancer's health check) keeps the socket's address.
    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    let mut bytes = local;
    bytes.extend_from_slice(GET);
    let got = raw_exchange(proxy.http(), &bytes).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(backend.last().headers["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &listener_with_proxy_protocol(backend.addr, "")).await;
    for bytes in [
        GET.to_vec(),
        b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.1".to_vec(), // and then nothing: the header timeout
    ] {
        let got = raw_exchange(proxy.http(), &bytes).await;
        assert_eq!(got, "", "{:?}", String::from_utf8_lossy(&bytes));
    }
    assert_eq!(backend.count(), 0);
    let scrape = scrape(proxy.admin.unwrap()).await;
    let listener = proxy.http().to_string();
    assert_eq!(
        metric(
            &scrape,
            "switchyard_proxy_header_errors_total",
            &[("listener", &listener)]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn the_header_comes_before_tls() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.a]\nservers = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let mut stream = within(TcpStream::connect(proxy.https())).await.unwrap();
    stream.write_all(&v2("203.0.113.5:999")).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(tokio_rustls::TlsConnector::from(ca.client_config()).connect(name, stream))
        .await
        .expect("TLS after the PROXY header");
    let got = send_on(
        tls,
        http::Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = backend.last();
    assert_eq!(seen.headers["x-real-ip"], "203.0.113.5");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

/// The per-address cap counts the address from the header, not the
/// balancer's.
#[tokio::test]
async fn per_ip_caps_count_the_header_address() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(
        &dir,
        &listener_with_proxy_protocol(backend.addr, "max_connections_per_ip = 1"),
    )
    .await;
    // One keep-alive connection from 192.0.2.7 stays open.
    let mut first = within(TcpStream::connect(proxy.http())).await.unwrap();
    let mut bytes = v1("192.0.2.7:1").into_bytes();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    first.write_all(&bytes).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = within(first.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let mut again = v1("192.0.2.7:2").into_bytes();
    again.extend_from_slice(GET);
    let got = raw_exchange(proxy.http(), &again).await;
    assert!(got.starts_with("HTTP/1.1 429"), "{got}");

    let mut other = v1("192.0.2.8:1").into_bytes();
    other.extend_from_slice(GET);
    let got = raw_exchange(proxy.http(), &other).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}
