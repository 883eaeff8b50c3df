//! `port25d shadow load|status|promote|drop`: a candidate policy judged beside the live one on
//! live traffic, then promoted or dropped (docs/ARCHITECTURE.md, § Shadow policy).

use std::path::Path;

use anyhow::Context as _;

use super::output::outln;
use crate::{
    control::{self, Endpoint},
    proto::{Request, ShadowSource, ShadowStatus},
};

pub(super) fn load(daemon: &Endpoint, config: &Path) -> anyhow::Result<()> {
    // The daemon reads it: the path must not depend on this command's working directory.
    let config = std::fs::canonicalize(config).with_context(|| {
        format!(
            "cannot read the candidate config {}: give the path of a port25.toml",
            config.display()
        )
    })?;
    let request = Request::ShadowLoad {
        config: config.display().to_string(),
    };
    outln!("{}", control::command(daemon, &request)?);
    Ok(())
}

pub(super) fn promote(daemon: &Endpoint) -> anyhow::Result<()> {
    outln!("{}", control::command(daemon, &Request::ShadowPromote)?);
    Ok(())
}

pub(super) fn drop(daemon: &Endpoint) -> anyhow::Result<()> {
    outln!("{}", control::command(daemon, &Request::ShadowDrop)?);
    Ok(())
}

pub(super) fn status(daemon: &Endpoint, json: bool) -> anyhow::Result<()> {
    let status = control::shadow_status(daemon)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print(&status)
}

fn print(status: &ShadowStatus) -> anyhow::Result<()> {
    let (Some(config), Some(since)) = (&status.config, status.since) else {
        outln!("no shadow policy is loaded (port25d shadow load --config FILE loads one)");
        return Ok(());
    };
    outln!(
        "shadow policy {config} (generation {}), judged since {}",
        status.generation.unwrap_or(0),
        rfc3339(since)
    );
    outln!(
        "  candidate: policy {}, mode {}, {} allow and {} deny entries; live: policy {}, mode {}",
        status.policy.map_or_else(String::new, |p| p.to_string()),
        status.mode.map_or_else(String::new, |m| m.to_string()),
        status.allow_entries,
        status.deny_entries,
        status.live_policy,
        status.live_mode
    );
    outln!(
        "  {} new connection attempts judged: {} would be newly dropped, {} newly passed",
        status.judged,
        status.newly_dropped,
        status.newly_passed
    );
    let changed: Vec<_> = status
        .pairs
        .iter()
        .filter(|p| p.live != p.candidate)
        .collect();
    if !changed.is_empty() {
        outln!("by reason (live -> candidate):");
        for pair in changed {
            outln!(
                "  {:>10}  {} -> {} ({})",
                pair.packets,
                pair.live,
                pair.candidate,
                pair.effect.replace('_', " ")
            );
        }
    }
    for (title, rows) in [
        ("would newly drop", &status.top_newly_dropped),
        ("would newly pass", &status.top_newly_passed),
    ] {
        if rows.is_empty() {
            continue;
        }
        outln!("sources it {title} (most first):");
        for row in rows {
            print_source(row)?;
        }
    }
    Ok(())
}

fn print_source(row: &ShadowSource) -> anyhow::Result<()> {
    outln!(
        "  {:<20} {:>8} SYNs  {} -> {}  last seen {}",
        row.source.to_string(),
        row.packets,
        row.live,
        row.candidate,
        rfc3339(row.last_seen)
    );
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}
