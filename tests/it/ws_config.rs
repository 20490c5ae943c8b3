//! The route file's WebSocket keys and `shutdown_spread`: defaults, and
//! every wrong value reported with its position, all at once.

use std::path::Path;
use std::time::Duration;
use switchyard::config::{Config, RouteTarget};

const BASE: &str = r#"[[listener]]
bind = "127.0.0.1:0"

[upstream.chat]
servers = ["127.0.0.1:3000"]
"#;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(Path::new("/etc/switchyard.toml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_follow_the_contract() {
    let text = format!("{BASE}\n[[route]]\npath = \"/\"\nupstream = \"chat\"\n");
    let config = Config::parse(Path::new("/etc/switchyard.toml"), &text).unwrap();
    let RouteTarget::Proxy(route) = &config.routes[0].target else {
        panic!("a proxy route");
    };
    assert_eq!(route.ping_interval, Duration::from_secs(30));
    assert_eq!(route.ping_timeout, Duration::from_secs(10));
    assert_eq!(route.max_message_size, 16 << 20);
    assert_eq!(route.max_lifetime, Duration::ZERO);
    // The smaller of 10 s and half of shutdown_timeout.
    assert_eq!(config.server.shutdown_spread, Duration::from_secs(10));
    let short = format!("[server]\nshutdown_timeout = \"6s\"\n{text}");
    let config = Config::parse(Path::new("/etc/switchyard.toml"), &short).unwrap();
    assert_eq!(config.server.shutdown_spread, Duration::from_secs(3));
}

#[test]
fn keys_are_read_as_written() {
    let text = format!(
        "[server]\nshutdown_spread = \"2s\"\nshutdown_timeout = \"5s\"\n{BASE}\n[[route]]\npath = \"/\"\nupstream = \"chat\"\n\
         ping_interval = \"0s\"\nping_timeout = \"3s\"\nmax_message_size = \"64KiB\"\nmax_lifetime = \"1h\"\n"
    );
    let config = Config::parse(Path::new("/etc/switchyard.toml"), &text).unwrap();
    let RouteTarget::Proxy(route) = &config.routes[0].target else {
        panic!("a proxy route");
    };
    assert_eq!(route.ping_interval, Duration::ZERO);
    assert_eq!(route.ping_timeout, Duration::from_secs(3));
    assert_eq!(route.max_message_size, 64 << 10);
    assert_eq!(route.max_lifetime, Duration::from_secs(3600));
    assert_eq!(config.server.shutdown_spread, Duration::from_secs(2));
}

#[test]
fn every_wrong_value_is_reported_with_its_position() {
    let text = format!(
        r#"[server]
shutdown_timeout = "5s"
shutdown_spread = "5s"
{BASE}
[[route]]
path = "/ws/"
upstream = "chat"
ping_interval = "30"
ping_timeout = "0s"
max_message_size = "1 lightyear"
max_lifetime = 10

[[route]]
path = "/static/"
root = "/"
ping_interval = "30s"
max_message_size = "0B"
"#
    );
    assert_eq!(
        errors(&text),
        vec![
            "/etc/switchyard.toml:3:19: shutdown_spread (5s) must be shorter than shutdown_timeout (5s), so the last goodbye goes out before the rest is cut",
            "/etc/switchyard.toml:13:17: duration \"30\" needs a unit: write it like \"250ms\", \"30s\", \"5m\" or \"1h\"",
            "/etc/switchyard.toml:14:16: ping_timeout must be longer than zero (turn pings off with ping_interval = \"0s\")",
            "/etc/switchyard.toml:15:20: size \"1 lightyear\" has an unknown unit \"lightyear\": write it like \"512B\", \"64KiB\", \"1MiB\" or \"1GiB\"",
            "/etc/switchyard.toml:16:16: max_lifetime: expected a duration such as \"30s\", found a number (10)",
            "/etc/switchyard.toml:21:17: ping_interval applies only to routes with an upstream",
            "/etc/switchyard.toml:22:20: max_message_size must be at least 1 byte",
        ]
    );
}
