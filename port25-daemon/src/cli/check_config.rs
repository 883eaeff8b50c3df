//! `port25d check-config`: validate and print the effective policy, like `nginx -t`: the
//! summary in words of what port25d would do with it.

use super::output::outln;
use std::fmt;
use std::path::PathBuf;

use crate::config::{CidrSet, Config, Crowdsec, Egress, Synproxy};
use crate::model::{EgressMode, ListKind, Mode, OnExit, Policy, XdpCoexist};

pub(super) fn check_config(path: Option<PathBuf>, quiet: bool) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    config.check_interfaces()?;
    if !quiet {
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
        outln!("{}", Summary(&config));
        outln!("configuration OK");
    }
    Ok(())
}

/// The human summary of a config that `port25d check-config` prints.
pub(crate) struct Summary<'a>(pub(crate) &'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.0;
        fn join<T: fmt::Display>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        let interfaces = if config.interfaces.is_empty() && config.egress.mode != EgressMode::Off {
            "(none: no XDP filter, the egress guard only)".to_string()
        } else if config.interfaces.is_empty() {
            "(none: nothing will be attached)".to_string()
        } else {
            join(&config.interfaces)
        };
        let mode = match config.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (count would-be drops, drop nothing)",
        };
        let policy = match config.policy {
            Policy::Drop => "drop (only allowlisted sources may connect)",
            Policy::Ratelimit => "ratelimit (new connections from other sources are rate limited)",
            Policy::Synproxy => {
                "synproxy (new connections from other sources are answered with SYN cookies in \
                 XDP, admitted when the client's ACK proves one)"
            }
        };
        writeln!(f, "{:<18}{}", "config", config.source)?;
        writeln!(f, "{:<18}{interfaces}", "interfaces")?;
        writeln!(f, "{:<18}{}", "xdp mode", config.xdp_mode)?;
        let coexist = match config.xdp_coexist {
            XdpCoexist::Exclusive => "exclusive (no other XDP program on the interfaces)".into(),
            XdpCoexist::Libxdp => format!(
                "libxdp (a component of libxdp's dispatcher, run priority {})",
                crate::datapath::LIBXDP_RUN_PRIO
            ),
        };
        writeln!(f, "{:<18}{coexist}", "xdp coexist")?;
        writeln!(f, "{:<18}{}", "ports", join(&config.ports))?;
        writeln!(f, "{:<18}{mode}", "mode")?;
        writeln!(f, "{:<18}{policy}", "policy")?;
        write_list(f, ListKind::Allow, &config.allow)?;
        write_list(f, ListKind::Deny, &config.deny)?;
        let r = &config.ratelimit;
        let unused = if config.policy == Policy::Drop {
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
        if config.policy == Policy::Synproxy {
            writeln!(f, "synproxy")?;
            write_synproxy(f, &config.synproxy)?;
            match crate::netfilter::ruleset(config) {
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
                    let exempt = crate::netfilter::Exempt::of(&config.allow, config.synproxy.ipv6);
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
        writeln!(
            f,
            "{:<18}http://{}/metrics",
            "metrics", config.metrics_listen
        )?;
        if !config.watched_dirs.is_empty() {
            let dirs: Vec<String> = config
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
        write_egress(f, &config.egress)?;
        write_crowdsec(f, config.crowdsec.as_ref())?;
        if let Some(candidate) = &config.shadow {
            writeln!(
                f,
                "{:<18}{} (judged beside this policy, enforcing nothing; `port25d check-config \
                 --config` it too)",
                "shadow",
                candidate.display()
            )?;
        }
        let on_exit = match config.on_exit {
            OnExit::Detach => "detach (SIGTERM removes the filter)",
            OnExit::Keep => "keep (the filter stays after SIGTERM; `port25d detach` removes it)",
        };
        writeln!(
            f,
            "{:<18}{}",
            "taken away",
            if config.reattach {
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
    writeln!(
        f,
        "  {:<16}{}",
        "hooks on cgroup",
        crate::config::cgroup_display(&egress.cgroup)
    )?;
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
        "{:<18}bouncer of {} every {} s, {} s per request (key read)",
        "crowdsec", cs.lapi_url, cs.update_frequency, cs.lapi_timeout
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
    let b = &cs.bounds;
    writeln!(
        f,
        "  {:<16}prefixes from /{} (IPv4) and /{} (IPv6); answers up to {} MiB; at most {} \
         decisions held; the allowlist overrides them",
        "bounds",
        b.min_ipv4_prefix,
        b.min_ipv6_prefix,
        b.max_answer_bytes >> 20,
        b.max_decisions
    )?;
    match &cs.reporter {
        None => writeln!(f, "  {:<16}off", "reporter"),
        Some(r) => writeln!(
            f,
            "  {:<16}as machine {}: a prefix that completes {} handshakes in {} s while its \
             bucket refuses more gets a {} ban",
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

fn write_synproxy(f: &mut fmt::Formatter<'_>, synproxy: &Synproxy) -> fmt::Result {
    {
        writeln!(
            f,
            "  {:<16}{} SYN-ACK/s, burst {}",
            "budget", synproxy.synack_rate, synproxy.synack_burst
        )?;
        writeln!(
            f,
            "  {:<16}MSS {} (IPv4), {} (IPv6), window scale {}, TTL {}",
            "SYN-ACK", synproxy.mss4, synproxy.mss6, synproxy.wscale, synproxy.ttl
        )?;
        writeln!(
            f,
            "  {:<16}{}",
            "IPv6",
            if synproxy.ipv6 {
                "answered with cookies too"
            } else {
                "rate-limited as under policy ratelimit (synproxy.ipv6 = false)"
            }
        )
    }
}
