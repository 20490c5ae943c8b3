//! Which direction of a tunnel a wake-up is for.
//!
//! A tunnel is one task with two directions. Woken with the task's own
//! waker, it cannot tell which socket became ready and must try both: in
//! an echo, every message wakes the task once and one of the two reads is
//! for nothing (a trip through the I/O driver's readiness that says "not
//! yet"). So each direction does its I/O with a waker of its own, which
//! marks the direction and then wakes the task; a poll runs the directions
//! that were marked, and the relay forces one when it has something to
//! write there. Two small allocations per tunnel, made once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

struct Direction {
    woken: AtomicBool,
    /// The tunnel task's own waker.
    task: Waker,
}

impl Wake for Direction {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// The wakers of a tunnel's two directions, made at the first poll.
#[derive(Default)]
pub struct Wakers {
    made: Option<Made>,
}

struct Made {
    directions: [Arc<Direction>; 2],
    wakers: [Waker; 2],
}

impl Wakers {
    pub fn new() -> Wakers {
        Wakers::default()
    }

    /// Which directions were woken since the last poll (both, the first
    /// time, and whenever the task's waker is not the one they wake).
    #[inline]
    pub fn woken(&mut self, cx: &Context<'_>) -> [bool; 2] {
        match &self.made {
            Some(made) if made.directions[0].task.will_wake(cx.waker()) => made
                .directions
                .each_ref()
                .map(|d| d.woken.swap(false, Ordering::AcqRel)),
            _ => {
                let direction = || {
                    Arc::new(Direction {
                        woken: AtomicBool::new(false),
                        task: cx.waker().clone(),
                    })
                };
                let directions = [direction(), direction()];
                let wakers = [
                    Waker::from(directions[0].clone()),
                    Waker::from(directions[1].clone()),
                ];
                self.made = Some(Made { directions, wakers });
                [true, true]
            }
        }
    }

    /// The waker direction `i` does its I/O with (after [`Wakers::woken`]).
    pub fn waker<'a>(&'a self, i: usize, or: &'a Waker) -> &'a Waker {
        self.made.as_ref().map_or(or, |made| &made.wakers[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;
    use std::time::Duration;

    #[tokio::test]
    async fn a_directions_waker_marks_it_and_wakes_the_task() {
        let wakers = Arc::new(std::sync::Mutex::new(Wakers::new()));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (w, s) = (wakers.clone(), seen.clone());
        let task = tokio::spawn(std::future::poll_fn(move |cx| {
            let woken = w.lock().unwrap().woken(cx);
            let mut seen = s.lock().unwrap();
            seen.push(woken);
            if seen.len() == 3 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        let noop = Waker::noop();
        tokio::task::yield_now().await;
        let one = wakers.lock().unwrap().waker(1, noop).clone();
        one.wake_by_ref();
        tokio::task::yield_now().await;
        let zero = wakers.lock().unwrap().waker(0, noop).clone();
        zero.wake_by_ref();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![[true, true], [false, true], [true, false]]
        );
    }
}
