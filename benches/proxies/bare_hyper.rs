//! The floor of an HTTP proxy built on hyper: this same bench binary
//! re-executed as `proxies --bare-hyper LISTEN BACKEND`.
//!
//! hyper's HTTP/1.1 server and client joined with nothing else: no routing,
//! no header policy, no timeouts, no access records, no metrics, no pool
//! (each client connection gets one upstream connection, driven by a task
//! of its own, as Switchyard's pooled connections are). Two worker threads,
//! each a single-threaded runtime accepting from its own copy of the
//! listening socket: Switchyard's layout. It serves the `http` workload
//! only. Against it, Switchyard's rows show what Switchyard's own work
//! costs per request; against nginx, it shows what hyper alone costs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client, SendRequest};
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const WORKERS: usize = 2;

/// Entry point of `--bare-hyper LISTEN BACKEND`.
pub fn main(listen: &str, backend: &str) -> ExitCode {
    let (listen, backend) = match (listen.parse::<SocketAddr>(), backend.parse::<SocketAddr>()) {
        (Ok(l), Ok(b)) => (l, b),
        _ => {
            eprintln!("bare-hyper: usage: --bare-hyper LISTEN_ADDR BACKEND_ADDR");
            return ExitCode::FAILURE;
        }
    };
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare-hyper: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("bare-hyper: {e}");
        return ExitCode::FAILURE;
    }
    let mut threads = Vec::new();
    for _ in 0..WORKERS {
        let copy = match listener.try_clone() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bare-hyper: {e}");
                return ExitCode::FAILURE;
            }
        };
        threads.push(std::thread::spawn(move || worker(copy, backend)));
    }
    for thread in threads {
        let _ = thread.join();
    }
    ExitCode::FAILURE
}

fn worker(listener: std::net::TcpListener, backend: SocketAddr) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return eprintln!("bare-hyper: {e}"),
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return eprintln!("bare-hyper: {e}"),
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, backend));
                }
                Err(e) => {
                    eprintln!("bare-hyper: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// One client connection and its one upstream connection.
async fn serve(stream: TcpStream, backend: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let upstream = match TcpStream::connect(backend).await {
        Ok(u) => u,
        Err(e) => return eprintln!("bare-hyper: connect {backend}: {e}"),
    };
    let _ = upstream.set_nodelay(true);
    let (sender, connection) = match client::handshake(TokioIo::new(upstream)).await {
        Ok(pair) => pair,
        Err(e) => return eprintln!("bare-hyper: {e}"),
    };
    tokio::spawn(connection);
    let sender: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::new(Mutex::new(Some(sender)));
    let service = service_fn(move |req: Request<Incoming>| forward(sender.clone(), req));
    let _ = server::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Send the request as it came; hand the answer back as it came.
async fn forward(
    slot: Arc<Mutex<Option<SendRequest<Incoming>>>>,
    req: Request<Incoming>,
) -> Result<Response<Either<Incoming, Empty<Bytes>>>, Infallible> {
    let taken = slot.lock().map(|mut s| s.take()).unwrap_or(None);
    let Some(mut sender) = taken else {
        return Ok(bad_gateway());
    };
    // The previous response was read to its end before this request was
    // read, so the connection is ready; `ready` confirms it.
    if sender.ready().await.is_err() {
        return Ok(bad_gateway());
    }
    let answer = sender.send_request(req);
    if let Ok(mut s) = slot.lock() {
        *s = Some(sender);
    }
    Ok(match answer.await {
        Ok(response) => response.map(Either::Left),
        Err(_) => bad_gateway(),
    })
}

fn bad_gateway() -> Response<Either<Incoming, Empty<Bytes>>> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
