//! `cargo bench --bench proxies`: Switchyard against nginx and HAProxy.
//!
//! One backend (this binary re-executed with `--backend ADDR`), and in front
//! of it Switchyard (`target/release/switchyard`), nginx and HAProxy when
//! installed, each from a generated configuration in a temporary folder.
//! For HTTP also `bare-hyper` (this binary as `--bare-hyper LISTEN BACKEND`):
//! hyper's server and client joined with nothing else, the floor of any
//! proxy built on hyper, so the table shows what Switchyard's own work costs.
//! Workloads, driven by `switchyard bench` (and wrk for HTTP when present):
//! HTTP GET, WebSocket echo and bulk, handshakes over ws:// and wss://, and
//! 9,500 held tunnels (memory per tunnel, echo p99 under load). Targets are
//! shuffled within each workload of each round; the summary is the median
//! over rounds. The markdown tables go to stdout and `target/bench-results.md`.
//!
//! Knobs: `BENCH_ROUNDS` (3), `BENCH_SECONDS` per measurement (5),
//! `BENCH_ONLY` (comma list: http, http-log, echo, bulk, handshake, handshake-ws,
//! handshake-wss, hold), `BENCH_TARGETS` (direct, switchyard, nginx,
//! haproxy, bare-hyper), `BENCH_KEEP_TMP` (keep the generated configurations
//! and logs).
//!
//! Under `cargo test --benches` (no `--bench` argument) it only runs its
//! self-checks.

#[path = "proxies/backend.rs"]
mod backend;
#[path = "proxies/bare_hyper.rs"]
mod bare_hyper;
#[path = "proxies/certs.rs"]
mod certs;
#[path = "proxies/hold.rs"]
mod hold;
#[path = "proxies/process.rs"]
mod process;
#[path = "proxies/procfs.rs"]
mod procfs;
#[path = "proxies/report.rs"]
mod report;
#[path = "proxies/settings.rs"]
mod settings;
#[path = "proxies/targets.rs"]
mod targets;
#[path = "proxies/workloads.rs"]
mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use process::Guard;
use settings::{Settings, TargetKind, Workload};
use targets::{Shared, Target};
use workloads::{Runner, Sample};

/// Held tunnels wanted, each taking two sockets in a proxy.
const HOLD_TUNNELS: u64 = 9_500;
/// Handshakes per second the storm's backend accepts.
const STORM_BACKEND_RATE: u64 = 1_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--backend") {
        let rate = args
            .iter()
            .position(|a| a == "--handshake-rate")
            .and_then(|j| args.get(j + 1))
            .and_then(|r| r.parse().ok());
        return backend::main(args.get(i + 1).map_or("", String::as_str), rate);
    }
    if let Some(i) = args.iter().position(|a| a == "--bare-hyper") {
        let arg = |n: usize| args.get(i + n).map_or("", String::as_str);
        return bare_hyper::main(arg(1), arg(2));
    }
    if !args.iter().any(|a| a == "--bench") {
        return self_checks();
    }
    process::install_signal_flag();
    match suite() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbench proxies: {e}");
            ExitCode::FAILURE
        }
    }
}

fn self_checks() -> ExitCode {
    let checks = [
        ("wrk output", workloads::self_check()),
        ("report helpers", report::self_check()),
    ];
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    for f in &failed {
        eprintln!("self-check failed: {f}");
    }
    println!(
        "bench proxies: self-checks only (run `cargo bench --bench proxies` to measure)\n\
         {} passed, {} failed",
        checks.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The load tool and proxy: `target/release/switchyard`, built if missing.
fn switchyard_binary() -> Result<PathBuf, String> {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("{} is missing: building it", path.display());
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "switchyard"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo to build switchyard: {e}"))?;
    if status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing and `cargo build --release --bin switchyard` did not make it; build it first",
            path.display()
        ))
    }
}

/// `target/` (the switchyard binary's grandparent folder).
fn target_dir(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

/// First line of `program ARGS` (stdout or stderr), for the report.
fn version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".into())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}

/// A small xorshift generator for the target order.
struct Shuffler(u64);

impl Shuffler {
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            items.swap(i, (self.0 % (i as u64 + 1)) as usize);
        }
    }
}

fn suite() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let binary = switchyard_binary()?;
    let file_limit = process::raise_file_limit();
    // Every process needs about two sockets per tunnel plus some headroom.
    let hold_tunnels = HOLD_TUNNELS.min(file_limit.saturating_sub(600) / 2);
    if hold_tunnels < HOLD_TUNNELS && settings.workloads.contains(&Workload::Hold) {
        eprintln!(
            "note: the open-file limit is {file_limit}: holding {hold_tunnels} tunnels, not {HOLD_TUNNELS}"
        );
    }
    let mut tmp = tempfile::Builder::new()
        .prefix("switchyard-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let dir = tmp.path().to_path_buf();
    if std::env::var_os("BENCH_KEEP_TMP").is_some() {
        tmp.disable_cleanup(true);
        eprintln!(
            "note: BENCH_KEEP_TMP: configurations and logs stay in {}",
            dir.display()
        );
    }
    let certs = certs::make(&dir)?;
    let ports = targets::free_ports(2 + 2 * TargetKind::ALL.len())?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let storm_addr = SocketAddr::from(([127, 0, 0, 1], ports[1 + 2 * TargetKind::ALL.len()]));
    let shared = Shared {
        dir: dir.clone(),
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        backend: backend_addr,
        storm_backend: storm_addr,
    };

    // The backend.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut command = Command::new(&exe);
    command.arg("--backend").arg(backend_addr.to_string());
    let mut backend = Guard::spawn("backend", command, &dir.join("backend.log"), None)?;
    process::wait_for_port(backend_addr, &mut backend, Duration::from_secs(10))?;
    // The storm's backend: 1,000 handshakes per second at most.
    let mut command = Command::new(&exe);
    command
        .arg("--backend")
        .arg(storm_addr.to_string())
        .arg("--handshake-rate")
        .arg(STORM_BACKEND_RATE.to_string());
    let mut storm_backend = Guard::spawn(
        "storm backend",
        command,
        &dir.join("storm-backend.log"),
        None,
    )?;
    process::wait_for_port(storm_addr, &mut storm_backend, Duration::from_secs(10))?;

    // The targets that can run here.
    let mut skipped = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for (i, &kind) in settings.targets.iter().enumerate() {
        let (ws, wss) = (ports[1 + 2 * i], ports[2 + 2 * i]);
        let program = match kind {
            TargetKind::Direct => {
                targets.push(Target::direct(&shared));
                continue;
            }
            TargetKind::Switchyard => Some(binary.clone()),
            TargetKind::Nginx => process::find_program("nginx"),
            TargetKind::Haproxy => process::find_program("haproxy"),
            TargetKind::BareHyper => Some(exe.clone()),
        };
        let Some(program) = program else {
            let msg = format!("{kind} is not installed: skipped (apt-get install -y {kind})");
            eprintln!("note: {msg}");
            skipped.push(msg);
            continue;
        };
        let mut target = Target::proxy(kind, program, &shared, ws, wss)?;
        target
            .start()
            .map_err(|e| format!("starting {kind}: {e}"))?;
        targets.push(target);
    }
    let kinds: Vec<TargetKind> = targets.iter().map(|t| t.kind).collect();

    let wrk = process::find_program("wrk");
    let mut versions = vec![format!("switchyard {}", env!("CARGO_PKG_VERSION"))];
    for (kind, flag) in [(TargetKind::Nginx, "-v"), (TargetKind::Haproxy, "-v")] {
        if kinds.contains(&kind)
            && let Some(p) = process::find_program(kind.name())
        {
            versions.push(version(&p, flag));
        }
    }
    match &wrk {
        Some(p) => versions.push(version(p, "-v")),
        None => {
            skipped.push("wrk is not installed: HTTP measured with `switchyard bench http`".into())
        }
    }

    let runner = Runner::new(
        binary.clone(),
        wrk,
        dir.clone(),
        settings.seconds,
        certs.ca.clone(),
        backend.pid,
        backend_addr,
        hold_tunnels,
    );

    let plan: Vec<(Workload, Vec<TargetKind>)> = settings
        .workloads
        .iter()
        .map(|&w| {
            let ts = kinds.iter().copied().filter(|t| t.serves(w)).collect();
            (w, ts)
        })
        .collect();
    let per_round: usize = plan.iter().map(|(_, ts)| ts.len()).sum();
    let total = per_round * settings.rounds;
    println!(
        "bench proxies: {} round(s) × {per_round} measurements of {}s; targets: {}; workloads: {}",
        settings.rounds,
        settings.seconds,
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        settings
            .workloads
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let started = Instant::now();
    let load_before = procfs::load_average();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut shuffler = Shuffler(seed);
    let mut samples: Vec<Sample> = Vec::new();
    let mut done = 0;
    for round in 1..=settings.rounds {
        for (workload, kinds) in &plan {
            let mut order = kinds.clone();
            shuffler.shuffle(&mut order);
            for kind in order {
                process::check_interrupted()?;
                done += 1;
                let target = targets
                    .iter_mut()
                    .find(|t| t.kind == kind)
                    .ok_or("internal: target vanished")?;
                // Only the access-log workload runs with one: a restart
                // with the other configuration when it changes.
                if let Err(e) = target.set_access_log(*workload == Workload::HttpLog) {
                    eprintln!("  {workload} → {kind}: {e}");
                }
                let t0 = Instant::now();
                let result = if *workload == Workload::Hold {
                    hold::measure(&runner, round, target)
                } else {
                    runner.measure(round, *workload, target)
                };
                let sample = match result {
                    Ok(s) => s,
                    Err(e) if e == process::INTERRUPTED_MSG => return Err(e),
                    Err(e) => {
                        eprintln!("  {workload} → {kind} failed: {e}");
                        // A dead proxy is restarted for the next measurement.
                        if target.ensure_running().is_err() {
                            target.start()?;
                        }
                        let mut s = Sample::new(round, *workload, kind);
                        s.errors = 1;
                        s.notes
                            .push(e.lines().next().unwrap_or_default().to_string());
                        s
                    }
                };
                println!("{}", progress(done, total, &sample, t0.elapsed()));
                samples.push(sample);
            }
        }
    }

    let results = report::Results {
        samples: &samples,
        workloads: &settings.workloads,
        targets: &kinds,
    };
    let load = format!(
        "{load_before} at the start, {} at the end",
        procfs::load_average()
    );
    let command = format!(
        "BENCH_ROUNDS={} BENCH_SECONDS={} cargo bench --bench proxies",
        settings.rounds, settings.seconds
    );
    let run = Run {
        versions: &versions,
        skipped: &skipped,
        command: &command,
        load: &load,
        took: started.elapsed(),
    };
    let text = document(&results, &settings, &run);
    println!("\n{text}");
    let out = target_dir(&binary).join("bench-results.md");
    std::fs::write(&out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("written to {}", out.display());
    drop(targets);
    drop(backend);
    drop(storm_backend);
    Ok(())
}

fn progress(done: usize, total: usize, s: &Sample, took: Duration) -> String {
    let w = s.workload;
    let mut line = format!(
        "[{done:>3}/{total}] round {} {:<13} {:<10}",
        s.round,
        w.name(),
        s.target.name()
    );
    let fixed = |v: Option<f64>, scale: f64, digits: usize| {
        v.map_or("—".to_string(), |v| format!("{:.*}", digits, v / scale))
    };
    if let Some(h) = &s.hold {
        line.push_str(&format!(
            " held {:>5}  {:>5} KiB/tunnel  echo p99 {} ms @1k, {} ms @all",
            h.tunnels_held,
            fixed(h.kib_per_tunnel(), 1.0, 1),
            fixed(h.p99_1k_us, 1e3, 2),
            fixed(h.p99_full_us, 1e3, 2),
        ));
    } else {
        line.push_str(&format!(
            " {:>10} {:<5}  p99 {:>6} ms  proxy {:>7} {:<6}  backend {:>6}",
            fixed(s.rate, 1.0, 1),
            w.rate_unit(),
            fixed(s.p99_us, 1e3, 2),
            fixed(s.proxy_cpu, 1.0, 2),
            w.cpu_unit(),
            fixed(s.backend_cpu, 1.0, 2),
        ));
    }
    line.push_str(&format!(
        "  errors {}  ({:.0}s)",
        s.errors,
        took.as_secs_f64()
    ));
    if let Some(note) = s.notes.first() {
        line.push_str(&format!("  [{note}]"));
    }
    line
}

/// What the report says about the run itself.
struct Run<'a> {
    versions: &'a [String],
    skipped: &'a [String],
    command: &'a str,
    load: &'a str,
    took: Duration,
}

fn document(results: &report::Results, settings: &Settings, run: &Run) -> String {
    let mut out = String::from("## Switchyard vs nginx vs HAProxy\n\n");
    out.push_str(&format!(
        "- Date: {}\n- Machine: {}; load average {}\n- Command: `{}` ({} rounds × {} s per measurement, {:.1} min)\n- Versions: {}\n",
        now_utc(),
        procfs::machine(),
        run.load,
        run.command,
        settings.rounds,
        settings.seconds,
        run.took.as_secs_f64() / 60.0,
        run.versions.join("; "),
    ));
    for s in run.skipped {
        out.push_str(&format!("- Note: {s}\n"));
    }
    out.push_str(
        "- Everything on loopback, on the same cores: client, proxy and backend compete for them. \
         Medians over rounds; ratios are this row ÷ that target (throughput: higher is better; p99, CPU, memory: lower is better). \
         Proxy CPU is utime+stime of all its processes over the measurement ÷ operations \
         (bulk: ÷ MB sent; each MB crosses the proxy twice, there and back). \
         HTTP: wrk -t2 -c64 when installed; echo: 64 connections × 64 B; bulk: 4 × 64 KiB; \
         handshakes: 32 concurrent clients, open + clean close, TLS sessions resumed when the server offers tickets.\n\n",
    );
    out.push_str(&results.main_table());
    out.push('\n');
    out.push_str(&results.hold_table());
    let costs = results.access_log_cost();
    if !costs.is_empty() {
        out.push_str("\nAccess log to a file, CPU per request with it ÷ without (same run):");
        for (target, cost) in costs {
            out.push_str(&format!(" {target} {cost:.2}×;"));
        }
        out.push('\n');
    }
    out.push_str("\n### Where Switchyard misses the bar (the better of nginx and HAProxy)\n\n");
    let misses = results.verdict();
    if misses.is_empty() {
        out.push_str("Nowhere in this run.\n");
    }
    for m in misses {
        out.push_str(&format!("- {m}\n"));
    }
    out.push_str("\n### Every measurement\n\n");
    out.push_str(&results.log_table());
    out
}
