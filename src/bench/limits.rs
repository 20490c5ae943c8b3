//! The open-file limit (RLIMIT_NOFILE): raised from the soft to the hard
//! limit at start, because every connection is a file descriptor.

/// File descriptors kept aside for stdio, the runtime, DNS, CA files...
pub const FD_RESERVE: u64 = 64;

/// The open-file limit after trying to raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit in force now.
    pub soft: u64,
    /// The ceiling an unprivileged process can raise it to.
    pub hard: u64,
}

impl FileLimit {
    /// How many connections fit under the limit.
    pub fn connections_allowed(&self) -> u64 {
        self.soft.saturating_sub(FD_RESERVE)
    }

    /// A warning when `wanted` connections do not fit, else `None`.
    pub fn warning_for(&self, wanted: u64) -> Option<String> {
        (wanted > self.connections_allowed()).then(|| {
            format!(
                "{wanted} connections requested but the open-file limit is {} (hard limit {}); \
                 at most about {} connections can be open at once — raise it with `ulimit -n`",
                self.soft,
                self.hard,
                self.connections_allowed()
            )
        })
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the result.
/// `None` if the limit cannot be read on this platform.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<FileLimit> {
    let mut lim = crate::server::open_files_limit()?;
    if lim.rlim_cur < lim.rlim_max {
        let mut target = lim.rlim_max;
        // An "unlimited" hard limit is not accepted as a soft limit everywhere
        // (macOS); fall back to a large finite value.
        if target == libc::RLIM_INFINITY {
            target = 1 << 20;
        }
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct; failure leaves the limit as is.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    // `rlim_t` is not u64 on every platform.
    #[allow(clippy::unnecessary_cast)]
    Some(FileLimit {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<FileLimit> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_idempotent() {
        let first = raise_open_file_limit().unwrap();
        let second = raise_open_file_limit().unwrap();
        assert_eq!(first, second);
        assert!(first.soft <= first.hard);
    }

    #[test]
    fn warns_only_past_the_limit() {
        let lim = FileLimit {
            soft: 1024,
            hard: 4096,
        };
        assert!(lim.warning_for(100).is_none());
        let w = lim.warning_for(5000).unwrap();
        assert!(w.contains("1024"), "{w}");
    }
}
