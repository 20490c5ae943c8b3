//! The `switchyard` binary as an operator runs it: `validate` and `run` as
//! child processes, their exit codes and messages, and the signals (SIGTERM,
//! SIGINT, SIGHUP), `/readyz` during a stop, and running out of file
//! descriptors.
//!
//! Every listener binds port 0; the real ports come from the log lines the
//! child writes on stderr. Every wait is bounded, and a child left running by
//! a failing test is killed (SIGKILL, by its PID) when its guard drops.

#[path = "it/common.rs"]
mod common;

use common::*;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

// ------------------------------------------------------------------ helpers

/// Run `switchyard ARGS` to the end and collect its output.
async fn switchyard(args: &[&OsStr]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    within(command.output()).await.expect("run switchyard")
}

/// A `switchyard run` child process. Dropping it kills the process with
/// SIGKILL unless it has already exited.
struct Switchyard {
    child: tokio::process::Child,
    pid: libc::pid_t,
    /// stderr, line by line, escape sequences removed.
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line received so far.
    log: Vec<String>,
    /// Traffic listeners from the `listening on ADDR (SCHEME)` lines.
    listeners: Vec<(SocketAddr, String)>,
}

impl Switchyard {
    /// Start `switchyard run -c config` and wait until it has logged
    /// `listeners` traffic listeners.
    async fn start(config: &Path, listeners: usize) -> Switchyard {
        Switchyard::start_limited(config, listeners, None).await
    }

    /// Like [`Switchyard::start`], with `RLIMIT_NOFILE` (soft and hard) set
    /// to `open_files` in the child.
    async fn start_limited(
        config: &Path,
        listeners: usize,
        open_files: Option<libc::rlim_t>,
    ) -> Switchyard {
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = open_files {
            // SAFETY: the closure runs in the child between fork and exec and
            // only calls setrlimit, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawn switchyard run");
        let pid = child.id().expect("pid") as libc::pid_t;
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(strip_escapes(&line)).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Switchyard {
            child,
            pid,
            lines,
            log: Vec::new(),
            listeners: Vec::new(),
        };
        while proxy.listeners.len() < listeners {
            let line = proxy
                .wait_for_line(|line| traffic_listener(line).is_some(), "listening on")
                .await;
            proxy.listeners.extend(traffic_listener(&line));
        }
        proxy
    }

    /// The first listener with `scheme` (`http` or `https`).
    fn listener(&self, scheme: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(_, s)| s == scheme)
            .map(|(addr, _)| *addr)
            .unwrap_or_else(|| panic!("no {scheme} listener in {:?}", self.listeners))
    }

    fn http(&self) -> SocketAddr {
        self.listener("http")
    }

    /// The admin address, from the `admin listening on ADDR` line.
    async fn admin(&mut self) -> SocketAddr {
        const NEEDLE: &str = "admin listening on ";
        let logged = self.log.iter().find(|line| line.contains(NEEDLE)).cloned();
        let line = match logged {
            Some(line) => line,
            None => self.wait_for(NEEDLE).await,
        };
        let rest = &line[line.find(NEEDLE).expect("needle") + NEEDLE.len()..];
        let addr = rest.split_whitespace().next().expect("an address");
        addr.parse().expect("admin address")
    }

    /// Wait for the next line containing `needle` and return it.
    async fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_line(|line| line.contains(needle), needle)
            .await
    }

    /// Wait for the next line for which `wanted` holds.
    async fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        match self.try_wait_for_line(wanted, what).await {
            Some(line) => line,
            None => panic!(
                "switchyard closed stderr before logging {what:?}; log:\n{}",
                self.log.join("\n")
            ),
        }
    }

    /// Wait for the next line for which `wanted` holds; `None` if stderr
    /// closes first (the process ended).
    async fn try_wait_for_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        what: &str,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Ok(None) => return None,
                Err(_) => panic!(
                    "no log line {what:?} within {STEP:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Move the lines written so far into [`Switchyard::log`].
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
    }

    /// Send `signal` (SIGTERM, SIGINT, SIGHUP…) once the child has a
    /// handler for it.
    ///
    /// The child logs its listeners a moment before it installs its signal
    /// handlers (see `signals_right_after_the_listening_lines_are_handled`),
    /// so this first waits until the kernel reports the signal as caught.
    async fn signal(&mut self, signal: libc::c_int) {
        within(async {
            while !self.catches(signal) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        self.kill(signal);
    }

    /// Send `signal` to the child now.
    fn kill(&mut self, signal: libc::c_int) {
        assert!(self.is_running(), "switchyard exited before the signal");
        // SAFETY: plain syscall; the PID is our unreaped child, so it cannot
        // have been reused by another process.
        let sent = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.pid);
    }

    /// Whether the child has a handler for `signal` (`SigCgt` in
    /// /proc/PID/status).
    fn catches(&self, signal: libc::c_int) -> bool {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait at most `limit` for the child to exit; then read the rest of
    /// its stderr.
    async fn exit(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "switchyard still running {limit:?} later; log:\n{}",
                self.log.join("\n")
            ),
        };
        while let Ok(Some(line)) = tokio::time::timeout(STEP, self.lines.recv()).await {
            self.log.push(line);
        }
        status
    }

    /// How many lines logged so far contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log.iter().filter(|line| line.contains(needle)).count()
    }

    /// CPU time (user + system) the child has used.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("stat");
        // Fields after the command name, which is in parentheses: state is
        // field 3, utime 14 and stime 15 (in clock ticks).
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf only reads a constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Duration::from_secs_f64(ticks as f64 / per_second)
    }

    /// Descriptor numbers below `limit` the child has free.
    fn free_fds(&self, limit: u64) -> u64 {
        let used = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("fd list")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .filter(|fd| *fd < limit)
            .count() as u64;
        limit.saturating_sub(used)
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        if self.is_running() {
            // SAFETY: as in `signal`: our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if std::thread::panicking() {
            self.drain();
            eprintln!("switchyard log:\n{}", self.log.join("\n"));
        }
    }
}

/// `listening on 127.0.0.1:PORT (http)` → the address and `http`.
fn traffic_listener(line: &str) -> Option<(SocketAddr, String)> {
    if line.contains("admin listening on ") {
        return None;
    }
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let (addr, scheme) = rest.split_once(" (")?;
    let scheme = scheme.strip_suffix(')')?;
    Some((addr.parse().ok()?, scheme.to_string()))
}

/// The line without terminal escape sequences (`ESC [ … letter`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
        } else if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Wait until connecting to `addr` is refused.
async fn refused(addr: SocketAddr) {
    within(async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

/// Close a WebSocket from the client side and read until the end.
async fn close<S>(mut ws: Ws<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let _ = within(ws.close(None)).await;
    while let Some(Ok(_)) = within(ws.next()).await {}
}

/// `text` with `{file}` and `{dir}` replaced.
fn fill(text: &str, file: &Path, dir: &Path) -> String {
    text.replace("{file}", &file.display().to_string())
        .replace("{dir}", &dir.display().to_string())
}

/// A route file with one plain listener and one WebSocket route to `ws`.
fn ws_file(ws: &WsBackend, server: &str) -> String {
    format!(
        r#"
[server]
{server}

[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["{}"]

[[route]]
path = "/ws/"
upstream = "chat"
"#,
        ws.addr
    )
}

// ----------------------------------------------------------------- validate

/// `switchyard SUBCOMMAND -c FILE` on `toml` exits 1 and prints exactly
/// `expected` on stderr (`{file}`: the route file, `{dir}`: its folder).
async fn assert_rejected(subcommand: &str, toml: &str, expected: &[&str]) {
    let dir = TestDir::new();
    let file = dir.route_file(toml);
    let output = switchyard(&[OsStr::new(subcommand), OsStr::new("-c"), file.as_os_str()]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected: Vec<String> = expected
        .iter()
        .map(|line| fill(line, &file, dir.path()))
        .collect();
    assert_eq!(stderr, expected.join("\n") + "\n");
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
}

async fn assert_invalid(toml: &str, expected: &[&str]) {
    assert_rejected("validate", toml, expected).await;
}

#[tokio::test]
async fn validate_accepts_a_good_file() {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.path().join("public")).expect("mkdir");
    let file = dir.route_file(
        r#"
[server]
shutdown_timeout = "5s"

[[listener]]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[upstream.api]
servers = ["127.0.0.1:3001", "127.0.0.1:3002"]

[[route]]
path = "/static/"
root = "public"

[[route]]
path = "/api/"
upstream = "api"

[[route]]
path = "/"
upstream = "chat"
"#,
    );
    let output = switchyard(&["validate".as_ref(), "-c".as_ref(), file.as_os_str()]).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{}: ok (2 listeners, 2 upstreams, 3 routes)\n  \
             upstream api: least-tunnels over 2 servers (127.0.0.1:3001, 127.0.0.1:3002)\n  \
             upstream chat: least-tunnels over 1 server (127.0.0.1:3000)\n",
            file.display()
        )
    );
    assert!(output.stderr.is_empty(), "{:?}", output.stderr);
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn validate_accepts_the_example_file() {
    let output = switchyard(&[
        "validate".as_ref(),
        "-c".as_ref(),
        "config.example.toml".as_ref(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("config.example.toml: ok ("),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn validate_rejects_an_unknown_key() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"
colour = "blue"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &["{file}:3:1: unknown key \"colour\" in [[listener]]; known keys: bind, http2, max_connections_per_ip, proxy_protocol, tls"],
    )
    .await;
}

/// Every unknown key and every wrong type, in one run with the other
/// problems: only a syntax error stops the reading.
#[tokio::test]
async fn validate_reports_every_unknown_key_and_wrong_type_at_once() {
    assert_invalid(
        r#"[server]
wokers = 2
shutdown_timeout = 30

[servr]
admin = "x"

[[listener]]
bind = "127.0.0.1:0"
tsl = { cert = "a", key = "b" }
proxy_protocl = true

[upstream.chat]
servers = ["127.0.0.1:3000"]
conect_timeout = "1s"

[[route]]
path = "/"
upstream = "nope"
idle_timeout = "10"
hosts = "x"
"#,
        &[
            "{file}:2:1: unknown key \"wokers\" in [server] (did you mean \"workers\"?); known keys: access_log, admin, client_body_timeout, client_header_timeout, log_format, max_connections, send_timeout, shutdown_delay, shutdown_spread, shutdown_timeout, watch, workers",
            "{file}:3:20: shutdown_timeout: expected a duration such as \"30s\", found a number (30)",
            "{file}:5:2: unknown key \"servr\" in the route file (did you mean \"server\"?); known keys: listener, route, server, upstream",
            "{file}:10:1: unknown key \"tsl\" in [[listener]] (did you mean \"tls\"?); known keys: bind, http2, max_connections_per_ip, proxy_protocol, tls",
            "{file}:11:1: unknown key \"proxy_protocl\" in [[listener]] (did you mean \"proxy_protocol\"?); known keys: bind, http2, max_connections_per_ip, proxy_protocol, tls",
            "{file}:13:1: upstream \"chat\" is not used by any route",
            "{file}:15:1: unknown key \"conect_timeout\" in [upstream.chat] (did you mean \"connect_timeout\"?); known keys: balance, connect_timeout, hash_key, health, max_handshakes, queue_timeout, read_timeout, rebalance_rate, resolve_interval, servers, tls",
            "{file}:19:12: no upstream named \"nope\" (defined: chat)",
            "{file}:20:16: duration \"10\" needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
            "{file}:21:1: unknown key \"hosts\" in [[route]] (did you mean \"host\"?); known keys: allow_origins, compress, host, idle_timeout, max_lifetime, max_message_size, path, ping_interval, ping_timeout, redirect, request_headers, response_headers, root, scheme, status, upstream",
        ],
    )
    .await;
}

/// The keys of the hardening: each validated with its position.
#[tokio::test]
async fn validate_checks_the_limit_and_log_keys() {
    assert_invalid(
        r#"[server]
max_connections = -1
access_log = "no/such/folder/access.log"
client_body_timeout = "0s"
send_timeout = 5

[[listener]]
bind = "127.0.0.1:0"
proxy_protocol = "yes"
max_connections_per_ip = 2000000

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &[
            "{file}:2:19: max_connections must be between 0 (no cap) and 1000000",
            "{file}:3:14: access_log: folder {dir}/no/such/folder does not exist",
            "{file}:4:23: must be longer than zero",
            "{file}:5:16: send_timeout: expected a duration such as \"30s\", found a number (5)",
            "{file}:9:18: proxy_protocol: expected true or false, found a string (\"yes\")",
            "{file}:10:26: max_connections_per_ip must be between 0 (no cap) and 1000000",
        ],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_a_toml_syntax_error() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0
"#,
        &["{file}:2:20: invalid basic string, expected `\"`"],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_a_duration_without_unit() {
    assert_invalid(
        r#"[server]
shutdown_timeout = "30"

[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &[
            "{file}:2:20: duration \"30\" needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_a_route_naming_a_missing_upstream() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"

[[route]]
path = "/api/"
upstream = "api"
"#,
        &["{file}:13:12: no upstream named \"api\" (defined: chat)"],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_an_upstream_no_route_uses() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[upstream.spare]
servers = ["127.0.0.1:3001"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &["{file}:7:1: upstream \"spare\" is not used by any route"],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_missing_cert_and_key_files() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"
tls = { cert = "certs/missing.crt", key = "certs/missing.key" }

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &[
            "{file}:3:16: certificate file {dir}/certs/missing.crt not found",
            "{file}:3:43: key file {dir}/certs/missing.key not found",
        ],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_two_listeners_on_one_address() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:8080"

[[listener]]
bind = "127.0.0.1:8080"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &["{file}:5:8: two listeners on 127.0.0.1:8080: the other is at 2:8"],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_a_route_with_upstream_and_root() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
root = "."
"#,
        &["{file}:10:8: a route has exactly one of `upstream`, `root` or `redirect`"],
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_a_bad_bind() {
    assert_invalid(
        r#"[[listener]]
bind = "localhost:8080"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[[route]]
path = "/"
upstream = "chat"
"#,
        &[
            "{file}:2:8: bind address \"localhost:8080\" is not IP:port (for example \"0.0.0.0:8080\")",
        ],
    )
    .await;
}

#[tokio::test]
async fn validate_reports_what_an_empty_file_lacks() {
    assert_invalid(
        "",
        &[
            "{file}: no [[listener]]: add one, e.g. bind = \"0.0.0.0:8080\"",
            "{file}: no [[route]]: add one, e.g. path = \"/\" with an upstream",
        ],
    )
    .await;
}

/// Several problems of different kinds, deliberately not grouped by kind.
const MANY_PROBLEMS: &str = r#"[server]
shutdown_timeout = "30"

[[listener]]
bind = "127.0.0.1:8080"

[upstream.chat]
servers = ["127.0.0.1:3000"]

[upstream.spare]
servers = ["127.0.0.1:3001"]

[[route]]
path = "/"
upstream = "chat"

[[route]]
path = "/x/"
upstream = "missing"

[[listener]]
bind = "127.0.0.1:8080"
tls = { cert = "no.crt", key = "no.key" }

[[listener]]
bind = "localhost:80"

[[route]]
path = "/both/"
upstream = "chat"
root = "."
"#;

const MANY_PROBLEMS_REPORT: &[&str] = &[
    "{file}:2:20: duration \"30\" needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
    "{file}:10:1: upstream \"spare\" is not used by any route",
    "{file}:19:12: no upstream named \"missing\" (defined: chat, spare)",
    "{file}:22:8: two listeners on 127.0.0.1:8080: the other is at 5:8",
    "{file}:23:16: certificate file {dir}/no.crt not found",
    "{file}:23:32: key file {dir}/no.key not found",
    "{file}:26:8: bind address \"localhost:80\" is not IP:port (for example \"0.0.0.0:8080\")",
    "{file}:31:8: a route has exactly one of `upstream`, `root` or `redirect`",
];

#[tokio::test]
async fn validate_reports_every_problem_in_file_order() {
    assert_invalid(MANY_PROBLEMS, MANY_PROBLEMS_REPORT).await;
}

#[tokio::test]
async fn validate_reports_a_missing_file() {
    let dir = TestDir::new();
    let file = dir.path().join("absent.toml");
    let output = switchyard(&["validate".as_ref(), "-c".as_ref(), file.as_os_str()]).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "{}: cannot read the route file: No such file or directory (os error 2)\n",
            file.display()
        )
    );
    assert_eq!(output.status.code(), Some(1));
}

// ---------------------------------------------------------------------- run

#[tokio::test]
async fn run_refuses_an_invalid_file_and_binds_nothing() {
    let port = free_port();
    let taken = format!("127.0.0.1:{port}");
    let toml = MANY_PROBLEMS.replace("127.0.0.1:8080", &taken);
    let report: Vec<String> = MANY_PROBLEMS_REPORT
        .iter()
        .map(|line| line.replace("127.0.0.1:8080", &taken))
        .collect();
    let report: Vec<&str> = report.iter().map(String::as_str).collect();
    assert_rejected("run", &toml, &report).await;

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let connect = within(TcpStream::connect(addr)).await;
    assert_eq!(
        connect.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "something listens on {addr}"
    );
    std::net::TcpListener::bind(addr).expect("the port is still free");
}

#[tokio::test]
async fn run_logs_one_line_per_listener_and_serves_both() {
    let dir = TestDir::new();
    let ca = TestCa::create(&dir);
    let backend = HttpBackend::start("a").await;
    let file = dir.route_file(&format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "certs/server.crt", key = "certs/server.key" }}

[upstream.web]
servers = ["{}"]

[[route]]
path = "/"
upstream = "web"
"#,
        backend.addr
    ));
    let mut proxy = Switchyard::start(&file, 2).await;

    let plain = get(proxy.http(), "/", &[]).await;
    assert_eq!(plain.text(), "backend a");
    let tls = tls_connect(proxy.listener("https"), ca.client_config())
        .await
        .expect("TLS handshake");
    let request = http::Request::get("/")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send_on(tls, request).await.text(), "backend a");

    proxy.signal(libc::SIGTERM).await;
    assert!(proxy.exit(STEP).await.success());
    let listening: Vec<_> = proxy
        .log
        .iter()
        .filter_map(|line| traffic_listener(line))
        .map(|(_, scheme)| scheme)
        .collect();
    assert_eq!(
        listening,
        ["http", "https"],
        "log:\n{}",
        proxy.log.join("\n")
    );
}

// ------------------------------------------------------------ SIGTERM/SIGINT

/// A stop signal with a tunnel open: the tunnel keeps working, the listener
/// refuses new connections, and the process exits 0 as soon as the client
/// closes the tunnel.
async fn stop_waits_for_open_tunnel(signal: libc::c_int) {
    let dir = TestDir::new();
    let backend = WsBackend::start().await;
    let file = dir.route_file(&ws_file(&backend, ""));
    let mut proxy = Switchyard::start(&file, 1).await;
    let addr = proxy.http();
    let mut ws = ws_connect(addr, "/ws/chat", &[]).await.expect("handshake");
    assert_eq!(
        echo(&mut ws, Message::text("before")).await,
        Message::text("before")
    );

    proxy.signal(signal).await;
    proxy.wait_for("draining: listeners closed").await;
    refused(addr).await;
    for i in 0..3 {
        let text = format!("draining {i}");
        assert_eq!(
            echo(&mut ws, Message::text(text.clone())).await,
            Message::text(text)
        );
    }
    assert!(proxy.is_running(), "exited with a tunnel still open");

    close(ws).await;
    let closed = Instant::now();
    assert!(proxy.exit(Duration::from_secs(3)).await.success());
    assert!(closed.elapsed() < Duration::from_secs(3));
    assert_eq!(proxy.count("shutdown_timeout reached"), 0);
}

#[tokio::test]
async fn sigterm_drains_an_open_tunnel_then_exits_0() {
    stop_waits_for_open_tunnel(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_drains_an_open_tunnel_then_exits_0() {
    stop_waits_for_open_tunnel(libc::SIGINT).await;
}

/// A stop signal with a tunnel whose client never answers the goodbye: it
/// gets Close 1001 first, and after `shutdown_timeout` the proxy cuts it and
/// exits 0.
async fn stop_cuts_tunnel_after_shutdown_timeout(signal: libc::c_int) {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let dir = TestDir::new();
    let backend = WsBackend::start().await;
    let file = dir.route_file(&ws_file(&backend, "shutdown_timeout = \"1s\""));
    let mut proxy = Switchyard::start(&file, 1).await;
    let mut ws = ws_connect(proxy.http(), "/ws/chat", &[])
        .await
        .expect("handshake");
    assert_eq!(
        echo(&mut ws, Message::text("hi")).await,
        Message::text("hi")
    );

    proxy.signal(signal).await;
    let stopped = Instant::now();
    proxy.wait_for("draining: listeners closed").await;
    // The goodbye: Close 1001, within shutdown_spread (half of 1 s).
    match within(ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    // The client never answers (tungstenite would, on its next read): the
    // next thing on the socket is the cut.
    let mut rest = Vec::new();
    within(ws.get_mut().read_to_end(&mut rest))
        .await
        .expect("read to the end");
    assert!(rest.is_empty(), "nothing after the Close: {rest:?}");
    let cut = stopped.elapsed();
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(3),
        "tunnel cut {cut:?} after the signal, with shutdown_timeout = 1s"
    );
    assert!(proxy.exit(Duration::from_secs(3)).await.success());
    assert_eq!(proxy.count("shutdown_timeout reached"), 1);
}

#[tokio::test]
async fn sigterm_cuts_a_lingering_tunnel_after_shutdown_timeout() {
    stop_cuts_tunnel_after_shutdown_timeout(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_cuts_a_lingering_tunnel_after_shutdown_timeout() {
    stop_cuts_tunnel_after_shutdown_timeout(libc::SIGINT).await;
}

// ------------------------------------------------------------------- SIGHUP

#[tokio::test]
async fn sighup_reloads_and_keeps_the_old_file_when_the_new_one_is_bad() {
    let dir = TestDir::new();
    let ws_backend = WsBackend::start().await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let first = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["{}"]

[upstream.web_a]
servers = ["{}"]

[[route]]
path = "/ws/"
upstream = "chat"

[[route]]
path = "/"
upstream = "web_a"
"#,
        ws_backend.addr, a.addr
    );
    let file = dir.route_file(&first);
    let mut proxy = Switchyard::start(&file, 1).await;
    let addr = proxy.http();
    let mut ws = ws_connect(addr, "/ws/chat", &[]).await.expect("handshake");
    assert_eq!(
        echo(&mut ws, Message::text("one")).await,
        Message::text("one")
    );
    assert_eq!(get(addr, "/b/x", &[]).await.text(), "backend a");

    // A valid file: one more route, to a second backend.
    let second = format!(
        r#"{first}
[upstream.web_b]
servers = ["{}"]

[[route]]
path = "/b/"
upstream = "web_b"
"#,
        b.addr
    );
    dir.route_file(&second);
    proxy.signal(libc::SIGHUP).await;
    let line = proxy.wait_for("configuration reloaded").await;
    assert!(
        line.contains(
            "configuration reloaded: generation 2; routes: +/b/; upstreams: +web_b; \
             listeners: unchanged; took "
        ),
        "{line}"
    );
    assert_eq!(get(addr, "/b/x", &[]).await.text(), "backend b");
    assert_eq!(get(addr, "/", &[]).await.text(), "backend a");
    assert_eq!(
        echo(&mut ws, Message::text("two")).await,
        Message::text("two")
    );

    // An invalid file: every error logged with its position, nothing changes.
    let bad = second
        .replace("path = \"/b/\"", "path = \"/c/\"")
        .replace("upstream = \"web_b\"", "upstream = \"web_c\"")
        + "\n[server]\nshutdown_timeout = \"10\"\n";
    let bad_file = dir.route_file(&bad);
    proxy.drain();
    let before = proxy.log.len();
    proxy.signal(libc::SIGHUP).await;
    proxy
        .wait_for("reload refused; the previous configuration stays in force")
        .await;
    let errors: Vec<&String> = proxy.log[before..]
        .iter()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    let expected = [
        "{file}:19:1: upstream \"web_b\" is not used by any route",
        "{file}:24:12: no upstream named \"web_c\" (defined: chat, web_a, web_b)",
        "{file}:27:20: duration \"10\" needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
        "reload refused; the previous configuration stays in force errors=3",
    ]
    .map(|line| fill(line, &bad_file, dir.path()));
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (line, message) in errors.iter().zip(&expected) {
        assert!(
            line.ends_with(message.as_str()),
            "{line:?} does not end with {message:?}"
        );
    }
    assert_eq!(proxy.count("configuration reloaded"), 1);

    assert_eq!(get(addr, "/b/x", &[]).await.text(), "backend b");
    assert_eq!(get(addr, "/c/x", &[]).await.text(), "backend a");
    assert_eq!(
        echo(&mut ws, Message::text("three")).await,
        Message::text("three")
    );

    close(ws).await;
    proxy.signal(libc::SIGTERM).await;
    assert!(proxy.exit(STEP).await.success());
}

// ------------------------------------------------------------------- readyz

#[tokio::test]
async fn readyz_turns_503_while_the_listener_still_accepts_for_shutdown_delay() {
    let dir = TestDir::new();
    let backend = HttpBackend::start("a").await;
    let file = dir.route_file(&format!(
        r#"
[server]
admin = "127.0.0.1:0"
shutdown_delay = "1s"

[[listener]]
bind = "127.0.0.1:0"

[upstream.web]
servers = ["{}"]

[[route]]
path = "/"
upstream = "web"
"#,
        backend.addr
    ));
    let mut proxy = Switchyard::start(&file, 1).await;
    let admin = proxy.admin().await;
    let addr = proxy.http();
    assert_eq!(get(admin, "/readyz", &[]).await.status, 200);

    proxy.signal(libc::SIGTERM).await;
    let stopped = Instant::now();
    proxy.wait_for("stopping: /readyz answers 503").await;
    let readyz = get(admin, "/readyz", &[]).await;
    assert_eq!(readyz.status, 503);
    // Still accepting and serving during the delay.
    let served = get(addr, "/", &[]).await;
    assert_eq!(served.text(), "backend a");
    assert!(
        stopped.elapsed() < Duration::from_millis(900),
        "the checks above took too long to prove anything"
    );

    proxy.wait_for("draining: listeners closed").await;
    refused(addr).await;
    let closed_after = stopped.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "the listener closed {closed_after:?} after SIGTERM, before shutdown_delay"
    );
    assert!(proxy.exit(STEP).await.success());
}

// ---------------------------------------------------------- file descriptors

#[tokio::test]
async fn out_of_file_descriptors_waits_without_spinning_and_recovers() {
    const LIMIT: u64 = 96;
    let dir = TestDir::new();
    let backend = WsBackend::start().await;
    // A long header timeout keeps a connection with no request open.
    let file = dir.route_file(&ws_file(
        &backend,
        "client_header_timeout = \"60s\"\nshutdown_timeout = \"2s\"",
    ));
    let mut proxy = Switchyard::start_limited(&file, 1, Some(LIMIT)).await;
    let addr = proxy.http();

    // Each tunnel costs the proxy two descriptors: fill all but one or none.
    let mut tunnels = Vec::new();
    while proxy.free_fds(LIMIT) >= 2 {
        let ws = ws_connect(addr, "/ws/chat", &[]).await.expect("handshake");
        tunnels.push(ws);
        assert!(
            tunnels.len() < LIMIT as usize,
            "descriptors are not running out"
        );
    }
    // One left: a connection that sends nothing takes it.
    let mut idle = Vec::new();
    if proxy.free_fds(LIMIT) == 1 {
        idle.push(within(TcpStream::connect(addr)).await.expect("connect"));
        within(async {
            while proxy.free_fds(LIMIT) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    proxy.drain();
    let warnings_before = proxy.count("out of file descriptors");

    // A new WebSocket now waits in the backlog.
    let exhausted = Instant::now();
    let waiting = tokio::spawn(async move { ws_connect(addr, "/ws/chat", &[]).await });
    let warning = proxy.wait_for("out of file descriptors").await;
    assert!(
        warning.contains(&format!("open_files_limit={LIMIT}")),
        "{warning}"
    );

    // (c) No spinning while it waits.
    let cpu_before = proxy.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = proxy.cpu_time() - cpu_before;
    assert!(
        used < Duration::from_millis(400),
        "the proxy used {used:?} of CPU in 2 s while out of descriptors"
    );
    // (b) The new connection is not served…
    assert!(
        !waiting.is_finished(),
        "a WebSocket opened with no descriptor free"
    );
    // (a) …while every open tunnel still echoes.
    for (i, ws) in tunnels.iter_mut().enumerate() {
        let text = format!("tunnel {i}");
        assert_eq!(
            echo(ws, Message::text(text.clone())).await,
            Message::text(text)
        );
    }

    // (e) Free a few descriptors: the waiting connection gets through.
    for ws in tunnels.drain(..3) {
        close(ws).await;
    }
    let mut late = within(waiting)
        .await
        .expect("the waiting handshake task")
        .expect("the waiting handshake");
    let recovered = exhausted.elapsed();
    assert_eq!(
        echo(&mut late, Message::text("late")).await,
        Message::text("late")
    );

    // (d) At most one warning a second while exhausted.
    proxy.drain();
    let warnings = proxy.count("out of file descriptors") - warnings_before;
    let allowed = recovered.as_secs() as usize + 1;
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} warnings in {recovered:?} out of descriptors"
    );

    drop(idle);
    close(late).await;
    for ws in tunnels {
        close(ws).await;
    }
    proxy.signal(libc::SIGTERM).await;
    assert!(proxy.exit(STEP).await.success());
}

// ------------------------------------------------------------------ signals

#[tokio::test]
async fn signals_right_after_the_listening_lines_are_handled() {
    let dir = TestDir::new();
    let file = dir.route_file(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[upstream.web]
servers = ["127.0.0.1:9"]

[[route]]
path = "/"
upstream = "web"
"#,
    );
    // The window is short: try a few times.
    for attempt in 1..=5 {
        let mut proxy = Switchyard::start(&file, 1).await;
        proxy.kill(libc::SIGHUP);
        let reloaded = proxy
            .try_wait_for_line(|line| line.contains("configuration reloaded"), "reloaded")
            .await;
        if reloaded.is_none() {
            let status = proxy.exit(STEP).await;
            panic!(
                "attempt {attempt}: SIGHUP right after `listening on` ended switchyard: {status}"
            );
        }

        let mut proxy = Switchyard::start(&file, 1).await;
        proxy.kill(libc::SIGTERM);
        let status = proxy.exit(STEP).await;
        assert!(
            status.success(),
            "attempt {attempt}: SIGTERM right after `listening on` ended switchyard: {status}"
        );
    }
}

// ------------------------------------------------------------ upstream fleets

#[tokio::test]
async fn validate_describes_each_upstream_fleet() {
    let dir = TestDir::new();
    TestCa::create(&dir);
    let file = dir.route_file(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000", "chat-headless.default.svc:3000"]
balance = "hash"
hash_key = "cookie:io"
health = { path = "/healthz", interval = "5s", timeout = "2s", fall = 3, rise = 2 }
max_handshakes = 64
queue_timeout = "10s"
tls = { ca = "certs/ca.crt", server_name = "chat.internal" }
resolve_interval = "30s"

[upstream.api]
servers = ["127.0.0.1:4000"]
balance = "round-robin"
rebalance_rate = 20

[[route]]
path = "/ws/"
upstream = "chat"

[[route]]
path = "/"
upstream = "api"
"#,
    );
    let output = switchyard(&["validate".as_ref(), "-c".as_ref(), file.as_os_str()]).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{file}: ok (1 listener, 2 upstreams, 2 routes)\n  \
             upstream api: round-robin over 1 server (127.0.0.1:4000); rebalancing 20 tunnels/s\n  \
             upstream chat: hash on cookie:io over 2 servers (127.0.0.1:3000, \
             chat-headless.default.svc:3000); health GET /healthz every 5s (down after 3 failed, \
             up after 2 passed); at most 64 handshakes per server, queued up to 10s; TLS verified \
             against {ca} for chat.internal; host names resolved every 30s\n",
            file = file.display(),
            ca = dir.path().join("certs/ca.crt").display()
        )
    );
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn validate_rejects_bad_fleet_keys_with_their_positions() {
    assert_invalid(
        r#"[[listener]]
bind = "127.0.0.1:0"

[upstream.a]
servers = ["127.0.0.1:3000"]
balance = "random"
hash_key = "cookie:x"
health = { path = "healthz", interval = "1s", timeout = "2s", fall = 0, rise = 2, port = 1 }
max_handshakes = -1
queue_timeout = "0s"
tls = { ca = "missing.crt", server_name = "not a name" }
resolve_interval = "soon"
rebalance_rate = 1.5

[upstream.b]
servers = ["127.0.0.1:3001"]
balance = "hash"
rebalance_rate = 5

[[route]]
path = "/a/"
upstream = "a"

[[route]]
path = "/b/"
upstream = "b"
"#,
        &[
            "{file}:6:11: balance \"random\" is not one of \"least-tunnels\", \"round-robin\", \"hash\"",
            "{file}:7:12: hash_key applies only to balance = \"hash\", not \"random\"",
            "{file}:8:19: health path \"healthz\" must be a path such as \"/healthz\"",
            "{file}:8:57: health timeout (2s) must not be longer than its interval (1s)",
            "{file}:8:70: health fall must be from 1 to 1000, not 0",
            "{file}:8:83: unknown key \"port\" in [upstream.a] health; known keys: fall, interval, path, rise, timeout",
            "{file}:9:18: max_handshakes must be from 0 to 100000, not -1",
            "{file}:10:17: must be longer than zero",
            "{file}:11:14: CA file {dir}/missing.crt not found",
            "{file}:11:43: server_name \"not a name\" is not a host name or IP address",
            "{file}:12:20: invalid duration \"soon\" (expected number at 0): write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
            "{file}:13:18: rebalance_rate: expected a whole number of tunnels per second (0 = never), found a number (1.5)",
            "{file}:17:11: balance = \"hash\" needs hash_key = \"cookie:NAME\", \"header:NAME\" or \"client-ip\"",
            "{file}:18:18: rebalance_rate does not work with balance = \"hash\": a moved client hashes to the same server again",
        ],
    )
    .await;
}
