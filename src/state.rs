//! What every connection shares: the configuration generation in force,
//! metrics, task tracking and the two stop signals.
//!
//! A [`Generation`] is one validated route file turned into run-time objects
//! (router, upstream pools, static folders, metric handles). It is swapped
//! atomically on reload; a request loads it once and uses that snapshot to
//! the end, so no request ever sees half of two configurations.

use crate::certs::Store;
use crate::config::{Config, ListenerKey, RouteConfig, RouteTarget, Scheme};
use crate::metrics::{Metrics, RouteStats};
use crate::router::Router;
use crate::static_files::StaticFiles;
use crate::upstream::resolve::{Resolve, System};
use crate::upstream::{Fleet, Upstream};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Context;
use std::time::{Duration, Instant};
use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};
use tokio_util::task::TaskTracker;

/// Shared by every listener, connection and tunnel of one proxy.
pub struct State {
    generation: ArcSwap<Generation>,
    pub metrics: Arc<Metrics>,
    /// Every connection and tunnel task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Given at SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub stopping: Signal,
    /// Given after `shutdown_delay`: stop accepting, finish in-flight
    /// requests, close idle connections.
    pub draining: Signal,
    /// Given when `shutdown_timeout` runs out: close everything now.
    pub hard_stop: Signal,
    /// How many worker threads serve traffic.
    pub workers: usize,
    /// Client connections open in the process, for `max_connections`.
    pub connections: ConnectionCount,
    /// What tunnels share for the drain: the signals, how many are open,
    /// the goodbye moments.
    pub tunnels: Arc<TunnelDrain>,
    /// Client connections speaking HTTP now (tunnels not included).
    pub http_connections: AtomicUsize,
    /// Every upstream server, shared by the generations that name it.
    pub fleet: Arc<Fleet>,
    /// Every listener's certificates, kept across reloads.
    pub certs: Arc<Store>,
}

impl State {
    /// Must run inside a Tokio runtime (certificate watchers start on it).
    pub fn new(config: Config, metrics: Arc<Metrics>, workers: usize) -> State {
        State::with_resolver(config, metrics, workers, Arc::new(System))
    }

    /// Like [`State::new`], with host names in `servers` resolved by
    /// `resolver`.
    pub fn with_resolver(
        config: Config,
        metrics: Arc<Metrics>,
        workers: usize,
        resolver: Arc<dyn Resolve>,
    ) -> State {
        let fleet = Fleet::new(metrics.clone(), workers, resolver);
        let certs = Store::new(metrics.clone());
        let generation = Generation::build(1, config, None, &metrics, &fleet, &certs);
        metrics.set_generation(1);
        let (draining, hard_stop) = (Signal::default(), Signal::default());
        State {
            fleet,
            generation: ArcSwap::from_pointee(generation),
            metrics,
            tasks: TaskTracker::new(),
            stopping: Signal::default(),
            tunnels: Arc::new(TunnelDrain::new(draining.clone(), hard_stop.clone())),
            draining,
            hard_stop,
            workers,
            connections: ConnectionCount::default(),
            http_connections: AtomicUsize::new(0),
            certs,
        }
    }

    /// The generation in force now.
    pub fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Put `next` in force for every new connection and request.
    pub fn install(&self, next: Generation) {
        self.metrics.set_generation(next.number);
        self.generation.store(Arc::new(next));
    }
}

/// One configuration, ready to serve.
pub struct Generation {
    pub number: u64,
    pub config: Arc<Config>,
    router: Router,
    routes: Vec<ActiveRoute>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Metrics for requests no route matched.
    pub unrouted: Arc<RouteStats>,
    /// The TLS settings of each TLS listener.
    tls: Vec<(ListenerKey, Arc<rustls::ServerConfig>)>,
}

/// A route with its run-time parts.
pub struct ActiveRoute {
    pub config: Arc<RouteConfig>,
    pub stats: Arc<RouteStats>,
    pub target: Target,
}

pub enum Target {
    Proxy {
        upstream: Arc<Upstream>,
        route: crate::config::ProxyRoute,
    },
    Static(StaticFiles),
    Redirect(crate::config::RedirectRoute),
}

impl Generation {
    /// Build the run-time form of `config`. Upstreams whose settings did not
    /// change since `previous` are carried over whole; the others are made
    /// anew over the same [`Fleet`], so every server keeps its tunnel count,
    /// health and connection pool either way.
    pub fn build(
        number: u64,
        config: Config,
        previous: Option<&Generation>,
        metrics: &Arc<Metrics>,
        fleet: &Arc<Fleet>,
        certs: &Store,
    ) -> Generation {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let old = previous.and_then(|p| p.upstreams.get(name));
                let kept = old.filter(|old| old.config == *settings).cloned();
                let upstream = kept
                    .unwrap_or_else(|| Upstream::new(settings.clone(), fleet, old.map(|o| &**o)));
                (name.clone(), upstream)
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .filter_map(|route| {
                let target = match &route.target {
                    RouteTarget::Proxy(proxy) => Target::Proxy {
                        upstream: upstreams.get(&proxy.upstream)?.clone(),
                        route: proxy.clone(),
                    },
                    RouteTarget::Static(files) => {
                        Target::Static(StaticFiles::new(&files.root, route.compress))
                    }
                    RouteTarget::Redirect(redirect) => Target::Redirect(redirect.clone()),
                };
                let tunnels = matches!(target, Target::Proxy { .. });
                Some(ActiveRoute {
                    config: route.clone(),
                    stats: metrics.route(&route.name(), tunnels),
                    target,
                })
            })
            .collect::<Vec<_>>();
        let configs: Vec<Arc<RouteConfig>> = routes.iter().map(|r| r.config.clone()).collect();
        let tls = tls_settings(&config, certs);
        Generation {
            tls,
            number,
            router: Router::new(&configs),
            routes,
            upstreams,
            unrouted: metrics.route("none", false),
            config: Arc::new(config),
        }
    }

    /// Resolve the host names of upstreams that have no answer yet (at
    /// start, and for upstreams a reload added), before serving.
    pub async fn resolve_pending(&self) {
        for upstream in self.upstreams.values() {
            upstream.resolve_pending().await;
        }
    }

    /// The upstream named `name`, if this configuration has it.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// The TLS settings of the listener `key`; `None` for a plain one.
    pub fn tls(&self, key: ListenerKey) -> Option<Arc<rustls::ServerConfig>> {
        self.tls
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, config)| config.clone())
    }

    /// The route for a request that arrived over `scheme`, if any.
    pub fn route(&self, scheme: Scheme, host: Option<&str>, path: &str) -> Option<&ActiveRoute> {
        self.router
            .route(scheme, host, path)
            .map(|i| &self.routes[i])
    }
}

/// The TLS settings of every TLS listener of `config`, from `certs`.
fn tls_settings(config: &Config, certs: &Store) -> Vec<(ListenerKey, Arc<rustls::ServerConfig>)> {
    certs.begin_generation();
    config
        .listener_keys()
        .filter_map(|(key, listener)| {
            let tls = listener.tls.as_ref()?;
            let base = crate::tls::Settings {
                http2: listener.http2,
                ..crate::tls::Settings::default()
            };
            match certs.listener(&key.to_string(), &tls.sources, base) {
                Ok(settings) => Some((key, settings)),
                Err(e) => {
                    tracing::error!("listener {key}: cannot build its TLS settings: {e}");
                    None
                }
            }
        })
        .collect()
}

/// Client connections open in the whole process (tunnels included), with
/// the slots accept loops have taken for the connection they are about to
/// accept: together they never pass `max_connections`.
#[derive(Default)]
pub struct ConnectionCount {
    taken: AtomicUsize,
    /// Woken whenever a slot is given back.
    freed: tokio::sync::Notify,
}

impl ConnectionCount {
    /// Take a slot if fewer than `cap` are taken (`0`: no cap).
    pub fn try_take(&self, cap: usize) -> bool {
        if cap == 0 {
            self.taken.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give a slot back.
    pub fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// Resolves after the next [`ConnectionCount::give_back`]; create it
    /// before checking, so a slot freed in between is not missed.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

/// A one-way signal: given once, seen by every connection and tunnel.
///
/// A [`CancellationToken`] answers "was I cancelled?" under a mutex that all
/// its watchers share, and every connection asks on every wake; two workers
/// asking at once pass that mutex's cache line back and forth. The answer is
/// therefore kept in a flag of its own, read without a lock; the token is
/// only there to wake the tasks that wait.
#[derive(Clone, Default)]
pub struct Signal {
    given: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Signal {
    pub fn give(&self) {
        // The flag first: a task woken by the token must find it set.
        self.given.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_given(&self) -> bool {
        self.given.load(Ordering::Acquire)
    }

    /// Resolves once the signal is given.
    pub fn given(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

/// Waits for a [`Signal`] inside a hand-written `poll`.
///
/// The task registers with the signal's token once (a task's waker never
/// changes, so once is enough to be woken), then only reads the flag.
pub struct StopSignal {
    signal: Signal,
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl StopSignal {
    pub fn new(signal: &Signal) -> StopSignal {
        StopSignal {
            signal: signal.clone(),
            wait: None,
        }
    }

    /// Whether the signal was given; registers the task on first call.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        if self.signal.is_given() {
            return true;
        }
        if self.wait.is_none() {
            // Polling the token's own future checks it under its lock, so
            // a signal given since the flag was read is not missed.
            let mut wait = Box::pin(self.signal.token.clone().cancelled_owned());
            let stopped = wait.as_mut().poll(cx).is_ready();
            self.wait = Some(wait);
            return stopped;
        }
        false
    }
}

/// The drain as tunnels see it: its signals, how many tunnels are open, and
/// each tunnel's moment to say goodbye, spread evenly over
/// `shutdown_spread`.
///
/// At the drain's start the proxy records how many tunnels are open; each
/// tunnel then takes the next slot of a shared counter, and its moment is
/// `start + spread × slot ÷ open`. Tunnels opened since take the last
/// moment.
pub struct TunnelDrain {
    pub draining: Signal,
    pub hard_stop: Signal,
    open: AtomicUsize,
    plan: OnceLock<SpreadPlan>,
    next_slot: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
struct SpreadPlan {
    start: Instant,
    spread: Duration,
    open: usize,
}

impl TunnelDrain {
    pub fn new(draining: Signal, hard_stop: Signal) -> TunnelDrain {
        TunnelDrain {
            draining,
            hard_stop,
            open: AtomicUsize::new(0),
            plan: OnceLock::new(),
            next_slot: AtomicUsize::new(0),
        }
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Plan the goodbyes: from `start`, over `spread`, for the tunnels
    /// open now. Call before giving `draining`.
    pub fn plan(&self, start: Instant, spread: Duration) {
        let _ = self.plan.set(SpreadPlan {
            start,
            spread,
            open: self.open(),
        });
    }

    /// The calling tunnel's moment to say goodbye (takes a slot).
    pub fn goodbye_moment(&self) -> Instant {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        match self.plan.get() {
            Some(plan) => spread_moment(plan.start, plan.spread, slot, plan.open),
            None => Instant::now(),
        }
    }
}

/// Slot `slot` of `open`, spread evenly over `spread` from `start`.
pub fn spread_moment(start: Instant, spread: Duration, slot: usize, open: usize) -> Instant {
    if open <= 1 {
        return start;
    }
    let slot = slot.min(open - 1);
    start + spread.mul_f64(slot as f64 / (open - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    #[test]
    fn goodbyes_are_spread_evenly_from_first_to_last() {
        let t0 = Instant::now();
        let spread = Duration::from_secs(10);
        assert_eq!(spread_moment(t0, spread, 0, 5), t0);
        assert_eq!(spread_moment(t0, spread, 2, 5), t0 + Duration::from_secs(5));
        assert_eq!(spread_moment(t0, spread, 4, 5), t0 + spread);
        // Tunnels opened after the start go last; a lone one goes at once.
        assert_eq!(spread_moment(t0, spread, 9, 5), t0 + spread);
        assert_eq!(spread_moment(t0, spread, 0, 1), t0);

        let drain = TunnelDrain::new(Signal::default(), Signal::default());
        for _ in 0..3 {
            drain.opened();
        }
        drain.plan(t0, spread);
        let moments: Vec<Instant> = (0..3).map(|_| drain.goodbye_moment()).collect();
        assert_eq!(moments, vec![t0, t0 + spread / 2, t0 + spread]);
    }

    #[tokio::test]
    async fn a_registered_task_is_woken_when_the_signal_is_given() {
        let signal = Signal::default();
        let mut stop = StopSignal::new(&signal);
        let waiter = tokio::spawn(std::future::poll_fn(move |cx| {
            if stop.poll_stopped(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        // Let the waiter register and go to sleep.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!signal.is_given());
        signal.give();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        assert!(signal.is_given());
        // A signal given before anyone watches is seen at once.
        assert!(
            StopSignal::new(&signal)
                .poll_stopped(&mut Context::from_waker(std::task::Waker::noop()))
        );
    }
}
