//! How the route file reads the everyday keys (`scheme`, `redirect`,
//! `status`, `response_headers`, `request_headers`, `compress`): every
//! mistake reported with its position, all in one run.

use crate::common::*;
use switchyard::config::Config;

fn errors(toml: &str) -> Vec<String> {
    let dir = TestDir::new();
    dir.write("site/a.txt", "a");
    let path = dir.route_file(toml);
    match Config::load(&path) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .iter()
            .map(|e| {
                let p = e.position.expect("a position");
                format!("{}:{}: {}", p.line, p.column, e.message)
            })
            .collect(),
    }
}

const HEAD: &str = "[[listener]]\nbind = \"127.0.0.1:0\"\n[upstream.a]\nservers = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n";

#[tokio::test]
async fn every_mistake_in_the_new_keys_is_reported_at_once() {
    let toml = format!(
        r#"{HEAD}[[route]]
path = "/r"
scheme = "ftp"
redirect = "https://{{hots}}{{uri}}"
status = 200
compress = true
[[route]]
path = "/h"
upstream = "a"
response_headers = {{ "Content-Length" = "5", "Bad Name" = "x", "X-Ok" = 3 }}
request_headers = {{ "X-Forwarded-For" = "", "Sec-WebSocket-Key" = "x", "x-dup" = "1", "X-Dup" = "2" }}
compress = "yes"
[[route]]
path = "/s"
root = "site"
request_headers = {{ "X-Env" = "prod" }}
status = 301
[[route]]
path = "/both"
root = "site"
redirect = "/x"
"#
    );
    let found = errors(&toml);
    let expected = [
        "10:10: scheme \"ftp\" is neither \"http\" (plain listeners) nor \"https\" (TLS listeners)",
        "11:12: redirect \"https://{hots}{uri}\": unknown placeholder {hots}; known: {host}, {path}, {query}, {uri}",
        "12:10: status 200 is not a redirect status: use 301, 302, 303, 307 or 308 (308 and 307 keep the method and body, 301 and 302 may turn a POST into a GET)",
        "13:12: compress applies only to routes with an upstream or a root",
        "17:22: response_headers: Content-Length is set by the proxy itself (it frames the message or describes one connection) and cannot be set or removed here",
        "17:46: response_headers: \"Bad Name\" is not a header name (letters, digits and -_.!#$%&'*+^`|~)",
        "17:73: X-Ok: expected a header value (\"\" removes the header), found a number (3)",
        "18:21: request_headers: X-Forwarded-For is a forwarding header: the upstream always gets it, so it cannot be removed (set it to replace the proxy's value)",
        "18:45: request_headers: Sec-WebSocket-Key belongs to the WebSocket handshake and cannot be set or removed here",
        "18:87: request_headers: X-Dup appears twice (header names ignore case)",
        "19:12: compress: expected true or false, found a string (\"yes\")",
        "23:1: request_headers applies only to routes with an upstream",
        "24:10: status applies only to routes with a redirect",
        "28:12: a route has exactly one of `upstream`, `root` or `redirect`",
    ];
    assert_eq!(found, expected, "\n{}", found.join("\n"));
}

#[tokio::test]
async fn a_scheme_route_may_share_host_and_path_but_not_twice() {
    let toml = format!(
        "{HEAD}[[route]]\nscheme = \"http\"\npath = \"/\"\nredirect = \"https://{{host}}{{uri}}\"\n\
         [[route]]\nscheme = \"http\"\npath = \"/\"\nredirect = \"https://x{{uri}}\"\n"
    );
    assert_eq!(
        errors(&toml),
        ["14:8: route http://*/ duplicates the route at 10:8"]
    );
}

#[tokio::test]
async fn the_everyday_keys_read_cleanly() {
    let toml = format!(
        r#"{HEAD}[[route]]
scheme = "http"
path = "/"
redirect = "https://{{host}}{{uri}}"
[[route]]
scheme = "https"
path = "/api"
upstream = "a"
response_headers = {{ "Strict-Transport-Security" = "max-age=63072000", "Server" = "" }}
request_headers = {{ "X-Env" = "prod" }}
compress = true
[[route]]
path = "/static/"
root = "site"
compress = true
response_headers = {{ "Cache-Control" = "public, max-age=3600" }}
"#
    );
    assert_eq!(errors(&toml), Vec::<String>::new());
}
