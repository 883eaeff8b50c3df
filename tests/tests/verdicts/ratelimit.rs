//! The rate limiter: per-source and global buckets, monitor mode, two CPUs racing one bucket, and handshake verification.

use super::*;

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
        passes(
            "allowlisted during the flood",
            tcp("198.18.1.9", 25),
            Allowlisted,
        ),
        drops("denylisted", tcp("198.18.2.9", 25), Denylisted),
        drops("SYN over the limit", tcp("198.18.3.1", 25), RateLimited),
        // The rest of a connection spends no token.
        passes(
            "ACK of a connection",
            tcp("198.18.3.1", 25).flags(TCP_ACK),
            Admitted,
        ),
        passes(
            "SYN-ACK is not a new connection",
            tcp("198.18.3.1", 25).flags(TCP_ACK | port25_testkit::frames::TCP_SYN),
            Admitted,
        ),
        untouched("587 untouched", tcp("198.18.3.1", 587)),
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
        .test_run_synack_watcher(&syn_ack("198.18.0.1", "198.18.3.1", 7_000_000))
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
    assert_eq!(
        completed(&datapath, "198.18.3.0/24"),
        0,
        "nothing completed"
    );

    // The right one (ISN + 1) verifies the /24: its SYNs skip the global cap, within its own bucket.
    datapath
        .test_run_synack_watcher(&syn_ack("198.18.0.1", "198.18.3.1", 7_000_000))
        .unwrap();
    assert_eq!(
        datapath
            .test_run(&final_ack("198.18.3.1", 7_000_001))
            .unwrap(),
        XDP_PASS
    );
    // Counted once, the reporter's evidence: the same ACK again completes nothing.
    assert_eq!(completed(&datapath, "198.18.3.0/24"), 1);
    datapath
        .test_run(&final_ack("198.18.3.1", 7_000_001))
        .unwrap();
    assert_eq!(completed(&datapath, "198.18.3.0/24"), 1, "a replayed ACK");
    // The /24's bucket holds 5, all of it: the SYNs the spent global cap refused above were
    // dropped before its bucket was looked at.
    assert_eq!(
        admitted_of(&datapath, "198.18.3.77", 10),
        5,
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
        .test_run_synack_watcher(&syn_ack("2001:db8:25::1", "2001:db8:3::1", 42))
        .unwrap();
    datapath.test_run(&final_ack("2001:db8:3::1", 43)).unwrap();
    assert_eq!(
        admitted_of(&datapath, "2001:db8:3::2", 10),
        5,
        "verified /48: its whole bucket, as the refused SYN spent none of it"
    );
    assert_eq!(completed(&datapath, "2001:db8:3::/48"), 1);
}

#[test]
fn handshake_verification_can_be_turned_off() {
    let datapath = load(&format!("{RATELIMIT}verified_ttl = 0\n"));
    let _ = admitted_of(&datapath, "198.18.9.1", 20); // 5 from the global 12
    let _ = admitted_of(&datapath, "198.18.10.1", 20); // 5 more
    let _ = admitted_of(&datapath, "198.18.11.1", 20); // the last 2
    datapath
        .test_run_synack_watcher(&syn_ack("198.18.0.1", "198.18.3.1", 99))
        .unwrap();
    datapath.test_run(&final_ack("198.18.3.1", 100)).unwrap();
    assert_eq!(admitted_of(&datapath, "198.18.3.1", 5), 0);
}
