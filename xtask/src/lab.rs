//! The `cargo xtask run` lab: two network namespaces joined by a veth pair, so that port25d can be
//! tried on any machine without touching its real interfaces. Dropping the guard deletes it.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util;

pub(crate) const GW_NS: &str = "p25-run-gw";
pub(crate) const CLIENT_NS: &str = "p25-run-client";
pub(crate) const GW_IF: &str = "gw0";
pub(crate) const CLIENT_IF: &str = "cl0";
pub(crate) const GW_V4: &str = "198.18.0.1";
pub(crate) const CLIENT_V4: &str = "198.18.0.10";
pub(crate) const GW_V6: &str = "2001:db8:25::1";
pub(crate) const CLIENT_V6: &str = "2001:db8:25::10";
/// Everything of the lab daemon's own, apart from a real port25d's on this host (/run/port25,
/// /var/lib/port25, /sys/fs/bpf/port25), and removed with the lab.
pub(crate) const LAB_DIR: &str = "/run/port25-lab";
/// A BPF filesystem of the lab's own for port25d's pins. `ip netns exec` remounts /sys, hiding
/// /sys/fs/bpf from the host; a bpffs mounted outside /sys is seen from both sides.
pub(crate) const BPFFS: &str = "/run/port25-lab/bpf";
pub(crate) const PIN_DIR: &str = "/run/port25-lab/bpf/port25";
pub(crate) const STATE_DIR: &str = "/run/port25-lab/state";
pub(crate) const CONTROL_SOCKET: &str = "/run/port25-lab/control.sock";

/// The lab; deleting it on drop, on every exit path of xtask (errors, the daemon's exit, Ctrl-C).
pub(crate) struct Lab {
    _private: (),
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    util::run(Command::new("ip").args(args))
}

/// Processes still running inside namespace `name` (`ip netns pids`).
fn ns_pids(name: &str) -> Vec<libc::pid_t> {
    util::output_if_ok(Command::new("ip").args(["netns", "pids", name]))
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops what still runs in the namespace (a daemon left by a crashed xtask, an smtp-sink started by
/// hand), then deletes it. Best effort: reports and goes on.
fn delete_ns(name: &str) {
    if !ns_exists(name) {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let pids = ns_pids(name);
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            println!("lab: stopping process {pid} left in {name} (signal {signal})");
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, signal) };
        }
        for _ in 0..30 {
            if ns_pids(name).is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    if let Err(err) = ip(&["netns", "del", name]) {
        eprintln!("lab: warning: could not delete namespace {name}: {err:#}");
    }
}

impl Lab {
    /// Creates the lab, deleting first a stale one of the same names that an earlier crash left.
    pub(crate) fn create() -> Result<Lab> {
        if ns_exists(GW_NS) || ns_exists(CLIENT_NS) || Path::new(LAB_DIR).exists() {
            println!("lab: removing a stale lab from an earlier run");
            delete_ns(GW_NS);
            delete_ns(CLIENT_NS);
            remove_lab_dir();
        }
        // From here on, every exit path deletes what was made.
        let lab = Lab { _private: () };
        Self::build().context("cannot create the lab")?;
        Ok(lab)
    }

    fn build() -> Result<()> {
        ip(&["netns", "add", GW_NS])?;
        ip(&["netns", "add", CLIENT_NS])?;
        std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
        util::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
        // Both ends are made inside their namespaces: nothing ever appears in the host's namespace.
        ip(&[
            "link", "add", GW_IF, "netns", GW_NS, "type", "veth", "peer", "name", CLIENT_IF,
            "netns", CLIENT_NS,
        ])?;
        let gw_v4 = format!("{GW_V4}/24");
        let gw_v6 = format!("{GW_V6}/64");
        let cl_v4 = format!("{CLIENT_V4}/24");
        let cl_v6 = format!("{CLIENT_V6}/64");
        for (ns, dev, v4, v6) in [
            (GW_NS, GW_IF, &gw_v4, &gw_v6),
            (CLIENT_NS, CLIENT_IF, &cl_v4, &cl_v6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", v4, "dev", dev])?;
            // nodad: without it the first IPv6 connects fail while duplicate detection runs.
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        println!(
            "lab: {GW_NS} ({GW_IF} {GW_V4} {GW_V6}) <-veth-> {CLIENT_NS} ({CLIENT_IF} {CLIENT_V4} \
             {CLIENT_V6})"
        );
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        println!("lab: deleting namespaces {GW_NS} and {CLIENT_NS}");
        delete_ns(GW_NS);
        delete_ns(CLIENT_NS);
        remove_lab_dir();
    }
}

/// Unmounts the lab's bpffs (every stacked mount of it: its pins go with it), then removes the lab
/// directory: state (runtime lists), control socket.
fn remove_lab_dir() {
    while Command::new("mountpoint")
        .args(["-q", BPFFS])
        .status()
        .is_ok_and(|s| s.success())
    {
        if util::run(Command::new("umount").arg(BPFFS)).is_err() {
            break;
        }
    }
    if let Err(err) = std::fs::remove_dir_all(LAB_DIR)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("lab: warning: could not remove {LAB_DIR}: {err}");
    }
}
