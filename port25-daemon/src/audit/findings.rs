//! The audit's judgement, as pure functions: what the host has (sockets, their processes, its
//! interfaces) and where the filter is attached go in, findings with a verdict each come out.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::procnet::{Socket, TcpState};
use crate::model::XdpMode;

/// The SMTP ports the audit looks at: relay (25), submission over TLS (465), submission (587).
pub const SMTP_PORTS: [u16; 3] = [25, 465, 587];

/// Ports port25d protects when nothing says otherwise (its default config).
pub const DEFAULT_PORTS: [u16; 1] = [25];

/// Peers listed per finding; the rest are counted.
const MAX_PEERS: usize = 5;

/// Programs that are mail transfer agents (by `comm`, or the name of their executable).
const MTA_NAMES: &[&str] = &[
    "exim",
    "exim4",
    "sendmail",
    "sm-mta",
    "smtpd",
    "opensmtpd",
    "qmail-remote",
    "qmail-rspawn",
    "qmail-send",
    "courieresmtp",
    "courieresmtpd",
    "nullmailer-send",
    "msmtp",
    "ssmtp",
    "dma",
    "haraka",
    "maddy",
    "chasquid",
    "stalwart-mail",
];

/// Postfix's daemons: generic names, so only when the executable is Postfix's (or unknown).
const POSTFIX_NAMES: &[&str] = &["master", "smtp", "lmtp", "qmgr"];

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/comm`: the name, at most 15 bytes.
    pub comm: String,
    /// Where `/proc/PID/exe` points, if it could be read.
    pub exe: Option<String>,
}

impl Process {
    /// Whether this looks like a mail transfer agent (Postfix, Exim, Sendmail, OpenSMTPD, ...).
    pub fn is_mta(&self) -> bool {
        let exe_name = self.exe.as_deref().map(|exe| {
            let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
            exe.rsplit('/').next().unwrap_or(exe)
        });
        if MTA_NAMES.contains(&self.comm.as_str())
            || exe_name.is_some_and(|n| MTA_NAMES.contains(&n))
        {
            return true;
        }
        POSTFIX_NAMES.contains(&self.comm.as_str())
            && self
                .exe
                .as_deref()
                .is_none_or(|exe| exe.contains("postfix"))
    }
}

/// A network interface and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// What the audit saw on the host.
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// Rows of `/proc/net/tcp` and `/proc/net/tcp6`.
    pub sockets: Vec<Socket>,
    /// Processes by socket inode, lowest pid first.
    pub owners: HashMap<u64, Vec<Process>>,
    /// User names by uid.
    pub users: HashMap<u32, String>,
    pub interfaces: Vec<Interface>,
    /// Why a socket may have no known process (said with every such finding).
    pub unknown_owner_hint: String,
}

/// Where the view of the filter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewSource {
    /// The running daemon answered on its control socket.
    Daemon,
    /// No daemon answered; the links (and policy) pinned in the pin directory.
    Pins,
    /// Neither: nothing attached, ports assumed to be the default.
    Nothing,
}

/// An interface the filter is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub iface: String,
    pub xdp_mode: XdpMode,
}

/// Where port25 filters, and what.
#[derive(Clone, Debug, Serialize)]
pub struct FilterView {
    pub source: ViewSource,
    pub control_socket: String,
    pub pin_dir: String,
    pub daemon_pid: Option<u32>,
    pub attached: Vec<Attached>,
    /// The protected ports (of the SMTP ports, when read from pins).
    pub ports: Vec<u16>,
    /// Where `ports` came from; `nothing`: the default, assumed.
    pub ports_from: ViewSource,
    /// Monitor mode: would-be drops are counted, nothing is dropped.
    pub monitor: bool,
    /// What went wrong while finding out (an unreachable daemon, unreadable pins).
    pub notes: Vec<String>,
}

impl FilterView {
    /// Nothing attached, default ports.
    pub fn nothing(control_socket: &str, pin_dir: &str) -> Self {
        Self {
            source: ViewSource::Nothing,
            control_socket: control_socket.to_owned(),
            pin_dir: pin_dir.to_owned(),
            daemon_pid: None,
            attached: Vec::new(),
            ports: DEFAULT_PORTS.to_vec(),
            ports_from: ViewSource::Nothing,
            monitor: false,
            notes: Vec::new(),
        }
    }

    fn mode_of(&self, iface: &str) -> Option<XdpMode> {
        self.attached
            .iter()
            .find(|a| a.iface == iface)
            .map(|a| a.xdp_mode)
    }
}

/// How urgent a finding is. Ordered from most to least urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// An SMTP listener reachable where no filter is attached: act.
    NotProtected,
    /// Something to look at (outbound SMTP from a process that is not an MTA): act.
    Check,
    Ok,
    /// For the record; nothing to do.
    Info,
}

impl Level {
    pub fn needs_action(self) -> bool {
        matches!(self, Self::NotProtected | Self::Check)
    }
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A socket listening on an SMTP port.
    Listener,
    /// No socket listens on any SMTP port.
    NoListener,
    /// Connections from this host to a remote SMTP port.
    Outbound,
    /// Sessions of clients with this host's SMTP ports.
    Inbound,
    /// Something about the filter itself.
    Filter,
}

/// Who holds a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Lowest pid first (a forking server's parent, usually).
    pub processes: Vec<Process>,
    pub uid: u32,
    pub user: Option<String>,
    /// Why no process is named; `None` when one is.
    pub unknown: Option<String>,
}

impl Owner {
    /// "smtp-sink (pid 42, /usr/sbin/smtp-sink, user nobody)", "2 processes: ...", or what is
    /// known when no process is.
    pub fn describe(&self) -> String {
        let user = self
            .user
            .clone()
            .unwrap_or_else(|| format!("uid {}", self.uid));
        let Some(first) = self.processes.first() else {
            return format!(
                "owner unknown ({user}; {})",
                self.unknown.as_deref().unwrap_or("no process holds it")
            );
        };
        let exe = first
            .exe
            .as_deref()
            .map(|exe| format!(", {exe}"))
            .unwrap_or_default();
        let mut text = format!("{} (pid {}{exe}, user {user})", first.comm, first.pid);
        if self.processes.len() > 1 {
            let rest: Vec<String> = self.processes[1..]
                .iter()
                .map(|p| format!("{} (pid {})", p.comm, p.pid))
                .collect();
            let _ = write!(text, ", shared with {}", rest.join(", "));
        }
        text
    }

    /// The process the verdict names: "perl (pid 77)".
    fn short(&self) -> String {
        self.processes.first().map_or_else(
            || "an unknown process".to_owned(),
            |p| format!("{} (pid {})", p.comm, p.pid),
        )
    }
}

/// One thing the audit found, with what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub kind: Kind,
    pub port: Option<u16>,
    /// The listening address (listeners).
    pub address: Option<SocketAddr>,
    pub owner: Option<Owner>,
    /// Interfaces a listener can be reached on (not loopback).
    pub reachable_on: Vec<String>,
    pub filtered_on: Vec<String>,
    pub unfiltered_on: Vec<String>,
    /// Connections (outbound, inbound).
    pub connections: usize,
    /// Remote ends (outbound) or client addresses (inbound), at most a few.
    pub peers: Vec<String>,
    /// What was found, in one line.
    pub what: String,
    /// What the operator should do, in one line; starts with "NOT PROTECTED", "CHECK", "ok" or
    /// "info".
    pub verdict: String,
}

impl Finding {
    fn new(level: Level, kind: Kind, what: String, verdict: String) -> Self {
        Self {
            level,
            kind,
            port: None,
            address: None,
            owner: None,
            reachable_on: Vec::new(),
            filtered_on: Vec::new(),
            unfiltered_on: Vec::new(),
            connections: 0,
            peers: Vec::new(),
            what,
            verdict,
        }
    }
}

/// Counts by level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub needs_action: bool,
    pub not_protected: usize,
    pub check: usize,
    pub ok: usize,
    pub info: usize,
}

impl Summary {
    fn of(findings: &[Finding]) -> Self {
        let mut summary = Self::default();
        for finding in findings {
            match finding.level {
                Level::NotProtected => summary.not_protected += 1,
                Level::Check => summary.check += 1,
                Level::Ok => summary.ok += 1,
                Level::Info => summary.info += 1,
            }
        }
        summary.needs_action = summary.not_protected + summary.check > 0;
        summary
    }

    /// "2 findings need action (1 NOT PROTECTED, 1 CHECK); 3 ok, 1 info".
    pub fn line(&self) -> String {
        let rest = format!("{} ok, {} info", self.ok, self.info);
        if self.needs_action {
            let total = self.not_protected + self.check;
            format!(
                "{total} finding{} need{} action ({} NOT PROTECTED, {} CHECK); {rest}",
                if total == 1 { "" } else { "s" },
                if total == 1 { "s" } else { "" },
                self.not_protected,
                self.check
            )
        } else {
            format!("nothing needs action: {rest}")
        }
    }
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub smtp_ports: Vec<u16>,
    /// Interfaces that are up, loopback left out.
    pub interfaces: Vec<String>,
    pub filter: FilterView,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

/// Judges what `host` has against where `filter` is attached.
pub fn judge(host: &Host, filter: &FilterView) -> Report {
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
mod tests {
    use super::*;

    fn sock(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn listen(local: &str, inode: u64) -> Socket {
        Socket {
            local: sock(local),
            remote: if local.starts_with('[') {
                sock("[::]:0")
            } else {
                sock("0.0.0.0:0")
            },
            state: TcpState::LISTEN,
            uid: 0,
            inode,
        }
    }

    fn conn(local: &str, remote: &str, state: TcpState, uid: u32, inode: u64) -> Socket {
        Socket {
            local: sock(local),
            remote: sock(remote),
            state,
            uid,
            inode,
        }
    }

    fn process(pid: u32, comm: &str, exe: &str) -> Process {
        Process {
            pid,
            comm: comm.to_owned(),
            exe: Some(exe.to_owned()),
        }
    }

    fn iface(name: &str, addrs: &[&str]) -> Interface {
        Interface {
            name: name.to_owned(),
            up: true,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| ip(a)).collect(),
        }
    }

    /// lo, eth0 (198.18.0.1, 2001:db8:25::1), eth1 (198.18.1.1).
    fn host(sockets: Vec<Socket>, owners: &[(u64, Process)]) -> Host {
        let mut map: HashMap<u64, Vec<Process>> = HashMap::new();
        for (inode, p) in owners {
            map.entry(*inode).or_default().push(p.clone());
        }
        Host {
            sockets,
            owners: map,
            users: HashMap::from([(0, "root".to_owned()), (1000, "www-data".to_owned())]),
            interfaces: vec![
                iface("lo", &["127.0.0.1", "::1"]),
                iface("eth0", &["198.18.0.1", "2001:db8:25::1"]),
                iface("eth1", &["198.18.1.1"]),
            ],
            unknown_owner_hint: "another PID namespace?".to_owned(),
        }
    }

    fn daemon(attached: &[(&str, &str)], ports: &[u16]) -> FilterView {
        FilterView {
            source: ViewSource::Daemon,
            daemon_pid: Some(4242),
            attached: attached
                .iter()
                .map(|(iface, mode)| Attached {
                    iface: (*iface).to_owned(),
                    xdp_mode: *XdpMode::ALL.iter().find(|m| m.as_str() == *mode).unwrap(),
                })
                .collect(),
            ports: ports.to_vec(),
            ports_from: ViewSource::Daemon,
            ..FilterView::nothing("/run/port25/control.sock", "/sys/fs/bpf/port25")
        }
    }

    fn nothing() -> FilterView {
        FilterView::nothing("/run/port25/control.sock", "/sys/fs/bpf/port25")
    }

    fn postfix() -> Process {
        process(900, "master", "/usr/lib/postfix/sbin/master")
    }

    fn only(report: &Report, kind: Kind) -> Vec<&Finding> {
        report.findings.iter().filter(|f| f.kind == kind).collect()
    }

    #[test]
    fn wildcard_listener_without_filter_is_not_protected_on_every_interface() {
        let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
        let report = judge(&host, &nothing());
        let [finding] = only(&report, Kind::Listener)[..] else {
            panic!("one listener: {report:#?}");
        };
        assert_eq!(finding.level, Level::NotProtected);
        assert_eq!(finding.reachable_on, ["eth0", "eth1"]);
        assert_eq!(finding.unfiltered_on, ["eth0", "eth1"]);
        assert_eq!(
            finding.verdict,
            "NOT PROTECTED: no port25 filter is attached: run port25d on eth0, eth1 (interfaces = [\"eth0\", \"eth1\"]) or bind the MTA to a filtered address"
        );
        assert_eq!(
            finding.what,
            "listening on 0.0.0.0:25: master (pid 900, /usr/lib/postfix/sbin/master, user root)"
        );
        assert!(report.summary.needs_action);
        assert_eq!(report.summary.not_protected, 1);
    }

    #[test]
    fn listener_on_an_unfiltered_interface_names_the_interface_to_add() {
        let host = host(vec![listen("[::]:25", 10)], &[(10, postfix())]);
        let report = judge(&host, &daemon(&[("eth0", "native")], &[25]));
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.level, Level::NotProtected);
        assert_eq!(finding.filtered_on, ["eth0"]);
        assert_eq!(finding.unfiltered_on, ["eth1"]);
        assert_eq!(
            finding.verdict,
            "NOT PROTECTED: attach port25 to eth1 (interfaces = [\"eth0\", \"eth1\"]) or bind the MTA to a filtered address"
        );
    }

    #[test]
    fn listener_covered_everywhere_is_ok_and_says_how() {
        let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
        let report = judge(
            &host,
            &daemon(&[("eth0", "native"), ("eth1", "skb")], &[25]),
        );
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.level, Level::Ok);
        assert_eq!(
            finding.verdict,
            "ok: filtered on eth0 (native XDP), eth1 (skb XDP)"
        );
        assert!(!report.summary.needs_action);
        assert_eq!(report.summary.line(), "nothing needs action: 1 ok, 0 info");

        let mut monitor = daemon(&[("eth0", "native"), ("eth1", "skb")], &[25]);
        monitor.monitor = true;
        let report = judge(&host, &monitor);
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.level, Level::Ok);
        assert!(
            finding.verdict.contains("monitor mode"),
            "{}",
            finding.verdict
        );
    }

    #[test]
    fn listener_on_a_specific_address_needs_only_its_interface() {
        // 198.18.1.1 is eth1's; eth0 has no filter and does not matter. The v6 one is eth0's.
        let host = host(
            vec![
                listen("198.18.1.1:25", 10),
                listen("[2001:db8:25::1]:25", 11),
            ],
            &[(10, postfix()), (11, postfix())],
        );
        let report = judge(&host, &daemon(&[("eth1", "native")], &[25]));
        let listeners = only(&report, Kind::Listener);
        assert_eq!(listeners.len(), 2);
        let v4 = listeners
            .iter()
            .find(|f| f.address == Some(sock("198.18.1.1:25")))
            .expect("the v4 listener");
        assert_eq!(v4.level, Level::Ok);
        assert_eq!(v4.reachable_on, ["eth1"]);
        let v6 = listeners
            .iter()
            .find(|f| f.address == Some(sock("[2001:db8:25::1]:25")))
            .expect("the v6 listener");
        assert_eq!(v6.level, Level::NotProtected);
        assert_eq!(v6.unfiltered_on, ["eth0"]);
    }

    #[test]
    fn loopback_listeners_are_local_only() {
        let host = host(
            vec![listen("127.0.0.1:25", 10), listen("[::1]:587", 11)],
            &[(10, postfix()), (11, postfix())],
        );
        let report = judge(&host, &nothing());
        for finding in only(&report, Kind::Listener) {
            assert_eq!(finding.level, Level::Ok);
            assert_eq!(
                finding.verdict,
                "ok: local only (loopback), not reachable from the network"
            );
        }
        assert!(!report.summary.needs_action);
    }

    #[test]
    fn submission_ports_are_open_by_design_unless_protected() {
        let host = host(
            vec![listen("0.0.0.0:587", 10), listen("0.0.0.0:465", 11)],
            &[(10, postfix()), (11, postfix())],
        );
        let report = judge(&host, &daemon(&[("eth0", "native")], &[25]));
        for finding in only(&report, Kind::Listener) {
            assert_eq!(finding.level, Level::Ok);
            assert!(finding.filtered_on.is_empty(), "{finding:?}");
            assert_eq!(finding.unfiltered_on, ["eth0", "eth1"]);
            let port = finding.port.expect("a port");
            assert_eq!(
                finding.verdict,
                format!(
                    "ok if it requires AUTH (submission): port25 leaves it open by design; add {port} to `ports` to filter it"
                )
            );
        }
        // Protected, it is judged like 25: eth1 lacks the filter.
        let report = judge(&host, &daemon(&[("eth0", "native")], &[25, 587]));
        let sub = only(&report, Kind::Listener)
            .into_iter()
            .find(|f| f.port == Some(587))
            .expect("587");
        assert_eq!(sub.level, Level::NotProtected);
        assert_eq!(sub.unfiltered_on, ["eth1"]);
    }

    #[test]
    fn port_25_left_out_of_the_ports_is_not_protected() {
        let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
        let report = judge(
            &host,
            &daemon(&[("eth0", "native"), ("eth1", "native")], &[2525]),
        );
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.level, Level::NotProtected);
        assert_eq!(
            finding.verdict,
            "NOT PROTECTED: port25 filters port 2525, not 25: add 25 to `ports`"
        );
    }

    #[test]
    fn unknown_owner_is_said_and_does_not_change_the_verdict() {
        let host = host(vec![listen("0.0.0.0:25", 10)], &[]);
        let report = judge(
            &host,
            &daemon(&[("eth0", "native"), ("eth1", "native")], &[25]),
        );
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.level, Level::Ok);
        assert!(
            finding.what
                == "listening on 0.0.0.0:25: owner unknown (root; socket inode 10 is held by no process visible here: another PID namespace?)",
            "{}",
            finding.what
        );
        let owner = finding.owner.as_ref().expect("an owner record");
        assert!(owner.processes.is_empty());
    }

    #[test]
    fn no_listener_is_said() {
        let host = host(Vec::new(), &[]);
        let report = judge(&host, &nothing());
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].kind, Kind::NoListener);
        assert_eq!(report.findings[0].level, Level::Ok);
        assert!(!report.summary.needs_action);
    }

    #[test]
    fn outbound_smtp_from_a_script_is_to_check_from_the_mta_ok() {
        let host = host(
            vec![
                conn(
                    "198.18.0.1:40000",
                    "192.0.2.7:25",
                    TcpState::ESTABLISHED,
                    1000,
                    50,
                ),
                conn(
                    "198.18.0.1:40001",
                    "192.0.2.8:25",
                    TcpState::SYN_SENT,
                    1000,
                    51,
                ),
                conn(
                    "[2001:db8:25::1]:40002",
                    "[2001:db8::99]:25",
                    TcpState::ESTABLISHED,
                    106,
                    52,
                ),
                conn(
                    "198.18.0.1:40003",
                    "192.0.2.9:25",
                    TcpState::TIME_WAIT,
                    0,
                    0,
                ),
            ],
            &[
                (50, process(77, "perl", "/usr/bin/perl")),
                (51, process(77, "perl", "/usr/bin/perl")),
                (52, process(901, "smtp", "/usr/lib/postfix/sbin/smtp")),
            ],
        );
        let report = judge(&host, &nothing());
        let outbound = only(&report, Kind::Outbound);
        assert_eq!(outbound.len(), 3, "{outbound:#?}");
        let perl = outbound
            .iter()
            .find(|f| f.level == Level::Check)
            .expect("perl is to check");
        assert_eq!(perl.connections, 2);
        assert_eq!(perl.peers, ["192.0.2.7:25", "192.0.2.8:25"]);
        assert_eq!(
            perl.verdict,
            "CHECK: outbound SMTP from perl (pid 77): spam bot or a script? allow outbound 25 only to the smart host"
        );
        assert!(
            perl.what
                == "to port 25: perl (pid 77, /usr/bin/perl, user www-data), 2 connections: 192.0.2.7:25, 192.0.2.8:25",
            "{}",
            perl.what
        );
        let mta = outbound
            .iter()
            .find(|f| f.peers == ["[2001:db8::99]:25"])
            .expect("postfix's smtp");
        assert_eq!(mta.level, Level::Ok);
        assert_eq!(
            mta.verdict,
            "ok: your MTA delivering (consider a smart host)"
        );
        let gone = outbound
            .iter()
            .find(|f| f.level == Level::Info)
            .expect("the TIME_WAIT one");
        assert!(gone.what.contains("TIME_WAIT"), "{}", gone.what);
        assert_eq!(report.summary.check, 1);
        assert!(report.summary.needs_action);
    }

    #[test]
    fn outbound_to_this_host_is_local_and_unknown_holders_are_to_check() {
        let host = host(
            vec![
                listen("127.0.0.1:25", 1),
                // A PHP script handing mail to the local MTA: both ends show.
                conn(
                    "127.0.0.1:50000",
                    "127.0.0.1:25",
                    TcpState::ESTABLISHED,
                    1000,
                    60,
                ),
                conn(
                    "127.0.0.1:25",
                    "127.0.0.1:50000",
                    TcpState::ESTABLISHED,
                    0,
                    61,
                ),
                // Open, but its process is not visible.
                conn(
                    "198.18.0.1:40000",
                    "192.0.2.7:25",
                    TcpState::ESTABLISHED,
                    1000,
                    62,
                ),
            ],
            &[
                (1, postfix()),
                (60, process(500, "php-fpm8.2", "/usr/sbin/php-fpm8.2")),
                (61, process(910, "smtpd", "/usr/lib/postfix/sbin/smtpd")),
            ],
        );
        let report = judge(&host, &nothing());
        let outbound = only(&report, Kind::Outbound);
        assert_eq!(outbound.len(), 2, "{outbound:#?}");
        let local = outbound
            .iter()
            .find(|f| f.peers == ["127.0.0.1:25"])
            .expect("the local one");
        assert_eq!(local.level, Level::Ok);
        assert_eq!(local.verdict, "ok: mail handed to this host's own server");
        let unknown = outbound
            .iter()
            .find(|f| f.peers == ["192.0.2.7:25"])
            .expect("the unknown one");
        assert_eq!(unknown.level, Level::Check);
        assert!(
            unknown
                .verdict
                .starts_with("CHECK: outbound SMTP from an unknown process"),
            "{}",
            unknown.verdict
        );
        let inbound = only(&report, Kind::Inbound);
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].port, Some(25));
        assert_eq!(inbound[0].peers, ["127.0.0.1"]);
        assert_eq!(inbound[0].level, Level::Info);
        assert!(
            inbound[0].what.contains("smtpd (pid 910)"),
            "{}",
            inbound[0].what
        );
    }

    #[test]
    fn inbound_sessions_are_counted_per_port_with_few_peers_listed() {
        let mut sockets = vec![listen("0.0.0.0:25", 1)];
        for n in 0..8u16 {
            sockets.push(conn(
                "198.18.0.1:25",
                &format!("198.18.0.{}:4000{}", 10 + n, n),
                TcpState::ESTABLISHED,
                0,
                u64::from(100 + n),
            ));
        }
        sockets.push(conn(
            "198.18.0.1:25",
            "198.18.0.99:4999",
            TcpState::NEW_SYN_RECV,
            0,
            0,
        ));
        let host = host(sockets, &[(1, postfix())]);
        let report = judge(
            &host,
            &daemon(&[("eth0", "native"), ("eth1", "native")], &[25]),
        );
        let inbound = only(&report, Kind::Inbound);
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].connections, 9);
        assert_eq!(inbound[0].peers.len(), MAX_PEERS + 1);
        assert_eq!(inbound[0].peers[MAX_PEERS], "and 4 more");
        assert!(!report.summary.needs_action);
    }

    #[test]
    fn attached_interface_missing_here_is_noted() {
        let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
        let report = judge(
            &host,
            &daemon(
                &[("eth0", "native"), ("eth1", "native"), ("gw0", "skb")],
                &[25],
            ),
        );
        let filter = only(&report, Kind::Filter);
        assert_eq!(filter.len(), 1);
        assert!(
            filter[0].what.contains("no interface gw0"),
            "{}",
            filter[0].what
        );
        assert!(!report.summary.needs_action);
    }

    #[test]
    fn service_address_on_loopback_is_reachable_everywhere() {
        let mut host = host(vec![listen("192.0.2.25:25", 10)], &[(10, postfix())]);
        host.interfaces[0].addrs.push(ip("192.0.2.25"));
        let report = judge(&host, &daemon(&[("eth0", "native")], &[25]));
        let finding = only(&report, Kind::Listener)[0];
        assert_eq!(finding.reachable_on, ["eth0", "eth1"]);
        assert_eq!(finding.level, Level::NotProtected);
    }

    #[test]
    fn mta_names() {
        assert!(postfix().is_mta());
        assert!(process(1, "smtp", "/usr/lib/postfix/sbin/smtp").is_mta());
        assert!(process(1, "exim4", "/usr/sbin/exim4").is_mta());
        assert!(process(1, "sendmail-mta", "/usr/sbin/sendmail").is_mta());
        assert!(!process(1, "smtp", "/tmp/.x/smtp").is_mta());
        assert!(!process(1, "python3", "/usr/bin/python3.11").is_mta());
        let unknown_exe = Process {
            pid: 1,
            comm: "master".to_owned(),
            exe: None,
        };
        assert!(unknown_exe.is_mta());
    }

    #[test]
    fn summary_lines() {
        let summary = Summary {
            needs_action: true,
            not_protected: 1,
            check: 1,
            ok: 3,
            info: 1,
        };
        assert_eq!(
            summary.line(),
            "2 findings need action (1 NOT PROTECTED, 1 CHECK); 3 ok, 1 info"
        );
        let one = Summary {
            needs_action: true,
            not_protected: 1,
            ..Summary::default()
        };
        assert_eq!(
            one.line(),
            "1 finding needs action (1 NOT PROTECTED, 0 CHECK); 0 ok, 0 info"
        );
    }
}
