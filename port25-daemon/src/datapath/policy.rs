//! Writing the policy into the maps, generation by generation.
//!
//! A new generation's settings, ports and list entries are written beside the live ones, then one
//! write to `ACTIVE` switches every CPU over, and only then is the old generation removed. A packet
//! reads `ACTIVE` once, so it sees the old policy or the new, never a mix. Single runtime entries
//! (`port25d deny add`) go straight into the live generation: one entry appears or goes, atomically.
//! docs/ARCHITECTURE.md, § Generations.

use std::time::Duration;

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use port25_common::{
    GENERATION_BITS, PORT_WORDS, SLOTS, Settings, V4Key, V6Key,
    egress::{self, EgressSettings},
    maps, port_bit,
};

use super::{Datapath, Error};
use crate::{
    config::{CidrSet, Config},
    model::{EgressMode, ListKind, Mode, Policy},
};

/// How long packets already in flight may keep reading the generation being retired. XDP programs
/// run to completion in microseconds; this leaves a wide margin before their entries are removed.
const RETIRE_GRACE: Duration = Duration::from_millis(20);

/// Entries written per progress line when loading large lists.
const PROGRESS_EVERY: usize = 200_000;

/// A pair of generation-keyed tries: a list's, or the smart hosts'.
#[derive(Clone, Copy)]
enum Table {
    List(ListKind),
    SmartHosts,
}

/// The IPv4 and IPv6 tries of a table.
fn tries(table: Table) -> (&'static str, &'static str) {
    match table {
        Table::List(ListKind::Allow) => (maps::ALLOW_V4, maps::ALLOW_V6),
        Table::List(ListKind::Deny) => (maps::DENY_V4, maps::DENY_V6),
        Table::SmartHosts => (maps::SMART_V4, maps::SMART_V6),
    }
}

/// The entries of the live generation.
#[derive(Clone, Debug, Default)]
pub(super) struct LiveLists {
    pub allow: CidrSet,
    pub deny: CidrSet,
    pub smart_hosts: CidrSet,
}

impl Datapath {
    /// Makes `config`'s policy (with `allow` and `deny` as its lists: the config's, or those plus
    /// runtime and watched-directory entries) live, atomically. On error the previous policy stays live
    /// and whatever was written for the new generation is removed again.
    pub fn apply_policy(
        &mut self,
        config: &Config,
        allow: &CidrSet,
        deny: &CidrSet,
    ) -> Result<(), Error> {
        if self.live.is_none() {
            // Adopted maps: whatever a killed daemon left half-written is swept first.
            self.sweep_except(self.generation)?;
        }
        let next = match self.generation.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        let smart_hosts = &config.egress.smart_hosts;
        if let Err(err) = self.write_generation(next, config, allow, deny) {
            self.remove_entries(next, Table::List(ListKind::Allow), allow);
            self.remove_entries(next, Table::List(ListKind::Deny), deny);
            self.remove_entries(next, Table::SmartHosts, smart_hosts);
            return Err(err);
        }
        self.array::<u32>(maps::ACTIVE)?
            .set(0, next, 0)
            .map_err(Error::map(maps::ACTIVE))?;
        let retired = self.generation;
        self.generation = next;
        std::thread::sleep(RETIRE_GRACE);
        match self.live.replace(LiveLists {
            allow: allow.clone(),
            deny: deny.clone(),
            smart_hosts: smart_hosts.clone(),
        }) {
            Some(old) => {
                self.remove_entries(retired, Table::List(ListKind::Allow), &old.allow);
                self.remove_entries(retired, Table::List(ListKind::Deny), &old.deny);
                self.remove_entries(retired, Table::SmartHosts, &old.smart_hosts);
            }
            None => self.sweep_except(next)?,
        }
        Ok(())
    }

    /// Adds one entry to the live generation of a list (runtime lists).
    pub fn insert_live(&mut self, list: ListKind, net: IpNet) -> Result<(), Error> {
        self.insert(self.generation, Table::List(list), &net)?;
        if let Some(set) = self.live_set(list) {
            set.insert(net);
        }
        Ok(())
    }

    /// Removes one entry from the live generation of a list (runtime lists).
    pub fn remove_live(&mut self, list: ListKind, net: IpNet) -> Result<(), Error> {
        self.remove(self.generation, Table::List(list), &net)?;
        if let Some(set) = self.live_set(list) {
            set.remove(&net);
        }
        Ok(())
    }

    /// The live generation's entries of `list`, when known.
    fn live_set(&mut self, list: ListKind) -> Option<&mut CidrSet> {
        let live = self.live.as_mut()?;
        Some(match list {
            ListKind::Allow => &mut live.allow,
            ListKind::Deny => &mut live.deny,
        })
    }

    fn write_generation(
        &mut self,
        generation: u32,
        config: &Config,
        allow: &CidrSet,
        deny: &CidrSet,
    ) -> Result<(), Error> {
        let slot = generation % SLOTS;
        self.array::<Settings>(maps::SETTINGS)?
            .set(slot, settings_of(config), 0)
            .map_err(Error::map(maps::SETTINGS))?;

        let mut words = vec![0u32; PORT_WORDS as usize];
        for &port in &config.ports {
            let (word, mask) = port_bit(port);
            words[word as usize] |= mask;
        }
        let mut ports = self.array::<u32>(maps::PORTS)?;
        for (i, word) in (0u32..).zip(words) {
            ports
                .set(slot * PORT_WORDS + i, word, 0)
                .map_err(Error::map(maps::PORTS))?;
        }

        let total = allow.len() + deny.len();
        let mut written = 0;
        for (list, set) in [(ListKind::Allow, allow), (ListKind::Deny, deny)] {
            for net in set.iter() {
                self.insert(generation, Table::List(list), &net)?;
                written += 1;
                if written % PROGRESS_EVERY == 0 {
                    tracing::info!("writing lists into the kernel: {written} of {total} entries");
                }
            }
        }
        self.array::<EgressSettings>(maps::EGRESS)?
            .set(slot, egress_settings_of(config), 0)
            .map_err(Error::map(maps::EGRESS))?;
        for net in config.egress.smart_hosts.iter() {
            self.insert(generation, Table::SmartHosts, &net)?;
        }
        Ok(())
    }

    fn insert(&mut self, generation: u32, table: Table, net: &IpNet) -> Result<(), Error> {
        let (v4, v6) = tries(table);
        match net {
            IpNet::V4(net) => self
                .trie_v4(v4)?
                .insert(&v4_key(generation, net), 1, 0)
                .map_err(Error::map(v4)),
            IpNet::V6(net) => self
                .trie_v6(v6)?
                .insert(&v6_key(generation, net), 1, 0)
                .map_err(Error::map(v6)),
        }
    }

    fn remove(&mut self, generation: u32, table: Table, net: &IpNet) -> Result<(), Error> {
        let (v4, v6) = tries(table);
        let (map, result) = match net {
            IpNet::V4(net) => (v4, self.trie_v4(v4)?.remove(&v4_key(generation, net))),
            IpNet::V6(net) => (v6, self.trie_v6(v6)?.remove(&v6_key(generation, net))),
        };
        match result {
            Ok(()) => Ok(()),
            // Already gone is what was asked.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(Error::map(map)(err)),
        }
    }

    /// Best effort: an entry that is already gone is fine.
    fn remove_entries(&mut self, generation: u32, table: Table, set: &CidrSet) {
        for net in set.iter() {
            if let Err(err) = self.remove(generation, table, &net) {
                tracing::warn!("removing {net} of generation {generation}: {err:#}");
            }
        }
    }

    /// Removes every list entry of any generation but `keep`: after adopting maps, nothing else
    /// is known about what a killed daemon left.
    fn sweep_except(&mut self, keep: u32) -> Result<(), Error> {
        let mut swept = 0;
        for name in [maps::ALLOW_V4, maps::DENY_V4, maps::SMART_V4] {
            swept += sweep(&mut self.trie_v4(name)?, keep);
        }
        for name in [maps::ALLOW_V6, maps::DENY_V6, maps::SMART_V6] {
            swept += sweep(&mut self.trie_v6(name)?, keep);
        }
        if swept > 0 {
            tracing::info!("removed {swept} list entries of earlier generations");
        }
        Ok(())
    }
}

/// Keys that carry their policy generation.
trait Generational: aya::Pod {
    fn generation(&self) -> u32;
}

impl Generational for V4Key {
    fn generation(&self) -> u32 {
        self.generation
    }
}

impl Generational for V6Key {
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Removes the entries of every generation but `keep` from one trie; returns how many.
fn sweep<K: Generational>(trie: &mut LpmTrie<&mut MapData, K, u32>, keep: u32) -> usize {
    // Collected first: deleting while walking with get_next_key would restart the walk.
    let stale: Vec<_> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.data().generation() != keep)
        .collect();
    for key in &stale {
        let _ = trie.remove(key);
    }
    stale.len()
}

fn settings_of(config: &Config) -> Settings {
    let limits = &config.ratelimit;
    let (syn_interval_ns, syn_tolerance_ns) = Settings::gcra(limits.syn_rate, limits.syn_burst);
    let (global_interval_ns, global_tolerance_ns) =
        Settings::gcra(limits.global_syn_rate, limits.global_syn_burst);
    Settings {
        monitor: u32::from(config.mode == Mode::Monitor),
        policy: match config.policy {
            Policy::Drop => Settings::POLICY_DROP,
            Policy::Ratelimit => Settings::POLICY_RATELIMIT,
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
    }
}

fn v4_key(generation: u32, net: &Ipv4Net) -> Key<V4Key> {
    let addr = net.network().octets();
    Key::new(prefix_bits(net.prefix_len()), V4Key { generation, addr })
}

fn v6_key(generation: u32, net: &Ipv6Net) -> Key<V6Key> {
    let addr = net.network().octets();
    Key::new(prefix_bits(net.prefix_len()), V6Key { generation, addr })
}

/// A list key's prefix length: the generation's bits, then the CIDR's (§ Generations).
fn prefix_bits(cidr_prefix: u8) -> u32 {
    GENERATION_BITS + u32::from(cidr_prefix)
}

/// The kernel's form of `[egress]`: counts and fixed arrays (config checked the bounds and that
/// the interfaces exist).
fn egress_settings_of(full: &Config) -> EgressSettings {
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
