//! The egress guard's side of the datapath: the cgroup connect hooks attached to one cgroup v2
//! directory, and their event ring buffer. docs/ARCHITECTURE.md, § Egress.

use std::path::Path;

use aya::maps::{MapData, RingBuf};
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

    /// The event ring buffer, for the one reader that follows it.
    pub fn take_egress_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = take_map(&mut self.ebpf, maps::EGRESS_EVENTS)?;
        RingBuf::try_from(map).map_err(Error::map(maps::EGRESS_EVENTS))
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
