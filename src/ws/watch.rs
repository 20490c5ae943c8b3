//! What the proxy itself says and hears in one tunnel, as pure state: the
//! frames it waits to write (its pings and closes), the close handshake
//! (who sent a Close, what was written each way) and its own pongs.
//!
//! Rules (RFC 6455 §5.5.1, §7.1):
//!
//! - The proxy's own frames wait for a frame boundary in the direction
//!   they go; the relay asks [`Watch::wants`] at each boundary and takes
//!   them with [`Watch::take`].
//! - Once the proxy wrote its Close to a side, nothing else goes that way
//!   (the relay drops it), and the Close that side answers with is kept
//!   back: it answers the proxy, not the other peer.
//! - A Close the peers exchange themselves passes untouched. The side whose
//!   Close frame came first closed the tunnel; the proxy, if its own came
//!   first.
//! - The handshake with a side is complete once a Close went each way (or
//!   the side closed its connection); when both are, the tunnel ends at
//!   once, without waiting for the connections to close.

use super::close::{OwnFrame, PingTag, close_code, code};
use super::frame::{Payload, opcode};
use super::liveness::Side;

/// Why the proxy ends a tunnel with Close frames of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The drain of a stop (SIGTERM): Close 1001 to both sides.
    Shutdown,
    /// The tunnel's owner asked it to go ([`super::goodbye::Goodbye`]).
    Goodbye,
    /// The upstream's fleet rebalances: this tunnel moves to another
    /// server (Close 1001 to both sides).
    Rebalance,
    /// `max_lifetime` passed.
    Lifetime,
    /// A client message over `max_message_size`: 1009 to the client, 1001
    /// to the upstream.
    TooBig,
    /// This side did not answer a Ping within `ping_timeout`: 1001 to the
    /// other side, and the tunnel ends as soon as it is written.
    Dead(Side),
}

impl Ending {
    /// The `closed_by` of the access event.
    pub fn closed_by(self) -> &'static str {
        match self {
            Ending::Shutdown => "shutdown",
            Ending::Goodbye => "goodbye",
            Ending::Rebalance => "rebalance",
            Ending::Lifetime => "max-lifetime",
            Ending::TooBig => "message-too-big",
            Ending::Dead(Side::Client) => "client-timeout",
            Ending::Dead(Side::Upstream) => "upstream-timeout",
        }
    }

    /// The code the proxy sends `side`, if any.
    fn code_for(self, side: Side) -> Option<u16> {
        match (self, side) {
            (Ending::TooBig, Side::Client) => Some(code::TOO_BIG),
            (Ending::Dead(dead), side) if dead == side => None,
            _ => Some(code::GOING_AWAY),
        }
    }

    fn reason(code: u16) -> &'static str {
        if code == code::TOO_BIG {
            "message too big"
        } else {
            "going away"
        }
    }
}

/// Who sent the first Close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    Peer(Side),
    Proxy,
}

/// Bit of [`Watch::wants`] per side.
const fn bit(side: Side) -> u8 {
    1 << side as u8
}

/// One tunnel's watch. Every array is indexed by [`Side::index`].
#[derive(Debug)]
pub struct Watch {
    /// Makes this tunnel's ping payloads its own.
    nonce: u32,
    /// Sides with a frame of the proxy's waiting (one bit each).
    wanted: u8,
    ping_queued: [bool; 2],
    /// The proxy pinged this side at least once.
    pinged: [bool; 2],
    close_queued: [Option<u16>; 2],
    /// A Close frame was written towards this side.
    close_sent: [bool; 2],
    /// The code of the proxy's own Close to this side.
    own_close: [Option<u16>; 2],
    /// The code of each side's Close frame.
    close_from: [Option<u16>; 2],
    /// This side closed its connection.
    eof: [bool; 2],
    first: Option<Closer>,
    pub ending: Option<Ending>,
    /// The proxy's own pongs received since last counted.
    pub pongs: u64,
}

impl Watch {
    pub fn new(nonce: u32) -> Watch {
        Watch {
            nonce,
            wanted: 0,
            ping_queued: [false; 2],
            pinged: [false; 2],
            close_queued: [None; 2],
            close_sent: [false; 2],
            own_close: [None; 2],
            close_from: [None; 2],
            eof: [false; 2],
            first: None,
            ending: None,
            pongs: 0,
        }
    }

    /// The payload of the proxy's pings to `side`.
    pub fn tag(&self, side: Side) -> PingTag {
        PingTag::new(self.nonce ^ (side.index() as u32).wrapping_mul(0x9E37_79B9))
    }

    /// Whether a frame of the proxy's waits to go to `side`.
    #[inline]
    pub fn wants(&self, side: Side) -> bool {
        self.wanted & bit(side) != 0
    }

    /// Whether any frame of the proxy's waits.
    pub fn wants_any(&self) -> bool {
        self.wanted != 0
    }

    /// Ping `side` at its next frame boundary (unless it is being closed).
    pub fn queue_ping(&mut self, side: Side) {
        let i = side.index();
        if self.ending.is_none() && !self.close_sent[i] {
            self.ping_queued[i] = true;
            self.wanted |= bit(side);
        }
    }

    /// End the tunnel for `ending`: the proxy's Close to every side that
    /// has not had one yet. The first ending stays.
    pub fn begin(&mut self, ending: Ending) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(ending);
        for side in Side::BOTH {
            let i = side.index();
            self.ping_queued[i] = false;
            self.wanted &= !bit(side);
            if let Some(code) = ending.code_for(side)
                && !self.close_sent[i]
            {
                self.close_queued[i] = Some(code);
                self.wanted |= bit(side);
            }
        }
    }

    /// The frame to write to `side` now, at a frame boundary; `true` with
    /// it if it is a Close (nothing else may follow it).
    pub fn take(&mut self, side: Side) -> Option<(OwnFrame, bool)> {
        let i = side.index();
        let masked = side == Side::Upstream;
        self.wanted &= !bit(side);
        if let Some(code) = self.close_queued[i].take() {
            self.ping_queued[i] = false;
            self.close_sent[i] = true;
            self.own_close[i] = Some(code);
            self.first.get_or_insert(Closer::Proxy);
            return Some((OwnFrame::close(code, Ending::reason(code), masked), true));
        }
        if std::mem::take(&mut self.ping_queued[i]) {
            self.pinged[i] = true;
            return Some((OwnFrame::ping(&self.tag(side), masked), false));
        }
        None
    }

    /// A close frame or candidate pong `from` a side, read whole. Returns
    /// whether it passes on; `out_shut`: the way on is closed anyway.
    pub fn control(&mut self, from: Side, opcode: u8, payload: &Payload, out_shut: bool) -> bool {
        let i = from.index();
        match opcode {
            opcode::CLOSE => {
                if self.close_from[i].is_none() {
                    self.close_from[i] = Some(close_code(payload.as_slice()));
                    self.first.get_or_insert(Closer::Peer(from));
                }
                // The answer to the proxy's own Close stays here.
                let passes = self.own_close[i].is_none() && !out_shut;
                if passes {
                    let other = from.other().index();
                    self.close_sent[other] = true;
                    // No ping of the proxy's after a Close.
                    self.ping_queued[other] = false;
                    if self.close_queued[other].is_none() {
                        self.wanted &= !bit(from.other());
                    }
                }
                passes
            }
            opcode::PONG if self.pinged[i] && payload.as_slice() == self.tag(from).as_bytes() => {
                self.pongs += 1;
                false
            }
            _ => true,
        }
    }

    /// `side` closed its connection.
    pub fn eof(&mut self, side: Side) {
        self.eof[side.index()] = true;
    }

    /// Whether every side's close handshake is over, so the tunnel can end
    /// now.
    pub fn complete(&self) -> bool {
        if let Some(Ending::Dead(dead)) = self.ending {
            // Nobody to wait for: done once the other side has its Close.
            return self.close_sent[dead.other().index()];
        }
        self.first.is_some()
            && Side::BOTH.iter().all(|&side| {
                let i = side.index();
                self.eof[i] || (self.close_from[i].is_some() && self.close_sent[i])
            })
    }

    /// Who sent the first Close, if anyone.
    pub fn first(&self) -> Option<Closer> {
        self.first
    }

    /// The code of `side`'s own Close frame.
    pub fn close_from(&self, side: Side) -> Option<u16> {
        self.close_from[side.index()]
    }

    /// The code of the proxy's Close to `side`.
    pub fn own_close(&self, side: Side) -> Option<u16> {
        self.own_close[side.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{Reader, Stop};

    /// The payload of a frame as a reader sees it.
    fn payload_of(frame: &[u8]) -> (u8, Payload) {
        let mut reader = Reader::default();
        reader.watch_pongs(PingTag::LEN);
        match reader.scan(frame, false).stop {
            Stop::Control { opcode, .. } => (opcode, Payload::of(frame)),
            other => panic!("{other:?}"),
        }
    }

    fn close(code: u16) -> Vec<u8> {
        OwnFrame::close(code, "", false).as_bytes().to_vec()
    }

    #[test]
    fn a_client_initiated_handshake_is_the_clients() {
        let mut watch = Watch::new(7);
        let (op, payload) = payload_of(&close(1000));
        assert!(watch.control(Side::Client, op, &payload, false));
        assert!(!watch.complete());
        assert!(watch.control(Side::Upstream, op, &payload, false));
        assert!(watch.complete());
        assert_eq!(watch.first(), Some(Closer::Peer(Side::Client)));
        assert_eq!(watch.close_from(Side::Upstream), Some(1000));
    }

    #[test]
    fn the_goodbye_closes_both_and_keeps_their_answers() {
        let mut watch = Watch::new(7);
        watch.begin(Ending::Shutdown);
        assert!(watch.wants(Side::Client) && watch.wants(Side::Upstream));
        let (frame, is_close) = watch.take(Side::Client).unwrap();
        assert!(is_close);
        assert_eq!(payload_of(frame.as_bytes()).1.as_slice()[..2], [0x03, 0xE9]);
        assert!(!watch.wants(Side::Client));
        let _ = watch.take(Side::Upstream).unwrap();
        let (op, payload) = payload_of(&close(1001));
        // The client's answer is the proxy's: it does not pass.
        assert!(!watch.control(Side::Client, op, &payload, true));
        assert!(!watch.complete());
        assert!(!watch.control(Side::Upstream, op, &payload, true));
        assert!(watch.complete());
        assert_eq!(watch.first(), Some(Closer::Proxy));
    }

    #[test]
    fn a_side_that_already_closed_gets_no_second_close() {
        let mut watch = Watch::new(7);
        let (op, payload) = payload_of(&close(1000));
        // The client's Close went to the upstream.
        assert!(watch.control(Side::Client, op, &payload, false));
        watch.begin(Ending::Shutdown);
        assert!(!watch.wants(Side::Upstream));
        assert!(watch.wants(Side::Client));
        watch.eof(Side::Upstream);
        let _ = watch.take(Side::Client);
        assert!(watch.complete());
        assert_eq!(watch.first(), Some(Closer::Peer(Side::Client)));
    }

    #[test]
    fn too_big_and_dead_peers() {
        let mut watch = Watch::new(1);
        watch.begin(Ending::TooBig);
        let (to_client, _) = watch.take(Side::Client).unwrap();
        assert_eq!(
            &payload_of(to_client.as_bytes()).1.as_slice()[..2],
            &[0x03, 0xF1]
        );
        assert_eq!(watch.own_close(Side::Upstream), None);
        let _ = watch.take(Side::Upstream).unwrap();
        assert_eq!(watch.own_close(Side::Upstream), Some(1001));

        let mut watch = Watch::new(1);
        watch.begin(Ending::Dead(Side::Client));
        assert!(!watch.wants(Side::Client));
        assert!(!watch.complete());
        let _ = watch.take(Side::Upstream).unwrap();
        assert!(watch.complete());
    }

    #[test]
    fn only_the_proxys_own_pongs_are_kept() {
        let mut watch = Watch::new(0xabc);
        let pong = |tag: &PingTag| {
            let mut frame = vec![0x8A, PingTag::LEN as u8];
            frame.extend_from_slice(tag.as_bytes());
            payload_of(&frame)
        };
        let (op, ours) = pong(&watch.tag(Side::Client));
        // Not pinged yet: a peer's pong that happens to match passes.
        assert!(watch.control(Side::Client, op, &ours, false));
        watch.queue_ping(Side::Client);
        assert!(watch.wants(Side::Client));
        let (ping, is_close) = watch.take(Side::Client).unwrap();
        assert!(!is_close);
        assert_eq!(ping.as_bytes()[0], 0x89);
        assert!(!watch.control(Side::Client, op, &ours, false));
        assert_eq!(watch.pongs, 1);
        // The upstream's tag differs from the client's.
        let (_, other) = pong(&watch.tag(Side::Upstream));
        assert!(watch.control(Side::Client, op, &other, false));
    }
}
