//! `port25d why ADDRESS`: what the filter decides now for a SYN from an address, taking the steps
//! of docs/ARCHITECTURE.md § Decision in the kernel's order, each fact with where it comes from:
//! the list entries (config file and line, runtime entry, CrowdSec decision), the policy's
//! buckets as the kernel holds them, the egress guard's view of the address as a destination.

use std::net::IpAddr;

use ipnet::IpNet;
use port25_common::{Reason, Settings, Verdict};

use super::{Daemon, lists::config_list};
use crate::{
    config::{CidrSet, Config},
    datapath::{BucketState, Buckets, settings_of, tokens},
    model::{EgressMode, ListKind, Mode, Policy},
    proto::{EntrySource, WhyBucket, WhyEgress, WhyEntry, WhyReport, WhyShadow},
};

/// A policy `why` asks: the live one, or the shadow's.
struct Asked<'a> {
    config: &'a Config,
    /// What CrowdSec's decisions enforce under its allowlist.
    enforced: CidrSet,
    buckets: Buckets,
}

/// What one policy decides for the SYN, and why.
struct Judged {
    judged: bool,
    reason: Option<Reason>,
    verdict: &'static str,
    entries: Vec<WhyEntry>,
    bucket: Option<WhyBucket>,
    steps: Vec<String>,
}

impl Daemon {
    pub(super) fn why(&self, address: &str, port: u16) -> Result<WhyReport, String> {
        let addr: IpAddr = address.trim().parse().map_err(|_| {
            format!(
                "{address:?} is not an address: give one IPv4 or IPv6 address, e.g. 198.18.0.1 \
                 or 2001:db8::1"
            )
        })?;
        let live = Asked {
            config: &self.config,
            enforced: self.crowdsec.prefixes(),
            buckets: Buckets::Live,
        };
        let judged = self.judge(&live, addr, port);
        let shadow = self.shadow.as_ref().map(|candidate| {
            let asked = Asked {
                config: &candidate.config,
                enforced: self.crowdsec.prefixes_under(&candidate.config.allow),
                buckets: Buckets::Shadow,
            };
            let judged = self.judge(&asked, addr, port);
            WhyShadow {
                config: candidate.path.display().to_string(),
                reason: judged.reason.map(|r| r.label().to_owned()),
                verdict: judged.verdict.to_owned(),
                steps: judged.steps,
            }
        });
        Ok(WhyReport {
            address: addr,
            port,
            judged: judged.judged,
            policy: self.config.policy,
            mode: self.config.mode,
            reason: judged.reason.map(|r| r.label().to_owned()),
            verdict: judged.verdict.to_owned(),
            entries: judged.entries,
            bucket: judged.bucket,
            steps: judged.steps,
            shadow,
            egress: self.egress_view(addr),
        })
    }

    /// The decision of the policy `asked` for a SYN from `addr` to `port`.
    fn judge(&self, asked: &Asked<'_>, addr: IpAddr, port: u16) -> Judged {
        let host = IpNet::from(addr);
        let entries = self.entries_covering(asked, &host);
        let config = asked.config;
        let mut steps = Vec::new();
        let judged = config.ports.contains(&port) && !config.interfaces.is_empty();
        let listed = |list: ListKind| {
            entries
                .iter()
                .filter(move |e| e.list == list && e.in_force)
                .max_by_key(|e| e.cidr.prefix_len())
        };
        let mut bucket = None;
        let reason = if !judged {
            steps.push(if config.interfaces.is_empty() {
                "no interface is filtered (interfaces = []): nothing inbound is judged".to_owned()
            } else {
                format!(
                    "port {port} is not protected (ports = {:?}): its packets pass untouched",
                    config.ports
                )
            });
            None
        } else if let Some(deny) = listed(ListKind::Deny) {
            steps.push(format!(
                "the deny entry {} covers it ({})",
                deny.cidr, deny.from
            ));
            if let Some(allow) = listed(ListKind::Allow) {
                steps.push(format!(
                    "the allow entry {} covers it too, but deny beats allow",
                    allow.cidr
                ));
            }
            Some(Reason::Denylisted)
        } else if let Some(allow) = listed(ListKind::Allow) {
            steps.push(format!(
                "the allow entry {} covers it ({}): it passes, whatever the policy",
                allow.cidr, allow.from
            ));
            Some(Reason::Allowlisted)
        } else {
            steps.push("no list entry in force covers it: the policy decides".to_owned());
            let (reason, state) = self.policy_step(asked, addr, &mut steps);
            bucket = state;
            Some(reason)
        };
        for held in entries.iter().filter(|e| !e.in_force) {
            steps.push(format!(
                "CrowdSec's decision on {} ({}) is not enforced for it: the configured allowlist \
                 covers it, and the allowlist beats automatic decisions",
                held.cidr, held.from
            ));
        }
        let verdict = match reason {
            None => "not_judged",
            Some(Reason::SynCookie) if config.mode == Mode::Enforce => Verdict::Answered.label(),
            Some(reason) if !reason.drops() => Verdict::Pass.label(),
            Some(_) if config.mode == Mode::Monitor => {
                steps.push("mode monitor: it is counted as would_drop and passes".to_owned());
                Verdict::WouldDrop.label()
            }
            Some(_) => Verdict::Drop.label(),
        };
        Judged {
            judged,
            reason,
            verdict,
            entries,
            bucket,
            steps,
        }
    }

    /// Every entry of the lists the kernel holds (config, runtime, CrowdSec) that covers `host`,
    /// with where it comes from. A CrowdSec decision the allowlist overrides is held but not in
    /// force.
    fn entries_covering(&self, asked: &Asked<'_>, host: &IpNet) -> Vec<WhyEntry> {
        let mut entries = Vec::new();
        let config = asked.config;
        for list in [ListKind::Deny, ListKind::Allow] {
            let config_list = config_list(config, list);
            for len in 0..=host.prefix_len() {
                let Ok(net) = IpNet::new(host.addr(), len).map(|n| n.trunc()) else {
                    continue;
                };
                if !config_list.contains_net(&net) {
                    continue;
                }
                let origins = config.origins(list, &net);
                if origins.is_empty() {
                    entries.push(WhyEntry {
                        list,
                        cidr: net,
                        from: EntrySource::Config {
                            file: config.source.clone(),
                            line: 0,
                            key: format!("{list}"),
                        },
                        in_force: true,
                    });
                }
                for origin in origins {
                    entries.push(WhyEntry {
                        list,
                        cidr: net,
                        from: EntrySource::Config {
                            file: origin.file.display().to_string(),
                            line: origin.line,
                            key: origin.key,
                        },
                        in_force: true,
                    });
                }
            }
            for entry in self.runtime.entries(list).filter(|e| e.cidr.contains(host)) {
                entries.push(WhyEntry {
                    list,
                    cidr: entry.cidr,
                    from: EntrySource::Runtime {
                        added: entry.added,
                        expires: entry.expires,
                        added_by: entry.added_by.clone(),
                    },
                    in_force: true,
                });
            }
        }
        if config.crowdsec.is_some() {
            let enforced = asked.enforced.covers(host);
            for held in self.crowdsec.held().filter(|h| h.cidr.contains(host)) {
                entries.push(WhyEntry {
                    list: ListKind::Deny,
                    cidr: held.cidr,
                    from: EntrySource::Crowdsec {
                        id: held.id,
                        scenario: held.scenario.clone(),
                        origin: held.origin.clone(),
                        expires: held.expires,
                    },
                    in_force: enforced,
                });
            }
        }
        entries
    }

    /// Step 4 of the decision, for a SYN: the policy, and under ratelimit and synproxy the
    /// buckets as the kernel holds them now (read, never spent).
    fn policy_step(
        &self,
        asked: &Asked<'_>,
        addr: IpAddr,
        steps: &mut Vec<String>,
    ) -> (Reason, Option<WhyBucket>) {
        let config = asked.config;
        let policy = match (config.policy, addr) {
            (Policy::Synproxy, IpAddr::V6(_)) if !config.synproxy.ipv6 => {
                steps.push(
                    "policy synproxy, but synproxy.ipv6 = false: IPv6 is judged as under ratelimit"
                        .to_owned(),
                );
                Policy::Ratelimit
            }
            (policy, _) => policy,
        };
        if policy == Policy::Drop {
            steps.push("policy drop: only allowlisted sources pass".to_owned());
            return (Reason::NotAllowlisted, None);
        }
        let settings = settings_of(config);
        let state = self
            .datapath
            .source_tables()
            .bucket(addr, &settings, asked.buckets);
        let bucket = why_bucket(&state, &settings, config, policy);
        let limits = &config.ratelimit;
        steps.push(format!(
            "its prefix {}'s bucket holds {} of {} tokens ({}; ratelimit.syn_rate {}/s)",
            bucket.prefix,
            bucket.tokens,
            bucket.burst,
            if state.tat.is_some() {
                "tracked"
            } else {
                "not tracked: full"
            },
            limits.syn_rate
        ));
        if policy == Policy::Synproxy {
            return if bucket.tokens == 0 {
                steps.push("no token: its SYN is dropped (rate_limited)".to_owned());
                (Reason::RateLimited, Some(bucket))
            } else {
                steps.push(
                    "policy synproxy: its SYN is answered with a SYN cookie from XDP (while the \
                     SYN-ACK budget lasts), and its ACK with a valid cookie reaches the MTA"
                        .to_owned(),
                );
                (Reason::SynCookie, Some(bucket))
            };
        }
        let global = bucket.global_tokens.unwrap_or(0);
        let reason = match bucket.verified_for_secs {
            Some(secs) => {
                steps.push(format!(
                    "verified by a completed handshake for {secs} s more: it skips the global cap"
                ));
                if bucket.tokens > 0 {
                    Reason::Admitted
                } else {
                    Reason::RateLimited
                }
            }
            None => {
                steps.push(format!(
                    "not verified: it needs a token of the global cap too, which holds {global} \
                     of {}",
                    bucket.global_burst
                ));
                if bucket.tokens > 0 && global > 0 {
                    Reason::Admitted
                } else {
                    Reason::RateLimited
                }
            }
        };
        steps.push(match reason {
            Reason::Admitted => "a token each way: its SYN is admitted".to_owned(),
            _ => "no token: its SYN is dropped (rate_limited)".to_owned(),
        });
        (reason, Some(bucket))
    }

    /// The address as a destination of this host's outbound SMTP.
    fn egress_view(&self, addr: IpAddr) -> WhyEgress {
        let egress = &self.config.egress;
        let host = IpNet::from(addr);
        let smart_host: Vec<String> = egress
            .smart_hosts
            .iter()
            .filter(|net| net.contains(&host))
            .map(|net| net.to_string())
            .collect();
        let names: Vec<String> = egress
            .smart_host_names
            .iter()
            .filter(|name| name.addrs.contains(&addr))
            .map(|name| name.name.clone())
            .collect();
        let verdict = match egress.mode {
            EgressMode::Off => {
                "the egress guard is off: every process may connect to it on any port".to_owned()
            }
            mode if !smart_host.is_empty() => {
                format!(
                    "a smart host ({}{}): every process may connect to it on ports {:?}",
                    smart_host.join(", "),
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(", resolved from {}", names.join(", "))
                    },
                    egress.ports
                ) + if mode == EgressMode::Monitor {
                    " (monitor mode)"
                } else {
                    ""
                }
            }
            EgressMode::Monitor => format!(
                "not a smart host: a connect to ports {:?} from a process of neither an allowed \
                 user nor an allowed cgroup is reported, not refused (monitor mode)",
                egress.ports
            ),
            EgressMode::Enforce => format!(
                "not a smart host: a connect to ports {:?} is refused unless from an allowed \
                 user ({} of them) or cgroup ({})",
                egress.ports,
                egress.allow_users.len(),
                egress.allow_cgroups.len()
            ),
        };
        WhyEgress {
            mode: egress.mode,
            ports: egress.ports.clone(),
            smart_host,
            names,
            verdict,
        }
    }
}

/// The buckets of [`BucketState`] in tokens.
fn why_bucket(
    state: &BucketState,
    settings: &Settings,
    config: &crate::config::Config,
    policy: Policy,
) -> WhyBucket {
    let limits = &config.ratelimit;
    let own = state.tat.map_or(u64::from(limits.syn_burst.max(1)), |tat| {
        tokens(
            tat,
            state.now,
            settings.syn_interval_ns,
            settings.syn_tolerance_ns,
        )
    });
    WhyBucket {
        prefix: state.prefix,
        tokens: own,
        burst: limits.syn_burst.max(1),
        verified_for_secs: state
            .verified_until
            .filter(|_| settings.verified_ttl_ns != 0)
            .map(|until| (until - state.now).div_ceil(1_000_000_000)),
        global_tokens: (policy == Policy::Ratelimit).then(|| {
            tokens(
                state.global_tat,
                state.now,
                settings.global_interval_ns,
                settings.global_tolerance_ns,
            )
        }),
        global_burst: limits.global_syn_burst.max(1),
    }
}
