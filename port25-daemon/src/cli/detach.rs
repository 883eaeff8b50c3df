//! `port25d detach`: remove the filter, asking a running daemon to stop, or removing the pins a
//! stopped or killed one left; never the pins of a live daemon on another control socket unless
//! forced.

use super::output::outln;
use std::{path::Path, time::Duration};

use crate::{
    control::{self, Endpoint, Probe},
    datapath, netfilter,
    pins::PinDir,
    proto::Request,
};

pub(super) fn detach(daemon: &Endpoint, pin_dir: &Path, force: bool) -> anyhow::Result<()> {
    let socket = &daemon.socket;
    // Nothing is printed or touched before this: detaching is root's business.
    if !crate::users::is_root() {
        anyhow::bail!(
            "port25d detach removes BPF pins and talks to the root-only control socket: run it as root"
        );
    }
    match control::probe(socket) {
        Probe::Listening => return detach_running(daemon),
        Probe::RootOnly => anyhow::bail!(
            "the control socket {} is root-only: run this as root",
            socket.display()
        ),
        Probe::Absent => {}
    }
    let pins = PinDir::existing(pin_dir);
    let mut stopped = None;
    if let Some(owner) = pins.owner() {
        let ask = owner.control_socket.as_ref().map_or_else(
            || "stop it (`systemctl stop port25d`)".to_owned(),
            |other| {
                format!(
                    "`port25d detach --control-socket {}` asks it to detach and stop",
                    other.display()
                )
            },
        );
        if !force {
            anyhow::bail!(
                "nothing answers on {}, but {owner} is running the filter pinned in {}: {ask}; \
                 --force stops it and removes the filter",
                socket.display(),
                pin_dir.display()
            );
        }
        eprintln!("port25d detach: --force: stopping {owner} (SIGTERM)");
        stop(&pins, owner.pid)?;
        stopped = Some(owner.pid);
    }
    // A daemon that ran policy synproxy left its nftables table (and ip6tables chain). Not a
    // reason to leave the filter attached: said, and the pins go all the same.
    if let Err(err) = netfilter::remove() {
        eprintln!("port25d detach: removing policy synproxy's netfilter rules: {err}");
    }
    // A daemon that ran with xdp_coexist = "libxdp" left its component in libxdp's dispatchers.
    let (left, problems) = datapath::leave_dispatchers();
    for line in &left {
        outln!("{line}");
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "could not take port25 out of libxdp's dispatchers:\n{}",
            problems.join("\n")
        );
    }
    let links = pins.all_links();
    // Empty: what the systemd unit leaves after a stop (its bind mount point).
    let empty = std::fs::read_dir(pin_dir).map_or(true, |mut entries| entries.next().is_none());
    if links.is_empty() && empty {
        let _ = std::fs::remove_dir(pin_dir);
        match stopped {
            Some(pid) => outln!("port25d pid {pid} stopped and took its filter with it"),
            None if left.is_empty() => {
                outln!("nothing to detach: no pins in {}", pin_dir.display());
            }
            None => {}
        }
        return Ok(());
    }
    for (name, _) in &links {
        outln!("detaching {name}");
    }
    let ids = datapath::pinned_link_ids(&pins);
    let problems = pins.remove_all();
    if !problems.is_empty() {
        anyhow::bail!("could not remove everything:\n{}", problems.join("\n"));
    }
    if !datapath::wait_links_gone(&ids, Duration::from_secs(5)) {
        anyhow::bail!(
            "the pins are gone but a link is still held by another process (`bpftool link` shows which)"
        );
    }
    outln!("removed the filter and its pins in {}", pin_dir.display());
    Ok(())
}

/// Stops the daemon `pid` that owns `pins` (SIGTERM, as systemd does) and waits until it let
/// them go: whatever its `on_exit`, the pins are then a stopped daemon's.
fn stop(pins: &PinDir, pid: u32) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let err = std::io::Error::last_os_error();
        anyhow::bail!("cannot signal port25d pid {pid}: {err}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pins.owner().is_some() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("port25d pid {pid} did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Asks the daemon answering on the socket to detach and stop, and waits until it has.
fn detach_running(daemon: &Endpoint) -> anyhow::Result<()> {
    outln!("{}", control::command(daemon, &Request::Detach)?);
    // It answers first, then detaches and exits: return once it is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while control::probe(&daemon.socket) == Probe::Listening || daemon.socket.exists() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("port25d did not stop within 20 s after agreeing to detach");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    outln!("detached; port25d stopped");
    Ok(())
}
