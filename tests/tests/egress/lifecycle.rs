//! The guard across a killed daemon, a restart, reloads (off, on, rejected, to a cgroup held in
//! exclusive mode) and smart hosts given by name.

use super::*;

#[test]
fn the_guard_outlives_a_killed_daemon_and_a_restart_takes_its_links_over() {
    let lab = Lab::new("restart");
    let config = lab.enforcing_beside_xdp();
    let refused = || lab.connect(&["tcp", OTHER_V4, "25"]).refused == 1;
    let daemon = lab.start(&config);
    assert!(refused(), "a connect to a host that is not a smart host");
    let links = lab.link_ids();
    assert!(
        links.iter().all(|id| id.ends_with(':')),
        "link ids: {links:?}"
    );
    daemon.kill();
    assert!(refused(), "a killed daemon leaves the guard refusing");

    let mut daemon = lab.start(&config);
    daemon.assert_logged("egress guard took over its pinned links on cgroup");
    assert_eq!(lab.link_ids(), links, "the same links");
    let programs = lab.programs_on_cgroup();
    for hook in ["port25_connect4", "port25_connect6"] {
        assert_eq!(programs.matches(hook).count(), 1, "one {hook}: {programs}");
    }
    assert!(refused());
    assert_eq!(
        connects(&daemon.scrape(), "deny", "not_allowed"),
        3.0,
        "counters kept across the restart"
    );

    // SIGHUP turns it off (the hooks go) and on again (they come back).
    lab.config_on("[\"gw0\"]", "off", "");
    daemon.hup();
    let off = poll(Duration::from_secs(5), || (!refused()).then_some(()));
    assert!(
        off.is_some(),
        "mode off lets connects through:\n{}",
        daemon.log()
    );
    lab.assert_hooks_gone();
    lab.enforcing_beside_xdp();
    daemon.hup();
    let on = poll(Duration::from_secs(5), || refused().then_some(()));
    assert!(on.is_some(), "enforce again:\n{}", daemon.log());

    // A bad [egress] keeps the running guard.
    lab.config_on("[\"gw0\"]", "enforce", "allow_users = [\"no-such-user\"]");
    daemon.hup();
    let rejected = poll(Duration::from_secs(5), || {
        daemon.log().contains("reload rejected").then_some(())
    });
    assert!(rejected.is_some(), "{}", daemon.log());
    assert!(refused(), "still refusing after a rejected reload");

    // Stopping detaches (on_exit = "detach", the default): the cgroup is free again.
    assert!(daemon.stop().success());
    assert!(!refused(), "detached on stop");
    lab.assert_hooks_gone();
}

#[test]
fn a_smart_host_by_name_follows_its_address() {
    let lab = Lab::new("names");
    let _sinks = lab.sinks();
    let hosts = lab.work.join("hosts");
    fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n{SMART_V4} relay.example.test\n"),
    )
    .unwrap();
    let config = lab.config(
        "enforce",
        "smart_hosts = [\"relay.example.test\"]\nrefresh = 5",
    );
    let daemon = lab.start_with_hosts(&config, Some(&hosts));
    assert_eq!(lab.connect(&["tcp", SMART_V4, "25"]).ok, 1);
    assert_eq!(lab.connect(&["tcp", OTHER_V4, "25"]).refused, 1);
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains(&format!("relay.example.test resolves to {SMART_V4}")),
        "{status}"
    );

    // The name moves (written in place: the bind mount holds the inode).
    fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n{OTHER_V4} relay.example.test\n"),
    )
    .unwrap();
    let moved = poll(Duration::from_secs(15), || {
        (lab.connect(&["tcp", OTHER_V4, "25"]).ok == 1).then_some(())
    });
    assert!(
        moved.is_some(),
        "the new address is picked up:\n{}",
        daemon.log()
    );
    assert_eq!(
        lab.connect(&["tcp", SMART_V4, "25"]).refused,
        1,
        "the old one is not a smart host now"
    );
    let logged = format!("smart host relay.example.test now resolves to [{OTHER_V4}]");
    assert!(
        poll(Duration::from_secs(2), || daemon
            .log()
            .contains(&logged)
            .then_some(()))
        .is_some(),
        "{}",
        daemon.log()
    );

    // A name that stops resolving keeps its last addresses.
    fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    daemon.wait_for_log("keeping its last addresses", Duration::from_secs(15));
    assert_eq!(lab.connect(&["tcp", OTHER_V4, "25"]).ok, 1);
}

#[test]
fn a_cgroup_held_in_exclusive_mode_is_refused_clearly() {
    let lab = Lab::new("exclusive");
    let daemon_config = lab.smart_config("enforce");
    let mut daemon = lab.start(&daemon_config);
    // Another program holds a second cgroup's connect4 hook in exclusive mode (bpftool's
    // default): port25's own program, attached the old way, without a link.
    let held = Cgroup::new("eg-held");
    let pin = lab.bpf.pin_dir().join("links/cgroup-connect4");
    let link = bpftool(&["link", "show", "pinned", pin.to_str().unwrap()]);
    let prog = link
        .split_whitespace()
        .skip_while(|word| *word != "prog")
        .nth(1)
        .unwrap_or_else(|| panic!("no program id in {link:?}"))
        .to_owned();
    let _exclusive = ExclusiveAttach::new(held.path(), &prog);

    let config = fs::read_to_string(&daemon_config).unwrap().replace(
        &format!("cgroup = \"{}\"", lab.cgroup.path().display()),
        &format!("cgroup = \"{}\"", held.path().display()),
    );
    fs::write(&daemon_config, config).unwrap();
    daemon.hup();
    let rejected = poll(Duration::from_secs(5), || {
        let log = daemon.log();
        log.lines()
            .find(|line| line.contains("reload rejected"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no rejected reload:\n{}", daemon.log()));
    assert!(
        rejected.contains(&format!(
            "the kernel refused to attach the egress guard to cgroup {}",
            held.path().display()
        )) && rejected.contains("exclusive mode"),
        "{rejected}"
    );
    // The guard is back where it was.
    assert_eq!(
        lab.connect(&["tcp", OTHER_V4, "25"]).refused,
        1,
        "{}",
        daemon.log()
    );
}

/// `bpftool cgroup attach CGROUP cgroup_inet4_connect id PROG` (exclusive), detached on drop.
struct ExclusiveAttach {
    cgroup: String,
    prog: String,
}

impl ExclusiveAttach {
    fn new(cgroup: &Path, prog: &str) -> Self {
        let attach = Self {
            cgroup: cgroup.to_str().unwrap().to_owned(),
            prog: prog.to_owned(),
        };
        run_ok(Command::new(tool("bpftool")).args([
            "cgroup",
            "attach",
            &attach.cgroup,
            "cgroup_inet4_connect",
            "id",
            prog,
        ]));
        attach
    }
}

impl Drop for ExclusiveAttach {
    fn drop(&mut self) {
        let _ = Command::new("bpftool")
            .args([
                "cgroup",
                "detach",
                &self.cgroup,
                "cgroup_inet4_connect",
                "id",
                &self.prog,
            ])
            .output();
    }
}

#[test]
fn on_exit_keep_leaves_the_guard_refusing_until_detach() {
    let lab = Lab::new("keep");
    let _sinks = lab.sinks();
    let config = lab.smart_config("enforce");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("on_exit = \"keep\"\n{text}")).unwrap();
    let daemon = lab.start(&config);
    let socket = daemon.control_socket().to_path_buf();
    assert_eq!(lab.connect(&["tcp", OTHER_V4, "25"]).refused, 1);
    assert!(daemon.stop().success());
    assert_eq!(
        lab.connect(&["tcp", OTHER_V4, "25"]).refused,
        1,
        "on_exit = keep: still refusing after SIGTERM"
    );
    // `port25d detach` with no daemon: the pinned hooks go.
    Daemon::detach_pins(&lab.bpf.pin_dir(), &socket);
    assert_eq!(lab.connect(&["tcp", OTHER_V4, "25"]).ok, 1, "detached");
    lab.assert_hooks_gone();
}

#[test]
fn hooks_taken_away_are_reported_and_attached_again() {
    let lab = Lab::new("taken");
    let config = lab.enforcing_beside_xdp();
    let refused = || lab.connect(&["tcp", OTHER_V4, "25"]).refused == 1;
    let daemon = lab.start(&config);
    assert!(refused(), "a connect to a host that is not a smart host");
    let lost = |daemon: &Daemon| {
        metric(
            &daemon.scrape(),
            "port25_detached_total",
            &[("hook", "egress_guard"), ("iface", "")],
        )
    };
    assert_eq!(lost(&daemon), Some(0.0), "exported from the start");
    // What another tool can do to the guard: detach its connect4 link.
    let connect4 = lab.link_ids()[0].trim_end_matches(':').to_owned();
    bpftool(&["link", "detach", "id", &connect4]);
    let back = poll(Duration::from_secs(15), || {
        (lost(&daemon) == Some(1.0) && refused()).then_some(())
    });
    assert!(
        back.is_some(),
        "reported and attached again:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("the egress guard's cgroup hooks were detached by someone else"),
        "{log}"
    );
    assert!(log.contains("egress guard attached again"), "{log}");
    let programs = lab.programs_on_cgroup();
    for hook in ["port25_connect4", "port25_connect6"] {
        assert_eq!(programs.matches(hook).count(), 1, "one {hook}: {programs}");
    }
}
