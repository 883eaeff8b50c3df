//! The egress guard, end to end: port25d's cgroup connect hooks on a child cgroup of the test's
//! own, real clients (swaks, and the tests' `egress-client` for TCP Fast Open, UDP, IPv4-mapped
//! addresses, another uid and loops) joining it, smtp-sink servers on a smart-host address and on
//! another. Restarts, reloads and names are in `lifecycle.rs`; a router's LAN in `routed.rs`.
//!
//! ```text
//!   client ns  cl0 198.18.0.10 ── gw0 198.18.0.1 (smart host), 198.18.0.3 (not): smtp-sink :25, :587
//!                                     2001:db8:25::1 (smart host), 2001:db8:25::3 (not)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod lifecycle;
mod routed;

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use port25_testkit::{
    assert_mentions,
    lab::{
        BpfFs, Cgroup, Client, Daemon, Gateway, METRICS, Netns, SMTP_LAB_TOOLS, SmtpSink, VethEnd,
        WorkDir, ip, metric, metric_samples, poll, require_tools, run_ok, send_mail, send_mail_in,
        tool, veth,
    },
    require_root,
};

const CLIENT_V4: &str = "198.18.0.10";
const CLIENT_V6: &str = "2001:db8:25::10";
const SMART_V4: &str = "198.18.0.1";
const SMART_V6: &str = "2001:db8:25::1";
const OTHER_V4: &str = "198.18.0.3";
const OTHER_V6: &str = "2001:db8:25::3";

/// One test's lab: the gateway namespace with the servers' addresses, a client namespace, the
/// test's cgroup with an allowed child (the MTA's), a work directory and a bpffs for the pins.
struct Lab {
    net: Gateway,
    work: WorkDir,
    bpf: BpfFs,
    cgroup: Cgroup,
    mta: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        require_root();
        require_tools(SMTP_LAB_TOOLS);
        require_tools(&["bpftool", "unshare", "nsenter"]);
        let net = Gateway::new(&format!("eg-{tag}"), &[Client::new("cl", 0, 10)]);
        net.gw
            .ip(&["addr", "add", &format!("{OTHER_V4}/24"), "dev", "gw0"]);
        net.gw.ip(&[
            "addr",
            "add",
            &format!("{OTHER_V6}/64"),
            "dev",
            "gw0",
            "nodad",
        ]);
        let cgroup = Cgroup::new(&format!("eg-{tag}"));
        let mta = cgroup.child("mta.service");
        Self {
            net,
            work: WorkDir::new(&format!("egress-{tag}")),
            bpf: BpfFs::mount(&format!("eg-{tag}")),
            cgroup,
            mta,
        }
    }

    fn client_ns(&self) -> &Netns {
        &self.net.clients[0]
    }

    /// smtp-sink on port 25 (both families) and 587 of every gateway address.
    fn sinks(&self) -> Vec<SmtpSink<'_>> {
        ["0.0.0.0:25", "[::]:25", "0.0.0.0:587"]
            .into_iter()
            .map(|addr| SmtpSink::start(&self.net.gw, addr.parse().unwrap(), &self.work))
            .collect()
    }

    /// Writes `port25.toml`: no XDP, the guard on the test's cgroup in `mode`, the MTA's cgroup
    /// allowed, and `extra` lines of `[egress]`.
    fn config(&self, mode: &str, extra: &str) -> PathBuf {
        self.config_on("[]", mode, extra)
    }

    /// Like [`Lab::config`], with the XDP filter (in monitor mode) on `interfaces`: a config
    /// with the guard off needs something to do.
    fn config_on(&self, interfaces: &str, mode: &str, extra: &str) -> PathBuf {
        let config = self.work.join("port25.toml");
        let root = self.cgroup.path().parent().unwrap();
        fs::write(
            &config,
            format!(
                "interfaces = {interfaces}\nmode = \"monitor\"\n[metrics]\nlisten = \"{METRICS}\"\n\
                 [egress]\nmode = \"{mode}\"\n\
                 ports = [25]\nallow_cgroups = [\"{}\"]\ncgroup = \"{}\"\n{extra}\n",
                self.mta.strip_prefix(root).unwrap().display(),
                self.cgroup.path().display()
            ),
        )
        .unwrap();
        config
    }

    fn smart_config(&self, mode: &str) -> PathBuf {
        self.config(
            mode,
            &format!("smart_hosts = [\"{SMART_V4}\", \"{SMART_V6}/128\"]"),
        )
    }

    /// The guard enforcing with one smart host, beside the XDP filter on gw0 (in monitor mode).
    fn enforcing_beside_xdp(&self) -> PathBuf {
        self.config_on(
            "[\"gw0\"]",
            "enforce",
            &format!("smart_hosts = [\"{SMART_V4}\"]"),
        )
    }

    fn start(&self, config: &Path) -> Daemon<'_> {
        self.start_with_hosts(config, None)
    }

    fn start_with_hosts(&self, config: &Path, hosts: Option<&Path>) -> Daemon<'_> {
        let pins = self.bpf.pin_dir();
        Daemon::start_with_host_mounts(
            &self.net.gw,
            hosts,
            config,
            METRICS.parse().unwrap(),
            &self.work.join("port25d.log"),
            &[OsStr::new("--pin-dir"), pins.as_os_str()],
        )
    }

    /// `egress-client ARGS` from the test's cgroup in the client namespace.
    fn connect(&self, args: &[&str]) -> Attempts {
        self.connect_from(self.cgroup.path(), args)
    }

    fn connect_from(&self, cgroup: &Path, args: &[&str]) -> Attempts {
        let cgroup = cgroup.to_str().unwrap();
        let netns = self.client_ns().name();
        egress_client(&[&["--cgroup", cgroup, "--netns", netns], args].concat())
    }

    /// The ids of the hooks' pinned links.
    fn link_ids(&self) -> Vec<String> {
        ["cgroup-connect4", "cgroup-connect6"]
            .into_iter()
            .map(|name| {
                let pin = self.bpf.pin_dir().join("links").join(name);
                let out = bpftool(&["link", "show", "pinned", pin.to_str().unwrap()]);
                out.split_whitespace().next().unwrap_or_default().to_owned()
            })
            .collect()
    }

    /// What `bpftool cgroup show` lists on the test's cgroup: one line per program.
    fn programs_on_cgroup(&self) -> String {
        bpftool(&["cgroup", "show", self.cgroup.path().to_str().unwrap()])
    }

    /// Asserts that the hooks leave the test's cgroup within 5 s: the kernel frees a released
    /// link from a workqueue, so on a busy machine bpftool may still list it for a moment.
    fn assert_hooks_gone(&self) {
        let gone = poll(Duration::from_secs(5), || {
            (!self.programs_on_cgroup().contains("port25_connect")).then_some(())
        });
        assert!(
            gone.is_some(),
            "the hooks are still attached:\n{}",
            self.programs_on_cgroup()
        );
    }
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `egress-client ARGS` (see tests/src/bin/egress-client.rs).
fn egress_client(args: &[&str]) -> Attempts {
    let out = Command::new(env!("CARGO_BIN_EXE_egress-client"))
        .args(args)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "egress-client {args:?}: {line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse::<u64>()
            .unwrap()
    };
    Attempts {
        pid: field("pid"),
        ok: field("ok"),
        refused: field("refused"),
        failed: field("failed"),
        elapsed_ms: field("elapsed_ms"),
        line: line.trim().to_owned(),
    }
}

/// What one `egress-client` run did.
#[derive(Debug)]
struct Attempts {
    pid: u64,
    ok: u64,
    refused: u64,
    failed: u64,
    elapsed_ms: u64,
    line: String,
}

fn connects(text: &str, verdict: &str, reason: &str) -> f64 {
    metric(
        text,
        "port25_egress_connects_total",
        &[("verdict", verdict), ("reason", reason)],
    )
    .unwrap_or_else(|| panic!("no egress_connects {verdict}/{reason} in:\n{text}"))
}

/// The `egress log --json` lines of the process `pid`.
fn events_of(daemon: &Daemon<'_>, pid: u64) -> Vec<String> {
    let (code, out, err) = daemon.cli(&["egress", "log", "--json"]);
    assert_eq!(code, 0, "egress log: {err}");
    out.lines()
        .filter(|line| line.contains(&format!("\"pid\":{pid},")))
        .map(str::to_owned)
        .collect()
}

fn nobody_uid() -> String {
    fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("nobody:x:"))
        .and_then(|rest| rest.split(':').next())
        .expect("a nobody user in /etc/passwd")
        .to_owned()
}

#[test]
fn only_smart_hosts_and_allowed_processes_get_outbound_smtp() {
    let lab = Lab::new("enforce");
    let _sinks = lab.sinks();
    let nobody = nobody_uid();
    let config = lab.config(
        "enforce",
        &format!("smart_hosts = [\"{SMART_V4}\", \"{SMART_V6}/128\"]\nallow_users = [\"nobody\"]"),
    );
    let daemon = lab.start(&config);
    let client = lab.client_ns();
    let guarded = |server: &str, port| {
        send_mail_in(lab.cgroup.path(), client, ip(CLIENT_V4), ip(server), port)
    };

    // From the guarded cgroup: the smart host yes, anything else on port 25 no (EPERM).
    let to_smart = guarded(SMART_V4, 25);
    assert!(
        to_smart.delivered,
        "to the smart host: {}",
        to_smart.transcript
    );
    let to_other = guarded(OTHER_V4, 25);
    assert!(
        !to_other.delivered && to_other.transcript.contains("Operation not permitted"),
        "to another host, refused with EPERM: {}",
        to_other.transcript
    );
    let v6 = |server: &str| send_mail_in(lab.cgroup.path(), client, ip(CLIENT_V6), ip(server), 25);
    assert!(v6(SMART_V6).delivered, "IPv6 smart host");
    let refused6 = v6(OTHER_V6);
    assert!(
        !refused6.delivered && refused6.transcript.contains("Operation not permitted"),
        "IPv6 other host: {}",
        refused6.transcript
    );

    // IPv4-mapped IPv6 destinations count as IPv4; TCP Fast Open connects inside sendto().
    for kind in ["mapped", "tfo"] {
        let smart = lab.connect(&[kind, SMART_V4, "25"]);
        assert_eq!(smart.ok, 1, "{kind} to the smart host: {}", smart.line);
        let other = lab.connect(&[kind, OTHER_V4, "25"]);
        assert_eq!(other.refused, 1, "{kind} to another host: {}", other.line);
    }
    // UDP and other ports are never touched; neither are processes outside the cgroup.
    let udp = lab.connect(&["udp", OTHER_V4, "25"]);
    assert_eq!(udp.ok, 1, "UDP/25: {}", udp.line);
    assert!(
        guarded(OTHER_V4, 587).delivered,
        "submission port untouched"
    );
    let outside = send_mail(client, ip(CLIENT_V4), ip(OTHER_V4), 25);
    assert!(
        outside.delivered,
        "outside the cgroup: {}",
        outside.transcript
    );

    // An allowed user, and a process in an allowed cgroup, may connect anywhere.
    let as_nobody = lab.connect(&["--uid", &nobody, "tcp", OTHER_V4, "25"]);
    assert_eq!(as_nobody.ok, 1, "allowed user: {}", as_nobody.line);
    let as_other_user = lab.connect(&["--uid", "4242", "tcp", OTHER_V4, "25"]);
    assert_eq!(
        as_other_user.refused, 1,
        "another user: {}",
        as_other_user.line
    );
    let from_mta = send_mail_in(&lab.mta, client, ip(CLIENT_V4), ip(OTHER_V4), 25);
    assert!(
        from_mta.delivered,
        "allowed cgroup: {}",
        from_mta.transcript
    );

    // The refused process is named: in the log, in `egress log --json`, in the metrics.
    let refused = lab.connect(&["tcp", OTHER_V4, "25"]);
    assert_eq!(refused.refused, 1, "{}", refused.line);
    let events = poll(Duration::from_secs(5), || {
        let events = events_of(&daemon, refused.pid);
        (!events.is_empty()).then_some(events)
    })
    .unwrap_or_else(|| panic!("no event for pid {}:\n{}", refused.pid, daemon.log()));
    let cgroup = format!(
        "\"cgroup\":\"/{}\"",
        lab.cgroup.path().file_name().unwrap().to_string_lossy()
    );
    for field in [
        "\"uid\":0,",
        "\"user\":\"root\"",
        "\"comm\":\"egress-client\"",
        &cgroup,
        &format!("\"dest\":\"{OTHER_V4}\""),
        "\"port\":25,",
        "\"verdict\":\"deny\"",
    ] {
        assert!(events[0].contains(field), "{field} in {}", events[0]);
    }
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "egress: refused outbound connect to {OTHER_V4}:25: swaks (pid"
        )),
        "swaks named in the log:\n{log}"
    );
    assert!(
        log.contains(&format!("refused outbound connect to [{OTHER_V6}]:25")),
        "{log}"
    );

    let text = daemon.scrape();
    // swaks v4 and v6, mapped, TFO, uid 4242, and the last one.
    assert_eq!(connects(&text, "deny", "not_allowed"), 6.0, "{text}");
    assert_eq!(connects(&text, "allow", "allowed_user"), 1.0);
    assert_eq!(connects(&text, "allow", "allowed_cgroup"), 1.0);
    // swaks v4 and v6, mapped and TFO.
    assert_eq!(connects(&text, "allow", "smart_host"), 4.0);
    assert_eq!(connects(&text, "would_deny", "not_allowed"), 0.0);
    let top = metric_samples(&text, "port25_egress_top_denied");
    assert!(
        top.iter().any(|(labels, value)| {
            labels.contains(&("rank".into(), "1".into())) && *value >= 3.0
        }),
        "the most refused process ranks first: {top:?}"
    );
    let (_, status, _) = daemon.cli(&["status"]);
    // One name for the cgroup everywhere: status, metrics and the log say "/NAME", as systemd
    // does, though the config gave its full path.
    let name = format!(
        "/{}",
        lab.cgroup.path().file_name().unwrap().to_string_lossy()
    );
    assert!(
        status.contains(&format!(
            "egress guard: enforce mode, ports 25, hooks on cgroup {name}"
        )),
        "{status}"
    );
    assert_eq!(
        metric(
            &daemon.scrape(),
            "port25_egress_attached",
            &[("mode", "enforce"), ("cgroup", &name)]
        ),
        Some(1.0)
    );
    // The audit says the guard covers the test's cgroup, and names who it refused.
    let pins = lab.bpf.pin_dir();
    let (code, audit, err) = daemon.cli(&[
        "audit",
        "--filter-only",
        "--pin-dir",
        pins.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "a CHECK finding: {audit}{err}");
    assert_mentions(
        &audit,
        &[
            "Egress guard (outbound SMTP):",
            "ok: outbound SMTP guarded for only processes in cgroup",
            "CHECK: egress-client tried outbound SMTP to servers that are not smart hosts 3 times (refused)",
            "CHECK: swaks tried outbound SMTP",
        ],
    );
    assert!(
        status.contains("deny        not_allowed               6 connects"),
        "{status}"
    );
}

#[test]
fn monitor_mode_lets_connects_through_and_reports_them() {
    let lab = Lab::new("monitor");
    let _sinks = lab.sinks();
    let daemon = lab.start(&lab.smart_config("monitor"));
    // `egress log --follow` prints events as they come.
    let mut follower = Command::new(Daemon::binary())
        .args(["egress", "log", "--follow", "--json", "--control-socket"])
        .arg(daemon.control_socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, followed) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let attempt = lab.connect(&["tcp", OTHER_V4, "25"]);
    let line = followed.recv_timeout(Duration::from_secs(5));
    let _ = follower.kill();
    let _ = follower.wait();
    let line = line.unwrap_or_else(|_| panic!("--follow printed nothing:\n{}", daemon.log()));
    assert!(
        line.contains(&format!("\"pid\":{},", attempt.pid)),
        "{line}"
    );
    assert_eq!(
        attempt.ok, 1,
        "monitor mode refuses nothing: {}",
        attempt.line
    );
    let events = poll(Duration::from_secs(5), || {
        let events = events_of(&daemon, attempt.pid);
        (!events.is_empty()).then_some(events)
    })
    .unwrap_or_else(|| panic!("no event:\n{}", daemon.log()));
    assert!(
        events[0].contains("\"verdict\":\"would_deny\""),
        "{}",
        events[0]
    );
    let text = daemon.scrape();
    assert_eq!(connects(&text, "would_deny", "not_allowed"), 1.0, "{text}");
    assert_eq!(connects(&text, "deny", "not_allowed"), 0.0);
    assert!(
        daemon.log().contains(&format!(
            "would refuse (monitor mode) outbound connect to {OTHER_V4}:25"
        )),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_runaway_process_stays_within_the_event_rate_limit() {
    let lab = Lab::new("flood");
    let daemon = lab.start(&lab.smart_config("enforce"));
    // 10,000 refused connects in a loop, then one more after the rate limit's second: its event
    // carries the count of those the kernel did not report.
    let run = lab.connect(&[
        "--count",
        "10000",
        "--tail-after-ms",
        "1100",
        "tcp",
        OTHER_V4,
        "25",
    ]);
    assert_eq!((run.refused, run.failed), (10_001, 0), "{}", run.line);
    let events = poll(Duration::from_secs(5), || {
        let events = events_of(&daemon, run.pid);
        events
            .iter()
            .any(|e| !e.contains("\"suppressed\":0"))
            .then_some(events)
    })
    .unwrap_or_else(|| panic!("no event with a suppressed count:\n{}", daemon.log()));
    // One event when it starts, at most one a second after that.
    let bound = 2 + run.elapsed_ms / 1000;
    assert!(
        (events.len() as u64) <= bound,
        "{} events in {} ms",
        events.len(),
        run.elapsed_ms
    );
    let reported: u64 = events
        .iter()
        .map(|e| {
            let suppressed = e.split("\"suppressed\":").nth(1).unwrap();
            1 + suppressed
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        reported, 10_001,
        "events plus suppressed counts: {events:#?}"
    );
    let text = daemon.scrape();
    assert_eq!(connects(&text, "deny", "not_allowed"), 10_001.0);
    assert_eq!(
        metric(&text, "port25_egress_events_lost_total", &[]),
        Some(0.0),
        "{text}"
    );
}
