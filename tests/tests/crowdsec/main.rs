//! port25d in a CrowdSec fleet, against Debian's real `crowdsec` Local API (LAPI only, a config of
//! the test's own): bans pulled within a poll, lifted, kept while the LAPI is down and across a
//! restart; a fleet of two gateways where a flood of real connections at one is dropped by the
//! other and a spoofed one is not (`fleet`); what the allowlist and the bounds refuse of the
//! fleet's decisions (`trust`); and a hostile LAPI of the test's own (`hostile`).
//!
//! ```text
//!   bouncer tests: allowed cl0 198.18.0.10 ── gw0 ┐
//!                                                 gw (smtp-sink :25, port25d, LAPI on 127.0.0.1)
//!                  other   cl0 198.18.1.20 ── gw1 ┘
//!
//!   fleet:   attacker 198.18.0.66 ── gw0 ┐                         ┌ gw0 ── attacker 198.18.0.66
//!            client   198.18.1.20 ── gw1 ┤ A ── mgmt ── LAPI ── mgmt ── B ┤ gw1 ── client 198.18.1.20
//!                                    (198.18.250.0/30)   (198.18.251.0/30)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod fleet;
mod hostile;
mod trust;

use std::{
    fs,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use port25_testkit::{
    assert_mentions, frames,
    lab::{
        ALLOWED_V4, Client, Daemon, GW_A_V4, GW_B_V4, Gateway, Lapi, METRICS, Netns, OTHER_V4,
        OTHER_V6, SmtpSink, VethEnd, WorkDir, ip, live_xdp_verdict, metric, metric_sum, poll,
        require_tools, run_ok, send_mail, tool, veth,
    },
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Where the single-gateway tests' LAPI listens, in the gateway's namespace.
const LAPI_LISTEN: &str = "127.0.0.1:8080";
/// How long a change may take to reach the kernel: polls are every second.
const WITHIN_A_POLL: Duration = Duration::from_secs(6);

/// A gateway with a LAPI on its loopback and port25d as its bouncer.
struct Lab {
    net: Gateway,
    work: WorkDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        require_root();
        require_tools(&[
            "ip",
            "curl",
            "swaks",
            "smtp-sink",
            "ss",
            "bpftool",
            "crowdsec",
            "cscli",
        ]);
        Self {
            net: Gateway::allowed_and_other(tag, &[]),
            work: WorkDir::new(&format!("crowdsec-{tag}")),
        }
    }

    fn gw(&self) -> &Netns {
        &self.net.gw
    }

    fn lapi(&self) -> Lapi<'_> {
        Lapi::start(self.gw(), &self.work, "lapi", LAPI_LISTEN.parse().unwrap())
    }

    /// port25.toml: both interfaces, policy ratelimit, the bouncer polling every second.
    fn config(&self, key: &str, extra: &str) -> PathBuf {
        let key_file = self.work.join("bouncer.key");
        fs::write(&key_file, format!("{key}\n")).unwrap();
        let path = self.work.join("port25.toml");
        fs::write(
            &path,
            format!(
                "interfaces = [\"gw0\", \"gw1\"]\n[metrics]\nlisten = \"{METRICS}\"\n\
                 [crowdsec]\nlapi_url = \"http://{LAPI_LISTEN}\"\nbouncer_key_file = \"{}\"\n\
                 update_frequency = 1\n{extra}",
                key_file.display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts port25d with a state directory that outlives it (the CrowdSec list is kept there).
    fn start(&self, config: &std::path::Path, log: &str) -> Daemon<'_> {
        Daemon::start_in(self.gw(), config, &self.work, log, None)
    }

    /// The live program's verdict on a SYN to port 25 from `source` arriving on `iface`.
    fn verdict(&self, iface: &str, source: &str) -> u32 {
        let frame = frames::tcp(source, 25).build();
        live_xdp_verdict(self.gw(), iface, &frame, &self.work)
    }

    /// Waits until a SYN from `source` gets `wanted`; how long that took.
    fn wait_for_verdict(
        &self,
        iface: &str,
        source: &str,
        wanted: u32,
        daemon: &Daemon,
    ) -> Duration {
        let started = Instant::now();
        poll(WITHIN_A_POLL, || (self.verdict(iface, source) == wanted).then_some(())).unwrap_or_else(
            || {
                panic!(
                    "a SYN from {source} on {iface} did not get XDP action {wanted} within {WITHIN_A_POLL:?}; port25d's log:\n{}",
                    daemon.log()
                )
            },
        );
        started.elapsed()
    }
}

fn held(daemon: &Daemon, origin: &str, family: &str) -> f64 {
    metric(
        &daemon.scrape(),
        "port25_crowdsec_decisions",
        &[("origin", origin), ("family", family)],
    )
    .unwrap_or(0.0)
}

/// The ids of the decisions port25d holds on `cidr`, as `deny list` shows them ("(decision N, …").
fn decision_ids(daemon: &Daemon, cidr: &str) -> Vec<String> {
    let (_, out, _) = daemon.cli(&["deny", "list"]);
    out.lines()
        .filter(|line| line.starts_with(&format!("{cidr} ")))
        .filter_map(|line| line.split("(decision ").nth(1)?.split(',').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bans_arrive_within_a_poll_and_leave_when_no_decision_holds_them() {
    let lab = Lab::new("cs-bans");
    let lapi = lab.lapi();
    let key = lapi.add_bouncer("port25d-gw");
    let _sink = SmtpSink::start(lab.gw(), "0.0.0.0:25".parse().unwrap(), &lab.work);
    let daemon = lab.start(&lab.config(&key, ""), "port25d.log");
    let other = &lab.net.clients[1];
    assert!(
        send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 25).delivered,
        "mail before any ban"
    );
    assert_eq!(lab.verdict("gw1", OTHER_V4), XDP_PASS);

    // An address, a v4 range, a v6 range: each dropped within a poll.
    lapi.cscli(&["decisions", "add", "--ip", OTHER_V4, "--duration", "1h"]);
    let took = lab.wait_for_verdict("gw1", OTHER_V4, XDP_DROP, &daemon);
    println!(
        "cscli decisions add --ip: dropped after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        !send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 25).delivered,
        "a banned client's real connection must not get through"
    );
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.18.7.0/24",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&["decisions", "add", "--range", "2001:db8:26::/64"]);
    lab.wait_for_verdict("gw1", "198.18.7.9", XDP_DROP, &daemon);
    lab.wait_for_verdict("gw1", OTHER_V6, XDP_DROP, &daemon);
    // The gauges follow the maps: the kernel may drop before the scrape shows the count.
    let counts = || {
        (
            held(&daemon, "cscli", "ipv4"),
            held(&daemon, "cscli", "ipv6"),
        )
    };
    let settled = poll(WITHIN_A_POLL, || (counts() == (2.0, 1.0)).then_some(()));
    assert!(
        settled.is_some(),
        "decisions held (ipv4, ipv6): {:?}",
        counts()
    );
    let (code, out, err) = daemon.cli(&["deny", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_mentions(
        &out,
        &[
            "3 decisions from CrowdSec",
            "198.18.7.0/24",
            "crowdsec cscli",
            "expires in 59m",
        ],
    );

    // A captcha is not a ban: skipped and counted, the address still passes.
    lapi.cscli(&["decisions", "add", "--ip", ALLOWED_V4, "--type", "captcha"]);
    poll(WITHIN_A_POLL, || {
        let skipped = metric(
            &daemon.scrape(),
            "port25_crowdsec_decisions_skipped_total",
            &[("reason", "type")],
        );
        (skipped >= Some(1.0)).then_some(())
    })
    .expect("the captcha decision counted as skipped");
    assert_eq!(lab.verdict("gw0", ALLOWED_V4), XDP_PASS);

    // Two decisions on one address; one deleted: still dropped. The other: it passes again.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        OTHER_V4,
        "--duration",
        "2h",
        "--reason",
        "second",
    ]);
    poll(WITHIN_A_POLL, || {
        (held(&daemon, "cscli", "ipv4") == 3.0).then_some(())
    })
    .expect("the second decision on the address is held");
    let ids = decision_ids(&daemon, &format!("{OTHER_V4}/32"));
    assert_eq!(ids.len(), 2, "{ids:?}");
    lapi.cscli(&["decisions", "delete", "--id", &ids[0]]);
    // The LAPI streams a deletion only once no decision bans the address: give it three polls.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.verdict("gw1", OTHER_V4),
        XDP_DROP,
        "another decision still holds it"
    );
    lapi.cscli(&["decisions", "delete", "--id", &ids[1]]);
    lab.wait_for_verdict("gw1", OTHER_V4, XDP_PASS, &daemon);
    assert!(
        send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 25).delivered,
        "mail once unbanned"
    );
    let text = daemon.scrape();
    assert!(
        metric(
            &text,
            "port25_crowdsec_polls_total",
            &[("result", "success")]
        ) > Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "port25_crowdsec_polls_total",
            &[("result", "failure")]
        ),
        Some(0.0)
    );
    assert!(metric(&text, "port25_crowdsec_last_success_timestamp_seconds", &[]).is_some());
}

#[test]
fn twenty_thousand_decisions_load_in_one_swap() {
    const COUNT: usize = 20_000;
    let lab = Lab::new("cs-many");
    let lapi = lab.lapi();
    let key = lapi.add_bouncer("port25d-gw");
    let csv = lab.work.join("decisions.csv");
    let mut text = String::from("duration,scope,value\n");
    for i in 0..COUNT {
        text.push_str(&format!("4h,ip,198.19.{}.{}\n", i / 256, i % 256));
    }
    fs::write(&csv, text).unwrap();
    lapi.cscli(&["decisions", "import", "-i", csv.to_str().unwrap()]);
    // The first poll is a full pull: every decision in one answer, one swap.
    let started = Instant::now();
    let daemon = lab.start(&lab.config(&key, ""), "port25d.log");
    poll(Duration::from_secs(30), || {
        // Whatever origin `cscli decisions import` gives them.
        let text = daemon.scrape();
        (metric_sum(&text, "port25_crowdsec_decisions", &[("family", "ipv4")]) == COUNT as f64)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{COUNT} decisions not held; log:\n{}", daemon.log()));
    let ready = started.elapsed();
    let log = daemon.log();
    let polls: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("decisions added"))
        .collect();
    assert_eq!(polls.len(), 1, "one poll brought them all: {polls:?}");
    assert!(
        polls[0].contains(&format!("{COUNT} decisions added")),
        "{}",
        polls[0]
    );
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("policy generation 2"),
        "the start's generation, then one swap:\n{status}"
    );
    assert_eq!(lab.verdict("gw1", "198.19.78.31"), XDP_DROP);
    assert_eq!(
        lab.verdict("gw1", "198.19.79.0"),
        XDP_PASS,
        "past the last one imported"
    );
    println!(
        "{COUNT} decisions: held and enforced {:.2} s after port25d started; the poll: {}",
        ready.as_secs_f64(),
        polls[0].rsplit_once(';').map_or("", |(_, t)| t)
    );
}

#[test]
fn bans_stay_while_the_lapi_is_down_and_across_a_restart() {
    let lab = Lab::new("cs-down");
    let mut lapi = lab.lapi();
    let key = lapi.add_bouncer("port25d-gw");
    let config = lab.config(&key, "");
    let daemon = lab.start(&config, "port25d-1.log");
    lapi.cscli(&["decisions", "add", "--ip", OTHER_V4, "--duration", "1h"]);
    lab.wait_for_verdict("gw1", OTHER_V4, XDP_DROP, &daemon);

    lapi.stop();
    poll(WITHIN_A_POLL, || {
        let text = daemon.scrape();
        (metric(
            &text,
            "port25_crowdsec_polls_total",
            &[("result", "failure")],
        ) >= Some(1.0))
        .then_some(())
    })
    .expect("a failed poll counted");
    let text = daemon.scrape();
    assert!(metric(&text, "port25_crowdsec_failed_polls_in_a_row", &[]) >= Some(1.0));
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(status.contains("UNREACHABLE"), "status says so:\n{status}");
    assert!(status.contains("the bans held stay enforced"), "{status}");
    assert_eq!(
        lab.verdict("gw1", OTHER_V4),
        XDP_DROP,
        "the ban stays while the LAPI is down"
    );

    // A restart while the LAPI is down: the ban is there from the start.
    daemon.stop();
    let daemon = lab.start(&config, "port25d-2.log");
    assert_eq!(
        lab.verdict("gw1", OTHER_V4),
        XDP_DROP,
        "the ban survived the restart"
    );
    daemon.assert_logged("kept from the last run are enforced");
    // The ban the first daemon took in is in the policy's history, with the LAPI that gave it.
    let history = run_ok(
        std::process::Command::new(Daemon::binary())
            .args(["history", "--state-dir"])
            .arg(lab.work.join("state")),
    );
    let ban = history
        .lines()
        .find(|line| line.contains("crowdsec by CrowdSec (http://127.0.0.1:8080)"))
        .unwrap_or_else(|| panic!("no CrowdSec change in the history:\n{history}"));
    assert!(ban.contains("1 prefixes banned"), "{ban}");
    assert!(history.contains(&format!("+{OTHER_V4}/32")), "{history}");

    // The LAPI back: deltas resume.
    lapi.resume();
    lapi.cscli(&["decisions", "add", "--ip", OTHER_V6, "--duration", "1h"]);
    let took = Instant::now();
    // The backoff after failures is at most a few seconds here (1 s doubling).
    poll(Duration::from_secs(20), || {
        (lab.verdict("gw1", OTHER_V6) == XDP_DROP).then_some(())
    })
    .unwrap_or_else(|| panic!("no delta after the LAPI came back; log:\n{}", daemon.log()));
    println!(
        "LAPI back: the next decision enforced after {:.2} s",
        took.elapsed().as_secs_f64()
    );
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(status.contains("reachable"), "{status}");
    assert_eq!(
        lab.verdict("gw1", OTHER_V4),
        XDP_DROP,
        "the first ban is still there"
    );
}
