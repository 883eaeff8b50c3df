//! The audit's inputs, read from the running system: `/proc/net/tcp{,6}` and `/proc/PID/fd` (this
//! network namespace's sockets, every process of this PID namespace), `/etc/passwd`,
//! `getifaddrs`, and the filter's whereabouts from the running daemon (control socket) or, when
//! none answers, from the pins it left.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData};
use port25_common::{PORT_WORDS, SLOTS, Settings, egress::CONNECT4_PROGRAM, maps, port_bit};

use super::model::*;
use super::mta::{self, MtaConfig};
use super::outsider;
use super::procnet::{Socket, parse_tcp_table, socket_inode};
use super::smtp;
use crate::users::{self, is_root};
use crate::{
    config::cgroup2_root,
    control::{self, Endpoint, Probe},
    model::{EgressMode, Mode, Policy},
    pins::PinDir,
    proto::EgressStatus,
};

/// Sockets, their processes, users and interfaces of the running system.
pub(super) fn read_host() -> anyhow::Result<Host> {
    let mut sockets = Vec::new();
    for (path, required) in [("/proc/net/tcp", true), ("/proc/net/tcp6", false)] {
        match std::fs::read_to_string(path) {
            Ok(text) => sockets.extend(parse_tcp_table(path, &text)?),
            // No IPv6 in this kernel (ipv6.disable=1): no tcp6 table, no IPv6 sockets.
            Err(err) if !required && err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("reading {path}")),
        }
    }
    sockets.retain(|s: &Socket| {
        SMTP_PORTS.contains(&s.local.port()) || SMTP_PORTS.contains(&s.remote.port())
    });
    let wanted: HashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    let owners = scan_owners(Path::new("/proc"), &wanted);
    let users = std::fs::read_to_string("/etc/passwd")
        .map(|text| users::names_by_uid(&text))
        .unwrap_or_default();
    let unknown_owner_hint = if is_root() {
        "it belongs to another PID namespace (a container?)"
    } else {
        "run the audit as root to see other users' processes"
    }
    .to_owned();
    Ok(Host {
        sockets,
        owners,
        users,
        interfaces: read_interfaces()?,
        unknown_owner_hint,
    })
}

/// The processes holding each of the `wanted` socket inodes, found through `/proc/PID/fd/*`
/// links (`socket:[INODE]`). Processes that vanish or cannot be read are skipped.
pub(super) fn scan_owners(proc_root: &Path, wanted: &HashSet<u64>) -> HashMap<u64, Vec<Process>> {
    let mut owners: HashMap<u64, Vec<Process>> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut process = None;
        for fd in fds.filter_map(Result::ok) {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|link| socket_inode(&link.to_string_lossy()))
                .filter(|inode| wanted.contains(inode))
            else {
                continue;
            };
            let process = process.get_or_insert_with(|| Process {
                pid,
                comm: std::fs::read_to_string(dir.join("comm"))
                    .map(|c| c.trim_end_matches('\n').to_owned())
                    .unwrap_or_else(|_| "?".to_owned()),
                exe: std::fs::read_link(dir.join("exe"))
                    .ok()
                    .map(|exe| exe.to_string_lossy().into_owned()),
            });
            let holders = owners.entry(inode).or_default();
            if !holders.iter().any(|p| p.pid == pid) {
                holders.push(process.clone());
            }
        }
    }
    owners
}

/// Every interface of this network namespace with its IPv4 and IPv6 addresses.
pub(super) fn read_interfaces() -> anyhow::Result<Vec<Interface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list head in `head`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error()).context("listing network interfaces (getifaddrs)");
    }
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, which is not freed yet.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let index = match interfaces.iter().position(|i| i.name == name) {
            Some(index) => index,
            None => {
                interfaces.push(Interface {
                    name,
                    up: false,
                    loopback: false,
                    addrs: Vec::new(),
                });
                interfaces.len() - 1
            }
        };
        let interface = &mut interfaces[index];
        interface.up |= entry.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        interface.loopback |= entry.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
        // SAFETY: ifa_addr is null or points to a sockaddr of the family it names.
        if let Some(addr) = unsafe { sockaddr_ip(entry.ifa_addr) } {
            interface.addrs.push(addr);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference into it survives.
    unsafe { libc::freeifaddrs(head) };
    Ok(interfaces)
}

/// The IP address in a sockaddr, for AF_INET and AF_INET6.
///
/// # Safety
/// `addr` is null or points to a valid sockaddr whose size fits its `sa_family`.
unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the contract.
    let family = libc::c_int::from(unsafe { (*addr).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The mail server
// ---------------------------------------------------------------------------------------------

/// What the audit asks of the mail server (`port25d audit`'s flags).
#[derive(Clone, Debug, Default)]
pub(crate) struct MailChecks {
    /// Sockets and the filter only: no conversation with the mail server, no MTA configuration.
    pub filter_only: bool,
    /// The operator forbids the open-relay probe.
    pub no_relay_probe: bool,
    /// Postfix's configuration directory (`postconf -c`); else postconf's default.
    pub postfix_config: Option<PathBuf>,
}

/// Talks to each SMTP listener as a client would, asks each port-25 listener to relay from the
/// probe's namespace, reads the MTA's configuration, and asks the daemon how its policy judges
/// the addresses the MTA receives mail from.
pub(super) fn read_mail(
    host: &Host,
    filter: &FilterView,
    daemon: &Endpoint,
    checks: &MailChecks,
) -> MailView {
    if checks.filter_only {
        return MailView::default();
    }
    let mut offers = Vec::new();
    let mut asked = HashSet::new();
    for socket in host.listeners() {
        let target = SocketAddr::new(local_target(socket.local.ip()), socket.local.port());
        if asked.insert(target) {
            let port = socket.local.port();
            offers.push(Looked {
                port,
                listener: socket.local,
                target,
                offer: smtp::look(target, port == 465),
            });
        }
    }
    let mta = mta::read(checks.postfix_config.as_deref());
    MailView {
        looked: true,
        offers,
        relay_probe: relay_probe(host, checks),
        inbound_verdicts: mta
            .as_ref()
            .map(|mta| inbound_verdicts(mta, filter, daemon))
            .unwrap_or_default(),
        mta,
    }
}

/// Where a client on this host reaches a listener on `ip`: loopback for a wildcard.
fn local_target(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Asks each port-25 listener the network reaches to relay, from the probe's own namespace.
fn relay_probe(host: &Host, checks: &MailChecks) -> RelayProbe {
    if checks.no_relay_probe {
        return RelayProbe::No {
            why: "open-relay probe skipped (--no-relay-probe)".to_owned(),
        };
    }
    let mut targets: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut ipv6_only = Vec::new();
    for socket in host.listeners().filter(|s| s.local.port() == 25) {
        let ip = match socket.local.ip() {
            ip if ip.is_loopback() => continue,
            ip if ip.is_unspecified() => IpAddr::V4(outsider::HOST_END),
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    ipv6_only.push(socket.local.to_string());
                    continue;
                }
            },
        };
        let target = SocketAddr::new(ip, 25);
        if !targets.iter().any(|(_, t)| *t == target) {
            targets.push((socket.local, target));
        }
    }
    if targets.is_empty() {
        let why = if ipv6_only.is_empty() {
            "open-relay probe not run: nothing the network reaches listens on port 25".to_owned()
        } else {
            format!(
                "open-relay probe not run: the probe speaks IPv4, and port 25 listens on {} only",
                ipv6_only.join(", ")
            )
        };
        return RelayProbe::No { why };
    }
    let in_use: Vec<IpAddr> = host
        .interfaces
        .iter()
        .flat_map(|i| i.addrs.iter().copied())
        .collect();
    let probed = outsider::from_outside(&in_use, |source| {
        let tries = targets
            .iter()
            .map(|(listener, target)| RelayTry {
                listener: *listener,
                target: *target,
                answer: smtp::ask_to_relay(*target, source),
            })
            .collect();
        (source, tries)
    });
    match probed {
        Ok((source, tries)) => RelayProbe::Yes { source, tries },
        Err(why) => RelayProbe::No {
            why: format!("open-relay probe not run: {why}"),
        },
    }
}

/// The live policy's verdict, by `port25d why`, for each address the MTA receives mail from,
/// while the policy drops what no list allows. Empty when no daemon answers.
fn inbound_verdicts(
    mta: &MtaConfig,
    filter: &FilterView,
    daemon: &Endpoint,
) -> Vec<InboundVerdict> {
    if filter.source != ViewSource::Daemon || filter.policy != Some(Policy::Drop) {
        return Vec::new();
    }
    let relayhosts = mta.relayhosts.iter().flat_map(|relayhost| {
        relayhost
            .addrs
            .iter()
            .map(move |addr| (*addr, format!("the smart host {}", relayhost.written)))
    });
    let filters = mta
        .mail_filters
        .iter()
        .map(|addr| (*addr, "the content filter".to_owned()));
    relayhosts
        .chain(filters)
        .filter(|(addr, _)| !addr.is_loopback())
        .filter_map(|(addr, role)| {
            let why = control::why(daemon, &addr.to_string(), 25).ok()?;
            Some(InboundVerdict {
                addr,
                role,
                verdict: why.verdict,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Where the filter is
// ---------------------------------------------------------------------------------------------

/// The filter as the running daemon reports it, or else as its pins show it.
pub(super) fn read_filter(daemon: &Endpoint, pin_dir: &Path) -> FilterView {
    let mut view = FilterView::nothing(
        &daemon.socket.display().to_string(),
        &pin_dir.display().to_string(),
    );
    if !is_root() {
        view.notes.push(
            "not running as root: the control socket, the pins and other users' processes may be out of reach".to_owned(),
        );
    }
    if control::probe(&daemon.socket) == Probe::Listening {
        match control::status(daemon) {
            Ok(status) => {
                view.source = ViewSource::Daemon;
                view.daemon_pid = Some(status.pid);
                view.attached = status
                    .interfaces
                    .iter()
                    .map(|i| Attached {
                        iface: i.iface.clone(),
                        xdp_mode: i.xdp_mode,
                    })
                    .collect();
                view.ports.clone_from(&status.ports);
                view.ports_from = ViewSource::Daemon;
                view.monitor = status.mode == Mode::Monitor;
                view.policy = Some(status.policy);
                view.egress = egress_of(daemon, &status.egress, &mut view.notes);
                return view;
            }
            Err(err) => view.notes.push(format!("{err:#}; using the pins")),
        }
    }
    let pins = PinDir::existing(pin_dir);
    view.egress.pinned = pins.cgroup_link(CONNECT4_PROGRAM).exists();
    view.attached = pins
        .all_links()
        .iter()
        .filter_map(|(name, _)| parse_link_name(name))
        .collect();
    // xdp_coexist = "libxdp": the filter's pins are libxdp's.
    view.attached.extend(
        crate::datapath::in_dispatchers()
            .into_iter()
            .map(|(iface, xdp_mode)| Attached { iface, xdp_mode }),
    );
    if view.attached.is_empty() {
        return view;
    }
    view.source = ViewSource::Pins;
    match pinned_policy(&pins) {
        Ok((ports, monitor)) => {
            view.ports = ports;
            view.ports_from = ViewSource::Pins;
            view.monitor = monitor;
        }
        Err(err) => view.notes.push(format!(
            "cannot read the pinned policy in {}: {err:#}; assuming the default ports",
            pin_dir.display()
        )),
    }
    view
}

/// The egress guard as the daemon reports it, with the processes of its kept events.
fn egress_of(daemon: &Endpoint, status: &EgressStatus, notes: &mut Vec<String>) -> EgressView {
    let root = cgroup2_root().ok().map(|root| root.display().to_string());
    let mut view = EgressView {
        mode: status.mode,
        whole_host: status.cgroup.is_some() && status.cgroup == root,
        cgroup: status.cgroup.clone(),
        pinned: false,
        refused: Vec::new(),
        ports: status.ports.clone(),
        smart_hosts: status.smart_hosts.clone(),
        allow_users: status.allow_users.clone(),
        allow_cgroups: status.allow_cgroups.clone(),
    };
    if status.mode == EgressMode::Off {
        return view;
    }
    let events = match control::egress_events(daemon, 0) {
        Ok(events) => events,
        Err(err) => {
            notes.push(format!("cannot read the egress events: {err:#}"));
            return view;
        }
    };
    let mut by_process: BTreeMap<(String, String, String), Refused> = BTreeMap::new();
    for event in events {
        let user = event
            .user
            .clone()
            .unwrap_or_else(|| format!("uid {}", event.uid));
        let key = (event.comm.clone(), user.clone(), event.cgroup.clone());
        let refused = by_process.entry(key).or_insert_with(|| Refused {
            comm: event.comm.clone(),
            user,
            cgroup: event.cgroup.clone(),
            connects: 0,
            destinations: Vec::new(),
        });
        refused.connects += 1 + u64::from(event.suppressed);
        let dest = std::net::SocketAddr::new(event.dest, event.port).to_string();
        if refused.destinations.len() < MAX_DESTINATIONS && !refused.destinations.contains(&dest) {
            refused.destinations.push(dest);
        }
    }
    view.refused = by_process.into_values().collect();
    view.refused
        .sort_by_key(|refused| std::cmp::Reverse(refused.connects));
    view
}

/// Destinations named per refused process.
const MAX_DESTINATIONS: usize = 5;

/// `xdp-native-eth0` -> eth0 in native mode; other links are not XDP.
pub(super) fn parse_link_name(name: &str) -> Option<Attached> {
    PinDir::parse_xdp_link_name(name).map(|(xdp_mode, iface)| Attached {
        iface: iface.to_owned(),
        xdp_mode,
    })
}

/// Which SMTP ports the pinned live policy protects, and whether it is in monitor mode.
fn pinned_policy(pins: &PinDir) -> anyhow::Result<(Vec<u16>, bool)> {
    fn array<V: aya::Pod>(pins: &PinDir, name: &str) -> anyhow::Result<Array<MapData, V>> {
        let path = pins.map(name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Array::try_from(Map::from_map_data(data)?)?)
    }
    let generation = array::<u32>(pins, maps::ACTIVE)?.get(&0, 0)?;
    let slot = generation % SLOTS;
    let settings = array::<Settings>(pins, maps::SETTINGS)?.get(&slot, 0)?;
    let words = array::<u32>(pins, maps::PORTS)?;
    let mut ports = Vec::new();
    for port in SMTP_PORTS {
        let (word, mask) = port_bit(port);
        if words.get(&(slot * PORT_WORDS + word), 0)? & mask != 0 {
            ports.push(port);
        }
    }
    Ok((ports, settings.monitor != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::XdpMode;

    #[test]
    fn link_names() {
        assert_eq!(
            parse_link_name("xdp-native-eth0"),
            Some(Attached {
                iface: "eth0".to_owned(),
                xdp_mode: XdpMode::Native
            })
        );
        assert_eq!(
            parse_link_name("xdp-skb-br-lan"),
            Some(Attached {
                iface: "br-lan".to_owned(),
                xdp_mode: XdpMode::Skb
            })
        );
        assert_eq!(parse_link_name("tc-synack-eth0"), None);
        assert_eq!(parse_link_name("xdp-other-eth0"), None);
        assert_eq!(parse_link_name("xdp-native-"), None);
    }

    #[test]
    fn this_process_owns_its_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let sockets = parse_tcp_table("tcp", &text).expect("valid rows");
        let socket = sockets
            .iter()
            .find(|s| s.local.port() == port && s.state == crate::audit::procnet::TcpState::LISTEN)
            .expect("our listener in /proc/net/tcp");
        assert_eq!(socket.local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let owners = scan_owners(Path::new("/proc"), &HashSet::from([socket.inode]));
        let holders = owners.get(&socket.inode).expect("an owner");
        assert_eq!(holders[0].pid, std::process::id());
        assert!(holders[0].exe.is_some());
    }

    #[test]
    fn interfaces_include_loopback() {
        let interfaces = read_interfaces().expect("getifaddrs");
        let lo = interfaces
            .iter()
            .find(|i| i.loopback)
            .expect("a loopback interface");
        assert!(
            lo.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{lo:?}"
        );
    }
}
