//! Choosing a server: least-tunnels, round-robin and consistent hashing.
//! Pure: the callers say which servers may take work and how loaded they
//! are; nothing here does I/O or reads a clock.
//!
//! - [`round_robin`]: the first available server at or after the cursor.
//! - [`least_loaded`]: the available server with the fewest open tunnels;
//!   among equals, the first at or after the cursor, so ties rotate.
//! - [`Ring`]: rendezvous (highest random weight) hashing over the servers'
//!   names, by the `hrw-hash` crate. Every server scores every key and the
//!   highest score wins, so removing a server moves only the keys it had,
//!   and any process with the same server names agrees on every key (the
//!   hash is rapidhash, stable across processes, platforms and releases).
//! - [`cookie`]: the value of one cookie in `Cookie` header lines.

use hrw_hash::{HrwNode, HrwNodes};
use std::hash::{Hash, Hasher};

/// The first index, from `start` on and wrapping around, for which
/// `available` holds.
pub fn round_robin(n: usize, start: usize, available: impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|i| (start + i) % n).find(|&i| available(i))
}

/// The index with the lowest load among those `load` gives a value for
/// (`None`: not available); ties go to the first from `start` on.
pub fn least_loaded(
    n: usize,
    start: usize,
    load: impl Fn(usize) -> Option<usize>,
) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for index in (0..n).map(|i| (start + i) % n) {
        if let Some(l) = load(index)
            && best.is_none_or(|(_, b)| l < b)
        {
            best = Some((index, l));
            if l == 0 {
                break;
            }
        }
    }
    best.map(|(index, _)| index)
}

/// A server as the hash ring knows it: its name is what is hashed.
#[derive(Debug)]
struct Node {
    name: String,
    index: usize,
}

impl Hash for Node {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Node {}

impl HrwNode for Node {}

/// Consistent hashing over a list of servers.
pub struct Ring {
    nodes: HrwNodes<Node>,
}

impl Ring {
    /// A ring over servers named `names`; [`Ring::order`] yields indices
    /// into that list.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Ring {
        let nodes = names.into_iter().enumerate().map(|(index, name)| Node {
            name: name.to_string(),
            index,
        });
        Ring {
            nodes: HrwNodes::new(nodes),
        }
    }

    /// Every server, the key's own first, then the ones it falls back to.
    pub fn order(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let order: Vec<usize> = self.nodes.sorted(&key).map(|node| node.index).collect();
        order.into_iter()
    }
}

/// The value of cookie `name` in the `Cookie` header lines `lines`
/// (RFC 6265 §5.4: `name=value` pairs separated by `; `).
pub fn cookie<'a>(lines: impl IntoIterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    lines
        .into_iter()
        .flat_map(|line| line.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            (key.trim_ascii() == name.as_bytes()).then(|| value.trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_what_is_unavailable() {
        let up = [true, false, true];
        assert_eq!(round_robin(3, 0, |i| up[i]), Some(0));
        assert_eq!(round_robin(3, 1, |i| up[i]), Some(2));
        assert_eq!(round_robin(3, 5, |i| up[i]), Some(2));
        assert_eq!(round_robin(3, 0, |_| false), None);
        assert_eq!(round_robin(0, 0, |_| true), None);
    }

    #[test]
    fn least_loaded_prefers_the_emptiest_and_rotates_ties() {
        let loads = [Some(3), Some(1), None, Some(1)];
        assert_eq!(least_loaded(4, 0, |i| loads[i]), Some(1));
        assert_eq!(least_loaded(4, 2, |i| loads[i]), Some(3));
        assert_eq!(least_loaded(4, 0, |_| None), None);
        // Equal loads: each cursor position picks a different server.
        let even = |_| Some(5);
        let picks: Vec<_> = (0..3).map(|s| least_loaded(3, s, even)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn least_loaded_fills_servers_evenly() {
        let mut loads = [0usize; 3];
        for cursor in 0..30 {
            let i = least_loaded(3, cursor, |i| Some(loads[i])).unwrap();
            loads[i] += 1;
        }
        assert_eq!(loads, [10, 10, 10]);
        // A fourth server, empty, takes the next ten.
        let mut loads = [10, 10, 10, 0];
        for cursor in 0..10 {
            let i = least_loaded(4, cursor, |i| Some(loads[i])).unwrap();
            loads[i] += 1;
        }
        assert_eq!(loads, [10, 10, 10, 10]);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:3000")).collect()
    }

    fn owner(ring: &Ring, names: &[String], key: &str) -> String {
        let first = ring.order(key.as_bytes()).next().unwrap();
        names[first].clone()
    }

    #[test]
    fn hashing_is_stable_and_spreads_keys() {
        let list = names(4);
        let ring = Ring::new(list.iter().map(String::as_str));
        let again = Ring::new(list.iter().map(String::as_str));
        let mut per_server = std::collections::HashMap::new();
        for k in 0..1000 {
            let key = format!("user-{k}");
            let a = owner(&ring, &list, &key);
            assert_eq!(a, owner(&again, &list, &key));
            *per_server.entry(a).or_insert(0) += 1;
        }
        assert_eq!(per_server.len(), 4);
        assert!(per_server.values().all(|&n| n > 150), "{per_server:?}");
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let list = names(5);
        let ring = Ring::new(list.iter().map(String::as_str));
        let fewer: Vec<String> = list.iter().filter(|n| *n != &list[2]).cloned().collect();
        let smaller = Ring::new(fewer.iter().map(String::as_str));
        let mut moved = 0;
        for k in 0..1000 {
            let key = format!("user-{k}");
            let before = owner(&ring, &list, &key);
            let after = owner(&smaller, &fewer, &key);
            if before == list[2] {
                moved += 1;
                // Its keys go where the full ring would send them next.
                let next = ring.order(key.as_bytes()).nth(1).unwrap();
                assert_eq!(after, list[next]);
            } else {
                assert_eq!(before, after, "key {key} moved off a server that stayed");
            }
        }
        assert!(moved > 100, "{moved}");
        // Server order in the list does not matter, only the names.
        let reversed: Vec<String> = list.iter().rev().cloned().collect();
        let shuffled = Ring::new(reversed.iter().map(String::as_str));
        for k in 0..100 {
            let key = format!("user-{k}");
            assert_eq!(owner(&ring, &list, &key), owner(&shuffled, &reversed, &key));
        }
    }

    #[test]
    fn hashing_pins_known_answers() {
        // Two processes, two builds: the same names must give the same
        // owner. These values are what the hash gives today; a change here
        // would move every user of every deployment.
        let list = names(3);
        let ring = Ring::new(list.iter().map(String::as_str));
        let owners: Vec<usize> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|k| ring.order(k.as_bytes()).next().unwrap())
            .collect();
        assert_eq!(owners, PINNED);
    }

    /// See [`hashing_pins_known_answers`].
    const PINNED: [usize; 4] = [2, 0, 1, 1];

    #[test]
    fn cookies_are_found_by_name() {
        let lines: [&[u8]; 2] = [b"a=1; name=bob; c=3", b"d=4"];
        assert_eq!(cookie(lines, "name"), Some(&b"bob"[..]));
        assert_eq!(cookie(lines, "d"), Some(&b"4"[..]));
        assert_eq!(cookie(lines, "nam"), None);
        assert_eq!(cookie(lines, "e"), None);
        let spaced: [&[u8]; 1] = [b" name = x ;junk;"];
        assert_eq!(cookie(spaced, "name"), Some(&b"x"[..]));
        let empty: [&[u8]; 1] = [b"name="];
        assert_eq!(cookie(empty, "name"), Some(&b""[..]));
    }
}
