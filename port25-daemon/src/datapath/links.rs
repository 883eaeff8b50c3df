//! Attaching the programs to interfaces through pinned BPF links, and taking over the links a
//! previous daemon pinned: its program is swapped for ours atomically (`bpf_link_update`), so the
//! interface is never without a filter, not even during an upgrade.

use std::path::PathBuf;

use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc,
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::{Datapath, Error, egress_mut, xdp_mut};
use crate::config::XdpModeSetting;

/// Where a program is attached, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// "native" or "skb".
    pub mode: &'static str,
    /// Whether the TC egress program watches the gateway's SYN-ACKs here (handshake verification).
    pub watches_egress: bool,
    /// Whether an existing pinned link was taken over (rather than a new one made).
    pub adopted: bool,
}

/// A link this daemon holds, with its pin.
pub(super) struct HeldLink {
    path: PathBuf,
    link: FdLink,
}

impl HeldLink {
    /// Removes the pin and closes the link: the kernel detaches the program.
    pub(super) fn release(self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing pin {}: {err}", self.path.display());
        }
        drop(self.link);
    }
}

impl Datapath {
    /// Attaches to `iface`, or takes over the link a previous daemon pinned there. `auto` tries
    /// native (driver) XDP and falls back to generic (skb) XDP.
    pub fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<&Attachment, Error> {
        let ifindex = ifindex(iface).ok_or_else(|| Error::UnknownInterface(iface.to_owned()))?;
        let (mode_used, adopted) = self.attach_xdp(iface, ifindex, mode)?;
        let watches_egress = match self.attach_egress(iface) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(
                    "{iface}: cannot watch egress SYN-ACKs ({err:#}); handshake verification is off \
                     there, so every new connection from it counts against the global cap"
                );
                false
            }
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: mode_used,
            watches_egress,
            adopted,
        });
        Ok(&self.attachments[self.attachments.len() - 1])
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        wanted: XdpModeSetting,
    ) -> Result<(&'static str, bool), Error> {
        let previous = self.pins.find_xdp_link(iface);
        if let Some((pinned_mode, path)) = &previous {
            let compatible = match wanted {
                XdpModeSetting::Auto => true,
                XdpModeSetting::Native => pinned_mode == "native",
                XdpModeSetting::Skb => pinned_mode == "skb",
            };
            if compatible {
                let mode = if pinned_mode == "native" {
                    "native"
                } else {
                    "skb"
                };
                match self.take_over_xdp(path) {
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
        }
        // A new link. If one of the other mode is pinned (the configured mode changed), the new
        // one goes first (native and generic XDP can be attached at once) and the old one after,
        // so the interface is filtered throughout.
        let program = xdp_mut(&mut self.ebpf)?;
        let (mode, link) = match wanted {
            XdpModeSetting::Native => (
                "native",
                attach_mode(program, iface, ifindex, XdpMode::Driver)?,
            ),
            XdpModeSetting::Skb => ("skb", attach_mode(program, iface, ifindex, XdpMode::Skb)?),
            XdpModeSetting::Auto => match attach_mode(program, iface, ifindex, XdpMode::Driver) {
                Ok(link) => ("native", link),
                Err(err) => {
                    tracing::warn!("{err:#}; falling back to skb (generic) XDP");
                    ("skb", attach_mode(program, iface, ifindex, XdpMode::Skb)?)
                }
            },
        };
        let path = self.pins.xdp_link(mode, iface);
        self.hold(link, path)?;
        if let Some((old_mode, old_path)) = previous
            && old_path != self.pins.xdp_link(mode, iface)
        {
            tracing::info!(
                "{iface}: XDP mode changed from {old_mode} to {mode}; releasing the old link"
            );
            release_pinned(&old_path);
        }
        Ok((mode, false))
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

    /// Attaches the egress watcher (TCX on kernels >= 6.6, else a clsact qdisc filter), taking
    /// over a pinned one.
    fn attach_egress(&mut self, iface: &str) -> Result<(), Error> {
        let path = self.pins.egress_link(iface);
        if path.exists() {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| Error::Pin(e.into()))?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| Error::Pin(e.into()))?;
            let program = egress_mut(&mut self.ebpf)?;
            let id = program.attach_to_link(link).map_err(Error::program)?;
            let link = program.take_link(id).map_err(Error::program)?;
            let link = FdLink::try_from(link).map_err(|e| Error::Pin(e.into()))?;
            self.links.push(HeldLink { path, link });
            return Ok(());
        }
        // Older kernels need the clsact qdisc; it may exist already, which is fine.
        let _ = tc::qdisc_add_clsact(iface);
        let program: &mut SchedClassifier = egress_mut(&mut self.ebpf)?;
        let id = program
            .attach(iface, TcAttachType::Egress)
            .map_err(Error::program)?;
        let link = program.take_link(id).map_err(Error::program)?;
        match FdLink::try_from(link) {
            Ok(link) => self.hold_fd(link, path),
            // Netlink-attached (kernels before 6.6): works, but cannot be pinned, so it goes with
            // the daemon.
            Err(_) => {
                tracing::warn!(
                    "{iface}: egress watcher attached without a link; it will not survive a restart"
                );
                Ok(())
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
        if path.exists() {
            // A pin of a link no longer attached (e.g. its interface was re-created).
            let _ = std::fs::remove_file(&path);
        }
        let pinned = link
            .pin(&path)
            .map_err(|e| Error::Pin(anyhow::anyhow!("pinning {}: {e}", path.display())))?;
        let link = FdLink::from(pinned);
        self.links.push(HeldLink { path, link });
        Ok(())
    }
}

/// Removes a link's pin; with no other holder the kernel detaches its program.
pub(crate) fn release_pinned(path: &PathBuf) {
    match PinnedLink::from_pin(path) {
        Ok(pinned) => match pinned.unpin() {
            Ok(link) => drop(link),
            Err(err) => tracing::warn!("unpinning {}: {err}", path.display()),
        },
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn attach_mode(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<XdpLink, Error> {
    let (name, hint) = match mode {
        XdpMode::Skb => (
            "skb",
            "generic XDP should work on any interface: check that no other XDP program is attached (`ip link show`)",
        ),
        _ => (
            "native",
            "the driver may lack XDP support: try --xdp-mode skb (or auto, which falls back to it)",
        ),
    };
    let id = program
        .attach_to_if_index(ifindex, mode)
        .map_err(|source| Error::Attach {
            iface: iface.to_owned(),
            mode: name,
            hint,
            source: Box::new(source),
        })?;
    program.take_link(id).map_err(Error::program)
}

/// The interface index of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
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
