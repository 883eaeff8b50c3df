//! Wall-clock time as the state files, the control socket and the CrowdSec list count it: Unix
//! seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 before 1970: a clock that broken makes every expiry due).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "expires in 59m 59s" for an expiry time (Unix seconds) `at`, seen at `now`; "no expiry".
pub(crate) fn expiry(at: Option<u64>, now: u64) -> String {
    at.map_or_else(
        || "no expiry".to_owned(),
        |at| {
            let left = std::time::Duration::from_secs(at.saturating_sub(now));
            format!("expires in {}", humantime::format_duration(left))
        },
    )
}
