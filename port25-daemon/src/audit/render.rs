//! The audit report as text: what was looked at, the filter, the findings grouped by kind, a
//! summary.

use std::fmt::{self, Write as _};

use super::model::*;
use super::mta::MtaKind;
use crate::model::EgressMode;

/// The report as text: what was looked at, the filter, the findings grouped by kind, a summary.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let interfaces = list_or(&report.interfaces, "none besides loopback");
    let _ = writeln!(
        out,
        "port25d audit of SMTP ports {}; network interfaces up: {interfaces}",
        join(&report.smtp_ports)
    );
    let _ = writeln!(out, "filter: {}", describe_filter(&report.filter));
    for note in &report.filter.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let sections = [
        (Kind::Listener, "Listening"),
        (Kind::NoListener, "Listening"),
        (Kind::Outbound, "Outbound SMTP (this host as a client)"),
        (Kind::Inbound, "Inbound SMTP sessions"),
        (Kind::Filter, "Filter"),
        (Kind::Egress, "Egress guard (outbound SMTP)"),
        (Kind::Submission, "The mail server as a client sees it"),
        (Kind::Relay, "Open relay, tried as an outsider"),
        (Kind::Mta, "The MTA's configuration against port25's"),
    ];
    let mut last_title = "";
    for (kind, title) in sections {
        let findings: Vec<&Finding> = report.findings.iter().filter(|f| f.kind == kind).collect();
        if findings.is_empty() {
            continue;
        }
        if title != last_title {
            let _ = writeln!(out, "\n{title}:");
            last_title = title;
        }
        for finding in findings {
            let _ = writeln!(out, "  {}", finding.what);
            if finding.kind == Kind::Listener && !finding.reachable_on.is_empty() {
                let filtered = list_or(&finding.filtered_on, "none");
                let _ = writeln!(
                    out,
                    "    reachable on {}; filtered on {filtered}",
                    finding.reachable_on.join(", ")
                );
            }
            let _ = writeln!(out, "    {}", finding.verdict);
        }
    }
    let _ = writeln!(out, "\n{}", report.summary.line());
    out
}

fn describe_filter(filter: &FilterView) -> String {
    let attached: Vec<String> = filter
        .attached
        .iter()
        .map(|a| format!("{} ({} XDP)", a.iface, a.xdp_mode))
        .collect();
    let ports = join(&filter.ports);
    let mode = if filter.monitor { "monitor" } else { "enforce" };
    match filter.source {
        ViewSource::Daemon => format!(
            "port25d (pid {}) answers on {}: attached to {}; protects port {ports}; mode {mode}",
            filter.daemon_pid.unwrap_or_default(),
            filter.control_socket,
            if attached.is_empty() {
                "nothing".to_owned()
            } else {
                attached.join(", ")
            }
        ),
        ViewSource::Pins => format!(
            "no port25d answers on {}, but the filter is pinned in {}: attached to {}, enforcing its last policy; protects port {ports}{}; mode {mode}",
            filter.control_socket,
            filter.pin_dir,
            attached.join(", "),
            if filter.ports_from == ViewSource::Pins {
                ""
            } else {
                " (assumed: the pinned policy could not be read)"
            }
        ),
        ViewSource::Nothing => format!(
            "not attached anywhere (no port25d answers on {}, nothing pinned in {}); port25d protects port {ports} by default",
            filter.control_socket, filter.pin_dir
        ),
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NothingToProtect { filter_ready } => {
                let ready = if *filter_ready {
                    " (the filter stays ready for when one does)"
                } else {
                    ""
                };
                write!(f, "ok: nothing here for port25 to protect{ready}")
            }
            Self::LocalOnly => f.write_str("ok: local only (loopback), not reachable from the network"),
            Self::NoInterfaceUp => f.write_str("ok: no network interface is up besides loopback"),
            Self::NotReachable(ip) => {
                write!(f, "ok: not reachable ({ip} is on no interface that is up)")
            }
            Self::PortLeftOut { ports } => write!(
                f,
                "NOT PROTECTED: port25 filters port{} {}, not 25: add 25 to `ports`",
                if ports.len() == 1 { "" } else { "s" },
                join(ports)
            ),
            Self::SubmissionOpen { port } => write!(
                f,
                "ok if it requires AUTH (submission): port25 leaves it open by design; add {port} to `ports` to filter it"
            ),
            Self::Filtered {
                on,
                monitor,
                pinned_only,
            } => {
                let on: Vec<String> = on
                    .iter()
                    .map(|a| format!("{} ({} XDP)", a.iface, a.xdp_mode))
                    .collect();
                write!(f, "ok: filtered on {}", on.join(", "))?;
                if *monitor {
                    f.write_str("; but in monitor mode: counted, nothing dropped (set mode = \"enforce\" when ready)")?;
                }
                if *pinned_only {
                    f.write_str("; port25d is not running: the pinned filter enforces its last policy")?;
                }
                Ok(())
            }
            Self::AttachTo {
                missing,
                interfaces,
                none_attached,
            } => {
                let missing = missing.join(", ");
                let quoted: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
                let quoted = quoted.join(", ");
                if *none_attached {
                    write!(f, "NOT PROTECTED: no port25 filter is attached: run port25d on {missing} (interfaces = [{quoted}]) or bind the MTA to a filtered address")
                } else {
                    write!(f, "NOT PROTECTED: attach port25 to {missing} (interfaces = [{quoted}]) or bind the MTA to a filtered address")
                }
            }
            Self::SenderGone => f.write_str(
                "info: the sending process is no longer known; run the audit again while mail goes out",
            ),
            Self::LocalHandoff => f.write_str("ok: mail handed to this host's own server"),
            Self::MtaDelivering => f.write_str("ok: your MTA delivering (consider a smart host)"),
            Self::MtaRelaying => {
                f.write_str("ok: your MTA relaying through a submission port (a smart host)")
            }
            Self::SmtpFromNonMta { process } => write!(
                f,
                "CHECK: outbound SMTP from {process}: spam bot or a script? allow outbound 25 only to the smart host"
            ),
            Self::Submits { process, port } => write!(
                f,
                "info: {process} submits mail (authenticated port {port}); expected if it is a mail client"
            ),
            Self::InboundSessions => f.write_str("info: clients talking to this host's SMTP server"),
            Self::AuditElsewhere => f.write_str(
                "info: run the audit where port25d runs (`ip netns exec NS port25d audit`) to check that one",
            ),
            Self::EgressOff => f.write_str(
                "info: outbound SMTP is not guarded, any process may send mail to any server: \
                 [egress] mode = \"monitor\" shows who does, \"enforce\" then allows only the smart \
                 hosts and the MTA",
            ),
            Self::EgressGuards {
                mode,
                cgroup,
                whole_host,
                pinned_only,
            } => {
                let whom = if *whole_host {
                    "every process on the host".to_owned()
                } else {
                    format!("only processes in cgroup {cgroup} and below")
                };
                let how = match mode {
                    EgressMode::Monitor => {
                        " (monitor mode: nothing is refused; set mode = \"enforce\" once \
                         `port25d egress log` shows only expected senders)"
                    }
                    _ => "",
                };
                let pinned = if *pinned_only {
                    "; no daemon runs, the pinned hooks keep their last policy"
                } else {
                    ""
                };
                write!(f, "ok: outbound SMTP guarded for {whom}{how}{pinned}")
            }
            Self::EgressDetached { mode } => write!(
                f,
                "NOT PROTECTED: [egress] mode is {mode} but its hooks are attached nowhere: \
                 `journalctl -u port25d` says why; restart port25d"
            ),
            Self::EgressRefused {
                process,
                connects,
                monitor,
            } => write!(
                f,
                "CHECK: {process} tried outbound SMTP to servers that are not smart hosts {connects} \
                 time{} ({}): spam bot, compromised script? `port25d egress log` names each attempt",
                if *connects == 1 { "" } else { "s" },
                if *monitor {
                    "let through: monitor mode"
                } else {
                    "refused"
                }
            ),
            Self::NotSmtp { port, error } => write!(
                f,
                "CHECK: port {port} does not speak SMTP to a client ({error}): check the service \
                 listening there"
            ),
            Self::NoImplicitTls { error } => write!(
                f,
                "CHECK: port 465 does not speak TLS from the first byte ({error}): Postfix: \
                 `-o smtpd_tls_wrappermode=yes` on the smtps service in master.cf"
            ),
            Self::NoStartTls { port } => write!(
                f,
                "CHECK: port {port} offers no STARTTLS: passwords would cross in clear: Postfix: \
                 `-o smtpd_tls_security_level=encrypt` on the submission service in master.cf, \
                 with smtpd_tls_cert_file and smtpd_tls_key_file in main.cf"
            ),
            Self::StartTlsBroken { port, error } => write!(
                f,
                "CHECK: port {port} offers STARTTLS but the handshake failed ({error}): Postfix: \
                 check smtpd_tls_cert_file and smtpd_tls_key_file in main.cf"
            ),
            Self::AuthBeforeStartTls { port, mechanisms } => write!(
                f,
                "CHECK: port {port} offers AUTH {} before STARTTLS: a client may send its password \
                 in clear: Postfix: smtpd_tls_auth_only = yes in main.cf",
                mechanisms.join(" ")
            ),
            Self::AuthTakenInClear { port, reply } => write!(
                f,
                "CHECK: port {port} does not offer AUTH in clear but began it when asked ({reply}): \
                 Postfix: smtpd_tls_auth_only = yes in main.cf"
            ),
            Self::NoAuthOverTls { port } => write!(
                f,
                "CHECK: port {port} offers no AUTH even over TLS: clients cannot authenticate: \
                 Postfix: `-o smtpd_sasl_auth_enable=yes` on its service in master.cf, with a SASL \
                 backend (smtpd_sasl_type)"
            ),
            Self::SubmissionSound {
                port,
                mechanisms,
                implicit_tls,
            } => {
                let how = if *implicit_tls {
                    "TLS from the first byte"
                } else {
                    "STARTTLS"
                };
                write!(
                    f,
                    "ok: port {port}: {how}, then AUTH {}; no AUTH in clear",
                    mechanisms.join(" ")
                )
            }
            Self::RelayPortSound { starttls } => {
                f.write_str("ok: port 25 offers no AUTH in clear")?;
                if !*starttls {
                    f.write_str(
                        " (nor STARTTLS: mail from other servers crosses in clear; Postfix: \
                         smtpd_tls_security_level = may)",
                    )?;
                }
                Ok(())
            }
            Self::NowhereToSubmit => f.write_str(
                "CHECK: where will your users submit mail? run a submission service on 587 \
                 (Postfix: the `submission inet` line of master.cf) before closing 25 to them",
            ),
            Self::OpenRelay { source, reply } => write!(
                f,
                "OPEN RELAY: it accepted mail from {source}, an address it has no reason to trust, \
                 to an outside domain ({reply}): anyone can send spam through it; Postfix: \
                 smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, \
                 reject_unauth_destination and mynetworks of your own networks only, in main.cf"
            ),
            Self::ProbeTrusted { source, network } => write!(
                f,
                "CHECK: it relayed for the probe, but its relay networks hold {network}, which \
                 covers the probe's own address {source}: this says nothing of strangers; keep \
                 only your own networks there, and run the audit again"
            ),
            Self::RelayRefused { source, reply } => {
                write!(f, "ok: refused to relay for {source} ({reply})")
            }
            Self::RelayUnknown { reason } => write!(
                f,
                "info: could not tell whether it relays ({reason}); a firewall of this host, or \
                 port25's egress guard refusing this process, can stop the probe"
            ),
            Self::RelayProbeSkipped { why } => write!(f, "info: {why}"),
            Self::AuditRefusedHere { port } => write!(
                f,
                "info: not asked: this host refused the audit's own connect to port {port} \
                 (EPERM): port25's egress guard judges the audit as any process; run it from a \
                 cgroup in [egress] allow_cgroups (`systemd-run --scope --slice=SLICE port25d \
                 audit`) to ask"
            ),
            Self::MtaRead { read_with, summary } => {
                write!(f, "info: read with `{read_with}`: {summary}")
            }
            Self::NoMtaConfig => f.write_str(
                "info: the MTA's configuration is not compared with port25's: only Postfix's \
                 (postconf) and Exim's (exim -bP) are read; Sendmail, OpenSMTPD and others are not",
            ),
            Self::RelayhostRefused {
                mta,
                relayhost,
                addrs,
                port,
                enforce,
            } => {
                let outcome = if *enforce {
                    "refuses its outbound mail (it bounces after retries)"
                } else {
                    "would refuse its outbound mail once it enforces"
                };
                write!(
                    f,
                    "CHECK: {relayhost} ({} port {port}) is not among [egress] smart_hosts: the \
                     guard {outcome}: add {} to [egress] smart_hosts in port25.toml, or fix {} in \
                     {mta}'s configuration",
                    join_ips(addrs),
                    quoted_ips(addrs),
                    mta.relayhost_key()
                )
            }
            Self::RelayhostAllowed { relayhost } => {
                write!(f, "ok: {relayhost} is a smart host of the egress guard")
            }
            Self::RelayhostUnresolved { relayhost, error } => write!(
                f,
                "CHECK: {relayhost}: {error}: the MTA cannot reach it either; write its address"
            ),
            Self::GuardOffWithRelayhost { mta, addrs } => write!(
                f,
                "CHECK: {mta} sends through a smart host, but outbound port 25 stays open to every \
                 process on this host: add to port25.toml: [egress] mode = \"enforce\", \
                 smart_hosts = [{}] (mode = \"monitor\" first shows who else sends)",
                quoted_ips(addrs)
            ),
            Self::DirectDeliveryRefused { mta, user, enforce } => {
                let outcome = if *enforce {
                    "refuses its mail"
                } else {
                    "would refuse its mail once it enforces"
                };
                write!(
                    f,
                    "CHECK: {mta} delivers to MX hosts itself, and the egress guard allows \
                     neither its user {user} nor its cgroup, so it {outcome}: add allow_users = \
                     [\"{user}\"] to [egress] in port25.toml, or send through a smart host ({})",
                    mta.relayhost_key()
                )
            }
            Self::DirectDeliveryAllowed { user } => write!(
                f,
                "ok: the egress guard lets it through (user {user} or its cgroup is allowed)"
            ),
            Self::RelaysForAnyone { mta, network, file } => write!(
                f,
                "OPEN RELAY: {} holds {network}: every address may relay through it: remove it \
                 from {} in {file} (keep loopback and your own networks)",
                mta.relay_networks_key(),
                mta.relay_networks_key()
            ),
            Self::RelaysForPublicRange { mta, network, file } => write!(
                f,
                "CHECK: {} holds the public range {network}: every host in it may relay without \
                 authentication: keep only your own hosts in {} ({file})",
                mta.relay_networks_key(),
                mta.relay_networks_key()
            ),
            Self::DropsMtaPeer { addr, role } => write!(
                f,
                "CHECK: the inbound policy is drop and no allow entry covers {addr} ({role}): \
                 mail it sends to this host is dropped: add \"{addr}\" to `allow` in \
                 port25.toml (or `port25d allow add {addr}`)"
            ),
        }
    }
}

/// "198.18.5.5, 2001:db8::5".
fn join_ips(addrs: &[std::net::IpAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    addrs.join(", ")
}

/// "\"198.18.5.5\", \"2001:db8::5\"": as a TOML array's items.
fn quoted_ips(addrs: &[std::net::IpAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    addrs.join(", ")
}

impl fmt::Display for MtaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postfix => "Postfix",
            Self::Exim => "Exim",
        })
    }
}

fn join(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Reading the host
// ---------------------------------------------------------------------------------------------

/// "a, b, c", or `none` when there is nothing to list.
fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::audit::procnet::{self, Socket};
    use crate::model::XdpMode;

    fn socket(local: &str, remote: &str, state: procnet::TcpState, inode: u64) -> Socket {
        Socket {
            local: local.parse().expect("an address"),
            remote: remote.parse().expect("an address"),
            state,
            uid: 0,
            inode,
        }
    }

    fn process(pid: u32, comm: &str, exe: Option<&str>) -> Vec<Process> {
        vec![Process {
            pid,
            comm: comm.to_owned(),
            exe: exe.map(str::to_owned),
        }]
    }

    #[test]
    fn rendering_groups_findings_and_ends_with_the_summary() {
        let host = Host {
            sockets: vec![
                socket("0.0.0.0:25", "0.0.0.0:0", procnet::TcpState::LISTEN, 7),
                socket(
                    "198.18.0.1:40000",
                    "198.18.9.9:25",
                    procnet::TcpState::ESTABLISHED,
                    8,
                ),
            ],
            owners: HashMap::from([
                (7, process(42, "smtp-sink", Some("/usr/sbin/smtp-sink"))),
                (8, process(77, "perl", None)),
            ]),
            users: HashMap::from([(0, "root".to_owned())]),
            interfaces: vec![Interface {
                name: "gw0".to_owned(),
                up: true,
                loopback: false,
                addrs: vec!["198.18.0.1".parse().expect("an address")],
            }],
            unknown_owner_hint: String::new(),
        };
        let filter = FilterView::nothing("/run/port25/control.sock", "/sys/fs/bpf/port25");
        let text = render(&super::super::judge(&host, &filter, MailView::default()));
        let expected = "\
port25d audit of SMTP ports 25, 465, 587; network interfaces up: gw0
filter: not attached anywhere (no port25d answers on /run/port25/control.sock, nothing pinned in /sys/fs/bpf/port25); port25d protects port 25 by default

Listening:
  listening on 0.0.0.0:25: smtp-sink (pid 42, /usr/sbin/smtp-sink, user root)
    reachable on gw0; filtered on none
    NOT PROTECTED: no port25 filter is attached: run port25d on gw0 (interfaces = [\"gw0\"]) or bind the MTA to a filtered address

Outbound SMTP (this host as a client):
  to port 25: perl (pid 77, user root), 1 connection: 198.18.9.9:25
    CHECK: outbound SMTP from perl (pid 77): spam bot or a script? allow outbound 25 only to the smart host

Egress guard (outbound SMTP):
  egress guard: off
    info: outbound SMTP is not guarded, any process may send mail to any server: [egress] mode = \"monitor\" shows who does, \"enforce\" then allows only the smart hosts and the MTA

2 findings need action (1 NOT PROTECTED, 1 CHECK); 0 ok, 1 info
";
        assert_eq!(text, expected);
    }

    /// Every advice's sentence starts with what the operator must do, and says how.
    #[test]
    fn every_advice_reads_as_a_sentence() {
        let ifaces = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let attached = |iface: &str, xdp_mode| Attached {
            iface: iface.to_owned(),
            xdp_mode,
        };
        let cases = [
            (
                Advice::NothingToProtect { filter_ready: true },
                "ok: nothing here for port25 to protect (the filter stays ready for when one does)",
            ),
            (
                Advice::LocalOnly,
                "ok: local only (loopback), not reachable from the network",
            ),
            (
                Advice::NoInterfaceUp,
                "ok: no network interface is up besides loopback",
            ),
            (
                Advice::NotReachable("198.18.5.5".parse().expect("an address")),
                "ok: not reachable (198.18.5.5 is on no interface that is up)",
            ),
            (
                Advice::PortLeftOut {
                    ports: vec![2525, 26],
                },
                "NOT PROTECTED: port25 filters ports 2525, 26, not 25: add 25 to `ports`",
            ),
            (
                Advice::SubmissionOpen { port: 587 },
                "ok if it requires AUTH (submission): port25 leaves it open by design; add 587 to `ports` to filter it",
            ),
            (
                Advice::Filtered {
                    on: vec![
                        attached("eth0", XdpMode::Native),
                        attached("eth1", XdpMode::Skb),
                    ],
                    monitor: true,
                    pinned_only: true,
                },
                "ok: filtered on eth0 (native XDP), eth1 (skb XDP); but in monitor mode: counted, nothing dropped (set mode = \"enforce\" when ready); port25d is not running: the pinned filter enforces its last policy",
            ),
            (
                Advice::AttachTo {
                    missing: ifaces(&["eth1"]),
                    interfaces: ifaces(&["eth0", "eth1"]),
                    none_attached: false,
                },
                "NOT PROTECTED: attach port25 to eth1 (interfaces = [\"eth0\", \"eth1\"]) or bind the MTA to a filtered address",
            ),
            (
                Advice::SenderGone,
                "info: the sending process is no longer known; run the audit again while mail goes out",
            ),
            (
                Advice::LocalHandoff,
                "ok: mail handed to this host's own server",
            ),
            (
                Advice::MtaDelivering,
                "ok: your MTA delivering (consider a smart host)",
            ),
            (
                Advice::MtaRelaying,
                "ok: your MTA relaying through a submission port (a smart host)",
            ),
            (
                Advice::Submits {
                    process: "mutt (pid 5)".to_owned(),
                    port: 587,
                },
                "info: mutt (pid 5) submits mail (authenticated port 587); expected if it is a mail client",
            ),
            (
                Advice::InboundSessions,
                "info: clients talking to this host's SMTP server",
            ),
            (
                Advice::AuditElsewhere,
                "info: run the audit where port25d runs (`ip netns exec NS port25d audit`) to check that one",
            ),
            (
                Advice::EgressGuards {
                    mode: EgressMode::Enforce,
                    cgroup: "/sys/fs/cgroup/system.slice".to_owned(),
                    whole_host: false,
                    pinned_only: true,
                },
                "ok: outbound SMTP guarded for only processes in cgroup /sys/fs/cgroup/system.slice and below; no daemon runs, the pinned hooks keep their last policy",
            ),
            (
                Advice::EgressDetached {
                    mode: EgressMode::Monitor,
                },
                "NOT PROTECTED: [egress] mode is monitor but its hooks are attached nowhere: `journalctl -u port25d` says why; restart port25d",
            ),
            (
                Advice::EgressRefused {
                    process: "curl".to_owned(),
                    connects: 1,
                    monitor: false,
                },
                "CHECK: curl tried outbound SMTP to servers that are not smart hosts 1 time (refused): spam bot, compromised script? `port25d egress log` names each attempt",
            ),
        ];
        for (advice, sentence) in cases {
            assert_eq!(advice.to_string(), sentence);
            assert_eq!(serde_json::to_value(&advice).expect("json"), sentence);
        }
    }
}
