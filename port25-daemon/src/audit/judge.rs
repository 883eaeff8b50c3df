//! The audit's judgement, as pure functions: what the host has and where the filter is attached
//! go in, findings with a verdict each come out.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use super::model::*;
use super::procnet::{Socket, TcpState};
use crate::model::EgressMode;

/// Peers listed per finding; the rest are counted.
const MAX_PEERS: usize = 5;

/// Judges what `host` has against where `filter` is attached, and the mail server by `mail`.
pub(super) fn judge(host: &Host, filter: &FilterView, mail: MailView) -> Report {
    let exposed: Vec<String> = host
        .interfaces
        .iter()
        .filter(|i| i.up && !i.loopback)
        .map(|i| i.name.clone())
        .collect();
    let mut findings = Vec::new();
    let listening_ports: BTreeSet<u16> = host.listeners().map(|s| s.local.port()).collect();

    // Listeners, one finding per listening address (SO_REUSEPORT groups are one).
    let mut by_address: BTreeMap<SocketAddr, Vec<&Socket>> = BTreeMap::new();
    for socket in host.listeners() {
        by_address.entry(socket.local).or_default().push(socket);
    }
    for (address, sockets) in &by_address {
        findings.push(judge_listener(host, filter, &exposed, *address, sockets));
    }
    if by_address.is_empty() {
        findings.push(Finding::new(
            Kind::NoListener,
            "no process listens on an SMTP port (25, 465, 587)".to_owned(),
            Advice::NothingToProtect {
                filter_ready: !filter.attached.is_empty(),
            },
        ));
    }

    // Connections: inbound sessions by local port; outbound by owner and remote port.
    let mut inbound: BTreeMap<u16, Vec<&Socket>> = BTreeMap::new();
    let mut outbound: BTreeMap<OutboundKey, Vec<&Socket>> = BTreeMap::new();
    // The relay probe's sessions (this audit's or an earlier one's, in TIME_WAIT) are not clients.
    let from_probe = |s: &&Socket| match s.remote.ip() {
        IpAddr::V4(v4) => super::outsider::PROBE_LINK.contains(&v4),
        IpAddr::V6(_) => false,
    };
    for socket in host
        .sockets
        .iter()
        .filter(|s| s.state != TcpState::LISTEN && !from_probe(s))
    {
        let (local, remote) = (socket.local.port(), socket.remote.port());
        let is_smtp = |port| SMTP_PORTS.contains(&port);
        if is_smtp(local) && (listening_ports.contains(&local) || !is_smtp(remote)) {
            inbound.entry(local).or_default().push(socket);
        } else if is_smtp(remote) {
            let key = OutboundKey {
                port: remote,
                local_peer: is_local(host, socket.remote.ip()),
                holder: if socket.state.is_ownerless() || socket.inode == 0 {
                    Holder::Gone
                } else {
                    host.owners
                        .get(&socket.inode)
                        .and_then(|p| p.first())
                        .map_or(Holder::Unknown(socket.uid), |p| Holder::Pid(p.pid))
                },
            };
            outbound.entry(key).or_default().push(socket);
        }
    }
    for (key, sockets) in &outbound {
        findings.push(judge_outbound(host, key, sockets));
    }
    for (port, sockets) in &inbound {
        findings.push(judge_inbound(host, *port, sockets));
    }

    // Attached where this namespace has no such interface: audit runs in the wrong place.
    for attached in &filter.attached {
        if !host.interfaces.iter().any(|i| i.name == attached.iface) {
            findings.push(Finding::new(
                Kind::Filter,
                format!(
                    "port25 is attached to {}, but this network namespace has no interface {}",
                    attached.iface, attached.iface
                ),
                Advice::AuditElsewhere,
            ));
        }
    }

    findings.extend(judge_egress(&filter.egress));
    findings.extend(super::mail::judge_mail(host, filter, &mail));

    findings.sort_by_key(|f| (f.kind, f.port, f.address, f.level));
    Report {
        smtp_ports: SMTP_PORTS.to_vec(),
        interfaces: exposed,
        filter: filter.clone(),
        mail,
        summary: Summary::of(&findings),
        findings,
    }
}

/// Whether outbound SMTP is guarded, and who the guard refused.
fn judge_egress(egress: &EgressView) -> Vec<Finding> {
    let guard = match (egress.mode, &egress.cgroup) {
        (EgressMode::Off, None) if !egress.pinned => Finding::new(
            Kind::Egress,
            "egress guard: off".to_owned(),
            Advice::EgressOff,
        ),
        (mode, None) if !egress.pinned => Finding::new(
            Kind::Egress,
            format!("egress guard: {mode} mode, hooks not attached"),
            Advice::EgressDetached { mode },
        ),
        (mode, cgroup) => {
            let cgroup = cgroup.clone().unwrap_or_else(|| "(pinned)".to_owned());
            Finding::new(
                Kind::Egress,
                format!("egress guard: {mode} mode, hooks on cgroup {cgroup}"),
                Advice::EgressGuards {
                    mode,
                    cgroup,
                    whole_host: egress.whole_host,
                    pinned_only: egress.pinned,
                },
            )
        }
    };
    let monitor = egress.mode == EgressMode::Monitor;
    let refused = egress.refused.iter().map(|refused| {
        let process = format!(
            "{} (user {}, cgroup {})",
            refused.comm, refused.user, refused.cgroup
        );
        let mut finding = Finding::new(
            Kind::Egress,
            format!(
                "refused outbound SMTP from {process} to {}",
                refused.destinations.join(", ")
            ),
            Advice::EgressRefused {
                process: refused.comm.clone(),
                connects: refused.connects,
                monitor,
            },
        );
        finding.connections = usize::try_from(refused.connects).unwrap_or(usize::MAX);
        finding.peers.clone_from(&refused.destinations);
        finding
    });
    std::iter::once(guard).chain(refused).collect()
}

/// Whether `ip` is this host's own: loopback, or an address of one of its interfaces.
fn is_local(host: &Host, ip: IpAddr) -> bool {
    ip.is_loopback() || host.interfaces.iter().any(|i| i.addrs.contains(&ip))
}

/// The owner of a group of sockets: every process holding any of them.
fn owner_of(host: &Host, sockets: &[&Socket]) -> Option<Owner> {
    let held: Vec<&&Socket> = sockets.iter().filter(|s| s.inode != 0).collect();
    let first = held.first()?;
    let mut processes: Vec<Process> = held
        .iter()
        .filter_map(|s| host.owners.get(&s.inode))
        .flatten()
        .cloned()
        .collect();
    processes.sort_by_key(|p| p.pid);
    processes.dedup_by_key(|p| p.pid);
    Some(Owner {
        unknown: processes.is_empty().then(|| {
            format!(
                "socket inode {} is held by no process visible here: {}",
                first.inode, host.unknown_owner_hint
            )
        }),
        processes,
        uid: first.uid,
        user: host.users.get(&first.uid).cloned(),
    })
}

/// The interfaces a listener on `ip` can be reached through: `None` for loopback only.
fn reachable_on(host: &Host, exposed: &[String], ip: IpAddr) -> Option<Vec<String>> {
    if ip.is_loopback() {
        return None;
    }
    if ip.is_unspecified() {
        return Some(exposed.to_vec());
    }
    let holders: Vec<&Interface> = host
        .interfaces
        .iter()
        .filter(|i| i.addrs.contains(&ip))
        .collect();
    // A service address on the loopback device (anycast, direct server return) is routed to
    // from every interface.
    if holders.iter().any(|i| i.loopback) {
        return Some(exposed.to_vec());
    }
    Some(
        holders
            .iter()
            .filter(|i| i.up)
            .map(|i| i.name.clone())
            .collect(),
    )
}

fn judge_listener(
    host: &Host,
    filter: &FilterView,
    exposed: &[String],
    address: SocketAddr,
    sockets: &[&Socket],
) -> Finding {
    let port = address.port();
    let owner = owner_of(host, sockets);
    let who = owner.as_ref().map_or_else(String::new, Owner::describe);
    let what = format!("listening on {address}: {who}");
    let reach = reachable_on(host, exposed, address.ip());
    // The filter only filters the ports it protects: on any other, every interface is open.
    let protected = filter.ports.contains(&port);
    let (filtered_on, unfiltered_on): (Vec<String>, Vec<String>) = reach
        .iter()
        .flatten()
        .cloned()
        .partition(|i| protected && filter.mode_of(i).is_some());
    let advice = match &reach {
        None => Advice::LocalOnly,
        Some(reach) => listener_advice(filter, address, reach, &filtered_on, &unfiltered_on),
    };
    let mut finding = Finding::new(Kind::Listener, what, advice);
    finding.port = Some(port);
    finding.address = Some(address);
    finding.owner = owner;
    finding.reachable_on = reach.unwrap_or_default();
    finding.filtered_on = filtered_on;
    finding.unfiltered_on = unfiltered_on;
    finding
}

/// What to do about a listener reachable on `reach` (not loopback only), filtered on
/// `filtered_on` and not on `unfiltered_on`.
fn listener_advice(
    filter: &FilterView,
    address: SocketAddr,
    reach: &[String],
    filtered_on: &[String],
    unfiltered_on: &[String],
) -> Advice {
    let port = address.port();
    let protected = filter.ports.contains(&port);
    if reach.is_empty() {
        if address.ip().is_unspecified() {
            Advice::NoInterfaceUp
        } else {
            Advice::NotReachable(address.ip())
        }
    } else if !protected && port == 25 {
        Advice::PortLeftOut {
            ports: filter.ports.clone(),
        }
    } else if !protected {
        Advice::SubmissionOpen { port }
    } else if unfiltered_on.is_empty() {
        Advice::Filtered {
            on: filtered_on
                .iter()
                .filter_map(|iface| {
                    let xdp_mode = filter.mode_of(iface)?;
                    Some(Attached {
                        iface: iface.clone(),
                        xdp_mode,
                    })
                })
                .collect(),
            monitor: filter.monitor,
            pinned_only: filter.source == ViewSource::Pins,
        }
    } else {
        let mut interfaces: Vec<String> = filter.attached.iter().map(|a| a.iface.clone()).collect();
        interfaces.extend(unfiltered_on.iter().cloned());
        Advice::AttachTo {
            missing: unfiltered_on.to_vec(),
            interfaces,
            none_attached: filter.attached.is_empty(),
        }
    }
}

/// Who holds an outbound connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Pid(u32),
    /// Open, but no visible process holds it: the socket's uid.
    Unknown(u32),
    /// Closed (TIME_WAIT): no process any more.
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OutboundKey {
    port: u16,
    local_peer: bool,
    holder: Holder,
}

fn judge_outbound(host: &Host, key: &OutboundKey, sockets: &[&Socket]) -> Finding {
    let port = key.port;
    let count = sockets.len();
    let connections = format!("{count} connection{}", if count == 1 { "" } else { "s" });
    let peers = peer_list(sockets.iter().map(|s| s.remote.to_string()));
    let owner = owner_of(host, sockets);
    let (what, advice) = match (&owner, key.holder) {
        (_, Holder::Gone) | (None, _) => (
            format!(
                "to port {port}: {connections} closed, in TIME_WAIT: {}",
                peers.join(", ")
            ),
            Advice::SenderGone,
        ),
        (Some(owner), _) => {
            let what = format!(
                "to port {port}: {}, {connections}: {}",
                owner.describe(),
                peers.join(", ")
            );
            let mta = owner.processes.first().is_some_and(Process::is_mta);
            let advice = match (key.local_peer, mta, port == 25) {
                (true, _, _) => Advice::LocalHandoff,
                (false, true, true) => Advice::MtaDelivering,
                (false, true, false) => Advice::MtaRelaying,
                (false, false, true) => Advice::SmtpFromNonMta {
                    process: owner.short(),
                },
                (false, false, false) => Advice::Submits {
                    process: owner.short(),
                    port,
                },
            };
            (what, advice)
        }
    };
    let mut finding = Finding::new(Kind::Outbound, what, advice);
    finding.port = Some(port);
    finding.owner = owner;
    finding.connections = count;
    finding.peers = peers;
    finding
}

fn judge_inbound(host: &Host, port: u16, sockets: &[&Socket]) -> Finding {
    let count = sockets.len();
    let peers = peer_list(sockets.iter().map(|s| s.remote.ip().to_string()));
    let owner = owner_of(host, sockets).filter(|o| !o.processes.is_empty());
    let by = owner
        .as_ref()
        .map(|o| format!(" with {}", o.short()))
        .unwrap_or_default();
    let what = format!(
        "on port {port}: {count} session{}{by}, from {}",
        if count == 1 { "" } else { "s" },
        peers.join(", ")
    );
    let mut finding = Finding::new(Kind::Inbound, what, Advice::InboundSessions);
    finding.port = Some(port);
    finding.owner = owner;
    finding.connections = count;
    finding.peers = peers;
    finding
}

/// Distinct peers, at most [`MAX_PEERS`], then "and N more".
fn peer_list(peers: impl Iterator<Item = String>) -> Vec<String> {
    let distinct: BTreeSet<String> = peers.collect();
    let mut list: Vec<String> = distinct.iter().take(MAX_PEERS).cloned().collect();
    if distinct.len() > MAX_PEERS {
        list.push(format!("and {} more", distinct.len() - MAX_PEERS));
    }
    list
}

#[cfg(test)]
mod tests;
