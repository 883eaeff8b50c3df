//! The datapath's side of libxdp's dispatchers (`xdp_coexist = "libxdp"`): joining one in place of
//! an exclusive link or a previous daemon's component, leaving them, and finding port25 in them
//! when no daemon runs. The protocol itself is in [`super::super::libxdp`].

use std::time::Instant;

use super::{attach_mode, detach_pinned_link, ifname};
use crate::datapath::{
    Datapath, Error, component_mut,
    libxdp::{self, Refusal},
    occupant::xdp_occupant,
    xdp_mut,
};
use crate::model::{XdpMode, XdpModeSetting};

impl Datapath {
    /// Puts the filter into the interface's libxdp dispatcher, in place of a previous daemon's
    /// component; a link of port25's own from a start in exclusive mode goes first (the kernel
    /// runs one program on the interface: the gap until the dispatcher is there is logged).
    pub(super) fn join_dispatcher(
        &mut self,
        iface: &str,
        ifindex: u32,
        wanted: XdpModeSetting,
    ) -> Result<(XdpMode, bool), Error> {
        let exclusive = self.pins.find_xdp_link(iface);
        let unfiltered_since = match &exclusive {
            Some((old_mode, path)) => {
                detach_pinned_link(path).map_err(|source| Error::ModeSwitch {
                    iface: iface.to_owned(),
                    old_mode: *old_mode,
                    path: path.clone(),
                    source,
                })?;
                let _ = std::fs::remove_file(path);
                Some(Instant::now())
            }
            None => None,
        };
        let joined = libxdp::join(ifindex, wanted, component_mut(&mut self.ebpf)?);
        let joined = match joined {
            Ok(joined) => joined,
            Err(refusal) => {
                if let Some((old_mode, path)) = exclusive {
                    // Back on a link of its own, as before: filtered, and the error said.
                    match attach_mode(xdp_mut(&mut self.ebpf)?, iface, ifindex, old_mode) {
                        Ok(link) => self.hold(link, path)?,
                        Err(err) => tracing::error!(
                            "{iface}: cannot re-attach in {old_mode} mode either ({err}); the \
                             interface is NOT filtered"
                        ),
                    }
                }
                return Err(match refusal {
                    Refusal::Occupied(occupant) => Error::Occupied {
                        iface: iface.to_owned(),
                        occupant,
                    },
                    Refusal::Failed(reason) => Error::Dispatcher {
                        iface: iface.to_owned(),
                        reason,
                    },
                });
            }
        };
        let beside = if joined.beside.is_empty() {
            "alone so far".to_owned()
        } else {
            format!("beside {}", joined.beside.join(", "))
        };
        tracing::info!(
            "{iface}: in libxdp's dispatcher in {} mode (run priority {}), {beside}{}",
            joined.mode,
            libxdp::RUN_PRIO,
            if joined.replaced {
                "; the previous daemon's component was replaced atomically"
            } else {
                ""
            }
        );
        if let Some(since) = unfiltered_since {
            tracing::warn!(
                "{iface}: moved from port25's own link into libxdp's dispatcher; the interface was \
                 unfiltered for {:?} in between",
                since.elapsed()
            );
        }
        Ok((joined.mode, joined.replaced))
    }

    /// The kernel id of the filter's component program, once loaded into a dispatcher.
    pub(super) fn component_id(&self) -> Option<u32> {
        let program: &aya::programs::Extension = self
            .ebpf
            .program(port25_common::COMPONENT_PROGRAM_NAME)?
            .try_into()
            .ok()?;
        program.info().ok().map(|info| info.id())
    }

    /// Takes the filter out of the dispatchers it is in (`on_exit = "detach"`).
    pub(in crate::datapath) fn leave_dispatchers_attached(&self) {
        for attachment in self.attachments.iter().filter(|a| a.in_dispatcher) {
            leave_dispatcher(&attachment.iface, attachment.ifindex);
        }
    }
}

/// Takes port25's component out of the libxdp dispatcher on `ifindex`, saying so.
pub(super) fn leave_dispatcher(iface: &str, ifindex: u32) {
    match leave_said(iface, ifindex) {
        Ok(done) => tracing::info!("{done}"),
        Err(problem) => tracing::warn!("{problem:#}"),
    }
}

/// [`libxdp::leave`]: what was done, in words, or what went wrong.
fn leave_said(name: &str, ifindex: u32) -> anyhow::Result<String> {
    match libxdp::leave(ifindex) {
        Ok(()) => Ok(format!("took port25 out of libxdp's dispatcher on {name}")),
        Err(Refusal::Occupied(occupant)) => {
            Ok(format!("{name} runs {occupant}; port25 is not in it"))
        }
        Err(Refusal::Failed(reason)) => Err(reason.context(format!(
            "{name}: cannot take port25 out of libxdp's dispatcher"
        ))),
    }
}

/// The interfaces whose libxdp dispatcher pins hold port25's component, with the dispatcher's
/// mode: where the filter runs in `xdp_coexist = "libxdp"` when no daemon says so (`audit`).
pub fn in_dispatchers() -> Vec<(String, XdpMode)> {
    libxdp::interfaces_with_port25()
        .into_iter()
        .filter_map(|ifindex| {
            let occupant = xdp_occupant(ifindex).ok().flatten()?;
            Some((ifname(ifindex)?, XdpMode::named(occupant.mode)?))
        })
        .collect()
}

/// Takes port25's component out of every libxdp dispatcher pinned in this network namespace's
/// view of the BPF filesystem (`port25d detach` without a running daemon). Returns what was done,
/// a line each, and the problems.
pub fn leave_dispatchers() -> (Vec<String>, Vec<String>) {
    let (mut done, mut problems) = (Vec::new(), Vec::new());
    for ifindex in libxdp::interfaces_with_port25() {
        let name = ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        match leave_said(&name, ifindex) {
            Ok(line) => done.push(line),
            Err(problem) => problems.push(format!("{problem:#}")),
        }
    }
    (done, problems)
}

#[cfg(feature = "testing")]
impl Datapath {
    /// Puts the filter into slot `slot` ("prog0" … "prog9") of a dispatcher the caller loaded:
    /// loaded as an extension program of `dispatcher`, sharing this datapath's maps, and attached
    /// there (a freplace link the datapath keeps). For tests of the component itself; the daemon
    /// goes through libxdp's protocol (`attach` with [`XdpCoexist::Libxdp`]).
    pub fn put_in_slot(
        &mut self,
        dispatcher: aya::programs::ProgramFd,
        slot: &str,
    ) -> Result<(), Error> {
        let program = component_mut(&mut self.ebpf)?;
        program.load(dispatcher, slot).map_err(Error::program)?;
        program.attach().map_err(Error::program)?;
        Ok(())
    }
}
