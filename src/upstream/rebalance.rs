//! Rebalancing (`rebalance_rate`): when one server of an upstream holds
//! more than [`START_ABOVE`] × the mean tunnel count of the servers taking
//! work (a server came back or was added), tunnels on the busiest server
//! are asked to leave, `rebalance_rate` per second: each sends Close 1001
//! both ways, its client reconnects, and least-tunnels sends it to an
//! emptier server. It stops once no server holds more than
//! [`STOP_AT`] × the mean. [`step`] is the pure decision.

use super::Upstream;
use std::sync::Weak;
use std::time::Duration;

/// Start when the busiest server holds more than this × the mean.
pub const START_ABOVE: f64 = 1.2;
/// Stop once no server holds more than this × the mean.
pub const STOP_AT: f64 = 1.1;
/// How often a balanced upstream is looked at.
const IDLE_LOOK: Duration = Duration::from_millis(500);

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Nothing to move.
    Idle,
    /// Move one tunnel off the server at this index.
    Move(usize),
    /// Balanced again.
    Done,
}

/// Given the tunnels of each server taking work, and whether a round of
/// rebalancing is under way.
pub fn step(loads: &[usize], active: bool) -> Step {
    if loads.len() < 2 {
        return if active { Step::Done } else { Step::Idle };
    }
    let mean = loads.iter().sum::<usize>() as f64 / loads.len() as f64;
    let Some((busiest, &most)) = loads.iter().enumerate().max_by_key(|(_, n)| **n) else {
        return Step::Idle;
    };
    let most = most as f64;
    if active && most > STOP_AT * mean || !active && most > START_ABOVE * mean {
        Step::Move(busiest)
    } else if active {
        Step::Done
    } else {
        Step::Idle
    }
}

/// Rebalance `upstream` while it is in use.
pub async fn run(upstream: Weak<Upstream>, rate: u32) {
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut active = false;
    let mut moved = 0u64;
    loop {
        tokio::time::sleep(if active { every } else { IDLE_LOOK }).await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        let servers: Vec<_> = upstream
            .servers()
            .into_iter()
            .filter(|s| s.available())
            .collect();
        let loads: Vec<usize> = servers.iter().map(|s| s.staying()).collect();
        let name = &upstream.config.name;
        match step(&loads, active) {
            Step::Idle => {}
            Step::Move(i) => {
                if !active {
                    let mean = loads.iter().sum::<usize>() as f64 / loads.len() as f64;
                    tracing::info!(
                        "upstream {name}: rebalancing: server {} holds {} tunnels, the mean is \
                         {mean:.1}; moving {rate} per second",
                        servers[i].name,
                        loads[i]
                    );
                    active = true;
                    moved = 0;
                }
                if servers[i].move_one() {
                    moved += 1;
                    upstream.stats.rebalanced.inc();
                }
            }
            Step::Done => {
                active = false;
                tracing::info!(
                    "upstream {name}: rebalanced: {moved} tunnels moved; tunnels per server now {loads:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebalancing_starts_above_1_2_and_stops_at_1_1_of_the_mean() {
        assert_eq!(step(&[10, 10, 10], false), Step::Idle);
        // 20, 20, 0: mean 13.3; 20 > 16.
        assert!(matches!(step(&[20, 20, 0], false), Step::Move(0 | 1)));
        // Under way: keeps going while above 14.7.
        assert_eq!(step(&[15, 14, 11], true), Step::Move(0));
        assert_eq!(step(&[14, 14, 12], true), Step::Done);
        // Not started for an imbalance under 1.2×.
        assert_eq!(step(&[15, 13, 12], false), Step::Idle);
        assert_eq!(step(&[5], false), Step::Idle);
        assert_eq!(step(&[], true), Step::Done);
    }

    #[test]
    fn moving_one_at_a_time_converges() {
        let mut loads = vec![20, 20, 0];
        let mut active = false;
        let mut moves = 0;
        loop {
            match step(&loads, active) {
                Step::Move(i) => {
                    active = true;
                    loads[i] -= 1;
                    // The client comes back to the emptiest server.
                    let emptiest = (0..loads.len()).min_by_key(|&j| loads[j]).unwrap();
                    loads[emptiest] += 1;
                    moves += 1;
                }
                Step::Done => break,
                Step::Idle => panic!("never started"),
            }
            assert!(moves < 100);
        }
        assert!(loads[2] >= 10, "{loads:?}");
        assert!(
            loads.iter().all(|&n| n as f64 <= STOP_AT * 40.0 / 3.0),
            "{loads:?}"
        );
    }
}
