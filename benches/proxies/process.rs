//! Child processes: spawning in their own process group (so a terminal's
//! Ctrl-C reaches only the harness, which then cleans up), a [`Guard`] that
//! stops a process and all its descendants by PID when dropped, bounded
//! waits, and the SIGINT/SIGTERM flag every wait of the harness checks.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::procfs;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag that the waits below check, so the
/// harness unwinds and its guards stop every child.
pub fn install_signal_flag() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Error text used when the operator stopped the run.
pub const INTERRUPTED_MSG: &str = "interrupted";

pub fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(INTERRUPTED_MSG.to_string())
    } else {
        Ok(())
    }
}

/// Sleeps, waking early (with an error) when the run is interrupted.
pub fn pause(duration: Duration) -> Result<(), String> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Polls `check` every 50 ms until it yields a value or `limit` passes.
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= end {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        pause(Duration::from_millis(50))?;
    }
}

/// Raises the soft open-file limit to the hard one; children inherit it.
pub fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// A running child. Dropping it stops the child and its descendants.
pub struct Guard {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Guard {
    /// Spawns `command` in a new process group with stdout and stderr going
    /// to `log` (stdout to `stdout` instead when given).
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        stdout: Option<&Path>,
    ) -> Result<Guard, String> {
        let err_file =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let out_file = match stdout {
            Some(path) => {
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?
            }
            None => err_file
                .try_clone()
                .map_err(|e| format!("cannot reuse {}: {e}", log.display()))?,
        };
        command
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Guard {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The exit status if the child has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the child to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let name = self.name.clone();
        wait_for(limit, &format!("{name} to finish"), || self.exited())
    }

    /// The last lines of the child's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }

    /// Fails with the log's tail if the child has already exited.
    pub fn ensure_running(&mut self) -> Result<(), String> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); its log {} ends with:\n    {}",
                self.name,
                self.log.display(),
                self.log_tail()
            )),
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL for the child and whatever
    /// descendants it left (nginx workers).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let family = procfs::descendants(self.pid);
        if let Ok(None) = child.try_wait() {
            send(self.pid, libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                send(self.pid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        for pid in family {
            if procfs::cpu_time(pid).is_some() {
                send(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill only sends a signal to the PID we started.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Waits until something accepts TCP connections on `addr`, failing early
/// when `guard`'s process exits.
pub fn wait_for_port(addr: SocketAddr, guard: &mut Guard, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    loop {
        guard.ensure_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!(
                "{} did not listen on {addr} within {limit:?}; its log {} ends with:\n    {}",
                guard.name,
                guard.log.display(),
                guard.log_tail()
            ));
        }
        pause(Duration::from_millis(50))?;
    }
}

/// Whether `program` is on the PATH (or is an existing path).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
