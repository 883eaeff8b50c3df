//! `port25d history`: every change of the effective policy, read from the state directory (so
//! also while no daemon runs): when, what, who.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::output::outln;
use crate::{
    clock::now_unix,
    history::{self, Change},
};

pub(super) fn history(state_dir: &Path, since: Option<u64>, json: bool) -> anyhow::Result<()> {
    let path = state_dir.join(history::FILE);
    if !state_dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: pass the daemon's --state-dir",
            state_dir.display()
        );
    }
    let (changes, skipped) = history::read(&path)?;
    if skipped > 0 {
        eprintln!(
            "port25d: {}: {skipped} lines that are not a change were skipped",
            path.display()
        );
    }
    for change in changes
        .iter()
        .filter(|c| since.is_none_or(|since| c.time >= since))
    {
        if json {
            outln!("{}", serde_json::to_string(change)?);
        } else {
            print(change)?;
        }
    }
    Ok(())
}

fn print(change: &Change) -> anyhow::Result<()> {
    let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(change.time));
    outln!(
        "{at}  {} by {}: {}",
        change.change,
        change.by,
        change.summary
    );
    for detail in &change.details {
        outln!("    {detail}");
    }
    Ok(())
}

/// `--since`: how long ago ("1h", "7d") or when ("2026-12-01", "2026-12-01 09:30:00", RFC 3339
/// in UTC), as Unix seconds.
pub(super) fn parse_since(text: &str) -> Result<u64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_unix().saturating_sub(ago.as_secs()));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| {
            format!(
                "{text:?} is neither a time ago (\"1h\", \"7d\") nor a date (\"2026-12-01\", \
                 \"2026-12-01 09:30:00\", in UTC)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_ago_or_a_date() {
        let now = now_unix();
        let hour_ago = parse_since("1h").unwrap();
        assert!(hour_ago <= now - 3600 && hour_ago >= now - 3602);
        assert_eq!(parse_since("2026-12-01").unwrap(), 1_796_083_200);
        assert_eq!(parse_since("2026-12-01 00:00:10").unwrap(), 1_796_083_210);
        assert_eq!(parse_since("2026-12-01T00:00:10Z").unwrap(), 1_796_083_210);
        assert!(parse_since("last tuesday").unwrap_err().contains("neither"));
    }
}
