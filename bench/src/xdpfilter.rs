//! xdp-filter (Debian's xdp-tools), the XDP alternative a user would pick instead of port25.
//!
//! For the per-packet figures it is loaded on a veth of a namespace of its own and its program is
//! run with `bpftool prog run` (BPF_PROG_TEST_RUN, as port25's): the same kernel clock. xdp-filter
//! runs through `nsenter --net` rather than `ip netns exec`, so that its libxdp finds the host's
//! BPF filesystem. Its rules match single addresses and ports, each rule on its own: it has no
//! "port 25 AND not from these sources", no prefixes, no rate limiting.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use port25_testkit::lab::Netns;

use crate::sys;

/// xdp-filter loaded on one interface; unloaded (and its namespace deleted) on drop.
pub(crate) struct XdpFilter {
    ns: Option<Netns>,
    /// The namespace's name (for `nsenter`).
    ns_name: String,
    iface: String,
    prog_id: u32,
}

impl XdpFilter {
    /// A namespace `tag` with a veth pair; xdp-filter on its first end with `policy` ("allow":
    /// listed sources are dropped; "deny": only listed sources pass) and one `ip ADDR -m src` rule
    /// per address.
    pub(crate) fn load(tag: &str, policy: &str, sources: &[&str]) -> Result<Self> {
        let ns = Netns::new(tag);
        let iface = format!("{tag}0");
        ns.ip(&[
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{tag}1"),
        ]);
        ns.ip(&["link", "set", &iface, "up"]);
        ns.ip(&["link", "set", &format!("{tag}1"), "up"]);
        let name = ns.name().to_string();
        Self::attach(Some(ns), name, &iface, policy, sources)
    }

    /// xdp-filter on `iface` of an existing namespace (the flood lab's), which its owner deletes.
    pub(crate) fn attach_to(
        ns: &Netns,
        iface: &str,
        policy: &str,
        sources: &[&str],
    ) -> Result<Self> {
        Self::attach(None, ns.name().to_string(), iface, policy, sources)
    }

    fn attach(
        ns: Option<Netns>,
        ns_name: String,
        iface: &str,
        policy: &str,
        sources: &[&str],
    ) -> Result<Self> {
        // Built first, so that a failure half-way unloads what was loaded (Drop).
        let mut filter = Self {
            ns,
            ns_name,
            iface: iface.to_string(),
            prog_id: 0,
        };
        filter.xdp_filter(&["load", iface, "-p", policy, "-m", "native"])?;
        for source in sources {
            filter.xdp_filter(&["ip", source, "-m", "src"])?;
        }
        filter.prog_id = filter.find_prog_id()?;
        Ok(filter)
    }

    fn xdp_filter(&self, args: &[&str]) -> Result<String> {
        sys::run(sys::nsenter(&self.ns_name, "xdp-filter").args(args))
    }

    /// The id of the program attached to the interface (`ip -j link`: "xdp":{..."prog":{"id":N).
    fn find_prog_id(&self) -> Result<u32> {
        let out = sys::run(Command::new("ip").args([
            "-n",
            &self.ns_name,
            "-j",
            "link",
            "show",
            &self.iface,
        ]))?;
        let after = out
            .split_once("\"xdp\":")
            .and_then(|(_, rest)| rest.split_once("\"id\":"))
            .map(|(_, rest)| rest)
            .with_context(|| format!("no XDP program on {}: {out}", self.iface))?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().context("program id")
    }

    /// Runs xdp-filter's program `repeat` times on the frame in `file`; (action, average ns).
    pub(crate) fn test_run(&self, file: &Path, repeat: u32) -> Result<(u32, f64)> {
        let out = sys::run(
            Command::new("bpftool")
                .args(["prog", "run", "id", &self.prog_id.to_string(), "data_in"])
                .arg(file)
                .args(["repeat", &repeat.to_string()]),
        )?;
        // "Return value: 1, duration (average): 23ns"
        let value = |key: &str| -> Option<u64> {
            let rest = out.split_once(key)?.1.trim_start();
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        };
        match (value("Return value:"), value("duration (average):")) {
            (Some(action), Some(ns)) => Ok((action as u32, ns as f64)),
            _ => bail!("cannot read `bpftool prog run`: {out}"),
        }
    }

    /// xdp-filter's own drop counter (`xdp-filter status`, aggregate XDP_DROP packets).
    pub(crate) fn dropped(&self) -> Result<u64> {
        let out = self.xdp_filter(&["status"])?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("XDP_DROP"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no XDP_DROP count in `xdp-filter status`: {out}"))
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if let Err(err) = self.xdp_filter(&["unload", &self.iface]) {
            eprintln!("bench: warning: {err:#}");
        }
        // The namespace (if it is ours) goes after: Netns's own drop.
        self.ns.take();
    }
}
