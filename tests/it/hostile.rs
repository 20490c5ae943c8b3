//! Hostile request heads, as raw bytes on a socket: each is refused before
//! anything reaches the upstream, or framed the one safe way.

use crate::common::*;

/// Send `bytes` and return the whole answer (the proxy closes after a 400).
async fn answer(proxy: &TestProxy, bytes: &[u8]) -> String {
    raw_exchange(proxy.http(), bytes).await
}

async fn start() -> (HttpBackend, TestDir, TestProxy) {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let proxy = TestProxy::start(&dir, &one_route(backend.addr)).await;
    (backend, dir, proxy)
}

/// `bytes` get `status` with `reason` in the body, the connection is
/// closed, and the upstream sees nothing.
async fn assert_refused(proxy: &TestProxy, backend: &HttpBackend, bytes: &[u8], reason: &str) {
    let got = answer(proxy, bytes).await;
    let shown = String::from_utf8_lossy(bytes);
    assert!(got.starts_with("HTTP/1.1 400 "), "{shown:?} → {got}");
    assert!(got.contains("connection: close"), "{shown:?} → {got}");
    assert!(got.ends_with(&format!("{reason}\n")), "{shown:?} → {got}");
    assert_eq!(backend.count(), 0, "{shown:?} reached the upstream");
}

/// hyper's parser itself refuses `bytes`: an empty 400, nothing upstream.
async fn assert_parser_refuses(proxy: &TestProxy, backend: &HttpBackend, bytes: &[u8]) {
    let got = answer(proxy, bytes).await;
    let shown = String::from_utf8_lossy(bytes);
    assert!(got.starts_with("HTTP/1.1 400 "), "{shown:?} → {got}");
    assert_eq!(backend.count(), 0, "{shown:?} reached the upstream");
}

#[tokio::test]
async fn two_host_headers_are_400() {
    let (backend, _dir, proxy) = start().await;
    assert_refused(
        &proxy,
        &backend,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "two Host headers",
    )
    .await;
    assert_refused(
        &proxy,
        &backend,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nhost: a\r\n\r\n",
        "two Host headers",
    )
    .await;
}

#[tokio::test]
async fn a_host_that_is_not_host_and_port_is_400() {
    let (backend, _dir, proxy) = start().await;
    for host in ["a b", "user@a", "a:x", "[::1"] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_refused(
            &proxy,
            &backend,
            request.as_bytes(),
            "Host is not host[:port]",
        )
        .await;
    }
    assert_refused(
        &proxy,
        &backend,
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        "missing Host header",
    )
    .await;
}

#[tokio::test]
async fn an_absolute_target_disagreeing_with_host_is_400() {
    let (backend, _dir, proxy) = start().await;
    assert_refused(
        &proxy,
        &backend,
        b"GET http://evil.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "Host disagrees with the request target",
    )
    .await;
    // The same place, written differently, is fine.
    let got = answer(
        &proxy,
        b"GET http://LOCALHOST:80/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert_eq!(backend.last().path_and_query, "/x");
}

#[tokio::test]
async fn targets_that_are_not_a_path_a_url_or_options_star_are_400() {
    let (backend, _dir, proxy) = start().await;
    let reason = "the request target is not /path, an absolute URL or * (OPTIONS)";
    for line in [
        "GET no-slash HTTP/1.1",
        "GET localhost:80 HTTP/1.1",
        "CONNECT localhost:443 HTTP/1.1",
        "GET * HTTP/1.1",
        "GET ftp://localhost/ HTTP/1.1",
    ] {
        let request = format!("{line}\r\nHost: localhost\r\n\r\n");
        assert_refused(&proxy, &backend, request.as_bytes(), reason).await;
    }
    // `OPTIONS *` asks the server itself: it goes to the route for `/`.
    let got = answer(
        &proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    let seen = backend.last();
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("OPTIONS", "*")
    );
}

#[tokio::test]
async fn chunked_twice_is_400() {
    let (backend, _dir, proxy) = start().await;
    let reason = "chunked more than once in Transfer-Encoding";
    assert_refused(
        &proxy,
        &backend,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        reason,
    )
    .await;
    assert_refused(
        &proxy,
        &backend,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        reason,
    )
    .await;
}

/// What hyper's parser refuses by itself, before the proxy sees a request.
#[tokio::test]
async fn the_parser_refuses_folding_nul_bare_cr_and_bad_lengths() {
    let (backend, _dir, proxy) = start().await;
    for bytes in [
        // obsolete line folding
        &b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n"[..],
        // NUL, bare CR and DEL in a value
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x7f2\r\n\r\n",
        // whitespace before the colon
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n",
        // Content-Length lists, signs, disagreeing duplicates
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        // Transfer-Encoding not ending in chunked, or on HTTP/1.0
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // an HTTP version that is not 1.x
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    ] {
        assert_parser_refuses(&proxy, &backend, bytes).await;
    }
}

/// `Transfer-Encoding` with `Content-Length`: the length is dropped, the
/// body read as chunked, and the connection closed after the answer, so a
/// request smuggled behind it is never read (RFC 9112 §6.1).
#[tokio::test]
async fn transfer_encoding_with_content_length_is_chunked_then_closed() {
    let (backend, _dir, proxy) = start().await;
    let got = answer(
        &proxy,
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.ends_with("5 bytes"), "{got}");
    assert_eq!(got.matches("HTTP/1.1").count(), 1, "one answer only: {got}");
    assert_eq!(
        backend.count(),
        1,
        "the smuggled request never reached the upstream"
    );
    let seen = backend.last();
    assert_eq!(seen.body_len, 5);
    assert!(!seen.headers.contains_key("content-length"));
}

/// Two equal `Content-Length`s are one length (RFC 9110 §8.6).
#[tokio::test]
async fn equal_content_lengths_are_one() {
    let (backend, _dir, proxy) = start().await;
    let got = answer(
        &proxy,
        b"POST /echo-body HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert!(got.ends_with("2 bytes"), "{got}");
    let seen = backend.last();
    assert_eq!(seen.headers.get_all("content-length").iter().count(), 1);
}
