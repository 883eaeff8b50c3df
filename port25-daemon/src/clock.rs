//! Wall-clock time as the state files, the control socket and the CrowdSec list count it: Unix
//! seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 before 1970: a clock that broken makes every expiry due).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
