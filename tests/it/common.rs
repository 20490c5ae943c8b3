//! Test fixtures: proxies started from TOML on port 0, real backends, a test
//! certificate authority, and clients. Every wait is bounded by [`within`].

#![allow(dead_code, clippy::result_large_err)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::config::{Config, Scheme};
use switchyard::lifecycle::Proxy;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::{WebSocketStream, tungstenite};

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

/// Await `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(future: F) -> F::Output {
    match tokio::time::timeout(STEP, future).await {
        Ok(output) => output,
        Err(_) => panic!("a test step took longer than {STEP:?}"),
    }
}

/// A temporary folder holding a route file and whatever it points at.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `contents` at `relative`, creating folders.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// Write the route file and return its path.
    pub fn route_file(&self, toml: &str) -> PathBuf {
        self.write("switchyard.toml", toml)
    }
}

/// A test certificate authority and a `localhost` certificate it signed,
/// written as `certs/ca.crt`, `certs/server.crt`, `certs/server.key`.
pub struct TestCa {
    pub ca_der: CertificateDer<'static>,
}

impl TestCa {
    pub fn create(dir: &TestDir) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        dir.write("certs/ca.crt", ca_cert.pem());
        dir.write("certs/server.crt", server_cert.pem());
        dir.write("certs/server.key", server_key.serialize_pem());
        TestCa {
            ca_der: ca_cert.der().clone(),
        }
    }

    /// A client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add root");
        let config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A proxy running in this process.
pub struct TestProxy {
    pub proxy: Proxy,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl TestProxy {
    /// Write `toml` as the route file in `dir` and start a proxy on it.
    pub async fn start(dir: &TestDir, toml: &str) -> TestProxy {
        let path = dir.route_file(toml);
        let config = Config::load(&path).unwrap_or_else(|e| panic!("route file invalid:\n{e}"));
        let proxy = Proxy::start(config).await.expect("proxy start");
        let listeners = proxy.listeners().await;
        let pick = |scheme| {
            listeners
                .iter()
                .find(|(_, s)| *s == scheme)
                .map(|(a, _)| *a)
        };
        TestProxy {
            http: pick(Scheme::Http),
            https: pick(Scheme::Https),
            admin: proxy.admin_addr().await,
            proxy,
        }
    }

    pub fn http(&self) -> SocketAddr {
        self.http.expect("an http listener")
    }

    pub fn https(&self) -> SocketAddr {
        self.https.expect("an https listener")
    }
}

/// A route file with one plain listener and every path to `server`.
pub fn one_route(server: SocketAddr) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"{server}\"]\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n"
    )
}

// ---------------------------------------------------------------- backends

/// What an HTTP backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// An HTTP/1.1 backend that records requests and answers by path:
/// `/slow/MS` waits MS milliseconds, `/status/CODE` answers CODE,
/// `/big/N` streams N bytes, `/hop` answers with hop-by-hop headers; any
/// other path answers 200 with body `backend NAME`.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl HttpBackend {
    pub async fn start(name: &'static str) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections2.fetch_add(1, Ordering::SeqCst);
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| http_answer(name, req, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpBackend {
            addr,
            seen,
            connections,
        }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the backend")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn http_answer(
    name: &'static str,
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body_len: body.len(),
    });
    let full = |status: u16, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    };
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(full(200, format!("backend {name} slow")));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(full(
            code.parse().unwrap_or(500),
            format!("backend {name} status"),
        ));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunks = futures_util::stream::iter((0..n.div_ceil(65536)).map(move |i| {
            let len = 65536.min(n - i * 65536);
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; len])))
        }));
        let body = BodyExt::boxed(http_body_util::StreamBody::new(chunks));
        return Ok(Response::new(body));
    }
    if path == "/hop" {
        let mut response = full(200, "hop".into());
        let headers = response.headers_mut();
        headers.insert("connection", "keep-alive, x-internal".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-internal", "secret".parse().unwrap());
        headers.insert("proxy-authenticate", "Basic".parse().unwrap());
        headers.insert("x-public", "yes".parse().unwrap());
        return Ok(response);
    }
    if path == "/echo-body" {
        return Ok(full(200, format!("{} bytes", body.len())));
    }
    Ok(full(200, format!("backend {name}")))
}

/// A WebSocket backend that echoes every message, answers a close with the
/// same code and reason, and records each handshake's request headers.
/// Path `/greet` sends `hello` right after the handshake; `/close/CODE`
/// closes at once with that code and reason `bye`.
pub struct WsBackend {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    /// Messages received, all connections together.
    pub messages: Arc<AtomicUsize>,
    /// Close frames received from clients: (code, reason).
    pub closes: Arc<Mutex<Vec<(u16, String)>>>,
}

impl WsBackend {
    pub async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let messages = Arc::new(AtomicUsize::new(0));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let (h, m, c) = (handshakes.clone(), messages.clone(), closes.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, m, c) = (h.clone(), m.clone(), c.clone());
                tokio::spawn(ws_echo(stream, h, m, c));
            }
        });
        WsBackend {
            addr,
            handshakes,
            messages,
            closes,
        }
    }
}

async fn ws_echo(
    stream: TcpStream,
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    messages: Arc<AtomicUsize>,
    closes: Arc<Mutex<Vec<(u16, String)>>>,
) {
    let mut path = String::new();
    let callback = |req: &tungstenite::handshake::server::Request,
                    res: tungstenite::handshake::server::Response| {
        handshakes.lock().unwrap().push(req.headers().clone());
        path = req.uri().path().to_string();
        Ok(res)
    };
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    if path == "/greet" || path.ends_with("/greet") {
        let _ = ws.send(Message::text("hello")).await;
    }
    if let Some(code) = path
        .rsplit("/close/")
        .next()
        .filter(|_| path.contains("/close/"))
    {
        let code: u16 = code.parse().unwrap_or(1000);
        let _ = ws
            .send(Message::Close(Some(tungstenite::protocol::CloseFrame {
                code: code.into(),
                reason: "bye".into(),
            })))
            .await;
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                messages.fetch_add(1, Ordering::SeqCst);
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            // tungstenite answers the close itself.
            Message::Close(Some(frame)) => closes
                .lock()
                .unwrap()
                .push((u16::from(frame.code), frame.reason.to_string())),
            _ => {}
        }
    }
}

/// A TCP backend that reads one request head, writes `answer`, then records
/// every further byte it receives (to catch bytes smuggled through).
pub struct RawBackend {
    pub addr: SocketAddr,
    /// Bytes received after the first request head, per connection.
    pub after_head: Arc<Mutex<Vec<u8>>>,
    pub heads: Arc<Mutex<Vec<String>>>,
}

/// `answer` may contain `{accept}`, replaced with the right
/// `Sec-WebSocket-Accept` for the request's key.
impl RawBackend {
    pub async fn start(answer: &'static str) -> RawBackend {
        Self::start_with(answer, false).await
    }

    /// Like [`RawBackend::start`], but closes each connection right after
    /// answering (a keep-alive connection that dies while pooled).
    pub async fn start_closing(answer: &'static str) -> RawBackend {
        Self::start_with(answer, true).await
    }

    async fn start_with(answer: &'static str, close: bool) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let after_head = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (after, hs) = (after_head.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (after, hs) = (after.clone(), hs.clone());
                tokio::spawn(async move {
                    let head = read_head(&mut stream).await;
                    let key = header_in(&head, "sec-websocket-key").unwrap_or_default();
                    hs.lock().unwrap().push(head);
                    let answer = answer.replace("{accept}", &derive_accept_key(key.as_bytes()));
                    let _ = stream.write_all(answer.as_bytes()).await;
                    if close {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => after.lock().unwrap().extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        RawBackend {
            addr,
            after_head,
            heads,
        }
    }
}

/// The value of header `name` in a raw HTTP head, trimmed; the first one.
pub fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Read up to the end of an HTTP head (`\r\n\r\n`).
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---------------------------------------------------------------- clients

/// A plain-HTTP response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request over a new connection to `addr`.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Got {
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    send_on(stream, req).await
}

/// Send one request over `stream` (plain or TLS).
pub async fn send_on<S>(stream: S, req: Request<Full<Bytes>>) -> Got
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        within(hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let response = within(sender.send_request(req)).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = within(body.collect()).await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` with `Host: localhost` plus `headers`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// Write `bytes` on a new connection and read until the peer closes (or
/// [`STEP`] passes).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS connection to `addr` for `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = within(TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    within(tokio_rustls::TlsConnector::from(config).connect(name, stream)).await
}

pub type Ws<S> = WebSocketStream<S>;

/// Open a WebSocket over plain TCP to `ws://localhost:PORT{path}`.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws<TcpStream>, tungstenite::Error> {
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    let mut request = format!("ws://localhost:{}{path}", addr.port())
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    within(tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(big_messages()),
    ))
    .await
    .map(|(ws, _)| ws)
}

/// Open a WebSocket over TLS to `wss://localhost:PORT{path}`.
pub async fn wss_connect(
    addr: SocketAddr,
    path: &str,
    config: Arc<rustls::ClientConfig>,
) -> Ws<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = tls_connect(addr, config).await.expect("tls");
    let request = format!("wss://localhost:{}{path}", addr.port())
        .into_client_request()
        .expect("request");
    within(tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(big_messages()),
    ))
    .await
    .expect("wss handshake")
    .0
}

fn big_messages() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Send `message` and return the next data message.
pub async fn echo<S>(ws: &mut Ws<S>, message: Message) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(ws.send(message)).await.expect("send");
    next_data(ws).await
}

/// The next text or binary message (pings are answered by tungstenite).
pub async fn next_data<S>(ws: &mut Ws<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match within(ws.next()).await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)))) => return m,
            Some(Ok(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Scrape `/metrics` on `admin` and parse it with a Prometheus parser.
pub async fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let got = get(admin, "/metrics", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let text = got.text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

/// The value of `name` whose labels include every `(key, value)` of `labels`.
pub fn metric(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is not a single number: {other:?}"),
        })
}

// ---------------------------------------------------------------- HTTP/2

/// A TLS client configuration trusting `ca` and offering `alpn` (e.g.
/// `["h2", "http/1.1"]`).
pub fn client_config_alpn(ca: &TestCa, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut config = (*ca.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// An HTTP/2 connection made with hyper's client, for `https://localhost`.
pub struct H2Client {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    /// `localhost:PORT`, the `:authority` of every request.
    pub authority: String,
    /// The connection's request dispatcher: ends when the connection does,
    /// or once the proxy's GOAWAY (`NO_ERROR`) arrived. hyper drives the
    /// connection itself in a task of its own, which carries the open
    /// streams on after a GOAWAY.
    pub connection: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

/// A WebSocket over one HTTP/2 stream (RFC 8441).
pub type H2Ws = Ws<TokioIo<hyper::upgrade::Upgraded>>;

impl H2Client {
    /// Connect to `addr` over TLS, offering `h2` only, and speak HTTP/2.
    pub async fn connect(addr: SocketAddr, ca: &TestCa) -> H2Client {
        let tls = tls_connect(addr, client_config_alpn(ca, &["h2"]))
            .await
            .expect("tls");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the proxy did not choose h2"
        );
        H2Client::handshake(tls, addr).await
    }

    /// Speak HTTP/2 on `io`, a connection to the proxy at `addr` whose TLS
    /// handshake chose `h2`.
    pub async fn handshake<T>(io: T, addr: SocketAddr) -> H2Client
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = within(
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(TokioIo::new(io)),
        )
        .await
        .expect("h2 handshake");
        H2Client {
            sender,
            authority: format!("localhost:{}", addr.port()),
            connection: tokio::spawn(connection),
        }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority)
    }

    /// Send `req` on this connection and read the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Got {
        let mut sender = self.sender.clone();
        within(sender.ready()).await.expect("connection ready");
        let response = within(sender.send_request(req)).await.expect("response");
        assert_eq!(response.version(), http::Version::HTTP_2);
        let (parts, body) = response.into_parts();
        let body = within(body.collect()).await.expect("body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET path` plus `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut req = Request::get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// An RFC 8441 extended CONNECT for `path`, with
    /// `Sec-WebSocket-Version: 13` and `headers`.
    pub fn websocket_request(&self, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
        let mut req = Request::connect(self.url(path))
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .header("sec-websocket-version", "13");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(Bytes::new())).unwrap()
    }

    /// Open a WebSocket on a new stream of this connection: the stream's
    /// `200` head and the socket, or the answer when it is not a `200`.
    pub async fn websocket(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(http::response::Parts, H2Ws), Got> {
        let mut sender = self.sender.clone();
        within(sender.ready()).await.expect("connection ready");
        let req = self.websocket_request(path, headers);
        let mut response = within(sender.send_request(req)).await.expect("response");
        if response.status() != StatusCode::OK {
            let (parts, body) = response.into_parts();
            let body = within(body.collect()).await.expect("body").to_bytes();
            return Err(Got {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        let upgraded = within(hyper::upgrade::on(&mut response))
            .await
            .expect("the 200 opens the stream");
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tungstenite::protocol::Role::Client,
            Some(big_messages()),
        )
        .await;
        Ok((response.into_parts().0, ws))
    }
}
// ---------------------------------------------------------------- certificates

impl TestProxy {
    /// Start a proxy on the route file at `path` as it is (a symlink
    /// layout, a file written elsewhere).
    pub async fn start_file(path: &Path) -> TestProxy {
        let config = Config::load(path).unwrap_or_else(|e| panic!("route file invalid:\n{e}"));
        let proxy = Proxy::start(config).await.expect("proxy start");
        let listeners = proxy.listeners().await;
        let pick = |scheme| {
            listeners
                .iter()
                .find(|(_, s)| *s == scheme)
                .map(|(a, _)| *a)
        };
        TestProxy {
            http: pick(Scheme::Http),
            https: pick(Scheme::Https),
            admin: proxy.admin_addr().await,
            proxy,
        }
    }
}

/// A certificate authority that signs certificates for any names, for
/// tests that need several certificates (SNI, rotation).
pub struct CertMaker {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_der: CertificateDer<'static>,
}

impl CertMaker {
    pub fn new() -> CertMaker {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "Switchyard test CA (certificates)",
        );
        let cert = params.self_signed(&key).expect("ca cert");
        CertMaker {
            ca_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` and its key, both PEM.
    pub fn pair(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A client trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add root");
        let config = rustls::ClientConfig::builder_with_provider(switchyard::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// The leaf certificate `addr` presents for `sni`, whatever it is (the
/// client verifies nothing); `None` when the handshake fails.
pub async fn served_certificate(addr: SocketAddr, sni: &str) -> Option<CertificateDer<'static>> {
    let (config, _) = switchyard::bench::tls::client_config(None, true, b"http/1.1").ok()?;
    let stream = within(TcpStream::connect(addr)).await.ok()?;
    let name = ServerName::try_from(sni.to_string()).ok()?;
    let tls = within(tokio_rustls::TlsConnector::from(config).connect(name, stream))
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

/// The DNS names of a DER certificate.
pub fn names_of(der: &CertificateDer<'_>) -> Vec<String> {
    switchyard::certs::material::describe(der)
        .expect("a certificate")
        .names
}

/// Wait, checking every 50 ms, until `check` holds; fails the test after
/// `limit`. For changes the proxy notices by itself (watched files).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Open a WebSocket over TLS to `wss://NAME:PORT{path}` with `config`.
pub async fn wss_connect_named(
    addr: SocketAddr,
    name: &str,
    path: &str,
    config: Arc<rustls::ClientConfig>,
) -> Ws<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = within(TcpStream::connect(addr)).await.expect("connect");
    let server_name = ServerName::try_from(name.to_string()).expect("name");
    let tls = within(tokio_rustls::TlsConnector::from(config).connect(server_name, stream))
        .await
        .expect("tls");
    let request = format!("wss://{name}:{}{path}", addr.port())
        .into_client_request()
        .expect("request");
    within(tokio_tungstenite::client_async(request, tls))
        .await
        .expect("wss handshake")
        .0
}
