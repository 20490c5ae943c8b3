//! `[[route]]`: what each route matches and what it does, and the
//! cross-references between routes and upstreams.

use super::Checker;
use super::upstream::Upstreams;
use crate::config::doc::Table;
use crate::config::{OriginPolicy, ProxyRoute, RouteConfig, RouteTarget, StaticRoute, defaults};
use crate::router::HostPattern;
use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

impl Checker<'_> {
    pub(super) fn routes(&self, tables: &[Table], upstreams: &Upstreams) -> Vec<RouteConfig> {
        if tables.is_empty() {
            self.error_unplaced("no [[route]]: add one, e.g. path = \"/\" with an upstream");
        }
        let mut routes: Vec<(RouteConfig, Range<usize>)> = Vec::new();
        let mut named = BTreeSet::new();
        for table in tables {
            let path = table.string("path", "a path prefix such as \"/ws/\"");
            let host = table.string("host", "a host such as \"chat.example.com\"");
            let upstream = table.string("upstream", "the name of an [upstream.NAME]");
            if let Some(upstream) = &upstream {
                named.insert(upstream.get_ref().clone());
            }
            let target = self.target(table, upstream, upstreams);
            let Some(path) = path else {
                if !table.has("path") {
                    self.error(table.span(), "this route needs `path = \"/…\"`");
                }
                continue;
            };
            if !path.get_ref().starts_with('/') {
                self.error_at(
                    &path,
                    format!("path {:?} must start with \"/\"", path.get_ref()),
                );
            } else if path.get_ref().contains(['?', '#'])
                || path.get_ref().chars().any(char::is_whitespace)
            {
                self.error_at(
                    &path,
                    format!(
                        "path {:?} must be a plain prefix (no spaces, '?' or '#')",
                        path.get_ref()
                    ),
                );
            }
            let host = host.and_then(|host| {
                HostPattern::parse(host.get_ref())
                    .map_err(|message| self.error_at(&host, message))
                    .ok()
            });
            let Some(target) = target else {
                continue;
            };
            let config = RouteConfig {
                host,
                path: path.get_ref().clone(),
                target,
            };
            if let Some((_, span)) = routes
                .iter()
                .find(|(other, _)| other.host == config.host && other.path == config.path)
            {
                let message = format!(
                    "route {} duplicates the route at {}",
                    config.name(),
                    self.describe(span)
                );
                self.error_at(&path, message);
            }
            routes.push((config, path.span()));
        }
        for (name, (_, span)) in upstreams {
            if !named.contains(name) {
                self.error(
                    span.clone(),
                    format!("upstream {name:?} is not used by any route"),
                );
            }
        }
        routes.into_iter().map(|(route, _)| route).collect()
    }

    /// What the route does: proxy to an upstream or serve a folder.
    fn target(
        &self,
        table: &Table,
        upstream: Option<Spanned<String>>,
        upstreams: &Upstreams,
    ) -> Option<RouteTarget> {
        let root = table.string("root", "the path of a folder");
        let idle_timeout = self.duration_spanned(table, "idle_timeout");
        let origins = table.strings(
            "allow_origins",
            "an origin such as \"https://chat.example.com\"",
        );
        let ws = self.websocket_keys(table);
        match (upstream, root) {
            (Some(_), Some(root)) => {
                self.error_at(&root, "a route has `upstream` or `root`, not both");
                None
            }
            (None, None) => {
                if !table.has("upstream") && !table.has("root") {
                    self.error(
                        table.key_span("path").unwrap_or(table.span()),
                        "this route needs `upstream = \"NAME\"` (proxy) or `root = \"DIR\"` (static files)",
                    );
                }
                None
            }
            (Some(upstream), None) => {
                if !upstreams.contains_key(upstream.get_ref()) {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "none is defined".to_string()
                    } else {
                        format!("defined: {}", known.join(", "))
                    };
                    self.error_at(
                        &upstream,
                        format!("no upstream named {:?} ({known})", upstream.get_ref()),
                    );
                }
                let idle_timeout = match idle_timeout {
                    Some(d) if d.get_ref().is_zero() => {
                        self.error_at(&d, "must be longer than zero");
                        defaults::IDLE_TIMEOUT
                    }
                    Some(d) => d.into_inner(),
                    None => defaults::IDLE_TIMEOUT,
                };
                let allow_origins = match origins {
                    None => OriginPolicy::Any,
                    Some(list) => {
                        let mut allowed = Vec::new();
                        for origin in list.get_ref() {
                            match check_origin(origin.get_ref()) {
                                Ok(()) => allowed.push(origin.get_ref().clone()),
                                Err(message) => self.error_at(origin, message),
                            }
                        }
                        OriginPolicy::Only(allowed)
                    }
                };
                Some(RouteTarget::Proxy(ProxyRoute {
                    upstream: upstream.into_inner(),
                    idle_timeout,
                    allow_origins,
                    ping_interval: ws
                        .ping_interval
                        .map_or(defaults::PING_INTERVAL, |d| d.into_inner()),
                    ping_timeout: ws
                        .ping_timeout
                        .map_or(defaults::PING_TIMEOUT, |d| d.into_inner()),
                    max_message_size: ws
                        .max_message_size
                        .map_or(defaults::MAX_MESSAGE_SIZE, |n| n.into_inner()),
                    max_lifetime: ws
                        .max_lifetime
                        .map_or(defaults::MAX_LIFETIME, |d| d.into_inner()),
                }))
            }
            (None, Some(root)) => {
                if let Some(idle) = &idle_timeout {
                    self.error_at(idle, "idle_timeout applies only to routes with an upstream");
                }
                if let Some(origins) = &origins {
                    self.error_at(
                        origins,
                        "allow_origins applies only to routes with an upstream",
                    );
                }
                ws.refuse_on_static(self);
                let dir = self.path(root.get_ref());
                if !dir.is_dir() {
                    let why = if dir.exists() {
                        "is not a folder"
                    } else {
                        "does not exist"
                    };
                    self.error_at(&root, format!("root {} {why}", dir.display()));
                    return None;
                }
                Some(RouteTarget::Static(StaticRoute { root: dir }))
            }
        }
    }
}

/// The WebSocket keys of a route, each checked on its own.
struct WebSocketKeys {
    ping_interval: Option<Spanned<Duration>>,
    ping_timeout: Option<Spanned<Duration>>,
    max_message_size: Option<Spanned<u64>>,
    max_lifetime: Option<Spanned<Duration>>,
}

impl Checker<'_> {
    fn websocket_keys(&self, table: &Table) -> WebSocketKeys {
        let ping_timeout = self
            .duration_spanned(table, "ping_timeout")
            .filter(|d| {
                let ok = !d.get_ref().is_zero();
                if !ok {
                    self.error_at(
                        d,
                        "ping_timeout must be longer than zero (turn pings off with ping_interval = \"0s\")",
                    );
                }
                ok
            });
        let max_message_size = self.size_spanned(table, "max_message_size").filter(|n| {
            let ok = *n.get_ref() > 0;
            if !ok {
                self.error_at(n, "max_message_size must be at least 1 byte");
            }
            ok
        });
        WebSocketKeys {
            ping_interval: self.duration_spanned(table, "ping_interval"),
            ping_timeout,
            max_message_size,
            max_lifetime: self.duration_spanned(table, "max_lifetime"),
        }
    }
}

impl WebSocketKeys {
    /// Static routes have no tunnels: each key set there is an error.
    fn refuse_on_static(&self, checker: &Checker) {
        let spans = [
            (
                "ping_interval",
                self.ping_interval.as_ref().map(Spanned::span),
            ),
            (
                "ping_timeout",
                self.ping_timeout.as_ref().map(Spanned::span),
            ),
            (
                "max_message_size",
                self.max_message_size.as_ref().map(Spanned::span),
            ),
            (
                "max_lifetime",
                self.max_lifetime.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in spans {
            if let Some(span) = span {
                checker.error(
                    span,
                    format!("{key} applies only to routes with an upstream"),
                );
            }
        }
    }
}

/// An origin is `scheme://host[:port]`, nothing more.
fn check_origin(text: &str) -> Result<(), String> {
    let hint = || {
        format!(
            "allow_origins entry {text:?} is not an origin such as \"https://chat.example.com\""
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(hint)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@'])
    {
        return Err(hint());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host() {
        assert!(check_origin("https://chat.example.com").is_ok());
        assert!(check_origin("http://localhost:8080").is_ok());
        assert!(check_origin("chat.example.com").is_err());
        assert!(check_origin("https://chat.example.com/").is_err());
        assert!(check_origin("ftp://x").is_err());
    }
}
