//! `cargo bench --bench soak`: Switchyard (the release binary, a child
//! process) under a long, mixed, hostile load, then a verdict.
//!
//! - 2,000 WebSocket tunnels through the proxy to two echo backends, each
//!   sending a numbered message every two seconds and checking its echo;
//! - 200 of them closing and 200 new ones opening every second;
//! - a SIGHUP every 5 s;
//! - one of the two backends killed (listener and every connection gone)
//!   and started again every 30 s, alternately;
//! - hostile clients throughout: garbage heads, slowloris heads, heads over
//!   the size limit, PROXY-less junk.
//!
//! At the end: no panic in the proxy's log, resident memory and open
//! descriptors (with every tunnel still open) within 10 % of their figures
//! at the start (also with every tunnel open), every echo on a tunnel whose
//! backend was not killed came back, and every reconnect after a kill
//! succeeded. Knobs: `SOAK_SECONDS` (900), `SOAK_TUNNELS` (2,000),
//! `SOAK_CHURN` (200 per second). Under `cargo test --benches` it only
//! says so.
//!
//! Everything stays on 127.0.0.1 and stops by itself.

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const MESSAGE_EVERY: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "soak: run `cargo bench --bench soak` (15 minutes by default)\n0 passed, 0 failed"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Totals over the whole run.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    echoed: AtomicU64,
    /// Echoes missing on a tunnel whose backend was never killed.
    lost: AtomicU64,
    /// Echoes missing on a tunnel whose backend was killed (expected).
    cut_by_kill: AtomicU64,
    opened: AtomicU64,
    open_failures: AtomicU64,
    /// Tunnels that reconnected after their backend was killed.
    reconnects: AtomicU64,
    reconnect_failures: AtomicU64,
    hostile: AtomicU64,
    hostile_answered: AtomicU64,
}

/// An echo backend that can be killed and started again on its port.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    /// Bumped at every kill: a tunnel knows whether its backend died.
    generation: watch::Sender<u64>,
    stop: std::sync::Mutex<CancellationToken>,
}

impl Backend {
    async fn start(name: &'static str) -> Result<Arc<Backend>, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let backend = Arc::new(Backend {
            name,
            addr,
            generation: watch::channel(0).0,
            stop: std::sync::Mutex::new(CancellationToken::new()),
        });
        backend.serve(listener);
        Ok(backend)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let name = self.name;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    if ws
                        .send(Message::text(format!("hello {name}")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => return,
                            n = ws.next() => n,
                        };
                        match next {
                            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                                if ws.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                });
            }
        });
    }

    /// Close the listener and every connection at once.
    fn kill(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).cancel();
    }

    async fn restart(self: &Arc<Self>) -> Result<(), String> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = CancellationToken::new();
        // The port was just closed; binding it again may take a moment.
        for _ in 0..100 {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
            if socket.bind(self.addr).is_ok()
                && let Ok(listener) = socket.listen(1024)
            {
                self.serve(listener);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("cannot bind {} again", self.addr))
    }
}

/// One client tunnel: send a numbered message every two seconds and expect
/// it back, until told to leave or its tunnel closes.
async fn tunnel(
    proxy: SocketAddr,
    backends: Arc<HashMap<String, Arc<Backend>>>,
    counts: Arc<Counts>,
    leave: CancellationToken,
    reconnecting: bool,
) -> bool {
    let url = format!("ws://127.0.0.1:{}/ws/", proxy.port());
    // Generous: the soak runs at the lowest priority on a busy machine, and
    // what it judges (memory, descriptors, lost echoes) is not speed.
    let connect = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await;
    let Ok(Ok((mut ws, _))) = connect else {
        counts.open_failures.fetch_add(1, Ordering::Relaxed);
        if reconnecting {
            counts.reconnect_failures.fetch_add(1, Ordering::Relaxed);
        }
        return false;
    };
    // The backend says who it is first.
    let greeting = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
    let name = match greeting {
        Ok(Some(Ok(Message::Text(t)))) => t.trim_start_matches("hello ").to_string(),
        _ => {
            counts.open_failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    };
    let Some(backend) = backends.get(&name).cloned() else {
        return false;
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    if reconnecting {
        counts.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    let killed = backend.generation.subscribe();
    let born = *killed.borrow();
    let mut ticker = tokio::time::interval(MESSAGE_EVERY);
    ticker.tick().await;
    // Echoes are counted, not timed: a slow one is still not lost.
    let (mut sent, mut back) = (0u64, 0u64);
    let mut leaving_since: Option<Instant> = None;
    let died_with_backend = loop {
        tokio::select! {
            () = leave.cancelled(), if leaving_since.is_none() => {
                leaving_since = Some(Instant::now());
            }
            _ = ticker.tick() => {
                if let Some(since) = leaving_since {
                    // Leaving: wait (at most 30 s) for the last echoes.
                    if back >= sent || since.elapsed() > Duration::from_secs(30) {
                        break false;
                    }
                    continue;
                }
                if ws.send(Message::text(format!("m{}", sent + 1))).await.is_err() {
                    break *killed.borrow() != born;
                }
                sent += 1;
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            next = ws.next() => match next {
                Some(Ok(Message::Text(t))) if t.as_str().starts_with('m') => {
                    back += 1;
                    counts.echoed.fetch_add(1, Ordering::Relaxed);
                    if leaving_since.is_some() && back >= sent {
                        break false;
                    }
                }
                Some(Ok(_)) => {}
                _ => break *killed.borrow() != born,
            },
        }
    };
    let missing = sent.saturating_sub(back);
    if missing > 0 {
        if *killed.borrow() != born {
            counts.cut_by_kill.fetch_add(missing, Ordering::Relaxed);
        } else {
            counts.lost.fetch_add(missing, Ordering::Relaxed);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    died_with_backend
}

/// Hostile clients, one kind after another, until `stop`.
async fn hostile(proxy: SocketAddr, counts: Arc<Counts>, stop: CancellationToken) {
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "y".repeat(100 * 1024)
    );
    let mut i = 0u64;
    while !stop.is_cancelled() {
        i += 1;
        let bytes: Vec<u8> = match i % 4 {
            0 => b"\x16\x03\x01garbage\r\n\r\n\x00\xff\xfe".to_vec(),
            1 => huge.clone().into_bytes(),
            2 => b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            _ => Vec::new(), // slowloris: below
        };
        counts.hostile.fetch_add(1, Ordering::Relaxed);
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy)).await
        else {
            continue;
        };
        if bytes.is_empty() {
            // A head one byte every 200 ms; the proxy must close it.
            let counts = counts.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ".iter().cycle() {
                    if stop.is_cancelled() || stream.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                counts.hostile_answered.fetch_add(1, Ordering::Relaxed);
            });
        } else {
            let _ = stream.write_all(&bytes).await;
            let mut out = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
            if matches!(read, Ok(Ok(_))) {
                counts.hostile_answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn switchyard_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

fn write_config(path: &Path, a: SocketAddr, b: SocketAddr, generation: u64) -> Result<(), String> {
    let text = format!(
        "# soak generation {generation}\n[server]\nworkers = 2\nshutdown_timeout = \"5s\"\n\
         client_header_timeout = \"2s\"\naccess_log = \"off\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [upstream.chat]\nservers = [\"{a}\", \"{b}\"]\nconnect_timeout = \"10s\"\n\
         [[route]]\npath = \"/ws/\"\nupstream = \"chat\"\nidle_timeout = \"5m\"\n\
         [[route]]\npath = \"/\"\nupstream = \"chat\"\n"
    );
    std::fs::write(path, text).map_err(|e| e.to_string())
}

async fn soak() -> Result<bool, String> {
    raise_file_limit();
    let seconds = knob("SOAK_SECONDS", 900);
    let tunnels = knob("SOAK_TUNNELS", 2000) as usize;
    let churn = knob("SOAK_CHURN", 200) as usize;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    let backends = Arc::new(HashMap::from([
        ("a".to_string(), a.clone()),
        ("b".to_string(), b.clone()),
    ]));
    let config = dir.path().join("switchyard.toml");
    write_config(&config, a.addr, b.addr, 0)?;
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(switchyard_binary())
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "info,access=off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start switchyard: {e}"))?;
    let pid = child.id().ok_or("no pid")?;
    // The listener's port, from its log line.
    let proxy: SocketAddr = {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(rest) = text.split("listening on ").nth(1)
                && let Some(addr) = rest.split_whitespace().next()
                && let Ok(addr) = addr.parse()
            {
                break addr;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("switchyard did not start:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let idle = (rss_kib(pid), open_fds(pid));
    println!(
        "soak: {seconds}s, {tunnels} tunnels, {churn}/s churn, proxy pid {pid} on {proxy}; idle: {} KiB, {} fds",
        idle.0, idle.1
    );

    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    // Each slot holds one tunnel; churn replaces the oldest ones.
    let mut slots: std::collections::VecDeque<CancellationToken> = Default::default();
    let spawn_tunnel = |slots: &mut std::collections::VecDeque<CancellationToken>| {
        let leave = CancellationToken::new();
        slots.push_back(leave.clone());
        let (backends, counts) = (backends.clone(), counts.clone());
        tokio::spawn(async move {
            let mut reconnecting = false;
            // A tunnel whose backend was killed reconnects, as a chat
            // client would, until told to leave.
            while tunnel(
                proxy,
                backends.clone(),
                counts.clone(),
                leave.clone(),
                reconnecting,
            )
            .await
            {
                if leave.is_cancelled() {
                    break;
                }
                reconnecting = true;
            }
        });
    };
    for i in 0..tunnels {
        spawn_tunnel(&mut slots);
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let hostiles: Vec<_> = (0..2)
        .map(|_| tokio::spawn(hostile(proxy, counts.clone(), stop.clone())))
        .collect();
    // Let the tunnels settle, then take the starting figures.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = (rss_kib(pid), open_fds(pid));
    println!(
        "soak: start with {} tunnels opened: {} KiB, {} fds",
        counts.opened.load(Ordering::Relaxed),
        start.0,
        start.1
    );

    let began = Instant::now();
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut hups = 0u64;
    let mut kills = 0u64;
    let mut peak = start;
    while began.elapsed() < Duration::from_secs(seconds) {
        second.tick().await;
        let t = began.elapsed().as_secs();
        for _ in 0..churn.min(slots.len()) {
            if let Some(leave) = slots.pop_front() {
                leave.cancel();
            }
            spawn_tunnel(&mut slots);
        }
        if t > 0 && t.is_multiple_of(5) {
            hups += 1;
            write_config(&config, a.addr, b.addr, hups)?;
            // SAFETY: our own child.
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        }
        if t > 0 && t.is_multiple_of(30) {
            kills += 1;
            let victim = if kills % 2 == 1 { &a } else { &b };
            victim.kill();
            let victim = victim.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = victim.restart().await;
            });
        }
        peak = (peak.0.max(rss_kib(pid)), peak.1.max(open_fds(pid)));
        if t.is_multiple_of(60) {
            println!(
                "soak: {t:>4}s rss {} KiB fds {} sent {} echoed {} lost {} cut-by-kill {} reconnects {} failed-opens {}",
                rss_kib(pid),
                open_fds(pid),
                counts.sent.load(Ordering::Relaxed),
                counts.echoed.load(Ordering::Relaxed),
                counts.lost.load(Ordering::Relaxed),
                counts.cut_by_kill.load(Ordering::Relaxed),
                counts.reconnects.load(Ordering::Relaxed),
                counts.open_failures.load(Ordering::Relaxed),
            );
        }
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("switchyard exited during the soak:\n{text}"));
        }
    }
    // The end, measured like the start: every tunnel open, settled.
    stop.cancel();
    for h in hostiles {
        let _ = h.await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = (rss_kib(pid), open_fds(pid));
    for leave in slots.drain(..) {
        leave.cancel();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = (rss_kib(pid), open_fds(pid));
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| "switchyard did not stop".to_string())?
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let panics = text.matches("panicked").count();
    let reloads = text.matches("configuration reloaded").count();

    let within = |end: u64, start: u64| (end as f64) <= start as f64 * 1.1;
    let c = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let checks = [
        ("no panic in the proxy's log", panics == 0),
        ("exit 0 on SIGTERM", status.success()),
        (
            "resident memory within 10 % of the start",
            within(end.0, start.0),
        ),
        (
            "open descriptors within 10 % of the start",
            within(end.1, start.1),
        ),
        (
            "no echo lost on a tunnel whose backend lived",
            c(&counts.lost) == 0,
        ),
        (
            "every reconnect after a kill succeeded",
            c(&counts.reconnect_failures) == 0,
        ),
        ("every SIGHUP reloaded", reloads as u64 == hups),
    ];
    println!(
        "\nsoak summary ({seconds}s):\n\
         - memory (RSS): idle {} KiB; start {} KiB; peak {} KiB; end {} KiB ({:+.1} %); after the tunnels left {} KiB\n\
         - descriptors: idle {}; start {}; peak {}; end {} ({:+.1} %); after {}\n\
         - tunnels opened {}, failed opens {}; echoes sent {}, back {}, lost {}, cut by a backend kill {}\n\
         - backend kills {kills}, reconnects {} (failed {}); SIGHUPs {hups}, reloads logged {reloads}\n\
         - hostile connections {}, closed or answered {}; panics {panics}",
        idle.0,
        start.0,
        peak.0,
        end.0,
        (end.0 as f64 / start.0.max(1) as f64 - 1.0) * 100.0,
        after.0,
        idle.1,
        start.1,
        peak.1,
        end.1,
        (end.1 as f64 / start.1.max(1) as f64 - 1.0) * 100.0,
        after.1,
        c(&counts.opened),
        c(&counts.open_failures),
        c(&counts.sent),
        c(&counts.echoed),
        c(&counts.lost),
        c(&counts.cut_by_kill),
        c(&counts.reconnects),
        c(&counts.reconnect_failures),
        c(&counts.hostile),
        c(&counts.hostile_answered),
    );
    let mut ok = true;
    for (what, passed) in checks {
        println!("  [{}] {what}", if passed { "ok" } else { "FAILED" });
        ok &= passed;
    }
    Ok(ok)
}
