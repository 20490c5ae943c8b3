//! A proxy's life: start, reload (SIGHUP), drain and stop (SIGTERM/SIGINT).
//!
//! **Start** binds every listener before serving anything, so a port in use
//! stops start-up with a clear error instead of a half-bound proxy.
//!
//! **Reload** reads and checks the route file again. Any error keeps the old
//! configuration whole. Otherwise new listeners are bound first (a failure
//! still aborts the reload), then the new [`Generation`] is swapped in
//! atomically, then removed listeners stop accepting. Unchanged listeners
//! keep their sockets, so no port ever refuses a connection. Open
//! connections and tunnels are never touched: a tunnel lives on with the
//! settings it was opened with, even when its route is gone.
//!
//! **Watch** (`[server] watch`, `run --watch`): the route file is polled
//! ([`crate::watch`]) and a settled change reloads it exactly as SIGHUP does.
//!
//! **Stop** makes `/readyz` answer 503, keeps accepting for `shutdown_delay`,
//! then closes the listeners, lets in-flight requests finish and sends each
//! open tunnel Close 1001 at a moment of its own, spread evenly over
//! `shutdown_spread`, for up to `shutdown_timeout`; then it closes what is
//! left and returns.

use crate::admin::Admin;
use crate::config::{Config, ConfigErrors, ListenerKey, Position, RouteConfig, Scheme};
use crate::error::{BindFailure, BindFailures, RunError};
use crate::metrics::Metrics;
use crate::server::{self, Listener};
use crate::state::{Generation, State};
use crate::upstream::resolve::{Resolve, System};
use crate::watch::RouteFileWatch;
use crate::workers::Workers;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Grace given to tasks after the hard stop before giving up on them.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);

/// A running proxy.
pub struct Proxy {
    state: Arc<State>,
    /// `run --watch`: watch the route file whatever it says.
    pub watch_always: bool,
    inner: Mutex<Sockets>,
    /// Declared last: dropped after the listeners, it stops the threads.
    workers: Workers,
}

/// What a reload may change besides the generation.
struct Sockets {
    listeners: Vec<Listener>,
    admin: Option<Admin>,
}

impl Proxy {
    /// Bind every listener of `config` and start serving.
    pub async fn start(config: Config) -> Result<Proxy, RunError> {
        Proxy::start_with_resolver(config, Arc::new(System)).await
    }

    /// Like [`Proxy::start`], with host names in upstream `servers` resolved
    /// by `resolver` instead of the system's resolver.
    pub async fn start_with_resolver(
        config: Config,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Proxy, RunError> {
        let keys: Vec<ListenerKey> = config.listener_keys().map(|(key, _)| key).collect();
        let (sockets, admin_socket) = bind_all(&config, keys, config.server.admin)?;
        let workers = Workers::start(config.server.workers).map_err(RunError::Workers)?;
        let state = Arc::new(State::with_resolver(
            config,
            Arc::new(Metrics::new()),
            workers.count(),
            resolver,
        ));
        state.current().resolve_pending().await;
        let mut listeners = Vec::new();
        for (key, socket) in sockets {
            listeners.push(spawn_listener(socket, key, &state, &workers)?);
        }
        let admin = admin_socket
            .map(|(addr, socket)| spawn_admin(socket, addr, &state))
            .transpose()?;
        Ok(Proxy {
            state,
            watch_always: false,
            inner: Mutex::new(Sockets { listeners, admin }),
            workers,
        })
    }

    /// The shared state (metrics, current generation).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Bound addresses of the traffic listeners, with their scheme.
    pub async fn listeners(&self) -> Vec<(SocketAddr, Scheme)> {
        let generation = self.state.current();
        let inner = self.inner.lock().await;
        inner
            .listeners
            .iter()
            .map(|l| {
                let scheme = generation
                    .config
                    .listener(l.key)
                    .map_or(Scheme::Http, |c| c.scheme());
                (l.local, scheme)
            })
            .collect()
    }

    /// Bound address of the admin listener, if configured.
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.lock().await.admin.as_ref().map(|a| a.local)
    }

    /// Re-read the route file this proxy was started from.
    pub async fn reload(&self) -> Result<ReloadReport, RunError> {
        let started = Instant::now();
        let path = self.state.current().config.path.clone();
        self.apply(Config::load(&path), started).await
    }

    /// Put a new configuration in force (or keep the old one on error).
    pub async fn reload_with(
        &self,
        next: Result<Config, ConfigErrors>,
    ) -> Result<ReloadReport, RunError> {
        self.apply(next, Instant::now()).await
    }

    async fn apply(
        &self,
        next: Result<Config, ConfigErrors>,
        started: Instant,
    ) -> Result<ReloadReport, RunError> {
        let mut inner = self.inner.lock().await;
        let current = self.state.current();
        let result = self.swap(&mut inner, &current, next, started).await;
        let generation = self.state.current().number;
        self.state.metrics.reload(result.is_ok(), generation);
        result
    }

    async fn swap(
        &self,
        inner: &mut Sockets,
        current: &Generation,
        next: Result<Config, ConfigErrors>,
        started: Instant,
    ) -> Result<ReloadReport, RunError> {
        let next = next?;
        if next.server.log_format != current.config.server.log_format {
            tracing::warn!("log_format changes take effect at the next restart");
        }
        if next.server.workers != current.config.server.workers {
            tracing::warn!("workers changes take effect at the next restart");
        }
        // Bind what is new before changing anything.
        let kept: Vec<ListenerKey> = inner.listeners.iter().map(|l| l.key).collect();
        let added: Vec<ListenerKey> = next
            .listener_keys()
            .map(|(key, _)| key)
            .filter(|key| !kept.contains(key))
            .collect();
        let admin = next
            .server
            .admin
            .filter(|addr| Some(*addr) != current.config.server.admin);
        let (new_sockets, new_admin) = bind_all(&next, added, admin)?;

        let mut report = ReloadReport::compare(&current.config, &next);
        let admin_removed = next.server.admin.is_none();
        let generation = Generation::build(
            current.number + 1,
            next,
            Some(current),
            &self.state.metrics,
            &self.state.fleet,
            &self.state.certs,
        );
        generation.resolve_pending().await;
        report.generation = generation.number;
        self.state.install(generation);

        for (key, socket) in new_sockets {
            inner
                .listeners
                .push(spawn_listener(socket, key, &self.state, &self.workers)?);
        }
        let installed = self.state.current();
        inner.listeners.retain(|listener| {
            let keep = installed.config.listener(listener.key).is_some();
            if !keep {
                tracing::info!("stopped listening on {}", listener.local);
                listener.stop();
            }
            keep
        });
        if let Some((addr, socket)) = new_admin {
            inner.admin = Some(spawn_admin(socket, addr, &self.state)?);
        } else if admin_removed {
            inner.admin = None;
        }
        report.took = started.elapsed();
        Ok(report)
    }

    /// Client connections still speaking HTTP.
    fn http_connections(&self) -> usize {
        self.state
            .http_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drain and stop: the SIGTERM sequence. Returns when every connection
    /// and tunnel is closed.
    pub async fn shutdown(&self) {
        let settings = self.state.current().config.server.clone();
        self.state.stopping.give();
        if !settings.shutdown_delay.is_zero() {
            tracing::info!(
                "stopping: /readyz answers 503; still accepting for {:?}",
                settings.shutdown_delay
            );
            tokio::time::sleep(settings.shutdown_delay).await;
        }
        let tunnels = &self.state.tunnels;
        tunnels.plan(Instant::now(), settings.shutdown_spread);
        tracing::info!(
            tunnels = tunnels.open(),
            http_connections = self.http_connections(),
            "draining: listeners closed; tunnels are sent Close 1001 spread over {:?}; \
             open connections have {:?} to finish",
            settings.shutdown_spread,
            settings.shutdown_timeout
        );
        self.state.draining.give();
        {
            let mut inner = self.inner.lock().await;
            for listener in inner.listeners.drain(..) {
                listener.stop();
            }
        }
        self.state.tasks.close();
        let drained =
            tokio::time::timeout(settings.shutdown_timeout, self.state.tasks.wait()).await;
        if drained.is_err() {
            tracing::warn!(
                tunnels = tunnels.open(),
                http_connections = self.http_connections(),
                "shutdown_timeout reached; closing the remaining connections"
            );
            self.state.hard_stop.give();
            let _ = tokio::time::timeout(HARD_STOP_GRACE, self.state.tasks.wait()).await;
        }
        self.inner.lock().await.admin = None;
        tracing::info!("stopped");
    }
}

/// Serve `config` until SIGTERM or SIGINT, reloading on SIGHUP.
pub async fn run(config: Config) -> Result<(), RunError> {
    run_watching(config, false).await
}

/// [`run`], and with `watch` also reload the route file whenever it
/// changes on disk, whatever its `[server] watch` says (`run --watch`).
pub async fn run_watching(config: Config, watch: bool) -> Result<(), RunError> {
    // Signals are caught before the first listener is announced, so a
    // supervisor that signals as soon as it sees `listening on` is heard.
    let signals = Signals::install()?;
    crate::access_log::configure(&config.server.access_log, config.server.log_format)
        .map_err(RunError::AccessLog)?;
    let mut proxy = Proxy::start(config).await?;
    proxy.watch_always = watch;
    let result = proxy.run_until_stopped(signals).await;
    // What the access log still buffers goes to its file before exit.
    crate::access_log::finish();
    result
}

/// The signals a running proxy answers.
pub struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    /// SIGUSR1: reopen the access log file (logrotate's `postrotate`).
    reopen: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, RunError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).map_err(RunError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(RunError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(RunError::Signals)?,
            reopen: signal(SignalKind::user_defined1()).map_err(RunError::Signals)?,
        })
    }
}

/// What a signal asks of a running proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// SIGHUP: re-read the route file.
    Reload,
    /// SIGUSR1: reopen the access log file.
    ReopenLog,
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
}

impl Signals {
    /// The next signal that asks something of the proxy.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.hangup.recv() => Asked::Reload,
            _ = self.reopen.recv() => Asked::ReopenLog,
            _ = self.terminate.recv() => Asked::Stop,
            _ = self.interrupt.recv() => Asked::Stop,
        }
    }
}

impl Proxy {
    /// Serve until SIGTERM or SIGINT, reloading on SIGHUP (and, with
    /// `watch`, when the route file changes), then drain.
    pub async fn run_until_stopped(self, mut signals: Signals) -> Result<(), RunError> {
        let mut watch = self.route_file_watch();
        loop {
            tokio::select! {
                asked = signals.next() => match asked {
                    Asked::Reload => {
                        self.reload_logged().await;
                        watch.reset();
                    }
                    Asked::ReopenLog => {
                        crate::access_log::reopen();
                        tracing::info!("access log reopened");
                    }
                    Asked::Stop => break,
                },
                () = watch.tick() => self.reload_if_changed(&mut watch).await,
            }
        }
        tracing::info!("stop signal received");
        self.shutdown().await;
        Ok(())
    }

    /// Reload, and log what changed or why nothing did.
    pub async fn reload_logged(&self) {
        match self.reload().await {
            Ok(report) => {
                tracing::info!("configuration reloaded: {report}");
                self.configure_access_log();
            }
            Err(error) => log_reload_failure(&error),
        }
    }
}

impl Proxy {
    /// Reload the route file whenever it changes on disk, while the
    /// configuration in force has `watch` on (or [`run_watching`] was
    /// asked to). Never returns: run it beside whatever else drives the
    /// proxy; [`Proxy::run_until_stopped`] does it by itself.
    pub async fn watch_route_file(&self) {
        let mut watch = self.route_file_watch();
        loop {
            watch.tick().await;
            self.reload_if_changed(&mut watch).await;
        }
    }

    fn route_file_watch(&self) -> RouteFileWatch {
        RouteFileWatch::new(&self.state.current().config.path, self.watch_always)
    }

    /// Send access events where the configuration in force says.
    fn configure_access_log(&self) {
        let server = &self.state.current().config.server;
        if let Err(e) = crate::access_log::configure(&server.access_log, server.log_format) {
            tracing::error!("{e}; access lines go where they went before");
        }
    }

    async fn reload_if_changed(&self, watch: &mut RouteFileWatch) {
        if !watch.changed(self.state.current().config.server.watch) {
            return;
        }
        match self.reload().await {
            Ok(report) => {
                tracing::info!("configuration reloaded (the route file changed on disk): {report}");
                self.configure_access_log();
            }
            Err(error) => log_reload_failure(&error),
        }
    }
}

fn log_reload_failure(error: &RunError) {
    match error {
        RunError::Config(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = errors.0.len(),
                "reload refused; the previous configuration stays in force"
            );
        }
        RunError::Listen(failures) => {
            for failure in &failures.0 {
                tracing::error!("{failure}");
            }
            tracing::error!("reload refused; the previous configuration stays in force");
        }
        other => tracing::error!(
            error = %other,
            "reload failed; the previous configuration stays in force"
        ),
    }
}

/// Bind the listeners `keys` of `config`, and its admin address `admin`.
/// Every address is tried: on failure the error names each one that could
/// not be bound, with its place in the file, and the sockets bound so far
/// are dropped, i.e. closed.
#[allow(clippy::type_complexity)]
fn bind_all(
    config: &Config,
    keys: Vec<ListenerKey>,
    admin: Option<SocketAddr>,
) -> Result<
    (
        Vec<(ListenerKey, TcpListener)>,
        Option<(SocketAddr, TcpListener)>,
    ),
    RunError,
> {
    let mut failures = Vec::new();
    let mut fail = |addr, at: Option<Position>, source| {
        failures.push(BindFailure {
            addr,
            at: at.map(|at| (config.path.clone(), at)),
            source,
        });
    };
    let mut sockets = Vec::new();
    for key in keys {
        match server::bind(key.bind) {
            Ok(socket) => sockets.push((key, socket)),
            Err(source) => fail(
                key.bind,
                config.listener(key).and_then(|l| l.bind_at),
                source,
            ),
        }
    }
    let admin = match admin.map(|addr| (addr, server::bind(addr))) {
        None => None,
        Some((addr, Ok(socket))) => Some((addr, socket)),
        Some((addr, Err(source))) => {
            fail(addr, config.admin_at, source);
            None
        }
    };
    // In file order.
    failures.sort_by_key(|f| f.at.as_ref().map(|(_, at)| (at.line, at.column)));
    if failures.is_empty() {
        Ok((sockets, admin))
    } else {
        Err(RunError::Listen(BindFailures(failures)))
    }
}

fn spawn_listener(
    socket: TcpListener,
    key: ListenerKey,
    state: &Arc<State>,
    workers: &Workers,
) -> Result<Listener, RunError> {
    let listener =
        Listener::spawn(socket, key, state.clone(), workers).map_err(|source| RunError::Bind {
            addr: key.bind,
            source,
        })?;
    let scheme = state
        .current()
        .config
        .listener(key)
        .map_or(Scheme::Http, |l| l.scheme());
    tracing::info!("listening on {} ({scheme})", listener.local);
    Ok(listener)
}

fn spawn_admin(
    socket: TcpListener,
    addr: SocketAddr,
    state: &Arc<State>,
) -> Result<Admin, RunError> {
    let admin =
        Admin::spawn(socket, state.clone()).map_err(|source| RunError::Bind { addr, source })?;
    tracing::info!(
        "admin listening on {} (/healthz /readyz /metrics)",
        admin.local
    );
    Ok(admin)
}

/// What a reload changed, for the one log line it writes.
#[derive(Debug, Default, Clone)]
pub struct ReloadReport {
    pub generation: u64,
    pub routes: Changes,
    pub upstreams: Changes,
    pub listeners: Changes,
    pub took: Duration,
}

/// Counts of added, removed and changed items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    fn between<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Changes {
        let mut changes = Changes::default();
        for (key, value) in new {
            match old.get(key) {
                None => changes.added.push(key.clone()),
                Some(previous) if previous != value => changes.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        changes
    }
}

impl ReloadReport {
    fn compare(old: &Config, new: &Config) -> ReloadReport {
        let routes = |config: &Config| -> BTreeMap<String, RouteConfig> {
            config
                .routes
                .iter()
                .map(|r| (r.name(), RouteConfig::clone(r)))
                .collect()
        };
        let upstreams = |config: &Config| {
            config
                .upstreams
                .iter()
                .map(|(name, u)| (name.clone(), u.as_ref().clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let listeners = |config: &Config| {
            config
                .listeners
                .iter()
                .map(|l| {
                    let tls = l.tls.as_ref().map(|t| t.describe());
                    (l.bind.to_string(), (tls, l.http2))
                })
                .collect::<BTreeMap<_, _>>()
        };
        ReloadReport {
            generation: 0,
            routes: Changes::between(&routes(old), &routes(new)),
            upstreams: Changes::between(&upstreams(old), &upstreams(new)),
            listeners: Changes::between(&listeners(old), &listeners(new)),
            took: Duration::ZERO,
        }
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (sign, items) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if !items.is_empty() {
                parts.push(format!("{sign}{}", items.join(&format!(" {sign}"))));
            }
        }
        if parts.is_empty() {
            f.write_str("unchanged")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generation {}; routes: {}; upstreams: {}; listeners: {}; took {:.1} ms",
            self.generation,
            self.routes,
            self.upstreams,
            self.listeners,
            self.took.as_secs_f64() * 1000.0
        )
    }
}
