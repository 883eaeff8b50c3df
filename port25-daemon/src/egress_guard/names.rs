//! Who an egress event names: the cgroup's path from its id (the process is often gone when the
//! event is read, its cgroup usually not), the user from /etc/passwd, the executable and command
//! line from /proc while the process lives.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use port25_common::egress::{Event, Verdict};

use crate::{
    config::{cgroup_name, cgroup2_root},
    proto::EgressEvent,
    users,
};

/// Names events: the user database as last read, and the cgroups found so far.
#[derive(Default)]
pub(crate) struct Namer {
    users: HashMap<u32, String>,
    cgroups: CgroupNames,
}

impl Namer {
    /// Reads /etc/passwd again (before each batch of events: users come and go).
    pub(crate) fn read_users(&mut self) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        self.users = users::names_by_uid(&passwd);
    }

    /// The event with the names of its user, process and cgroup.
    pub(crate) fn name(&mut self, event: &Event) -> EgressEvent {
        let cgroup = self.cgroups.path(event.cgroup_id);
        let user = self.users.get(&(event.uid_gid as u32)).cloned();
        named(event, cgroup, user)
    }
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
        return Some(cgroup_name(root, dir));
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
fn named(event: &Event, cgroup: String, user: Option<String>) -> EgressEvent {
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
        user,
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
