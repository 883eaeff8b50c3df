//! What a reload changed, in words for the log: every policy change is logged with what changed.

use crate::{
    config::{CidrSet, Config},
    model::ListKind,
};

/// Examples of added or removed entries shown per list before "and N more".
const EXAMPLES: usize = 5;

/// The differences between the live config and the next, one phrase each.
pub(super) fn describe(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.ports != new.ports {
        out.push(format!("ports {:?} -> {:?}", old.ports, new.ports));
    }
    if old.mode != new.mode {
        out.push(format!("mode {} -> {}", old.mode, new.mode));
    }
    if old.policy != new.policy {
        out.push(format!("policy {} -> {}", old.policy, new.policy));
    }
    if old.ratelimit != new.ratelimit {
        out.push(format!(
            "ratelimit {:?} -> {:?}",
            old.ratelimit, new.ratelimit
        ));
    }
    if old.on_exit != new.on_exit {
        out.push(format!(
            "on_exit {} -> {}",
            old.on_exit.as_str(),
            new.on_exit.as_str()
        ));
    }
    for (name, before, after) in [
        (ListKind::Allow.as_str(), &old.allow, &new.allow),
        (ListKind::Deny.as_str(), &old.deny, &new.deny),
        (
            "smart host",
            &old.egress.smart_hosts,
            &new.egress.smart_hosts,
        ),
    ] {
        if let Some(diff) = list_diff(name, before, after) {
            out.push(diff);
        }
    }
    let (before, after) = (&old.egress, &new.egress);
    if before.mode != after.mode {
        out.push(format!("egress mode {} -> {}", before.mode, after.mode));
    }
    if before.cgroup != after.cgroup {
        out.push(format!(
            "egress cgroup {} -> {}",
            before.cgroup.display(),
            after.cgroup.display()
        ));
    }
    if before.forward_interfaces != after.forward_interfaces {
        out.push(format!(
            "egress forward_interfaces {:?} -> {:?}",
            before.forward_interfaces, after.forward_interfaces
        ));
    }
    if (&before.ports, &before.allow_users, &before.allow_cgroups)
        != (&after.ports, &after.allow_users, &after.allow_cgroups)
    {
        out.push(format!(
            "egress ports {:?} -> {:?}, allowed uids {:?} -> {:?}, allowed cgroups {} -> {}",
            before.ports,
            after.ports,
            before.allow_users,
            after.allow_users,
            before.allow_cgroups.len(),
            after.allow_cgroups.len()
        ));
    }
    out
}

/// Settings a reload cannot apply: they need a restart.
pub(super) fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.interfaces != new.interfaces
        || old.xdp_mode != new.xdp_mode
        || old.xdp_coexist != new.xdp_coexist
    {
        out.push(format!(
            "interfaces, xdp_mode or xdp_coexist changed in {}: restart port25d to apply them (with on_exit = \"keep\" the restart leaves no gap); the rest is reloaded now",
            new.source
        ));
    }
    if old.ratelimit.tracked_sources != new.ratelimit.tracked_sources {
        out.push(
            "ratelimit.tracked_sources changed: restart port25d to resize the source table".into(),
        );
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("[metrics] listen changed: restart port25d to apply it".into());
    }
    out
}

fn list_diff(name: &str, before: &CidrSet, after: &CidrSet) -> Option<String> {
    if before == after {
        return None;
    }
    let added: Vec<String> = after
        .iter()
        .filter(|n| !before.contains_net(n))
        .map(|n| n.to_string())
        .collect();
    let removed: Vec<String> = before
        .iter()
        .filter(|n| !after.contains_net(n))
        .map(|n| n.to_string())
        .collect();
    Some(format!(
        "{name} list {} -> {} entries (+{}{}, -{}{})",
        before.len(),
        after.len(),
        added.len(),
        examples(&added),
        removed.len(),
        examples(&removed)
    ))
}

fn examples(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = items.iter().take(EXAMPLES).map(String::as_str).collect();
    let more = items.len().saturating_sub(EXAMPLES);
    if more > 0 {
        format!(": {} and {more} more", shown.join(", "))
    } else {
        format!(": {}", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_reload_names_what_changed() {
        let old = Config::parse(
            "ports = [25]\n[allow]\ncidrs = [\"198.18.0.0/24\"]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let new = Config::parse(
            "ports = [25, 587]\nmode = \"monitor\"\n[allow]\ncidrs = [\"198.18.1.0/24\", \"2001:db8::/48\"]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let described = describe(&old, &new).join("; ");
        assert!(described.contains("ports [25] -> [25, 587]"), "{described}");
        assert!(described.contains("mode enforce -> monitor"), "{described}");
        assert!(
            described.contains(
                "allow list 1 -> 2 entries (+2: 198.18.1.0/24, 2001:db8::/48, -1: 198.18.0.0/24)"
            ),
            "{described}"
        );
        assert!(describe(&old, &old).is_empty());
    }
}
