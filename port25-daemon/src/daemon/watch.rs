//! Watched list directories (`[allow|deny] dirs`): what they look like now, so that the run loop
//! reloads when a file appears, goes or changes, once it has stopped changing.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::list_dir_files;

/// One list file of a watched directory, as last seen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WatchedFile {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

/// What the watched directories look like now: file names, sizes and modification times. A
/// change means a reload.
pub(crate) fn watched_fingerprint(dirs: &[PathBuf]) -> Vec<WatchedFile> {
    let mut seen = Vec::new();
    for dir in dirs {
        for path in list_dir_files(dir).unwrap_or_default() {
            let meta = std::fs::metadata(&path).ok();
            seen.push(WatchedFile {
                path,
                len: meta.as_ref().map_or(0, std::fs::Metadata::len),
                modified: meta.and_then(|m| m.modified().ok()),
            });
        }
    }
    seen
}

/// The watched directories as loaded, and a change seen but not yet settled. A download written
/// in place (`curl -o deny.d/feed.txt`) is read only once two looks a tick apart agree, so that
/// a file half written is neither refused (a false alarm) nor loaded cut short.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    loaded: Vec<WatchedFile>,
    settling: Option<Vec<WatchedFile>>,
}

/// What one look at the watched directories found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// As loaded.
    Unchanged,
    /// Different from what was loaded and from the look before: look again next tick.
    Settling,
    /// Different from what was loaded, and the same as the look before: reload.
    Settled,
}

impl Watch {
    pub(crate) fn new(loaded: Vec<WatchedFile>) -> Self {
        Self {
            loaded,
            settling: None,
        }
    }

    /// Whether a change is waiting to settle (the run loop then looks every tick).
    pub(crate) fn is_settling(&self) -> bool {
        self.settling.is_some()
    }

    /// Takes one look. On [`Look::Settled`] what was seen counts as loaded, whatever the reload
    /// makes of it: a refused directory is not read again until it changes again.
    pub(crate) fn look(&mut self, now: Vec<WatchedFile>) -> Look {
        if now == self.loaded {
            self.settling = None;
            return Look::Unchanged;
        }
        if self.settling.as_ref() != Some(&now) {
            self.settling = Some(now);
            return Look::Settling;
        }
        self.settling = None;
        self.loaded = now;
        Look::Settled
    }

    /// What a successful reload read (looked at before it read).
    pub(crate) fn loaded(&mut self, seen: Vec<WatchedFile>) {
        self.loaded = seen;
        self.settling = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, len: u64) -> WatchedFile {
        WatchedFile {
            path: PathBuf::from(name),
            len,
            modified: None,
        }
    }

    #[test]
    fn a_change_is_reloaded_once_two_looks_agree() {
        let mut watch = Watch::new(vec![file("a", 10)]);
        assert_eq!(watch.look(vec![file("a", 10)]), Look::Unchanged);
        // A download growing: every look differs from the one before.
        assert_eq!(
            watch.look(vec![file("a", 10), file("b", 1)]),
            Look::Settling
        );
        assert!(watch.is_settling());
        assert_eq!(
            watch.look(vec![file("a", 10), file("b", 7)]),
            Look::Settling
        );
        assert_eq!(watch.look(vec![file("a", 10), file("b", 7)]), Look::Settled);
        assert!(!watch.is_settling());
        assert_eq!(
            watch.look(vec![file("a", 10), file("b", 7)]),
            Look::Unchanged
        );
    }

    #[test]
    fn a_change_undone_before_it_settles_is_no_reload() {
        let mut watch = Watch::new(vec![file("a", 10)]);
        assert_eq!(watch.look(vec![file("a", 11)]), Look::Settling);
        assert_eq!(watch.look(vec![file("a", 10)]), Look::Unchanged);
        assert!(!watch.is_settling());
    }
}
