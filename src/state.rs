//! What every connection shares: the configuration generation in force,
//! metrics, task tracking and the two stop signals.
//!
//! A [`Generation`] is one validated route file turned into run-time objects
//! (router, upstream pools, static folders, metric handles). It is swapped
//! atomically on reload; a request loads it once and uses that snapshot to
//! the end, so no request ever sees half of two configurations.

use crate::config::{Config, RouteConfig, RouteTarget};
use crate::metrics::{Metrics, RouteStats};
use crate::proxy::client::Upstream;
use crate::router::Router;
use crate::static_files::StaticFiles;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// Shared by every listener, connection and tunnel of one proxy.
pub struct State {
    generation: ArcSwap<Generation>,
    pub metrics: Arc<Metrics>,
    /// Every connection and tunnel task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled at SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub stopping: CancellationToken,
    /// Cancelled after `shutdown_delay`: stop accepting, finish in-flight
    /// requests, close idle connections.
    pub draining: CancellationToken,
    /// Cancelled when `shutdown_timeout` runs out: close everything now.
    pub hard_stop: CancellationToken,
    /// How many worker threads serve traffic.
    pub workers: usize,
}

impl State {
    pub fn new(config: Config, metrics: Arc<Metrics>, workers: usize) -> State {
        let generation = Generation::build(1, config, None, &metrics, workers);
        metrics.set_generation(1);
        State {
            generation: ArcSwap::from_pointee(generation),
            metrics,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            workers,
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
}

impl Generation {
    /// Build the run-time form of `config`. Upstreams whose settings did not
    /// change since `previous` are carried over with their connection pools.
    pub fn build(
        number: u64,
        config: Config,
        previous: Option<&Generation>,
        metrics: &Arc<Metrics>,
        workers: usize,
    ) -> Generation {
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let kept = previous
                    .and_then(|p| p.upstreams.get(name))
                    .filter(|old| old.config == *settings)
                    .cloned();
                let upstream = kept.unwrap_or_else(|| {
                    Arc::new(Upstream::new(settings.clone(), metrics.clone(), workers))
                });
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
                    RouteTarget::Static(files) => Target::Static(StaticFiles::new(&files.root)),
                };
                Some(ActiveRoute {
                    config: route.clone(),
                    stats: metrics.route(&route.name()),
                    target,
                })
            })
            .collect::<Vec<_>>();
        let configs: Vec<Arc<RouteConfig>> = routes.iter().map(|r| r.config.clone()).collect();
        Generation {
            number,
            router: Router::new(&configs),
            routes,
            upstreams,
            unrouted: metrics.route("none"),
            config: Arc::new(config),
        }
    }

    /// The route for a request, if any.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&ActiveRoute> {
        self.router.route(host, path).map(|i| &self.routes[i])
    }
}

/// Waits for a stop signal without taking the signal's lock on every wake.
///
/// A [`CancellationToken`]'s wait future locks the token's waiter list each
/// time it is polled, and every connection shares the same token. This
/// registers the task once, then only reads the token's flag: a task's waker
/// never changes, so the one registration is enough to be woken.
pub struct StopSignal {
    token: CancellationToken,
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl StopSignal {
    pub fn new(token: &CancellationToken) -> StopSignal {
        StopSignal {
            token: token.clone(),
            wait: None,
        }
    }

    /// Whether the signal was given; registers the task on first call.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        if self.token.is_cancelled() {
            return true;
        }
        if self.wait.is_none() {
            let mut wait = Box::pin(self.token.clone().cancelled_owned());
            let stopped = wait.as_mut().poll(cx).is_ready();
            self.wait = Some(wait);
            return stopped;
        }
        false
    }
}
