//! The audit's judgement, as pure functions: what the host has and where the filter is attached
//! go in, findings with a verdict each come out.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use super::model::*;
use super::procnet::{Socket, TcpState};
use crate::model::XdpMode;

/// Peers listed per finding; the rest are counted.
const MAX_PEERS: usize = 5;

/// Judges what `host` has against where `filter` is attached.
pub(super) fn judge(host: &Host, filter: &FilterView) -> Report {
    let exposed: Vec<String> = host
        .interfaces
        .iter()
        .filter(|i| i.up && !i.loopback)
        .map(|i| i.name.clone())
        .collect();
    let mut findings = Vec::new();
    let listening_ports: BTreeSet<u16> = listeners(host).map(|s| s.local.port()).collect();

    // Listeners, one finding per listening address (SO_REUSEPORT groups are one).
    let mut by_address: BTreeMap<SocketAddr, Vec<&Socket>> = BTreeMap::new();
    for socket in listeners(host) {
        by_address.entry(socket.local).or_default().push(socket);
    }
    for (address, sockets) in &by_address {
        findings.push(judge_listener(host, filter, &exposed, *address, sockets));
    }
    if by_address.is_empty() {
        let attached = if filter.attached.is_empty() {
            String::new()
        } else {
            " (the filter stays ready for when one does)".to_owned()
        };
        findings.push(Finding::new(
            Level::Ok,
            Kind::NoListener,
            "no process listens on an SMTP port (25, 465, 587)".to_owned(),
            format!("ok: nothing here for port25 to protect{attached}"),
        ));
    }

    // Connections: inbound sessions by local port; outbound by owner and remote port.
    let mut inbound: BTreeMap<u16, Vec<&Socket>> = BTreeMap::new();
    let mut outbound: BTreeMap<OutboundKey, Vec<&Socket>> = BTreeMap::new();
    for socket in host.sockets.iter().filter(|s| s.state != TcpState::LISTEN) {
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
                Level::Info,
                Kind::Filter,
                format!(
                    "port25 is attached to {}, but this network namespace has no interface {}",
                    attached.iface, attached.iface
                ),
                "info: run the audit where port25d runs (`ip netns exec NS port25d audit`) to check that one".to_owned(),
            ));
        }
    }

    findings.sort_by_key(|f| (f.kind, f.port, f.address, f.level));
    Report {
        smtp_ports: SMTP_PORTS.to_vec(),
        interfaces: exposed,
        filter: filter.clone(),
        summary: Summary::of(&findings),
        findings,
    }
}

fn listeners(host: &Host) -> impl Iterator<Item = &Socket> {
    host.sockets
        .iter()
        .filter(|s| s.state == TcpState::LISTEN && SMTP_PORTS.contains(&s.local.port()))
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
    let mut finding = Finding::new(Level::Ok, Kind::Listener, what, String::new());
    finding.port = Some(port);
    finding.address = Some(address);
    finding.owner = owner;

    let Some(reach) = reachable_on(host, exposed, address.ip()) else {
        finding.verdict = "ok: local only (loopback), not reachable from the network".to_owned();
        return finding;
    };
    finding.reachable_on.clone_from(&reach);
    // The filter only filters the ports it protects: on any other, every interface is open.
    let protected = filter.ports.contains(&port);
    (finding.filtered_on, finding.unfiltered_on) = reach
        .iter()
        .cloned()
        .partition(|i| protected && filter.mode_of(i).is_some());

    if reach.is_empty() {
        finding.verdict = if address.ip().is_unspecified() {
            "ok: no network interface is up besides loopback".to_owned()
        } else {
            format!(
                "ok: not reachable ({} is on no interface that is up)",
                address.ip()
            )
        };
        return finding;
    }
    if !protected {
        if port == 25 {
            finding.level = Level::NotProtected;
            finding.verdict = format!(
                "NOT PROTECTED: port25 filters {}, not 25: add 25 to `ports`",
                port_list(&filter.ports)
            );
        } else {
            finding.verdict = format!(
                "ok if it requires AUTH (submission): port25 leaves it open by design; add {port} to `ports` to filter it"
            );
        }
        return finding;
    }
    if finding.unfiltered_on.is_empty() {
        let on: Vec<String> = finding
            .filtered_on
            .iter()
            .map(|i| {
                format!(
                    "{i} ({} XDP)",
                    filter.mode_of(i).map_or("?", XdpMode::as_str)
                )
            })
            .collect();
        let mut verdict = format!("ok: filtered on {}", on.join(", "));
        if filter.monitor {
            verdict.push_str(
                "; but in monitor mode: counted, nothing dropped (set mode = \"enforce\" when ready)",
            );
        }
        if filter.source == ViewSource::Pins {
            verdict
                .push_str("; port25d is not running: the pinned filter enforces its last policy");
        }
        finding.verdict = verdict;
        return finding;
    }
    finding.level = Level::NotProtected;
    let mut wanted: Vec<String> = filter.attached.iter().map(|a| a.iface.clone()).collect();
    wanted.extend(finding.unfiltered_on.iter().cloned());
    let wanted: Vec<String> = wanted.iter().map(|i| format!("\"{i}\"")).collect();
    let missing = finding.unfiltered_on.join(", ");
    finding.verdict = if filter.attached.is_empty() {
        format!(
            "NOT PROTECTED: no port25 filter is attached: run port25d on {missing} (interfaces = [{}]) or bind the MTA to a filtered address",
            wanted.join(", ")
        )
    } else {
        format!(
            "NOT PROTECTED: attach port25 to {missing} (interfaces = [{}]) or bind the MTA to a filtered address",
            wanted.join(", ")
        )
    };
    finding
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
    let (level, what, verdict) = match (&owner, key.holder) {
        (_, Holder::Gone) | (None, _) => (
            Level::Info,
            format!(
                "to port {port}: {connections} closed, in TIME_WAIT: {}",
                peers.join(", ")
            ),
            "info: the sending process is no longer known; run the audit again while mail goes out"
                .to_owned(),
        ),
        (Some(owner), _) => {
            let what = format!(
                "to port {port}: {}, {connections}: {}",
                owner.describe(),
                peers.join(", ")
            );
            let mta = owner.processes.first().is_some_and(Process::is_mta);
            let verdict = if key.local_peer {
                (
                    Level::Ok,
                    "ok: mail handed to this host's own server".to_owned(),
                )
            } else if mta && port == 25 {
                (
                    Level::Ok,
                    "ok: your MTA delivering (consider a smart host)".to_owned(),
                )
            } else if mta {
                (
                    Level::Ok,
                    "ok: your MTA relaying through a submission port (a smart host)".to_owned(),
                )
            } else if port == 25 {
                (
                    Level::Check,
                    format!(
                        "CHECK: outbound SMTP from {}: spam bot or a script? allow outbound 25 only to the smart host",
                        owner.short()
                    ),
                )
            } else {
                (
                    Level::Info,
                    format!(
                        "info: {} submits mail (authenticated port {port}); expected if it is a mail client",
                        owner.short()
                    ),
                )
            };
            (verdict.0, what, verdict.1)
        }
    };
    let mut finding = Finding::new(level, Kind::Outbound, what, verdict);
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
    let mut finding = Finding::new(
        Level::Info,
        Kind::Inbound,
        what,
        "info: clients talking to this host's SMTP server".to_owned(),
    );
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

fn port_list(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "port{} {}",
        if ports.len() == 1 { "" } else { "s" },
        ports.join(", ")
    )
}

#[cfg(test)]
mod tests;
