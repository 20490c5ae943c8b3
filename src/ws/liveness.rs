//! Is each side of a tunnel still there? The proxy's pings, as a pure state
//! machine over instants (`ping_interval`, `ping_timeout`).
//!
//! A side that has sent nothing for `ping_interval` is due a Ping of the
//! proxy's own; anything it sends afterwards, the answering Pong or any
//! other byte, shows it alive. A side that sends nothing within
//! `ping_timeout` of the Ping is dead. The relay tells the machine when a
//! side was heard ([`Pings::heard`], one store per poll that read bytes),
//! asks it for the next instant something may be due ([`Pings::next`]) to
//! arm the tunnel's one coarse timer, and, when that timer fires, what is
//! due ([`Pings::due`]). No clock is read here.

use std::time::{Duration, Instant};

/// One end of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Client, Side::Upstream];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// What the timer found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Send this side a Ping.
    Ping(Side),
    /// This side did not answer within `ping_timeout`.
    Dead(Side),
}

#[derive(Clone, Copy, Debug)]
struct Watch {
    /// When this side last sent anything.
    heard: Instant,
    /// When the proxy pinged it, if it has not been heard since.
    pinged: Option<Instant>,
}

/// Both sides' ping state.
#[derive(Clone, Debug)]
pub struct Pings {
    interval: Duration,
    timeout: Duration,
    sides: [Watch; 2],
}

impl Pings {
    /// Both sides heard at `now`; `interval` zero turns pings off.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Pings {
        let watch = Watch {
            heard: now,
            pinged: None,
        };
        Pings {
            interval,
            timeout,
            sides: [watch; 2],
        }
    }

    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    /// `side` sent something at `now`.
    #[inline]
    pub fn heard(&mut self, side: Side, now: Instant) {
        let watch = &mut self.sides[side.index()];
        watch.heard = now;
        watch.pinged = None;
    }

    /// Whether a Ping to `side` is waiting for an answer.
    pub fn awaiting(&self, side: Side) -> bool {
        self.sides[side.index()].pinged.is_some()
    }

    /// The earliest instant something may be due, if pings are on.
    pub fn next(&self) -> Option<Instant> {
        if !self.enabled() {
            return None;
        }
        self.sides
            .iter()
            .map(|w| match w.pinged {
                Some(at) => at + self.timeout,
                None => w.heard + self.interval,
            })
            .min()
    }

    /// What is due at `now`: a dead side first, then a Ping to send (the
    /// machine counts it sent). Ask again until it answers `None`.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        if !self.enabled() {
            return None;
        }
        for side in Side::BOTH {
            let watch = &self.sides[side.index()];
            if watch.pinged.is_some_and(|at| at + self.timeout <= now) {
                return Some(Due::Dead(side));
            }
        }
        for side in Side::BOTH {
            let watch = &mut self.sides[side.index()];
            if watch.pinged.is_none() && watch.heard + self.interval <= now {
                watch.pinged = Some(now);
                return Some(Due::Ping(side));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_side_is_pinged_then_declared_dead() {
        let t0 = Instant::now();
        let mut pings = Pings::new(30 * S, 10 * S, t0);
        assert_eq!(pings.next(), Some(t0 + 30 * S));
        assert_eq!(pings.due(t0 + 29 * S), None);
        // The client keeps talking; the upstream is silent.
        pings.heard(Side::Client, t0 + 20 * S);
        assert_eq!(pings.due(t0 + 30 * S), Some(Due::Ping(Side::Upstream)));
        assert_eq!(pings.due(t0 + 30 * S), None);
        assert!(pings.awaiting(Side::Upstream));
        // Next due: the upstream's timeout at 40 s (the client's Ping at 50 s).
        assert_eq!(pings.next(), Some(t0 + 40 * S));
        assert_eq!(pings.due(t0 + 40 * S), Some(Due::Dead(Side::Upstream)));
    }

    #[test]
    fn any_answer_shows_a_side_alive() {
        let t0 = Instant::now();
        let mut pings = Pings::new(30 * S, 10 * S, t0);
        assert_eq!(pings.due(t0 + 30 * S), Some(Due::Ping(Side::Client)));
        assert_eq!(pings.due(t0 + 30 * S), Some(Due::Ping(Side::Upstream)));
        pings.heard(Side::Client, t0 + 31 * S);
        pings.heard(Side::Upstream, t0 + 39 * S);
        assert_eq!(pings.due(t0 + 45 * S), None);
        assert_eq!(pings.next(), Some(t0 + 61 * S));
        assert_eq!(pings.due(t0 + 61 * S), Some(Due::Ping(Side::Client)));
    }

    #[test]
    fn zero_interval_means_no_pings() {
        let t0 = Instant::now();
        let mut pings = Pings::new(Duration::ZERO, 10 * S, t0);
        assert!(!pings.enabled());
        assert_eq!(pings.next(), None);
        assert_eq!(pings.due(t0 + 3600 * S), None);
    }
}
