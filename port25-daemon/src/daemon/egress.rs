//! The egress guard's part of the run loop: its hooks and forward interfaces kept in step with the
//! config, smart-host names resolved again, and its events followed: each refused (or would-be
//! refused) outbound connect, named with what /proc still knows of the process, logged in one line
//! and kept for `port25d egress log`. docs/ARCHITECTURE.md, § Egress.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use port25_common::egress::{Event, Verdict};
use tracing::{error, info, warn};

use crate::{
    config::{Config, Egress, cgroup2_root},
    datapath::{Datapath, parse_event},
    egress_log::SharedLog,
    model::EgressMode,
    proto::EgressEvent,
    users,
};

/// Logs and keeps each event off the ring buffer, for as long as the daemon runs.
pub(super) fn spawn_event_reader(ring: RingBuf<MapData>, log: SharedLog) {
    let mut cgroups = CgroupNames::default();
    super::readers::spawn_reader("egress events", ring, move |ring| {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let names = users::names_by_uid(&passwd);
        while let Some(item) = ring.next() {
            if let Some(event) = parse_event(&item) {
                let cgroup = cgroups.path(event.cgroup_id);
                let event = named(&event, cgroup, |uid| names.get(&uid).cloned());
                warn!("egress: {}", log.lock().push(event).describe());
            }
        }
    });
}

/// Cgroup paths by id (the inode of the directory), found by walking the cgroup2 hierarchy:
/// the process of an event may be gone by the time it is read, its cgroup usually is not.
#[derive(Default)]
struct CgroupNames {
    known: HashMap<u64, Option<String>>,
}

/// Ids remembered, found or not; past that the memory starts again.
const CGROUPS_REMEMBERED: usize = 4096;

impl CgroupNames {
    /// "/system.slice/cron.service", or "id N" when no cgroup has that id (any more).
    fn path(&mut self, id: u64) -> String {
        if !self.known.contains_key(&id) {
            if self.known.len() >= CGROUPS_REMEMBERED {
                self.known.clear();
            }
            let found = cgroup2_root()
                .ok()
                .and_then(|root| find_cgroup(&root, &root, id, 0));
            self.known.insert(id, found);
        }
        match self.known.get(&id) {
            Some(Some(path)) => path.clone(),
            _ => format!("id {id}"),
        }
    }
}

/// The directory under `dir` whose inode is `id`, as a path from `root` ("/a/b").
fn find_cgroup(root: &Path, dir: &Path, id: u64, depth: u32) -> Option<String> {
    if std::fs::metadata(dir).ok()?.ino() == id {
        return Some(format!("/{}", dir.strip_prefix(root).ok()?.display()));
    }
    if depth >= 16 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .find_map(|entry| find_cgroup(root, &entry.path(), id, depth + 1))
}

/// The event with what /proc and the user database say of its process.
fn named(event: &Event, cgroup: String, user: impl Fn(u32) -> Option<String>) -> EgressEvent {
    let pid = (event.pid_tgid >> 32) as u32;
    let uid = event.uid_gid as u32;
    let comm = String::from_utf8_lossy(&event.comm);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|exe| exe.display().to_string());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| {
            let args: Vec<String> = bytes
                .split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            args.join(" ")
        });
    let dest = match event.family {
        4 => {
            let [a, b, c, d, ..] = event.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        _ => IpAddr::V6(Ipv6Addr::from(event.addr)),
    };
    let verdict = if event.verdict == Verdict::Deny as u32 {
        Verdict::Deny
    } else {
        Verdict::WouldDeny
    };
    EgressEvent {
        seq: 0,
        time: wall_time(event.time_ns),
        pid,
        uid,
        user: user(uid),
        comm: comm.trim_end_matches('\0').to_owned(),
        exe,
        cmdline,
        cgroup,
        dest,
        port: event.port as u16,
        verdict: verdict.label().to_owned(),
        suppressed: event.suppressed,
    }
}

/// A CLOCK_MONOTONIC time (what the kernel stamps) as RFC 3339 wall-clock time.
fn wall_time(monotonic_ns: u64) -> String {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0;
    let now_ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0);
    let age = std::time::Duration::from_nanos(if ok {
        now_ns.saturating_sub(monotonic_ns)
    } else {
        0
    });
    let at = std::time::SystemTime::now()
        .checked_sub(age)
        .unwrap_or_else(std::time::SystemTime::now);
    humantime::format_rfc3339_millis(at).to_string()
}

impl super::Daemon {
    /// Resolves the smart hosts' names again every `egress.refresh` seconds; a change is a new
    /// policy generation, as for a reload.
    pub(super) fn refresh_smart_hosts(&mut self) {
        let egress = &self.config.egress;
        if egress.smart_host_names.is_empty()
            || self.resolved.elapsed() < Duration::from_secs(u64::from(egress.refresh))
        {
            return;
        }
        self.resolved = Instant::now();
        let Some(refreshed) = tokio::task::block_in_place(|| egress.refreshed()) else {
            return;
        };
        let mut next = self.config.clone();
        next.egress = refreshed;
        let (allow, deny) = self.effective_lists(&next);
        if let Err(err) = self.datapath.apply_policy(&next, allow, deny) {
            error!("writing the smart hosts' new addresses into the kernel: {err:#}");
            return;
        }
        for host in &next.egress.smart_host_names {
            info!(
                "egress: smart host {} now resolves to {:?}",
                host.name, host.addrs
            );
        }
        self.config = next;
    }
}

/// Where the XDP program goes: the protected interfaces, and the egress guard's forward
/// interfaces (judged for forwarded SYNs only, unless protected too).
pub(super) fn xdp_interfaces(config: &Config) -> impl Iterator<Item = &String> {
    let forward = match config.egress.mode {
        EgressMode::Off => &[][..],
        _ => &config.egress.forward_interfaces[..],
    };
    let extra = forward
        .iter()
        .filter(|name| !config.interfaces.contains(name));
    config.interfaces.iter().chain(extra)
}

/// The forward-only XDP interfaces a reload from `old` to `new` detaches and attaches.
pub(super) fn forward_changes(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let forward_only = |config: &Config| -> Vec<String> {
        xdp_interfaces(config)
            .filter(|name| !config.interfaces.contains(name))
            .cloned()
            .collect()
    };
    let (before, after) = (forward_only(old), forward_only(new));
    let gone = before
        .iter()
        .filter(|n| !after.contains(n))
        .cloned()
        .collect();
    let added = after
        .iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect();
    (gone, added)
}

/// Attaches the egress guard's hooks where `egress` says, or detaches them (those a killed daemon
/// left too) when it is off. A failed move to another cgroup puts them back where they were.
pub(super) fn sync_hooks(datapath: &mut Datapath, egress: &Egress) -> anyhow::Result<()> {
    if egress.mode == EgressMode::Off {
        datapath.detach_connect_hooks();
        return Ok(());
    }
    let before = datapath.hooks().map(|hooks| hooks.cgroup.clone());
    let Err(err) = datapath.attach_connect_hooks(&egress.cgroup) else {
        return Ok(());
    };
    if let Some(before) = before
        && let Err(again) = datapath.attach_connect_hooks(&before)
    {
        error!(
            "the egress guard cannot go back to cgroup {} either ({again:#}): it is NOT attached",
            before.display()
        );
    }
    Err(err.into())
}
