//! Monitor mode, reloads that switch lists and ports whole, and where the counts land.

use super::*;

#[test]
fn monitor_mode_counts_would_drop_and_passes() {
    let datapath = load(&format!("mode = \"monitor\"\n{POLICY}"));
    let would = |reason| Some((Verdict::WouldDrop, reason));
    #[rustfmt::skip]
    let rows = vec![
        row("not allowlisted", tcp(OTHER4, 25).build(), XDP_PASS, would(Reason::NotAllowlisted)),
        row("denylisted", tcp(DENIED6, 25).build(), XDP_PASS, would(Reason::Denylisted)),
        row("malformed", tcp(OTHER4, 25).truncate(36).build(), XDP_PASS, would(Reason::Malformed)),
        passes("allowlisted", tcp(ALLOWED4, 25), Allowlisted),
        untouched("587 untouched", tcp(OTHER4, 587)),
    ];
    check(&datapath, &rows);
}

#[test]
fn reload_switches_lists_and_ports_whole() {
    let mut datapath = load(POLICY);
    check(
        &datapath,
        &[
            passes("before: allowlisted", tcp(ALLOWED4, 25), Allowlisted),
            drops("before: other dropped", tcp(OTHER4, 25), NotAllowlisted),
        ],
    );
    let swapped = r#"
policy = "drop"
ports = [587]
[allow]
cidrs = ["198.18.3.0/24"]
"#;
    reload(&mut datapath, swapped);
    check(
        &datapath,
        &[
            drops("after: old allow gone", tcp(ALLOWED4, 587), NotAllowlisted),
            passes("after: new allow", tcp(OTHER4, 587), Allowlisted),
            drops(
                "after: old deny gone (v6)",
                tcp(DENIED6, 587),
                NotAllowlisted,
            ),
            untouched("after: port 25 no longer protected", tcp(OTHER6, 25)),
        ],
    );
    // And back: the first generation's entries were really removed and rewritten.
    reload(&mut datapath, POLICY);
    check(
        &datapath,
        &[
            passes("back: allowlisted", tcp(ALLOWED4, 25), Allowlisted),
            untouched("back: 587 untouched", tcp(OTHER4, 587)),
        ],
    );
}

/// The test run's interface (its namespace's loopback) counts in the spill hash until it holds a
/// counter bucket, then in the bucket: every count lands under its ifindex either way, and the
/// totals sum both.
#[test]
fn counts_land_in_the_spill_then_in_a_bucket_under_their_interface() {
    let mut datapath = load(POLICY);
    check(
        &datapath,
        &[drops("spill", tcp(OTHER4, 25), NotAllowlisted)],
    );
    assert!(
        datapath.count_in_bucket(LOOPBACK, "lo"),
        "the loopback's counter bucket is free in fresh maps"
    );
    assert!(
        datapath.count_in_bucket(LOOPBACK, "lo"),
        "and stays its own"
    );
    check(
        &datapath,
        &[
            drops("bucket", tcp(OTHER4, 25), NotAllowlisted),
            passes("bucket, allowlisted", tcp(ALLOWED4, 25), Allowlisted),
        ],
    );
    let totals = datapath.totals().expect("counters readable");
    let interfaces: Vec<u32> = totals.keys().map(|key| key.0).collect();
    assert!(interfaces.iter().all(|&i| i == LOOPBACK), "{interfaces:?}");
    let dropped = totals[&(LOOPBACK, Verdict::Drop, NotAllowlisted)];
    assert_eq!(
        dropped.packets, 2,
        "one from the spill, one from the bucket"
    );
}

/// BPF_PROG_TEST_RUN's frames arrive on the loopback of the caller's namespace.
const LOOPBACK: u32 = 1;
