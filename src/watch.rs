//! Noticing that files changed on disk, by a cheap periodic `stat`.
//!
//! A file's [`Fingerprint`] is what `stat` says of the file a path leads to
//! once every symlink is followed: device, inode, size, modification and
//! change times. Each way files get replaced changes it: an in-place write
//! (size, times), an editor's save to a temporary file renamed over the old
//! one (inode), a Kubernetes ConfigMap or Secret volume swapping its
//! `..data` symlink to a new folder (inode, device-level path). Polling
//! sees all of them alike, where inotify watches would have to follow
//! renames and symlink swaps by hand.
//!
//! [`Watch`] adds the settling rule: a change is reported once the
//! fingerprints have stayed the same for one more poll, so a file caught
//! half-written is read after the writer is done.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often watched files are looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// What `stat` says of a file, following symlinks. `None` when it is
/// missing (a half-done swap, a file deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    pub fn of(path: &Path) -> Option<Fingerprint> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// A set of files watched together (a certificate and its key, a route
/// file).
#[derive(Debug)]
pub struct Watch {
    paths: Vec<PathBuf>,
    /// What was last acted on.
    seen: Vec<Option<Fingerprint>>,
    /// A change noticed at the last poll, waiting to settle.
    pending: Option<Vec<Option<Fingerprint>>>,
}

impl Watch {
    /// Start watching `paths` as they are now.
    pub fn new(paths: Vec<PathBuf>) -> Watch {
        let seen = paths.iter().map(|p| Fingerprint::of(p)).collect();
        Watch {
            paths,
            seen,
            pending: None,
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Look again; `true` once a change has settled (the files are the same
    /// as at the previous poll, and differ from what was last acted on).
    pub fn poll(&mut self) -> bool {
        let now: Vec<Option<Fingerprint>> = self.paths.iter().map(|p| Fingerprint::of(p)).collect();
        self.settle(now)
    }

    fn settle(&mut self, now: Vec<Option<Fingerprint>>) -> bool {
        if now == self.seen {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&now) {
            self.pending = None;
            self.seen = now;
            return true;
        }
        self.pending = Some(now);
        false
    }
}

/// The route file, watched while `[server] watch` (or `run --watch`) is
/// on: [`RouteFileWatch::tick`] waits for the next poll, and
/// [`RouteFileWatch::changed`] says whether to reload.
#[derive(Debug)]
pub struct RouteFileWatch {
    watch: Watch,
    /// `run --watch`: on whatever the file says.
    always: bool,
    tick: tokio::time::Interval,
}

impl RouteFileWatch {
    pub fn new(path: &Path, always: bool) -> RouteFileWatch {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        RouteFileWatch {
            watch: Watch::new(vec![path.to_path_buf()]),
            always,
            tick,
        }
    }

    /// Wait for the next look at the file.
    pub async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// Whether the file changed and settled since the last reload, with
    /// `enabled` what the configuration in force says of `watch`.
    pub fn changed(&mut self, enabled: bool) -> bool {
        if !(enabled || self.always) {
            return false;
        }
        self.watch.poll()
    }

    /// The file was just read (a reload by signal): start from what it is.
    pub fn reset(&mut self) {
        self.watch = Watch::new(self.watch.paths.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn changed_after_two_polls(watch: &mut Watch) -> bool {
        let first = watch.poll();
        let second = watch.poll();
        assert!(!first, "a change is reported only once it settled");
        second
    }

    #[test]
    fn writes_renames_and_symlink_swaps_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "one").unwrap();
        let mut watch = Watch::new(vec![file.clone()]);
        assert!(!watch.poll());
        assert!(!watch.poll());

        std::fs::write(&file, "two, longer").unwrap();
        assert!(changed_after_two_polls(&mut watch));
        assert!(!watch.poll(), "reported once");

        let temp = dir.path().join(".a.toml.swp");
        std::fs::write(&temp, "three").unwrap();
        std::fs::rename(&temp, &file).unwrap();
        assert!(changed_after_two_polls(&mut watch));

        // The ConfigMap layout: file -> ..data/file, ..data -> ..v1.
        let (v1, v2) = (dir.path().join("..v1"), dir.path().join("..v2"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("b.toml"), "same").unwrap();
        std::fs::write(v2.join("b.toml"), "same").unwrap();
        symlink("..v1", dir.path().join("..data")).unwrap();
        let linked = dir.path().join("b.toml");
        symlink("..data/b.toml", &linked).unwrap();
        let mut watch = Watch::new(vec![linked]);
        symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(changed_after_two_polls(&mut watch));
    }

    #[test]
    fn a_change_still_moving_waits() {
        let fp = |size| {
            Some(Fingerprint {
                dev: 1,
                ino: 1,
                size,
                mtime: (0, 0),
                ctime: (0, 0),
            })
        };
        let mut watch = Watch {
            paths: vec![PathBuf::from("x")],
            seen: vec![fp(1)],
            pending: None,
        };
        assert!(!watch.settle(vec![fp(2)]));
        assert!(!watch.settle(vec![fp(3)]), "still being written");
        assert!(watch.settle(vec![fp(3)]));
        assert!(!watch.settle(vec![fp(3)]));
        // Back to what was acted on before settling: nothing to do.
        assert!(!watch.settle(vec![fp(4)]));
        assert!(!watch.settle(vec![fp(3)]));
    }
}
