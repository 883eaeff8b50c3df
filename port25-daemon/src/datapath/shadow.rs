//! A shadow policy in the maps: a candidate generation written beside the live one (its own
//! settings, ports and lists slot), which the XDP program judges each new connection attempt by
//! and only counts (`SHADOW_COUNTERS`, `SHADOW_SOURCES`). docs/ARCHITECTURE.md, § Shadow policy.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use ipnet::IpNet;
use port25_common::{
    Reason, SLOTS, SourceKey, SourceState, maps,
    shadow::{self, DifferingSource},
};

use super::{
    Datapath, Error,
    policy::{LiveLists, RETIRE_GRACE, live_writes},
    sources::prefix_of,
};
use crate::{
    config::{CidrSet, Config},
    model::ListKind,
    pins::PinDir,
};

/// The shadow generation and the lists written into it.
pub(super) struct Shadow {
    pub generation: u32,
    pub lists: LiveLists,
}

/// A reason index of the shadow's counters: a [`Reason`]'s label, or `not_judged`.
pub fn side_label(index: u32) -> &'static str {
    Reason::ALL
        .get(index as usize)
        .map_or("not_judged", |reason| reason.label())
}

/// What the candidate's reason (index) does to a SYN the live policy gives its reason: newly
/// dropped, newly passed, or the same verdict; each side's mode says whether it drops at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    NewlyDropped,
    NewlyPassed,
    Same,
}

/// Which modes the two sides run in: `monitor` drops nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    pub live_monitor: bool,
    pub candidate_monitor: bool,
}

impl Effect {
    pub fn of(live: u32, candidate: u32, modes: Modes) -> Self {
        let drops = |index: u32, monitor: bool| {
            !monitor
                && Reason::ALL
                    .get(index as usize)
                    .is_some_and(|reason| reason.drops())
        };
        match (
            drops(live, modes.live_monitor),
            drops(candidate, modes.candidate_monitor),
        ) {
            (false, true) => Effect::NewlyDropped,
            (true, false) => Effect::NewlyPassed,
            _ => Effect::Same,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Effect::NewlyDropped => "newly_dropped",
            Effect::NewlyPassed => "newly_passed",
            Effect::Same => "same",
        }
    }
}

/// A source prefix the shadow judges otherwise, as the kernel sampled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DifferingRow {
    pub source: IpNet,
    pub packets: u64,
    /// ns, CLOCK_MONOTONIC.
    pub last_seen: u64,
    pub live: u32,
    pub candidate: u32,
}

/// The shadow's counters, as userspace reads them (the metrics at scrape time, `shadow status`).
pub struct ShadowTables {
    counters: PerCpuArray<MapData, u64>,
    sources: HashMap<MapData, SourceKey, DifferingSource>,
}

impl ShadowTables {
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapError> {
        let open = |name: &str| -> Result<Map, MapError> {
            Map::from_map_data(MapData::from_pin(pins.map(name))?)
        };
        Ok(Self {
            counters: PerCpuArray::try_from(open(maps::SHADOW_COUNTERS)?)?,
            sources: HashMap::try_from(open(maps::SHADOW_SOURCES)?)?,
        })
    }

    /// New connection attempts by (live reason index, candidate reason index), summed over CPUs;
    /// pairs never seen left out.
    pub fn pairs(&self) -> Vec<(u32, u32, u64)> {
        (0..shadow::PAIRS)
            .filter_map(|slot| {
                let total: u64 = self.counters.get(&slot, 0).ok()?.iter().sum();
                (total > 0).then_some((slot / shadow::SIDES, slot % shadow::SIDES, total))
            })
            .collect()
    }

    /// Every differing source prefix the kernel keeps.
    pub fn sources(&self) -> Vec<DifferingRow> {
        self.sources
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, seen)| {
                Some(DifferingRow {
                    source: prefix_of(&key)?,
                    packets: seen.packets,
                    last_seen: seen.last_seen,
                    live: seen.live,
                    candidate: seen.candidate,
                })
            })
            .collect()
    }
}

/// The first generation after `live` and `shadow` whose slot neither uses (never 0: no
/// generation).
fn next_generation(live: u32, shadow: Option<u32>) -> u32 {
    let taken = |n: u32| {
        n == 0 || n % SLOTS == live % SLOTS || shadow.is_some_and(|s| n % SLOTS == s % SLOTS)
    };
    let mut next = live.max(shadow.unwrap_or(0)).wrapping_add(1);
    while taken(next) {
        next = next.wrapping_add(1);
    }
    next
}

impl Datapath {
    /// The generation a new one (a reload's, a shadow's) is written as: after the live and the
    /// shadow generation, in a slot neither uses.
    pub(super) fn next_generation(&self) -> u32 {
        next_generation(self.generation, self.shadow.as_ref().map(|s| s.generation))
    }

    /// The shadow generation, if one is loaded.
    pub fn shadow_generation(&self) -> Option<u32> {
        self.shadow.as_ref().map(|s| s.generation)
    }

    /// The lists the shadow holds: (allow, deny).
    pub fn shadow_lists(&self) -> Option<(&CidrSet, &CidrSet)> {
        self.shadow
            .as_ref()
            .map(|s| (&s.lists.allow, &s.lists.deny))
    }

    /// Loads `config` with `allow` and `deny` as the shadow, replacing one loaded before: written
    /// beside the live generation, its counters and buckets zeroed, then one write of `SHADOW`
    /// has the program judge by it. On error nothing of it stays and the earlier shadow (if any)
    /// goes on.
    pub fn load_shadow(
        &mut self,
        config: &Config,
        allow: CidrSet,
        deny: CidrSet,
    ) -> Result<(), Error> {
        let next = self.next_generation();
        let smart_hosts = &config.egress.smart_hosts;
        let prefilter = match self.write_generation(next, config, &allow, &deny) {
            Ok(prefilter) => prefilter,
            Err(err) => {
                self.remove_generation(next, &allow, &deny, smart_hosts);
                return Err(err);
            }
        };
        self.set_shadow(0)?;
        self.reset_shadow_counts()?;
        self.set_shadow(next)?;
        let lists = LiveLists {
            allow,
            deny,
            smart_hosts: smart_hosts.clone(),
            prefilter,
        };
        if let Some(old) = self.shadow.replace(Shadow {
            generation: next,
            lists,
        }) {
            std::thread::sleep(RETIRE_GRACE);
            self.remove_shadow_generation(&old);
        }
        Ok(())
    }

    /// Stops judging by the shadow and removes it; whether there was one.
    pub fn drop_shadow(&mut self) -> Result<bool, Error> {
        let Some(old) = self.shadow.take() else {
            return Ok(false);
        };
        self.set_shadow(0)?;
        std::thread::sleep(RETIRE_GRACE);
        self.remove_shadow_generation(&old);
        self.reset_shadow_counts()?;
        Ok(true)
    }

    /// Adds or removes one entry of the shadow's lists in place (a runtime entry, CrowdSec's), as
    /// [`Datapath::insert_live`] does for the live generation.
    pub fn change_shadow(
        &mut self,
        list: ListKind,
        net: IpNet,
        present: bool,
    ) -> Result<(), Error> {
        let Some(shadow) = self.shadow.as_mut() else {
            return Ok(());
        };
        let set = shadow.lists.list_mut(list);
        if present {
            set.insert(net);
        } else {
            set.remove(&net);
        }
        let writes = live_writes(&mut shadow.lists, &net);
        let generation = shadow.generation;
        self.write_in_place(generation, &writes)
    }

    fn set_shadow(&mut self, generation: u32) -> Result<(), Error> {
        self.array::<u32>(maps::SHADOW)?
            .set(0, generation, 0)
            .map_err(Error::map(maps::SHADOW))
    }

    fn remove_shadow_generation(&mut self, old: &Shadow) {
        let lists = &old.lists;
        self.remove_generation(
            old.generation,
            &lists.allow,
            &lists.deny,
            &lists.smart_hosts,
        );
    }

    fn remove_generation(
        &mut self,
        generation: u32,
        allow: &CidrSet,
        deny: &CidrSet,
        smart_hosts: &CidrSet,
    ) {
        self.remove_lists(generation, allow, deny);
        self.remove_blocks(|g| g == generation);
        self.remove_smart_hosts(generation, smart_hosts);
    }

    /// Zeroes the shadow's counters and empties its samples and buckets: a shadow loaded anew
    /// counts from its load.
    fn reset_shadow_counts(&mut self) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, err)| Error::Cpus(err))?;
        let name = maps::SHADOW_COUNTERS;
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).map_err(Error::map(name))?;
        for slot in 0..shadow::PAIRS {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(Error::Cpus)?;
            counters.set(slot, zeros, 0).map_err(Error::map(name))?;
        }
        clear::<DifferingSource>(self, maps::SHADOW_SOURCES)?;
        clear::<SourceState>(self, maps::SHADOW_BUCKETS)?;
        self.array::<u64>(maps::SHADOW_GLOBAL)?
            .set(0, 0, 0)
            .map_err(Error::map(maps::SHADOW_GLOBAL))
    }
}

/// Empties a hash map keyed by source prefix.
fn clear<V: aya::Pod>(datapath: &mut Datapath, name: &'static str) -> Result<(), Error> {
    let map = datapath.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
    let mut table: HashMap<&mut MapData, SourceKey, V> =
        HashMap::try_from(map).map_err(Error::map(name))?;
    // Collected first: deleting while walking with get_next_key would restart the walk.
    let keys: Vec<SourceKey> = table.keys().filter_map(Result::ok).collect();
    for key in &keys {
        let _ = table.remove(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_takes_a_slot_neither_the_live_nor_the_shadow_one_uses() {
        for live in [1, 2, 3, 7, u32::MAX - 1, u32::MAX] {
            for shadow in [None, Some(live.wrapping_add(1)), Some(live.wrapping_add(5))] {
                let next = next_generation(live, shadow);
                assert_ne!(next, 0);
                assert_ne!(next % SLOTS, live % SLOTS, "{live} {shadow:?} -> {next}");
                if let Some(shadow) = shadow.filter(|&s| s != 0) {
                    assert_ne!(next % SLOTS, shadow % SLOTS, "{live} {shadow} -> {next}");
                }
            }
        }
        // Without a shadow, the next number.
        assert_eq!(next_generation(4, None), 5);
        assert_eq!(next_generation(4, Some(5)), 6);
    }

    #[test]
    fn an_effect_follows_each_sides_verdict_and_mode() {
        let enforce = Modes {
            live_monitor: false,
            candidate_monitor: false,
        };
        let (admitted, denylisted) = (Reason::Admitted as u32, Reason::Denylisted as u32);
        assert_eq!(
            Effect::of(admitted, denylisted, enforce),
            Effect::NewlyDropped
        );
        assert_eq!(
            Effect::of(denylisted, admitted, enforce),
            Effect::NewlyPassed
        );
        assert_eq!(
            Effect::of(denylisted, Reason::RateLimited as u32, enforce),
            Effect::Same
        );
        assert_eq!(
            Effect::of(shadow::NOT_JUDGED, denylisted, enforce),
            Effect::NewlyDropped
        );
        // A candidate in monitor mode drops nothing; a live one in monitor mode neither.
        let candidate_monitor = Modes {
            live_monitor: false,
            candidate_monitor: true,
        };
        assert_eq!(
            Effect::of(denylisted, denylisted, candidate_monitor),
            Effect::NewlyPassed
        );
        let live_monitor = Modes {
            live_monitor: true,
            candidate_monitor: false,
        };
        assert_eq!(
            Effect::of(denylisted, denylisted, live_monitor),
            Effect::NewlyDropped
        );
        assert_eq!(side_label(shadow::NOT_JUDGED), "not_judged");
        assert_eq!(side_label(Reason::SynCookie as u32), "syn_cookie");
    }
}
