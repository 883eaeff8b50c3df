//! What the fleet may not impose, against the real LAPI: a range decision covering an allowlisted
//! peer drops the rest of the range but never the peer, and a decision wider than the bounds
//! (`0.0.0.0/0` always) drops nothing; both are counted and shown.

use super::*;

#[test]
fn the_allowlist_beats_a_range_decision_and_a_too_wide_one_drops_nothing() {
    let lab = Lab::new("cs-trust");
    let lapi = lab.lapi();
    let key = lapi.add_bouncer("port25d-gw");
    let _sink = SmtpSink::start(lab.gw(), "0.0.0.0:25".parse().unwrap(), &lab.work);
    let config = lab.config(&key, &format!("[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n"));
    let daemon = lab.start(&config, "port25d.log");
    let allowed = &lab.net.clients[0];

    // A /16 ban over the allowlisted peer 198.18.0.10: the rest of the range is dropped.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.18.0.0/16",
        "--duration",
        "1h",
    ]);
    lab.wait_for_verdict("gw1", OTHER_V4, XDP_DROP, &daemon);
    assert_eq!(lab.verdict("gw0", "198.18.0.11"), XDP_DROP, "its neighbour");
    assert_eq!(lab.verdict("gw0", "198.18.0.9"), XDP_DROP);
    assert_eq!(
        lab.verdict("gw0", ALLOWED_V4),
        XDP_PASS,
        "the allowlisted peer"
    );
    assert!(
        send_mail(allowed, ip(ALLOWED_V4), ip(GW_A_V4), 25).delivered,
        "the allowlisted peer delivers inside a banned range"
    );
    let overridden = poll(WITHIN_A_POLL, || {
        metric(
            &daemon.scrape(),
            "port25_crowdsec_decisions_overridden",
            &[],
        )
        .filter(|n| *n == 1.0)
    });
    assert!(
        overridden.is_some(),
        "the override is counted:\n{}",
        daemon.scrape()
    );
    daemon.assert_logged(
        "CrowdSec decision on 198.18.0.0/16 enforced less the allowlisted addresses inside it",
    );
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("allowlist overrides 1 decisions") && status.contains("198.18.0.0/16"),
        "{status}"
    );

    // Wider than the bounds (/16 for IPv4 by default), and the whole address space: refused.
    for range in ["198.0.0.0/8", "0.0.0.0/0", "::/0"] {
        lapi.cscli(&["decisions", "add", "--range", range, "--duration", "1h"]);
    }
    poll(WITHIN_A_POLL, || {
        let skipped = metric(
            &daemon.scrape(),
            "port25_crowdsec_decisions_skipped_total",
            &[("reason", "too_wide")],
        );
        (skipped >= Some(3.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("too wide decisions not counted:\n{}", daemon.scrape()));
    assert_eq!(
        lab.verdict("gw1", "198.19.5.5"),
        XDP_PASS,
        "inside the /8 and /0, outside the /16"
    );
    assert_eq!(lab.verdict("gw0", ALLOWED_V4), XDP_PASS);
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(status.contains("3 by too_wide"), "{status}");
}
