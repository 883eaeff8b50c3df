//! The datapath's side of libxdp's dispatchers (`xdp_coexist = "libxdp"`): joining one in place of
//! an exclusive link or a previous daemon's component, leaving them, and finding port25 in them
//! when no daemon runs. The protocol itself is in [`bpf_plumbing::libxdp`].

use std::time::Instant;

use bpf_plumbing::{libxdp, occupant::xdp_occupant};
use port25_common::COMPONENT_PROGRAM_NAME;

use super::{attach_mode, detach_pinned_link, ifname};
use crate::datapath::{Datapath, Error, component_mut, xdp_mut};
use crate::model::{XdpMode, XdpModeSetting};

/// port25's run priority: ahead of libxdp's default and of xdp-filter's, so that a flood on
/// port 25 is dropped before anything else spends time on it.
pub const LIBXDP_RUN_PRIO: u32 = 10;
const _: () = assert!(LIBXDP_RUN_PRIO < libxdp::DEFAULT_RUN_PRIO);

/// port25's filter as a dispatcher's component.
const COMPONENT: libxdp::Component<'static> = libxdp::Component {
    name: COMPONENT_PROGRAM_NAME,
    run_prio: LIBXDP_RUN_PRIO,
};

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
        let joined = libxdp::join(
            ifindex,
            wanted.aya(),
            COMPONENT,
            component_mut(&mut self.ebpf)?,
        );
        let joined = match joined {
            Ok(joined) => joined,
            Err(reason) => {
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
                return Err(refused(iface, reason));
            }
        };
        // A dispatcher is joined in native or skb mode, never another.
        let mode = XdpMode::from_aya(joined.mode).unwrap_or(XdpMode::Native);
        let beside = if joined.beside.is_empty() {
            "alone so far".to_owned()
        } else {
            format!("beside {}", joined.beside.join(", "))
        };
        tracing::info!(
            "{iface}: in libxdp's dispatcher in {mode} mode (run priority {LIBXDP_RUN_PRIO}), \
             {beside}{}",
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
        Ok((mode, joined.replaced))
    }

    /// The kernel id of the filter's component program, once loaded into a dispatcher.
    pub(super) fn component_id(&self) -> Option<u32> {
        let program: &aya::programs::Extension =
            self.ebpf.program(COMPONENT_PROGRAM_NAME)?.try_into().ok()?;
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
        Err(problem) => tracing::warn!("{problem}"),
    }
}

/// Why the filter could not join the dispatcher on `iface`, in port25's terms.
fn refused(iface: &str, reason: bpf_plumbing::Error) -> Error {
    let hint = match &reason {
        bpf_plumbing::Error::Occupied(occupant) => {
            return Error::Occupied {
                iface: iface.to_owned(),
                port25d: crate::pins::running_program(occupant.program_id).map(Box::new),
                occupant: occupant.clone(),
            };
        }
        bpf_plumbing::Error::ModeMismatch { running, .. } => {
            let running = XdpMode::from_aya(*running).map_or("auto", XdpMode::as_str);
            format!(" (xdp_mode): set xdp_mode = \"{running}\" or \"auto\"")
        }
        err if err.is_extension_not_permitted() => ". This kernel refuses extension programs as \
            such (before verifying them; libxdp's own check fails the same way and xdp-loader \
            falls back to one program without a dispatcher): run port25 alone on the interface \
            with xdp_coexist = \"exclusive\""
            .to_owned(),
        _ => String::new(),
    };
    Error::Dispatcher {
        iface: iface.to_owned(),
        reason,
        hint,
    }
}

/// [`libxdp::leave`]: what was done, in words, or what went wrong.
fn leave_said(name: &str, ifindex: u32) -> Result<String, String> {
    match libxdp::leave(ifindex, COMPONENT_PROGRAM_NAME) {
        Ok(()) => Ok(format!("took port25 out of libxdp's dispatcher on {name}")),
        Err(bpf_plumbing::Error::Occupied(occupant)) => {
            Ok(format!("{name} runs {occupant}; port25 is not in it"))
        }
        Err(reason) => Err(format!(
            "{name}: cannot take port25 out of libxdp's dispatcher: {reason}"
        )),
    }
}

/// The interfaces whose libxdp dispatcher pins hold port25's component, with the dispatcher's
/// mode: where the filter runs in `xdp_coexist = "libxdp"` when no daemon says so (`audit`).
pub fn in_dispatchers() -> Vec<(String, XdpMode)> {
    libxdp::interfaces_holding(COMPONENT_PROGRAM_NAME)
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
    for ifindex in libxdp::interfaces_holding(COMPONENT_PROGRAM_NAME) {
        let name = ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        match leave_said(&name, ifindex) {
            Ok(line) => done.push(line),
            Err(problem) => problems.push(problem),
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

#[cfg(test)]
mod tests {
    use aya::programs::XdpMode as AyaMode;

    use super::*;

    #[test]
    fn a_refusal_says_what_to_change_in_port25_s_config() {
        let mismatch = bpf_plumbing::Error::ModeMismatch {
            running: AyaMode::Driver,
            wanted: AyaMode::Skb,
        };
        let said = refused("eth0", mismatch).to_string();
        assert!(
            said.starts_with("eth0: cannot join libxdp's dispatcher")
                && said.contains("runs in native mode and skb mode was asked for")
                && said.ends_with("set xdp_mode = \"native\" or \"auto\""),
            "{said}"
        );
        let occupant = bpf_plumbing::Occupant {
            program_id: 7,
            mode: "native",
            name: Some("other".to_owned()),
        };
        let occupied = refused("eth0", bpf_plumbing::Error::Occupied(occupant.clone()));
        assert!(matches!(occupied, Error::Occupied { occupant: o, .. } if o == occupant));
        let raced = refused("eth0", bpf_plumbing::Error::Raced { attempts: 5 }).to_string();
        assert!(
            raced.ends_with("(another tool is loading programs there)"),
            "{raced}"
        );
    }
}
