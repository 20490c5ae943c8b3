//! Worker threads: one single-threaded tokio runtime per core, as nginx runs
//! one worker process per core.
//!
//! Every accepted connection lives on the worker that accepted it, with its
//! upstream connections and its tunnel: a request never hops between
//! threads, so no thread wakes another on the hot path. Each worker accepts
//! from its own copy of every listening socket; the kernel hands each new
//! connection to one of them. The thread that starts the proxy keeps the
//! control work: signals, reloads, the admin endpoint.

use std::cell::Cell;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (0 outside workers).
pub fn current() -> usize {
    WORKER_INDEX.with(Cell::get)
}

/// The number of workers when the route file does not say: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Tick the worker's coarse timeouts ([`crate::timer`]), and keep a tokio
/// timer due within one tick, always.
///
/// The second matters too: tokio wakes a runtime's I/O driver (a `write` to
/// its eventfd) whenever a timer is registered with a deadline earlier than
/// every timer it already holds, even when the registering thread is the
/// runtime's own and is busy (tokio-rs/tokio#5207). Each connection
/// registers a few timeouts of seconds (`client_header_timeout`,
/// `connect_timeout`, `read_timeout`), so that was a wasted system call and
/// wake-up for most WebSocket handshakes.
/// With a tick never more than [`crate::timer::TICK`] away, only timeouts
/// shorter than that still wake the driver.
async fn heartbeat() {
    let mut every = tokio::time::interval(crate::timer::TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        crate::timer::tick();
    }
}

/// The running worker threads.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Start `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|w| w.set(index));
                    crate::timer::install();
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stop_rx => {}
                            () = heartbeat() => {}
                        }
                    });
                    // Dropping the runtime cancels whatever is left on it.
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread died while starting"))??;
            handles.push(handle);
            threads.push((stop_tx, thread));
        }
        Ok(Workers { handles, threads })
    }

    /// One runtime handle per worker.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}
