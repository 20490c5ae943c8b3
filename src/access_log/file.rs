//! An access log file: a buffer per worker thread, and a writer thread
//! of its own that moves the buffers to the file at least once a second.

use super::format::format_event;
use crate::config::LogFormat;
use std::cell::RefCell;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::Event;

/// A worker's buffer is handed to the writer once it holds this much.
const FLUSH_AT: usize = 64 * 1024;
/// Beyond this much unwritten per worker, lines are dropped.
const DROP_AT: usize = 4 * 1024 * 1024;
/// The writer writes at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// An access log file, its writer thread and the workers' buffers.
pub struct FileSink {
    pub(super) path: PathBuf,
    pub(super) format: LogFormat,
    /// Tells this sink's buffers from an earlier one's, per thread.
    id: u64,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// One thread's lines waiting for the writer.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// What workers and the writer share.
struct Shared {
    buffers: Mutex<Vec<Buffer>>,
    reopen: AtomicBool,
    stop: AtomicBool,
    dropped: AtomicU64,
    /// Flushes asked for and flushes done, for [`FileSink::flush`].
    flushes: Mutex<(u64, u64)>,
    flushed: Condvar,
    writer: Mutex<Option<std::thread::Thread>>,
}

thread_local! {
    /// This thread's buffer for the sink with the id beside it.
    static BUFFER: RefCell<Option<(u64, Buffer)>> = const { RefCell::new(None) };
}

impl FileSink {
    pub(super) fn open(path: PathBuf, format: LogFormat) -> Result<Arc<FileSink>, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let file = open_append(&path)?;
        let shared = Arc::new(Shared {
            buffers: Mutex::new(Vec::new()),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            flushes: Mutex::new((0, 0)),
            flushed: Condvar::new(),
            writer: Mutex::new(None),
        });
        let sink = Arc::new(FileSink {
            path: path.clone(),
            format,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared: shared.clone(),
            writer: Mutex::new(None),
        });
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(path, file, &shared))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        *lock(&sink.shared.writer) = Some(writer.thread().clone());
        *lock(&sink.writer) = Some(writer);
        Ok(sink)
    }

    /// Format `event` into this thread's buffer.
    pub(super) fn write(&self, event: &Event<'_>) {
        self.append(|out, format| format_event(out, event, format));
    }

    /// Append one line, made by `line`, to this thread's buffer.
    pub(super) fn append(&self, line: impl FnOnce(&mut Vec<u8>, LogFormat)) {
        let buffer = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            match &*b {
                Some((id, buffer)) if *id == self.id => buffer.clone(),
                _ => {
                    let buffer = Arc::new(Mutex::new(Vec::with_capacity(FLUSH_AT)));
                    lock(&self.shared.buffers).push(buffer.clone());
                    *b = Some((self.id, buffer.clone()));
                    buffer
                }
            }
        });
        let mut out = lock(&buffer);
        if out.len() >= DROP_AT {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line(&mut out, self.format);
        if out.len() >= FLUSH_AT {
            drop(out);
            self.shared.wake();
        }
    }

    /// Have the writer close and open the file again, and wait for it.
    pub(super) fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.flush();
    }

    /// Have the writer write everything buffered now, and wait (at most a
    /// few seconds) until it has.
    pub(super) fn flush(&self) {
        let ticket = {
            let mut flushes = lock(&self.shared.flushes);
            flushes.0 += 1;
            flushes.0
        };
        self.shared.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut flushes = lock(&self.shared.flushes);
        while flushes.1 < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            flushes = self
                .shared
                .flushed
                .wait_timeout(flushes, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn wake(&self) {
        if let Some(writer) = &*lock(&self.writer) {
            writer.unpark();
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_append(path: &std::path::Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open access_log {}: {e}", path.display()))
}

/// The writer thread: every second, or when woken, move each worker's
/// buffer to the file.
fn write_loop(path: PathBuf, file: File, shared: &Shared) {
    let mut file = Some(file);
    let mut spare = Vec::with_capacity(FLUSH_AT);
    let mut last_drop_warning = None::<Instant>;
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let asked = lock(&shared.flushes).0;
        if shared.reopen.swap(false, Ordering::AcqRel) {
            // Write what was meant for the old file first.
            drain(shared, &mut file, &mut spare);
            file = match open_append(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!("{e}; access lines are dropped until the next SIGUSR1");
                    None
                }
            };
        }
        drain(shared, &mut file, &mut spare);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 && last_drop_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            last_drop_warning = Some(Instant::now());
            tracing::warn!(
                dropped,
                "access log writer fell behind: {dropped} access lines dropped"
            );
        }
        {
            let mut flushes = lock(&shared.flushes);
            flushes.1 = flushes.1.max(asked);
            shared.flushed.notify_all();
        }
        if shared.stop.load(Ordering::Acquire) {
            drain(shared, &mut file, &mut spare);
            return;
        }
    }
}

/// Swap out every worker's buffer and write it.
fn drain(shared: &Shared, file: &mut Option<File>, spare: &mut Vec<u8>) {
    let buffers: Vec<_> = lock(&shared.buffers).clone();
    for buffer in buffers {
        {
            let mut held = lock(&buffer);
            if held.is_empty() {
                continue;
            }
            std::mem::swap(&mut *held, spare);
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(spare)
        {
            tracing::error!(error = %e, "cannot write the access log");
        }
        spare.clear();
        if spare.capacity() > 4 * FLUSH_AT {
            spare.shrink_to(FLUSH_AT);
        }
    }
}
