//! SYN-flood lab for policy `ratelimit`: an attacker floods the gateway's port 25 while two
//! legitimate clients deliver real mail through the same filter.
//!
//! ```text
//!   allowed   cl0 198.18.0.10/24 ── gw0 198.18.0.1/24 ┐
//!   other     cl0 198.18.1.20/24 ── gw1 198.18.1.1/24 ├ gw: port25d (policy ratelimit) on gw0..gw2,
//!   attacker  cl0 198.18.2.66/24 ── gw2 198.18.2.1/24 ┘     smtp-sink on :25
//! ```
//!
//! `allowed` is allowlisted; `other` is a well-behaved sender that is not, and that delivered a
//! message before the floods (so its prefix is verified by a completed handshake and skips the
//! global bucket). The attacker floods in two phases:
//!
//! 1. hping3 SYNs from its own address (198.18.2.66), a few thousand a second: its per-source
//!    bucket (burst [`SYN_BURST`], [`SYN_RATE`]/s) must cap what gets past XDP.
//! 2. Crafted SYN frames from random spoofed sources in 198.19.0.0/16, sent through an AF_PACKET
//!    socket in the attacker's namespace: each source is new, so the global bucket (burst
//!    [`GLOBAL_SYN_BURST`], [`GLOBAL_SYN_RATE`]/s) must cap them. The gateway has no route to
//!    198.19.0.0/16, so its SYN-ACKs to them go nowhere (and they never get verified).
//!
//! During each flood both legitimate clients deliver a batch of messages with swaks; every one must
//! arrive. What got past XDP is counted independently by tcpdump on the gateway's side of the
//! attacker's veth (AF_PACKET taps run after XDP, so they see exactly what XDP passed), and
//! compared with the token-bucket bound, `port25d top` and the metrics.
//!
//! Asserted, per phase: every legitimate message delivered (swaks, and smtp-sink's dump); the
//! deliveries ran while the flood was on (it starts before them and is stopped after them); the
//! attacker's SYNs past XDP at most `burst + rate x duration` of the binding bucket, within
//! [`TOLERANCE_FACTOR`] and [`TOLERANCE_SYNS`], and at least most of it (the limiter is not
//! stingier than configured); every SYN the attacker sent is either admitted or counted
//! `rate_limited`, and tcpdump, `port25d top` and the metrics agree on the numbers (under the
//! spoofed flood, which keeps the global cap spent, `top` tracks the sources it admitted and a
//! sample of the others, and estimates their drops from the sample); the top-K metric's rank 1 is
//! the attacker. At the end: no packet of a legitimate client was dropped, and
//! the well-behaved client's prefix is still verified; no spoofed one ever was.
//!
//! Run with `cargo test -p port25-tests --test flood -- --nocapture` (as root).
#![allow(clippy::unwrap_used, reason = "test code")]

mod hping;
mod mail;
mod spoof;

use std::{
    collections::HashSet,
    ffi::OsStr,
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use self::{hping::*, mail::*, spoof::*};
use port25_testkit::{
    frames,
    lab::{
        ALLOWED_V4, BpfFs, Capture, Client, Daemon, Delivery, GW_A_V4, GW_B_V4, Gateway, METRICS,
        Netns, OTHER_V4, PacketSocket, SMTP_LAB_TOOLS, SmtpSink, TopRow, WorkDir, ip,
        metric_samples, metric_sum, poll, port25d_top, require_tools, send_mail, tool,
    },
    rng::Rng,
};

// ---- The policy under test -------------------------------------------------------------------

const SYN_RATE: f64 = 10.0;
const SYN_BURST: f64 = 20.0;
const GLOBAL_SYN_RATE: f64 = 200.0;
const GLOBAL_SYN_BURST: f64 = 200.0;

/// What a measured count may exceed its token-bucket bound by: 10 % plus 2 SYNs. The bound is
/// computed from the flood's duration as the sender saw it, which is an upper bound already; the
/// slack covers clock reads taken a moment apart on two sides of the wire.
const TOLERANCE_FACTOR: f64 = 1.10;
const TOLERANCE_SYNS: f64 = 2.0;

// ---- The lab ---------------------------------------------------------------------------------

const GW_C: &str = "198.18.2.1";
const ATTACKER: &str = "198.18.2.66";
const ATTACKER_PREFIX: &str = "198.18.2.66/32";
const OTHER_PREFIX: &str = "198.18.1.20/32";
/// Spoofed sources: inside the lab range, outside every subnet the gateway has a route to.
const SPOOFED_NET: &str = "198.19.0.0/16";

const PACKETS: &str = "port25_packets_total";

// ---- The traffic -----------------------------------------------------------------------------

/// Messages each legitimate client delivers during each flood.
const BATCH: usize = 10;
/// swaks runs per client at once.
const WORKERS: usize = 2;
/// Each flood lasts at least this long, and until the deliveries of its phase are done.
const MIN_FLOOD: Duration = Duration::from_secs(4);
/// ... and stops this long after the last delivery.
const FLOOD_TAIL: Duration = Duration::from_millis(300);
/// Phase 1: hping3's interval (µs) and hard bounds (packets, seconds).
const HPING_INTERVAL_US: u32 = 200;
const HPING_MAX_PACKETS: u32 = 40_000;
const HPING_MAX_SECS: u32 = 12;
/// Phase 2: spoofed frames per second and hard bound (40,000 frames: 5 s at that pace).
const SPOOF_PER_SEC: f64 = 8_000.0;
const SPOOF_MAX_FRAMES: u64 = 40_000;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn write_config(path: &Path) {
    let text = format!(
        r#"interfaces = ["gw0", "gw1", "gw2"]
policy = "ratelimit"
ports = [25]
mode = "enforce"

[allow]
cidrs = ["{ALLOWED_V4}/32"]

[ratelimit]
syn_rate = {SYN_RATE}
syn_burst = {SYN_BURST}
ipv4_prefix = 32
global_syn_rate = {GLOBAL_SYN_RATE}
global_syn_burst = {GLOBAL_SYN_BURST}
tracked_sources = 65536
verified_ttl = 600

[metrics]
listen = "{METRICS}"
"#
    );
    fs::write(path, text).expect("writing the config");
}

/// `port25_packets_total` for one interface, verdict and reason (0 when the series is absent).
fn packets(text: &str, iface: &str, verdict: &str, reason: &str) -> f64 {
    metric_sum(
        text,
        PACKETS,
        &[("iface", iface), ("verdict", verdict), ("reason", reason)],
    )
}

/// The source named by `port25_top_source_dropped{rank="1"}` and its value.
fn top_metric_rank1(text: &str) -> Option<(String, f64)> {
    metric_samples(text, "port25_top_source_dropped")
        .into_iter()
        .find(|(labels, _)| labels.iter().any(|(k, v)| k == "rank" && v == "1"))
        .and_then(|(labels, value)| {
            labels
                .into_iter()
                .find(|(k, _)| k == "source")
                .map(|(_, source)| (source, value))
        })
}

fn top_row<'r>(rows: &'r [TopRow], source: &str) -> Option<&'r TopRow> {
    rows.iter().find(|row| row.source == source)
}

/// The bound a token bucket puts on admissions over `duration`: the burst plus what refilled.
fn bucket_bound(burst: f64, rate: f64, duration: Duration) -> f64 {
    burst + rate * secs(duration)
}

fn within_tolerance(bound: f64) -> f64 {
    bound * TOLERANCE_FACTOR + TOLERANCE_SYNS
}

// ---- The test ----------------------------------------------------------------------------------

#[test]
fn syn_floods_are_capped_and_legitimate_mail_gets_through() {
    port25_testkit::require_root();
    require_tools(SMTP_LAB_TOOLS);
    require_tools(&["hping3", "cat"]);
    Daemon::binary(); // fail early, with the build hint, if it is missing
    let epoch = Instant::now();
    let at = || secs(epoch.elapsed());

    // ---- the lab -------------------------------------------------------------------------
    let work = WorkDir::new("flood");
    let bpffs = BpfFs::mount("flood");
    let lab = Gateway::allowed_and_other("flood", &[Client::new("attacker", 2, 66)]);
    let (gw, allowed, other, attacker) =
        (&lab.gw, &lab.clients[0], &lab.clients[1], &lab.clients[2]);
    // The SYN-ACKs to spoofed sources must go nowhere: no route from the gateway to them.
    let route = std::process::Command::new(tool("ip"))
        .args(["-n", gw.name(), "-4", "route", "get", "198.19.77.77"])
        .output()
        .expect("running ip route get");
    assert!(
        !route.status.success(),
        "the gateway must have no route to {SPOOFED_NET}, but: {}",
        String::from_utf8_lossy(&route.stdout)
    );
    let sink = SmtpSink::start(
        gw,
        "0.0.0.0:25".parse::<SocketAddr>().expect("an address"),
        &work,
    );
    let config = work.join("port25.toml");
    write_config(&config);
    let pin_dir = bpffs.pin_dir();
    let daemon = Daemon::start_with_args(
        gw,
        &config,
        METRICS.parse().expect("a socket address"),
        &work.join("port25d.log"),
        &[OsStr::new("--pin-dir"), pin_dir.as_os_str()],
    );
    let text = daemon.scrape();
    for iface in ["gw0", "gw1", "gw2"] {
        assert_eq!(
            metric_sum(&text, "port25_attached", &[("iface", iface)]),
            1.0,
            "port25d should report itself attached to {iface}:\n{text}"
        );
    }
    assert!(
        !daemon.log().contains("cannot watch egress"),
        "handshake verification needs the SYN-ACK watcher:\n{}",
        daemon.log()
    );
    let gw2_mac = gw.mac("gw2");
    let attacker_mac = attacker.mac("cl0");
    println!(
        "[{:7.3}s] lab ready: port25d pid {}, pins in {}",
        at(),
        daemon.pid(),
        pin_dir.display()
    );

    // Everything an assertion failure should show: counters, top, the daemon's log tail.
    let diagnostics = || {
        let mut out = String::new();
        let text = daemon.try_scrape().unwrap_or_else(|err| err);
        let counters: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("port25_packets_total")
                    || l.starts_with("port25_top_source")
                    || l.starts_with("port25_tracked")
            })
            .collect();
        let _ = writeln!(out, "---- metrics ----\n{}", counters.join("\n"));
        let (top, _) = port25d_top(&pin_dir, false, 10);
        let _ = writeln!(out, "---- port25d top ----\n{top}");
        let log = daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let _ = writeln!(
            out,
            "---- port25d log (last 30 lines) ----\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        out
    };

    // ---- 0. the well-behaved sender delivers before the floods: its prefix gets verified -----
    let first = send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 25);
    assert!(
        first.delivered,
        "other's first message (no flood yet) failed:\n{}\n{}",
        first.transcript,
        diagnostics()
    );
    assert_eq!(sink.wait_for_messages(ip(OTHER_V4), 1), 1);
    let (top, rows) = port25d_top(&pin_dir, true, 100);
    println!("[{:7.3}s] after other's first message:\n{top}", at());
    let row = top_row(&rows, OTHER_PREFIX)
        .unwrap_or_else(|| panic!("{OTHER_PREFIX} is not in `port25d top --all`:\n{top}"));
    assert_eq!(
        (row.admitted, row.dropped, row.verified),
        (1, 0, true),
        "{OTHER_PREFIX} should have 1 admitted SYN, none dropped, and be verified:\n{top}"
    );
    assert!(
        top_row(&rows, "198.18.0.10/32").is_none(),
        "the allowlisted client never reaches the rate limiter:\n{top}"
    );

    // ---- 1. single-source flood from the attacker's own address -----------------------------
    let before1 = daemon.scrape();
    let syn_filter = format!(
        "src host {ATTACKER} and tcp dst port 25 and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
    );
    // What got past XDP: on the gateway's side, AF_PACKET sees packets after XDP.
    let capture1 = Capture::start_directed(gw, "gw2", "in", &syn_filter, &work, "phase1-gw2-in");
    // What the attacker put on its wire: hping3's own statistics miss a few of the last SYNs.
    let sent_capture1 =
        Capture::start_directed(attacker, "cl0", "out", &syn_filter, &work, "phase1-cl0-out");
    let hping_out = work.join("hping3.log");
    let (stdout, stderr) = {
        let file = fs::File::create(&hping_out).expect("creating hping3's log");
        (
            Stdio::from(file.try_clone().expect("a handle")),
            Stdio::from(file),
        )
    };
    let flood1_started = epoch.elapsed();
    let mut hping = attacker
        .command(tool("timeout"))
        .args(["-s", "INT", "-k", "2", &HPING_MAX_SECS.to_string()])
        .arg(tool("hping3"))
        .args(["-q", "-S", "-p", "25"])
        .args(["-i", &format!("u{HPING_INTERVAL_US}")])
        .args(["-c", &HPING_MAX_PACKETS.to_string()])
        .arg(GW_C)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("starting hping3");
    println!(
        "[{:7.3}s] phase 1: hping3 flood from {ATTACKER} started",
        at()
    );
    // The flood is on once the attacker's burst is spent and its SYNs are being dropped.
    let active = poll(Duration::from_secs(5), || {
        let (_, rows) = port25d_top(&pin_dir, false, 10);
        top_row(&rows, ATTACKER_PREFIX)
            .is_some_and(|row| row.dropped > 0)
            .then(|| epoch.elapsed())
    });
    let flood1_active = active.unwrap_or_else(|| {
        stop_hping(&mut hping);
        panic!(
            "phase 1: no SYN of {ATTACKER} dropped within 5 s of starting hping3: {}\n{}",
            fs::read_to_string(&hping_out).unwrap_or_default(),
            diagnostics()
        )
    });
    println!(
        "[{:7.3}s] phase 1: the attacker's SYNs are being dropped",
        at()
    );
    let sent1 = deliver_both(allowed, other, epoch);
    let deliveries1_done = epoch.elapsed();
    thread::sleep(FLOOD_TAIL.max((flood1_started + MIN_FLOOD).saturating_sub(epoch.elapsed())));
    let flood1_stopped = epoch.elapsed();
    let stopped_by_us = stop_hping(&mut hping);
    let flood1_ended = epoch.elapsed();
    let hping_log = fs::read_to_string(&hping_out).unwrap_or_default();
    println!(
        "[{:7.3}s] phase 1: hping3 stopped; it said:\n{}",
        at(),
        hping_log.trim()
    );
    print_deliveries("phase 1", &sent1);
    assert_all_delivered("phase 1", &sent1, &diagnostics);
    assert_sink_holds(&sink, "phase 1", BATCH, 1 + BATCH);
    assert!(
        stopped_by_us,
        "phase 1: hping3 ended (by its bounds, or it failed) before the deliveries were done at \
         {deliveries1_done:?}:\n{hping_log}"
    );
    assert_overlap("phase 1", &sent1, flood1_active, flood1_stopped);
    let (captured1, syn_times1) = capture1.finish_with_syn_times();
    let wire1 = sent_capture1.finish();
    let after1 = daemon.scrape();
    let (top1, rows1) = port25d_top(&pin_dir, true, 100);
    println!("[{:7.3}s] phase 1: port25d top --all:\n{top1}", at());

    let hping_claims = hping_transmitted(&hping_log)
        .unwrap_or_else(|| panic!("no statistics in hping3's output:\n{hping_log}"));
    let transmitted1 = wire1.syns;
    let c1 = top_row(&rows1, ATTACKER_PREFIX)
        .unwrap_or_else(|| panic!("{ATTACKER_PREFIX} is not in `port25d top`:\n{top1}"))
        .clone();
    // hping3 ran from spawn to exit: an upper bound on the span of its SYNs.
    let flood1 = flood1_ended - flood1_started;
    let own1 = bucket_bound(SYN_BURST, SYN_RATE, flood1);
    let global1 = bucket_bound(GLOBAL_SYN_BURST, GLOBAL_SYN_RATE, flood1);
    let allowed1 = own1.min(global1);
    let limit1 = within_tolerance(allowed1);
    let span1 = match (syn_times1.first(), syn_times1.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    let dropped1 = packets(&after1, "gw2", "drop", "rate_limited")
        - packets(&before1, "gw2", "drop", "rate_limited");
    println!(
        "phase 1: hping3 sent {transmitted1} SYNs (tcpdump on cl0; hping3 says {hping_claims}) in \
         {:.3} s ({:.0}/s); past XDP (tcpdump on gw2): \
         {}; top: admitted {}, dropped {}; rate_limited on gw2 +{dropped1}; allowed by the buckets \
         {allowed1:.1} (own {own1:.1}, global {global1:.1}), limit with tolerance {limit1:.1}; \
         admitted SYNs spanned {:.3} s",
        secs(flood1),
        transmitted1 as f64 / secs(flood1),
        captured1.syns,
        c1.admitted,
        c1.dropped,
        secs(span1),
    );
    assert!(
        transmitted1 >= 5_000,
        "phase 1: hping3 sent only {transmitted1} SYNs: not a flood"
    );
    assert_eq!(
        captured1.syns, c1.admitted,
        "phase 1: SYNs of {ATTACKER} past XDP (tcpdump) vs top's ADMITTED:\n{top1}"
    );
    assert!(
        (c1.admitted as f64) <= limit1,
        "phase 1: {} SYNs of {ATTACKER} got past XDP in {flood1:?}; its bucket allows {allowed1:.1} \
         (limit with tolerance {limit1:.1})\n{}",
        c1.admitted,
        diagnostics()
    );
    // GCRA is exact: between the first and the last admitted SYN at most burst + rate x span.
    let exact1 = bucket_bound(SYN_BURST, SYN_RATE, span1);
    assert!(
        (c1.admitted as f64) <= exact1 + 1.0,
        "phase 1: {} SYNs admitted over {span1:?}, GCRA allows {exact1:.1}",
        c1.admitted
    );
    // And the bucket is not stingier than configured: the burst, then the rate, for most of it.
    let floor1 = bucket_bound(
        SYN_BURST,
        SYN_RATE,
        flood1.saturating_sub(Duration::from_secs(1)),
    );
    assert!(
        (c1.admitted as f64) >= floor1,
        "phase 1: only {} SYNs admitted during a {flood1:?} flood; the bucket should give about \
         {own1:.1}",
        c1.admitted
    );
    assert_eq!(
        c1.admitted + c1.dropped,
        transmitted1,
        "phase 1: every SYN hping3 sent (tcpdump on cl0) is either admitted or dropped:\n{top1}"
    );
    assert_eq!(
        dropped1, c1.dropped as f64,
        "phase 1: rate_limited drops on gw2 vs top's DROPPED for {ATTACKER}"
    );
    assert!(
        dropped1 >= transmitted1 as f64 - limit1,
        "phase 1: rate_limited +{dropped1}, expected at least sent - allowed = {:.1}",
        transmitted1 as f64 - limit1
    );
    assert_eq!(
        top_metric_rank1(&after1),
        Some((ATTACKER_PREFIX.to_owned(), c1.dropped as f64)),
        "phase 1: port25_top_source_dropped rank 1 should be the attacker:\n{after1}"
    );

    // ---- 2. spoofed flood: random sources in 198.19.0.0/16 -----------------------------------
    let before2 = daemon.scrape();
    let tx_dropped_before = attacker.link_counter("cl0", "tx_dropped");
    let capture2 = Capture::start_directed(
        gw,
        "gw2",
        "in",
        &format!("src net {SPOOFED_NET} and tcp[tcpflags] & tcp-syn != 0"),
        &work,
        "phase2-gw2-in",
    );
    let seed = u64::from(std::process::id()) << 32 ^ u64::from(epoch.elapsed().subsec_nanos());
    let sent_so_far = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let flood2_started = epoch.elapsed();
    let (report, sent2, flood2_active, flood2_stopped, deliveries2_done) = thread::scope(|s| {
        let flood = attacker.spawn_inside(s, || {
            spoof_flood(
                "cl0",
                gw2_mac,
                attacker_mac,
                seed,
                epoch,
                &sent_so_far,
                &stop,
            )
        });
        println!(
            "[{:7.3}s] phase 2: spoofed flood started (seed {seed:#x})",
            at()
        );
        // The flood is on once more frames went out than the global bucket holds.
        let active = poll(Duration::from_secs(5), || {
            (sent_so_far.load(Ordering::Relaxed) as f64 >= 2.0 * GLOBAL_SYN_BURST)
                .then(|| epoch.elapsed())
        });
        let Some(active) = active else {
            stop.store(true, Ordering::Relaxed);
            let report = flood.join().expect("the spoofing thread");
            panic!(
                "phase 2: the spoofing thread sent {} frames in 5 s ({} errors, first: {:?})",
                report.sent, report.send_errors, report.first_error
            );
        };
        println!("[{:7.3}s] phase 2: spoofed frames flowing", at());
        let sent = deliver_both(allowed, other, epoch);
        let done = epoch.elapsed();
        thread::sleep(FLOOD_TAIL.max((flood2_started + MIN_FLOOD).saturating_sub(epoch.elapsed())));
        let stopped = epoch.elapsed();
        stop.store(true, Ordering::Relaxed);
        (
            flood.join().expect("the spoofing thread"),
            sent,
            active,
            stopped,
            done,
        )
    });
    println!(
        "[{:7.3}s] phase 2: spoofed flood stopped: {} frames from {} sources, {} send errors",
        at(),
        report.sent,
        report.sources,
        report.send_errors
    );
    print_deliveries("phase 2", &sent2);
    assert_all_delivered("phase 2", &sent2, &diagnostics);
    assert_sink_holds(&sink, "phase 2", 2 * BATCH, 1 + 2 * BATCH);
    assert!(
        !report.hit_bound,
        "phase 2: the spoofed flood hit its bound of {SPOOF_MAX_FRAMES} frames before the \
         deliveries were done at {deliveries2_done:?}"
    );
    assert_overlap("phase 2", &sent2, flood2_active, flood2_stopped);
    // Let the last frames leave the veth's queue before tcpdump stops.
    thread::sleep(Duration::from_millis(200));
    let captured2 = capture2.finish();
    let after2 = daemon.scrape();
    let tx_dropped = attacker.link_counter("cl0", "tx_dropped") - tx_dropped_before;
    let (top2, rows2) = port25d_top(&pin_dir, false, 10);
    println!("[{:7.3}s] phase 2: port25d top:\n{top2}", at());

    let flood2 = report.last_send - report.first_send;
    let allowed2 = bucket_bound(GLOBAL_SYN_BURST, GLOBAL_SYN_RATE, flood2);
    let limit2 = within_tolerance(allowed2);
    let dropped2 = packets(&after2, "gw2", "drop", "rate_limited")
        - packets(&before2, "gw2", "drop", "rate_limited");
    let reached2 = report.sent - tx_dropped;
    println!(
        "phase 2: sent {} spoofed SYNs from {} sources in {:.3} s ({:.0}/s), {tx_dropped} lost on \
         the veth; past XDP (tcpdump on gw2): {}; rate_limited on gw2 +{dropped2}; allowed by the \
         global bucket {allowed2:.1}, limit with tolerance {limit2:.1}",
        report.sent,
        report.sources,
        secs(flood2),
        report.sent as f64 / secs(flood2),
        captured2.syns,
    );
    assert_eq!(
        report.send_errors, 0,
        "phase 2: sends failed: {:?}",
        report.first_error
    );
    assert!(
        report.sent >= 20_000,
        "phase 2: only {} spoofed frames sent: not a flood",
        report.sent
    );
    assert_eq!(
        captured2.packets, captured2.syns,
        "phase 2: only SYNs from {SPOOFED_NET} were expected in the capture"
    );
    assert!(
        (captured2.syns as f64) <= limit2,
        "phase 2: {} spoofed SYNs got past XDP in {flood2:?}; the global bucket allows \
         {allowed2:.1} (limit with tolerance {limit2:.1})\n{}",
        captured2.syns,
        diagnostics()
    );
    // ... and not stingier than configured: the flood takes every token as it comes.
    let floor2 = allowed2 * 0.9;
    assert!(
        captured2.syns as f64 >= floor2,
        "phase 2: only {} spoofed SYNs admitted in {flood2:?}; the global bucket should give \
         about {allowed2:.1}",
        captured2.syns
    );
    assert_eq!(
        captured2.syns as f64 + dropped2,
        reached2 as f64,
        "phase 2: every spoofed SYN that reached the gateway ({reached2}) is either admitted \
         (tcpdump: {}) or rate_limited (+{dropped2})",
        captured2.syns
    );
    // The source table agrees: every admitted SYN's source is tracked, and of the SYNs the spent
    // global cap dropped, one in 16 is counted as 16 (so the flood does not churn the table).
    let (_, rows_all) = port25d_top(&pin_dir, true, 1_000_000);
    let spoofed: Vec<&TopRow> = rows_all
        .iter()
        .filter(|row| row.source.starts_with("198.19."))
        .collect();
    let spoofed_admitted: u64 = spoofed.iter().map(|row| row.admitted).sum();
    let spoofed_dropped: u64 = spoofed.iter().map(|row| row.dropped).sum();
    println!(
        "phase 2: port25d top --all: {} spoofed prefixes, {spoofed_admitted} admitted, \
         {spoofed_dropped} dropped (estimated); none verified: {}",
        spoofed.len(),
        spoofed.iter().all(|row| !row.verified)
    );
    assert_eq!(
        spoofed_admitted, captured2.syns,
        "phase 2: the source table's admissions vs tcpdump's count"
    );
    // The sample's count is binomial: 15% is over five standard deviations at 20,000 drops.
    let estimate_error = (spoofed_dropped as f64 - dropped2).abs() / dropped2;
    assert!(
        estimate_error <= 0.15,
        "phase 2: the source table estimates {spoofed_dropped} drops, the rate_limited counter \
         says {dropped2}"
    );
    assert!(
        spoofed.len() < report.sources / 4,
        "phase 2: {} spoofed prefixes tracked of the {} sources: the flood churns the table",
        spoofed.len(),
        report.sources
    );
    assert!(
        spoofed.iter().all(|row| !row.verified),
        "phase 2: a spoofed source was marked verified"
    );
    let tracked = metric_sum(&after2, "port25_tracked_sources", &[]);
    assert_eq!(
        tracked,
        (spoofed.len() + 2) as f64,
        "phase 2: port25_tracked_sources: the spoofed sources tracked, the attacker and the other \
         client"
    );
    // The attacker's own address still tops the list: thousands of drops against one or two each.
    assert_eq!(
        top_metric_rank1(&after2).map(|(source, _)| source),
        Some(ATTACKER_PREFIX.to_owned()),
        "phase 2: port25_top_source_dropped rank 1 should still be the attacker:\n{}",
        metric_samples(&after2, "port25_top_source_dropped")
            .iter()
            .map(|(l, v)| format!("{l:?} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        rows2.first().map(|row| row.source.as_str()),
        Some(ATTACKER_PREFIX),
        "phase 2: `port25d top` should list the attacker first:\n{top2}"
    );

    // ---- the legitimate clients: none of their SYNs was dropped ------------------------------
    let other_total = 1 + 2 * BATCH;
    let end_text = daemon.scrape();
    for iface in ["gw0", "gw1"] {
        assert_eq!(
            metric_sum(&end_text, PACKETS, &[("iface", iface), ("verdict", "drop")]),
            0.0,
            "a legitimate client's packet was dropped on {iface}\n{}",
            diagnostics()
        );
    }
    let other_row = top_row(&rows_all, OTHER_PREFIX)
        .unwrap_or_else(|| panic!("{OTHER_PREFIX} is no longer tracked (evicted by the flood?)"))
        .clone();
    println!("other's prefix at the end: {other_row:?}");
    assert_eq!(
        (other_row.admitted, other_row.dropped, other_row.verified),
        (u64::try_from(other_total).unwrap(), 0, true),
        "{OTHER_PREFIX}: one admitted SYN per message, none dropped, still verified"
    );

    // ---- summary ---------------------------------------------------------------------------
    let delivered = |sent: &[Sent], client: &str| {
        sent.iter()
            .filter(|s| s.client == client && s.delivery.delivered)
            .count()
    };
    println!("==== summary ====");
    println!(
        "policy: per source {SYN_RATE}/s burst {SYN_BURST}; global {GLOBAL_SYN_RATE}/s burst \
         {GLOBAL_SYN_BURST}; tolerance x{TOLERANCE_FACTOR} + {TOLERANCE_SYNS}"
    );
    println!(
        "phase 1 ({:.2} s, hping3 from {ATTACKER}): allowed {}/{BATCH}, other {}/{BATCH} \
         delivered; attacker sent {transmitted1} SYNs, {} admitted (bound {allowed1:.1}, limit \
         {limit1:.1}), {} dropped",
        secs(flood1),
        delivered(&sent1, "allowed"),
        delivered(&sent1, "other"),
        c1.admitted,
        c1.dropped
    );
    println!(
        "phase 2 ({:.2} s, spoofed {SPOOFED_NET}): allowed {}/{BATCH}, other {}/{BATCH} \
         delivered; attacker sent {} SYNs from {} sources, {} admitted (bound {allowed2:.1}, limit \
         {limit2:.1}), {dropped2} dropped",
        secs(flood2),
        delivered(&sent2, "allowed"),
        delivered(&sent2, "other"),
        report.sent,
        report.sources,
        captured2.syns,
    );
    println!("flood test took {:.1} s", at());
}
