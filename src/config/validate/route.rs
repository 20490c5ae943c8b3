//! `[[route]]`: what each route matches and what it does, and the
//! cross-references between routes and upstreams.

use super::Checker;
use super::upstream::Upstreams;
use crate::config::doc::Table;
use crate::config::{
    HostPattern, OriginPolicy, ProxyRoute, RedirectRoute, RouteConfig, RouteTarget, Scheme,
    StaticRoute, defaults,
};
use crate::header_rules::{self, Direction, HeaderRules};
use crate::redirect::{self, Template};
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
            let scheme = table.string("scheme", "\"http\" or \"https\"");
            let upstream = table.string("upstream", "the name of an [upstream.NAME]");
            if let Some(upstream) = &upstream {
                named.insert(upstream.get_ref().clone());
            }
            let response_headers =
                self.header_rules(table, "response_headers", Direction::Response);
            let compress = table.boolean("compress");
            let target = self.target(table, upstream, upstreams);
            let scheme = scheme.and_then(|scheme| match scheme.get_ref().as_str() {
                "http" => Some(Scheme::Http),
                "https" => Some(Scheme::Https),
                other => {
                    self.error_at(
                        &scheme,
                        format!("scheme {other:?} is neither \"http\" (plain listeners) nor \"https\" (TLS listeners)"),
                    );
                    None
                }
            });
            let redirects = table.has("redirect") && !table.has("upstream") && !table.has("root");
            if let Some(compress) = &compress
                && redirects
                && *compress.get_ref()
            {
                self.error_at(
                    compress,
                    "compress applies only to routes with an upstream or a root",
                );
            }
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
                scheme,
                target,
                response_headers,
                compress: compress.is_some_and(|c| *c.get_ref()),
            };
            if let Some((_, span)) = routes.iter().find(|(other, _)| {
                other.host == config.host
                    && other.path == config.path
                    && other.scheme == config.scheme
            }) {
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

    /// What the route does: proxy to an upstream, serve a folder or
    /// redirect.
    fn target(
        &self,
        table: &Table,
        upstream: Option<Spanned<String>>,
        upstreams: &Upstreams,
    ) -> Option<RouteTarget> {
        let root = table.string("root", "the path of a folder");
        let redirect = table.string("redirect", "a target such as \"https://{host}{uri}\"");
        let status = table.integer("status", "a redirect status: 301, 302, 303, 307 or 308");
        let idle_timeout = self.duration_spanned(table, "idle_timeout");
        let origins = table.strings(
            "allow_origins",
            "an origin such as \"https://chat.example.com\"",
        );
        let request_headers = self.header_rules(table, "request_headers", Direction::Request);
        let ws = self.websocket_keys(table);
        // Keys that only a proxy route, or only a redirect, may carry.
        let proxy_only = [
            ("idle_timeout", idle_timeout.as_ref().map(Spanned::span)),
            ("allow_origins", origins.as_ref().map(Spanned::span)),
            ("request_headers", table.key_span("request_headers")),
        ];
        let misplaced = |keys: &[(&str, Option<std::ops::Range<usize>>)], only: &str| {
            for (key, span) in keys {
                if let Some(span) = span {
                    self.error(
                        span.clone(),
                        format!("{key} applies only to routes with {only}"),
                    );
                }
            }
        };
        let status_span = status.as_ref().map(Spanned::span);
        let given = [
            upstream.is_some() || table.has("upstream"),
            root.is_some() || table.has("root"),
            redirect.is_some() || table.has("redirect"),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.error(
                    table.key_span("path").unwrap_or(table.span()),
                    "this route needs `upstream = \"NAME\"` (proxy), `root = \"DIR\"` (static files) \
                     or `redirect = \"URL\"`",
                );
                return None;
            }
            1 => {}
            _ => {
                let second = [
                    upstream.as_ref().map(Spanned::span),
                    root.as_ref().map(Spanned::span),
                    redirect.as_ref().map(Spanned::span),
                ]
                .into_iter()
                .flatten()
                .nth(1)
                .unwrap_or(table.span());
                self.error(
                    second,
                    "a route has exactly one of `upstream`, `root` or `redirect`",
                );
                return None;
            }
        }
        if redirect.is_none() {
            misplaced(&[("status", status_span.clone())], "a redirect");
        }
        if let Some(upstream) = upstream {
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
            return Some(RouteTarget::Proxy(ProxyRoute {
                upstream: upstream.into_inner(),
                idle_timeout,
                allow_origins,
                request_headers,
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
            }));
        }
        if let Some(root) = root {
            misplaced(&proxy_only, "an upstream");
            ws.refuse_without_upstream(self);
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
            return Some(RouteTarget::Static(StaticRoute { root: dir }));
        }
        let redirect = redirect?;
        misplaced(&proxy_only, "an upstream");
        ws.refuse_without_upstream(self);
        let status = match status {
            None => Some(defaults::REDIRECT_STATUS),
            Some(status) => {
                let code = *status.get_ref();
                let known = u16::try_from(code)
                    .ok()
                    .filter(|c| redirect::STATUSES.contains(c))
                    .and_then(|c| http::StatusCode::from_u16(c).ok());
                if known.is_none() {
                    self.error_at(
                        &status,
                        format!(
                            "status {code} is not a redirect status: use 301, 302, 303, 307 or 308 \
                             (308 and 307 keep the method and body, 301 and 302 may turn a POST into a GET)"
                        ),
                    );
                }
                known
            }
        };
        let to = Template::parse(redirect.get_ref())
            .map_err(|message| self.error_at(&redirect, message))
            .ok();
        Some(RouteTarget::Redirect(RedirectRoute {
            to: to?,
            status: status?,
        }))
    }

    /// A header table (`response_headers`, `request_headers`): every entry
    /// checked, each problem with its position.
    fn header_rules(&self, table: &Table, key: &str, direction: Direction) -> HeaderRules {
        let Some(map) = table.string_map(key, "a header value (\"\" removes the header)") else {
            return HeaderRules::default();
        };
        let mut rules: Vec<header_rules::Rule> = Vec::new();
        for (name, value) in map.into_inner() {
            match header_rules::rule(name.get_ref(), value.get_ref(), direction) {
                Ok(rule) => {
                    if rules.iter().any(|r| r.name == rule.name) {
                        self.error_at(
                            &name,
                            format!(
                                "{key}: {} appears twice (header names ignore case)",
                                name.get_ref()
                            ),
                        );
                    } else {
                        rules.push(rule);
                    }
                }
                Err(message) => self.error_at(&name, format!("{key}: {message}")),
            }
        }
        HeaderRules::new(rules)
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
    /// Static files and redirects have no tunnels: each key set there is
    /// an error.
    fn refuse_without_upstream(&self, checker: &Checker) {
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
