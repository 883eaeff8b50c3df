//! Watched list directories (`[allow|deny] dirs`): what they look like now, so that the run loop
//! reloads when a file appears, goes or changes.

use std::path::PathBuf;

use crate::config::list_dir_files;

/// What a watched directory looks like now: file names, sizes and modification times. A change
/// means a reload.
pub(crate) fn watched_fingerprint(
    dirs: &[PathBuf],
) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut seen = Vec::new();
    for dir in dirs {
        for file in list_dir_files(dir).unwrap_or_default() {
            let meta = std::fs::metadata(&file).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            seen.push((file, len, modified));
        }
    }
    seen
}
