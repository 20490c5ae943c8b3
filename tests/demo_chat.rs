//! The demo chat backend over real sockets: sign-in over HTTP, the room over
//! WebSocket clients, the page assets on disk, and shutdown.
//!
//! Every test starts its own backend on `127.0.0.1:0`; every wait is bounded.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use switchyard::demo::chat::{serve, write_static_assets};

/// Bound on every single wait in these tests.
const STEP: Duration = Duration::from_secs(5);

/// Bound on the one step whose length depends on throughput: flooding a
/// room until a client's socket buffers and queue are full.
const FLOOD: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    bounded_by(STEP, what, future).await
}

async fn bounded_by<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ---------------------------------------------------------------------------
// The backend under test
// ---------------------------------------------------------------------------

struct Backend {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = bounded("bind", TcpListener::bind("127.0.0.1:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shutdown.clone()));
        Backend {
            addr,
            shutdown,
            task,
        }
    }

    /// Cancels the token and waits for `serve` to return.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let result = bounded("serve to return", &mut self.task).await;
        result.expect("serve panicked").expect("serve failed");
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client over a raw TcpStream
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head, then `Content-Length` bytes of body).
async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = bounded("response head", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(read > 0, "connection closed before the response head");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = bounded("response body", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(read > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..read]);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Sends `head` (request line and headers, without the blank line) and `body`.
async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> HttpResponse {
    let mut stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let mut raw = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    bounded("send request", stream.write_all(&bytes))
        .await
        .unwrap();
    read_response(&mut stream).await
}

async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> HttpResponse {
    let mut head = format!("GET {path} HTTP/1.1");
    if let Some(cookie) = cookie {
        head.push_str(&format!("\r\nCookie: {cookie}"));
    }
    request(addr, &head, b"").await
}

async fn post_form(addr: SocketAddr, body: &str) -> HttpResponse {
    request(
        addr,
        "POST /signin HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        body.as_bytes(),
    )
    .await
}

/// Signs `name` in and returns the `name=…` cookie pair to send back.
async fn sign_in(addr: SocketAddr, name: &str) -> String {
    let response = post_form(addr, &format!("name={name}")).await;
    assert_eq!(response.status, 302, "{response:?}");
    assert_eq!(response.header("location"), Some("/"));
    let set_cookie = response.header("set-cookie").expect("a Set-Cookie header");
    let (pair, _attributes) = set_cookie.split_once(';').unwrap();
    pair.to_owned()
}

/// The user JSON inside a `name=…` cookie pair.
fn cookie_user(pair: &str) -> Value {
    let value = pair.strip_prefix("name=").unwrap();
    serde_json::from_slice(&STANDARD.decode(value).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// A WebSocket chat client
// ---------------------------------------------------------------------------

struct Client {
    ws: WebSocketStream<TcpStream>,
    last_id: u64,
}

impl Client {
    async fn connect(addr: SocketAddr, cookie: Option<&str>) -> Client {
        let stream = bounded("connect", TcpStream::connect(addr)).await.unwrap();
        Client::handshake(stream, cookie).await
    }

    /// Runs the WebSocket handshake on an already connected `stream`.
    async fn handshake(stream: TcpStream, cookie: Option<&str>) -> Client {
        let addr = stream.peer_addr().unwrap();
        let mut request = format!("ws://{addr}/ws/chat")
            .into_client_request()
            .unwrap();
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("Cookie", HeaderValue::from_str(cookie).unwrap());
        }
        stream.set_nodelay(true).unwrap();
        let (ws, response) = bounded("handshake", client_async(request, stream))
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        Client { ws, last_id: 0 }
    }

    async fn send(&mut self, message: Message) {
        bounded("send", self.ws.send(message)).await.unwrap();
    }

    /// The next chat message; checks that ids keep increasing.
    async fn next(&mut self) -> Value {
        loop {
            let frame = bounded("a message", self.ws.next()).await;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str()).unwrap();
                    let id = message["id"].as_u64().expect("a numeric id");
                    assert!(id > self.last_id, "id {id} after {}", self.last_id);
                    self.last_id = id;
                    return message;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Expects a message of `kind` about user `name` carrying `data`.
    async fn expect(&mut self, kind: &str, name: &str, data: Value) -> Value {
        let message = self.next().await;
        assert_eq!(message["type"], kind, "{message}");
        assert_eq!(message["user"]["name"], name, "{message}");
        assert_eq!(message["data"], data, "{message}");
        message
    }

    /// Expects the server to close the connection with a close frame.
    async fn expect_close(&mut self) -> CloseFrame {
        loop {
            match bounded("a close frame", self.ws.next()).await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    // Let the client answer and see the connection end.
                    while let Some(Ok(_)) = bounded("the end", self.ws.next()).await {}
                    return frame;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    async fn close(mut self) {
        bounded("close", self.ws.close(None)).await.unwrap();
        while let Some(Ok(_)) = bounded("the end", self.ws.next()).await {}
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("an array of users")
        .iter()
        .map(|user| user["name"].as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP: sign-in, pages, errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sign_in_sets_the_cookie_and_redirects() {
    let backend = Backend::start().await;
    let addr = backend.addr;

    let response = post_form(addr, "name=Alice+Smith").await;
    assert_eq!(response.status, 302);
    assert_eq!(response.header("location"), Some("/"));
    let set_cookie = response.header("set-cookie").unwrap();
    assert!(
        set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "{set_cookie}"
    );
    let first = cookie_user(set_cookie.split(';').next().unwrap());
    assert_eq!(first["name"], "Alice Smith");
    let id = first["id"].as_u64().unwrap();
    assert_eq!(first["image"].as_u64().unwrap(), id % 10);

    // Ids keep counting; an empty name gets the tutorial's default.
    let anonymous = cookie_user(&sign_in(addr, "").await);
    assert_eq!(anonymous["name"], "路人甲");
    assert_eq!(anonymous["id"].as_u64().unwrap(), id + 1);
    assert_eq!(anonymous["image"].as_u64().unwrap(), (id + 1) % 10);

    // Names are cut to 32 characters (here: 40 three-byte characters).
    let long = "%E9%95%B7".repeat(40);
    let cut = cookie_user(&sign_in(addr, &long).await);
    assert_eq!(cut["name"], "長".repeat(32));

    let signout = get(addr, "/signout", None).await;
    assert_eq!(signout.status, 302);
    assert_eq!(signout.header("location"), Some("/signin"));
    assert!(
        signout
            .header("set-cookie")
            .unwrap()
            .starts_with("name=; Max-Age=0")
    );

    backend.stop().await;
}

#[tokio::test]
async fn bad_sign_in_requests_get_clean_errors() {
    let backend = Backend::start().await;
    let addr = backend.addr;

    let json = request(
        addr,
        "POST /signin HTTP/1.1\r\nContent-Type: application/json",
        br#"{"name":"x"}"#,
    )
    .await;
    assert_eq!(json.status, 415);

    let huge = format!("name={}", "x".repeat(5000));
    assert_eq!(post_form(addr, &huge).await.status, 413);

    assert_eq!(post_form(addr, "name=%FF").await.status, 400);

    let wrong_method = request(addr, "PUT /signin HTTP/1.1", b"").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, POST"));

    let missing = get(addr, "/nope", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, "Not found\n");

    // The backend does not serve /static/ itself: the proxy does.
    assert_eq!(get(addr, "/static/chat.js", None).await.status, 404);

    backend.stop().await;
}

#[tokio::test]
async fn the_room_page_needs_a_valid_cookie() {
    let backend = Backend::start().await;
    let addr = backend.addr;

    let anonymous = get(addr, "/", None).await;
    assert_eq!(anonymous.status, 302);
    assert_eq!(anonymous.header("location"), Some("/signin"));

    let forged = get(addr, "/", Some("name=bm90IGpzb24=")).await;
    assert_eq!(forged.status, 302);
    assert_eq!(forged.header("location"), Some("/signin"));

    let signin = get(addr, "/signin", None).await;
    assert_eq!(signin.status, 200);
    assert!(signin.body.contains(r#"action="/signin""#));
    assert!(signin.body.contains(r#"name="name""#));

    let cookie = sign_in(addr, "alice").await;
    let room = get(addr, "/", Some(&format!("theme=dark; {cookie}"))).await;
    assert_eq!(room.status, 200);
    assert_eq!(
        room.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for id in [
        "message-list",
        "user-list",
        "message-input",
        "send-button",
        "status",
    ] {
        assert!(room.body.contains(&format!(r#"id="{id}""#)), "#{id}");
    }

    backend.stop().await;
}

#[tokio::test]
async fn static_assets_are_written_where_the_pages_look_for_them() {
    let root = tempfile::tempdir().unwrap();
    write_static_assets(root.path()).unwrap();
    // Writing twice replaces the files.
    write_static_assets(root.path()).unwrap();

    let backend = Backend::start().await;
    let cookie = sign_in(backend.addr, "alice").await;
    let room = get(backend.addr, "/", Some(&cookie)).await;
    let signin = get(backend.addr, "/signin", None).await;

    let mut referenced = Vec::new();
    for page in [&room.body, &signin.body] {
        referenced.extend(
            page.split('"')
                .filter(|piece| piece.starts_with("/static/"))
                .map(str::to_owned),
        );
    }
    for path in ["/static/chat.js", "/static/chat.css"] {
        assert!(
            referenced.iter().any(|r| r == path),
            "{path} not referenced"
        );
    }
    for path in &referenced {
        assert_file(root.path(), path);
    }

    // The script builds the avatar paths and the WebSocket URL itself.
    let script = std::fs::read_to_string(root.path().join("static/chat.js")).unwrap();
    assert!(script.contains("'/static/images/' + safe + '.svg'"));
    assert!(script.contains("'/ws/chat'"));
    for image in 0..10 {
        assert_file(root.path(), &format!("/static/images/{image}.svg"));
    }

    backend.stop().await;
}

/// nginx `root` semantics: the file is `root` + the request path.
fn assert_file(root: &Path, request_path: &str) {
    let file = root.join(request_path.trim_start_matches('/'));
    let metadata = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    assert!(metadata.len() > 0, "{file:?} is empty");
}

// ---------------------------------------------------------------------------
// WebSocket: the room
// ---------------------------------------------------------------------------

#[tokio::test]
async fn three_users_join_chat_and_leave() {
    let backend = Backend::start().await;
    let addr = backend.addr;
    let alice_cookie = sign_in(addr, "alice").await;
    let bob_cookie = sign_in(addr, "bob").await;
    let carol_cookie = sign_in(addr, "carol").await;

    // alice: her own join, then the list with herself.
    let mut alice = Client::connect(addr, Some(&alice_cookie)).await;
    alice.expect("join", "alice", json!("alice joined.")).await;
    let list = alice.next().await;
    assert_eq!(list["type"], "list");
    assert_eq!(list["user"]["name"], "alice");
    assert_eq!(names(&list["data"]), ["alice"]);
    assert_eq!(list["data"][0], cookie_user(&alice_cookie));

    // bob: everyone sees his join (with one id), then he alone gets the list.
    let mut bob = Client::connect(addr, Some(&bob_cookie)).await;
    let seen_by_alice = alice.expect("join", "bob", json!("bob joined.")).await;
    let seen_by_bob = bob.expect("join", "bob", json!("bob joined.")).await;
    assert_eq!(seen_by_alice, seen_by_bob);
    let list = bob.next().await;
    assert_eq!(list["type"], "list");
    assert_eq!(list["user"]["name"], "bob");
    assert_eq!(names(&list["data"]), ["alice", "bob"]);

    let mut carol = Client::connect(addr, Some(&carol_cookie)).await;
    alice.expect("join", "carol", json!("carol joined.")).await;
    bob.expect("join", "carol", json!("carol joined.")).await;
    carol.expect("join", "carol", json!("carol joined.")).await;
    let list = carol.next().await;
    assert_eq!(list["type"], "list");
    assert_eq!(names(&list["data"]), ["alice", "bob", "carol"]);

    // Blank text and binary messages are ignored; chat is trimmed and
    // broadcast to all three with one id.
    alice.send(Message::text("  \n\t ")).await;
    alice.send(Message::binary(vec![1, 2, 3])).await;
    alice.send(Message::text("  hello, everyone  ")).await;
    let mut ids = Vec::new();
    for client in [&mut alice, &mut bob, &mut carol] {
        let message = client
            .expect("chat", "alice", json!("hello, everyone"))
            .await;
        ids.push(message["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    carol.send(Message::text("你好 <b>bob</b>")).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client
            .expect("chat", "carol", json!("你好 <b>bob</b>"))
            .await;
    }

    // bob leaves: the other two are told, and nothing else came first.
    bob.close().await;
    alice.expect("left", "bob", json!("bob left.")).await;
    carol.expect("left", "bob", json!("bob left.")).await;

    alice.send(Message::text("bye bob")).await;
    alice.expect("chat", "alice", json!("bye bob")).await;
    carol.expect("chat", "alice", json!("bye bob")).await;

    backend.stop().await;
}

#[tokio::test]
async fn a_missing_or_invalid_cookie_is_closed_with_4001() {
    let backend = Backend::start().await;
    let forged = format!("name={}", STANDARD.encode(r#"{"id":1,"name":"x"}"#));
    for cookie in [None, Some("name=garbage"), Some(forged.as_str())] {
        let mut client = Client::connect(backend.addr, cookie).await;
        let frame = client.expect_close().await;
        assert_eq!(frame.code, CloseCode::from(4001), "{cookie:?}");
        assert_eq!(frame.reason.as_str(), "Invalid user");
    }
    backend.stop().await;
}

#[tokio::test]
async fn bad_upgrade_requests_get_400() {
    let backend = Backend::start().await;
    let addr = backend.addr;
    let upgrade = "GET /ws/chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade";

    let no_key = request(
        addr,
        &format!("{upgrade}\r\nSec-WebSocket-Version: 13"),
        b"",
    )
    .await;
    assert_eq!(no_key.status, 400);
    assert!(no_key.body.contains("Sec-WebSocket-Key"), "{}", no_key.body);

    let old_version = request(
        addr,
        &format!(
            "{upgrade}\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
        ),
        b"",
    )
    .await;
    assert_eq!(old_version.status, 400);
    assert_eq!(old_version.header("sec-websocket-version"), Some("13"));

    let plain = get(addr, "/ws/chat", None).await;
    assert_eq!(plain.status, 400);

    let post = request(addr, "POST /ws/chat HTTP/1.1", b"").await;
    assert_eq!(post.status, 405);

    backend.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let backend = Backend::start().await;
    let alice_cookie = sign_in(backend.addr, "alice").await;
    let bob_cookie = sign_in(backend.addr, "bob").await;
    let mut alice = Client::connect(backend.addr, Some(&alice_cookie)).await;
    alice.expect("join", "alice", json!("alice joined.")).await;
    alice.next().await;
    let mut bob = Client::connect(backend.addr, Some(&bob_cookie)).await;
    alice.expect("join", "bob", json!("bob joined.")).await;
    bob.expect("join", "bob", json!("bob joined.")).await;
    bob.next().await;

    bob.send(Message::text("x".repeat(70 * 1024))).await;
    let frame = bob.expect_close().await;
    assert_eq!(frame.code, CloseCode::Size);
    alice.expect("left", "bob", json!("bob left.")).await;

    backend.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_without_blocking_the_room() {
    let backend = Backend::start().await;
    let addr = backend.addr;
    let slow_cookie = sign_in(addr, "slow").await;
    let fast_cookie = sign_in(addr, "fast").await;

    // The slow client offers a tiny receive window and then stops reading.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = bounded("connect", socket.connect(addr)).await.unwrap();
    let mut slow = Client::handshake(stream, Some(&slow_cookie)).await;
    slow.next().await;
    slow.next().await;

    let mut fast = Client::connect(addr, Some(&fast_cookie)).await;
    fast.expect("join", "fast", json!("fast joined.")).await;
    fast.next().await;

    // The fast client chats on, waiting for each message to come back, until
    // it is told that the slow one left. Without the bounded queues, the
    // broadcast would stall on the slow socket and `left` would never come.
    let big = "x".repeat(8 * 1024);
    let left = bounded_by(FLOOD, "the slow client to be dropped", async {
        for _ in 0..5_000 {
            fast.send(Message::text(big.as_str())).await;
            let message = fast.next().await;
            match message["type"].as_str() {
                Some("chat") => continue,
                Some("left") => return message,
                _ => panic!("unexpected {message}"),
            }
        }
        panic!("the slow client was never dropped");
    })
    .await;
    assert_eq!(left["user"]["name"], "slow");
    assert_eq!(left["data"], "slow left.");

    // When the slow client reads at last, what was queued ends with 1008.
    let frame = loop {
        match bounded("the slow client's backlog", slow.ws.next()).await {
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            other => panic!("expected text or close, got {other:?}"),
        }
    };
    assert_eq!(frame.code, CloseCode::Policy);

    fast.close().await;
    backend.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_serve_returns() {
    let backend = Backend::start().await;
    let addr = backend.addr;
    let alice_cookie = sign_in(addr, "alice").await;
    let bob_cookie = sign_in(addr, "bob").await;
    let mut alice = Client::connect(addr, Some(&alice_cookie)).await;
    alice.next().await;
    alice.next().await;
    let mut bob = Client::connect(addr, Some(&bob_cookie)).await;
    alice.next().await;
    bob.next().await;
    bob.next().await;

    // An idle keep-alive HTTP connection must not hold shutdown up.
    let mut idle = bounded("connect", TcpStream::connect(addr)).await.unwrap();
    let keep_alive = format!("GET /signin HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    bounded("send", idle.write_all(keep_alive.as_bytes()))
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.status, 200);

    let started = tokio::time::Instant::now();
    backend.shutdown.cancel();
    for client in [&mut alice, &mut bob] {
        let frame = client.expect_close().await;
        assert_eq!(frame.code, CloseCode::Away);
    }
    let mut rest = Vec::new();
    let read = bounded("idle connection closed", idle.read_to_end(&mut rest)).await;
    assert!(read.is_ok_and(|n| n == 0), "{rest:?}");

    backend.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );

    // The listener is gone.
    let refused = bounded("connect after shutdown", TcpStream::connect(addr)).await;
    assert!(refused.is_err());
}
