//! The egress guard's XDP side, on a router's LAN interface.

use super::*;

/// A router for a LAN: no connect() happens on it for forwarded mail, so the XDP program on its
/// LAN interface judges the SYNs on their way through.
///
/// ```text
///   lan ns  cl0 198.18.0.10 ── lan0 198.18.0.1  router (forwarding, smtp-sink :25)  wan0 198.18.1.1
///                                                                                   │
///   wan ns  wan0 198.18.1.25 (smart host), 198.18.1.26 (not): smtp-sink :25 ────────┘
/// ```
#[test]
fn a_router_forwards_smtp_from_its_lan_only_to_the_smart_hosts() {
    require_root();
    require_tools(SMTP_LAB_TOOLS);
    require_tools(&["sysctl"]);
    let work = WorkDir::new("egress-routed");
    let bpf = BpfFs::mount("eg-routed");
    let cgroup = Cgroup::new("eg-routed");
    let router = Netns::new("eg-routed-r");
    let lan = Netns::new("eg-routed-lan");
    let wan = Netns::new("eg-routed-wan");
    // Forwarding first: turning it on resets the interfaces' IPv6 settings.
    let forwarding = router
        .command("sysctl")
        .args([
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ])
        .status()
        .unwrap();
    assert!(forwarding.success(), "enabling forwarding in the router");
    veth(
        &VethEnd::new(&router, "lan0", "198.18.0.1/24", "2001:db8:25::1/64"),
        &VethEnd::new(&lan, "cl0", "198.18.0.10/24", "2001:db8:25::10/64"),
    );
    veth(
        &VethEnd::new(&router, "wan0", "198.18.1.1/24", "2001:db8:26::1/64"),
        &VethEnd::new(&wan, "wan0", "198.18.1.25/24", "2001:db8:26::25/64"),
    );
    wan.ip(&["addr", "add", "198.18.1.26/24", "dev", "wan0"]);
    wan.ip(&["addr", "add", "2001:db8:26::26/64", "dev", "wan0", "nodad"]);
    for (ns, via4, via6) in [
        (&lan, "198.18.0.1", "2001:db8:25::1"),
        (&wan, "198.18.1.1", "2001:db8:26::1"),
    ] {
        ns.ip(&["route", "add", "default", "via", via4]);
        ns.ip(&["-6", "route", "add", "default", "via", via6]);
    }
    let _sinks: Vec<SmtpSink<'_>> = [
        (&wan, "0.0.0.0:25"),
        (&wan, "[::]:25"),
        (&router, "0.0.0.0:25"),
    ]
    .into_iter()
    .map(|(ns, addr)| SmtpSink::start(ns, addr.parse().unwrap(), &work))
    .collect();

    let config = work.join("port25.toml");
    let write = |mode: &str| {
        fs::write(
            &config,
            format!(
                "interfaces = []\n[metrics]\nlisten = \"{METRICS}\"\n[egress]\nmode = \"{mode}\"\n\
                 smart_hosts = [\"198.18.1.25\", \"2001:db8:26::25\"]\ncgroup = \"{}\"\n\
                 forward_interfaces = [\"lan0\"]\n",
                cgroup.path().display()
            ),
        )
        .unwrap();
    };
    write("enforce");
    let pins = bpf.pin_dir();
    let mut daemon = Daemon::start_with_host_mounts(
        &router,
        None,
        &config,
        METRICS.parse().unwrap(),
        &work.join("port25d.log"),
        &[OsStr::new("--pin-dir"), pins.as_os_str()],
    );
    let from_lan = |server: &str| egress_client(&["--netns", lan.name(), "tcp", server, "25"]);

    for smart in ["198.18.1.25", "2001:db8:26::25"] {
        // The first SYN may wait for neighbour discovery on a busy machine: a few tries.
        let delivered = poll(Duration::from_secs(10), || {
            (from_lan(smart).ok == 1).then_some(())
        });
        assert!(delivered.is_some(), "LAN to the smart host {smart}");
    }
    for other in ["198.18.1.26", "2001:db8:26::26"] {
        let attempt = from_lan(other);
        assert_eq!(
            (attempt.ok, attempt.refused, attempt.failed),
            (0, 0, 1),
            "LAN to {other}: dropped on the way, so the connect times out: {}",
            attempt.line
        );
    }
    assert!(
        send_mail(&lan, ip("198.18.0.10"), ip("198.18.0.1"), 25).delivered,
        "mail to the router itself is not forwarded, so not judged"
    );
    let forwarded = |text: &str, verdict: &str, reason: &str| {
        metric(
            text,
            "port25_egress_forwarded_total",
            &[("verdict", verdict), ("reason", reason)],
        )
        .unwrap_or_else(|| panic!("no forwarded {verdict}/{reason}:\n{text}"))
    };
    let text = daemon.scrape();
    // SYNs, not connections: a retransmitted one counts again.
    assert!(forwarded(&text, "allow", "smart_host") >= 2.0, "{text}");
    // The client's SYN and its retransmissions within the 2 s timeout.
    assert!(forwarded(&text, "deny", "not_allowed") >= 2.0, "{text}");
    assert_eq!(
        connects(&text, "deny", "not_allowed"),
        0.0,
        "no connect() on the router"
    );
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("forwarded SYNs judged on: lan0"),
        "{status}"
    );

    // Monitor mode (SIGHUP): counted, let through.
    write("monitor");
    daemon.hup();
    let through = poll(Duration::from_secs(5), || {
        (from_lan("198.18.1.26").ok == 1).then_some(())
    });
    assert!(through.is_some(), "monitor mode:\n{}", daemon.log());
    assert!(forwarded(&daemon.scrape(), "would_deny", "not_allowed") >= 1.0);
}
