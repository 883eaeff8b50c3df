//! Following the egress guard's events: each refused (or would-be refused) outbound connect,
//! named with what /proc still knows of the process, one log line each. docs/ARCHITECTURE.md,
//! § Egress.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use port25_common::egress::{Event, Verdict};
use tracing::warn;

use crate::datapath::parse_event;
use crate::users;

/// Logs each event off the ring buffer, for as long as the daemon runs.
pub(super) fn spawn_event_reader(ring: RingBuf<MapData>) {
    super::spawn_reader("egress events", ring, |ring| {
        while let Some(item) = ring.next() {
            if let Some(event) = parse_event(&item) {
                warn!("{}", describe(&event));
            }
        }
    });
}

/// "refused outbound connect to 198.18.0.3:25: swaks (pid 42, uid 0 root, /usr/bin/perl
/// "swaks --to …", cgroup /system.slice/cron.service)".
fn describe(event: &Event) -> String {
    let pid = (event.pid_tgid >> 32) as u32;
    let uid = event.uid_gid as u32;
    let comm = String::from_utf8_lossy(&event.comm);
    let comm = comm.trim_end_matches('\0');
    let user = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| users::names_by_uid(&text).remove(&uid))
        .map(|name| format!(" {name}"))
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|exe| format!(", {}", exe.display()))
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| {
            let args: Vec<String> = bytes
                .split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            format!(" {:?}", args.join(" "))
        })
        .unwrap_or_default();
    // `0::/path` in cgroup v2; the id is all that is left once the process has gone.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_else(|| format!("id {}", event.cgroup_id));
    let dest = match event.family {
        4 => {
            let [a, b, c, d, ..] = event.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        _ => IpAddr::V6(Ipv6Addr::from(event.addr)),
    };
    let what = if event.verdict == Verdict::Deny as u32 {
        "refused"
    } else {
        "would refuse (monitor mode)"
    };
    let dest = std::net::SocketAddr::new(dest, event.port as u16);
    let suppressed = match event.suppressed {
        0 => String::new(),
        n => format!("; {n} more from it since the last event"),
    };
    format!(
        "egress: {what} outbound connect to {dest}: {comm} (pid {pid}, uid {uid}{user}{exe}{cmdline}, cgroup {cgroup}){suppressed}"
    )
}
