//! Monitor mode, and reloads that switch lists and ports whole.

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
