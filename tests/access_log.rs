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
        assert!(line.contains(" method=GET host=localhost "), "{line}");
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
