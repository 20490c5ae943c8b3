//! Host names in `servers`: each is resolved at start and every
//! `resolve_interval`, and every address it resolves to is a server of its
//! own (a Kubernetes headless Service names every ready pod this way).
//!
//! An address that vanishes from the answer gets no new work; its open
//! tunnels stay. A failed resolution (or an empty answer) keeps the last
//! answer and is logged. [`Resolve`] is how names become addresses: the
//! system's resolver (`getaddrinfo`, so `/etc/hosts` and `resolv.conf`
//! count) unless a caller brings its own.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

/// A future resolving one name.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns `host:port` into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system's resolver.
pub struct System;

impl Resolve for System {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// An answer put in order without repeats, so two answers compare.
pub fn normalize(mut answer: Vec<SocketAddr>) -> Vec<SocketAddr> {
    answer.sort();
    answer.dedup();
    answer
}

/// `a, b, c` for a log line.
pub fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What changed between two answers: (added, removed).
pub fn diff(old: &[SocketAddr], new: &[SocketAddr]) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let added = new.iter().filter(|a| !old.contains(a)).copied().collect();
    let removed = old.iter().filter(|a| !new.contains(a)).copied().collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn answers_compare_whatever_their_order() {
        let a = normalize(addrs(&["10.0.0.6:80", "10.0.0.5:80", "10.0.0.6:80"]));
        assert_eq!(a, addrs(&["10.0.0.5:80", "10.0.0.6:80"]));
        let (added, removed) = diff(&a, &addrs(&["10.0.0.6:80", "10.0.0.7:80"]));
        assert_eq!(added, addrs(&["10.0.0.7:80"]));
        assert_eq!(removed, addrs(&["10.0.0.5:80"]));
        assert_eq!(list(&a), "10.0.0.5:80, 10.0.0.6:80");
    }

    #[tokio::test]
    async fn the_system_resolver_reads_the_hosts_file() {
        let found = System.resolve("localhost", 3000).await.unwrap();
        assert!(
            found
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 3000),
            "{found:?}"
        );
    }
}
