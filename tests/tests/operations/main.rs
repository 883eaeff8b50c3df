//! Operations, as an operator runs port25 for years: the filter outlives a killed daemon and a
//! restart takes it over; runtime lists (fail2ban's way in) expire and survive restarts; a hundred
//! reloads under mail traffic lose nothing; watched list directories reload by themselves.
//!
//! ```text
//!   allowed  cl0 198.18.0.10/24 ── gw0 198.18.0.1/24 ┐
//!                                                      gw (smtp-sink :25, port25d on gw0 and gw1)
//!   other    cl0 198.18.1.20/24 ── gw1 198.18.1.1/24 ┘
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use port25_testkit::{
    lab::{
        ALLOWED_V4, BpfFs, Daemon, GW_A_V4, GW_B_V4, Gateway, METRICS, Netns, OTHER_V4, SmtpSink,
        WorkDir, ip, metric, metric_sum, poll, require_tools, send_mail, tc_synack_pins,
        xdp_program_ids,
    },
    require_root,
};

mod evidence;
mod rollout;
mod safety;

/// One test's lab: the gateway with its two clients, a work directory and a private bpffs for
/// the pins, all named after the test's tag.
struct Lab {
    net: Gateway,
    work: WorkDir,
    bpf: BpfFs,
}

impl Lab {
    fn new(tag: &str) -> Self {
        require_root();
        require_tools(&["ip", "curl", "swaks", "smtp-sink", "ss"]);
        Self {
            net: Gateway::allowed_and_other(tag, &[]),
            work: WorkDir::new(&format!("ops-{tag}")),
            bpf: BpfFs::mount(&format!("ops-{tag}")),
        }
    }

    fn gw(&self) -> &Netns {
        &self.net.gw
    }

    fn allowed(&self) -> &Netns {
        &self.net.clients[0]
    }

    fn other(&self) -> &Netns {
        &self.net.clients[1]
    }

    /// The MTA: an smtp-sink on the gateway's port 25.
    fn sink(&self) -> SmtpSink<'_> {
        SmtpSink::start(self.gw(), "0.0.0.0:25".parse().unwrap(), &self.work)
    }

    fn delivers_from_allowed(&self) -> bool {
        send_mail(self.allowed(), ip(ALLOWED_V4), ip(GW_A_V4), 25).delivered
    }

    fn delivers_from_other(&self) -> bool {
        send_mail(self.other(), ip(OTHER_V4), ip(GW_B_V4), 25).delivered
    }

    /// Writes `port25.toml` in the work directory: both interfaces, policy drop, and `extra`.
    fn config(&self, extra: &str) -> PathBuf {
        self.config_named("port25.toml", extra)
    }

    /// The usual policy: drop, but for the allowlisted client.
    fn allowing_one(&self) -> PathBuf {
        self.config(&format!("[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]"))
    }

    fn config_named(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.work.join(name);
        let text = format!(
            "interfaces = [\"gw0\", \"gw1\"]\npolicy = \"drop\"\n{extra}\n[metrics]\nlisten = \"{METRICS}\"\n"
        );
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts port25d on `config`, logging to `log` in the work directory, with the lab's pins, and
    /// the same state and control socket across restarts of one test.
    fn start(&self, config: &Path, log: &str) -> Daemon<'_> {
        let pins = self.bpf.pin_dir();
        Daemon::start_in(self.gw(), config, &self.work, log, Some(&pins))
    }
}

fn packets(text: &str, verdict: &str, reason: &str) -> f64 {
    metric_sum(
        text,
        "port25_packets_total",
        &[("verdict", verdict), ("reason", reason)],
    )
}

#[test]
fn a_killed_daemon_leaves_the_filter_enforcing_and_a_restart_takes_it_over() {
    let lab = Lab::new("kill");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();

    let daemon = lab.start(&cfg, "first.log");
    assert!(lab.delivers_from_allowed(), "allowlisted before the kill");
    assert!(!lab.delivers_from_other(), "blocked before the kill");
    let before = daemon.scrape();
    let passed_before = packets(&before, "pass", "allowlisted");
    let dropped_before = packets(&before, "drop", "not_allowlisted");
    let program_before = xdp_program_ids(lab.gw(), "gw0");
    daemon.kill();

    // Nobody runs: the pinned links keep the program attached, enforcing the last policy.
    assert!(
        lab.delivers_from_allowed(),
        "an allowlisted client still delivers after SIGKILL"
    );
    assert!(
        !lab.delivers_from_other(),
        "a blocked source still fails after SIGKILL"
    );
    let status = Daemon::binary();
    let out = std::process::Command::new(&status)
        .args(["status", "--control-socket"])
        .arg(lab.work.join("control.sock"))
        .arg("--pin-dir")
        .arg(lab.bpf.pin_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "status of a killed daemon:\n{text}"
    );
    assert!(text.contains("still attached and enforcing"), "{text}");
    let out = std::process::Command::new(&status)
        .args(["status", "--json", "--control-socket"])
        .arg(lab.work.join("control.sock"))
        .arg("--pin-dir")
        .arg(lab.bpf.pin_dir())
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    for key in [
        "\"running\": false",
        "\"pinned_links\": [",
        "\"counters\": [",
    ] {
        assert!(
            json.contains(key),
            "{key} missing from status --json: {json}"
        );
    }
    assert!(json.contains("\"xdp-native-gw0\""), "{json}");
    assert!(
        text.contains("xdp-native-gw0") && text.contains("xdp-native-gw1"),
        "{text}"
    );

    // The restart adopts maps and links: one program per interface, counters keep counting.
    let daemon = lab.start(&cfg, "second.log");
    let log = daemon.log();
    assert!(log.contains("adopting the maps pinned"), "{log}");
    assert!(
        log.contains("gw0: took over the pinned native XDP link atomically"),
        "{log}"
    );
    let program_after = xdp_program_ids(lab.gw(), "gw0");
    assert_eq!(
        program_after.len(),
        1,
        "exactly one XDP program on gw0: {program_after:?}"
    );
    assert_ne!(
        program_after, program_before,
        "the new build's program replaced the old one"
    );
    let after = daemon.scrape();
    let passed_after = packets(&after, "pass", "allowlisted");
    let dropped_after = packets(&after, "drop", "not_allowlisted");
    println!(
        "counters across the kill: pass/allowlisted {passed_before} -> {passed_after}, drop/not_allowlisted {dropped_before} -> {dropped_after}"
    );
    // What the kernel counted while no daemon ran is there too.
    assert!(
        passed_after > passed_before,
        "allowlisted packets sent meanwhile are counted"
    );
    assert!(
        dropped_after > dropped_before,
        "drops while the daemon was dead are counted"
    );
    let (code, out, _) = daemon.cli(&["status", "--pin-dir", lab.bpf.pin_dir().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("taken over from a previous daemon"), "{out}");

    // on_exit = detach (the default): SIGTERM removes the filter and its pins.
    assert!(daemon.stop().success());
    assert!(
        xdp_program_ids(lab.gw(), "gw0").is_empty(),
        "detached on SIGTERM"
    );
    assert!(
        !lab.bpf.pin_dir().join("links").exists(),
        "pins removed on SIGTERM"
    );
    assert!(lab.delivers_from_other(), "nothing filters any more");
}

/// The daemon's metric and `status` both say whether its pins outlive it.
fn says_pins_persist(daemon: &Daemon, persistent: bool) {
    let text = daemon.scrape();
    let metric = metric(&text, "port25_pins_persistent", &[]);
    assert_eq!(metric, Some(f64::from(u8::from(persistent))), "{text}");
    let (code, out, _) = daemon.cli(&["status"]);
    assert_eq!(code, 0);
    let said = if persistent {
        "on the host's bpffs, the filter outlives the daemon"
    } else {
        "NOT on the host's bpffs, the filter goes with the daemon"
    };
    assert!(out.contains(said), "{out}");
}

#[test]
fn pins_that_die_with_the_daemon_are_said_so() {
    let lab = Lab::new("private");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let warning = "the filter will NOT survive the daemon";

    // Pinned on a bpffs the host has (mounted under /run, seen from both sides): nothing to say.
    let daemon = lab.start(&cfg, "shared.log");
    assert!(!daemon.log().contains(warning), "{}", daemon.log());
    says_pins_persist(&daemon, true);
    assert!(daemon.stop().success());

    // The default pin dir under `ip netns exec`, which gives the daemon a /sys of its own: it
    // mounts bpffs there, in a mount namespace that ends with it, and says so.
    let daemon = Daemon::start_with_args(
        lab.gw(),
        &cfg,
        METRICS.parse().unwrap(),
        &lab.work.join("private.log"),
        &[],
    );
    let log = daemon.log();
    assert!(log.contains("mounted bpffs at /sys/fs/bpf"), "{log}");
    assert!(log.contains(warning), "{log}");
    assert!(
        log.contains("--pin-dir on a bpffs the host shares"),
        "{log}"
    );
    says_pins_persist(&daemon, false);
    let (_, json, _) = daemon.cli(&["status", "--json"]);
    assert!(json.contains("\"pins_persistent\": false"), "{json}");
    // One schema, running or not: `running`, `pinned_links` and `counters` always there.
    for key in [
        "\"running\": true",
        "\"pinned_links\": [",
        "\"counters\": [",
    ] {
        assert!(
            json.contains(key),
            "{key} missing from status --json: {json}"
        );
    }
    assert!(!lab.delivers_from_other(), "filtered while the daemon runs");

    // The warning is true: SIGKILL takes the filter with it.
    daemon.kill();
    let gone = poll(Duration::from_secs(5), || {
        xdp_program_ids(lab.gw(), "gw0").is_empty().then_some(())
    });
    assert!(gone.is_some(), "the private pins went with the daemon");
    assert!(lab.delivers_from_other(), "nothing filters after the kill");
}

#[test]
fn on_exit_keep_and_detach() {
    let lab = Lab::new("keep");
    let _sink = lab.sink();
    let cfg = lab.config(&format!(
        "on_exit = \"keep\"\n[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]"
    ));
    let daemon = lab.start(&cfg, "keep.log");
    assert!(daemon.stop().success());
    assert!(
        !lab.delivers_from_other(),
        "on_exit = keep: still enforcing after SIGTERM"
    );
    assert!(lab.delivers_from_allowed());
    // `port25d detach` without a daemon removes the pins, and with them the filter.
    Daemon::detach_pins(&lab.bpf.pin_dir(), &lab.work.join("control.sock"));
    // The kernel releases a link whose last pin went a moment later (deferred file release).
    let detached = poll(Duration::from_secs(5), || {
        xdp_program_ids(lab.gw(), "gw0").is_empty().then_some(())
    });
    assert!(detached.is_some(), "detached");
    assert!(lab.delivers_from_other(), "nothing filters any more");
    // And a running daemon is asked to detach and stop.
    let daemon = lab.start(&cfg, "again.log");
    let (code, out, err) =
        daemon.cli(&["detach", "--pin-dir", lab.bpf.pin_dir().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("detached; port25d stopped"), "{out}");
    // `port25d detach` returns once the daemon is done: nothing is left.
    assert!(
        xdp_program_ids(lab.gw(), "gw1").is_empty(),
        "detached by request"
    );
    assert!(!lab.bpf.pin_dir().exists(), "pins removed");
}

/// The XDP attach mode `ip link show` names for `iface`: "xdp" (native), "xdpgeneric" (skb), or
/// "xdpmulti" (more than one), none when nothing is attached.
fn xdp_attach_kinds(ns: &Netns, iface: &str) -> Vec<String> {
    ns.ip(&["link", "show", iface])
        .split_whitespace()
        .filter(|word| matches!(*word, "xdp" | "xdpgeneric" | "xdpmulti" | "xdpoffload"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn changing_xdp_mode_switches_the_pinned_link_both_ways() {
    let lab = Lab::new("mode");
    let _sink = lab.sink();
    let with_mode = |mode: &str| {
        lab.config_named(
            &format!("{mode}.toml"),
            &format!(
                "xdp_mode = \"{mode}\"\non_exit = \"keep\"\n[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]"
            ),
        )
    };
    let links = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(lab.bpf.pin_dir().join("links"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };

    // A native link is left pinned (on_exit = keep), as after a crash or an upgrade.
    let daemon = lab.start(&with_mode("native"), "native.log");
    assert!(daemon.stop().success());
    assert_eq!(xdp_attach_kinds(lab.gw(), "gw0"), ["xdp"]);
    let with_watchers = |xdp: [String; 2]| -> Vec<String> {
        let mut names = tc_synack_pins(&["gw0", "gw1"]);
        names.extend(xdp);
        names
    };
    assert_eq!(
        links(),
        with_watchers(["xdp-native-gw0".into(), "xdp-native-gw1".into()])
    );

    // native -> skb, then skb -> native: each start switches, says how long the gap was, and
    // leaves the interfaces filtered in the new mode.
    for (from, to, kind) in [("native", "skb", "xdpgeneric"), ("skb", "native", "xdp")] {
        let daemon = lab.start(&with_mode(to), &format!("{to}.log"));
        let log = daemon.log();
        let switched = format!(
            "gw0: switched XDP mode from {from} to {to}; the interface was unfiltered for "
        );
        let gap = log
            .lines()
            .find_map(|line| line.split_once(&switched).map(|(_, rest)| rest.to_owned()))
            .unwrap_or_else(|| panic!("no switch logged from {from} to {to}:\n{log}"));
        println!("{from} -> {to}: unfiltered for {gap}");
        assert!(!log.contains("refused"), "{log}");
        assert_eq!(xdp_attach_kinds(lab.gw(), "gw0"), [kind], "{from} -> {to}");
        assert_eq!(xdp_attach_kinds(lab.gw(), "gw1"), [kind], "{from} -> {to}");
        assert_eq!(
            links(),
            with_watchers([format!("xdp-{to}-gw0"), format!("xdp-{to}-gw1")])
        );
        let text = daemon.scrape();
        assert_eq!(
            metric(
                &text,
                "port25_attached",
                &[("iface", "gw0"), ("xdp_mode", to)]
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            lab.delivers_from_allowed(),
            "allowlisted after switching to {to}"
        );
        assert!(
            !lab.delivers_from_other(),
            "still filtered after switching to {to}"
        );
        assert!(
            packets(&daemon.scrape(), "drop", "not_allowlisted") > 0.0,
            "the {to} program dropped the other client"
        );
        assert!(daemon.stop().success());
        assert!(
            !lab.delivers_from_other(),
            "on_exit = keep: still filtered in {to} mode"
        );
    }
}

#[test]
fn runtime_lists_expire_and_survive_a_restart() {
    let lab = Lab::new("rt");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "first.log");
    assert!(!lab.delivers_from_other());

    // Allowed for 3 seconds, then blocked again by itself.
    let (code, out, err) = daemon.cli(&["allow", "add", OTHER_V4, "--ttl", "3s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("added 198.18.1.20/32 to the allow list (expires in 3s)"),
        "{out}"
    );
    assert!(
        lab.delivers_from_other(),
        "runtime allow takes effect at once"
    );
    daemon.wait_for_log(
        "runtime allow entry 198.18.1.20/32 expired",
        Duration::from_secs(10),
    );
    assert!(!lab.delivers_from_other(), "blocked again after expiry");

    // A deny entry beats the config's allow entry, and survives a restart (fail2ban's ban).
    let (code, out, err) = daemon.cli(&["deny", "add", ALLOWED_V4, "--ttl", "-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!lab.delivers_from_allowed(), "denied at once");
    let (code, out, _) = daemon.cli(&["deny", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("198.18.0.10/32") && out.contains("no expiry"),
        "{out}"
    );
    // What scripts read: the same, as JSON.
    let (code, out, _) = daemon.cli(&["deny", "list", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, 0);
    assert_eq!(json["list"], "deny", "{out}");
    assert_eq!(json["runtime"][0]["cidr"], "198.18.0.10/32", "{out}");
    assert!(json["runtime"][0]["expires"].is_null(), "{out}");
    assert!(daemon.stop().success());
    let daemon = lab.start(&cfg, "second.log");
    assert!(
        !lab.delivers_from_allowed(),
        "the deny entry survived the restart"
    );
    let text = daemon.scrape();
    assert_eq!(
        metric(&text, "port25_list_entries", &[("list", "deny")]),
        Some(1.0),
        "{text}"
    );

    // Mistakes get clear answers and change nothing.
    let (code, _, err) = daemon.cli(&["deny", "add", "198.18.0.10/24"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("host bits set in 198.18.0.10/24; did you mean 198.18.0.0/24?"),
        "{err}"
    );
    // Removing what is not there (an entry that expired before fail2ban's unban) is no error.
    let (code, out, _) = daemon.cli(&["deny", "del", "198.18.99.0/24"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("is not an entry of the runtime deny list: nothing to remove"),
        "{out}"
    );
    // An IPv4-mapped address is the IPv4 address it names, which IPv4 packets match.
    let (_, out, _) = daemon.cli(&["allow", "add", "::ffff:198.18.1.20"]);
    assert!(
        out.contains("added 198.18.1.20/32 to the allow list"),
        "{out}"
    );
    assert!(
        lab.delivers_from_other(),
        "the mapped address did not apply"
    );
    // A TTL that shortens a permanent entry is said.
    let (_, out, _) = daemon.cli(&["allow", "add", OTHER_V4, "--ttl", "1h"]);
    assert!(
        out.contains(
            "replaced 198.18.1.20/32 in the allow list: expires in 1h (it was: no expiry)"
        ),
        "{out}"
    );
    // An allow entry a deny entry covers changes nothing, and says so; a del inside a wider
    // entry names it.
    daemon.cli(&["deny", "add", "198.18.1.0/24"]);
    let (_, out, _) = daemon.cli(&["allow", "add", OTHER_V4]);
    assert!(
        out.contains("the runtime deny entry 198.18.1.0/24 covers it, and deny beats allow"),
        "{out}"
    );
    assert!(!lab.delivers_from_other(), "deny beats allow");
    let (_, out, _) = daemon.cli(&["deny", "del", OTHER_V4]);
    assert!(
        out.contains("the runtime entry 198.18.1.0/24 covers it (`port25d deny del 198.18.1.0/24`"),
        "{out}"
    );
    daemon.cli(&["deny", "del", "198.18.1.0/24"]);
    daemon.cli(&["allow", "del", OTHER_V4]);
    let (code, _, err) = daemon.cli(&["allow", "del", &format!("{ALLOWED_V4}/32")]);
    assert_eq!(code, 1);
    assert!(err.contains("is in the allow list of the config"), "{err}");

    let (code, out, err) = daemon.cli(&["deny", "del", ALLOWED_V4]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(lab.delivers_from_allowed(), "unbanned");
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|line| line.contains("deny del by uid 0 (root)")
                && line.contains("removed 198.18.0.10/32 from the deny list")),
        "every change is logged, with who made it:\n{log}"
    );
}

#[test]
fn a_hundred_reloads_under_mail_traffic_lose_nothing() {
    let lab = Lab::new("reload");
    let sink = lab.sink();
    // Two policies that differ in everything but the allowlisted client: other lists, ports,
    // mode of the rest.
    let path = lab.work.join("port25.toml"); // what lab.config writes
    let a = format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\", \"198.18.200.0/24\"]\n[deny]\ncidrs = [\"198.18.201.0/24\"]"
    );
    let b = "ports = [25, 2525]\n[allow]\ncidrs = [\"198.18.0.0/24\", \"2001:db8:600::/48\"]\n[deny]\ncidrs = [\"198.18.202.0/24\", \"198.18.1.0/24\"]".to_owned();
    lab.config(&a);
    let mut daemon = lab.start(&path, "reloads.log");

    let sending = AtomicBool::new(true);
    let (sent, delivered) = thread::scope(|scope| {
        let mail = scope.spawn(|| {
            let (mut sent, mut delivered) = (0, 0);
            while sending.load(Ordering::Relaxed) {
                sent += 1;
                if send_mail(lab.allowed(), ip(ALLOWED_V4), ip(GW_A_V4), 25).delivered {
                    delivered += 1;
                }
            }
            (sent, delivered)
        });
        let started = Instant::now();
        for i in 0..100 {
            lab.config(if i % 2 == 0 { &b } else { &a });
            daemon.hup();
            // Let each reload land before the next rewrites the file.
            let want = f64::from(i + 1);
            let landed = poll(Duration::from_secs(10), || {
                (metric(
                    &daemon.scrape(),
                    "port25_config_reloads_total",
                    &[("result", "success")],
                ) >= Some(want))
                .then_some(())
            });
            assert!(
                landed.is_some(),
                "reload {} did not land:\n{}",
                i + 1,
                daemon.log()
            );
        }
        println!("100 reloads in {:?}", started.elapsed());
        // Keep mail flowing a moment after the last reload.
        thread::sleep(Duration::from_millis(500));
        sending.store(false, Ordering::Relaxed);
        mail.join().unwrap()
    });
    let text = daemon.scrape();
    let drops: f64 = ["drop", "would_drop"]
        .iter()
        .map(|verdict| metric_sum(&text, "port25_packets_total", &[("verdict", verdict)]))
        .sum();
    let passed = packets(&text, "pass", "allowlisted");
    println!(
        "mail during 100 reloads: {delivered}/{sent} delivered; {passed} packets passed, {drops} dropped"
    );
    assert!(
        sent >= 5,
        "the client sent only {sent} messages during the reloads"
    );
    assert_eq!(
        delivered, sent,
        "every message sent during the reloads is delivered"
    );
    assert_eq!(
        sink.wait_for_messages(ip(ALLOWED_V4), sent),
        sent,
        "and received"
    );
    assert_eq!(
        drops, 0.0,
        "no packet of the allowlisted client was dropped:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            "port25_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(0.0)
    );
}

#[test]
fn watched_directories_reload_by_themselves() {
    let lab = Lab::new("watch");
    let _sink = lab.sink();
    let feeds = lab.work.join("deny.d");
    fs::create_dir_all(&feeds).unwrap();
    let cfg = lab.config(&format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n[deny]\ndirs = [\"deny.d\"]"
    ));
    let daemon = lab.start(&cfg, "watch.log");
    assert!(lab.delivers_from_allowed());
    // A blocklist feed drops a file in: the next look (every 5 s) reloads.
    fs::write(
        feeds.join("feed.txt"),
        "# a feed\n198.18.0.0/24\n2001:db8:bad::/48\n",
    )
    .unwrap();
    let reloaded = poll(Duration::from_secs(15), || {
        (metric(&daemon.scrape(), "port25_list_entries", &[("list", "deny")]) == Some(2.0))
            .then_some(())
    });
    assert!(
        reloaded.is_some(),
        "the feed was not loaded:\n{}",
        daemon.log()
    );
    assert!(
        !lab.delivers_from_allowed(),
        "the feed's deny entry applies"
    );
    // A broken feed is rejected and the policy stays.
    fs::write(feeds.join("broken.txt"), "198.18.0.1/8\n").unwrap();
    daemon.wait_for_log("broken.txt:1", Duration::from_secs(15));
    assert_eq!(
        metric(&daemon.scrape(), "port25_list_entries", &[("list", "deny")]),
        Some(2.0)
    );
    fs::remove_file(feeds.join("broken.txt")).unwrap();
    fs::remove_file(feeds.join("feed.txt")).unwrap();
    let emptied = poll(Duration::from_secs(15), || {
        (metric(&daemon.scrape(), "port25_list_entries", &[("list", "deny")]) == Some(0.0))
            .then_some(())
    });
    assert!(emptied.is_some(), "{}", daemon.log());
    assert!(lab.delivers_from_allowed(), "the feed's entries are gone");
}

#[test]
fn a_bad_file_in_a_watched_directory_is_refused_whole_and_the_policy_stays() {
    let lab = Lab::new("badfeed");
    let _sink = lab.sink();
    let feeds = lab.work.join("deny.d");
    fs::create_dir_all(&feeds).unwrap();
    fs::write(feeds.join("feed.txt"), "198.18.0.0/24\n").unwrap();
    let cfg = lab.config(&format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n[deny]\ndirs = [\"deny.d\"]"
    ));
    let mut daemon = lab.start(&cfg, "badfeed.log");
    assert!(
        !lab.delivers_from_allowed(),
        "the feed's deny entry applies"
    );
    let rss_before = port25_testkit::lab::rss_kib(daemon.pid()).unwrap();
    let failures = |daemon: &Daemon| {
        metric(
            &daemon.scrape(),
            "port25_config_reloads_total",
            &[("result", "failure")],
        )
        .unwrap_or(0.0)
    };
    // What a cron job's download gone wrong leaves, and what should never be there.
    let html = "<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n";
    let cases: [(&str, &str); 5] = [
        ("zero", "is a character device, not a regular file"),
        ("pipe", "is a FIFO, not a regular file"),
        ("one-line.txt", "a line of 67108864 bytes (at most 4096)"),
        ("blob.gz", "is not text"),
        ("error.html", "this looks like an HTML page"),
    ];
    for (name, fragment) in cases {
        let path = feeds.join(name);
        // Counted before the file lands: the daemon may refuse it before this loop looks again.
        let before = failures(&daemon);
        match name {
            "zero" => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
            "pipe" => {
                let status = std::process::Command::new("mkfifo")
                    .arg(&path)
                    .status()
                    .unwrap();
                assert!(status.success(), "mkfifo");
            }
            "one-line.txt" => fs::write(&path, "9".repeat(64 << 20)).unwrap(),
            "blob.gz" => fs::write(&path, [0x1f, 0x8b, 0x08, 0x00, 0xc3, 0x28, 0x00]).unwrap(),
            _ => fs::write(&path, html).unwrap(),
        }
        let refused = poll(Duration::from_secs(20), || {
            (failures(&daemon) > before).then_some(())
        });
        assert!(refused.is_some(), "{name}: not refused:\n{}", daemon.log());
        assert!(daemon.is_running(), "{name}: port25d stopped");
        let (_, status, _) = daemon.cli(&["status"]);
        assert!(
            status.contains("the last reload was REJECTED") && status.contains(fragment),
            "{name}: status does not say {fragment:?}:\n{status}"
        );
        let line = status
            .lines()
            .find(|l| l.contains("REJECTED"))
            .unwrap_or_default();
        assert!(line.contains(name) && line.len() < 400, "{name}: {line}");
        daemon.assert_logged(name);
        assert!(
            !lab.delivers_from_allowed(),
            "{name}: the running policy stays"
        );
        fs::remove_file(&path).unwrap();
        println!("{name}: refused ({fragment}), the running policy stays");
    }
    let rss_after = port25_testkit::lab::rss_kib(daemon.pid()).unwrap();
    println!(
        "port25d's RSS: {} MiB before the bad files, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    // A 64 MiB line was read (the file is under the 256 MiB bound) and let go.
    assert!(
        rss_after < rss_before + 96 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    // The directory clean again: the next reload succeeds and the status forgets the failure.
    fs::write(feeds.join("feed.txt"), "198.18.0.0/24\n198.18.7.0/24\n").unwrap();
    poll(Duration::from_secs(20), || {
        let (_, status, _) = daemon.cli(&["status"]);
        (!status.contains("REJECTED")).then_some(())
    })
    .unwrap_or_else(|| panic!("no successful reload:\n{}", daemon.log()));
}

#[test]
fn a_million_cidrs_load_without_blocking_the_daemon() {
    const ENTRIES: usize = 1_000_000;
    let lab = Lab::new("million");
    let _sink = lab.sink();
    // One /64 per entry inside 2001:db8::/32: list data only, never traffic.
    let mut list = String::with_capacity(ENTRIES * 28);
    for i in 0..ENTRIES {
        list.push_str(&format!("2001:db8:{:x}:{:x}::/64\n", i >> 16, i & 0xffff));
    }
    fs::write(lab.work.join("big.txt"), list).unwrap();
    let path = lab.work.join("port25.toml"); // what lab.config writes
    lab.allowing_one();
    let mut daemon = lab.start(&path, "million.log");

    lab.config(&format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n[deny]\nfiles = [\"big.txt\"]"
    ));
    let started = Instant::now();
    daemon.hup();
    // While it loads, the daemon keeps answering scrapes.
    let (mut scrapes, mut slowest) = (0, Duration::ZERO);
    let loaded = poll(Duration::from_secs(180), || {
        let asked = Instant::now();
        let text = daemon.scrape();
        slowest = slowest.max(asked.elapsed());
        scrapes += 1;
        (metric(&text, "port25_list_entries", &[("list", "deny")]) == Some(ENTRIES as f64))
            .then_some(())
    });
    let took = started.elapsed();
    assert!(
        loaded.is_some(),
        "the million entries did not load:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let progress = log
        .lines()
        .filter(|l| l.contains("writing lists into the kernel"))
        .count();
    println!(
        "1,000,000 CIDRs loaded in {took:?} (debug build); {scrapes} scrapes answered meanwhile, the slowest in {slowest:?}; {progress} progress lines"
    );
    assert!(progress >= 4, "progress in the log:\n{log}");
    assert!(
        scrapes >= 3,
        "the metrics endpoint kept answering during the load"
    );
    // And the policy works: an address in the list is denied, the allowlisted client is not.
    assert!(lab.delivers_from_allowed());
    let (code, out, err) = daemon.cli(&[
        "status",
        "--json",
        "--pin-dir",
        lab.bpf.pin_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"total\": 1000000"), "{out}");
}
