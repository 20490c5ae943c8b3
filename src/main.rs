//! The `switchyard` command line. Everything else lives in the library.

/// jemalloc, tuned to give memory back: a burst of handshakes uses parser
/// buffers that idle tunnels no longer need, and a background thread returns
/// those pages to the system after a second instead of keeping them.
///
/// hyper allocates its read buffers 8 KiB at a time, two for every proxied
/// request (client side and upstream side). jemalloc's default slab for that
/// size holds a single buffer, so each one went through the arena's slab
/// allocator; slabs of 32 pages (16 buffers) keep them in the thread's cache.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc before `main` (see jemalloc's `malloc_conf`).
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 =
    &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,slab_sizes:8192-8192:32\0"[0];

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::config::{Config, LogFormat};

/// A WebSocket-aware reverse proxy.
#[derive(Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the route file until SIGTERM/SIGINT; SIGHUP reloads it.
    Run {
        #[command(flatten)]
        file: RouteFile,
        /// Reload the route file whenever it changes on disk, as SIGHUP
        /// does (the same as `[server] watch = true`).
        #[arg(long)]
        watch: bool,
    },
    /// Check a route file like `nginx -t`: exit 0 if valid, 1 if not. It
    /// binds no port, so it can run beside the live proxy (as systemd's
    /// ExecReload does); a port another process holds is reported by `run`.
    Validate(RouteFile),
    /// The built-in demo: a chat room behind the proxy, no files needed.
    Demo {
        /// Port for http:// and ws:// (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port for https:// and wss:// (0 picks a free one).
        #[arg(long, default_value_t = 8443)]
        tls_port: u16,
    },
    /// WebSocket load tool: point it at any ws:// or wss:// URL.
    Bench(switchyard::bench::BenchArgs),
}

/// The route file argument of `run` and `validate`.
#[derive(clap::Args)]
struct RouteFile {
    /// The route file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "switchyard.toml"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(RouteFile { config }) => match Config::load(&config) {
            Ok(loaded) => {
                println!(
                    "{}: ok ({}, {}, {})",
                    config.display(),
                    count(loaded.listeners.len(), "listener"),
                    count(loaded.upstreams.len(), "upstream"),
                    count(loaded.routes.len(), "route")
                );
                for upstream in loaded.upstreams.values() {
                    println!("  {}", upstream.describe());
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            file: RouteFile { config },
            watch,
        } => {
            let config = match Config::load(&config) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            switchyard::telemetry::init(config.server.log_format);
            block_on(async {
                switchyard::lifecycle::run_watching(config, watch)
                    .await
                    .map_err(|e| match e {
                        // Lines of their own, each `FILE:LINE:COL: …`.
                        e @ switchyard::error::RunError::Listen(_) => e.to_string(),
                        e => format!("switchyard: {e}"),
                    })
            })
        }
        Command::Bench(args) => match runtime() {
            Some(runtime) => runtime.block_on(switchyard::bench::run_cli(args)),
            None => ExitCode::FAILURE,
        },
        Command::Demo { port, tls_port } => {
            switchyard::telemetry::init(LogFormat::Text);
            block_on(async {
                switchyard::demo::run(port, tls_port)
                    .await
                    .map_err(|e| format!("switchyard: {e}"))
            })
        }
    }
}

/// A multi-threaded runtime, one thread per core (for the load tool).
fn runtime() -> Option<tokio::runtime::Runtime> {
    report(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    )
}

/// The control runtime of `run` and `demo`: signals, reloads, admin. The
/// proxy's traffic runs on its own worker threads.
fn control_runtime() -> Option<tokio::runtime::Runtime> {
    report(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

fn report(runtime: std::io::Result<tokio::runtime::Runtime>) -> Option<tokio::runtime::Runtime> {
    match runtime {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Run `job` on the runtime; print its error as it is and exit 1.
fn block_on(job: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let Some(runtime) = control_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `1 route`, `2 routes`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
