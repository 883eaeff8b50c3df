//! The egress guard's part of the run loop: its hooks and forward interfaces kept in step with the
//! config, smart-host names resolved again, and its events followed: each refused (or would-be
//! refused) outbound connect, named (`egress_guard::names`), logged in one line and kept for
//! `port25d egress log` (`egress_guard::log`). docs/ARCHITECTURE.md, § Egress.

use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use port25_common::egress::Event;
use tracing::{error, info, warn};

use crate::{
    config::{Config, Egress},
    datapath::Datapath,
    egress_guard::{Namer, SharedLog},
    model::EgressMode,
};

/// Logs and keeps each event off the ring buffer, for as long as the daemon runs.
pub(super) fn spawn_event_reader(ring: RingBuf<MapData>, log: SharedLog) {
    let mut namer = Namer::default();
    super::readers::spawn_reader("egress events", ring, move |ring| {
        namer.read_users();
        while let Some(item) = ring.next() {
            if let Some(event) = Event::from_bytes(&item) {
                warn!("egress: {}", log.lock().push(namer.name(&event)).describe());
            }
        }
    });
}

impl super::Daemon {
    /// Resolves the smart hosts' names again every `egress.refresh` seconds; a change is a new
    /// policy generation, as for a reload.
    pub(super) fn refresh_smart_hosts(&mut self) {
        let egress = &self.config.egress;
        if egress.smart_host_names.is_empty()
            || self.resolved.elapsed() < Duration::from_secs(u64::from(egress.refresh))
        {
            return;
        }
        self.resolved = Instant::now();
        let Some(refreshed) = tokio::task::block_in_place(|| egress.refreshed()) else {
            return;
        };
        let mut next = self.config.clone();
        next.egress = refreshed;
        let (allow, deny) = self.effective_lists(&next);
        if let Err(err) = self.datapath.apply_policy(&next, allow, deny) {
            error!("writing the smart hosts' new addresses into the kernel: {err:#}");
            return;
        }
        for host in &next.egress.smart_host_names {
            info!(
                "egress: smart host {} now resolves to {:?}",
                host.name, host.addrs
            );
        }
        self.config = next;
    }
}

/// Where the XDP program goes: the protected interfaces, and the egress guard's forward
/// interfaces (judged for forwarded SYNs only, unless protected too).
pub(super) fn xdp_interfaces(config: &Config) -> impl Iterator<Item = &String> {
    let forward = match config.egress.mode {
        EgressMode::Off => &[][..],
        _ => &config.egress.forward_interfaces[..],
    };
    let extra = forward
        .iter()
        .filter(|name| !config.interfaces.contains(name));
    config.interfaces.iter().chain(extra)
}

/// The forward-only XDP interfaces a reload from `old` to `new` detaches and attaches.
pub(super) fn forward_changes(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let forward_only = |config: &Config| -> Vec<String> {
        xdp_interfaces(config)
            .filter(|name| !config.interfaces.contains(name))
            .cloned()
            .collect()
    };
    let (before, after) = (forward_only(old), forward_only(new));
    let gone = before
        .iter()
        .filter(|n| !after.contains(n))
        .cloned()
        .collect();
    let added = after
        .iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect();
    (gone, added)
}

/// Attaches the egress guard's hooks where `egress` says, or detaches them (those a killed daemon
/// left too) when it is off. A failed move to another cgroup puts them back where they were.
pub(super) fn sync_hooks(datapath: &mut Datapath, egress: &Egress) -> anyhow::Result<()> {
    if egress.mode == EgressMode::Off {
        datapath.detach_connect_hooks();
        return Ok(());
    }
    let before = datapath.hooks().map(|hooks| hooks.cgroup.clone());
    let Err(err) = datapath.attach_connect_hooks(&egress.cgroup) else {
        return Ok(());
    };
    if let Some(before) = before
        && let Err(again) = datapath.attach_connect_hooks(&before)
    {
        error!(
            "the egress guard cannot go back to cgroup {} either ({again:#}): it is NOT attached",
            before.display()
        );
    }
    Err(err.into())
}
