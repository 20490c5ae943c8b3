//! The request path on any bytes: the head parsed as hyper parses it
//! (httparse), then the proxy's head checks, routing, the header policy
//! towards the upstream, and path sanitising for static routes.
//!
//! Invariants: no panic; a head that passes the checks has at most one
//! `Host`; the route chosen matches the path on a segment boundary; the
//! upstream request carries no hop-by-hop header and names the client as
//! the proxy saw it; a path the static route accepts has no `..` segment
//! once decoded.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use switchyard::config::{Config, RouteConfig, Scheme};
use switchyard::proxy::{checks, headers};
use switchyard::router::{Router, prefix_matches};

const ROUTES: &str = r#"
[[listener]]
bind = "127.0.0.1:0"
[upstream.a]
servers = ["127.0.0.1:1"]
[[route]]
path = "/"
upstream = "a"
[[route]]
path = "/ws/"
upstream = "a"
[[route]]
path = "/api"
upstream = "a"
[[route]]
scheme = "https"
path = "/api"
upstream = "a"
[[route]]
host = "chat.example.com"
path = "/"
upstream = "a"
[[route]]
host = "*.example.org"
path = "/static"
upstream = "a"
"#;

fn routes() -> &'static (Vec<Arc<RouteConfig>>, Router) {
    static ROUTER: OnceLock<(Vec<Arc<RouteConfig>>, Router)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = Config::parse(Path::new("/fuzz/switchyard.toml"), ROUTES)
            .unwrap_or_else(|e| panic!("{e}"));
        let router = Router::new(&config.routes);
        (config.routes, router)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target)
        .version(if minor == 1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        });
    for header in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_bytes(header.value),
        ) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(()) else {
        return;
    };

    let Ok(checked) = checks::check(&req) else {
        return;
    };
    assert!(req.headers().get_all("host").iter().count() <= 1);
    let path = if checked.asterisk { "/" } else { req.uri().path() };
    let host = checked.host.as_ref().and_then(|h| h.to_str().ok());
    let (configs, router) = routes();
    for scheme in [Scheme::Http, Scheme::Https] {
        if let Some(i) = router.route(scheme, host, path) {
            assert!(prefix_matches(&configs[i].path, path));
            assert!(configs[i].scheme.is_none_or(|s| s == scheme));
        }
    }

    let client = headers::ClientSide::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), Scheme::Http);
    let mut upstream = req.headers().clone();
    let websocket = headers::is_websocket_upgrade(&req);
    headers::to_upstream(&mut upstream, &client, checked.host.as_ref(), websocket);
    for name in ["te", "trailer", "transfer-encoding", "keep-alive"] {
        assert!(!upstream.contains_key(name), "{name} crossed");
    }
    assert!(upstream.keys().all(|n| !n.as_str().starts_with("proxy-")));
    if !websocket {
        assert!(!upstream.contains_key("connection") && !upstream.contains_key("upgrade"));
    }
    assert_eq!(upstream["x-real-ip"], "192.0.2.7");
    assert!(upstream["x-forwarded-for"].as_bytes().ends_with(b"192.0.2.7"));
    assert!(upstream.get_all("host").iter().count() <= 1);

    if switchyard::static_files::is_safe(path) {
        let decoded = percent_decode(path);
        assert!(decoded.split(|&b| b == b'/').all(|segment| segment != b".."));
    }
});

/// Percent-decoding written out here, so the check does not reuse the
/// code it checks.
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
