//! A hostile LAPI (the test kit's `FakeLapi`: the real one cannot misbehave on purpose) changes
//! nothing but through valid decisions. One case per kind of bad answer: each is refused or
//! skipped, counted and named in `status`, while the ban held from a good answer stays, the
//! daemon keeps running and its memory stays bounded.

use port25_testkit::lab::{FakeAnswer, FakeLapi, rss_kib};

use super::*;

/// The good decision every answer of the fake carries (a full pull after a failure replaces what
/// is held, so it must be there to stay).
const GOOD: &str = r#"{"id":1,"origin":"lists","type":"ban","scope":"Ip","value":"198.18.1.20","duration":"1h","scenario":"good"}"#;

/// A decision of the good one's shape with `scope`, `value` and `duration` changed.
fn decision(id: u32, scope: &str, value: &str, duration: &str) -> String {
    format!(
        r#"{{"id":{id},"origin":"lists","type":"ban","scope":"{scope}","value":"{value}","duration":"{duration}","scenario":"bad"}}"#
    )
}

/// The daemon's state after an answer: whether it still runs, drops the good ban, and what its
/// status and metrics say.
struct After {
    status: String,
    failures: f64,
}

#[test]
fn a_hostile_lapi_changes_nothing_but_through_valid_decisions() {
    let lab = Lab::new("cs-hostile");
    let fake = FakeLapi::start(
        lab.gw(),
        FakeAnswer::json(&format!(r#"{{"new":[{GOOD}],"deleted":null}}"#)),
    );
    let key_file = lab.work.join("bouncer.key");
    fs::write(&key_file, "key\n").unwrap();
    let config = lab.work.join("port25.toml");
    fs::write(
        &config,
        format!(
            "interfaces = [\"gw0\", \"gw1\"]\n[metrics]\nlisten = \"{METRICS}\"\n[crowdsec]\n\
             lapi_url = \"{}\"\nbouncer_key_file = \"{}\"\nupdate_frequency = 1\nlapi_timeout = 3\n\
             max_answer_mb = 1\n",
            fake.url(),
            key_file.display()
        ),
    )
    .unwrap();
    let mut daemon = lab.start(&config, "port25d.log");
    lab.wait_for_verdict("gw1", OTHER_V4, XDP_DROP, &daemon);
    let rss_before = rss_kib(daemon.pid()).unwrap();
    let failures = |daemon: &Daemon| {
        metric(
            &daemon.scrape(),
            "port25_crowdsec_polls_total",
            &[("result", "failure")],
        )
        .unwrap_or(0.0)
    };
    let good = FakeAnswer::json(&format!(r#"{{"new":[{GOOD}],"deleted":[]}}"#));

    // Sets `answer`, waits for a poll of it to fail, then answers well again until one succeeds
    // (so that the backoff after failures stays at a second).
    let mut refused = |name: &str, answer: FakeAnswer, fragment: &str| -> After {
        let before = failures(&daemon);
        fake.set(answer);
        let failed = poll(Duration::from_secs(15), || {
            (failures(&daemon) > before).then_some(())
        });
        let after = After {
            status: daemon.cli(&["status"]).1,
            failures: failures(&daemon),
        };
        assert!(
            failed.is_some(),
            "{name}: no failed poll counted; log:\n{}",
            daemon.log()
        );
        assert!(daemon.is_running(), "{name}: port25d stopped");
        assert!(
            after.status.contains(fragment),
            "{name}: status does not say {fragment:?}:\n{}",
            after.status
        );
        assert_eq!(
            lab.verdict("gw1", OTHER_V4),
            XDP_DROP,
            "{name}: the ban held must stay"
        );
        fake.set(good.clone());
        poll(Duration::from_secs(15), || {
            let (_, status, _) = daemon.cli(&["status"]);
            status.contains(" reachable\n").then_some(())
        })
        .unwrap_or_else(|| panic!("{name}: the LAPI never counted as answering again"));
        println!("{name}: refused ({fragment}); the ban held stays");
        after
    };

    let cases: Vec<(&str, FakeAnswer, &str)> = vec![
        (
            "malformed JSON",
            FakeAnswer::json(r#"{"new":[{"id":1,"#),
            "ANSWERS REFUSED",
        ),
        (
            "wrong types",
            FakeAnswer::json(r#"{"new":"yes","deleted":7}"#),
            "invalid type",
        ),
        (
            "binary garbage",
            FakeAnswer::Body {
                status: 200,
                body: (0..=255u8).cycle().take(4096).collect(),
            },
            "not what port25d expects",
        ),
        (
            "an error status",
            FakeAnswer::Body {
                status: 500,
                body: b"internal error".to_vec(),
            },
            "the LAPI answered 500: internal error",
        ),
        ("an answer that never comes", FakeAnswer::Hang, "timed out"),
        (
            "a declared 10 GB answer",
            FakeAnswer::Declares {
                bytes: 10_000_000_000,
            },
            "it declares 10000000000 bytes; refused unread",
        ),
        (
            "a 64 MB answer without a length",
            FakeAnswer::Chunked { bytes: 64 << 20 },
            "longer than crowdsec.max_answer_mb (1 MiB); refused unread",
        ),
    ];
    let mut last = 0.0;
    for (name, answer, fragment) in cases {
        let after = refused(name, answer, fragment);
        assert!(after.failures > last, "{name}: counted");
        last = after.failures;
    }

    // Valid JSON with bad decisions: each skipped and counted by reason, the good one kept.
    let bad = [
        decision(2, "Ip", "not-an-address", "1h"),
        decision(3, "Range", "198.18.0.0/33", "1h"),
        decision(4, "Ip", "198.18.7.7", "-5s"),
        decision(5, "Ip", "198.18.7.8", "99999999999h"),
        decision(6, "Ip", "198.18.7.9", "4 days"),
        decision(7, "Range", "0.0.0.0/0", "1h"),
    ];
    fake.set(FakeAnswer::json(&format!(
        r#"{{"new":[{GOOD},{}],"deleted":[{}]}}"#,
        bad.join(","),
        decision(99, "Ip", "198.18.200.200", "-1s")
    )));
    let expected = [
        ("value", 2.0),
        ("duration", 3.0),
        ("too_wide", 1.0),
        ("unknown_deletion", 1.0),
    ];
    let counted = |daemon: &Daemon| {
        let text = daemon.scrape();
        expected.iter().all(|(reason, n)| {
            metric(
                &text,
                "port25_crowdsec_decisions_skipped_total",
                &[("reason", reason)],
            ) >= Some(*n)
        })
    };
    poll(Duration::from_secs(10), || counted(&daemon).then_some(()))
        .unwrap_or_else(|| panic!("bad decisions not counted:\n{}", daemon.scrape()));
    assert_eq!(lab.verdict("gw1", OTHER_V4), XDP_DROP);
    for source in ["198.18.7.7", "198.18.7.8", "198.18.7.9", "198.18.0.5"] {
        assert_eq!(lab.verdict("gw0", source), XDP_PASS, "{source}");
    }
    let (_, status, _) = daemon.cli(&["status"]);
    assert_mentions(&status, &["by value", "by duration", "by too_wide"]);
    assert_eq!(
        held(&daemon, "lists", "ipv4"),
        1.0,
        "only the good decision is held"
    );

    let rss_after = rss_kib(daemon.pid()).unwrap();
    println!(
        "port25d's RSS: {} MiB before the hostile answers, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    assert!(daemon.is_running());
}
