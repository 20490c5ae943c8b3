//! What `switchyard run` writes, read as an operator's log shipper reads it:
//! the access events of static files as JSON lines (complete responses are
//! not "cut short", numbers are numbers), a client that really goes away
//! mid-body, and every busy port named with its place in the route file.
//!
//! The proxy runs as a child process; its stderr is read line by line, every
//! wait is bounded, and the child is killed by its PID when its guard drops.

#[path = "it/common.rs"]
mod common;

use common::*;
use http::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A `switchyard run` child whose stderr is JSON lines.
struct Child {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    http: SocketAddr,
}

impl Child {
    async fn start(config: &Path) -> Child {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchyard run");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut child = Child {
            child,
            lines,
            http: "0.0.0.0:0".parse().unwrap(),
        };
        let listening = child
            .event(|e| message(e).starts_with("listening on "))
            .await;
        let text = message(&listening);
        let addr = text["listening on ".len()..]
            .split_whitespace()
            .next()
            .expect("an address");
        child.http = addr.parse().expect("listener address");
        child
    }

    /// The next JSON event matching `wanted`, skipping others.
    async fn event(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        within(async {
            loop {
                let line = self.lines.recv().await.expect("the proxy's stderr ended");
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if wanted(&event) {
                    return event;
                }
            }
        })
        .await
    }

    /// The next `access` event.
    async fn access(&mut self) -> Value {
        self.event(|e| e["target"] == "access").await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the PID of our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn message(event: &Value) -> &str {
    event["message"].as_str().unwrap_or("")
}

/// A route file serving `site/static/` as JSON logs.
fn static_site(dir: &TestDir) -> std::path::PathBuf {
    dir.write("site/static/chat.css", "body { color: #123 }\n".repeat(250));
    dir.route_file(
        "[server]\nlog_format = \"json\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/static/\"\nroot = \"site\"\n",
    )
}

/// Send raw requests on one connection and read `answers` complete
/// responses (each with a `Content-Length`), like a keep-alive client.
async fn keep_alive(addr: SocketAddr, requests: &[String], head_only: &[bool]) -> Vec<String> {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    let mut answers = Vec::new();
    for (request, head) in requests.iter().zip(head_only) {
        within(stream.write_all(request.as_bytes()))
            .await
            .expect("write");
        let head_text = within(read_head(&mut stream)).await;
        let length: usize = head_text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let status_has_body = !head_text.starts_with("HTTP/1.1 304");
        if !head && status_has_body {
            let mut body = vec![0u8; length];
            within(stream.read_exact(&mut body)).await.expect("body");
        }
        answers.push(head_text);
    }
    answers
}

#[tokio::test]
async fn static_files_served_whole_are_logged_as_requests_with_numbers() {
    let dir = TestDir::new();
    let config = static_site(&dir);
    let mut proxy = Child::start(&config).await;

    // GET, HEAD, a range, a conditional GET: all on one kept-alive
    // connection, as a browser fetches a page's assets.
    let first = get(proxy.http, "/static/chat.css", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    let request = |method: &str, extra: &str| {
        format!("{method} /static/chat.css HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n")
    };
    let requests = [
        request("GET", ""),
        request("HEAD", ""),
        request("GET", "Range: bytes=0-99\r\n"),
        request("GET", &format!("If-None-Match: {etag}\r\n")),
        request("GET", ""),
    ];
    let answers = keep_alive(proxy.http, &requests, &[false, true, false, false, false]).await;
    assert!(answers[2].starts_with("HTTP/1.1 206"), "{}", answers[2]);
    assert!(answers[3].starts_with("HTTP/1.1 304"), "{}", answers[3]);

    let expected = [
        ("GET", 200, 5250),
        ("GET", 200, 5250),
        ("HEAD", 200, 0),
        ("GET", 206, 100),
        ("GET", 304, 0),
        ("GET", 200, 5250),
    ];
    for (method, status, bytes) in expected {
        let event = proxy.access().await;
        assert_eq!(message(&event), "request", "{event}");
        assert!(event.get("error").is_none(), "{event}");
        assert_eq!(event["method"], method, "{event}");
        assert_eq!(event["status"], status, "{event}");
        assert_eq!(event["bytes"], bytes, "{event}");
        assert!(event["duration_ms"].is_number(), "duration_ms: {event}");
        assert_eq!(event["level"], "INFO");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_still_reported() {
    let dir = TestDir::new();
    let config = static_site(&dir);
    // Far more than the socket buffers of loopback hold.
    dir.write("site/static/big.bin", vec![7u8; 48 << 20]);
    let mut proxy = Child::start(&config).await;
    {
        let mut stream = within(TcpStream::connect(proxy.http))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let head = within(read_head(&mut stream)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut some = vec![0u8; 64 * 1024];
        within(stream.read_exact(&mut some))
            .await
            .expect("some body");
        // Reset rather than close, so the proxy's next write fails at once.
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    let event = proxy.access().await;
    assert_eq!(message(&event), "response cut short", "{event}");
    assert_eq!(event["status"], 200);
    let bytes = event["bytes"].as_u64().expect("bytes is a number");
    assert!(bytes < 48 << 20, "{event}");
    assert!(event["error"].is_string(), "{event}");
}

#[tokio::test]
async fn run_names_every_busy_port_with_its_place_in_the_file() {
    let held_a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (held_a.local_addr().unwrap(), held_b.local_addr().unwrap());
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let config = dir.route_file(&format!(
        "[server]\nadmin = \"{b}\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nbind = \"{a}\"\n\n[upstream.a]\nservers = [\"{}\"]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"a\"\n",
        backend.addr
    ));
    let output = within(
        Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run switchyard");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = config.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{file}:2:9: cannot listen on {b}: address already in use (another process holds the port)"
            ),
            format!(
                "{file}:8:8: cannot listen on {a}: address already in use (another process holds the port)"
            ),
        ],
        "{stderr}"
    );
    // `validate` binds nothing: the same file is valid.
    let validate = within(
        Command::new(BIN)
            .arg("validate")
            .arg("-c")
            .arg(&config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run switchyard validate");
    assert!(validate.status.success(), "{validate:?}");
    // …and says so in its help.
    let help = within(
        Command::new(BIN)
            .args(["validate", "--help"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run switchyard validate --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("binds no port"), "{help}");
    drop((held_a, held_b));
}
