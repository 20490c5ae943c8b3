//! One upstream server as every configuration generation shares it: its
//! open tunnels, its health, its handshake queue and its connection pool.
//!
//! A [`Server`] is one address of one upstream. The [`Fleet`] hands the
//! same `Server` to every generation that names it, so a reload that keeps
//! a server keeps its tunnel count, its health and its idle connections,
//! and a reload that adds one starts it at zero tunnels (and so sends it
//! the next ones). A server no generation names lives on while its open
//! tunnels hold it, then its series leave `/metrics`.
//!
//! How a server is dialled (connect timeout, TLS) is its [`Link`], replaced
//! when a reload changes those settings; the pool belongs to the link, so
//! no connection made one way is reused for the other.

use super::health::{self, Change, Checks, Outcome, Passive, Verdict};
use super::pool::{ConnectError, ServerPool};
use super::queue::Queue;
use super::resolve::Resolve;
use super::tls::{ClientTls, Secure};
use crate::config::{HealthCheck, UpstreamConfig, UpstreamTls};
use crate::io::UpstreamStream;
use crate::metrics::{Metrics, ServerStats};
use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::task::AtomicWaker;
use slab::Slab;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// What identifies a server: its upstream and its address.
type Key = (Arc<str>, SocketAddr);
type Registry = Mutex<HashMap<Key, Weak<Server>>>;

/// Every server of every upstream, shared by all generations.
pub struct Fleet {
    registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Worker threads, for the per-worker idle stacks of each pool.
    pub workers: usize,
    /// How host names in `servers` become addresses.
    pub resolver: Arc<dyn Resolve>,
}

impl Fleet {
    pub fn new(metrics: Arc<Metrics>, workers: usize, resolver: Arc<dyn Resolve>) -> Arc<Fleet> {
        Arc::new(Fleet {
            registry: Arc::default(),
            metrics,
            workers,
            resolver,
        })
    }

    /// The server at `addr` of `config`'s upstream, written as `host` in its
    /// `servers`, with `config`'s settings in force.
    pub fn server(
        &self,
        config: &UpstreamConfig,
        tls: Option<&ClientTls>,
        addr: SocketAddr,
        host: &str,
    ) -> Arc<Server> {
        let key: Key = (Arc::from(config.name.as_str()), addr);
        let server = {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            match registry.get(&key).and_then(Weak::upgrade) {
                Some(server) => server,
                None => {
                    let server = Arc::new(Server::new(self, key.clone(), host, config));
                    registry.insert(key, Arc::downgrade(&server));
                    server
                }
            }
        };
        server.configure(config, tls, self.workers);
        server
    }
}

/// How a server is dialled, and the idle connections made that way.
pub struct Link {
    connect_timeout: Duration,
    tls: Option<(UpstreamTls, Secure)>,
    pub pool: Arc<ServerPool>,
}

impl Link {
    fn same_as(&self, connect_timeout: Duration, tls: Option<&UpstreamTls>) -> bool {
        self.connect_timeout == connect_timeout && self.tls.as_ref().map(|(t, _)| t) == tls
    }
}

/// One address of one upstream.
pub struct Server {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
    /// `addr` as text, for logs, access events and metric labels.
    pub name: Arc<str>,
    /// The host as written in `servers`: a TLS certificate is checked for it.
    pub host: Arc<str>,
    /// Open tunnels, and handshakes under way that will become tunnels: what
    /// least-tunnels compares.
    load: AtomicUsize,
    passive: Passive,
    checks: Checks,
    pub queue: Queue,
    link: ArcSwap<Link>,
    health: ArcSwapOption<HealthCheck>,
    checking: AtomicBool,
    /// Open tunnels that rebalancing may ask to leave.
    movable: Mutex<Slab<Arc<Goodbye>>>,
    /// Of those, the ones asked to leave and not gone yet.
    leaving: AtomicUsize,
    stats: ServerStats,
    metrics: Arc<Metrics>,
    registry: Weak<Registry>,
}

impl Server {
    fn new(fleet: &Fleet, key: Key, host: &str, config: &UpstreamConfig) -> Server {
        let (upstream, addr) = key;
        let name: Arc<str> = Arc::from(addr.to_string());
        let stats = fleet.metrics.server(&upstream, &name);
        let queue = Queue::new(fleet.metrics.upstream(&upstream).queue_length);
        Server {
            link: ArcSwap::from_pointee(Link {
                connect_timeout: config.connect_timeout,
                tls: None,
                pool: Arc::new(ServerPool::new(fleet.workers)),
            }),
            upstream,
            addr,
            name,
            host: Arc::from(host),
            load: AtomicUsize::new(0),
            passive: Passive::default(),
            checks: Checks::default(),
            queue,
            health: ArcSwapOption::empty(),
            checking: AtomicBool::new(false),
            movable: Mutex::new(Slab::new()),
            leaving: AtomicUsize::new(0),
            stats,
            metrics: fleet.metrics.clone(),
            registry: Arc::downgrade(&fleet.registry),
        }
    }

    /// Put an upstream's settings in force for this server.
    fn configure(
        self: &Arc<Self>,
        config: &UpstreamConfig,
        tls: Option<&ClientTls>,
        workers: usize,
    ) {
        let wanted_tls = config.tls.as_ref().zip(tls);
        if !self
            .link
            .load()
            .same_as(config.connect_timeout, wanted_tls.map(|(t, _)| t))
        {
            self.link.store(Arc::new(Link {
                connect_timeout: config.connect_timeout,
                tls: wanted_tls.map(|(settings, client)| {
                    (settings.clone(), Secure::new(settings, client, &self.host))
                }),
                pool: Arc::new(ServerPool::new(workers)),
            }));
        }
        self.queue.set_limit(config.max_handshakes);
        let health = config.health.clone().map(Arc::new);
        let checked = health.is_some();
        self.health.store(health);
        if checked {
            if !self.checking.swap(true, Ordering::AcqRel)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                runtime.spawn(check_loop(Arc::downgrade(self)));
            }
        } else if self.checks.reset() {
            tracing::info!(
                "server {} of upstream {} is up: health checks are off",
                self.name,
                self.upstream
            );
            self.show_up();
        }
    }

    /// Whether the server takes new work: its checks pass and it is not
    /// being skipped after a refused connection.
    pub fn available(&self) -> bool {
        self.checks.is_up() && self.passive.allows()
    }

    /// Open tunnels plus handshakes on their way to becoming one.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// How the server is dialled now.
    pub fn link(&self) -> Arc<Link> {
        self.link.load_full()
    }

    /// Count a tunnel on its way to this server; a `movable` one may be
    /// asked to leave by rebalancing once it is open.
    pub fn lease(self: &Arc<Self>, movable: bool) -> TunnelLease {
        self.load.fetch_add(1, Ordering::Relaxed);
        TunnelLease {
            server: self.clone(),
            open: false,
            movable,
            goodbye: None,
        }
    }

    /// Open tunnels not yet asked to leave.
    pub fn staying(&self) -> usize {
        self.load()
            .saturating_sub(self.leaving.load(Ordering::Relaxed))
    }

    /// Ask one movable tunnel to say goodbye; false when there is none.
    pub fn move_one(&self) -> bool {
        let movable = self.movable.lock().unwrap_or_else(|p| p.into_inner());
        match movable.iter().find(|(_, g)| !g.is_fired()) {
            Some((_, goodbye)) => {
                goodbye.fire();
                self.leaving.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// A connected stream (TCP, then TLS when the upstream has `tls`),
    /// within `connect_timeout`. Passive health hears of the result.
    pub async fn dial(&self, link: &Link) -> Result<UpstreamStream, ConnectError> {
        let result = tokio::time::timeout(link.connect_timeout, dial(self.addr, link))
            .await
            .unwrap_or(Err(ConnectError::Timeout(link.connect_timeout)));
        match &result {
            Ok(_) => {
                if let Change::Up(failures) = self.passive.succeeded() {
                    tracing::info!(
                        "server {} of upstream {} is up again after {failures} failed connection attempts",
                        self.name,
                        self.upstream
                    );
                    self.show_up();
                }
            }
            Err(error) => self.connect_failed(error),
        }
        result
    }

    fn connect_failed(&self, error: &ConnectError) {
        self.stats.connect_failures.inc();
        match self.passive.failed() {
            Change::Down(skip) => tracing::warn!(
                upstream = %self.upstream,
                server = %self.name,
                "server {} of upstream {} is down: {error}; skipped for {skip:?}",
                self.name,
                self.upstream
            ),
            Change::StillDown(skip) => tracing::warn!(
                upstream = %self.upstream,
                server = %self.name,
                "server {} of upstream {} still fails ({} times in a row): {error}; skipped for {skip:?}",
                self.name,
                self.upstream,
                self.passive.failures()
            ),
            Change::Up(_) | Change::Unchanged => {}
        }
        self.stats.up.set(0);
    }

    /// Set the `up` series from both kinds of health.
    fn show_up(&self) {
        self.stats.up.set(i64::from(self.available()));
    }

    /// One active check: connect, `GET path`, read the status.
    async fn check(&self, check: &HealthCheck) -> Outcome {
        let request = health::request(
            check,
            &format!("{}:{}", self.host_for_header(), self.addr.port()),
        );
        let link = self.link();
        let attempt = async {
            let stream = match tokio::time::timeout(check.timeout, dial(self.addr, &link)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Outcome::Failed(error.to_string()),
                Err(_) => return Outcome::Failed(format!("no answer within {:?}", check.timeout)),
            };
            health::probe(stream, &request).await
        };
        tokio::time::timeout(check.timeout, attempt)
            .await
            .unwrap_or_else(|_| Outcome::Failed(format!("no answer within {:?}", check.timeout)))
    }

    /// The host for a `Host` header: an IPv6 address goes in brackets.
    fn host_for_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_string()
        }
    }

    fn record(&self, outcome: &Outcome, check: &HealthCheck) {
        let passed = matches!(outcome, Outcome::Passed(_));
        match self.checks.record(passed, check.fall, check.rise) {
            Some(Verdict::Down(n)) => {
                let why = match outcome {
                    Outcome::Failed(why) => why.as_str(),
                    Outcome::Passed(_) => "",
                };
                tracing::warn!(
                    upstream = %self.upstream,
                    server = %self.name,
                    "server {} of upstream {} is down: {n} failed checks ({why})",
                    self.name,
                    self.upstream
                );
                self.show_up();
            }
            Some(Verdict::Up(n)) => {
                tracing::info!(
                    upstream = %self.upstream,
                    server = %self.name,
                    "server {} of upstream {} is up: {n} passed checks",
                    self.name,
                    self.upstream
                );
                self.show_up();
            }
            None => {}
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        let key = (self.upstream.clone(), self.addr);
        // A generation may have named the server again meanwhile: then the
        // entry and the series are the new server's.
        if registry.get(&key).is_some_and(|w| w.strong_count() == 0) {
            registry.remove(&key);
            self.metrics.forget_server(&self.upstream, &self.name);
        }
    }
}

/// TCP, then TLS if the link says so.
async fn dial(addr: SocketAddr, link: &Link) -> Result<UpstreamStream, ConnectError> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match &link.tls {
        None => Ok(Either::Left(tcp)),
        Some((_, secure)) => secure
            .handshake(tcp)
            .await
            .map(|tls| Either::Right(Box::new(tls)))
            .map_err(ConnectError::Tls),
    }
}

/// Active checks of one server, every `interval`, while a configuration
/// asks for them and the server exists.
async fn check_loop(server: Weak<Server>) {
    loop {
        let Some(current) = server.upgrade() else {
            return;
        };
        let Some(check) = current.health.load_full() else {
            current.checking.store(false, Ordering::Release);
            return;
        };
        let outcome = current.check(&check).await;
        current.record(&outcome, &check);
        drop(current);
        tokio::time::sleep(check.interval).await;
    }
}

/// A tunnel counted on its server, from the pick to its end.
pub struct TunnelLease {
    server: Arc<Server>,
    open: bool,
    movable: bool,
    /// Its place among the server's movable tunnels, once open.
    goodbye: Option<(usize, Arc<Goodbye>)>,
}

impl TunnelLease {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The tunnel is open: count it in the server's `tunnels_open`, and
    /// return the goodbye rebalancing may fire, if it may move this one.
    pub fn opened(&mut self) -> Option<Arc<Goodbye>> {
        if !self.open {
            self.open = true;
            self.server.stats.tunnels_open.inc();
            if self.movable {
                let goodbye = Arc::new(Goodbye::default());
                let key = self
                    .server
                    .movable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(goodbye.clone());
                self.goodbye = Some((key, goodbye));
            }
        }
        self.goodbye.as_ref().map(|(_, g)| g.clone())
    }
}

impl Drop for TunnelLease {
    fn drop(&mut self) {
        if let Some((key, goodbye)) = self.goodbye.take() {
            self.server
                .movable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_remove(key);
            if goodbye.is_fired() {
                self.server.leaving.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.server.load.fetch_sub(1, Ordering::Relaxed);
        if self.open {
            self.server.stats.tunnels_open.dec();
        }
    }
}

/// A tunnel's cue to leave: fired by rebalancing, seen by the tunnel,
/// which then sends Close 1001 both ways between the peers' frames.
#[derive(Default)]
pub struct Goodbye {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl Goodbye {
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Whether it was fired; the task is woken when it is.
    pub fn poll_fired(&self, cx: &mut Context<'_>) -> bool {
        if self.is_fired() {
            return true;
        }
        self.waker.register(cx.waker());
        self.is_fired()
    }
}
