//! Verdict tables: crafted frames through the real XDP program with BPF_PROG_TEST_RUN, checking the
//! action the kernel returned and the one counter it must have moved (or that none moved).

use std::path::Path;

use port25_common::{Reason, Verdict};
use port25_daemon::testing::{Config, Datapath};
use port25_testkit::{
    frames::{
        ETH_P_8021AD, ETH_P_8021Q, EXT_DEST_OPTS, EXT_HOP_BY_HOP, EXT_ROUTING, TCP_ACK, arp, icmp,
        tcp, udp,
    },
    reference::{XDP_DROP, XDP_PASS},
    require_root,
};

const ALLOWED4: &str = "198.18.1.10";
const DENIED4: &str = "198.18.2.66";
const OTHER4: &str = "198.18.3.3";
const ALLOWED6: &str = "2001:db8:1::10";
const DENIED6: &str = "2001:db8:2::66";
const OTHER6: &str = "2001:db8:3::3";

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
    datapath
        .apply_policy(&config, &config.allow, &config.deny)
        .expect("policy applies");
    datapath
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

fn dropped(reason: Reason) -> Option<(Verdict, Reason)> {
    Some((Verdict::Drop, reason))
}

fn passed(reason: Reason) -> Option<(Verdict, Reason)> {
    Some((Verdict::Pass, reason))
}

#[test]
fn ipv4_lists_ports_and_encapsulations() {
    let datapath = load(POLICY);
    let rows = vec![
        row(
            "allowlisted SYN",
            tcp(ALLOWED4, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "denylisted SYN",
            tcp(DENIED4, 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "deny beats a shorter allow",
            tcp("198.18.2.70", 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "allow /24 outside the deny /26",
            tcp("198.18.2.10", 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "not allowlisted SYN",
            tcp(OTHER4, 25).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "not allowlisted ACK",
            tcp(OTHER4, 25).flags(TCP_ACK).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "second protected port",
            tcp(OTHER4, 2525).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "submission 587 untouched",
            tcp(OTHER4, 587).build(),
            XDP_PASS,
            None,
        ),
        row(
            "smtps 465 untouched",
            tcp(DENIED4, 465).build(),
            XDP_PASS,
            None,
        ),
        row("http 80 untouched", tcp(OTHER4, 80).build(), XDP_PASS, None),
        row(
            "UDP to 25 untouched",
            udp(OTHER4, 25).build(),
            XDP_PASS,
            None,
        ),
        row("ICMP untouched", icmp(OTHER4).build(), XDP_PASS, None),
        row("ARP untouched", arp(), XDP_PASS, None),
        row(
            "802.1Q allowlisted",
            tcp(ALLOWED4, 25).vlan(ETH_P_8021Q).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "802.1Q not allowlisted",
            tcp(OTHER4, 25).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q not allowlisted",
            tcp(OTHER4, 25).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q denylisted",
            tcp(DENIED4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "double-tagged 587 untouched",
            tcp(OTHER4, 587)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv4 options 4 bytes",
            tcp(OTHER4, 25).ipv4_options(4).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv4 options 40 bytes (IHL 15)",
            tcp(OTHER4, 25).ipv4_options(40).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv4 options, allowlisted",
            tcp(ALLOWED4, 25).ipv4_options(40).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "IPv4 options 40 bytes, 587",
            tcp(OTHER4, 587).ipv4_options(40).build(),
            XDP_PASS,
            None,
        ),
        row(
            "first fragment judged",
            tcp(OTHER4, 25).fragment(0, true).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "non-first fragment passes",
            tcp(OTHER4, 25).fragment(3, false).build(),
            XDP_PASS,
            None,
        ),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IPv4 rows checked");
}

#[test]
fn ipv6_lists_and_extension_headers() {
    let datapath = load(POLICY);
    let rows = vec![
        row(
            "allowlisted SYN",
            tcp(ALLOWED6, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "denylisted SYN",
            tcp(DENIED6, 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "not allowlisted SYN",
            tcp(OTHER6, 25).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row("587 untouched", tcp(OTHER6, 587).build(), XDP_PASS, None),
        row(
            "UDP to 25 untouched",
            udp(OTHER6, 25).build(),
            XDP_PASS,
            None,
        ),
        row("ICMPv6 untouched", icmp(OTHER6).build(), XDP_PASS, None),
        row(
            "802.1Q not allowlisted",
            tcp(OTHER6, 25).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q allowlisted",
            tcp(ALLOWED6, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "hop-by-hop",
            tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "routing",
            tcp(OTHER6, 25).ext(EXT_ROUTING).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "destination options",
            tcp(DENIED6, 25).ext(EXT_DEST_OPTS).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "hop-by-hop, routing, dest opts, allowlisted",
            tcp(ALLOWED6, 25)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .ext(EXT_DEST_OPTS)
                .build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "hop-by-hop, routing, dest opts, 587",
            tcp(OTHER6, 587)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .ext(EXT_DEST_OPTS)
                .build(),
            XDP_PASS,
            None,
        ),
        row(
            "first fragment judged",
            tcp(OTHER6, 25).fragment(0, true).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "non-first fragment passes",
            tcp(OTHER6, 25).fragment(5, true).build(),
            XDP_PASS,
            None,
        ),
        row(
            "8 extension headers: judged",
            ext_chain(OTHER6, 8),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "9 extension headers: malformed",
            ext_chain(OTHER6, 9),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "9 extension headers, allowlisted: still malformed",
            ext_chain(ALLOWED6, 9),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IPv6 rows checked");
}

fn ext_chain(src: &str, headers: usize) -> Vec<u8> {
    let mut frame = tcp(src, 25);
    for _ in 0..headers {
        frame = frame.ext(EXT_DEST_OPTS);
    }
    frame.build()
}

#[test]
fn truncated_frames() {
    let datapath = load(POLICY);
    // Offsets: Ethernet 14, IPv4 20 (34), TCP ports end at 38, TCP header at 54; IPv6 header ends at 54.
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, as drivers never pass them up.
    let rows = vec![
        row(
            "Ethernet header only, IPv4 ethertype",
            tcp(OTHER4, 25).truncate(14).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "Ethernet header only, ARP ethertype",
            arp()[..14].to_vec(),
            XDP_PASS,
            None,
        ),
        row(
            "VLAN tag cut",
            tcp(OTHER4, 25).vlan(ETH_P_8021Q).truncate(16).build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv4 header cut",
            tcp(OTHER4, 25).truncate(30).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 options cut",
            tcp(OTHER4, 25).ipv4_options(40).truncate(50).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "TCP ports cut",
            tcp(OTHER4, 25).truncate(36).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "first fragment too short for ports",
            tcp(OTHER4, 25).fragment(0, true).truncate(36).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "TCP header cut after ports, port 25",
            tcp(OTHER4, 25).truncate(40).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "TCP header cut after ports, allowlisted",
            tcp(ALLOWED4, 25).truncate(40).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "TCP header cut after ports, port 587",
            tcp(OTHER4, 587).truncate(40).build(),
            XDP_PASS,
            None,
        ),
        row(
            "UDP cut",
            udp(OTHER4, 25).truncate(36).build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv6 header cut",
            tcp(OTHER6, 25).truncate(40).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 extension header cut",
            tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).truncate(58).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 TCP ports cut",
            tcp(OTHER6, 25).truncate(56).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 TCP header cut, port 25",
            tcp(OTHER6, 25).truncate(60).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
    ];
    let n = check(&datapath, &rows);
    println!("{n} truncation rows checked");
}

/// Bytes past the length the IP header declares (Ethernet padding, trailers) are not packet data,
/// as the kernel trims them; a declared length the frame does not hold is a truncated packet.
#[test]
fn ip_lengths_bound_what_is_read() {
    let datapath = load(POLICY);
    // A SYN is 54 bytes (IPv4) or 74 (IPv6); IPv4 header 20 bytes, IPv6 payload = TCP's 20.
    let rows = vec![
        row(
            "IPv4 SYN padded to 60 bytes",
            tcp(OTHER4, 25).pad_to(60).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv4 SYN, allowlisted, 24-byte trailer",
            tcp(ALLOWED4, 25).trailer(24).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "IPv4 first fragment of 2 TCP bytes, padded to 60: the ports are padding",
            tcp(ALLOWED4, 25)
                .fragment(0, true)
                .ip_length(22)
                .pad_to(60)
                .build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length ends after the ports, padded: TCP header cut",
            tcp(ALLOWED4, 25).ip_length(28).pad_to(60).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length ends after the ports, port 587: untouched",
            tcp(OTHER4, 587).ip_length(28).pad_to(60).build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv4 total length shorter than the IP header",
            tcp(ALLOWED4, 25).ip_length(19).pad_to(60).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length 0",
            tcp(ALLOWED4, 25).ip_length(0).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length shorter than the IP options",
            tcp(ALLOWED4, 25)
                .ipv4_options(8)
                .ip_length(24)
                .trailer(40)
                .build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length 1 byte past the frame, allowlisted",
            tcp(ALLOWED4, 25).ip_length(41).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv4 total length 1000 past a 54-byte frame, port 587: untouched",
            tcp(OTHER4, 587).ip_length(1054).build(),
            XDP_PASS,
            None,
        ),
        row(
            "UDP whose IPv4 total length lies: not TCP, untouched",
            udp(OTHER4, 25).ip_length(500).build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv6 SYN, 16-byte trailer",
            tcp(OTHER6, 25).trailer(16).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv6 SYN, allowlisted, payload length exact",
            tcp(ALLOWED6, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "IPv6 payload length 2, padded: the ports are padding",
            tcp(ALLOWED6, 25).ip_length(2).pad_to(80).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 payload length ends inside the extension header",
            tcp(ALLOWED6, 25)
                .ext(EXT_DEST_OPTS)
                .ip_length(4)
                .trailer(8)
                .build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 payload length 0 before TCP",
            tcp(ALLOWED6, 25).ip_length(0).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 payload length 0 before hop-by-hop: a jumbogram, bounded by the frame",
            tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).ip_length(0).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv6 payload length 1 past the frame, allowlisted",
            tcp(ALLOWED6, 25).ip_length(21).build(),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "IPv6 payload length past the frame, port 587: untouched",
            tcp(OTHER6, 587).ip_length(900).build(),
            XDP_PASS,
            None,
        ),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IP length rows checked");
}

#[test]
fn monitor_mode_counts_would_drop_and_passes() {
    let datapath = load(&format!("mode = \"monitor\"\n{POLICY}"));
    let would = |reason| Some((Verdict::WouldDrop, reason));
    let rows = vec![
        row(
            "not allowlisted",
            tcp(OTHER4, 25).build(),
            XDP_PASS,
            would(Reason::NotAllowlisted),
        ),
        row(
            "denylisted",
            tcp(DENIED6, 25).build(),
            XDP_PASS,
            would(Reason::Denylisted),
        ),
        row(
            "malformed",
            tcp(OTHER4, 25).truncate(36).build(),
            XDP_PASS,
            would(Reason::Malformed),
        ),
        row(
            "allowlisted",
            tcp(ALLOWED4, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row("587 untouched", tcp(OTHER4, 587).build(), XDP_PASS, None),
    ];
    check(&datapath, &rows);
}

#[test]
fn reload_switches_lists_and_ports_whole() {
    let mut datapath = load(POLICY);
    check(
        &datapath,
        &[
            row(
                "before: allowlisted",
                tcp(ALLOWED4, 25).build(),
                XDP_PASS,
                passed(Reason::Allowlisted),
            ),
            row(
                "before: other dropped",
                tcp(OTHER4, 25).build(),
                XDP_DROP,
                dropped(Reason::NotAllowlisted),
            ),
        ],
    );
    let swapped = r#"
policy = "drop"
ports = [587]
[allow]
cidrs = ["198.18.3.0/24"]
"#;
    let config = Config::parse(swapped, Path::new("swapped.toml")).expect("parses");
    datapath
        .apply_policy(&config, &config.allow, &config.deny)
        .expect("reload applies");
    check(
        &datapath,
        &[
            row(
                "after: old allow gone",
                tcp(ALLOWED4, 587).build(),
                XDP_DROP,
                dropped(Reason::NotAllowlisted),
            ),
            row(
                "after: new allow",
                tcp(OTHER4, 587).build(),
                XDP_PASS,
                passed(Reason::Allowlisted),
            ),
            row(
                "after: old deny gone (v6)",
                tcp(DENIED6, 587).build(),
                XDP_DROP,
                dropped(Reason::NotAllowlisted),
            ),
            row(
                "after: port 25 no longer protected",
                tcp(OTHER6, 25).build(),
                XDP_PASS,
                None,
            ),
        ],
    );
    // And back: the first generation's entries were really removed and rewritten.
    let config = Config::parse(POLICY, Path::new("verdicts.toml")).expect("parses");
    datapath
        .apply_policy(&config, &config.allow, &config.deny)
        .expect("second reload applies");
    check(
        &datapath,
        &[
            row(
                "back: allowlisted",
                tcp(ALLOWED4, 25).build(),
                XDP_PASS,
                passed(Reason::Allowlisted),
            ),
            row(
                "back: 587 untouched",
                tcp(OTHER4, 587).build(),
                XDP_PASS,
                None,
            ),
        ],
    );
}

/// Runs `count` SYNs from `src` and returns how many passed.
fn admitted_of(datapath: &Datapath, src: &str, count: usize) -> usize {
    let frame = tcp(src, 25).build();
    (0..count)
        .filter(|_| datapath.test_run(&frame).expect("BPF_PROG_TEST_RUN") == XDP_PASS)
        .count()
}

// Rates of one token a minute: within a test run, no bucket refills, so counts are exact.
const RATELIMIT: &str = r#"
policy = "ratelimit"
[allow]
cidrs = ["198.18.1.0/24"]
[deny]
cidrs = ["198.18.2.0/24"]
[ratelimit]
syn_rate = 1
syn_burst = 5
ipv4_prefix = 24
ipv6_prefix = 48
global_syn_rate = 1
global_syn_burst = 12
"#;

#[test]
fn ratelimit_spends_source_and_global_tokens() {
    // A syn_rate of 1/s would refill during a slow run; the burst is what is measured, and the
    // whole test takes milliseconds, far below one refill interval.
    let datapath = load(RATELIMIT);
    // Per source prefix: the burst of 5, then nothing.
    assert_eq!(admitted_of(&datapath, "198.18.3.1", 20), 5);
    // Same /24: same bucket, already empty.
    assert_eq!(admitted_of(&datapath, "198.18.3.200", 3), 0);
    // Another /24 has its own bucket; IPv6 /48 likewise.
    assert_eq!(admitted_of(&datapath, "198.18.4.1", 20), 5);
    // Global burst of 12: 10 spent above, 2 left for everyone else together.
    assert_eq!(admitted_of(&datapath, "2001:db8:3::1", 20), 2);
    assert_eq!(admitted_of(&datapath, "2001:db8:3:ffff::1", 5), 0);
    assert_eq!(admitted_of(&datapath, "198.18.5.1", 5), 0);

    let would = [
        // Allowlisted sources never spend tokens, denylisted are dropped before any bucket.
        row(
            "allowlisted during the flood",
            tcp("198.18.1.9", 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "denylisted",
            tcp("198.18.2.9", 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "SYN over the limit",
            tcp("198.18.3.1", 25).build(),
            XDP_DROP,
            dropped(Reason::RateLimited),
        ),
        // The rest of a connection spends no token.
        row(
            "ACK of a connection",
            tcp("198.18.3.1", 25).flags(TCP_ACK).build(),
            XDP_PASS,
            passed(Reason::Admitted),
        ),
        row(
            "SYN-ACK is not a new connection",
            tcp("198.18.3.1", 25)
                .flags(TCP_ACK | port25_testkit::frames::TCP_SYN)
                .build(),
            XDP_PASS,
            passed(Reason::Admitted),
        ),
        row(
            "587 untouched",
            tcp("198.18.3.1", 587).build(),
            XDP_PASS,
            None,
        ),
    ];
    check(&datapath, &would);
}

#[test]
fn ratelimit_in_monitor_mode_drops_nothing() {
    let datapath = load(&format!("mode = \"monitor\"\n{RATELIMIT}"));
    assert_eq!(admitted_of(&datapath, "198.18.3.1", 5), 5);
    check(
        &datapath,
        &[row(
            "over the limit, monitored",
            tcp("198.18.3.1", 25).build(),
            XDP_PASS,
            Some((Verdict::WouldDrop, Reason::RateLimited)),
        )],
    );
}

/// Pins the calling thread to one CPU, so two threads really run the program side by side.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let ret = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(ret, 0, "sched_setaffinity to CPU {cpu}");
    }
}

#[test]
fn ratelimit_buckets_hold_across_cpus() {
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    assert!(
        cpus >= 2,
        "this test needs at least 2 CPUs to race the buckets"
    );
    let datapath = load(
        RATELIMIT
            .replace("global_syn_burst = 12", "global_syn_burst = 100000")
            .as_str(),
    );
    let frame = tcp("198.18.7.7", 25).build();
    const RUNS: u32 = 20_000;
    std::thread::scope(|scope| {
        for cpu in 0..cpus {
            let (datapath, frame) = (&datapath, &frame);
            scope.spawn(move || {
                pin_to_cpu(cpu);
                datapath
                    .test_run_repeat(frame, RUNS)
                    .expect("BPF_PROG_TEST_RUN");
            });
        }
    });
    let totals = datapath.totals().expect("counters");
    let sum = |verdict, reason| -> u64 {
        totals
            .iter()
            .filter(|((_, v, r), _)| *v == verdict && *r == reason)
            .map(|(_, c)| c.packets)
            .sum()
    };
    let admitted = sum(Verdict::Pass, Reason::Admitted);
    let limited = sum(Verdict::Drop, Reason::RateLimited);
    println!(
        "{cpus} CPUs x {RUNS} SYNs from one source: {admitted} admitted, {limited} rate limited"
    );
    assert_eq!(admitted + limited, u64::from(RUNS) * cpus as u64);
    // The burst is 5 and a refill takes a second: racing CPUs must not spend a token twice.
    assert_eq!(admitted, 5);
}

/// The gateway's SYN-ACK to `client`:40000 from port 25, as the egress program sees it.
fn syn_ack(gateway: &str, client: &str, isn: u32) -> Vec<u8> {
    tcp(gateway, 40000)
        .to(client)
        .sport(25)
        .flags(TCP_ACK | port25_testkit::frames::TCP_SYN)
        .seq_ack(isn, 1000)
        .build()
}

/// The client's final handshake ACK.
fn final_ack(client: &str, ack: u32) -> Vec<u8> {
    tcp(client, 25).flags(TCP_ACK).seq_ack(1000, ack).build()
}

#[test]
fn completed_handshakes_verify_a_prefix_past_the_global_cap() {
    const TC_ACT_OK: u32 = 0;
    let datapath = load(RATELIMIT);
    // Drain the global bucket (12) from spoofed-looking sources, one SYN each.
    let drained: usize = (1..=20)
        .map(|i| admitted_of(&datapath, &format!("198.18.{}.1", 100 + i), 1))
        .sum();
    assert_eq!(drained, 12, "global burst");
    assert_eq!(
        admitted_of(&datapath, "198.18.3.1", 1),
        0,
        "global cap holds"
    );

    // A wrong acknowledgment number (what a spoofer guesses) proves nothing.
    let egress = datapath
        .test_run_egress(&syn_ack("198.18.0.1", "198.18.3.1", 7_000_000))
        .unwrap();
    assert_eq!(egress, TC_ACT_OK, "egress is never filtered");
    assert_eq!(
        datapath.test_run(&final_ack("198.18.3.1", 12345)).unwrap(),
        XDP_PASS
    );
    assert_eq!(
        admitted_of(&datapath, "198.18.3.1", 1),
        0,
        "still capped after a bad ACK"
    );

    // The right one (ISN + 1) verifies the /24: its SYNs skip the global cap, within its own bucket.
    datapath
        .test_run_egress(&syn_ack("198.18.0.1", "198.18.3.1", 7_000_000))
        .unwrap();
    assert_eq!(
        datapath
            .test_run(&final_ack("198.18.3.1", 7_000_001))
            .unwrap(),
        XDP_PASS
    );
    // The /24's bucket holds 5; the two SYNs the global cap refused above spent a token each.
    assert_eq!(
        admitted_of(&datapath, "198.18.3.77", 10),
        3,
        "verified /24, own bucket only"
    );
    // Other prefixes stay behind the global cap.
    assert_eq!(admitted_of(&datapath, "198.18.4.1", 3), 0);

    // IPv6 the same way: the SYN (refused by the global cap) comes first, as in real life.
    assert_eq!(
        admitted_of(&datapath, "2001:db8:3::1", 1),
        0,
        "capped before"
    );
    datapath
        .test_run_egress(&syn_ack("2001:db8:25::1", "2001:db8:3::1", 42))
        .unwrap();
    datapath.test_run(&final_ack("2001:db8:3::1", 43)).unwrap();
    assert_eq!(
        admitted_of(&datapath, "2001:db8:3::2", 10),
        4,
        "verified /48"
    );
}

#[test]
fn handshake_verification_can_be_turned_off() {
    let datapath = load(&format!("{RATELIMIT}verified_ttl = 0\n"));
    let _ = admitted_of(&datapath, "198.18.9.1", 20); // 5 from the global 12
    let _ = admitted_of(&datapath, "198.18.10.1", 20); // 5 more
    let _ = admitted_of(&datapath, "198.18.11.1", 20); // the last 2
    datapath
        .test_run_egress(&syn_ack("198.18.0.1", "198.18.3.1", 99))
        .unwrap();
    datapath.test_run(&final_ack("198.18.3.1", 100)).unwrap();
    assert_eq!(admitted_of(&datapath, "198.18.3.1", 5), 0);
}

/// Cuts each frame at every length from the Ethernet header to its full size: below the IP header
/// the frame claims nothing (pass, uncounted); from there until the whole TCP header is readable
/// it is TCP to a protected port that cannot be read to a decision (malformed); whole, it is judged.
#[test]
fn truncation_at_every_byte() {
    let datapath = load(POLICY);
    // (name, frame, where the IP header starts, verdict of the whole frame)
    let cases = [
        ("IPv4", tcp(OTHER4, 25), 14, dropped(Reason::NotAllowlisted)),
        (
            "IPv4, 802.1ad+802.1Q, 40 bytes of options",
            tcp(ALLOWED4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .ipv4_options(40),
            22,
            passed(Reason::Allowlisted),
        ),
        (
            "IPv6, hop-by-hop, routing, fragment (first), destination options",
            tcp(DENIED6, 25)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .fragment(0, true)
                .ext(EXT_DEST_OPTS),
            14,
            dropped(Reason::Denylisted),
        ),
        (
            "IPv6, 802.1Q",
            tcp(OTHER6, 2525).vlan(ETH_P_8021Q),
            18,
            dropped(Reason::NotAllowlisted),
        ),
    ];
    let mut checked = 0;
    for (name, builder, ip_start, whole) in cases {
        let full = builder.build();
        let rows: Vec<Row> = (14..=full.len())
            .map(|len| {
                let frame = full[..len].to_vec();
                let (action, counted) = if len < ip_start {
                    (XDP_PASS, None)
                } else if len < full.len() {
                    (XDP_DROP, dropped(Reason::Malformed))
                } else {
                    let action = match whole {
                        Some((Verdict::Pass, _)) => XDP_PASS,
                        _ => XDP_DROP,
                    };
                    (action, whole)
                };
                row(name, frame, action, counted)
            })
            .collect();
        checked += check(&datapath, &rows);
    }
    println!("{checked} truncation points checked");
}

/// The frame with an IPv4 authentication header (IPsec transport mode) between IP and TCP.
fn with_ipv4_ah(frame: Vec<u8>) -> Vec<u8> {
    const IP: usize = 14;
    let mut out = frame[..IP + 20].to_vec();
    out[IP + 9] = 51;
    let total = u16::from_be_bytes([out[IP + 2], out[IP + 3]]) + 12;
    out[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    // Next header TCP, length 1 ((1 + 2) * 4 = 12 bytes), reserved, SPI, sequence number.
    out.extend_from_slice(&[6, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&frame[IP + 20..]);
    out
}

#[test]
fn ipv4_ah_and_wrong_versions() {
    let datapath = load(POLICY);
    let mut v6_in_v4 = tcp(OTHER4, 25).build();
    v6_in_v4[14] = 0x65;
    let mut broken_udp = udp(OTHER4, 25).build();
    broken_udp[14] = 0x44; // IHL 4: broken, but plainly not TCP
    check(
        &datapath,
        &[
            row(
                "IPv4 AH, not allowlisted",
                with_ipv4_ah(tcp(OTHER4, 25).build()),
                XDP_DROP,
                dropped(Reason::NotAllowlisted),
            ),
            row(
                "IPv4 AH, allowlisted",
                with_ipv4_ah(tcp(ALLOWED4, 25).build()),
                XDP_PASS,
                passed(Reason::Allowlisted),
            ),
            row(
                "IPv4 AH, 587",
                with_ipv4_ah(tcp(OTHER4, 587).build()),
                XDP_PASS,
                None,
            ),
            row(
                "IPv4 AH cut before TCP",
                with_ipv4_ah(tcp(OTHER4, 25).build())[..40].to_vec(),
                XDP_DROP,
                dropped(Reason::Malformed),
            ),
            row(
                "version 6 behind the IPv4 ethertype: the stack's to drop",
                v6_in_v4,
                XDP_PASS,
                None,
            ),
            row(
                "broken IPv4 header carrying UDP",
                broken_udp,
                XDP_PASS,
                None,
            ),
        ],
    );
}

#[test]
fn more_than_two_vlan_tags_are_not_looked_into() {
    // Documented limit: the datapath reads two tags (802.1ad + 802.1Q). A third is an ethertype it
    // does not know, so the frame passes untouched; hosts that stack deeper attach to the inner
    // VLAN device instead.
    let datapath = load(POLICY);
    check(
        &datapath,
        &[row(
            "three VLAN tags",
            tcp(OTHER4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            None,
        )],
    );
}
