use super::*;
use std::collections::HashMap;

use crate::model::XdpMode;

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
                xdp_mode: XdpMode::named(mode).unwrap(),
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

/// The one finding about the listener on `port`.
fn listener(report: &Report, port: u16) -> &Finding {
    let found: Vec<&Finding> = only(report, Kind::Listener)
        .into_iter()
        .filter(|f| f.port == Some(port))
        .collect();
    let [finding] = found[..] else {
        panic!("one listener on {port}: {report:#?}");
    };
    finding
}

/// The one outbound finding whose peers include `peer`.
fn outbound_to<'a>(report: &'a Report, peer: &str) -> &'a Finding {
    let found: Vec<&Finding> = only(report, Kind::Outbound)
        .into_iter()
        .filter(|f| f.peers.iter().any(|p| p == peer))
        .collect();
    let [finding] = found[..] else {
        panic!("one outbound finding to {peer}: {report:#?}");
    };
    finding
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn attached(iface: &str, mode: XdpMode) -> Attached {
    Attached {
        iface: iface.to_owned(),
        xdp_mode: mode,
    }
}

#[test]
fn wildcard_listener_without_filter_is_not_protected_on_every_interface() {
    let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
    let report = judge(&host, &nothing(), MailView::default());
    let finding = listener(&report, 25);
    assert_eq!(finding.level, Level::NotProtected);
    assert_eq!(finding.reachable_on, ["eth0", "eth1"]);
    assert_eq!(
        finding.verdict,
        Advice::AttachTo {
            missing: names(&["eth0", "eth1"]),
            interfaces: names(&["eth0", "eth1"]),
            none_attached: true,
        }
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
    let report = judge(
        &host,
        &daemon(&[("eth0", "native")], &[25]),
        MailView::default(),
    );
    let finding = listener(&report, 25);
    assert_eq!(finding.filtered_on, ["eth0"]);
    assert_eq!(
        finding.verdict,
        Advice::AttachTo {
            missing: names(&["eth1"]),
            interfaces: names(&["eth0", "eth1"]),
            none_attached: false,
        }
    );
}

#[test]
fn listener_covered_everywhere_is_ok_and_says_how() {
    let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
    let mut filter = daemon(&[("eth1", "skb"), ("eth0", "native")], &[25]);
    let filtered = |monitor| Advice::Filtered {
        on: vec![
            attached("eth0", XdpMode::Native),
            attached("eth1", XdpMode::Skb),
        ],
        monitor,
        pinned_only: false,
    };
    let report = judge(&host, &filter, MailView::default());
    assert_eq!(listener(&report, 25).verdict, filtered(false));
    // The info: the egress guard is off.
    assert_eq!(report.summary.line(), "nothing needs action: 1 ok, 1 info");

    filter.monitor = true;
    assert_eq!(
        listener(&judge(&host, &filter, MailView::default()), 25).verdict,
        filtered(true)
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
    let report = judge(
        &host,
        &daemon(&[("eth1", "native")], &[25]),
        MailView::default(),
    );
    let listeners = only(&report, Kind::Listener);
    assert_eq!(listeners.len(), 2);
    let at = |address: &str| {
        let address = Some(sock(address));
        *listeners
            .iter()
            .find(|f| f.address == address)
            .expect("a listener there")
    };
    let v4 = at("198.18.1.1:25");
    assert_eq!(v4.level, Level::Ok);
    assert_eq!(v4.reachable_on, ["eth1"]);
    let v6 = at("[2001:db8:25::1]:25");
    assert_eq!(v6.level, Level::NotProtected);
    assert_eq!(v6.unfiltered_on, ["eth0"]);
}

#[test]
fn loopback_listeners_are_local_only() {
    let host = host(
        vec![listen("127.0.0.1:25", 10), listen("[::1]:587", 11)],
        &[(10, postfix()), (11, postfix())],
    );
    let report = judge(&host, &nothing(), MailView::default());
    for port in [25, 587] {
        assert_eq!(listener(&report, port).verdict, Advice::LocalOnly);
    }
    assert!(!report.summary.needs_action);
}

#[test]
fn submission_ports_are_open_by_design_unless_protected() {
    let host = host(
        vec![listen("0.0.0.0:587", 10), listen("0.0.0.0:465", 11)],
        &[(10, postfix()), (11, postfix())],
    );
    let report = judge(
        &host,
        &daemon(&[("eth0", "native")], &[25]),
        MailView::default(),
    );
    for port in [465, 587] {
        let finding = listener(&report, port);
        assert_eq!(finding.unfiltered_on, ["eth0", "eth1"]);
        assert_eq!(finding.verdict, Advice::SubmissionOpen { port });
    }
    // Protected, it is judged like 25: eth1 lacks the filter.
    let report = judge(
        &host,
        &daemon(&[("eth0", "native")], &[25, 587]),
        MailView::default(),
    );
    let sub = listener(&report, 587);
    assert_eq!(sub.level, Level::NotProtected);
    assert_eq!(sub.unfiltered_on, ["eth1"]);
}

#[test]
fn port_25_left_out_of_the_ports_is_not_protected() {
    let host = host(vec![listen("0.0.0.0:25", 10)], &[(10, postfix())]);
    let filter = daemon(&[("eth0", "native"), ("eth1", "native")], &[2525]);
    let finding = judge(&host, &filter, MailView::default());
    assert_eq!(
        listener(&finding, 25).verdict,
        Advice::PortLeftOut { ports: vec![2525] }
    );
}

#[test]
fn unknown_owner_is_said_and_does_not_change_the_verdict() {
    let host = host(vec![listen("0.0.0.0:25", 10)], &[]);
    let report = judge(
        &host,
        &daemon(&[("eth0", "native"), ("eth1", "native")], &[25]),
        MailView::default(),
    );
    let finding = listener(&report, 25);
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
    let report = judge(&host, &nothing(), MailView::default());
    let kinds: Vec<Kind> = report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [Kind::NoListener, Kind::Egress]);
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
    let report = judge(&host, &nothing(), MailView::default());
    assert_eq!(only(&report, Kind::Outbound).len(), 3, "{report:#?}");
    let perl = outbound_to(&report, "192.0.2.7:25");
    assert_eq!(perl.connections, 2);
    assert_eq!(perl.peers, ["192.0.2.7:25", "192.0.2.8:25"]);
    assert_eq!(
        perl.verdict,
        Advice::SmtpFromNonMta {
            process: "perl (pid 77)".to_owned()
        }
    );
    assert!(
        perl.what
            == "to port 25: perl (pid 77, /usr/bin/perl, user www-data), 2 connections: 192.0.2.7:25, 192.0.2.8:25",
        "{}",
        perl.what
    );
    let mta = outbound_to(&report, "[2001:db8::99]:25");
    assert_eq!(mta.verdict, Advice::MtaDelivering);
    let gone = outbound_to(&report, "192.0.2.9:25");
    assert_eq!(gone.verdict, Advice::SenderGone);
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
    let report = judge(&host, &nothing(), MailView::default());
    assert_eq!(only(&report, Kind::Outbound).len(), 2, "{report:#?}");
    let local = outbound_to(&report, "127.0.0.1:25");
    assert_eq!(local.verdict, Advice::LocalHandoff);
    let unknown = outbound_to(&report, "192.0.2.7:25");
    assert_eq!(
        unknown.verdict,
        Advice::SmtpFromNonMta {
            process: "an unknown process".to_owned()
        }
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
        MailView::default(),
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
        MailView::default(),
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
    let report = judge(
        &host,
        &daemon(&[("eth0", "native")], &[25]),
        MailView::default(),
    );
    let finding = listener(&report, 25);
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
        open_relay: 0,
        not_protected: 1,
        check: 1,
        ok: 3,
        info: 1,
    };
    assert_eq!(
        summary.line(),
        "2 findings need action (1 NOT PROTECTED, 1 CHECK); 3 ok, 1 info"
    );
    let relay = Summary {
        needs_action: true,
        open_relay: 2,
        check: 1,
        ..Summary::default()
    };
    assert_eq!(
        relay.line(),
        "3 findings need action (2 OPEN RELAY, 0 NOT PROTECTED, 1 CHECK); 0 ok, 0 info"
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

#[test]
fn the_egress_guard_is_judged_with_what_it_refused() {
    let levels = |egress: &EgressView| -> Vec<(Level, String)> {
        judge_egress(egress)
            .into_iter()
            .map(|f| (f.level, f.verdict.to_string()))
            .collect()
    };
    let off = levels(&EgressView::default());
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].0, Level::Info, "{off:?}");
    assert!(off[0].1.contains("not guarded"), "{off:?}");

    let detached = EgressView {
        mode: EgressMode::Enforce,
        ..EgressView::default()
    };
    assert_eq!(levels(&detached)[0].0, Level::NotProtected);

    let guarded = EgressView {
        mode: EgressMode::Monitor,
        cgroup: Some("/sys/fs/cgroup".to_owned()),
        whole_host: true,
        pinned: false,
        refused: vec![Refused {
            comm: "perl".to_owned(),
            user: "www-data".to_owned(),
            cgroup: "/system.slice/php-fpm.service".to_owned(),
            connects: 12,
            destinations: vec!["192.0.2.7:25".to_owned()],
        }],
        ..EgressView::default()
    };
    let found = levels(&guarded);
    assert_eq!(found[0].0, Level::Ok);
    assert!(
        found[0]
            .1
            .contains("every process on the host (monitor mode"),
        "{found:?}"
    );
    assert_eq!(found[1].0, Level::Check);
    assert!(
        found[1].1.contains("perl tried outbound SMTP to servers that are not smart hosts 12 times (let through: monitor mode)"),
        "{found:?}"
    );
}
