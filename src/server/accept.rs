//! What happens between `accept` and the TLS handshake: the process-wide
//! connection cap, the PROXY protocol header, and the per-address cap.
//!
//! - **`max_connections`**: an accept loop takes a slot of the process's
//!   [`ConnectionCount`] before it accepts, and the connection gives it back
//!   when it closes (tunnel included). At the cap the loop stops accepting:
//!   new connections wait in the kernel's backlog, as when descriptors run
//!   out, and accepting resumes by itself once one closes.
//! - **PROXY protocol** (v1 text, v2 binary; `proxy_protocol = true`): the
//!   header is read before anything else, within `client_header_timeout`,
//!   and never a byte past it, so TLS or HTTP find the stream as the client
//!   sent it. Its source address is the client from then on. `LOCAL` (v2)
//!   and `UNKNOWN` (v1), the health checks of load balancers, keep the
//!   socket's address. A connection without a valid header is closed.
//!   Parsing is [`ppp`]'s; [`parse_proxy_header`] is pure.
//! - **`max_connections_per_ip`**: connections are counted per client
//!   address and listener; one over the cap is still served HTTP, but every
//!   request on it is answered `429` with `Retry-After` and
//!   `Connection: close`.

use crate::state::{ConnectionCount, State};
use ppp::{HeaderResult, PartialResult};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest PROXY header accepted: v1's limit is 107 bytes; a v2 header
/// is 16 bytes and its addresses and TLVs, which this bounds.
pub const MAX_PROXY_HEADER: usize = 16 + 4096;

/// A slot of the process's connection count, given back on drop.
pub struct Slot {
    count: Arc<State>,
    /// A connection holds it (not just an accept loop waiting for one).
    accepted: bool,
}

impl Slot {
    /// Take a slot, waiting while `cap` are taken; `None` once `stop`
    /// resolves first. Says so, at most once a second, when it waits.
    pub async fn take(
        state: &Arc<State>,
        cap: impl Fn() -> usize,
        stop: impl std::future::Future<Output = ()>,
    ) -> Option<Slot> {
        let count: &ConnectionCount = &state.connections;
        tokio::pin!(stop);
        let mut said = false;
        loop {
            let freed = count.freed();
            let cap = cap();
            if count.try_take(cap) {
                return Some(Slot {
                    count: state.clone(),
                    accepted: false,
                });
            }
            if !said {
                said = true;
                state.metrics.max_connections_reached();
                if warning_due(&CAP_WARNED) {
                    tracing::warn!(
                        max_connections = cap,
                        "max_connections reached: new connections wait in the backlog \
                         until some close"
                    );
                }
            }
            tokio::select! {
                () = &mut stop => return None,
                () = freed => {}
            }
        }
    }
}

impl Slot {
    /// A connection was accepted into this slot.
    pub fn accepted(mut self) -> Slot {
        self.accepted = true;
        self.count.metrics.connections_open().inc();
        self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.accepted {
            self.count.metrics.connections_open().dec();
        }
        self.count.connections.give_back();
    }
}

static CAP_WARNED: Mutex<Option<Instant>> = Mutex::new(None);
static PER_IP_WARNED: Mutex<Option<Instant>> = Mutex::new(None);

/// Whether a second has passed since `last` said so, across every listener
/// and worker of the process.
pub fn warning_due(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    let due = last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// Open connections per client address, for one listener.
#[derive(Default)]
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection counted in [`PerIp`]; uncounted on drop.
pub struct Counted {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
    /// Whether this connection is over the cap.
    pub over: bool,
}

impl PerIp {
    /// Count a connection from `ip` against `cap` (which is not 0).
    pub fn count(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Counted {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        *n += 1;
        Counted {
            per_ip: self.clone(),
            ip,
            over: *n > cap,
        }
    }

    /// Open connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Say, at most once a second, that a client went over its cap.
pub fn over_ip_cap(ip: IpAddr, cap: usize, listener: SocketAddr) {
    if warning_due(&PER_IP_WARNED) {
        tracing::warn!(
            client = %ip,
            max_connections_per_ip = cap,
            "client over max_connections_per_ip on {listener}: its requests are answered 429 \
             (said at most once a second)"
        );
    }
}

/// What the first bytes of a connection say as a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    /// More bytes are needed; every byte so far belongs to the header.
    Incomplete,
    /// A header of `len` bytes; `source` is the client it names, `None`
    /// for `LOCAL`/`UNKNOWN` (keep the socket's address).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header.
    Invalid(String),
}

/// The start of every v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The start of every v1 header, and its longest length.
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;

/// Parse the PROXY header at the start of `bytes`. Pure.
///
/// A v1 header is only handed to the parser once its line is complete:
/// cut inside a field (`… 51234 `), the parser would call it invalid.
pub fn parse_proxy_header(bytes: &[u8]) -> ProxyHeader {
    let bytes = &bytes[..bytes.len().min(MAX_PROXY_HEADER)];
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    let v1 = starts(V1_PREFIX) && !starts(V2_SIGNATURE);
    if v1 {
        match bytes.iter().position(|&b| b == b'\n') {
            None if bytes.len() < V1_MAX => return ProxyHeader::Incomplete,
            None => {
                return ProxyHeader::Invalid(format!(
                    "PROXY v1 header without an end of line in {V1_MAX} bytes"
                ));
            }
            Some(end) if end >= V1_MAX => {
                return ProxyHeader::Invalid(format!("PROXY v1 header longer than {V1_MAX} bytes"));
            }
            // The line must end in CRLF; the parser sees that line alone,
            // never the bytes after it (where it could find another CR).
            Some(end) if end == 0 || bytes[end - 1] != b'\r' => {
                return ProxyHeader::Invalid("PROXY v1 header not ended by CRLF".into());
            }
            Some(end) => return parse_v1_line(&bytes[..=end]),
        }
    } else if !starts(V2_SIGNATURE) {
        return ProxyHeader::Invalid("no PROXY header".into());
    }
    let parsed = HeaderResult::parse(bytes);
    if parsed.is_incomplete() {
        // A whole v1 line the parser still finds short is not a header.
        return if v1 {
            ProxyHeader::Invalid("bad PROXY v1 header".into())
        } else if bytes.len() >= MAX_PROXY_HEADER {
            ProxyHeader::Invalid(format!("PROXY header longer than {MAX_PROXY_HEADER} bytes"))
        } else {
            ProxyHeader::Incomplete
        };
    }
    match parsed {
        HeaderResult::V1(Ok(header)) => {
            use ppp::v1::Addresses;
            let source = match header.addresses {
                Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Unknown => None,
            };
            ProxyHeader::Done {
                len: header.header.len(),
                source,
            }
        }
        HeaderResult::V2(Ok(header)) => {
            use ppp::v2::{Addresses, Command};
            let source = match (header.command, header.addresses) {
                (Command::Local, _) => None,
                (Command::Proxy, Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (Command::Proxy, Addresses::Unspecified | Addresses::Unix(_)) => None,
            };
            ProxyHeader::Done {
                len: header.len(),
                source,
            }
        }
        HeaderResult::V1(Err(e)) => ProxyHeader::Invalid(format!("bad PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => ProxyHeader::Invalid(format!("bad PROXY header: {e}")),
    }
}

/// A whole v1 line, CRLF included.
fn parse_v1_line(line: &[u8]) -> ProxyHeader {
    match ppp::v1::Header::try_from(line) {
        Ok(header) if header.header.len() == line.len() => {
            use ppp::v1::Addresses;
            let source = match header.addresses {
                Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Addresses::Unknown => None,
            };
            ProxyHeader::Done {
                len: line.len(),
                source,
            }
        }
        Ok(_) => ProxyHeader::Invalid("bad PROXY v1 header".into()),
        Err(e) => ProxyHeader::Invalid(format!("bad PROXY v1 header: {e}")),
    }
}

/// Read the PROXY header off `stream` within `timeout`, leaving every byte
/// after it unread. `Ok(None)`: a header that names no client.
pub async fn read_proxy_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, String> {
    match tokio::time::timeout(timeout, read_header(stream)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no PROXY header within {timeout:?}")),
    }
}

async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    // Peek, parse, then consume only what belongs to the header. Bytes of
    // an incomplete header are all header, so they are consumed too, and
    // the next peek waits for new ones instead of returning the same.
    let mut header = Vec::new();
    let mut peeked = vec![0u8; 536];
    loop {
        let room = MAX_PROXY_HEADER - header.len();
        let want = room.min(peeked.len());
        let n = stream
            .peek(&mut peeked[..want])
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        if n == 0 {
            return Err("connection closed before a complete PROXY header".into());
        }
        let seen = header.len();
        header.extend_from_slice(&peeked[..n]);
        match parse_proxy_header(&header) {
            ProxyHeader::Done { len, source } => {
                let mut rest = vec![0u8; len.saturating_sub(seen)];
                stream
                    .read_exact(&mut rest)
                    .await
                    .map_err(|e| format!("reading the PROXY header: {e}"))?;
                return Ok(source);
            }
            ProxyHeader::Incomplete => {
                let mut all = vec![0u8; n];
                stream
                    .read_exact(&mut all)
                    .await
                    .map_err(|e| format!("reading the PROXY header: {e}"))?;
            }
            ProxyHeader::Invalid(why) => return Err(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.push(0x20 | command);
        header.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(addresses);
        header.extend_from_slice(tlvs);
        header
    }

    #[test]
    fn v1_headers_name_the_client() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy_header(text),
            ProxyHeader::Done {
                len: 41,
                source: Some("192.0.2.7:51234".parse().unwrap())
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 ::1 4000 80\r\n";
        assert_eq!(
            parse_proxy_header(v6),
            ProxyHeader::Done {
                len: v6.len(),
                source: Some("[2001:db8::7]:4000".parse().unwrap())
            }
        );
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n"),
            ProxyHeader::Done {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn v2_headers_name_the_client() {
        let mut addresses = vec![192, 0, 2, 7, 10, 0, 0, 1];
        addresses.extend_from_slice(&51234u16.to_be_bytes());
        addresses.extend_from_slice(&443u16.to_be_bytes());
        let header = v2(1, 0x11, &addresses, &[0x04, 0, 1, 42]);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse_proxy_header(&bytes),
            ProxyHeader::Done {
                len: header.len(),
                source: Some("192.0.2.7:51234".parse().unwrap())
            }
        );
        // LOCAL: a health check of the balancer itself.
        let local = v2(0, 0x00, &[], &[]);
        assert_eq!(
            parse_proxy_header(&local),
            ProxyHeader::Done {
                len: 16,
                source: None
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n";
        for end in 0..text.len() {
            assert_eq!(
                parse_proxy_header(&text[..end]),
                ProxyHeader::Incomplete,
                "{end}"
            );
        }
        let mut addresses = vec![192, 0, 2, 7, 10, 0, 0, 1];
        addresses.extend_from_slice(&[0, 80, 1, 187]);
        let binary = v2(1, 0x11, &addresses, &[]);
        for end in 0..binary.len() {
            assert_eq!(
                parse_proxy_header(&binary[..end]),
                ProxyHeader::Incomplete,
                "{end}"
            );
        }
    }

    #[test]
    fn anything_else_is_invalid() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 999.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\nGET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            // Found by the fuzzer: a line ended by LF alone, then a request.
            b"PROXY TCP6 34f8::7 ::1 40 6 \n",
            b"PROXY TCP6 34f8::7 ::1 40 6 \nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bytes), ProxyHeader::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut too_long = b"PROXY TCP4 ".to_vec();
        too_long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(
            parse_proxy_header(&too_long),
            ProxyHeader::Invalid(_)
        ));
    }

    proptest::proptest! {
        /// Any v1 or v2 header, for any addresses, followed by anything:
        /// parsed whole, naming the source; every cut of it incomplete.
        #[test]
        fn headers_for_any_address_parse_and_every_cut_waits(
            v4 in proptest::bool::ANY,
            source in proptest::array::uniform16(0u8..),
            port in 1u16..,
            binary in proptest::bool::ANY,
            rest in proptest::collection::vec(0u8.., 0..64),
        ) {
            let source: SocketAddr = if v4 {
                SocketAddr::new(IpAddr::from([source[0], source[1], source[2], source[3]]), port)
            } else {
                SocketAddr::new(IpAddr::from(source), port)
            };
            let destination: SocketAddr = if v4 {
                "10.0.0.1:443".parse().unwrap()
            } else {
                "[2001:db8::1]:443".parse().unwrap()
            };
            let header = if binary {
                ppp::v2::Builder::with_addresses(
                    ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                    ppp::v2::Protocol::Stream,
                    (source, destination),
                )
                .build()
                .unwrap()
            } else {
                ppp::v1::Addresses::from((source, destination)).to_string().into_bytes()
            };
            let mut bytes = header.clone();
            bytes.extend_from_slice(&rest);
            proptest::prop_assert_eq!(
                parse_proxy_header(&bytes),
                ProxyHeader::Done { len: header.len(), source: Some(source) }
            );
            for end in 0..header.len() {
                proptest::prop_assert_eq!(parse_proxy_header(&header[..end]), ProxyHeader::Incomplete);
            }
        }

        /// Whatever the bytes, the parser answers, and a header it finds
        /// fits in them.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(0u8.., 0..300)) {
            if let ProxyHeader::Done { len, .. } = parse_proxy_header(&bytes) {
                proptest::prop_assert!(len <= bytes.len());
            }
        }
    }

    #[test]
    fn per_ip_counts_come_and_go() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = per_ip.count(ip, 2);
        let b = per_ip.count(ip, 2);
        let c = per_ip.count(ip, 2);
        assert!(!a.over && !b.over && c.over);
        let other = per_ip.count("192.0.2.8".parse().unwrap(), 2);
        assert!(!other.over);
        drop((a, c));
        assert_eq!(per_ip.open(ip), 1);
        drop(b);
        assert_eq!(per_ip.open(ip), 0);
        assert!(per_ip.open.lock().unwrap().len() == 1);
    }
}
