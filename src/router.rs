//! Choosing a route for a request: pure logic, no I/O.
//!
//! A route matches when its `host` (if any) matches the request's host and
//! its `path` is a prefix of the request path *on a segment boundary*
//! (`/api` matches `/api` and `/api/users`, never `/apix`; `/ws/` matches
//! `/ws/chat`). A route with a `scheme` matches only requests that arrived
//! over that scheme (plain `http` or TLS `https` listeners). Among matching
//! routes, one whose host matches beats one without (an exact host beats a
//! wildcard, a longer wildcard beats a shorter one); then the longest path
//! prefix wins; then, for the same host and path, a route with a `scheme`
//! beats one without.

use crate::config::{RouteConfig, Scheme};
use std::sync::Arc;

/// The routes of one configuration, ready to match requests.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Arc<RouteConfig>>,
}

impl Router {
    pub fn new(routes: &[Arc<RouteConfig>]) -> Router {
        Router {
            routes: routes.to_vec(),
        }
    }

    /// The index (in the order given to [`Router::new`]) of the best route
    /// for a request that arrived over `scheme`, to `host` (from `Host`,
    /// port allowed) and `path`, or `None` (→ 404).
    pub fn route(&self, scheme: Scheme, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, route)| route.scheme.is_none_or(|s| s == scheme))
            .filter(|(_, route)| prefix_matches(&route.path, path))
            .filter_map(|(i, route)| {
                let host_rank = match (&route.host, host) {
                    (None, _) => (0, 0),
                    (Some(pattern), Some(host)) => pattern.rank(host)?,
                    (Some(_), None) => return None,
                };
                Some(((host_rank, route.path.len(), route.scheme.is_some()), i))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, i)| i)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether `prefix` matches `path` on a path-segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostPattern, RouteTarget, StaticRoute};

    fn route(host: Option<&str>, path: &str) -> Arc<RouteConfig> {
        on(None, host, path)
    }

    fn on(scheme: Option<Scheme>, host: Option<&str>, path: &str) -> Arc<RouteConfig> {
        Arc::new(RouteConfig {
            host: host.map(|h| HostPattern::parse(h).unwrap()),
            path: path.to_string(),
            scheme,
            target: RouteTarget::Static(StaticRoute { root: "/".into() }),
            response_headers: Default::default(),
            compress: false,
        })
    }

    fn pick(router: &Router, host: Option<&str>, path: &str) -> Option<String> {
        pick_on(router, Scheme::Http, host, path)
    }

    fn pick_on(router: &Router, scheme: Scheme, host: Option<&str>, path: &str) -> Option<String> {
        router
            .route(scheme, host, path)
            .map(|i| router.routes[i].name())
    }

    #[test]
    fn a_scheme_narrows_a_route_and_beats_the_same_route_without() {
        let router = Router::new(&[
            route(None, "/"),
            on(Some(Scheme::Http), None, "/"),
            route(None, "/ws/"),
            on(Some(Scheme::Https), Some("chat.example.com"), "/admin"),
        ]);
        let http = |host, path| pick_on(&router, Scheme::Http, host, path);
        let https = |host, path| pick_on(&router, Scheme::Https, host, path);
        assert_eq!(http(None, "/page").as_deref(), Some("http://*/"));
        assert_eq!(https(None, "/page").as_deref(), Some("/"));
        // A longer path without a scheme still wins: the scheme decides
        // only between routes of the same host and path.
        assert_eq!(http(None, "/ws/chat").as_deref(), Some("/ws/"));
        assert_eq!(
            https(Some("chat.example.com"), "/admin/x").as_deref(),
            Some("https://chat.example.com/admin")
        );
        assert_eq!(
            http(Some("chat.example.com"), "/admin/x").as_deref(),
            Some("http://*/")
        );
        let only_https = Router::new(&[on(Some(Scheme::Https), None, "/")]);
        assert_eq!(pick_on(&only_https, Scheme::Http, None, "/"), None);
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/ws/", "/ws/chat"));
        assert!(!prefix_matches("/ws/", "/ws"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/users"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn longest_prefix_wins() {
        let router = Router::new(&[
            route(None, "/"),
            route(None, "/static/"),
            route(None, "/ws/"),
        ]);
        assert_eq!(
            pick(&router, None, "/static/app.js").as_deref(),
            Some("/static/")
        );
        assert_eq!(pick(&router, None, "/ws/chat").as_deref(), Some("/ws/"));
        assert_eq!(pick(&router, None, "/staticx").as_deref(), Some("/"));
        assert_eq!(pick(&router, None, "/").as_deref(), Some("/"));
    }

    #[test]
    fn no_match_is_none() {
        let router = Router::new(&[route(None, "/api")]);
        assert_eq!(pick(&router, None, "/apix"), None);
        assert_eq!(pick(&router, None, "/"), None);
    }

    #[test]
    fn host_match_beats_longer_prefix_without_host() {
        let router = Router::new(&[
            route(None, "/ws/"),
            route(Some("chat.example.com"), "/"),
            route(Some("*.example.com"), "/"),
        ]);
        let at = |host, path| pick(&router, Some(host), path);
        assert_eq!(
            at("chat.example.com", "/ws/x").as_deref(),
            Some("chat.example.com/")
        );
        assert_eq!(
            at("CHAT.example.com:8443", "/").as_deref(),
            Some("chat.example.com/")
        );
        assert_eq!(
            at("a.example.com", "/ws/x").as_deref(),
            Some("*.example.com/")
        );
        assert_eq!(at("example.com", "/ws/x").as_deref(), Some("/ws/"));
        assert_eq!(at("other.org", "/"), None);
        assert_eq!(pick(&router, None, "/ws/x").as_deref(), Some("/ws/"));
    }

    #[test]
    fn host_routes_fall_back_to_hostless_ones_for_other_paths() {
        let router = Router::new(&[route(Some("a.test"), "/api"), route(None, "/")]);
        assert_eq!(
            pick(&router, Some("a.test"), "/other").as_deref(),
            Some("/")
        );
        assert_eq!(
            pick(&router, Some("a.test"), "/api/x").as_deref(),
            Some("a.test/api")
        );
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
