//! Whether a server may take new work: passive health (a server that
//! refuses or times out is skipped, 1 s doubling to 60 s while it keeps
//! failing) and active health checks (`GET path` every `interval`; down
//! after `fall` failures in a row, up after `rise` passes).
//!
//! [`Passive`] and [`Checks`] are the state, updated from any worker with
//! atomics and read on every pick; [`Checks::record`] is the pure state
//! machine; [`probe`] is one check over a connection the caller opened.

use crate::config::HealthCheck;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first skip after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest skip, however long a server keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a server is skipped after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * (1u32 << doublings)).min(MAX_BACKOFF)
}

/// Milliseconds since the first call: one clock for every server, so a
/// deadline is one number.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Passive health: failures seen on real traffic.
#[derive(Default)]
pub struct Passive {
    failures: AtomicU32,
    /// [`now_ms`] until which the server is skipped; 0 once it answers.
    down_until: AtomicU64,
}

/// What a failure or success changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was taking work and is now skipped for this long.
    Down(Duration),
    /// Still failing: skipped again, for this long.
    StillDown(Duration),
    /// It answered after this many failures.
    Up(u32),
    Unchanged,
}

impl Passive {
    /// Whether the server is out of its skip time. Reads the clock only
    /// while a skip is pending.
    pub fn allows(&self) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until == 0 || until <= now_ms()
    }

    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A connection attempt failed.
    pub fn failed(&self) -> Change {
        self.failed_at(now_ms())
    }

    /// A connection attempt failed at `now` ([`now_ms`]). Only an attempt
    /// made while the server was taking work says something new: the
    /// attempts already in flight when it went down (a storm of handshakes
    /// is hundreds) fail in the same instant, and counting each would push
    /// the skip to its longest at once and leave a server that was gone for
    /// two seconds skipped for a minute.
    pub fn failed_at(&self, now: u64) -> Change {
        let until = self.down_until.load(Ordering::Relaxed);
        if until > now {
            return Change::Unchanged;
        }
        let failures = self.failures.load(Ordering::Relaxed) + 1;
        let skip = backoff(failures);
        let next = now + skip.as_millis() as u64;
        // One of the failures racing here starts the next skip.
        if self
            .down_until
            .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Change::Unchanged;
        }
        self.failures.store(failures, Ordering::Relaxed);
        if failures == 1 {
            Change::Down(skip)
        } else {
            Change::StillDown(skip)
        }
    }

    /// A connection succeeded.
    pub fn succeeded(&self) -> Change {
        // The common case, a healthy server, only reads.
        if self.failures.load(Ordering::Relaxed) == 0 {
            return Change::Unchanged;
        }
        let failures = self.failures.swap(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
        if failures == 0 {
            Change::Unchanged
        } else {
            Change::Up(failures)
        }
    }
}

/// Active health: the result of the checks in a row.
pub struct Checks {
    up: AtomicBool,
    /// Passes (positive) or failures (negative) in a row; one checker
    /// task writes it.
    streak: AtomicU32,
    failing: AtomicBool,
}

impl Default for Checks {
    fn default() -> Self {
        // A server is up until its checks say otherwise.
        Checks {
            up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            failing: AtomicBool::new(false),
        }
    }
}

/// A state change of the active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Down after this many failures in a row.
    Down(u32),
    /// Up after this many passes in a row.
    Up(u32),
}

impl Checks {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Count one check; a state change is returned once, when it happens.
    pub fn record(&self, passed: bool, fall: u32, rise: u32) -> Option<Verdict> {
        let streak = if self.failing.load(Ordering::Relaxed) == passed {
            // The streak turned.
            self.failing.store(!passed, Ordering::Relaxed);
            1
        } else {
            self.streak.load(Ordering::Relaxed).saturating_add(1)
        };
        self.streak.store(streak, Ordering::Relaxed);
        let up = self.is_up();
        if up && !passed && streak >= fall {
            self.up.store(false, Ordering::Relaxed);
            Some(Verdict::Down(streak))
        } else if !up && passed && streak >= rise {
            self.up.store(true, Ordering::Relaxed);
            Some(Verdict::Up(streak))
        } else {
            None
        }
    }

    /// Checks were switched off: the server counts as up again.
    pub fn reset(&self) -> bool {
        self.streak.store(0, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
        !self.up.swap(true, Ordering::Relaxed)
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx or 3xx status.
    Passed(u16),
    /// Why not, as the log line says it: `status 500`, `timed out`…
    Failed(String),
}

/// The bytes of one check request.
pub fn request(check: &HealthCheck, host: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: switchyard-health-check\r\n\
         connection: close\r\n\r\n",
        check.path
    )
    .into_bytes()
}

/// Send a check on `stream` and read the status line of the answer.
pub async fn probe<S>(mut stream: S, request: &[u8]) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = stream.write_all(request).await {
        return Outcome::Failed(format!("sending the check failed: {e}"));
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let code = response.code.unwrap_or(0);
                return if (200..400).contains(&code) {
                    Outcome::Passed(code)
                } else {
                    Outcome::Failed(format!("status {code}"))
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            Ok(httparse::Status::Partial) => {
                return Outcome::Failed("response head over 16 KiB".into());
            }
            Err(e) => return Outcome::Failed(format!("not an HTTP response: {e}")),
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Outcome::Failed("connection closed before an answer".into()),
            Ok(_) => {}
            Err(e) => return Outcome::Failed(format!("reading the answer failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn passive_health_skips_then_forgives() {
        let passive = Passive::default();
        assert!(passive.allows());
        assert_eq!(passive.succeeded(), Change::Unchanged);
        let t = now_ms();
        assert_eq!(passive.failed_at(t), Change::Down(Duration::from_secs(1)));
        assert!(!passive.allows());
        // The other attempts in flight when it went down change nothing.
        for _ in 0..100 {
            assert_eq!(passive.failed_at(t + 10), Change::Unchanged);
        }
        assert_eq!(passive.failures(), 1);
        // A failure of an attempt made after the skip doubles it.
        assert_eq!(
            passive.failed_at(t + 1_000),
            Change::StillDown(Duration::from_secs(2))
        );
        assert_eq!(passive.failed_at(t + 2_999), Change::Unchanged);
        assert_eq!(
            passive.failed_at(t + 3_000),
            Change::StillDown(Duration::from_secs(4))
        );
        assert_eq!(passive.failures(), 3);
        assert_eq!(passive.succeeded(), Change::Up(3));
        assert!(passive.allows());
        assert_eq!(passive.failures(), 0);
    }

    #[test]
    fn checks_fall_and_rise() {
        let checks = Checks::default();
        assert!(checks.is_up());
        assert_eq!(checks.record(false, 3, 2), None);
        assert_eq!(checks.record(false, 3, 2), None);
        // A pass in between starts the count again.
        assert_eq!(checks.record(true, 3, 2), None);
        assert_eq!(checks.record(false, 3, 2), None);
        assert_eq!(checks.record(false, 3, 2), None);
        assert_eq!(checks.record(false, 3, 2), Some(Verdict::Down(3)));
        assert!(!checks.is_up());
        // Said once: more failures change nothing.
        assert_eq!(checks.record(false, 3, 2), None);
        assert_eq!(checks.record(true, 3, 2), None);
        assert!(!checks.is_up());
        assert_eq!(checks.record(true, 3, 2), Some(Verdict::Up(2)));
        assert!(checks.is_up());
        assert_eq!(checks.record(true, 3, 2), None);
        assert_eq!(checks.record(false, 1, 1), Some(Verdict::Down(1)));
        assert!(checks.reset());
        assert!(checks.is_up());
    }

    #[tokio::test]
    async fn a_probe_reads_the_status() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
                Outcome::Passed(204),
            ),
            (
                b"HTTP/1.1 302 Found\r\nlocation: /\r\n\r\n",
                Outcome::Passed(302),
            ),
            (
                b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n",
                Outcome::Failed("status 500".into()),
            ),
            (
                b"HTTP/1.1 200",
                Outcome::Failed("connection closed before an answer".into()),
            ),
        ] {
            let (mut ours, theirs) = tokio::io::duplex(4096);
            let check = HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                fall: 1,
                rise: 1,
            };
            let server = tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = ours.read(&mut head).await.unwrap();
                ours.write_all(answer).await.unwrap();
                String::from_utf8_lossy(&head[..n]).into_owned()
            });
            let outcome = probe(theirs, &request(&check, "backend:80")).await;
            assert_eq!(outcome, expected);
            let head = server.await.unwrap();
            assert!(head.starts_with("GET /healthz HTTP/1.1\r\nhost: backend:80\r\n"));
        }
    }
}
