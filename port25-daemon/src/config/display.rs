//! What `port25d check-config` prints: the effective policy, in words.

use std::fmt;

use super::{CidrSet, Config};
use crate::model::{ListKind, Mode, OnExit, Policy};

/// The human summary printed by `port25d check-config`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T: fmt::Display>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        let interfaces = if self.interfaces.is_empty() {
            "(none: nothing will be attached)".to_string()
        } else {
            join(&self.interfaces)
        };
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (count would-be drops, drop nothing)",
        };
        let policy = match self.policy {
            Policy::Drop => "drop (only allowlisted sources may connect)",
            Policy::Ratelimit => "ratelimit (new connections from other sources are rate limited)",
        };
        writeln!(f, "{:<18}{}", "config", self.source)?;
        writeln!(f, "{:<18}{interfaces}", "interfaces")?;
        writeln!(f, "{:<18}{}", "xdp mode", self.xdp_mode)?;
        writeln!(f, "{:<18}{}", "ports", join(&self.ports))?;
        writeln!(f, "{:<18}{mode}", "mode")?;
        writeln!(f, "{:<18}{policy}", "policy")?;
        write_list(f, ListKind::Allow, &self.allow)?;
        write_list(f, ListKind::Deny, &self.deny)?;
        let r = &self.ratelimit;
        let unused = if self.policy == Policy::Drop {
            "  (unused with policy drop)"
        } else {
            ""
        };
        writeln!(f, "ratelimit{unused}")?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "per source", r.syn_rate, r.syn_burst
        )?;
        writeln!(
            f,
            "  {:<16}IPv4 /{}, IPv6 /{}",
            "source prefix", r.ipv4_prefix, r.ipv6_prefix
        )?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "global", r.global_syn_rate, r.global_syn_burst
        )?;
        writeln!(f, "  {:<16}{}", "tracked sources", r.tracked_sources)?;
        if r.verified_ttl == 0 {
            writeln!(f, "  {:<16}off", "verified")?;
        } else {
            writeln!(
                f,
                "  {:<16}{} s after a completed handshake (skips the global cap)",
                "verified", r.verified_ttl
            )?;
        }
        writeln!(f, "{:<18}http://{}/metrics", "metrics", self.metrics_listen)?;
        if !self.watched_dirs.is_empty() {
            let dirs: Vec<String> = self
                .watched_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            writeln!(
                f,
                "{:<18}{} (reloaded when their files change)",
                "watched dirs",
                dirs.join(", ")
            )?;
        }
        let on_exit = match self.on_exit {
            OnExit::Detach => "detach (SIGTERM removes the filter)",
            OnExit::Keep => "keep (the filter stays after SIGTERM; `port25d detach` removes it)",
        };
        write!(f, "{:<18}{on_exit}", "on exit")
    }
}

/// Lists at most this many entries of each list; the rest are counted.
const DISPLAY_LIST_CAP: usize = 20;

fn write_list(f: &mut fmt::Formatter<'_>, name: ListKind, set: &CidrSet) -> fmt::Result {
    let noun = if set.len() == 1 { "entry" } else { "entries" };
    writeln!(
        f,
        "{name:<18}{} {noun} ({} IPv4, {} IPv6)",
        set.len(),
        set.v4.len(),
        set.v6.len()
    )?;
    for net in set.iter().take(DISPLAY_LIST_CAP) {
        writeln!(f, "  {net}")?;
    }
    if set.len() > DISPLAY_LIST_CAP {
        writeln!(f, "  … and {} more", set.len() - DISPLAY_LIST_CAP)?;
    }
    Ok(())
}
