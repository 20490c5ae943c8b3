//! `access_log` as an operator sees it, with the binary as a child process:
//! lines in a file of their own (text and JSON), none on stderr, the file
//! reopened on SIGUSR1 after a rotation, everything written by exit; and
//! `"off"`, where only the proxy's own error lines remain.

#[path = "it/common.rs"]
mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `switchyard run` as a child, its stderr line by line.
struct Running {
    child: Child,
    pid: libc::pid_t,
    lines: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    addr: SocketAddr,
}

impl Running {
    async fn start(config: &Path) -> Running {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid") as libc::pid_t;
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
        let mut running = Running {
            child,
            pid,
            lines,
            log: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = running.wait_for("listening on ").await;
        let rest = &line[line.find("listening on ").unwrap() + 13..];
        running.addr = rest.split_whitespace().next().unwrap().parse().unwrap();
        running
    }

    async fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match within(self.lines.recv()).await {
                Some(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                None => panic!("stderr closed before {needle:?}:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Send `signal` once the child catches it.
    async fn signal(&self, signal: libc::c_int) {
        within(async {
            loop {
                let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
                    .unwrap_or_default();
                let caught = status
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                    .is_some_and(|m| m & (1 << (signal - 1)) != 0);
                if caught {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // SAFETY: our own unreaped child.
        assert_eq!(unsafe { libc::kill(self.pid, signal) }, 0);
    }

    /// Stop with SIGTERM and collect the rest of stderr.
    async fn stop(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM).await;
        let status = within(self.child.wait()).await.expect("wait");
        assert!(status.success(), "{status:?}");
        while let Some(line) = within(self.lines.recv()).await {
            self.log.push(line);
        }
        self.log
    }
}

/// The lines of `path` once it has `n` of them (the writer flushes at least
/// once a second).
async fn lines_of(path: &Path, n: usize) -> Vec<String> {
    within(async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn route_file(backend: SocketAddr, server: &str) -> String {
    format!(
        "[server]\n{server}\nshutdown_timeout = \"2s\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.a]\nservers = [\"{backend}\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n"
    )
}

#[tokio::test]
async fn access_lines_go_to_their_file_are_reopened_on_sigusr1_and_flushed_at_exit() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let config = dir.route_file(&route_file(
        backend.addr,
        "access_log = \"logs/access.log\"",
    ));
    let proxy = Running::start(&config).await;
    let file = dir.path().join("logs/access.log");

    for path in ["/one", "/two?x=1", "/three"] {
        assert_eq!(get(proxy.addr, path, &[]).await.status, 200);
    }
    let lines = lines_of(&file, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(line.contains(" INFO request peer=127.0.0.1:"), "{line}");
        assert!(
            line.contains(" method=GET http=1.1 host=localhost "),
            "{line}"
        );
    }
    // Lines of different workers meet a buffer at a time: any order.
    for path in ["/one", "/two", "/three"] {
        let field = format!(" path={path} status=200 ");
        assert!(
            lines.iter().any(|l| l.contains(&field)),
            "{path}: {lines:?}"
        );
    }

    // logrotate: move the file away, then SIGUSR1.
    let rotated = dir.path().join("logs/access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let mut proxy = proxy;
    proxy.signal(libc::SIGUSR1).await;
    proxy.wait_for("access log reopened").await;
    assert_eq!(get(proxy.addr, "/four", &[]).await.status, 200);
    let fresh = lines_of(&file, 1).await;
    assert!(fresh[0].contains("path=/four"), "{fresh:?}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        3
    );

    // A request right before the stop is in the file once the process exits.
    assert_eq!(get(proxy.addr, "/last", &[]).await.status, 200);
    let stderr = proxy.stop().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().any(|l| l.contains("path=/last")), "{text}");
    assert!(
        !stderr.iter().any(|l| l.contains("path=/")),
        "access lines on stderr too:\n{}",
        stderr.join("\n")
    );
}

#[tokio::test]
async fn json_access_lines_in_a_file_are_json() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let config = dir.route_file(&route_file(
        backend.addr,
        "access_log = \"access.json\"\nlog_format = \"json\"",
    ));
    let proxy = Running::start(&config).await;
    assert_eq!(get(proxy.addr, "/j", &[("x", "y")]).await.status, 200);
    let line = lines_of(&dir.path().join("access.json"), 1).await.remove(0);
    let value: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(value["message"], "request");
    assert_eq!(value["path"], "/j");
    assert_eq!(value["status"], 200);
    assert!(value["duration_ms"].is_number(), "{line}");
    proxy.stop().await;
}

#[tokio::test]
async fn access_log_off_leaves_only_the_proxys_own_errors() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let config = dir.route_file(&route_file(backend.addr, "access_log = \"off\""));
    let proxy = Running::start(&config).await;
    assert_eq!(get(proxy.addr, "/fine", &[]).await.status, 200);
    let got = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    let stderr = proxy.stop().await;
    assert!(
        !stderr.iter().any(|l| l.contains("/fine")),
        "{}",
        stderr.join("\n")
    );
    assert!(
        stderr.iter().any(|l| l.contains("two Host headers")),
        "the 400 was not logged:\n{}",
        stderr.join("\n")
    );
}

#[tokio::test]
async fn without_the_key_access_lines_go_to_stderr() {
    let backend = HttpBackend::start("a").await;
    let dir = TestDir::new();
    let config = dir.route_file(&route_file(backend.addr, ""));
    let mut proxy = Running::start(&config).await;
    assert_eq!(get(proxy.addr, "/default", &[]).await.status, 200);
    let line = proxy.wait_for(" path=\"/default\"").await;
    assert!(line.contains("INFO access: request "), "{line}");
    assert!(line.contains(" status=200 "), "{line}");
    proxy.stop().await;
}

/// A WebSocket upstream that completes each handshake, then reads and never
/// sends a byte, not even a Pong.
async fn mute_websocket_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut sink = [0u8; 4096];
                while let Ok(1..) = stream.read(&mut sink).await {}
            });
        }
    });
    addr
}

/// The `tunnel closed` events in the JSON access log at `path`, once there
/// are `n` of them.
async fn tunnel_events(path: &Path, n: usize) -> Vec<serde_json::Value> {
    within(async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let events: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["message"] == "tunnel closed")
                .collect();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn tunnel_lines_of_websockets_over_http2_say_http_2_and_who_closed_them() {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::Message;
    let echo = WsBackend::start().await;
    let mute = mute_websocket_upstream().await;
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let pings = "ping_interval = \"300ms\"\nping_timeout = \"300ms\"";
    let config = dir.route_file(&format!(
        "[server]\naccess_log = \"access.json\"\nlog_format = \"json\"\n\
         shutdown_timeout = \"2s\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"certs/server.crt\", key = \"certs/server.key\" }}\n\
         [upstream.echo]\nservers = [\"{}\"]\n[upstream.mute]\nservers = [\"{mute}\"]\n\
         [[route]]\npath = \"/mute/\"\nupstream = \"mute\"\n{pings}\n\
         [[route]]\npath = \"/\"\nupstream = \"echo\"\n{pings}\n",
        echo.addr
    ));
    let proxy = Running::start(&config).await;
    let file = dir.path().join("access.json");
    let client = H2Client::connect(proxy.addr, &ca).await;

    // A client that reads and never answers the proxy's Ping.
    let mut sender = client.sender.clone();
    let mut response = within(sender.send_request(client.websocket_request("/quiet", &[])))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let mut quiet = hyper_util::rt::TokioIo::new(upgraded);
    let mut sink = [0u8; 4096];
    within(async { while let Ok(1..) = quiet.read(&mut sink).await {} }).await;
    // A client whose upstream never answers: it gets Close 1001.
    let (_, mut ws) = client.websocket("/mute/", &[]).await.expect("200");
    let close = within(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a Close, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close, Some(1001));
    let events = tunnel_events(&file, 2).await;
    let by = |closed_by: &str| {
        events
            .iter()
            .find(|e| e["closed_by"] == closed_by)
            .unwrap_or_else(|| panic!("no tunnel closed by {closed_by}: {events:?}"))
    };
    let quiet_client = by("client-timeout");
    assert_eq!(quiet_client["http"], "2", "{quiet_client}");
    assert_eq!(quiet_client["route"], "/", "{quiet_client}");
    assert_eq!(quiet_client["proxy_close"], 1001, "{quiet_client}");
    let quiet_upstream = by("upstream-timeout");
    assert_eq!(quiet_upstream["http"], "2", "{quiet_upstream}");
    assert_eq!(quiet_upstream["route"], "/mute/", "{quiet_upstream}");

    // A well-behaved WebSocket open at SIGTERM gets the drain's goodbye.
    let (_, mut ws) = client.websocket("/chat", &[]).await.expect("200");
    within(futures_util::SinkExt::send(&mut ws, Message::text("hi")))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut close = None;
        while let Some(Ok(message)) = within(ws.next()).await {
            if let Message::Close(frame) = message {
                close = frame.map(|f| u16::from(f.code));
            }
        }
        close
    });
    let events = tunnel_events(&file, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    proxy.stop().await;
    assert_eq!(within(reader).await.unwrap(), Some(1001));
    let events = tunnel_events(&file, 3).await;
    let drained = events
        .iter()
        .find(|e| e["closed_by"] == "shutdown")
        .unwrap_or_else(|| panic!("no tunnel closed by the drain: {events:?}"));
    assert_eq!(drained["http"], "2", "{drained}");
    assert_eq!(drained["proxy_close"], 1001, "{drained}");
    assert_eq!(drained["messages_to_upstream"], 1, "{drained}");
}
