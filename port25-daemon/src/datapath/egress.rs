//! The egress guard's side of the datapath: the cgroup connect hooks attached to one cgroup v2
//! directory, their counters and their event ring buffer. docs/ARCHITECTURE.md, § Egress.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use port25_common::{
    egress::{self, Event},
    maps,
};

use super::{Datapath, Error, take_map};

impl Datapath {
    /// Loads the connect4 and connect6 hooks and attaches them to `cgroup` with a bpf_link each.
    /// The links live as long as the datapath: the hooks detach when it goes.
    pub fn attach_connect_hooks(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = std::fs::File::open(cgroup).map_err(|source| Error::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        for name in [egress::CONNECT4_PROGRAM, egress::CONNECT6_PROGRAM] {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(Error::MissingMap(name))?
                .try_into()
                .map_err(Error::program)?;
            program.load().map_err(Error::program)?;
            // Single is what link attach accepts; cgroup links run side by side with any other
            // program on the cgroup all the same (docs/ARCHITECTURE.md, § Egress).
            program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(Error::program)?;
        }
        tracing::info!("egress guard attached to cgroup {}", cgroup.display());
        Ok(())
    }

    /// Outbound connects by (verdict, reason), summed over CPUs.
    pub fn egress_totals(&self) -> Result<BTreeMap<(egress::Verdict, egress::Reason), u64>, Error> {
        let counters = self.per_cpu(maps::EGRESS_COUNTERS)?;
        let mut totals = BTreeMap::new();
        for slot in 0..egress::COUNTER_SLOTS {
            let Some(meaning) = egress::slot_meaning(slot) else {
                continue;
            };
            let values = counters
                .get(&slot, 0)
                .map_err(Error::map(maps::EGRESS_COUNTERS))?;
            totals.insert(meaning, values.iter().sum());
        }
        Ok(totals)
    }

    /// Events the ring buffer had no room for.
    pub fn egress_events_lost(&self) -> Result<u64, Error> {
        let lost = self.per_cpu(maps::EGRESS_EVENTS_LOST)?;
        let values = lost
            .get(&0, 0)
            .map_err(Error::map(maps::EGRESS_EVENTS_LOST))?;
        Ok(values.iter().sum())
    }

    /// The event ring buffer, for the one reader that follows it.
    pub fn take_egress_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = take_map(&mut self.ebpf, maps::EGRESS_EVENTS)?;
        RingBuf::try_from(map).map_err(Error::map(maps::EGRESS_EVENTS))
    }

    fn per_cpu(&self, name: &'static str) -> Result<PerCpuArray<&MapData, u64>, Error> {
        let map = self.ebpf.map(name).ok_or(Error::MissingMap(name))?;
        PerCpuArray::try_from(map).map_err(Error::map(name))
    }
}

/// Reads one event off the ring buffer; `None` when its size is not an [`Event`]'s.
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: `Event` is repr(C), Copy, without padding, valid for any bytes; the length is checked
    // and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}
