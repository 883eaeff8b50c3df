//! The egress guard's side of the datapath: the cgroup connect hooks, attached to one cgroup v2
//! directory through pinned links (so a killed daemon leaves them refusing, and the next start
//! swaps its program into the same links), and their event ring buffer. docs/ARCHITECTURE.md,
//! § Egress.

use std::{
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink},
};
use bpf_plumbing::bpf_cmd;
use port25_common::{
    egress::{self, Reason, Verdict},
    maps,
};

use super::{Datapath, Error, links::HeldLink, take_map};

/// The hooks as attached: where, and whether pinned links were taken over.
pub struct Hooks {
    pub cgroup: PathBuf,
    pub adopted: bool,
    links: Vec<HeldLink>,
}

impl Hooks {
    /// Whether a hook's link was detached by someone else (or its cgroup removed).
    pub(super) fn lost(&self) -> bool {
        self.links.iter().any(|link| !link.still_attached())
    }

    pub(super) fn release(self) {
        for link in self.links {
            link.release();
        }
    }
}

const PROGRAMS: [&str; 2] = [egress::CONNECT4_PROGRAM, egress::CONNECT6_PROGRAM];

impl Datapath {
    /// Attaches the connect4 and connect6 hooks to `cgroup` with a pinned link each, or takes
    /// over the links a previous daemon pinned there (BPF_LINK_UPDATE: the cgroup is never
    /// unguarded). Hooks on another cgroup are moved. Returns the hooks as attached.
    pub fn attach_connect_hooks(&mut self, cgroup: &Path) -> Result<&Hooks, Error> {
        if self
            .hooks
            .as_ref()
            .is_some_and(|hooks| hooks.cgroup != cgroup)
        {
            self.detach_connect_hooks();
        }
        if self.hooks.is_none() {
            let hooks = self.hook(cgroup)?;
            tracing::info!(
                "egress guard {} cgroup {}",
                if hooks.adopted {
                    "took over its pinned links on"
                } else {
                    "attached to"
                },
                cgroup.display()
            );
            self.hooks = Some(hooks);
        }
        self.hooks
            .as_ref()
            .ok_or(Error::MissingMap(egress::CONNECT4_PROGRAM))
    }

    fn hook(&mut self, cgroup: &Path) -> Result<Hooks, Error> {
        let cgroup_error = |source| Error::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        };
        let dir = std::fs::File::open(cgroup).map_err(cgroup_error)?;
        let cgroup_id = dir.metadata().map_err(cgroup_error)?.ino();
        let mut hooks = Hooks {
            cgroup: cgroup.to_path_buf(),
            adopted: true,
            links: Vec::new(),
        };
        for name in PROGRAMS {
            let path = self.pins.cgroup_link(name);
            let program = connect_program(&mut self.ebpf, name)?;
            if program.fd().is_err() {
                program.load().map_err(Error::program)?;
            }
            let link = match take_over(program, &path, cgroup_id) {
                Ok(Some(link)) => Ok(link),
                Ok(None) => {
                    hooks.adopted = false;
                    attach_new(program, cgroup, &dir, path)
                }
                Err(err) => Err(err),
            };
            match link {
                Ok(link) => hooks.links.push(link),
                Err(err) => {
                    // Nothing half-done: the hook already attached goes again.
                    hooks.release();
                    return Err(err);
                }
            }
        }
        Ok(hooks)
    }

    /// Detaches the hooks, those this daemon attached and those a previous one left pinned.
    pub fn detach_connect_hooks(&mut self) {
        if let Some(hooks) = self.hooks.take() {
            tracing::info!(
                "egress guard detached from cgroup {}",
                crate::config::cgroup_display(&hooks.cgroup)
            );
            hooks.release();
        }
        for name in PROGRAMS {
            let path = self.pins.cgroup_link(name);
            if path.exists() {
                detach_left_over(&path);
            }
        }
    }

    /// The hooks, when attached.
    pub fn hooks(&self) -> Option<&Hooks> {
        self.hooks.as_ref()
    }

    pub(super) fn release_hooks(&mut self) -> Option<Hooks> {
        self.hooks.take()
    }

    /// The event ring buffer, for the one reader that follows it.
    pub fn take_egress_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = take_map(&mut self.ebpf, maps::EGRESS_EVENTS)?;
        RingBuf::try_from(map).map_err(Error::map(maps::EGRESS_EVENTS))
    }

    /// The connect counters, the forwarded-SYN counters and the lost-event counter, for the
    /// metrics collector and the status.
    pub fn take_egress_counters(&mut self) -> Result<EgressCounters, Error> {
        let mut counter = |name: &'static str| {
            let map = take_map(&mut self.ebpf, name)?;
            PerCpuArray::try_from(map).map_err(Error::map(name))
        };
        Ok(EgressCounters {
            connects: counter(maps::EGRESS_COUNTERS)?,
            forwarded: counter(maps::EGRESS_FORWARDED)?,
            lost: counter(maps::EGRESS_EVENTS_LOST)?,
        })
    }
}

/// What the egress guard counted.
pub struct EgressCounters {
    connects: PerCpuArray<MapData, u64>,
    forwarded: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
}

/// Counts by (verdict, reason), summed over CPUs; every pair, zeros too.
pub type EgressCounts = Vec<(Verdict, Reason, u64)>;

impl EgressCounters {
    /// Outbound connects to guarded ports (the cgroup hooks).
    pub fn connects(&self) -> Result<EgressCounts, Error> {
        by_slot(&self.connects, maps::EGRESS_COUNTERS)
    }

    /// Forwarded SYNs to guarded ports (XDP on `forward_interfaces`).
    pub fn forwarded(&self) -> Result<EgressCounts, Error> {
        by_slot(&self.forwarded, maps::EGRESS_FORWARDED)
    }

    /// Events the ring buffer had no room for.
    pub fn lost(&self) -> Result<u64, Error> {
        sum(&self.lost, 0, maps::EGRESS_EVENTS_LOST)
    }
}

fn by_slot(map: &PerCpuArray<MapData, u64>, name: &'static str) -> Result<EgressCounts, Error> {
    (0..egress::COUNTER_SLOTS)
        .filter_map(|slot| egress::slot_meaning(slot).map(|pair| (slot, pair)))
        .map(|(slot, (verdict, reason))| Ok((verdict, reason, sum(map, slot, name)?)))
        .collect()
}

fn sum(map: &PerCpuArray<MapData, u64>, slot: u32, name: &'static str) -> Result<u64, Error> {
    let per_cpu = map.get(&slot, 0).map_err(Error::map(name))?;
    Ok(per_cpu.iter().sum())
}

fn connect_program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingMap(name))?
        .try_into()
        .map_err(Error::program)
}

/// Swaps `program` into the link pinned at `path` when that link is on the cgroup `cgroup_id`.
/// `None` when there is nothing to take over (no pin, or a link on another cgroup, which goes).
fn take_over(
    program: &CgroupSockAddr,
    path: &Path,
    cgroup_id: u64,
) -> Result<Option<HeldLink>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let pin_error = |e: std::io::Error| Error::Pin(anyhow::anyhow!("{}: {e}", path.display()));
    let link = bpf_cmd::obj_get(path).map_err(pin_error)?;
    if bpf_cmd::link_cgroup_id(link.as_fd()).map_err(pin_error)? != cgroup_id {
        tracing::warn!(
            "{} holds the egress guard on another cgroup: moving it",
            path.display()
        );
        detach_left_over(path);
        return Ok(None);
    }
    let fd = program.fd().map_err(Error::program)?;
    bpf_cmd::link_update(link.as_fd(), fd.as_fd()).map_err(pin_error)?;
    HeldLink::pinned(path.to_path_buf()).map(Some)
}

fn attach_new(
    program: &mut CgroupSockAddr,
    cgroup: &Path,
    dir: &std::fs::File,
    path: PathBuf,
) -> Result<HeldLink, Error> {
    // Single is what link attach accepts; cgroup links run side by side with any other program on
    // the cgroup all the same (docs/ARCHITECTURE.md, § Egress).
    let id = program
        .attach(dir, CgroupAttachMode::Single)
        .map_err(|source| Error::CgroupAttach {
            path: cgroup.to_path_buf(),
            source: Box::new(source),
        })?;
    let link = program.take_link(id).map_err(Error::program)?;
    let link = FdLink::try_from(link).map_err(|e| Error::Pin(e.into()))?;
    HeldLink::pin(link, path)
}

/// Detaches and unpins a hook link this daemon does not hold.
fn detach_left_over(path: &Path) {
    if let Err(err) = super::links::detach_pinned_link(path) {
        tracing::warn!("detaching {}: {err}", path.display());
    }
    if let Err(err) = std::fs::remove_file(path) {
        tracing::warn!("removing pin {}: {err}", path.display());
    }
}
