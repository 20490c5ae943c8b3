//! Running one measurement: the load tool (`switchyard bench MODE URL
//! --json`, a separate process) or wrk, with the proxy's and the backend's
//! CPU time read before and after. The hold workload lives in [`super::hold`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard::bench::Report;

use super::backend;
use super::process::{self, Guard};
use super::procfs;
use super::settings::{TargetKind, Workload};
use super::targets::{Memory, Target};

/// Clients of the storm workload, all at once.
const STORM_CLIENTS: u64 = 5_000;

/// Memory and latency figures of one hold measurement.
#[derive(Clone, Debug, Default)]
pub struct HoldSample {
    pub tunnels_wanted: u64,
    /// Tunnels open at the backend once both hold clients were done opening.
    pub tunnels_held: u64,
    /// Still open after the second echo run.
    pub tunnels_survived: u64,
    pub before: Option<Memory>,
    pub at_1k: Option<Memory>,
    pub at_full: Option<Memory>,
    /// After the clients went away and the tunnels closed.
    pub released: Option<Memory>,
    pub p99_1k_us: Option<f64>,
    pub p99_full_us: Option<f64>,
    /// The proxy's CPU while every tunnel was held and idle, as a fraction
    /// of one core.
    pub idle_cpu: Option<f64>,
}

impl HoldSample {
    /// Growth per held tunnel, KiB (proxies only).
    pub fn kib_per_tunnel(&self) -> Option<f64> {
        let (before, full) = (self.before?, self.at_full?);
        (self.tunnels_held > 0)
            .then(|| (full.kib as f64 - before.kib as f64) / self.tunnels_held as f64)
    }
}

/// What one measurement gave.
#[derive(Clone, Debug)]
pub struct Sample {
    pub round: usize,
    pub workload: Workload,
    pub target: TargetKind,
    /// Throughput in the workload's unit (req/s, msg/s, MB/s, hs/s).
    pub rate: Option<f64>,
    pub p99_us: Option<f64>,
    /// The proxy's CPU per operation (µs per op, ms per MB for bulk).
    pub proxy_cpu: Option<f64>,
    /// The backend's CPU per operation, same unit.
    pub backend_cpu: Option<f64>,
    pub errors: u64,
    pub notes: Vec<String>,
    pub hold: Option<HoldSample>,
}

impl Sample {
    pub fn new(round: usize, workload: Workload, target: TargetKind) -> Sample {
        Sample {
            round,
            workload,
            target,
            rate: None,
            p99_us: None,
            proxy_cpu: None,
            backend_cpu: None,
            errors: 0,
            notes: Vec::new(),
            hold: None,
        }
    }
}

/// What every measurement needs.
pub struct Runner {
    /// The switchyard binary (its `bench` subcommand is the load tool).
    pub tool: PathBuf,
    pub wrk: Option<PathBuf>,
    pub dir: PathBuf,
    pub seconds: u64,
    pub ca: PathBuf,
    pub backend_pid: u32,
    pub backend: std::net::SocketAddr,
    /// Connections the hold workload holds in all.
    pub hold_tunnels: u64,
    /// How long the hold workload watches the idle proxy.
    pub idle_seconds: u64,
    runs: std::cell::Cell<u64>,
}

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tool: PathBuf,
        wrk: Option<PathBuf>,
        dir: PathBuf,
        seconds: u64,
        ca: PathBuf,
        backend_pid: u32,
        backend: std::net::SocketAddr,
        hold_tunnels: u64,
        idle_seconds: u64,
    ) -> Runner {
        Runner {
            tool,
            wrk,
            dir,
            seconds,
            ca,
            backend_pid,
            backend,
            hold_tunnels,
            idle_seconds,
            runs: std::cell::Cell::new(0),
        }
    }

    /// Fresh log and output file names for one client process.
    fn files(&self, label: &str) -> (PathBuf, PathBuf) {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let base = self.dir.join("clients");
        let _ = std::fs::create_dir_all(&base);
        (
            base.join(format!("{n:04}-{label}.log")),
            base.join(format!("{n:04}-{label}.out")),
        )
    }

    /// Starts the load tool in the background (for hold).
    pub fn spawn_tool(&self, label: &str, args: &[String]) -> Result<(Guard, PathBuf), String> {
        let (log, out) = self.files(label);
        let mut command = Command::new(&self.tool);
        command.arg("bench").args(args).arg("--json");
        let guard = Guard::spawn(&format!("load tool ({label})"), command, &log, Some(&out))?;
        Ok((guard, out))
    }

    /// Runs the load tool to completion and parses its JSON report.
    pub fn tool(&self, label: &str, args: &[String]) -> Result<Report, String> {
        let (mut guard, out) = self.spawn_tool(label, args)?;
        let limit = Duration::from_secs(self.seconds * 4 + 60);
        guard.wait(limit)?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "the load tool gave no readable report ({e}); its log {} ends with:\n    {}",
                guard.log.display(),
                guard.log_tail()
            )
        })
    }

    /// Echo 64 connections × 64 B for the configured time.
    pub fn echo(&self, url: &str) -> Result<Report, String> {
        self.tool(
            "echo",
            &args(&["echo", url, "-c", "64", "-s", "64", "-d", &self.secs()]),
        )
    }

    fn secs(&self) -> String {
        format!("{}s", self.seconds)
    }

    /// One measurement of a throughput workload against `target`.
    pub fn measure(
        &self,
        round: usize,
        workload: Workload,
        target: &mut Target,
    ) -> Result<Sample, String> {
        let mut sample = Sample::new(round, workload, target.kind);
        target.ensure_running()?;
        let proxy_before = target.cpu_time();
        let backend_before = procfs::cpu_time(self.backend_pid);
        let conns_before = backend::counts(self.backend)?.connections;
        let secs = self.secs();
        // What CPU time is divided by: operations, or MB sent for bulk.
        let divisor = match workload {
            Workload::Http | Workload::HttpLog => match &self.wrk {
                Some(wrk) => {
                    let w = self.wrk(wrk, &target.http_url())?;
                    sample.rate = Some(w.rate);
                    sample.p99_us = w.p99_us;
                    sample.errors = w.errors;
                    w.requests as f64
                }
                None => {
                    let r = self.tool(
                        "http",
                        &args(&["http", &target.http_url(), "-c", "64", "-d", &secs]),
                    )?;
                    let bad: u64 = r
                        .http_status
                        .iter()
                        .filter(|(code, _)| !(200..300).contains(*code))
                        .map(|(_, n)| n)
                        .sum();
                    self.fill(&mut sample, &r, r.ops_per_sec);
                    sample.errors += bad;
                    r.ops as f64
                }
            },
            Workload::JsonIdentity | Workload::JsonGzip => {
                let url = format!("{}json", target.http_url());
                let gzip = workload == Workload::JsonGzip;
                let headers: &[&str] = if gzip {
                    &["Accept-Encoding: gzip"]
                } else {
                    &[]
                };
                sample
                    .notes
                    .push(json_answer(target.ws_port, gzip, target.kind.is_proxy())?);
                match &self.wrk {
                    Some(wrk) => {
                        let w = self.wrk_with(wrk, &url, headers)?;
                        sample.rate = Some(w.rate);
                        sample.p99_us = w.p99_us;
                        sample.errors = w.errors;
                        w.requests as f64
                    }
                    None => {
                        let mut a = args(&["http", &url, "-c", "64", "-d", &secs]);
                        for h in headers {
                            a.extend(args(&["-H", h]));
                        }
                        let r = self.tool(workload.name(), &a)?;
                        self.fill(&mut sample, &r, r.ops_per_sec);
                        r.ops as f64
                    }
                }
            }
            Workload::Echo => {
                let r = self.echo(&target.ws_url())?;
                self.fill(&mut sample, &r, r.ops_per_sec);
                r.ops as f64
            }
            Workload::Bulk => {
                let r = self.tool(
                    "bulk",
                    &args(&[
                        "bulk",
                        &target.ws_url(),
                        "-c",
                        "4",
                        "-s",
                        "64KiB",
                        "-d",
                        &secs,
                    ]),
                )?;
                self.fill(&mut sample, &r, r.sent_mb_per_sec);
                r.bytes_sent as f64 / 1e6
            }
            Workload::HandshakeWs | Workload::HandshakeWss => {
                let url = if workload == Workload::HandshakeWss {
                    target
                        .wss_url()
                        .ok_or_else(|| format!("{} has no wss:// port", target.kind))?
                } else {
                    target.ws_url()
                };
                let ca = self.ca.display().to_string();
                let mut a = args(&[
                    "handshake",
                    &url,
                    "-c",
                    "32",
                    "-d",
                    &secs,
                    "--source-addrs",
                    "8",
                ]);
                if workload == Workload::HandshakeWss {
                    a.extend(args(&["--ca", &ca]));
                }
                let r = self.tool(workload.name(), &a)?;
                self.fill(&mut sample, &r, r.ops_per_sec);
                r.ops as f64
            }
            Workload::Http2 => {
                let url = https_url(target)?;
                let h = self.h2load(&url)?;
                sample.rate = Some(h.rate);
                sample.errors = h.errors;
                h.requests as f64
            }
            Workload::EchoH2 => {
                let ca = self.ca.display().to_string();
                let r = self.tool(
                    "echo-h2",
                    &args(&[
                        "echo",
                        &wss_url(target)?,
                        "-c",
                        "64",
                        "-s",
                        "64",
                        "-d",
                        &secs,
                        "--http2",
                        "--streams",
                        "16",
                        "--ca",
                        &ca,
                    ]),
                )?;
                self.fill(&mut sample, &r, r.ops_per_sec);
                r.ops as f64
            }
            Workload::BulkWss | Workload::BulkH2 => {
                let ca = self.ca.display().to_string();
                let mut a = args(&[
                    "bulk",
                    &wss_url(target)?,
                    "-c",
                    "4",
                    "-s",
                    "64KiB",
                    "-d",
                    &secs,
                    "--ca",
                    &ca,
                ]);
                if workload == Workload::BulkH2 {
                    a.extend(args(&["--http2", "--streams", "4"]));
                }
                let r = self.tool(workload.name(), &a)?;
                self.fill(&mut sample, &r, r.sent_mb_per_sec);
                r.bytes_sent as f64 / 1e6
            }
            Workload::Storm | Workload::StormQueued => {
                let url = target.storm_url(workload == Workload::StormQueued);
                let r = self.tool(
                    workload.name(),
                    &args(&[
                        "storm",
                        &url,
                        "-c",
                        &STORM_CLIENTS.to_string(),
                        "--timeout",
                        "30s",
                        "-d",
                        "1s",
                        "--source-addrs",
                        "8",
                    ]),
                )?;
                let storm = r.storm.clone().unwrap_or_default();
                // Throughput: connections up per second until the last one.
                sample.rate = storm
                    .last_up_secs
                    .filter(|s| *s > 0.0)
                    .map(|s| storm.connected as f64 / s);
                sample.p99_us = r.latency.as_ref().map(|l| l.p99_us);
                sample.errors = r.errors.total();
                sample.notes.push(match storm.all_up_secs {
                    Some(s) => format!("all {} up after {s:.2} s", storm.requested),
                    None => format!(
                        "{} of {} up, {} failed: {}",
                        storm.connected,
                        storm.requested,
                        storm.failed,
                        r.error_samples
                            .values()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                });
                storm.connected.max(1) as f64
            }
            Workload::Hold | Workload::HoldH2 => {
                return Err("hold is measured by hold::measure".into());
            }
        };
        // µs per operation; ms per MB for bulk.
        let scale = if workload.is_bulk() { 1e3 } else { 1e6 };
        let per_op = |spent: Option<Duration>| {
            spent
                .filter(|_| divisor > 0.0)
                .map(|d| d.as_secs_f64() * scale / divisor)
        };
        sample.proxy_cpu = per_op(
            proxy_before
                .zip(target.cpu_time())
                .map(|(a, b)| b.saturating_sub(a)),
        );
        sample.backend_cpu = per_op(
            backend_before
                .zip(procfs::cpu_time(self.backend_pid))
                .map(|(a, b)| b.saturating_sub(a)),
        );
        // Less one: the query itself.
        let opened = (backend::counts(self.backend)?.connections - conns_before).saturating_sub(1);
        if matches!(workload, Workload::Http | Workload::HttpLog) || workload.is_json() {
            sample
                .notes
                .push(format!("{opened} connections to the backend"));
        }
        target.ensure_running()?;
        Ok(sample)
    }

    fn fill(&self, sample: &mut Sample, r: &Report, rate: f64) {
        sample.rate = Some(rate);
        sample.p99_us = r.latency.as_ref().map(|l| l.p99_us);
        sample.errors = r.errors.total();
        sample.notes.extend(r.error_samples.values().cloned());
    }

    /// HTTP/2 GETs with h2load: 4 connections × 16 streams, 2 threads.
    fn h2load(&self, url: &str) -> Result<H2loadResult, String> {
        let h2load = process::find_program("h2load")
            .ok_or("h2load is not installed (apt-get install -y nghttp2-client): no HTTP/2 row")?;
        let (log, out) = self.files("h2load");
        let mut command = Command::new(h2load);
        command
            .args([
                "-t",
                "2",
                "-c",
                "4",
                "-m",
                "16",
                "--warm-up-time",
                "1",
                "-D",
            ])
            .arg(self.seconds.to_string())
            .arg(url);
        let mut guard = Guard::spawn("h2load", command, &log, Some(&out))?;
        guard.wait(Duration::from_secs(self.seconds * 2 + 30))?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        parse_h2load(&text).ok_or_else(|| {
            format!(
                "unreadable h2load output in {}:\n{text}\n{}",
                out.display(),
                guard.log_tail()
            )
        })
    }

    fn wrk(&self, wrk: &Path, url: &str) -> Result<WrkResult, String> {
        self.wrk_with(wrk, url, &[])
    }

    /// wrk with extra request headers (`NAME: VALUE`).
    fn wrk_with(&self, wrk: &Path, url: &str, headers: &[&str]) -> Result<WrkResult, String> {
        let (log, out) = self.files("wrk");
        let mut command = Command::new(wrk);
        command
            .args(["-t2", "-c64", "--latency", "-d"])
            .arg(self.secs());
        for header in headers {
            command.arg("-H").arg(header);
        }
        command.arg(url);
        let mut guard = Guard::spawn("wrk", command, &log, Some(&out))?;
        guard.wait(Duration::from_secs(self.seconds * 2 + 30))?;
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        parse_wrk(&text).ok_or_else(|| {
            format!(
                "unreadable wrk output in {}:\n{text}\n{}",
                out.display(),
                guard.log_tail()
            )
        })
    }
}

/// The target's wss:// URL.
fn wss_url(target: &Target) -> Result<String, String> {
    target
        .wss_url()
        .ok_or_else(|| format!("{} has no wss:// port", target.kind))
}

/// The target's TLS port as an https:// URL.
fn https_url(target: &Target) -> Result<String, String> {
    wss_url(target).map(|url| url.replacen("wss://", "https://", 1))
}

/// One `GET /json` on port `port`, before the measurement: says how the
/// answer came (encoding, bytes on the wire), and fails when a proxy does
/// not follow `Accept-Encoding` (the backend never compresses) or the body
/// is not the whole document.
fn json_answer(port: u16, gzip: bool, proxy: bool) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("GET /json: cannot connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let request =
        format!("GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET /json: {e}"))?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("GET /json: no complete answer")?;
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let wire = answer.len() - end - 4;
    let encoded = head.contains("content-encoding: gzip");
    if proxy && gzip != encoded {
        return Err(format!(
            "GET /json (gzip: {gzip}) came back with head:\n{head}"
        ));
    }
    if !encoded && wire < super::backend::JSON_SIZE {
        return Err(format!(
            "GET /json: {wire} bytes, expected the whole document"
        ));
    }
    Ok(format!(
        "/json: {} on the wire ({wire} bytes, chunked framing included)",
        if encoded { "gzip" } else { "identity" }
    ))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What wrk printed.
#[derive(Debug, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub rate: f64,
    pub p99_us: Option<f64>,
    pub errors: u64,
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut result = WrkResult {
        requests: 0,
        rate: f64::NAN,
        p99_us: None,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => result.rate = rate.parse().ok()?,
            ["99%", value] => result.p99_us = parse_wrk_time(value),
            [n, "requests", "in", ..] => result.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => result.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                result.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    result.rate.is_finite().then_some(result)
}

/// What h2load printed.
#[derive(Debug, PartialEq)]
pub struct H2loadResult {
    pub requests: u64,
    pub rate: f64,
    /// Failed, errored and timed-out requests, and answers other than 2xx.
    pub errors: u64,
}

/// Parses h2load's summary.
pub fn parse_h2load(text: &str) -> Option<H2loadResult> {
    let mut result = H2loadResult {
        requests: 0,
        rate: f64::NAN,
        errors: 0,
    };
    let count = |field: &str, word: &str| -> Option<u64> {
        // "156172 succeeded," → 156172 for word "succeeded"
        let at = field.find(&format!(" {word}"))?;
        field[..at].rsplit(' ').next()?.trim().parse().ok()
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // finished in 5.00s, 31234.40 req/s, 2.04MB/s
            let rate = rest.split(", ").nth(1)?.strip_suffix(" req/s")?;
            result.rate = rate.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            result.requests = count(rest, "succeeded")?;
            for word in ["failed", "errored", "timeout"] {
                result.errors += count(rest, word)?;
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for word in ["3xx", "4xx", "5xx"] {
                result.errors += count(rest, word)?;
            }
        }
    }
    result.rate.is_finite().then_some(result)
}

/// `812.00us`, `1.23ms`, `2.01s`, `1.50m` → microseconds.
fn parse_wrk_time(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = value.split_at(split);
    let num: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(num * scale)
}

/// A check of the wrk parser, run by `cargo test --benches`.
pub fn self_check() -> Result<(), String> {
    let text = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n\
        \x20 Latency Distribution\n     50%  500.00us\n     99%    2.50ms\n\
        \x20 123456 requests in 5.00s, 12.34MB read\n\
        \x20 Socket errors: connect 1, read 2, write 0, timeout 3\n\
        \x20 Non-2xx or 3xx responses: 4\nRequests/sec:  24691.20\nTransfer/sec: 2MB\n";
    let expected = WrkResult {
        requests: 123456,
        rate: 24691.2,
        p99_us: Some(2500.0),
        errors: 10,
    };
    match parse_wrk(text) {
        Some(r) if r == expected => {}
        other => return Err(format!("parse_wrk: expected {expected:?}, got {other:?}")),
    }
    let text = "starting benchmark...\n\
        finished in 5.00s, 31234.40 req/s, 2.04MB/s\n\
        requests: 156172 total, 156236 started, 156172 done, 156170 succeeded, 2 failed, 0 errored, 1 timeout\n\
        status codes: 156170 2xx, 0 3xx, 3 4xx, 0 5xx\n\
        traffic: 10.22MB (10715836) total, 1.34MB (1405548) headers (space savings 94.33%)\n";
    let expected = H2loadResult {
        requests: 156170,
        rate: 31234.4,
        errors: 6,
    };
    match parse_h2load(text) {
        Some(r) if r == expected => Ok(()),
        other => Err(format!(
            "parse_h2load: expected {expected:?}, got {other:?}"
        )),
    }
}
