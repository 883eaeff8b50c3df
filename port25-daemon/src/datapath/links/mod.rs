//! Attaching the programs to interfaces through pinned BPF links, and taking over the links a
//! previous daemon pinned: its program is swapped for ours atomically (`bpf_link_update`), so the
//! interface is never without a filter, not even during an upgrade. The one exception is a change
//! of XDP mode (native <-> skb): the kernel never runs both on one interface, so the old link goes
//! before the new one comes, and the daemon logs how long the interface was unfiltered.

mod dispatcher;

use self::dispatcher::leave_dispatcher;
pub use self::dispatcher::{LIBXDP_RUN_PRIO, in_dispatchers, leave_dispatchers};

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::programs::{
    SchedClassifier, TcAttachType, Xdp,
    links::{FdLink, PinnedLink},
    tc,
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use bpf_plumbing::{Occupant, bpf_cmd, libxdp, occupant::xdp_occupant};
use port25_common::{LEGACY_SYNACK_WATCHER_PROGRAM_NAME, SYNACK_WATCHER_PROGRAM_NAME};

use super::{Datapath, Error, egress::Hooks, synack_watcher_mut, xdp_mut};
use crate::model::{XdpCoexist, XdpMode, XdpModeSetting};

/// Where a program is attached, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: XdpMode,
    /// Whether the SYN-ACK watcher (TC, on egress) sees the gateway's SYN-ACKs here (handshake
    /// verification).
    pub watches_synacks: bool,
    /// Whether it does through a pinned TCX link (Linux 6.6+); before that a tc filter, which
    /// cannot be pinned: each start replaces it.
    pub synack_watcher_pinned: bool,
    /// Whether an existing pinned link was taken over (rather than a new one made); in a
    /// dispatcher, whether a previous daemon's component was replaced.
    pub adopted: bool,
    /// Whether the filter is a component of libxdp's dispatcher there (`xdp_coexist =
    /// "libxdp"`), rather than on a link of its own.
    pub in_dispatcher: bool,
}

/// A link this daemon holds, with its pin.
pub(super) struct HeldLink {
    path: PathBuf,
    link: FdLink,
}

impl HeldLink {
    /// Pins `link` at `path` (replacing a stale pin there) and keeps it.
    pub(super) fn pin(link: FdLink, path: PathBuf) -> Result<Self, Error> {
        if path.exists() {
            // A pin of a link no longer attached (e.g. its interface was re-created).
            let _ = std::fs::remove_file(&path);
        }
        let pinned = link
            .pin(&path)
            .map_err(|e| Error::Pin(anyhow::anyhow!("pinning {}: {e}", path.display())))?;
        Ok(Self {
            path,
            link: FdLink::from(pinned),
        })
    }

    /// Keeps the link already pinned at `path`.
    pub(super) fn pinned(path: PathBuf) -> Result<Self, Error> {
        let pinned = PinnedLink::from_pin(&path).map_err(|e| Error::Pin(e.into()))?;
        Ok(Self {
            path,
            link: FdLink::from(pinned),
        })
    }

    /// Whether the link is still attached (to an interface or a cgroup): someone may have
    /// detached it (`bpftool link detach`), or its interface or cgroup gone. A link the kernel
    /// cannot describe counts as attached: no alarm on a failed look.
    pub(super) fn still_attached(&self) -> bool {
        // aya's FdLink lends no fd: the pin (which the daemon keeps) opens the same link.
        let Ok(link) = bpf_cmd::obj_get(&self.path) else {
            return true;
        };
        let fd = link.as_fd();
        match (bpf_cmd::link_xdp_ifindex(fd), bpf_cmd::link_cgroup_id(fd)) {
            (Ok(ifindex), Ok(cgroup)) => ifindex != 0 || cgroup != 0,
            _ => true,
        }
    }

    /// Removes the pin and closes the link: the kernel detaches the program.
    pub(super) fn release(self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing pin {}: {err}", self.path.display());
        }
        drop(self.link);
    }
}

/// A hook of port25's that is no longer attached though the daemon holds its link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostHook {
    /// The XDP filter of an interface, and what holds the interface now, if anything.
    Xdp {
        iface: String,
        occupant: Option<Occupant>,
    },
    /// The egress guard's connect hooks.
    EgressGuard,
}

impl Datapath {
    /// The hooks someone took away from under the daemon (`bpftool link detach`, an interface
    /// deleted and re-created): port 25 is open there. docs/ARCHITECTURE.md, § Beside other XDP
    /// programs.
    pub fn lost_hooks(&self) -> Vec<LostHook> {
        let component = self.component_id();
        let mut lost: Vec<LostHook> = self
            .attachments
            .iter()
            .filter(|a| {
                if a.in_dispatcher {
                    return component.is_some_and(|id| !libxdp::holds(a.ifindex, id));
                }
                let path = self.pins.xdp_link(a.mode, &a.iface);
                self.links
                    .iter()
                    .any(|link| link.path == path && !link.still_attached())
            })
            .map(|a| LostHook::Xdp {
                iface: a.iface.clone(),
                occupant: ifindex(&a.iface).and_then(|index| xdp_occupant(index).ok().flatten()),
            })
            .collect();
        if self.hooks().is_some_and(Hooks::lost) {
            lost.push(LostHook::EgressGuard);
        }
        lost
    }

    /// Attaches to `iface`, or takes over the link a previous daemon pinned there; with
    /// [`XdpCoexist::Libxdp`], joins the interface's libxdp dispatcher instead (or makes one).
    /// `auto` tries native (driver) XDP and falls back to generic (skb) XDP.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: XdpModeSetting,
        coexist: XdpCoexist,
    ) -> Result<&Attachment, Error> {
        let ifindex = ifindex(iface).ok_or_else(|| Error::UnknownInterface(iface.to_owned()))?;
        let (mode_used, adopted) = match coexist {
            XdpCoexist::Exclusive => self.attach_xdp(iface, ifindex, mode)?,
            XdpCoexist::Libxdp => self.join_dispatcher(iface, ifindex, mode)?,
        };
        // Counting works without a bucket of its own: only slower.
        let _ = self.count_in_bucket(ifindex, iface);
        let (watches_synacks, synack_watcher_pinned) = match self.attach_synack_watcher(iface) {
            Ok(pinned) => (true, pinned),
            Err(err) => {
                tracing::warn!(
                    "{iface}: cannot watch its SYN-ACKs ({err:#}); handshake verification is off \
                     there, so every new connection from it counts against the global cap"
                );
                (false, false)
            }
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: mode_used,
            watches_synacks,
            synack_watcher_pinned,
            adopted,
            in_dispatcher: coexist == XdpCoexist::Libxdp,
        });
        Ok(&self.attachments[self.attachments.len() - 1])
    }

    /// Detaches from `iface` (its XDP and TC links go, with their pins); nothing if not attached.
    pub fn detach(&mut self, iface: &str) {
        let Some(at) = self.attachments.iter().position(|a| a.iface == iface) else {
            return;
        };
        let attachment = self.attachments.remove(at);
        if attachment.in_dispatcher {
            leave_dispatcher(iface, attachment.ifindex);
        }
        if attachment.watches_synacks && !attachment.synack_watcher_pinned {
            remove_tc_filter(iface);
        }
        let paths = [
            self.pins.xdp_link(attachment.mode, iface),
            self.pins.synack_watcher_link(iface),
        ];
        let (gone, kept) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|link| paths.contains(&link.path));
        self.links = kept;
        for link in gone {
            link.release();
        }
        tracing::info!("detached from {iface}");
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        wanted: XdpModeSetting,
    ) -> Result<(XdpMode, bool), Error> {
        if let Some((mode, path)) = self.pins.find_xdp_link(iface) {
            if !mode.fits(wanted) {
                return self.switch_xdp_mode(iface, ifindex, wanted, mode, &path);
            }
            match self.take_over_xdp(&path) {
                Ok(()) => {
                    tracing::info!("{iface}: took over the pinned {mode} XDP link atomically");
                    return Ok((mode, true));
                }
                Err(err) => tracing::warn!(
                    "{iface}: cannot take over {} ({err:#}); attaching anew",
                    path.display()
                ),
            }
        }
        // Another program on the interface: the kernel would refuse with a bare EBUSY or EEXIST
        // (and `auto` would try both modes); say which program it is instead.
        if let Ok(Some(occupant)) = xdp_occupant(ifindex) {
            return Err(Error::Occupied {
                iface: iface.to_owned(),
                port25d: crate::pins::running_program(occupant.program_id).map(Box::new),
                occupant,
            });
        }
        let (mode, link) = attach_new(xdp_mut(&mut self.ebpf)?, iface, ifindex, wanted)?;
        self.hold(link, self.pins.xdp_link(mode, iface))?;
        Ok((mode, false))
    }

    /// The configured XDP mode differs from that of the link a previous daemon pinned. The kernel
    /// never runs native and generic XDP on one interface at once, so the old link is detached
    /// first and the interface is unfiltered until the new one is attached: that gap is measured
    /// and logged. If the new mode is refused, the old one is attached again before failing.
    fn switch_xdp_mode(
        &mut self,
        iface: &str,
        ifindex: u32,
        wanted: XdpModeSetting,
        old_mode: XdpMode,
        old_path: &Path,
    ) -> Result<(XdpMode, bool), Error> {
        detach_pinned_link(old_path).map_err(|source| Error::ModeSwitch {
            iface: iface.to_owned(),
            old_mode,
            path: old_path.to_path_buf(),
            source,
        })?;
        let unfiltered_since = Instant::now();
        if let Err(err) = std::fs::remove_file(old_path) {
            tracing::warn!("removing pin {}: {err}", old_path.display());
        }
        let program = xdp_mut(&mut self.ebpf)?;
        match attach_new(program, iface, ifindex, wanted) {
            Ok((mode, link)) => {
                let gap = unfiltered_since.elapsed();
                tracing::warn!(
                    "{iface}: switched XDP mode from {old_mode} to {mode}; the interface was \
                     unfiltered for {gap:?} while the old link was replaced"
                );
                self.hold(link, self.pins.xdp_link(mode, iface))?;
                Ok((mode, false))
            }
            Err(refused) => {
                match attach_mode(program, iface, ifindex, old_mode) {
                    Ok(link) => {
                        self.hold(link, old_path.to_path_buf())?;
                        tracing::warn!(
                            "{iface}: re-attached in {old_mode} mode after {:?} unfiltered; it \
                             stays filtered as before",
                            unfiltered_since.elapsed()
                        );
                    }
                    Err(err) => tracing::error!(
                        "{iface}: cannot re-attach in {old_mode} mode either ({err}); the \
                         interface is NOT filtered"
                    ),
                }
                Err(refused)
            }
        }
    }

    fn take_over_xdp(&mut self, path: &PathBuf) -> Result<(), Error> {
        let pinned = PinnedLink::from_pin(path).map_err(|e| Error::Pin(e.into()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| Error::Pin(e.into()))?;
        let program = xdp_mut(&mut self.ebpf)?;
        let id = program.attach_to_link(link).map_err(Error::program)?;
        let link = program.take_link(id).map_err(Error::program)?;
        let link = FdLink::try_from(link).map_err(|e| Error::Pin(e.into()))?;
        self.links.push(HeldLink {
            path: path.clone(),
            link,
        });
        Ok(())
    }

    /// Attaches the SYN-ACK watcher (TCX on kernels >= 6.6, else a clsact qdisc filter), taking
    /// over a pinned one. Returns whether the watcher is on a pinned link.
    fn attach_synack_watcher(&mut self, iface: &str) -> Result<bool, Error> {
        let path = self.pins.synack_watcher_link(iface);
        // A link an older port25d pinned under the old name is the same link: taken over too.
        let legacy = self.pins.legacy_synack_watcher_link(iface);
        if !path.exists() && legacy.exists() {
            std::fs::rename(&legacy, &path).map_err(|e| Error::Pin(e.into()))?;
        }
        if path.exists() {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| Error::Pin(e.into()))?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| Error::Pin(e.into()))?;
            let program = synack_watcher_mut(&mut self.ebpf)?;
            let id = program.attach_to_link(link).map_err(Error::program)?;
            let link = program.take_link(id).map_err(Error::program)?;
            let link = FdLink::try_from(link).map_err(|e| Error::Pin(e.into()))?;
            self.links.push(HeldLink { path, link });
            return Ok(true);
        }
        // Older kernels need the clsact qdisc; it may exist already, which is fine. A tc filter of
        // ours left by a daemon that was killed there goes first, or each start would add one.
        let _ = tc::qdisc_add_clsact(iface);
        remove_tc_filter(iface);
        let program: &mut SchedClassifier = synack_watcher_mut(&mut self.ebpf)?;
        let id = program
            .attach(iface, TcAttachType::Egress)
            .map_err(Error::program)?;
        let link = program.take_link(id).map_err(Error::program)?;
        match FdLink::try_from(link) {
            Ok(link) => self.hold_fd(link, path).map(|()| true),
            // A tc filter (kernels before 6.6, no TCX): it works, but cannot be pinned; the next
            // start replaces it, and detaching removes it by name.
            Err(_) => {
                tracing::info!(
                    "{iface}: SYN-ACK watcher attached as a tc filter (no TCX before Linux 6.6): \
                     not pinned, replaced at each start"
                );
                Ok(false)
            }
        }
    }

    /// Pins an XDP link and keeps it.
    fn hold(&mut self, link: XdpLink, path: PathBuf) -> Result<(), Error> {
        let link = FdLink::try_from(link).map_err(|e| {
            Error::Pin(anyhow::anyhow!(
                "the kernel attached XDP without a BPF link ({e}); port25 needs Linux >= 5.9 to keep \
                 the filter across restarts"
            ))
        })?;
        self.hold_fd(link, path)
    }

    fn hold_fd(&mut self, link: FdLink, path: PathBuf) -> Result<(), Error> {
        self.links.push(HeldLink::pin(link, path)?);
        Ok(())
    }
}

/// Removes the SYN-ACK watcher's tc filter from `iface`, if there is one (kernels before 6.6),
/// under its name and under the one an older port25d gave it.
pub(super) fn remove_tc_filter(iface: &str) {
    for name in [
        SYNACK_WATCHER_PROGRAM_NAME,
        LEGACY_SYNACK_WATCHER_PROGRAM_NAME,
    ] {
        let _ = tc::qdisc_detach_program(iface, TcAttachType::Egress, name);
    }
}

/// A new XDP link in the wanted mode; `auto` tries native (driver) XDP and falls back to generic.
fn attach_new(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    wanted: XdpModeSetting,
) -> Result<(XdpMode, XdpLink), Error> {
    let mode = match wanted {
        XdpModeSetting::Native => XdpMode::Native,
        XdpModeSetting::Skb => XdpMode::Skb,
        XdpModeSetting::Auto => match attach_mode(program, iface, ifindex, XdpMode::Native) {
            Ok(link) => return Ok((XdpMode::Native, link)),
            Err(err) => {
                tracing::warn!("{err:#}; falling back to skb (generic) XDP");
                XdpMode::Skb
            }
        },
    };
    Ok((mode, attach_mode(program, iface, ifindex, mode)?))
}

/// Detaches the program of the link pinned at `path` at once, rather than waiting for the kernel
/// to release the link after its pin goes.
pub(super) fn detach_pinned_link(path: &Path) -> std::io::Result<()> {
    let link = bpf_cmd::obj_get(path)?;
    bpf_cmd::link_detach(link.as_fd())
}

fn attach_mode(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<XdpLink, Error> {
    let hint = match mode {
        XdpMode::Skb => {
            "generic XDP should work on any interface: check that no other XDP program is attached (`ip link show`)"
        }
        XdpMode::Native => {
            "the driver may lack XDP support: try --xdp-mode skb (or auto, which falls back to it)"
        }
    };
    let id = program
        .attach_to_if_index(ifindex, mode.aya())
        .map_err(|source| Error::Attach {
            iface: iface.to_owned(),
            mode,
            hint,
            source: Box::new(source),
        })?;
    program.take_link(id).map_err(Error::program)
}

/// The interface index of `name` in this network namespace.
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The kernel ids of the links pinned in `pins`.
pub fn pinned_link_ids(pins: &crate::pins::PinDir) -> Vec<u32> {
    pins.all_links()
        .into_iter()
        .filter_map(|(_, path)| PinnedLink::from_pin(&path).ok())
        .filter_map(|pinned| FdLink::from(pinned).info().ok())
        .map(|info| info.id())
        .collect()
}

/// Waits (up to `limit`) until none of the links `ids` exists any more: the kernel releases a link
/// whose last pin went a moment later. False if one is still there (another process holds it).
pub fn wait_links_gone(ids: &[u32], limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let alive = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .any(|info| ids.contains(&info.id()));
        if !alive {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
