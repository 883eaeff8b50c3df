//! What `port25d check-config` prints: the effective policy, in words.

use std::fmt;

use super::{CidrSet, Config, Crowdsec, Egress};
use crate::model::{EgressMode, ListKind, Mode, OnExit, Policy, XdpCoexist};

/// The human summary printed by `port25d check-config`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T: fmt::Display>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        let interfaces = if self.interfaces.is_empty() && self.egress.mode != EgressMode::Off {
            "(none: no XDP filter, the egress guard only)".to_string()
        } else if self.interfaces.is_empty() {
            "(none: nothing will be attached)".to_string()
        } else {
            join(&self.interfaces)
        };
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (count would-be drops, drop nothing)",
        };
        let policy = match self.policy {
            Policy::Drop => "drop (only allowlisted sources may connect)",
            Policy::Ratelimit => "ratelimit (new connections from other sources are rate limited)",
            Policy::Synproxy => {
                "synproxy (new connections from other sources are answered with SYN cookies in \
                 XDP, admitted when the client's ACK proves one)"
            }
        };
        writeln!(f, "{:<18}{}", "config", self.source)?;
        writeln!(f, "{:<18}{interfaces}", "interfaces")?;
        writeln!(f, "{:<18}{}", "xdp mode", self.xdp_mode)?;
        let coexist = match self.xdp_coexist {
            XdpCoexist::Exclusive => "exclusive (no other XDP program on the interfaces)".into(),
            XdpCoexist::Libxdp => format!(
                "libxdp (a component of libxdp's dispatcher, run priority {})",
                crate::datapath::LIBXDP_RUN_PRIO
            ),
        };
        writeln!(f, "{:<18}{coexist}", "xdp coexist")?;
        writeln!(f, "{:<18}{}", "ports", join(&self.ports))?;
        writeln!(f, "{:<18}{mode}", "mode")?;
        writeln!(f, "{:<18}{policy}", "policy")?;
        write_list(f, ListKind::Allow, &self.allow)?;
        write_list(f, ListKind::Deny, &self.deny)?;
        let r = &self.ratelimit;
        let unused = if self.policy == Policy::Drop {
            "  (unused with policy drop)"
        } else {
            ""
        };
        writeln!(f, "ratelimit{unused}")?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "per source", r.syn_rate, r.syn_burst
        )?;
        writeln!(
            f,
            "  {:<16}IPv4 /{}, IPv6 /{}",
            "source prefix", r.ipv4_prefix, r.ipv6_prefix
        )?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "global", r.global_syn_rate, r.global_syn_burst
        )?;
        writeln!(f, "  {:<16}{}", "tracked sources", r.tracked_sources)?;
        if r.verified_ttl == 0 {
            writeln!(f, "  {:<16}off", "verified")?;
        } else {
            writeln!(
                f,
                "  {:<16}{} s after a completed handshake (skips the global cap)",
                "verified", r.verified_ttl
            )?;
        }
        if self.policy == Policy::Synproxy {
            writeln!(f, "synproxy")?;
            write!(f, "{}", self.synproxy)?;
            match crate::netfilter::ruleset(self) {
                Some(rules) => {
                    writeln!(
                        f,
                        "  {:<16}port25d installs (and removes on detach), with nft -f:",
                        "netfilter"
                    )?;
                    for line in rules.nft.lines() {
                        writeln!(f, "    {line}")?;
                    }
                    if let Some(chain) = &rules.ip6tables {
                        writeln!(
                            f,
                            "    with ip6tables-legacy-restore, chain PORT25 of table mangle, \
                             jumped to first from INPUT:"
                        )?;
                        for line in chain.lines() {
                            writeln!(f, "    {line}")?;
                        }
                    }
                    let exempt = crate::netfilter::Exempt::of(&self.allow, self.synproxy.ipv6);
                    writeln!(
                        f,
                        "    fills sets allow4 and allow6 with the allow list, runtime entries \
                         too, aggregated (here {}),",
                        exempt.describe()
                    )?;
                    writeln!(
                        f,
                        "    and sets net.netfilter.nf_conntrack_tcp_loose = 0 (restored on detach)"
                    )?;
                }
                None => writeln!(
                    f,
                    "  {:<16}none installed (monitor mode, or no interfaces)",
                    "netfilter"
                )?,
            }
        }
        writeln!(f, "{:<18}http://{}/metrics", "metrics", self.metrics_listen)?;
        if !self.watched_dirs.is_empty() {
            let dirs: Vec<String> = self
                .watched_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            writeln!(
                f,
                "{:<18}{} (reloaded when their files change)",
                "watched dirs",
                dirs.join(", ")
            )?;
        }
        write_egress(f, &self.egress)?;
        write_crowdsec(f, self.crowdsec.as_ref())?;
        let on_exit = match self.on_exit {
            OnExit::Detach => "detach (SIGTERM removes the filter)",
            OnExit::Keep => "keep (the filter stays after SIGTERM; `port25d detach` removes it)",
        };
        writeln!(
            f,
            "{:<18}{}",
            "taken away",
            if self.reattach {
                "reattach (as soon as nothing else holds the interface)"
            } else {
                "stays detached until a restart (reattach = false)"
            }
        )?;
        write!(f, "{:<18}{on_exit}", "on exit")
    }
}

fn write_egress(f: &mut fmt::Formatter<'_>, egress: &Egress) -> fmt::Result {
    let mode = match egress.mode {
        EgressMode::Off => {
            return writeln!(f, "{:<18}off", "egress");
        }
        EgressMode::Monitor => "monitor (count and log, refuse nothing)",
        EgressMode::Enforce => "enforce (refuse with EPERM)",
    };
    let or_none = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let ports: Vec<String> = egress.ports.iter().map(u16::to_string).collect();
    writeln!(f, "{:<18}{mode}, TCP ports {}", "egress", ports.join(", "))?;
    writeln!(f, "  {:<16}{}", "hooks on cgroup", egress.cgroup.display())?;
    let hosts = egress.smart_host_cidrs.iter().map(ToString::to_string);
    let named = egress.smart_host_names.iter().map(|host| {
        let addrs: Vec<String> = host.addrs.iter().map(ToString::to_string).collect();
        format!("{} ({})", host.name, addrs.join(", "))
    });
    writeln!(
        f,
        "  {:<16}{}",
        "smart hosts",
        or_none(hosts.chain(named).collect())
    )?;
    let users = egress.allow_users.iter().map(|uid| format!("uid {uid}"));
    writeln!(f, "  {:<16}{}", "allowed users", or_none(users.collect()))?;
    let cgroups = egress.allow_cgroups.iter().map(|c| c.path.clone());
    writeln!(
        f,
        "  {:<16}{}",
        "allowed cgroups",
        or_none(cgroups.collect())
    )?;
    writeln!(
        f,
        "  {:<16}{}",
        "forwarded SYNs",
        if egress.forward_interfaces.is_empty() {
            "not guarded (no forward_interfaces)".to_owned()
        } else {
            format!("guarded on {}", egress.forward_interfaces.join(", "))
        }
    )?;
    writeln!(f, "  {:<16}every {} s", "names resolved", egress.refresh)
}

fn write_crowdsec(f: &mut fmt::Formatter<'_>, crowdsec: Option<&Crowdsec>) -> fmt::Result {
    let Some(cs) = crowdsec else {
        return writeln!(f, "{:<18}off", "crowdsec");
    };
    writeln!(
        f,
        "{:<18}bouncer of {} every {} s (key read)",
        "crowdsec", cs.lapi_url, cs.update_frequency
    )?;
    let origins = if cs.origins.is_empty() {
        "all".to_owned()
    } else {
        cs.origins.join(", ")
    };
    writeln!(
        f,
        "  {:<16}types {}; scopes {}; origins {origins}",
        "decisions",
        cs.decision_types.join(", "),
        cs.scopes.join(", ")
    )?;
    match &cs.reporter {
        None => writeln!(f, "  {:<16}off", "reporter"),
        Some(r) => writeln!(
            f,
            "  {:<16}as machine {}: a prefix with {} rate-limited SYNs in {} s gets a {} ban",
            "reporter", r.machine_id, r.report_after, r.report_window, r.report_ban
        ),
    }
}

/// Lists at most this many entries of each list; the rest are counted.
const DISPLAY_LIST_CAP: usize = 20;

fn write_list(f: &mut fmt::Formatter<'_>, name: ListKind, set: &CidrSet) -> fmt::Result {
    let noun = if set.len() == 1 { "entry" } else { "entries" };
    writeln!(
        f,
        "{name:<18}{} {noun} ({} IPv4, {} IPv6)",
        set.len(),
        set.v4.len(),
        set.v6.len()
    )?;
    for net in set.iter().take(DISPLAY_LIST_CAP) {
        writeln!(f, "  {net}")?;
    }
    if set.len() > DISPLAY_LIST_CAP {
        writeln!(f, "  … and {} more", set.len() - DISPLAY_LIST_CAP)?;
    }
    Ok(())
}
