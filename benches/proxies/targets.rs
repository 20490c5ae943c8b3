//! The targets: free loopback ports, the three proxies' configuration files
//! (written to the run's temporary folder and kept equivalent: upgrade
//! headers forwarded, upstream keep-alive, no access log, two worker threads
//! or processes, high file limits, 1 h tunnel idle timeout, TLS 1.2+ with
//! the repository's development certificate), starting and restarting
//! them, and sampling their CPU time and memory.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::process::{self, Guard};
use super::procfs;
use super::settings::TargetKind;

/// Connections one proxy process must be able to hold: 9,500 tunnels are
/// 19,000 sockets, plus the echo connections and a margin.
const PROXY_CONNECTIONS: u64 = 19_900;

/// Picks `n` distinct free TCP ports on 127.0.0.1 below the ephemeral
/// range (32768+), so outgoing connections never take them meanwhile.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let span = 10_000u32;
    let mut ports = Vec::new();
    for i in 0..span {
        let port = 21_000 + ((seed + i * 7) % span) as u16;
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
            if ports.len() == n {
                return Ok(ports);
            }
        }
    }
    Err(format!("could not find {n} free ports on 127.0.0.1"))
}

/// Files every proxy needs.
pub struct Shared {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub backend: SocketAddr,
    /// The storm workload's backend (1,000 handshakes/s).
    pub storm_backend: SocketAddr,
}

/// Handshakes in flight per server with the proxy's queue on, for the
/// storm: about the backend's rate × its handshake time, with room.
pub const STORM_MAX_HANDSHAKES: u32 = 64;

/// Memory of a proxy: the processes that hold connections (Switchyard and
/// HAProxy: the one process; nginx: the workers, summed) and, for nginx, the
/// master apart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub kib: u64,
    pub master_kib: Option<u64>,
}

/// One target: the backend itself (direct) or a proxy in front of it.
pub struct Target {
    pub kind: TargetKind,
    pub ws_port: u16,
    /// None for direct: the backend stays plain ws.
    pub wss_port: Option<u16>,
    program: Option<PathBuf>,
    config: Option<PathBuf>,
    dir: PathBuf,
    backend: SocketAddr,
    storm_backend: SocketAddr,
    guard: Option<Guard>,
    /// The shared files, to write the configuration again.
    shared: Option<(PathBuf, PathBuf)>,
    /// Whether the running configuration writes an access log file.
    access_log: bool,
}

impl Target {
    pub fn direct(shared: &Shared) -> Target {
        Target {
            kind: TargetKind::Direct,
            ws_port: shared.backend.port(),
            wss_port: None,
            program: None,
            config: None,
            dir: shared.dir.clone(),
            backend: shared.backend,
            storm_backend: shared.storm_backend,
            guard: None,
            shared: None,
            access_log: false,
        }
    }

    /// Writes the proxy's configuration; `program` is its executable.
    pub fn proxy(
        kind: TargetKind,
        program: PathBuf,
        shared: &Shared,
        ws_port: u16,
        wss_port: u16,
    ) -> Result<Target, String> {
        let dir = shared.dir.join(kind.name());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = match kind {
            TargetKind::Switchyard => Some((
                "switchyard.toml",
                switchyard_config(shared, &dir, ws_port, wss_port, false),
            )),
            TargetKind::Nginx => Some((
                "nginx.conf",
                nginx_config(shared, &dir, ws_port, wss_port, false),
            )),
            TargetKind::Haproxy => {
                let pem = dir.join("cert-and-key.pem");
                let mut both = read(&shared.cert)?;
                both.push('\n');
                both.push_str(&read(&shared.key)?);
                write(&pem, &both)?;
                Some((
                    "haproxy.cfg",
                    haproxy_config(shared, &pem, ws_port, wss_port),
                ))
            }
            // Takes its two addresses on the command line; no TLS.
            TargetKind::BareHyper => None,
            TargetKind::Direct => return Ok(Target::direct(shared)),
        };
        let config = match file {
            Some((name, text)) => {
                let config = dir.join(name);
                write(&config, &text)?;
                Some(config)
            }
            None => None,
        };
        Ok(Target {
            kind,
            ws_port,
            wss_port: config.is_some().then_some(wss_port),
            program: Some(program),
            config,
            dir,
            backend: shared.backend,
            storm_backend: shared.storm_backend,
            guard: None,
            shared: Some((shared.cert.clone(), shared.key.clone())),
            access_log: false,
        })
    }

    /// Run with an access log file (`on`) or none, restarting when that
    /// changes. Targets without a file of their own ignore it.
    pub fn set_access_log(&mut self, on: bool) -> Result<(), String> {
        if on == self.access_log || !matches!(self.kind, TargetKind::Switchyard | TargetKind::Nginx)
        {
            return Ok(());
        }
        let (Some((cert, key)), Some(config)) = (&self.shared, &self.config) else {
            return Ok(());
        };
        let shared = Shared {
            dir: self.dir.clone(),
            cert: cert.clone(),
            key: key.clone(),
            backend: self.backend,
            storm_backend: self.storm_backend,
        };
        let wss = self.wss_port.unwrap_or(0);
        let text = match self.kind {
            TargetKind::Switchyard => switchyard_config(&shared, &self.dir, self.ws_port, wss, on),
            _ => nginx_config(&shared, &self.dir, self.ws_port, wss, on),
        };
        write(config, &text)?;
        self.access_log = on;
        self.start()
    }

    /// Where the storm goes: through the proxy's storm routes (`queued`:
    /// the one with its handshake queue), or straight to the storm backend.
    pub fn storm_url(&self, queued: bool) -> String {
        match self.kind {
            TargetKind::Direct => format!("ws://{}/", self.storm_backend),
            _ if queued => format!("ws://127.0.0.1:{}/storm-queued/", self.ws_port),
            _ => format!("ws://127.0.0.1:{}/storm/", self.ws_port),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.ws_port)
    }

    pub fn wss_url(&self) -> Option<String> {
        self.wss_port.map(|p| format!("wss://127.0.0.1:{p}/"))
    }

    /// Starts the proxy (a fresh process if one was running) and waits
    /// until both its ports accept connections.
    pub fn start(&mut self) -> Result<(), String> {
        self.stop();
        let Some(program) = &self.program else {
            return Ok(());
        };
        let mut command = Command::new(program);
        match (self.kind, self.config.as_deref()) {
            (TargetKind::Switchyard, Some(config)) => {
                command.arg("run").arg("-c").arg(config).env(
                    "RUST_LOG",
                    if self.access_log {
                        "info"
                    } else {
                        "info,access=off"
                    },
                );
            }
            (TargetKind::Nginx, Some(config)) => {
                command
                    .arg("-p")
                    .arg(&self.dir)
                    .arg("-e")
                    .arg(self.dir.join("error.log"))
                    .arg("-c")
                    .arg(config)
                    .arg("-g")
                    .arg("daemon off;");
            }
            (TargetKind::Haproxy, Some(config)) => {
                command.arg("-f").arg(config).arg("-db");
            }
            (TargetKind::BareHyper, _) => {
                command
                    .arg("--bare-hyper")
                    .arg(format!("127.0.0.1:{}", self.ws_port))
                    .arg(self.backend.to_string());
            }
            (TargetKind::Switchyard | TargetKind::Nginx | TargetKind::Haproxy, None) => {
                return Err(format!("internal: {} has no configuration file", self.kind));
            }
            (TargetKind::Direct, _) => return Ok(()),
        }
        let log = self.dir.join("stderr.log");
        let mut guard = Guard::spawn(self.kind.name(), command, &log, None)?;
        for port in [Some(self.ws_port), self.wss_port].into_iter().flatten() {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            process::wait_for_port(addr, &mut guard, Duration::from_secs(10))?;
        }
        self.guard = Some(guard);
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.stop();
        }
    }

    /// Fails with the proxy's log when it has died.
    pub fn ensure_running(&mut self) -> Result<(), String> {
        match &mut self.guard {
            Some(guard) => guard.ensure_running(),
            None if self.kind.is_proxy() => Err(format!("{} is not running", self.kind)),
            None => Ok(()),
        }
    }

    /// Every process of the proxy (nginx: master and workers); empty for direct.
    pub fn pids(&self) -> Vec<u32> {
        match &self.guard {
            Some(guard) => {
                let mut pids = vec![guard.pid];
                pids.extend(procfs::descendants(guard.pid));
                pids
            }
            None => Vec::new(),
        }
    }

    /// Total CPU time of the proxy's processes.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pids = self.pids();
        (!pids.is_empty()).then(|| procfs::cpu_time_sum(&pids))
    }

    /// Resident memory; `None` for direct.
    pub fn memory(&self) -> Option<Memory> {
        let guard = self.guard.as_ref()?;
        let root = procfs::rss_kib(guard.pid)?;
        if self.kind == TargetKind::Nginx {
            let workers: u64 = procfs::descendants(guard.pid)
                .into_iter()
                .filter_map(procfs::rss_kib)
                .sum();
            Some(Memory {
                kib: workers,
                master_kib: Some(root),
            })
        } else {
            Some(Memory {
                kib: root,
                master_kib: None,
            })
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn switchyard_config(shared: &Shared, dir: &Path, ws: u16, wss: u16, log: bool) -> String {
    let access_log = if log {
        format!("{:?}", dir.join("access.log").display().to_string())
    } else {
        "\"off\"".to_string()
    };
    format!(
        r#"# Generated by benches/proxies.rs. Access log off (also RUST_LOG=info,access=off)
# except for the http-log workload; two worker threads, as nginx's two worker
# processes and HAProxy's nbthread 2.
[server]
access_log = {access_log}
workers = 2
shutdown_timeout = "1s"
client_header_timeout = "10s"

[[listener]]
bind = "127.0.0.1:{ws}"

[[listener]]
bind = "127.0.0.1:{wss}"
tls = {{ cert = "{cert}", key = "{key}" }}

[upstream.backend]
servers = ["{backend}"]
connect_timeout = "5s"
read_timeout = "60s"

[[route]]
path = "/"
upstream = "backend"
idle_timeout = "1h"
# Frames read both ways; the proxy pings a side silent for 30 s (nginx and
# HAProxy cannot ping: their tunnels stay byte splices).
ping_interval = "30s"
ping_timeout = "10s"

# The storm workload: its backend takes 1,000 handshakes/s.
[upstream.storm]
servers = ["{storm}"]

[upstream.storm_queued]
servers = ["{storm}"]
max_handshakes = {STORM_MAX_HANDSHAKES}
queue_timeout = "30s"

[[route]]
path = "/storm/"
upstream = "storm"

[[route]]
path = "/storm-queued/"
upstream = "storm_queued"

# The JSON workloads: compression as nginx's gzip on and HAProxy's compression.
[[route]]
path = "/json"
upstream = "backend"
compress = true
"#,
        cert = shared.cert.display(),
        key = shared.key.display(),
        backend = shared.backend,
        storm = shared.storm_backend,
    )
}

fn nginx_config(shared: &Shared, dir: &Path, ws: u16, wss: u16, log: bool) -> String {
    let d = dir.display();
    let access_log = if log {
        format!("access_log {d}/access.log combined buffer=64k flush=1s")
    } else {
        "access_log off".to_string()
    };
    let mut text = String::new();
    let _ = write!(
        text,
        r#"# Generated by benches/proxies.rs.
user root;
worker_processes 2;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections {PROXY_CONNECTIONS};
}}

http {{
    {access_log};
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream storm {{
        server {storm};
    }}

    upstream backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}

    server {{
        listen 127.0.0.1:{ws};
        listen 127.0.0.1:{wss} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location /storm/ {{
            proxy_pass http://storm;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_connect_timeout 5s;
            proxy_read_timeout 1h;
        }}

        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_connect_timeout 5s;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}

        # The JSON workloads: Switchyard's compress = true (its 1 KiB floor,
        # Vary) with nginx's default gzip level (1).
        location = /json {{
            gzip on;
            gzip_types application/json;
            gzip_min_length 1024;
            gzip_vary on;
            gzip_proxied any;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"#,
        cert = shared.cert.display(),
        key = shared.key.display(),
        backend = shared.backend,
        storm = shared.storm_backend,
    );
    text
}

fn haproxy_config(shared: &Shared, pem: &Path, ws: u16, wss: u16) -> String {
    // maxconn counts client connections; each also has a server side.
    let maxconn = PROXY_CONNECTIONS / 2 - 150;
    format!(
        r#"# Generated by benches/proxies.rs. No log target: no access log.
global
    nbthread 2
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    maxconn {maxconn}
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:{ws}
    bind 127.0.0.1:{wss} ssl crt {pem} alpn h2,http/1.1
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    use_backend be_storm_queued if {{ path_beg /storm-queued/ }}
    use_backend be_storm if {{ path_beg /storm/ }}
    default_backend be

backend be
    http-reuse always
    # The JSON workloads (only application/json answers qualify).
    compression algo gzip
    compression type application/json
    server s1 {backend}

# The storm workload: without and with maxconn + queue on the server line.
backend be_storm
    server s1 {storm}

backend be_storm_queued
    timeout queue 30s
    server s1 {storm} maxconn {STORM_MAX_HANDSHAKES}
"#,
        pem = pem.display(),
        backend = shared.backend,
        storm = shared.storm_backend,
    )
}
