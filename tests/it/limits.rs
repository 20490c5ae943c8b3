//! `max_connections` and `max_connections_per_ip`, over real sockets.

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A keep-alive connection that has been answered once: the proxy holds it.
async fn held(addr: SocketAddr) -> TcpStream {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}

/// Read one small response (head and a body that fits in one read).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = within(stream.read(&mut buf)).await.expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A connection from `source` (a loopback address of its own).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    within(socket.connect(addr)).await.expect("connect")
}

#[tokio::test]
async fn at_max_connections_new_ones_wait_in_the_backlog_then_are_served() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\nmax_connections = 2\n{}",
        one_route(backend.addr)
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let first = held(proxy.http()).await;
    let _second = held(proxy.http()).await;

    // The third is accepted by the kernel but not by the proxy.
    let mut third = within(TcpStream::connect(proxy.http())).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    let scrape = scrape(proxy.admin.unwrap()).await;
    assert_eq!(
        metric(&scrape, "switchyard_connections_open", &[]),
        Some(2.0)
    );
    assert!(metric(&scrape, "switchyard_max_connections_reached_total", &[]) >= Some(1.0));

    // One closes: the waiting one is served, by itself.
    drop(first);
    let answer = read_answer(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn over_max_connections_per_ip_is_429_with_retry_after_and_close() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         max_connections_per_ip = 2\n[upstream.a]\nservers = [\"{}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let addr = proxy.http();
    let _one = held(addr).await;
    let two = held(addr).await;

    let got = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 429 "), "{got}");
    let lower = got.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{got}");
    assert!(lower.contains("connection: close\r\n"), "{got}");
    assert!(
        got.ends_with("429 too many connections from your address\n"),
        "{got}"
    );
    assert_eq!(
        backend.count(),
        2,
        "the refused request reached the upstream"
    );

    // Another address is not affected.
    let mut other = connect_from("127.0.0.2", addr).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut other).await.starts_with("HTTP/1.1 200"));

    // Once one closes, the address is under its cap again.
    drop(two);
    let mut again = None;
    for _ in 0..100 {
        let got = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        if got.starts_with("HTTP/1.1 200") {
            again = Some(got);
            break;
        }
        // The proxy notices the close when it next reads that socket.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the cap never let the address in again");

    let scrape = scrape(proxy.admin.unwrap()).await;
    let listener = addr.to_string();
    assert!(
        metric(
            &scrape,
            "switchyard_connections_over_ip_cap_total",
            &[("listener", &listener)]
        ) >= Some(1.0)
    );
}
