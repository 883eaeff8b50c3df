//! The audit's judgement of the mail server, pure as `judge.rs` is: what each listener offered a
//! client, what it answered an outsider who asked it to relay, and whether the MTA's
//! configuration agrees with port25's policy.

use std::net::IpAddr;

use ipnet::IpNet;

use super::model::*;
use super::mta::MtaConfig;
use super::smtp::RelayAnswer;
use crate::model::{EgressMode, Policy};

/// Submission ports: 587 (STARTTLS), 465 (TLS from the first byte).
const SUBMISSION_PORTS: [u16; 2] = [587, 465];

/// The findings about the mail server, from what `mail` holds.
pub(super) fn judge_mail(host: &Host, filter: &FilterView, mail: &MailView) -> Vec<Finding> {
    if !mail.looked {
        return Vec::new();
    }
    let mut findings: Vec<Finding> = mail.offers.iter().flat_map(judge_offer).collect();
    if let Some(finding) = nowhere_to_submit(host, filter) {
        findings.push(finding);
    }
    findings.extend(judge_relay_probe(&mail.relay_probe, mail.mta.as_ref()));
    match &mail.mta {
        None => findings.push(Finding::new(
            Kind::Mta,
            "the MTA's configuration: no postconf (Postfix) or exim -bP (Exim) here".to_owned(),
            Advice::NoMtaConfig,
        )),
        Some(mta) => findings.extend(judge_mta(mta, filter, &mail.inbound_verdicts)),
    }
    findings
}

/// What one listener offered a client, as findings: each problem its own, else one ok.
fn judge_offer(looked: &Looked) -> Vec<Finding> {
    let port = looked.port;
    let offer = &looked.offer;
    let what = format!(
        "port {port} ({}), asked at {}",
        looked.listener, looked.target
    );
    let mut advice = Vec::new();
    if offer.refused_here {
        advice.push(Advice::AuditRefusedHere { port });
    } else if let Some(error) = &offer.silent {
        advice.push(if port == 465 {
            Advice::NoImplicitTls {
                error: error.clone(),
            }
        } else {
            Advice::NotSmtp {
                port,
                error: error.clone(),
            }
        });
    } else {
        if !offer.auth_in_clear.is_empty() {
            advice.push(Advice::AuthBeforeStartTls {
                port,
                mechanisms: offer.auth_in_clear.clone(),
            });
        } else if offer.clear_auth_accepted {
            advice.push(Advice::AuthTakenInClear {
                port,
                reply: offer.clear_auth_reply.clone().unwrap_or_default(),
            });
        }
        let submission = SUBMISSION_PORTS.contains(&port);
        if submission && !offer.implicit_tls && !offer.starttls {
            advice.push(Advice::NoStartTls { port });
        }
        if let Some(error) = &offer.starttls_failed {
            advice.push(Advice::StartTlsBroken {
                port,
                error: error.clone(),
            });
        }
        let tls_session = offer.implicit_tls || (offer.starttls && offer.starttls_failed.is_none());
        if submission && tls_session && offer.auth_over_tls.is_empty() {
            advice.push(Advice::NoAuthOverTls { port });
        }
        if advice.is_empty() {
            advice.push(if submission {
                Advice::SubmissionSound {
                    port,
                    mechanisms: offer.auth_over_tls.clone(),
                    implicit_tls: offer.implicit_tls,
                }
            } else {
                Advice::RelayPortSound {
                    starttls: offer.starttls,
                }
            });
        }
    }
    advice
        .into_iter()
        .map(|advice| {
            let mut finding = Finding::new(Kind::Submission, what.clone(), advice);
            finding.port = Some(port);
            finding.address = Some(looked.listener);
            finding
        })
        .collect()
}

/// Port 25 closed to clients by the policy, and no submission port for them.
fn nowhere_to_submit(host: &Host, filter: &FilterView) -> Option<Finding> {
    let closed = filter.policy == Some(Policy::Drop) && filter.ports.contains(&25);
    let listening = |port: u16| {
        host.listeners()
            .any(|s| s.local.port() == port && !s.local.ip().is_loopback())
    };
    let submission = SUBMISSION_PORTS.iter().any(|&port| listening(port));
    (closed && listening(25) && !submission).then(|| {
        Finding::new(
            Kind::Submission,
            "port 25 is closed to clients (policy drop), and nothing listens on 587 or 465"
                .to_owned(),
            Advice::NowhereToSubmit,
        )
    })
}

/// The relay probe's answers; `mta`: the configuration that may trust the probe's own address,
/// in which case an accepted RCPT says nothing of strangers.
fn judge_relay_probe(probe: &RelayProbe, mta: Option<&MtaConfig>) -> Vec<Finding> {
    let trusting = |source: IpAddr| {
        mta.into_iter()
            .flat_map(|mta| mta.relay_networks.iter())
            .find(|network| {
                network
                    .parse::<IpNet>()
                    .map_or(network.parse() == Ok(source), |net| {
                        net.prefix_len() > 0 && net.contains(&source)
                    })
            })
            .cloned()
    };
    match probe {
        RelayProbe::No { why } => vec![Finding::new(
            Kind::Relay,
            "open-relay probe: not run".to_owned(),
            Advice::RelayProbeSkipped { why: why.clone() },
        )],
        RelayProbe::Yes { source, tries } => tries
            .iter()
            .map(|tried| {
                let what = format!(
                    "port 25 ({}), asked at {} from {source}",
                    tried.listener, tried.target
                );
                let advice = match &tried.answer {
                    RelayAnswer::Accepted(reply) => match trusting(*source) {
                        Some(network) => Advice::ProbeTrusted {
                            source: *source,
                            network,
                        },
                        None => Advice::OpenRelay {
                            source: *source,
                            reply: reply.clone(),
                        },
                    },
                    RelayAnswer::Refused(reply) => Advice::RelayRefused {
                        source: *source,
                        reply: reply.clone(),
                    },
                    RelayAnswer::Unknown(reason) => Advice::RelayUnknown {
                        reason: reason.clone(),
                    },
                    RelayAnswer::RefusedHere(_) => Advice::AuditRefusedHere { port: 25 },
                };
                let mut finding = Finding::new(Kind::Relay, what, advice);
                finding.port = Some(25);
                finding.address = Some(tried.listener);
                finding
            })
            .collect(),
    }
}

/// The MTA's configuration against the egress guard and the inbound policy.
fn judge_mta(mta: &MtaConfig, filter: &FilterView, verdicts: &[InboundVerdict]) -> Vec<Finding> {
    let name = mta.kind.to_string();
    let mut findings = vec![Finding::new(
        Kind::Mta,
        format!("{name}'s configuration in {}", mta.config_dir),
        Advice::MtaRead {
            read_with: mta.read_with.clone(),
            summary: mta_summary(mta),
        },
    )];
    let egress = &filter.egress;
    let guarding = egress.mode != EgressMode::Off && egress.cgroup.is_some();
    let enforce = egress.mode == EgressMode::Enforce;
    let relayhost_key = mta.kind.relayhost_key();
    for relayhost in &mta.relayhosts {
        let what = format!("{relayhost_key} {}", relayhost.written);
        let advice = if let Some(error) = &relayhost.unresolved {
            Advice::RelayhostUnresolved {
                relayhost: relayhost.written.clone(),
                error: error.clone(),
            }
        } else if !guarding {
            continue;
        } else if !egress.ports.contains(&relayhost.port)
            || relayhost.addrs.iter().all(|ip| is_smart_host(egress, *ip))
        {
            Advice::RelayhostAllowed {
                relayhost: relayhost.written.clone(),
            }
        } else {
            Advice::RelayhostRefused {
                mta: mta.kind,
                relayhost: relayhost.written.clone(),
                addrs: relayhost
                    .addrs
                    .iter()
                    .copied()
                    .filter(|ip| !is_smart_host(egress, *ip))
                    .collect(),
                port: relayhost.port,
                enforce,
            }
        };
        findings.push(Finding::new(Kind::Mta, what, advice));
    }
    if !mta.relayhosts.is_empty() && egress.mode == EgressMode::Off {
        let written: Vec<&str> = mta.relayhosts.iter().map(|r| r.written.as_str()).collect();
        findings.push(Finding::new(
            Kind::Mta,
            format!(
                "{relayhost_key} {} with the egress guard off",
                written.join(", ")
            ),
            Advice::GuardOffWithRelayhost {
                mta: mta.kind,
                addrs: mta
                    .relayhosts
                    .iter()
                    .flat_map(|r| r.addrs.clone())
                    .collect(),
            },
        ));
    }
    if mta.relayhosts.is_empty() && guarding && egress.ports.contains(&25) {
        let user = mta.user.clone().unwrap_or_else(|| "?".to_owned());
        let allowed = egress
            .allow_users
            .iter()
            .any(|u| *u == user || u.starts_with(&format!("{user} (")))
            || egress
                .allow_cgroups
                .iter()
                .any(|c| c.contains(name.to_ascii_lowercase().as_str()));
        let what = format!("no {relayhost_key}: {name} delivers to each domain's MX hosts itself");
        findings.push(Finding::new(
            Kind::Mta,
            what,
            if allowed {
                Advice::DirectDeliveryAllowed { user }
            } else {
                Advice::DirectDeliveryRefused {
                    mta: mta.kind,
                    user,
                    enforce,
                }
            },
        ));
    }
    let file = mta.kind.config_file(&mta.config_dir);
    for network in &mta.relay_networks {
        let Ok(net) = network
            .parse::<IpNet>()
            .or_else(|_| network.parse::<IpAddr>().map(IpNet::from))
        else {
            continue;
        };
        let what = format!("{} holds {network}", mta.kind.relay_networks_key());
        let advice = if net.prefix_len() == 0 {
            Advice::RelaysForAnyone {
                mta: mta.kind,
                network: network.clone(),
                file: file.clone(),
            }
        } else if is_public(net) {
            Advice::RelaysForPublicRange {
                mta: mta.kind,
                network: network.clone(),
                file: file.clone(),
            }
        } else {
            continue;
        };
        findings.push(Finding::new(Kind::Mta, what, advice));
    }
    for verdict in verdicts {
        if matches!(verdict.verdict.as_str(), "drop" | "would_drop") {
            findings.push(Finding::new(
                Kind::Mta,
                format!(
                    "{} ({}) sending to port 25: {}",
                    verdict.addr, verdict.role, verdict.verdict
                ),
                Advice::DropsMtaPeer {
                    addr: verdict.addr,
                    role: verdict.role.clone(),
                },
            ));
        }
    }
    findings
}

/// "relayhost [198.18.5.5]:25; mynetworks 127.0.0.0/8 ::1/128; user postfix", and what was not
/// read.
fn mta_summary(mta: &MtaConfig) -> String {
    let relayhosts: Vec<&str> = mta.relayhosts.iter().map(|r| r.written.as_str()).collect();
    let mut parts = vec![
        format!(
            "{} {}",
            mta.kind.relayhost_key(),
            if relayhosts.is_empty() {
                "(none: direct delivery)".to_owned()
            } else {
                relayhosts.join(", ")
            }
        ),
        format!(
            "{} {}",
            mta.kind.relay_networks_key(),
            if mta.relay_networks.is_empty() {
                "(empty)".to_owned()
            } else {
                mta.relay_networks.join(" ")
            }
        ),
    ];
    if let Some(user) = &mta.user {
        parts.push(format!("user {user}"));
    }
    parts.extend(mta.notes.iter().cloned());
    parts.join("; ")
}

/// Whether the egress guard's smart hosts cover `ip`.
fn is_smart_host(egress: &EgressView, ip: IpAddr) -> bool {
    egress
        .smart_hosts
        .iter()
        .filter_map(|host| host.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
}

/// Ranges that are nobody's on the Internet: private, loopback, link-local, shared (CGNAT),
/// benchmarking, documentation, unique-local.
const NOT_PUBLIC: [&str; 14] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
];

/// Whether `net` reaches beyond the ranges that are nobody's on the Internet.
fn is_public(net: IpNet) -> bool {
    let net = match net {
        // ::ffff:127.0.0.0/104 and the like: the IPv4 range inside.
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    };
    !NOT_PUBLIC
        .iter()
        .filter_map(|range| range.parse::<IpNet>().ok())
        .any(|range| range.contains(&net))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::mta::MtaKind;
    use crate::audit::smtp::Offer;

    fn looked(port: u16, offer: Offer) -> Looked {
        Looked {
            port,
            listener: format!("0.0.0.0:{port}").parse().unwrap(),
            target: format!("127.0.0.1:{port}").parse().unwrap(),
            offer,
        }
    }

    fn verdicts(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| f.verdict.to_string()).collect()
    }

    #[test]
    fn each_problem_of_an_offer_is_its_own_finding() {
        // 587 with neither STARTTLS nor AUTH advertised, but AUTH begun when asked in clear.
        let bare = Offer {
            clear_auth_reply: Some("334 ".to_owned()),
            clear_auth_accepted: true,
            ..Offer::default()
        };
        let found = verdicts(&judge_offer(&looked(587, bare)));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with(
                "CHECK: port 587 does not offer AUTH in clear but began it when asked (334 )"
            ),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("CHECK: port 587 offers no STARTTLS"),
            "{found:?}"
        );

        // 587 with STARTTLS but no AUTH after it.
        let no_auth = Offer {
            starttls: true,
            ..Offer::default()
        };
        let found = verdicts(&judge_offer(&looked(587, no_auth)));
        assert_eq!(found, vec!["CHECK: port 587 offers no AUTH even over TLS: clients cannot authenticate: Postfix: `-o smtpd_sasl_auth_enable=yes` on its service in master.cf, with a SASL backend (smtpd_sasl_type)".to_owned()]);

        // 465 that does not speak TLS.
        let plain = Offer {
            implicit_tls: true,
            silent: Some("tls error: received corrupt message".to_owned()),
            ..Offer::default()
        };
        let found = verdicts(&judge_offer(&looked(465, plain)));
        assert!(
            found[0]
                .starts_with("CHECK: port 465 does not speak TLS from the first byte (tls error"),
            "{found:?}"
        );

        // 465 as it should be.
        let sound = Offer {
            implicit_tls: true,
            auth_over_tls: vec!["PLAIN".to_owned()],
            ..Offer::default()
        };
        let found = judge_offer(&looked(465, sound));
        assert_eq!(found[0].level, Level::Ok);
        assert_eq!(
            found[0].verdict.to_string(),
            "ok: port 465: TLS from the first byte, then AUTH PLAIN; no AUTH in clear"
        );
    }

    fn postfix(relayhosts: &str, networks: &[&str]) -> MtaConfig {
        MtaConfig {
            kind: MtaKind::Postfix,
            read_with: "postconf".to_owned(),
            config_dir: "/etc/postfix".to_owned(),
            relayhosts: crate::audit::mta::postfix_relayhosts(relayhosts),
            relay_networks: networks.iter().map(|n| (*n).to_owned()).collect(),
            mail_filters: Vec::new(),
            user: Some("postfix".to_owned()),
            notes: Vec::new(),
        }
    }

    fn guard(mode: EgressMode, smart_hosts: &[&str], allow_users: &[&str]) -> FilterView {
        let mut filter = FilterView::nothing("/run/port25/control.sock", "/sys/fs/bpf/port25");
        filter.egress = EgressView {
            mode,
            cgroup: (mode != EgressMode::Off).then(|| "/".to_owned()),
            ports: vec![25],
            smart_hosts: smart_hosts.iter().map(|h| (*h).to_owned()).collect(),
            allow_users: allow_users.iter().map(|u| (*u).to_owned()).collect(),
            ..EgressView::default()
        };
        filter
    }

    #[test]
    fn the_mta_against_the_egress_guard() {
        let levels = |mta: &MtaConfig, filter: &FilterView| -> Vec<(Level, String)> {
            judge_mta(mta, filter, &[])
                .into_iter()
                .skip(1) // what was read
                .map(|f| (f.level, f.verdict.to_string()))
                .collect()
        };
        // Direct delivery while the guard enforces: the MTA's user must be allowed.
        let direct = postfix("", &["127.0.0.0/8"]);
        let refused = levels(&direct, &guard(EgressMode::Enforce, &[], &[]));
        assert_eq!(refused[0].0, Level::Check);
        assert!(refused[0].1.contains("allows neither its user postfix nor its cgroup, so it refuses its mail: add allow_users = [\"postfix\"]"), "{refused:?}");
        let allowed = levels(
            &direct,
            &guard(EgressMode::Enforce, &[], &["postfix (107)"]),
        );
        assert_eq!(allowed[0].0, Level::Ok, "{allowed:?}");
        // A smart host on a port the guard does not guard is not refused.
        let submission = postfix("[198.18.5.5]:587", &[]);
        let found = levels(&submission, &guard(EgressMode::Enforce, &[], &[]));
        assert_eq!(found[0].0, Level::Ok, "{found:?}");
        // Monitor mode: would refuse.
        let relay = postfix("[198.18.5.5]", &[]);
        let found = levels(&relay, &guard(EgressMode::Monitor, &["198.18.6.0/24"], &[]));
        assert!(
            found[0]
                .1
                .contains("would refuse its outbound mail once it enforces"),
            "{found:?}"
        );
        let found = levels(&relay, &guard(EgressMode::Monitor, &["198.18.5.0/24"], &[]));
        assert_eq!(found[0].0, Level::Ok, "{found:?}");
    }

    #[test]
    fn a_probe_the_mta_trusts_proves_nothing() {
        let probe = RelayProbe::Yes {
            source: "198.19.255.254".parse().unwrap(),
            tries: vec![RelayTry {
                listener: "0.0.0.0:25".parse().unwrap(),
                target: "198.19.255.253:25".parse().unwrap(),
                answer: RelayAnswer::Accepted("250 2.1.5 Ok".to_owned()),
            }],
        };
        let levels = |networks: &[&str]| -> Vec<Level> {
            judge_relay_probe(&probe, Some(&postfix("", networks)))
                .iter()
                .map(|f| f.level)
                .collect()
        };
        assert_eq!(
            levels(&["127.0.0.0/8", "198.18.0.0/15"]),
            vec![Level::Check]
        );
        assert_eq!(levels(&["127.0.0.0/8"]), vec![Level::OpenRelay]);
        // A catch-all is no excuse: strangers are trusted too.
        assert_eq!(levels(&["0.0.0.0/0"]), vec![Level::OpenRelay]);
    }

    #[test]
    fn relay_networks_by_reach() {
        let mta = postfix(
            "",
            &[
                "127.0.0.0/8",
                "::1/128",
                "8.8.8.0/24",
                "0.0.0.0/0",
                "10.0.0.0/8",
            ],
        );
        let found: Vec<(Level, String)> = judge_mta(&mta, &guard(EgressMode::Off, &[], &[]), &[])
            .into_iter()
            .map(|f| (f.level, f.what))
            .collect();
        assert_eq!(
            found[1..],
            [
                (Level::Check, "mynetworks holds 8.8.8.0/24".to_owned()),
                (Level::OpenRelay, "mynetworks holds 0.0.0.0/0".to_owned()),
            ]
        );
    }

    #[test]
    fn public_ranges() {
        let public = |text: &str| is_public(text.parse().unwrap());
        assert!(public("0.0.0.0/0"));
        assert!(public("8.8.8.0/24"));
        assert!(public("10.0.0.0/7"), "wider than 10/8");
        assert!(public("2a00:1450::/32"));
        assert!(!public("10.1.0.0/16"));
        assert!(!public("127.0.0.0/8"));
        assert!(!public("::ffff:127.0.0.0/104"));
        assert!(!public("::1/128"));
        assert!(!public("198.18.0.0/15"));
        assert!(!public("fd00::/8"));
    }
}
