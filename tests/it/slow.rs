//! Slow clients: a request body that stalls (`client_body_timeout`) and a
//! client that stops reading its response (`send_timeout`).

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn route_file(backend: std::net::SocketAddr, server: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n{server}\n{}",
        one_route(backend)
    )
}

#[tokio::test]
async fn a_stalled_request_body_is_408_and_closed() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = route_file(backend.addr, "client_body_timeout = \"300ms\"");
    let proxy = TestProxy::start(&dir, &toml).await;
    // Two bytes of ten, then nothing.
    let got = raw_exchange(
        proxy.http(),
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhi",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(
        got.ends_with("408 request timeout: the request body stalled\n"),
        "{got}"
    );
}

#[tokio::test]
async fn a_malformed_chunk_is_the_clients_fault() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &one_route(backend.addr)).await;
    let got = raw_exchange(
        proxy.http(),
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(
        got.ends_with("the request body broke off or was malformed\n"),
        "{got}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let toml = route_file(backend.addr, "send_timeout = \"500ms\"");
    let proxy = TestProxy::start(&dir, &toml).await;
    let admin = proxy.admin.unwrap();

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream: TcpStream = within(socket.connect(proxy.http())).await.unwrap();
    let size = 64 << 20;
    stream
        .write_all(format!("GET /big/{size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Read nothing; the proxy gives up on the connection by itself.
    let open = || async {
        metric(&scrape(admin).await, "switchyard_connections_open", &[]).unwrap_or(0.0)
    };
    within(async {
        let mut seen_open = false;
        loop {
            let now = open().await;
            seen_open |= now >= 1.0;
            if seen_open && now == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut got = Vec::new();
    let read = within(stream.read_to_end(&mut got)).await;
    assert!(
        read.is_err() || got.len() < size,
        "the whole response arrived: the connection was not cut"
    );
}

/// An upstream that stops in the middle of a body: `read_timeout` counts
/// between two reads of the body too (as nginx's `proxy_read_timeout`), so
/// the response is cut and the client's connection closed, instead of
/// both waiting for ever.
#[tokio::test]
async fn an_upstream_stalling_mid_body_is_cut_after_read_timeout() {
    let backend = RawBackend::start("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello").await;
    let dir = TestDir::new();
    let toml = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"{}\"]\n\
         read_timeout = \"500ms\"\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
        backend.addr
    );
    let proxy = TestProxy::start(&dir, &toml).await;
    let started = std::time::Instant::now();
    let got = raw_exchange(proxy.http(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.ends_with("hello"), "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection was not closed by read_timeout"
    );
}
