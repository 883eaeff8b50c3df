//! Policy synproxy end to end: during a spoofed SYN flood, senders the gateway has never seen
//! deliver their mail, where policy ratelimit's global cap turns most of them away.
//!
//! ```text
//!   senders   cl0 198.18.4.2/24 + 198.18.4.100-.169                  ── gw0 ┐ gw: port25d,
//!             2001:db8:29::2/64 + 2001:db8:29::100-::149                      │ smtp-sink :25
//!   attacker  cl0 198.18.5.66/24 2001:db8:30::66/64                     ── gw1 ┘ (v4 and v6)
//!             (spoofing 198.19.0.0/16 and 2001:db8:ffff::/48)
//! ```
//!
//! The flood is [`FLOOD_PER_SEC`] SYNs a second from random sources, ten times ratelimit's global
//! cap ([`GLOBAL_SYN_RATE`]): from 198.19.0.0/16 under ratelimit, from there and from
//! 2001:db8:ffff::/48 in turn under synproxy. Under ratelimit, [`RATELIMIT_SENDERS`] new senders
//! each try one message: they compete with the flood for the global bucket, and most cannot
//! connect within swaks' 3 s. Under synproxy, [`SYNPROXY_SENDERS`] other new IPv4 senders and as
//! many IPv6 ones each deliver one: XDP answers every SYN with a cookie (the SYN-ACK budget,
//! 20,000 a second by default, is above the flood: it stands for the uplink), only the real
//! senders' ACKs come back, and netfilter's SYNPROXY (nftables' for IPv4, ip6tables' for IPv6)
//! hands their connections to smtp-sink. Asserted: all of them delivered, smtp-sink saw their own
//! addresses, the gateway's listen queue never overflowed and its stack sent no SYN cookie of its
//! own (nstat), SYNPROXY validated at least their cookies (/proc/net/stat/synproxy), conntrack
//! stayed small (the flood is never tracked), and port25d installed its nftables table and
//! ip6tables chain and removed both when it stopped. Then, flood still on, [`ALLOWLISTED`]
//! senders (in the config's allow list, and one added at runtime) deliver without SYNPROXY: the
//! table's allow sets hold them, its counters saw their SYNs, and SYNPROXY validated no cookie
//! for them. Last, synproxy in monitor mode, no flood: [`MONITOR_SENDERS`] senders deliver
//! through the stack, their SYNs count as ones enforce mode would answer, their handshakes as
//! valid cookies, and nothing as a drop enforce mode would make.
//!
//! On veth the clients' end computes checksums in software (`ethtool -K cl0 tx off`: the program
//! verifies the SYN's checksum, which a partial offload leaves unfinished) and runs an XDP program
//! of its own, which XDP_TX to a veth peer needs ([`XdpPass`]).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::{
    ffi::OsStr,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use port25_testkit::{
    frames,
    lab::{
        BpfFs, Client, Daemon, Delivery, Gateway, METRICS, Netns, PacketSocket, SMTP_LAB_TOOLS,
        SmtpSink, WorkDir, XdpPass, metric_sum, require_tools, send_mail, tool,
    },
    rng::Rng,
};

const GLOBAL_SYN_RATE: u32 = 200;
/// Ten times the global cap.
const FLOOD_PER_SEC: f64 = 2_000.0;
/// The flood's hard bound: 40 s at that pace.
const FLOOD_MAX_FRAMES: u64 = 80_000;
const RATELIMIT_SENDERS: u8 = 20;
/// Allowlisted senders, `n` of [`sender`] and [`sender_v6`] outside the new senders' range:
/// two in the config's allow list, the third added at runtime.
const ALLOWLISTED: [(u8, bool); 3] = [(190, false), (190, true), (193, false)];
const SYNPROXY_SENDERS: u8 = 50;
/// New senders (each an IPv4 and an IPv6 address) under synproxy in monitor mode.
const MONITOR_SENDERS: u8 = 3;
/// swaks runs at once.
const WORKERS: usize = 5;

const GW_ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 1);
const GW_ATTACKER_V6: &str = "2001:db8:30::1";

fn write_config(path: &Path, policy: &str) {
    let text = format!(
        r#"interfaces = ["gw0", "gw1"]
policy = "{policy}"
ports = [25]

[ratelimit]
syn_rate = 10
syn_burst = 20
ipv4_prefix = 32
ipv6_prefix = 128
global_syn_rate = {GLOBAL_SYN_RATE}
global_syn_burst = {GLOBAL_SYN_RATE}

[allow]
cidrs = ["{}", "{}"]

[metrics]
listen = "{METRICS}"
"#,
        allowlisted(0),
        allowlisted(1)
    );
    fs::write(path, text).expect("writing the config");
}

/// The `n`-th sender address: 198.18.4.{100+n}.
fn sender(n: u8) -> IpAddr {
    Gateway::v4(4, 100 + n).into()
}

/// The `n`-th IPv6 sender address: 2001:db8:29::{100+n}.
fn sender_v6(n: u8) -> IpAddr {
    Gateway::v6(4, 100 + n).into()
}

/// The `i`-th of [`ALLOWLISTED`].
fn allowlisted(i: usize) -> IpAddr {
    match ALLOWLISTED[i] {
        (n, false) => Gateway::v4(4, n).into(),
        (n, true) => Gateway::v6(4, n).into(),
    }
}

/// One message from each of `sources`, [`WORKERS`] at a time.
fn deliver_from(ns: &Netns, sources: &[IpAddr]) -> Vec<(IpAddr, Delivery)> {
    let chunks: Vec<&[IpAddr]> = sources.chunks(sources.len().div_ceil(WORKERS)).collect();
    thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&source| {
                            let server: IpAddr = match source {
                                IpAddr::V4(_) => Gateway::v4(4, 1).into(),
                                IpAddr::V6(_) => Gateway::v6(4, 1).into(),
                            };
                            (source, send_mail(ns, source, server, 25))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a delivery worker"))
            .collect()
    })
}

/// A spoofed flood from the attacker's namespace for as long as `deliver` runs, IPv4 only or
/// both families in turn (`with_v6`); returns what `deliver` returned and the frames sent.
fn during_flood<T: Send>(
    lab: &Gateway,
    with_v6: bool,
    deliver: impl FnOnce() -> T + Send,
) -> (T, u64) {
    let (gw, attacker) = (&lab.gw, &lab.clients[1]);
    let macs = (gw.mac("gw1"), attacker.mac("cl0"));
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    thread::scope(|scope| {
        let flood = attacker.spawn_inside(scope, || {
            let socket = PacketSocket::bind("cl0").expect("a packet socket on cl0");
            let mut rng = Rng(0x5eed_0025);
            let mut frame_v4 = frames::tcp("198.19.0.1", 25)
                .to(&GW_ATTACKER_V4.to_string())
                .build();
            let mut frame_v6 = frames::tcp("2001:db8:ffff::1", 25)
                .to(GW_ATTACKER_V6)
                .build();
            let started = Instant::now();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) && count < FLOOD_MAX_FRAMES {
                let due = (started.elapsed().as_secs_f64() * FLOOD_PER_SEC) as u64;
                while count < due.min(FLOOD_MAX_FRAMES) {
                    let random = rng.next_u64();
                    let frame = if with_v6 && count % 2 == 1 {
                        let [a, b, c, d, e, f, g, h] = random.to_be_bytes();
                        let source = Ipv6Addr::from([
                            0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, a, b, c, d, e, f, g, h, 0, 1,
                        ]);
                        frames::respoof_syn(&mut frame_v6, macs, source, &mut rng);
                        &frame_v6
                    } else {
                        let [hi, lo] = ((random & 0xffff) as u16).to_be_bytes();
                        let source = Ipv4Addr::new(198, 19, hi, lo);
                        frames::respoof_syn(&mut frame_v4, macs, source, &mut rng);
                        &frame_v4
                    };
                    if socket.send(frame).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    count += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        // Let the flood run a moment before the first sender tries.
        thread::sleep(Duration::from_millis(500));
        let result = deliver();
        stop.store(true, Ordering::Relaxed);
        flood.join().expect("the flood thread");
        (result, sent.load(Ordering::Relaxed))
    })
}

/// The TcpExt counters of the namespace (`/proc/net/netstat`) named in `names`.
fn tcp_ext(ns: &Netns, names: &[&str]) -> Vec<u64> {
    let counters = tcp_ext_all(ns);
    names
        .iter()
        .map(|name| {
            counters
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| *value)
                .unwrap_or_else(|| panic!("no TcpExt {name} in {counters:?}"))
        })
        .collect()
}

/// Every TcpExt counter of the namespace, by name.
fn tcp_ext_all(ns: &Netns) -> Vec<(String, u64)> {
    let text = read_in(ns, "/proc/net/netstat");
    let mut lines = text.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(header), Some(values)) = (lines.next(), lines.next()) else {
        panic!("no TcpExt in /proc/net/netstat:\n{text}");
    };
    header
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(name, value)| (name.to_owned(), value.parse().unwrap_or(0)))
        .collect()
}

/// `TSEcrRejected`, on kernels that count it: ACKs whose timestamp echo the listener refused
/// in the handshake, which is what delays SYNPROXY's connections there (README).
fn tsecr_rejected(ns: &Netns) -> Option<u64> {
    tcp_ext_all(ns)
        .into_iter()
        .find_map(|(name, value)| (name == "TSEcrRejected").then_some(value))
}

/// SYNPROXY's `cookie_valid`, summed over the CPUs (`/proc/net/stat/synproxy`, hexadecimal).
fn synproxy_cookies_valid(ns: &Netns) -> u64 {
    let text = read_in(ns, "/proc/net/stat/synproxy");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let column = header
        .iter()
        .position(|name| *name == "cookie_valid")
        .unwrap_or_else(|| panic!("no cookie_valid column in /proc/net/stat/synproxy:\n{text}"));
    lines
        .filter_map(|line| line.split_whitespace().nth(column))
        .map(|value| u64::from_str_radix(value, 16).unwrap_or(0))
        .sum()
}

fn read_in(ns: &Netns, path: &str) -> String {
    let output = ns
        .command(tool("cat"))
        .arg(path)
        .output()
        .expect("running cat");
    assert!(
        output.status.success(),
        "cannot read {path} in {}",
        ns.name()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What `nft list KIND inet port25 [NAME]` prints, `None` when nft refuses (no such table,
/// chain or set).
fn nft_list(ns: &Netns, kind: &str, name: Option<&str>) -> Option<String> {
    let output = ns
        .command(tool("nft"))
        .args(["list", kind, "inet", "port25"])
        .args(name)
        .output()
        .expect("running nft");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether port25d's nftables table is in the namespace.
fn has_table(ns: &Netns) -> bool {
    nft_list(ns, "table", None).is_some()
}

/// The packets counted by the table's rules that let allowlisted SYNs through, IPv4's and IPv6's.
fn exempted(ns: &Netns) -> (u64, u64) {
    let listing = nft_list(ns, "chain", Some("prerouting")).unwrap_or_default();
    let count = |set: &str| {
        listing
            .lines()
            .find(|line| line.contains(set))
            .and_then(|line| line.split("counter packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|packets| packets.parse().ok())
            .unwrap_or_else(|| panic!("no counter on the rule of {set}:\n{listing}"))
    };
    (count("@allow4"), count("@allow6"))
}

/// What `nft` lists of the table's set `set` (empty when there is none).
fn set_listing(ns: &Netns, set: &str) -> String {
    nft_list(ns, "set", Some(set)).unwrap_or_default()
}

/// Whether port25d's ip6tables chain is in the namespace.
fn has_chain(ns: &Netns) -> bool {
    let output = ns
        .command(tool("ip6tables-legacy-save"))
        .args(["-t", "mangle"])
        .output()
        .expect("running ip6tables-legacy-save");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.starts_with(":PORT25 "))
}

/// port25d with `policy`, in monitor mode when `monitor` (`--monitor`).
fn start_daemon<'a>(
    gw: &'a Netns,
    work: &WorkDir,
    bpffs: &BpfFs,
    policy: &str,
    monitor: bool,
) -> Daemon<'a> {
    let name = if monitor {
        format!("{policy}-monitor")
    } else {
        policy.to_owned()
    };
    let config = work.join(format!("{name}.toml"));
    write_config(&config, policy);
    let pin_dir = bpffs.pin_dir();
    let mut args = vec![OsStr::new("--pin-dir"), pin_dir.as_os_str()];
    if monitor {
        args.push(OsStr::new("--monitor"));
    }
    Daemon::start_with_args(
        gw,
        &config,
        METRICS.parse().expect("a socket address"),
        &work.join(format!("port25d-{name}.log")),
        &args,
    )
}

/// `port25_packets_total` of one verdict and reason, summed over interfaces.
fn packets_of(metrics: &str, verdict: &str, reason: &str) -> f64 {
    metric_sum(
        metrics,
        "port25_packets_total",
        &[("verdict", verdict), ("reason", reason)],
    )
}

fn latencies<'a>(deliveries: impl IntoIterator<Item = &'a (IpAddr, Delivery)>) -> String {
    let mut times: Vec<Duration> = deliveries
        .into_iter()
        .filter(|(_, delivery)| delivery.delivered)
        .map(|(_, delivery)| delivery.elapsed)
        .collect();
    times.sort();
    match (times.first(), times.get(times.len() / 2), times.last()) {
        (Some(min), Some(median), Some(max)) => {
            format!("min {min:.2?}, median {median:.2?}, max {max:.2?}")
        }
        _ => "none delivered".to_owned(),
    }
}

#[test]
fn new_senders_get_in_during_a_spoofed_flood_with_synproxy() {
    port25_testkit::require_root();
    require_tools(SMTP_LAB_TOOLS);
    require_tools(&["nft", "ip6tables-legacy-save", "ethtool", "cat"]);
    Daemon::binary();

    let work = WorkDir::new("synproxy");
    let bpffs = BpfFs::mount("synproxy");
    let lab = Gateway::new(
        "synproxy",
        &[Client::new("senders", 4, 2), Client::new("attacker", 5, 66)],
    );
    let (gw, senders) = (&lab.gw, &lab.clients[0]);
    for n in 0..SYNPROXY_SENDERS + RATELIMIT_SENDERS {
        senders.ip(&["addr", "add", &format!("{}/24", sender(n)), "dev", "cl0"]);
    }
    for n in 0..SYNPROXY_SENDERS {
        let address = format!("{}/64", sender_v6(n));
        senders.ip(&["addr", "add", &address, "dev", "cl0", "nodad"]);
    }
    for i in 0..ALLOWLISTED.len() {
        let address = match allowlisted(i) {
            IpAddr::V4(address) => format!("{address}/24"),
            IpAddr::V6(address) => format!("{address}/64"),
        };
        senders.ip(&["addr", "add", &address, "dev", "cl0", "nodad"]);
    }
    let mut _passes = Vec::new();
    for client in &lab.clients {
        let output = client
            .command(tool("ethtool"))
            .args(["-K", "cl0", "tx", "off"])
            .output()
            .expect("running ethtool");
        assert!(
            output.status.success(),
            "ethtool -K cl0 tx off: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        _passes.push(XdpPass::attach(client, "cl0"));
    }
    let sink = SmtpSink::start(gw, "0.0.0.0:25".parse::<SocketAddr>().unwrap(), &work);
    let sink_v6 = SmtpSink::start(gw, "[::]:25".parse::<SocketAddr>().unwrap(), &work);

    // ---- ratelimit: new senders compete with the flood for the global bucket ----------------
    let daemon = start_daemon(gw, &work, &bpffs, "ratelimit", false);
    let sources: Vec<IpAddr> = (0..RATELIMIT_SENDERS)
        .map(|n| sender(SYNPROXY_SENDERS + n))
        .collect();
    let (deliveries, flood) = during_flood(&lab, false, || deliver_from(senders, &sources));
    let delivered = deliveries.iter().filter(|(_, d)| d.delivered).count();
    let metrics = daemon.scrape();
    let limited = metric_sum(
        &metrics,
        "port25_packets_total",
        &[("verdict", "drop"), ("reason", "rate_limited")],
    );
    println!(
        "ratelimit: {delivered} of {RATELIMIT_SENDERS} new senders delivered during a flood of \
         {flood} spoofed SYNs ({limited} SYNs rate-limited); latency {}",
        latencies(&deliveries)
    );
    assert!(
        limited > 0.0,
        "the flood must hit the global cap:\n{metrics}"
    );
    assert!(
        delivered < usize::from(RATELIMIT_SENDERS),
        "every new sender got in under ratelimit: the flood did not contend for the cap"
    );
    daemon.stop();

    // ---- synproxy: every new sender gets in --------------------------------------------------
    let daemon = start_daemon(gw, &work, &bpffs, "synproxy", false);
    assert!(
        has_table(gw) && has_chain(gw),
        "port25d installs its nftables table and its ip6tables chain:\n{}",
        daemon.log()
    );
    let loose = read_in(gw, "/proc/sys/net/netfilter/nf_conntrack_tcp_loose");
    assert_eq!(loose.trim(), "0", "nf_conntrack_tcp_loose");
    let runtime = allowlisted(2).to_string();
    let (code, _, stderr) = daemon.cli(&["allow", "add", &runtime]);
    assert_eq!(code, 0, "port25d allow add {runtime}: {stderr}");
    let allow4 = set_listing(gw, "allow4");
    assert!(
        allow4.contains(&allowlisted(0).to_string()) && allow4.contains(&runtime),
        "the allow set holds the config's entry and the runtime one:\n{allow4}"
    );
    let stack_before = tcp_ext(gw, &["ListenOverflows", "SyncookiesSent"]);
    let tsecr_before = tsecr_rejected(gw);
    let cookies_before = synproxy_cookies_valid(gw);
    let sources: Vec<IpAddr> = (0..SYNPROXY_SENDERS)
        .flat_map(|n| [sender(n), sender_v6(n)])
        .collect();
    let peers: Vec<IpAddr> = (0..ALLOWLISTED.len()).map(allowlisted).collect();
    let ((deliveries, peer_deliveries, peer_cookies), flood) = during_flood(&lab, true, || {
        let deliveries = deliver_from(senders, &sources);
        // The new senders are done: SYNPROXY validates no more cookies unless a peer's
        // connection goes through it.
        let cookies = synproxy_cookies_valid(gw);
        let peer_deliveries = deliver_from(senders, &peers);
        let peer_cookies = synproxy_cookies_valid(gw) - cookies;
        (deliveries, peer_deliveries, peer_cookies)
    });
    let metrics = daemon.scrape();
    let packets = |verdict, reason| packets_of(&metrics, verdict, reason);
    let (answered, valid, invalid, budget) = (
        packets("answered", "syn_cookie"),
        packets("pass", "cookie_valid"),
        packets("drop", "cookie_invalid"),
        packets("drop", "synack_budget"),
    );
    let stack_after = tcp_ext(gw, &["ListenOverflows", "SyncookiesSent"]);
    let tsecr = match (tsecr_before, tsecr_rejected(gw)) {
        (Some(before), Some(after)) => format!("{}", after - before),
        _ => "not counted by this kernel".to_owned(),
    };
    let cookies = synproxy_cookies_valid(gw) - cookies_before - peer_cookies;
    let (exempt4, exempt6) = exempted(gw);
    let tracked: u64 = read_in(gw, "/proc/sys/net/netfilter/nf_conntrack_count")
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    for (name, v6) in [("IPv4", false), ("IPv6", true)] {
        let of_family: Vec<&(IpAddr, Delivery)> = deliveries
            .iter()
            .filter(|(source, _)| source.is_ipv6() == v6)
            .collect();
        let delivered = of_family.iter().filter(|(_, d)| d.delivered).count();
        println!(
            "synproxy: {delivered} of {SYNPROXY_SENDERS} new {name} senders delivered; latency {}",
            latencies(of_family.iter().copied())
        );
    }
    println!(
        "synproxy: during a flood of {flood} spoofed SYNs (IPv4 and IPv6 in turn): SYN-ACKs with \
         cookies {answered}, cookies valid {valid}, invalid {invalid}, budget hits {budget}; \
         SYNPROXY cookies valid {cookies}; conntrack entries {tracked}; \
         ListenOverflows/SyncookiesSent {stack_before:?} -> {stack_after:?}; SYNPROXY's ACKs \
         the listener refused for their timestamp echo (TSEcrRejected, the latency): {tsecr}"
    );
    println!(
        "synproxy: {} of {} allowlisted senders delivered without SYNPROXY (the table let \
         {exempt4} IPv4 and {exempt6} IPv6 SYNs of theirs through tracked; SYNPROXY cookies \
         valid meanwhile {peer_cookies}); latency {}",
        peer_deliveries.iter().filter(|(_, d)| d.delivered).count(),
        ALLOWLISTED.len(),
        latencies(&peer_deliveries)
    );
    let failed: Vec<String> = deliveries
        .iter()
        .chain(&peer_deliveries)
        .filter(|(_, d)| !d.delivered)
        .map(|(source, d)| format!("{source}:\n{}", d.transcript))
        .collect();
    assert!(
        failed.is_empty(),
        "senders that did not get in under synproxy:\n{}\n{metrics}\n{}",
        failed.join("\n"),
        daemon.log()
    );
    for (source, _) in deliveries.iter().chain(&peer_deliveries) {
        let sink = if source.is_ipv6() { &sink_v6 } else { &sink };
        assert_eq!(
            sink.wait_for_messages(*source, 1),
            1,
            "smtp-sink saw the message from {source} under its own address"
        );
    }
    assert!(
        answered >= flood as f64 * 0.9,
        "nearly every flood SYN is answered from XDP: {answered} of {flood}"
    );
    assert!(
        valid >= f64::from(2 * u32::from(SYNPROXY_SENDERS)),
        "cookies valid: {valid}"
    );
    assert!(
        cookies >= 2 * u64::from(SYNPROXY_SENDERS),
        "SYNPROXY validated {cookies} cookies"
    );
    assert_eq!(
        stack_before, stack_after,
        "ListenOverflows and SyncookiesSent"
    );
    assert!(
        tracked < 1_000,
        "conntrack holds {tracked} entries: the flood must stay untracked"
    );
    assert_eq!(
        peer_cookies, 0,
        "allowlisted senders' connections do not go through SYNPROXY"
    );
    assert!(
        exempt4 >= 2 && exempt6 >= 1,
        "the table's allow rules saw the allowlisted SYNs: {exempt4} IPv4, {exempt6} IPv6"
    );
    let (code, _, stderr) = daemon.cli(&["allow", "del", &runtime]);
    assert_eq!(code, 0, "port25d allow del {runtime}: {stderr}");
    let allow4 = set_listing(gw, "allow4");
    assert!(
        allow4.contains(&allowlisted(0).to_string()) && !allow4.contains(&runtime),
        "the runtime entry left the allow set, the config's stays:\n{allow4}"
    );
    daemon.stop();
    assert!(
        !has_table(gw) && !has_chain(gw),
        "port25d removes its table and its chain when it detaches"
    );

    // ---- synproxy in monitor mode: the stack answers, what enforce would do is counted ------
    let daemon = start_daemon(gw, &work, &bpffs, "synproxy", true);
    assert!(
        !has_table(gw),
        "monitor mode installs no table:\n{}",
        daemon.log()
    );
    let sources: Vec<IpAddr> = (0..MONITOR_SENDERS)
        .flat_map(|n| [sender(n), sender_v6(n)])
        .collect();
    let deliveries = deliver_from(senders, &sources);
    let metrics = daemon.scrape();
    let packets = |verdict, reason| packets_of(&metrics, verdict, reason);
    let delivered = deliveries.iter().filter(|(_, d)| d.delivered).count();
    let (would_answer, valid, answered) = (
        packets("pass", "syn_cookie"),
        packets("pass", "cookie_valid"),
        packets("answered", "syn_cookie"),
    );
    let would_drop = metric_sum(
        &metrics,
        "port25_packets_total",
        &[("verdict", "would_drop")],
    );
    println!(
        "synproxy, monitor mode: {delivered} of {} senders delivered through the stack; SYNs \
         enforce mode would answer {would_answer}, handshakes standing for a valid cookie \
         {valid}, would-be drops {would_drop}, answered from XDP {answered}",
        sources.len()
    );
    assert_eq!(
        delivered,
        sources.len(),
        "every sender delivers in monitor mode"
    );
    let real = sources.len() as f64;
    assert!(
        would_answer >= real && valid >= real,
        "each sender's SYN would be answered and its handshake proven:\n{metrics}"
    );
    assert_eq!(
        (would_drop, answered),
        (0.0, 0.0),
        "real senders' connections would not be dropped, and nothing is answered:\n{metrics}"
    );
    daemon.stop();
}
