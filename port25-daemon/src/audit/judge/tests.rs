use super::*;
use std::collections::HashMap;

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
