//! The demo chat room in headless Chromium, end to end: `switchyard demo`
//! on free ports, then `tests/browser/chat.mjs` (Node and puppeteer-core)
//! drives two users over ws:// and over wss:// through the proxy. Over
//! https:// the page comes over HTTP/2 and the WebSockets are streams of
//! that connection (RFC 8441), which the demo's access log confirms. It then
//! restarts the demo's proxy side (SIGUSR1) under two more: their pages get
//! Close 1001, reconnect by themselves and chat on.
//!
//! Needs `node`, Chromium (`$CHROMIUM`, else `/usr/bin/chromium`) and
//! `tests/browser/node_modules`:
//!
//! ```text
//! apt-get install -y chromium nodejs npm
//! npm ci --prefix tests/browser
//! ```
//!
//! (Debian's `npm` package conflicts with a Node.js that brings its own npm,
//! such as NodeSource's: there, install `chromium` alone.)
//!
//! Without them the test fails, unless `SWITCHYARD_SKIP_BROWSER=1`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bound on the demo printing both of its URLs (the first start may be slow
/// on a busy machine).
const DEMO_START: Duration = Duration::from_secs(30);

/// Bound on the whole browser run. `chat.mjs` bounds each of its steps to
/// 10 s and itself to 110 s; this is the last resort.
const BROWSER_RUN: Duration = Duration::from_secs(120);

/// How long a child gets to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

const INSTALL: &str = "install them with\n    \
    apt-get install -y chromium nodejs npm\n    \
    npm ci --prefix tests/browser\n\
    (leave out `npm` where Node.js already comes with it, as NodeSource's does),\n\
    or set SWITCHYARD_SKIP_BROWSER=1 to skip this test";

#[test]
fn chat_room_in_chromium_over_ws_and_wss_over_h2_and_through_a_restart() {
    let Some(tools) = find_tools() else {
        return;
    };

    let mut demo = Running::spawn(
        "switchyard demo",
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["demo", "--port", "0", "--tls-port", "0"])
            // Plain log lines in the failure report.
            .env("NO_COLOR", "1"),
    );
    let (http, https) = demo.urls();

    let mut node = Command::new(&tools.node);
    node.arg(tools.browser_dir.join("chat.mjs"))
        .arg(&http)
        .arg(&https)
        .arg(demo.child.id().to_string())
        .env("CHROMIUM", &tools.chromium)
        .current_dir(&tools.browser_dir);
    let started = Instant::now();
    let mut run = Running::spawn("node tests/browser/chat.mjs", &mut node);
    let status = run.wait_within(BROWSER_RUN);
    let (stdout, stderr) = run.output();
    let elapsed = started.elapsed();

    match status {
        Some(status) if status.success() => {
            print!("{stdout}");
            eprint!("{stderr}");
            println!("browser run passed in {elapsed:.1?} ({http} and {https})");
            // The proxy's side of it: the wss:// WebSockets were RFC 8441
            // streams of an HTTP/2 connection, and their tunnels said so.
            demo.stop();
            let (_, demo_err) = demo.output();
            let lines = |all: &[&str]| {
                demo_err
                    .lines()
                    .filter(|line| all.iter().all(|part| line.contains(part)))
                    .count()
            };
            let connects = lines(&[
                "method=CONNECT",
                "http=2",
                "path=\"/ws/chat\"",
                "status=200",
            ]);
            let tunnels = lines(&["tunnel closed", "http=2", "route=/ws/"]);
            assert!(
                connects >= 2 && tunnels >= 2,
                "expected the two wss:// users' WebSockets over HTTP/2 in the access log \
                 ({connects} CONNECT requests, {tunnels} tunnels seen)\n\
                 --- switchyard demo stderr ---\n{demo_err}"
            );
            println!("the proxy relayed {connects} WebSockets over HTTP/2 (RFC 8441)");
        }
        _ => {
            let how = match status {
                Some(status) => format!("exited with {status}"),
                None => format!("did not finish within {BROWSER_RUN:?} and was stopped"),
            };
            demo.stop();
            let (demo_out, demo_err) = demo.output();
            panic!(
                "the browser run {how} after {elapsed:.1?} ({http} and {https})\n\
                 --- chat.mjs stdout ---\n{stdout}\
                 --- chat.mjs stderr ---\n{stderr}\
                 --- switchyard demo stdout ---\n{demo_out}\
                 --- switchyard demo stderr ---\n{demo_err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// What the test needs from the machine
// ---------------------------------------------------------------------------

struct Tools {
    node: PathBuf,
    chromium: PathBuf,
    browser_dir: PathBuf,
}

/// Finds node, Chromium and the installed Node packages. Missing ones fail
/// the test with how to install them, or skip it when asked to.
fn find_tools() -> Option<Tools> {
    let skip = std::env::var_os("SWITCHYARD_SKIP_BROWSER").is_some_and(|v| v == "1");
    if skip {
        println!("SWITCHYARD_SKIP_BROWSER=1: the browser test is skipped");
        return None;
    }

    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var_os("CHROMIUM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node = on_path("node");

    let mut missing = Vec::new();
    if node.is_none() {
        missing.push("`node` is not on PATH".to_string());
    }
    if !is_executable(&chromium) {
        missing.push(format!(
            "Chromium is not at {} (set CHROMIUM to use another one)",
            chromium.display()
        ));
    }
    let puppeteer = browser_dir.join("node_modules/puppeteer-core");
    if !puppeteer.is_dir() {
        missing.push(format!("{} is missing", puppeteer.display()));
    }
    if !missing.is_empty() {
        panic!(
            "the browser test cannot run:\n  - {}\n{INSTALL}",
            missing.join("\n  - ")
        );
    }
    Some(Tools {
        node: node.expect("checked above"),
        chromium,
        browser_dir,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------
// Child processes: output collected, always stopped
// ---------------------------------------------------------------------------

/// A child whose stdout lines and stderr are collected by threads, and
/// which is stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    what: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
}

impl Running {
    fn spawn(what: &'static str, command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        let stdout_thread = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_thread = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        Running {
            what,
            child,
            lines,
            stdout: Vec::new(),
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
        }
    }

    /// The demo's `open  http://…` and `open  https://…` URLs, read from
    /// its stdout within [`DEMO_START`].
    fn urls(&mut self) -> (String, String) {
        let deadline = Instant::now() + DEMO_START;
        let (mut http, mut https) = (None, None);
        while http.is_none() || https.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("open").map(str::trim_start) {
                        let url = url.split_whitespace().next().unwrap_or("").to_string();
                        if url.starts_with("http://") {
                            http = Some(url);
                        } else if url.starts_with("https://") {
                            https = Some(url);
                        }
                    }
                    self.stdout.push(line);
                }
                Err(reason) => {
                    self.stop();
                    let (stdout, stderr) = self.output();
                    panic!(
                        "{} did not print its http:// and https:// URLs \
                         ({reason:?} within {DEMO_START:?})\n\
                         --- stdout ---\n{stdout}--- stderr ---\n{stderr}",
                        self.what
                    );
                }
            }
        }
        (http.expect("loop ended"), https.expect("loop ended"))
    }

    /// Waits for the child to exit; past `limit` it is stopped and `None`
    /// returned.
    fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    self.stop();
                    return None;
                }
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        }
    }

    /// SIGTERM by PID (the demo removes its temporary folder, node closes
    /// Chromium), then SIGKILL if it is still running after [`GRACE`].
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on the PID of our own, not yet reaped,
            // child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the child printed so far; once it has exited, all of it.
    fn output(&mut self) -> (String, String) {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if exited && let Some(thread) = self.stdout_thread.take() {
            let _ = thread.join();
        }
        self.stdout.extend(self.lines.try_iter());
        let stderr = match self.stderr_thread.take() {
            Some(thread) if exited => thread.join().unwrap_or_default(),
            Some(thread) => {
                self.stderr_thread = Some(thread);
                String::new()
            }
            None => String::new(),
        };
        let mut stdout = self.stdout.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        (stdout, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
