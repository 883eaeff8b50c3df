//! Namespaces and veth pairs.

use super::*;

/// A network namespace made with `ip netns add`, loopback up. Dropping it stops whatever still runs
/// inside and deletes it, which deletes its veths (and so their peers) too.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `p25t-<pid>-<tag>`, deleting first a stale namespace of that name.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        delete_netns(&name);
        if let Err(err) = run(Command::new(tool("ip")).args(["netns", "add", &name])) {
            panic!("cannot create network namespace {name}: {err}");
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add the program's arguments, then spawn or run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n NAME ARGS...`, panicking with ip's error.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new(tool("ip")).args(["-n", &self.name]).args(args))
            .unwrap_or_else(|err| panic!("in namespace {}: {err}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Stops every process still in the namespace (a namespace with processes outlives `ip netns del`,
/// and so would its addresses), then deletes it. Best effort: warns and goes on.
pub(super) fn delete_netns(name: &str) {
    if !netns_exists(name) {
        return;
    }
    let pids = || -> Vec<u32> {
        run(Command::new(tool("ip")).args(["netns", "pids", name]))
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let left = pids();
        if left.is_empty() {
            break;
        }
        for pid in &left {
            eprintln!("lab: stopping process {pid} left in {name} (signal {signal})");
            send_signal(*pid, signal);
        }
        poll(Duration::from_secs(3), || pids().is_empty().then_some(()));
    }
    if let Err(err) = run(Command::new(tool("ip")).args(["netns", "del", name])) {
        eprintln!("lab: warning: cannot delete namespace {name}: {err}");
    }
}

/// One end of a veth pair: its namespace, its interface name there and its addresses (with prefix
/// length). Only documentation ranges: 198.18.0.0/15 and 2001:db8::/32.
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

impl<'a> VethEnd<'a> {
    /// `VethEnd::new(&gw, "gw0", "198.18.0.1/24", "2001:db8:25::1/64")`
    pub fn new(ns: &'a Netns, ifname: &'a str, v4: &str, v6: &str) -> Self {
        let v4: Ipv4Net = v4
            .parse()
            .unwrap_or_else(|err| panic!("bad IPv4 address {v4}: {err}"));
        let v6: Ipv6Net = v6
            .parse()
            .unwrap_or_else(|err| panic!("bad IPv6 address {v6}: {err}"));
        let lab_v4: Ipv4Net = "198.18.0.0/15".parse().expect("a valid CIDR");
        let lab_v6: Ipv6Net = "2001:db8::/32".parse().expect("a valid CIDR");
        assert!(
            lab_v4.contains(&v4) && lab_v6.contains(&v6),
            "lab addresses must stay in 198.18.0.0/15 and 2001:db8::/32, not {v4} / {v6}"
        );
        Self { ns, ifname, v4, v6 }
    }
}

/// Joins two namespaces by a veth pair: addresses assigned (IPv6 without duplicate address
/// detection, so it is usable at once), both links up.
pub fn veth(a: &VethEnd<'_>, b: &VethEnd<'_>) {
    a.ns.ip(&[
        "link",
        "add",
        a.ifname,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
    ]);
    for end in [a, b] {
        let (v4, v6) = (end.v4.to_string(), end.v6.to_string());
        end.ns.ip(&["addr", "add", &v4, "dev", end.ifname]);
        end.ns.ip(&["addr", "add", &v6, "dev", end.ifname, "nodad"]);
        end.ns.ip(&["link", "set", end.ifname, "up"]);
    }
}
