//! The ingress counters (docs/ARCHITECTURE.md, § Maps): an attached interface counts in a bucket
//! of its own in a per-CPU array (two array reads a packet), or, when another interface holds that
//! bucket, in a per-CPU hash; reading sums both.

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues},
};
use port25_common::{COUNTER_SLOTS, Counter, CounterKey, IF_BUCKETS, maps, slot_meaning};

use super::{Error, Totals};
use crate::pins::PinDir;

/// The counter maps, shared with the metrics collector, which reads them at scrape time.
pub struct Counters {
    owners: Array<MapData, u32>,
    buckets: PerCpuArray<MapData, Counter>,
    spill: PerCpuHashMap<MapData, CounterKey, Counter>,
}

impl Counters {
    /// Takes the counter maps out of a loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingMap(name));
        Ok(Self {
            owners: Array::try_from(take(maps::COUNTER_OWNERS)?)
                .map_err(Error::map(maps::COUNTER_OWNERS))?,
            buckets: PerCpuArray::try_from(take(maps::COUNTERS)?)
                .map_err(Error::map(maps::COUNTERS))?,
            spill: PerCpuHashMap::try_from(take(maps::COUNTERS_SPILL)?)
                .map_err(Error::map(maps::COUNTERS_SPILL))?,
        })
    }

    /// Opens the counter maps a daemon pinned (for `port25d status` when no daemon answers).
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapError> {
        let open = |name| Map::from_map_data(MapData::from_pin(pins.map(name))?);
        Ok(Self {
            owners: Array::try_from(open(maps::COUNTER_OWNERS)?)?,
            buckets: PerCpuArray::try_from(open(maps::COUNTERS)?)?,
            spill: PerCpuHashMap::try_from(open(maps::COUNTERS_SPILL)?)?,
        })
    }

    /// Every count, summed over CPUs, keyed by (ifindex, verdict, reason).
    pub fn read(&self) -> Result<Totals, Error> {
        let mut totals = Totals::new();
        let mut add = |ifindex: u32, slot: u32, per_cpu: &PerCpuValues<Counter>| {
            let Some((verdict, reason)) = slot_meaning(slot) else {
                return;
            };
            let sum = totals.entry((ifindex, verdict, reason)).or_default();
            for counter in per_cpu.iter() {
                sum.packets += counter.packets;
                sum.bytes += counter.bytes;
            }
        };
        for bucket in 0..IF_BUCKETS {
            let owner = self
                .owners
                .get(&bucket, 0)
                .map_err(Error::map(maps::COUNTER_OWNERS))?;
            if owner == 0 {
                continue;
            }
            for slot in 0..COUNTER_SLOTS {
                let per_cpu = self
                    .buckets
                    .get(&(bucket * COUNTER_SLOTS + slot), 0)
                    .map_err(Error::map(maps::COUNTERS))?;
                add(owner, slot, &per_cpu);
            }
        }
        for entry in self.spill.iter() {
            let (key, per_cpu) = entry.map_err(Error::map(maps::COUNTERS_SPILL))?;
            add(key.ifindex, key.slot, &per_cpu);
        }
        // Slots an interface never used stay out, as they did when every count was a hash entry.
        totals.retain(|_, counter| counter.packets != 0);
        Ok(totals)
    }
}

/// Gives `ifindex` its bucket of `COUNTERS` when no interface holds it, zeroed first so that it
/// starts from nothing. A bucket stays its owner's for the life of the maps, so that no total ever
/// goes back; an interface whose bucket is taken counts in `COUNTERS_SPILL`. Returns whether the
/// interface has its bucket.
pub(super) fn claim_bucket(pins: &PinDir, ifindex: u32) -> Result<bool, Error> {
    // Handles of its own: the shared `Counters` only read.
    let Counters {
        mut owners,
        mut buckets,
        ..
    } = Counters::open_pinned(pins).map_err(Error::map(maps::COUNTER_OWNERS))?;
    let bucket = ifindex % IF_BUCKETS;
    let owner = owners
        .get(&bucket, 0)
        .map_err(Error::map(maps::COUNTER_OWNERS))?;
    if owner != 0 {
        return Ok(owner == ifindex);
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| Error::Cpus(err))?;
    for slot in 0..COUNTER_SLOTS {
        let zero = PerCpuValues::try_from(vec![Counter::default(); cpus]).map_err(Error::Cpus)?;
        buckets
            .set(bucket * COUNTER_SLOTS + slot, zero, 0)
            .map_err(Error::map(maps::COUNTERS))?;
    }
    owners
        .set(bucket, ifindex, 0)
        .map_err(Error::map(maps::COUNTER_OWNERS))?;
    Ok(true)
}
