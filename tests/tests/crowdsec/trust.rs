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

    // `why` names the decision, and says the allowlist overrides it for the peer; each answer
    // agrees with the live program's verdict.
    let why = |source: &str| {
        let (code, out, err) = daemon.cli(&["why", "--json", source]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let neighbour = why("198.18.0.11");
    assert_eq!(neighbour["reason"], "denylisted", "{neighbour:#}");
    let decision = &neighbour["entries"][0];
    assert_eq!(decision["cidr"], "198.18.0.0/16", "{neighbour:#}");
    assert_eq!(decision["in_force"], true);
    assert_eq!(decision["from"]["kind"], "crowdsec");
    assert_eq!(decision["from"]["origin"], "cscli");
    assert!(decision["from"]["id"].as_i64().unwrap() > 0, "{decision:#}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = decision["from"]["expires"].as_u64().unwrap() - now;
    assert!((3500..=3600).contains(&left), "expires in {left} s");
    assert_eq!(lab.verdict("gw0", "198.18.0.11"), XDP_DROP);
    let peer = why(ALLOWED_V4);
    assert_eq!(peer["reason"], "allowlisted", "{peer:#}");
    let held = peer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"]["kind"] == "crowdsec")
        .unwrap_or_else(|| panic!("{peer:#}"));
    assert_eq!(held["in_force"], false, "{peer:#}");
    assert!(
        format!("{peer}").contains("the allowlist beats automatic decisions"),
        "{peer:#}"
    );
    // The history holds the delta: counts, and a sample of the prefixes.
    let (code, history, err) = std::process::Command::new(Daemon::binary())
        .args(["history", "--state-dir"])
        .arg(lab.work.join("state"))
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 0, "{err}");
    println!("port25d history:\n{history}");
    assert_mentions(
        &history,
        &[
            "crowdsec by CrowdSec (http://127.0.0.1:8080)",
            "16 prefixes banned, 0 lifted",
            "+11 more",
        ],
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
