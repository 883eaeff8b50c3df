//! `port25d detach`: remove the filter, asking a running daemon to stop, or removing the pins a
//! stopped or killed one left.

use std::time::Duration;

use crate::{control, datapath, netfilter, pins::PinDir, proto::Request};

pub(super) fn detach(socket: &std::path::Path, pin_dir: &std::path::Path) -> anyhow::Result<()> {
    if control::is_running(socket) {
        println!("{}", control::command(socket, &Request::Detach)?);
        // It answers first, then detaches and exits: return once it is done.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while control::is_running(socket) || socket.exists() {
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("port25d did not stop within 20 s after agreeing to detach");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("detached; port25d stopped");
        return Ok(());
    }
    // A daemon that ran policy synproxy left its nftables table (and ip6tables chain). Not a
    // reason to leave the filter attached: said, and the pins go all the same.
    if let Err(err) = netfilter::remove() {
        eprintln!("port25d detach: removing policy synproxy's netfilter rules: {err}");
    }
    // A daemon that ran with xdp_coexist = "libxdp" left its component in libxdp's dispatchers.
    let (left, problems) = datapath::leave_dispatchers();
    for line in &left {
        println!("{line}");
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "could not take port25 out of libxdp's dispatchers:\n{}",
            problems.join("\n")
        );
    }
    let pins = PinDir::existing(pin_dir);
    let links = pins.all_links();
    // Empty: what the systemd unit leaves after a stop (its bind mount point).
    let empty = std::fs::read_dir(pin_dir).map_or(true, |mut entries| entries.next().is_none());
    if links.is_empty() && empty {
        let _ = std::fs::remove_dir(pin_dir);
        if left.is_empty() {
            println!("nothing to detach: no pins in {}", pin_dir.display());
        }
        return Ok(());
    }
    for (name, _) in &links {
        println!("detaching {name}");
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
    println!("removed the filter and its pins in {}", pin_dir.display());
    Ok(())
}
