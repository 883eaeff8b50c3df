//! Verdict tables: crafted frames through the real XDP program with BPF_PROG_TEST_RUN, checking the
//! action the kernel returned and the one counter it must have moved (or that none moved).

mod encapsulations;
mod nesting;
mod policy;
mod ratelimit;
mod synproxy;
mod truncation;

use std::path::Path;

use port25_common::{
    Reason::{self, *},
    Verdict,
};
use port25_daemon::testing::{Config, Datapath, ListKind};
use port25_testkit::{
    frames::{
        ALLOWED4, ALLOWED6, DENIED4, DENIED6, ETH_P_8021AD, ETH_P_8021Q, EXT_DEST_OPTS,
        EXT_HOP_BY_HOP, EXT_ROUTING, OTHER4, OTHER6, TCP_ACK, TCP_SYN, arp, icmp, tcp, udp,
    },
    reference::{XDP_DROP, XDP_PASS},
    require_root,
};

const POLICY: &str = r#"
policy = "drop"
ports = [25, 2525]
[allow]
cidrs = ["198.18.1.0/24", "2001:db8:1::/48", "198.18.2.0/24"]
[deny]
# More specific than the allowlisted /24 it sits in: the deny list wins regardless of prefix.
cidrs = ["198.18.2.64/26", "2001:db8:2::/48"]
"#;

/// What a frame must do: the XDP action, and which counter moves (None: untouched, uncounted).
struct Row {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    counted: Option<(Verdict, Reason)>,
}

fn row(name: &'static str, frame: Vec<u8>, action: u32, counted: Option<(Verdict, Reason)>) -> Row {
    Row {
        name,
        frame,
        action,
        counted,
    }
}

fn load(policy: &str) -> Datapath {
    require_root();
    let config = Config::parse(policy, Path::new("verdicts.toml")).expect("test policy parses");
    let mut datapath =
        Datapath::load_private(config.ratelimit.tracked_sources).expect("XDP program loads");
    apply(&mut datapath, &config);
    datapath
}

/// Writes `policy` into the loaded program as the next generation, as a reload does.
fn reload(datapath: &mut Datapath, policy: &str) {
    apply(
        datapath,
        &Config::parse(policy, Path::new("reload.toml")).expect("parses"),
    );
}

fn apply(datapath: &mut Datapath, config: &Config) {
    datapath
        .apply_policy(config, config.allow.clone(), config.deny.clone())
        .expect("policy applies");
}

/// Runs every row and checks action and counters; returns how many rows ran.
fn check(datapath: &Datapath, rows: &[Row]) -> usize {
    let mut failures = Vec::new();
    for row in rows {
        let before = datapath.totals().expect("counters readable");
        let action = datapath.test_run(&row.frame).expect("BPF_PROG_TEST_RUN");
        let after = datapath.totals().expect("counters readable");
        let moved: Vec<_> = after
            .iter()
            .filter_map(|(key, counter)| {
                let old = before.get(key).copied().unwrap_or_default();
                (counter.packets != old.packets || counter.bytes != old.bytes).then(|| {
                    (
                        (key.1, key.2),
                        counter.packets - old.packets,
                        counter.bytes - old.bytes,
                    )
                })
            })
            .collect();
        let expected: Vec<_> = row
            .counted
            .iter()
            .map(|&pair| (pair, 1, row.frame.len() as u64))
            .collect();
        if action != row.action || moved != expected {
            failures.push(format!(
                "{}: action {action} (want {}), counters moved {moved:?} (want {expected:?})",
                row.name, row.action
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "verdict mismatches:\n{}",
        failures.join("\n")
    );
    rows.len()
}

/// Handshakes the kernel counted as completed for `prefix` (its entry in `SOURCES`): the CrowdSec
/// reporter's evidence.
fn completed(datapath: &Datapath, prefix: &str) -> u64 {
    let prefix: ipnet::IpNet = prefix
        .parse()
        .unwrap_or_else(|err| panic!("{prefix}: {err}"));
    datapath
        .source_tables()
        .read_all()
        .into_iter()
        .find(|tracked| tracked.source == prefix)
        .map_or(0, |tracked| tracked.completed)
}

fn dropped(reason: Reason) -> Option<(Verdict, Reason)> {
    Some((Verdict::Drop, reason))
}

fn passed(reason: Reason) -> Option<(Verdict, Reason)> {
    Some((Verdict::Pass, reason))
}

/// A frame that must be dropped, counted under `reason`.
fn drops(name: &'static str, frame: impl Into<Vec<u8>>, reason: Reason) -> Row {
    row(name, frame.into(), XDP_DROP, dropped(reason))
}

/// A frame that must pass, counted under `reason`.
fn passes(name: &'static str, frame: impl Into<Vec<u8>>, reason: Reason) -> Row {
    row(name, frame.into(), XDP_PASS, passed(reason))
}

/// A frame that is not ours: it passes, and no counter moves.
fn untouched(name: &'static str, frame: impl Into<Vec<u8>>) -> Row {
    row(name, frame.into(), XDP_PASS, None)
}

/// The gateway's SYN-ACK to `client`:40000 from port 25, as the SYN-ACK watcher sees it.
fn syn_ack(gateway: &str, client: &str, isn: u32) -> Vec<u8> {
    tcp(gateway, 40000)
        .to(client)
        .sport(25)
        .flags(TCP_ACK | TCP_SYN)
        .seq_ack(isn, 1000)
        .build()
}

/// The client's final handshake ACK.
fn final_ack(client: &str, ack: u32) -> Vec<u8> {
    tcp(client, 25).flags(TCP_ACK).seq_ack(1000, ack).build()
}
