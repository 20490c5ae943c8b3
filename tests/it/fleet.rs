//! Fixtures for upstream fleets: a backend that is a small chat server (HTTP
//! and WebSocket on one port, plain or TLS) whose health, handshake speed
//! and answers a test controls, and clients that learn which backend a
//! tunnel or a request reached.

#![allow(dead_code)]

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::config::Config;
use switchyard::lifecycle::Proxy;
use switchyard::upstream::resolve::{Lookup, Resolve};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// What a [`ChatBackend`] counts and obeys.
#[derive(Default)]
pub struct Knobs {
    /// Status of `GET /healthz` (200 until set).
    pub health_status: AtomicU16,
    pub health_checks: AtomicUsize,
    /// Plain requests other than health checks.
    pub requests: AtomicUsize,
    /// Milliseconds each WebSocket handshake takes before its `101`.
    pub handshake_delay_ms: AtomicU64,
    /// Handshakes being answered now, and the most there ever were at once.
    pub handshaking: AtomicUsize,
    pub most_handshaking: AtomicUsize,
    pub handshakes: AtomicUsize,
    /// Tunnels open now.
    pub open: AtomicUsize,
    /// ALPN protocols clients offered (TLS backends).
    pub alpn: Mutex<Vec<Option<Vec<u8>>>>,
}

/// A chat backend: `GET /healthz` answers `health_status`; other requests
/// answer `backend NAME`; a WebSocket upgrade, after `handshake_delay_ms`,
/// becomes a tunnel whose first message is `NAME`, then echoes.
pub struct ChatBackend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
}

impl ChatBackend {
    pub async fn start(name: &'static str) -> ChatBackend {
        Self::serve(name, "127.0.0.1:0".parse().unwrap(), None).await
    }

    /// A backend on `addr` (e.g. another loopback address, same port).
    pub async fn start_on(name: &'static str, addr: SocketAddr) -> ChatBackend {
        Self::serve(name, addr, None).await
    }

    /// A backend speaking TLS with the certificate in `dir/certs`.
    pub async fn start_tls(name: &'static str, dir: &TestDir) -> ChatBackend {
        let (chain, key, _) = switchyard::tls::read_pem_pair(
            &dir.path().join("certs/server.crt"),
            &dir.path().join("certs/server.key"),
        )
        .expect("backend certificate");
        let mut config = rustls::ServerConfig::builder_with_provider(switchyard::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("backend certificate");
        // Offer h2 as well: the proxy must pick http/1.1 itself.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(name, "127.0.0.1:0".parse().unwrap(), Some(Arc::new(config))).await
    }

    async fn serve(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> ChatBackend {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let knobs = Arc::new(Knobs::default());
        knobs.health_status.store(200, Ordering::SeqCst);
        let k = knobs.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (knobs, tls) = (k.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(name, stream, knobs).await,
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                            knobs.alpn.lock().unwrap().push(alpn);
                            serve_connection(name, stream, knobs).await
                        }
                    }
                });
            }
        });
        ChatBackend { name, addr, knobs }
    }

    pub fn set_health(&self, status: u16) {
        self.knobs.health_status.store(status, Ordering::SeqCst);
    }

    pub fn open(&self) -> usize {
        self.knobs.open.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.knobs.requests.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.knobs.health_checks.load(Ordering::SeqCst)
    }
}

async fn serve_connection<S>(name: &'static str, stream: S, knobs: Arc<Knobs>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| answer(name, req, knobs.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn answer(
    name: &'static str,
    mut req: Request<Incoming>,
    knobs: Arc<Knobs>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(response)
    };
    if req.uri().path() == "/healthz" {
        knobs.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = knobs.health_status.load(Ordering::SeqCst);
        return text(status, format!("{name} health"));
    }
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key.filter(|_| req.headers().contains_key("upgrade")) else {
        knobs.requests.fetch_add(1, Ordering::SeqCst);
        return text(200, format!("backend {name}"));
    };
    let now = knobs.handshaking.fetch_add(1, Ordering::SeqCst) + 1;
    knobs.most_handshaking.fetch_max(now, Ordering::SeqCst);
    let delay = knobs.handshake_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    knobs.handshaking.fetch_sub(1, Ordering::SeqCst);
    knobs.handshakes.fetch_add(1, Ordering::SeqCst);
    let upgrade = hyper::upgrade::on(&mut req);
    let k = knobs.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        k.open.fetch_add(1, Ordering::SeqCst);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws.send(Message::text(name)).await.is_ok() {
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        }
        k.open.fetch_sub(1, Ordering::SeqCst);
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    Ok(response)
}

/// Open a tunnel through the proxy; the backend's first message names it.
pub async fn tunnel(addr: SocketAddr, headers: &[(&str, &str)]) -> (Ws<TcpStream>, String) {
    let mut ws = ws_connect(addr, "/ws/chat", headers)
        .await
        .expect("WebSocket through the proxy");
    match next_data(&mut ws).await {
        Message::Text(name) => (ws, name.to_string()),
        other => panic!("expected the backend's name, got {other:?}"),
    }
}

/// How many of `names` are `name`.
pub fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// A keep-alive HTTP client to the proxy, for many requests in a row.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        let (sender, connection) =
            within(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    /// `GET path` with `headers`: status and body.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut req = Request::get(path).header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        within(self.sender.ready()).await.expect("connection ready");
        let response = within(
            self.sender
                .send_request(req.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .expect("response");
        let status = response.status();
        let body = within(response.into_body().collect())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Poll `check` every 20 ms until it holds, for at most [`STEP`].
pub async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < STEP, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A resolver whose answers the test sets: `host` → addresses (with the
/// port asked for), or a failure when it has none.
#[derive(Default)]
pub struct TestResolver {
    pub answers: Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>,
    pub lookups: AtomicUsize,
}

impl TestResolver {
    pub fn set(&self, host: &str, ips: &[&str]) {
        self.answers.lock().unwrap().insert(
            host.to_string(),
            ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        );
    }

    pub fn fail(&self, host: &str) {
        self.answers.lock().unwrap().remove(host);
    }
}

impl Resolve for TestResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            match answer {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: no such host (test resolver)"),
                )),
            }
        })
    }
}

/// Start a proxy on `toml` whose host names `resolver` answers.
pub async fn start_with_resolver(
    dir: &TestDir,
    toml: &str,
    resolver: Arc<TestResolver>,
) -> TestProxy {
    let path = dir.route_file(toml);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("route file invalid:\n{e}"));
    let proxy = Proxy::start_with_resolver(config, resolver)
        .await
        .expect("proxy start");
    let http = Some(proxy.listeners().await[0].0);
    TestProxy {
        http,
        https: None,
        admin: proxy.admin_addr().await,
        proxy,
    }
}

/// Reload the proxy from `toml`, written over its route file in `dir`.
pub async fn reload(proxy: &Proxy, dir: &TestDir, toml: &str) {
    dir.route_file(toml);
    within(proxy.reload()).await.expect("reload");
}

/// `servers = [...]` of these backends.
pub fn servers(backends: &[&ChatBackend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("servers = [{}]", list.join(", "))
}

/// A route file: one listener, upstream `chat` with `upstream` keys, and
/// every path routed to it.
pub fn fleet_file(upstream: &str) -> String {
    format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [upstream.chat]\n{upstream}\n\n[[route]]\npath = \"/\"\nupstream = \"chat\"\n"
    )
}

/// The value of a per-server series for `backend`.
pub async fn server_metric(admin: SocketAddr, name: &str, backend: &ChatBackend) -> Option<f64> {
    let scrape = scrape(admin).await;
    metric(
        &scrape,
        name,
        &[("upstream", "chat"), ("server", &backend.addr.to_string())],
    )
}
