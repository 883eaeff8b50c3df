//! The kernel's form of a config: the `Settings` and `EgressSettings` of one generation (what
//! the kernel reads of them: docs/ARCHITECTURE.md, § Maps).

use port25_common::{
    Settings,
    egress::{self, EgressSettings},
};

use crate::{
    config::Config,
    model::{EgressMode, Mode, Policy},
};

/// The ingress policy of one generation.
pub(crate) fn settings_of(config: &Config) -> Settings {
    let limits = &config.ratelimit;
    let (syn_interval_ns, syn_tolerance_ns) = Settings::gcra(limits.syn_rate, limits.syn_burst);
    let (global_interval_ns, global_tolerance_ns) =
        Settings::gcra(limits.global_syn_rate, limits.global_syn_burst);
    let synproxy = &config.synproxy;
    let (synack_interval_ns, synack_tolerance_ns) =
        Settings::gcra(synproxy.synack_rate, synproxy.synack_burst);
    Settings {
        monitor: u32::from(config.mode == Mode::Monitor),
        policy: match config.policy {
            Policy::Drop => Settings::POLICY_DROP,
            Policy::Ratelimit => Settings::POLICY_RATELIMIT,
            Policy::Synproxy => Settings::POLICY_SYNPROXY,
        },
        ipv4_prefix: u32::from(limits.ipv4_prefix),
        ipv6_prefix: u32::from(limits.ipv6_prefix),
        forward_guard: u32::from(
            config.egress.mode != EgressMode::Off && !config.egress.forward_interfaces.is_empty(),
        ),
        _pad: 0,
        syn_interval_ns,
        syn_tolerance_ns,
        global_interval_ns,
        global_tolerance_ns,
        verified_ttl_ns: u64::from(limits.verified_ttl) * 1_000_000_000,
        synack_interval_ns,
        synack_tolerance_ns,
        synproxy_mss4: u32::from(synproxy.mss4),
        synproxy_mss6: u32::from(synproxy.mss6),
        synproxy_wscale: u32::from(synproxy.wscale),
        synproxy_ttl: u32::from(synproxy.ttl),
        synproxy_ipv6: u32::from(synproxy.ipv6),
        _pad_end: 0,
    }
}

/// The kernel's form of `[egress]`: counts and fixed arrays (config checked the bounds and that
/// the interfaces exist).
pub(super) fn egress_settings_of(full: &Config) -> EgressSettings {
    let config = &full.egress;
    let mut settings = EgressSettings::OFF;
    let forward = config
        .forward_interfaces
        .iter()
        .filter_map(|name| super::links::ifindex(name).map(|index| (name, index)));
    for (i, (name, index)) in forward.take(egress::MAX_FORWARD).enumerate() {
        settings.forward_ifindexes[i] = index;
        if !full.interfaces.contains(name) {
            settings.forward_only |= 1 << i;
        }
        settings.forward_count += 1;
    }
    settings.mode = match config.mode {
        EgressMode::Off => egress::MODE_OFF,
        EgressMode::Monitor => egress::MODE_MONITOR,
        EgressMode::Enforce => egress::MODE_ENFORCE,
    };
    for (slot, &port) in settings.ports.iter_mut().zip(&config.ports) {
        *slot = port;
        settings.port_count += 1;
    }
    for (slot, &uid) in settings.users.iter_mut().zip(&config.allow_users) {
        *slot = uid;
        settings.user_count += 1;
    }
    for (i, cgroup) in config
        .allow_cgroups
        .iter()
        .take(egress::MAX_CGROUPS)
        .enumerate()
    {
        settings.cgroup_ids[i] = cgroup.id;
        settings.cgroup_levels[i] = cgroup.level;
        settings.cgroup_count += 1;
    }
    settings
}
