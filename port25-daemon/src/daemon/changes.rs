//! What a reload changed, in words for the log: every policy change is logged with what changed.

use std::net::SocketAddr;

use crate::{
    config::{CidrSet, Config, cgroup_display},
    model::{ListKind, XdpCoexist, XdpModeSetting},
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
    let (a, b) = (&old.ratelimit, &new.ratelimit);
    for (key, before, after) in [
        ("syn_rate", a.syn_rate, b.syn_rate),
        ("syn_burst", a.syn_burst, b.syn_burst),
        ("ipv4_prefix", a.ipv4_prefix.into(), b.ipv4_prefix.into()),
        ("ipv6_prefix", a.ipv6_prefix.into(), b.ipv6_prefix.into()),
        ("global_syn_rate", a.global_syn_rate, b.global_syn_rate),
        ("global_syn_burst", a.global_syn_burst, b.global_syn_burst),
        ("verified_ttl", a.verified_ttl, b.verified_ttl),
    ] {
        if before != after {
            out.push(format!("ratelimit.{key} {before} -> {after}"));
        }
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
            cgroup_display(&before.cgroup),
            cgroup_display(&after.cgroup)
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

/// The settings a reload cannot apply, as the daemon started with them: what a reloaded config
/// is compared with (not the last reloaded one, which may have changed them without effect).
#[derive(Debug, Clone)]
pub(super) struct InEffect {
    interfaces: Vec<String>,
    xdp_mode: XdpModeSetting,
    xdp_coexist: XdpCoexist,
    tracked_sources: u32,
    metrics_listen: SocketAddr,
}

impl InEffect {
    pub(super) fn of(config: &Config) -> Self {
        Self {
            interfaces: config.interfaces.clone(),
            xdp_mode: config.xdp_mode,
            xdp_coexist: config.xdp_coexist,
            tracked_sources: config.ratelimit.tracked_sources,
            metrics_listen: config.metrics_listen,
        }
    }
}

/// Settings of `new` a reload cannot apply: they need a restart. A change reverted before the
/// restart says nothing.
pub(super) fn needs_restart(in_effect: &InEffect, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if in_effect.interfaces != new.interfaces {
        changed.push(format!(
            "interfaces [{}] -> [{}]",
            in_effect.interfaces.join(", "),
            new.interfaces.join(", ")
        ));
    }
    if in_effect.xdp_mode != new.xdp_mode {
        changed.push(format!(
            "xdp_mode {} -> {}",
            in_effect.xdp_mode, new.xdp_mode
        ));
    }
    if in_effect.xdp_coexist != new.xdp_coexist {
        changed.push(format!(
            "xdp_coexist {} -> {}",
            in_effect.xdp_coexist, new.xdp_coexist
        ));
    }
    if in_effect.tracked_sources != new.ratelimit.tracked_sources {
        changed.push(format!(
            "ratelimit.tracked_sources {} -> {}",
            in_effect.tracked_sources, new.ratelimit.tracked_sources
        ));
    }
    if in_effect.metrics_listen != new.metrics_listen {
        changed.push(format!(
            "[metrics] listen {} -> {}",
            in_effect.metrics_listen, new.metrics_listen
        ));
    }
    changed
        .into_iter()
        .map(|change| {
            format!(
                "{change} in {}: restart port25d to apply it (with on_exit = \"keep\" the restart \
                 leaves no gap); the rest is reloaded now",
                new.source
            )
        })
        .collect()
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
        let faster = Config::parse(
            "ports = [25]\n[allow]\ncidrs = [\"198.18.0.0/24\"]\n[ratelimit]\nsyn_rate = 5\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(describe(&old, &faster), ["ratelimit.syn_rate 20 -> 5"]);
    }

    #[test]
    fn a_restart_only_change_reverted_before_the_restart_says_nothing() {
        let started = Config::parse("interfaces = [\"lo\"]\n", Path::new("a.toml")).unwrap();
        let in_effect = InEffect::of(&started);
        let moved = Config::parse(
            "interfaces = [\"lo\"]\n[metrics]\nlisten = \"127.0.0.1:9999\"\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let said = needs_restart(&in_effect, &moved);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with(
                "[metrics] listen 127.0.0.1:9725 -> 127.0.0.1:9999 in a.toml: restart"
            ),
            "{said:?}"
        );
        // Reloaded, then put back: nothing to restart for.
        assert!(needs_restart(&in_effect, &started).is_empty());
    }
}
