//! End-to-end tests of `switchyard bench` over real sockets: each mode runs
//! against small in-process servers that count what they see, and the
//! report must agree with the server's counts.

// tungstenite's handshake callbacks return an HTTP response as their error.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{CommandFactory, Parser};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use switchyard::bench::{BenchArgs, ErrorKind, Mode, Plan, Report, run};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// Upper bound for any single test body.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// Runs `fut` under [`TEST_LIMIT`].
async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, fut)
        .await
        .expect("test took too long")
}

/// What a test server saw.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    peers: Mutex<BTreeSet<IpAddr>>,
    origins: Mutex<BTreeSet<String>>,
    /// Signalled each time a WebSocket connection ends.
    closed: Notify,
}

impl Counters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }

    /// Waits until the server has no WebSocket connection open.
    async fn all_closed(&self) {
        loop {
            let mut closed = pin!(self.closed.notified());
            closed.as_mut().enable();
            if Self::get(&self.open) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A WebSocket echo server on 127.0.0.1:0, optionally behind TLS.
async fn echo_server(tls: Option<tokio_rustls::TlsAcceptor>) -> (SocketAddr, Arc<Counters>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            c.peers.lock().unwrap().insert(peer.ip());
            let c = c.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => echo_connection(stream, c).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            echo_connection(stream, c).await;
                        }
                    }
                }
            });
        }
    });
    (addr, counters)
}

async fn echo_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, c: Arc<Counters>) {
    let record_origin = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) {
            c.origins.lock().unwrap().insert(origin.to_string());
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record_origin).await else {
        return;
    };
    c.accepted.fetch_add(1, Ordering::SeqCst);
    let now_open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
    c.peak_open.fetch_max(now_open, Ordering::SeqCst);
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_binary() || msg.is_text() {
            c.messages.fetch_add(1, Ordering::SeqCst);
            c.bytes.fetch_add(msg.len() as u64, Ordering::SeqCst);
            if ws.send(msg).await.is_err() {
                break;
            }
        }
    }
    c.open.fetch_sub(1, Ordering::SeqCst);
    c.closed.notify_waiters();
}

/// A server that refuses every WebSocket upgrade with 403.
async fn forbidding_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let forbid = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
                    let mut resp = ErrorResponse::new(Some("no".to_string()));
                    *resp.status_mut() = http::StatusCode::FORBIDDEN;
                    Err(resp)
                };
                let _ = tokio_tungstenite::accept_hdr_async(stream, forbid).await;
            });
        }
    });
    addr
}

/// A keep-alive HTTP/1.1 server that counts requests.
async fn http_server() -> (SocketAddr, Arc<Counters>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"hello",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, counters)
}

/// A test CA, a server certificate for 127.0.0.1 signed by it, the TLS
/// acceptor using that certificate, and the CA written to a PEM file.
fn test_pki() -> (tokio_rustls::TlsAcceptor, tempfile::NamedTempFile) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut ca_file, ca.pem().as_bytes()).unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_file)
}

fn plan(mode: Mode, url: String, millis: u64, connections: usize) -> Plan {
    let mut plan = Plan::new(mode, url);
    plan.duration = Duration::from_millis(millis);
    plan.connections = connections;
    plan.timeout = Duration::from_secs(2);
    plan
}

async fn run_ok(plan: Plan) -> Report {
    let report = run(plan).await.expect("the run should start");
    // Every report survives a JSON round trip (the --json output).
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    let (a, b) = (serde_json::to_value(&report), serde_json::to_value(&back));
    assert!(same_json(&a.unwrap(), &b.unwrap()), "{json}");
    report
}

/// JSON equality, allowing the last-digit float differences of a text round trip.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= x.abs().max(y.abs()) * 1e-12
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_mode_counts_what_the_server_accepted() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let report = run_ok(plan(Mode::Handshake, format!("ws://{addr}/"), 500, 4)).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.ops, Counters::get(&server.accepted));
        assert_eq!(report.connections_opened, report.ops);
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        let latency = report.latency.expect("handshake latency");
        assert_eq!(latency.samples, report.ops);
        assert!(latency.p50_us > 0.0 && latency.p50_us <= latency.p99_us);
        assert!(report.ops_per_sec > 0.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_mode_counts_every_round_trip_exactly() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let mut p = plan(Mode::Echo, format!("ws://{addr}/"), 500, 4);
        p.size = 128;
        p.headers
            .push(("Origin".into(), "https://bench.example".into()));
        let report = run_ok(p).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.ops, Counters::get(&server.messages));
        assert_eq!(report.bytes_sent, report.ops * 128);
        assert_eq!(report.bytes_sent, Counters::get(&server.bytes));
        assert_eq!(report.bytes_received, report.bytes_sent);
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        assert_eq!(report.connections_opened, 4);
        assert_eq!(report.peak_open, 4);
        let latency = report.latency.expect("round-trip latency");
        assert_eq!(latency.samples, report.ops);
        assert!(latency.p50_us <= latency.p90_us && latency.p99_us <= latency.p999_us);
        assert!(latency.p999_us <= latency.max_us);
        // Extra headers reach the server.
        let origins = server.origins.lock().unwrap().clone();
        assert_eq!(
            origins,
            BTreeSet::from(["https://bench.example".to_string()])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_mode_sent_bytes_match_what_the_server_received() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let mut p = plan(Mode::Bulk, format!("ws://{addr}/"), 500, 2);
        p.size = 16 * 1024;
        let report = run_ok(p).await;
        assert!(report.bytes_sent > 0, "{report:#?}");
        assert_eq!(report.bytes_sent, Counters::get(&server.bytes));
        assert_eq!(report.bytes_received, report.bytes_sent);
        assert_eq!(report.ops, Counters::get(&server.messages));
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        assert!(report.sent_mb_per_sec > 0.0 && report.received_mb_per_sec > 0.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_mode_keeps_all_connections_open_at_once() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let mut p = plan(Mode::Hold, format!("ws://{addr}/"), 300, 60);
        p.rate = Some(600.0);
        let report = run_ok(p).await;
        let hold = report.hold.clone().expect("hold summary");
        assert_eq!(hold.held, 60, "{report:#?}");
        assert_eq!(hold.opened, 60);
        assert_eq!(report.ops, 60);
        assert_eq!(
            hold.open_failed + hold.dropped_during_hold + hold.check_failed,
            0
        );
        assert_eq!(Counters::get(&server.peak_open), 60);
        assert_eq!(hold.peak_open, 60);
        // Every connection gets closed at the end.
        server.all_closed().await;
        // 60 connections at 600/s take about 0.1 s to open.
        assert!(hold.open_secs >= 0.08, "{hold:?}");
        assert_eq!(report.errors.total(), 0, "{report:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_addresses_are_spread_over_loopback() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let mut p = plan(Mode::Echo, format!("ws://{addr}/"), 200, 4);
        p.source_addrs = 4;
        let report = run_ok(p).await;
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        let peers = server.peers.lock().unwrap().clone();
        let expected: BTreeSet<IpAddr> = (1..=4).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        assert_eq!(peers, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_test_ca_works() {
    bounded(async {
        let (acceptor, ca_file) = test_pki();
        let (addr, server) = echo_server(Some(acceptor)).await;
        // TLS setup is slow in debug builds on a busy machine: leave room.
        let mut p = plan(Mode::Echo, format!("wss://{addr}/"), 1000, 2);
        p.ca = Some(ca_file.path().to_path_buf());
        let report = run_ok(p).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.ops, Counters::get(&server.messages));
        assert_eq!(report.errors.total(), 0, "{report:#?}");

        let mut p = plan(Mode::Handshake, format!("wss://{addr}/"), 600, 2);
        p.ca = Some(ca_file.path().to_path_buf());
        let report = run_ok(p).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.errors.total(), 0, "{report:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_without_the_ca_counts_tls_errors() {
    bounded(async {
        let (acceptor, _ca_file) = test_pki();
        let (addr, server) = echo_server(Some(acceptor)).await;
        let report = run_ok(plan(Mode::Handshake, format!("wss://{addr}/"), 300, 2)).await;
        assert_eq!(report.ops, 0);
        assert!(report.errors.tls > 0, "{report:#?}");
        assert_eq!(report.errors.total(), report.errors.tls);
        assert!(report.error_samples.contains_key("tls"));
        assert_eq!(Counters::get(&server.accepted), 0);

        // --insecure skips verification, and says so.
        let mut p = plan(Mode::Handshake, format!("wss://{addr}/"), 600, 2);
        p.insecure = true;
        let report = run_ok(p).await;
        assert!(report.ops > 0, "{report:#?}");
        assert!(report.notes.iter().any(|n| n.contains("--insecure")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_counts_refused() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = run_ok(plan(Mode::Echo, format!("ws://{addr}/"), 200, 2)).await;
        assert_eq!(report.ops, 0);
        assert!(!report.succeeded());
        assert!(report.errors.refused > 0, "{report:#?}");
        assert_eq!(report.errors.total(), report.errors.refused);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_counts_handshake_status() {
    bounded(async {
        let addr = forbidding_server().await;
        let report = run_ok(plan(Mode::Handshake, format!("ws://{addr}/"), 200, 2)).await;
        assert_eq!(report.ops, 0);
        let forbidden = report.errors.get(ErrorKind::HandshakeStatus(403));
        assert!(forbidden > 0, "{report:#?}");
        assert_eq!(report.errors.total(), forbidden);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"]["handshake-status"]["403"], forbidden);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_counts_requests_and_status_codes() {
    bounded(async {
        let (addr, server) = http_server().await;
        let report = run_ok(plan(Mode::Http, format!("http://{addr}/hello"), 500, 4)).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.ops, Counters::get(&server.requests));
        assert_eq!(report.http_status.get(&200).copied(), Some(report.ops));
        assert_eq!(report.bytes_received, report.ops * 5);
        // The summary names what came back, and no "sent" figure.
        let table = report.to_table();
        assert!(table.contains("of response bodies"), "{table}");
        assert!(!table.contains("sent 0.00 MB"), "{table}");
        assert_eq!(
            report.connections_opened, 4,
            "keep-alive reuses connections"
        );
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        assert!(report.latency.is_some());
    })
    .await;
}

/// The CLI arguments as the proxy's `main.rs` embeds them.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[test]
fn command_line_builds_a_plan() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "bench",
        "echo",
        "ws://127.0.0.1:9/x",
        "-c",
        "3",
        "-s",
        "1KiB",
        "--duration",
        "500ms",
        "--timeout",
        "2s",
        "-H",
        "Origin: https://a.example",
        "--header",
        "Cookie: a=b",
        "--source-addrs",
        "4",
    ])
    .unwrap();
    let plan = Plan::try_from(cli.bench).unwrap();
    assert_eq!(plan.mode, Mode::Echo);
    assert_eq!(plan.connections, 3);
    assert_eq!(plan.size, 1024);
    assert_eq!(plan.duration, Duration::from_millis(500));
    assert_eq!(plan.timeout, Duration::from_secs(2));
    assert_eq!(plan.source_addrs, 4);
    assert_eq!(
        plan.headers,
        vec![
            ("Origin".to_string(), "https://a.example".to_string()),
            ("Cookie".to_string(), "a=b".to_string())
        ]
    );

    assert!(Cli::try_parse_from(["bench", "echo", "ws://h/", "--duration", "ten"]).is_err());
    assert!(Cli::try_parse_from(["bench", "warp", "ws://h/"]).is_err());
    let zero = Cli::try_parse_from(["bench", "echo", "ws://h/", "-c", "0"]).unwrap();
    assert!(Plan::try_from(zero.bench).is_err());
    let bad_scheme = Cli::try_parse_from(["bench", "echo", "ftp://h/"]).unwrap();
    assert!(Plan::try_from(bad_scheme.bench).is_err());
}

#[tokio::test]
async fn setup_errors_are_reported_not_counted() {
    bounded(async {
        let mut p = plan(Mode::Echo, "wss://127.0.0.1:9/".to_string(), 100, 1);
        p.ca = Some("/nonexistent/ca.pem".into());
        let err = run(p).await.unwrap_err();
        assert!(err.to_string().contains("CA file"), "{err}");

        let mut p = plan(Mode::Echo, "ws://127.0.0.1:9/".to_string(), 100, 1);
        p.connections = 0;
        assert!(run(p).await.is_err());
    })
    .await;
}

/// Switchyard with a TLS listener (HTTP/2 on, its default) in front of
/// `backend`; the CA file that trusts it.
async fn h2_proxy(
    backend: SocketAddr,
) -> (switchyard::lifecycle::Proxy, SocketAddr, tempfile::TempDir) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let route_file = dir.path().join("switchyard.toml");
    std::fs::write(
        &route_file,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n\
             [upstream.echo]\nservers = [\"{backend}\"]\n\
             [[route]]\npath = \"/\"\nupstream = \"echo\"\n"
        ),
    )
    .unwrap();
    let config = switchyard::config::Config::load(&route_file).unwrap();
    let proxy = switchyard::lifecycle::Proxy::start(config).await.unwrap();
    let addr = proxy.listeners().await[0].0;
    (proxy, addr, dir)
}

/// The proxy's count of client connections that chose HTTP/2.
fn h2_connections(proxy: &switchyard::lifecycle::Proxy) -> u64 {
    let text = proxy.state().metrics.encode();
    text.lines()
        .find(|l| l.starts_with("switchyard_http_connections_total{") && l.contains("http=\"2\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_puts_websockets_on_shared_connections_as_rfc_8441_streams() {
    bounded(async {
        let (backend, server) = echo_server(None).await;
        let (proxy, addr, dir) = h2_proxy(backend).await;
        let url = format!("wss://localhost:{}/", addr.port());

        let mut p = plan(Mode::Hold, url.clone(), 300, 25);
        p.rate = Some(500.0);
        p.http2 = true;
        p.streams = 10;
        p.ca = Some(dir.path().join("ca.pem"));
        let report = run_ok(p).await;
        let hold = report.hold.clone().expect("hold summary");
        assert_eq!(hold.held, 25, "{report:#?}");
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        assert_eq!(Counters::get(&server.peak_open), 25);
        // 25 WebSockets, 10 per connection: three HTTP/2 connections.
        assert_eq!(h2_connections(&proxy), 3);
        server.all_closed().await;

        let mut p = plan(Mode::Echo, url, 500, 4);
        p.http2 = true;
        p.ca = Some(dir.path().join("ca.pem"));
        let before = Counters::get(&server.messages);
        let report = run_ok(p).await;
        assert!(report.ops > 0, "{report:#?}");
        assert_eq!(report.errors.total(), 0, "{report:#?}");
        assert_eq!(report.ops, Counters::get(&server.messages) - before);
        assert_eq!(
            h2_connections(&proxy),
            4,
            "four streams, one more connection"
        );
    })
    .await;
}

#[test]
fn http2_needs_wss_and_a_websocket_mode() {
    let mut p = Plan::new(Mode::Echo, "ws://127.0.0.1:1/");
    p.http2 = true;
    let error = p.validate().unwrap_err().to_string();
    assert!(error.contains("wss://"), "{error}");
    let mut p = Plan::new(Mode::Http, "https://127.0.0.1:1/");
    p.http2 = true;
    let error = p.validate().unwrap_err().to_string();
    assert!(error.contains("WebSocket modes"), "{error}");
    let mut p = Plan::new(Mode::Bulk, "wss://127.0.0.1:1/");
    p.http2 = true;
    assert!(p.validate().is_ok());
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_mode_opens_everything_at_once_and_counts_failures() {
    bounded(async {
        let (addr, server) = echo_server(None).await;
        let report = run_ok(plan(Mode::Storm, format!("ws://{addr}/"), 100, 200)).await;
        let storm = report.storm.clone().expect("storm summary");
        assert_eq!(storm.connected, 200, "{report:#?}");
        assert_eq!(storm.failed, 0);
        assert!(
            storm.all_up_secs.is_some_and(|s| s > 0.0 && s < 10.0),
            "{storm:?}"
        );
        // Every connection was open at once, then all were closed.
        assert_eq!(Counters::get(&server.peak_open), 200);
        server.all_closed().await;

        // Against a closed port: every attempt fails, none is up.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let report = run(plan(Mode::Storm, format!("ws://{closed}/"), 100, 20))
            .await
            .expect("a run");
        let storm = report.storm.expect("storm summary");
        assert_eq!((storm.connected, storm.failed), (0, 20));
        assert_eq!(storm.all_up_secs, None);
        assert_eq!(report.errors.get(ErrorKind::Refused), 20);
    })
    .await;
}
