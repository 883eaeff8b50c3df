//! A progressive roll-out on a live MX: a shadow policy is judged beside the live one on real
//! mail and crafted SYNs, names exactly the senders it would newly drop and newly pass, changes no
//! live verdict, is promoted with every packet judged by one policy or the other (never a mix),
//! and is dropped without a trace in the maps; a broken candidate is refused and changes nothing.

use std::{
    fs,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use port25_testkit::{
    assert_mentions, frames,
    lab::{
        ALLOWED_V4, Daemon, GW_A_V4, METRICS, OTHER_V4, PacketSocket, metric, metric_sum, poll,
        run_ok, tool,
    },
};

use super::{Lab, packets, safety::output};

/// A source the live policy denies and the candidate allows.
const LIVE_DENIED: &str = "198.19.9.9";

/// Sends `count` SYNs from `source` to the gateway out of the allowed client's cl0 (gw0's XDP).
fn send_syns(lab: &Lab, source: &str, count: usize) {
    let frame = frames::tcp(source, 25).to(GW_A_V4).build();
    thread::scope(|scope| {
        lab.allowed()
            .spawn_inside(scope, || {
                let socket = PacketSocket::bind("cl0")?;
                (0..count).try_for_each(|_| socket.send(&frame))
            })
            .join()
            .unwrap()
    })
    .unwrap_or_else(|err| panic!("sending SYNs from {source}: {err}"));
}

/// The packets of `source`'s reason counted on gw0.
fn counted(daemon: &Daemon, reason: &str) -> f64 {
    metric_sum(
        &daemon.scrape(),
        "port25_packets_total",
        &[("iface", "gw0"), ("reason", reason)],
    )
}

/// How many entries a pinned map holds (`bpftool map dump`).
fn entries(pins: &Path, map: &str) -> usize {
    let path = pins
        .join(format!("maps-v{}", port25_common::LAYOUT_VERSION))
        .join(map);
    let out = run_ok(
        Command::new(tool("bpftool"))
            .args(["--json", "map", "dump", "pinned"])
            .arg(&path),
    );
    let dump: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool dump of {map}: {e}: {out}"));
    dump.as_array().map_or(0, Vec::len)
}

fn shadow_status(daemon: &Daemon) -> serde_json::Value {
    let (code, out, err) = daemon.cli(&["shadow", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_shadow_policy_names_who_it_would_drop_changes_nothing_live_and_is_promoted_atomically() {
    let lab = Lab::new("shadow");
    require_bpftool();
    let sink = lab.sink();
    let live = lab.config(&format!(
        "policy = \"ratelimit\"\n[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n[deny]\ncidrs = [\"198.19.9.0/24\"]"
    ));
    // The lab's config says policy drop first: this one is read from its own file.
    fs::write(
        &live,
        fs::read_to_string(&live)
            .unwrap()
            .replace("policy = \"drop\"\n", ""),
    )
    .unwrap();
    let daemon = lab.start(&live, "daemon.log");
    let pins = lab.bpf.pin_dir();
    assert!(lab.delivers_from_allowed() && lab.delivers_from_other());
    let lists_before = entries(&pins, "LISTS_V4");

    // A broken candidate: refused with file, line and fix; nothing is loaded.
    let broken = lab.work.join("broken.toml");
    fs::write(
        &broken,
        "interfaces = [\"gw0\", \"gw1\"]\npolicy = \"dorp\"\n",
    )
    .unwrap();
    let (code, _, err) = daemon.cli(&["shadow", "load", "--config", &broken.display().to_string()]);
    assert!(code == 1, "exit {code}: {err}");
    assert_mentions(
        &err,
        &[&format!("{}:2", broken.display()), "drop", "unchanged"],
    );
    assert_eq!(shadow_status(&daemon)["config"], serde_json::Value::Null);
    assert_eq!(entries(&pins, "LISTS_V4"), lists_before);

    // The candidate denies the other client and allows what the live policy denies.
    let candidate = lab.work.join("candidate.toml");
    fs::write(
        &candidate,
        format!(
            "interfaces = [\"gw0\", \"gw1\"]\npolicy = \"ratelimit\"\nports = [25, 2525]\n\
             [allow]\ncidrs = [\"{ALLOWED_V4}/32\", \"198.19.9.0/24\"]\n\
             [deny]\ncidrs = [\"{OTHER_V4}/32\"]\n[metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = daemon.cli(&[
        "shadow",
        "load",
        "--config",
        &candidate.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_mentions(&out, &["as the shadow policy", "enforces nothing"]);
    let (_, status_text, _) = daemon.cli(&["status"]);
    assert_mentions(&status_text, &["shadow policy", "candidate.toml"]);

    // Live traffic: mail from both clients, SYNs from the source the live policy denies.
    let allowlisted = counted(&daemon, "allowlisted");
    for _ in 0..3 {
        assert!(
            lab.delivers_from_allowed(),
            "the shadow changes no live verdict"
        );
        assert!(
            lab.delivers_from_other(),
            "the shadow changes no live verdict"
        );
    }
    send_syns(&lab, LIVE_DENIED, 5);
    // A port only the candidate protects: judged by it alone.
    let frame = frames::tcp("198.19.77.7", 2525).to(GW_A_V4).build();
    thread::scope(|scope| {
        lab.allowed()
            .spawn_inside(scope, || PacketSocket::bind("cl0")?.send(&frame))
            .join()
            .unwrap()
    })
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(counted(&daemon, "allowlisted") >= allowlisted + 3.0);
    assert_eq!(packets(&daemon.scrape(), "drop", "denylisted"), 5.0);

    let status = shadow_status(&daemon);
    println!("shadow status: {status:#}");
    assert_eq!(
        status["newly_dropped"], 3,
        "the other client's three SYNs: {status:#}"
    );
    assert_eq!(status["newly_passed"], 5, "{status:#}");
    let names = |side: &str| -> Vec<String> {
        status[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["source"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("top_newly_dropped"), [format!("{OTHER_V4}/32")]);
    assert_eq!(names("top_newly_passed"), [format!("{LIVE_DENIED}/32")]);
    let pair = |live: &str, candidate: &str| {
        status["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["live"] == live && p["candidate"] == candidate)
            .map(|p| {
                (
                    p["packets"].as_u64().unwrap(),
                    p["effect"].as_str().unwrap().to_owned(),
                )
            })
    };
    assert_eq!(
        pair("not_judged", "admitted"),
        Some((1, "same".to_owned())),
        "{status:#}"
    );
    let dropped = &status["top_newly_dropped"][0];
    assert_eq!(
        (dropped["live"].as_str(), dropped["candidate"].as_str()),
        (Some("admitted"), Some("denylisted"))
    );
    let text = daemon.scrape();
    assert_eq!(metric(&text, "port25_shadow_loaded", &[]), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "port25_shadow_syns_total",
            &[
                ("live", "admitted"),
                ("candidate", "denylisted"),
                ("effect", "newly_dropped")
            ]
        ),
        Some(3.0)
    );
    let (code, out, _) = daemon.cli(&["why", OTHER_V4]);
    assert_eq!(code, 0);
    assert_mentions(&out, &["PASS (admitted)", "would: DROP (denylisted)"]);
    let (code, out, _) = daemon.cli(&["shadow", "status"]);
    assert_eq!(code, 0);
    println!("{out}");
    assert_mentions(
        &out,
        &[
            "3 would be newly dropped, 5 newly passed",
            "admitted -> denylisted",
            OTHER_V4,
        ],
    );

    // Promote while SYNs from the source both policies judge otherwise keep coming: each is
    // judged by one policy whole (denylisted, or allowlisted), never by a mix.
    let before = daemon.scrape();
    let reason_on_gw0 = |text: &str, reason: &str| {
        metric_sum(
            text,
            "port25_packets_total",
            &[("iface", "gw0"), ("reason", reason)],
        )
    };
    let stop = AtomicBool::new(false);
    let promoted = thread::scope(|scope| {
        let sender = lab.allowed().spawn_inside(scope, || {
            let socket = PacketSocket::bind("cl0").unwrap();
            let frame = frames::tcp(LIVE_DENIED, 25).to(GW_A_V4).build();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) || sent < 100 {
                socket.send(&frame).unwrap();
                sent += 1;
                if sent.is_multiple_of(50) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            sent
        });
        thread::sleep(Duration::from_millis(100));
        let promoted = daemon.cli(&["shadow", "promote"]);
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        (promoted, sent)
    });
    let ((code, out, err), sent) = promoted;
    assert_eq!(code, 0, "{err}");
    assert_mentions(&out, &["is the live policy", "a restart reads again"]);
    thread::sleep(Duration::from_millis(300));
    let after = daemon.scrape();
    let moved = |reason: &str| reason_on_gw0(&after, reason) - reason_on_gw0(&before, reason);
    let (old_policy, new_policy, torn) =
        (moved("denylisted"), moved("allowlisted"), moved("admitted"));
    println!(
        "during the promote: {sent} SYNs sent, {old_policy} denylisted (the old policy), \
         {new_policy} allowlisted (the new one), {torn} admitted"
    );
    assert!(
        old_policy > 0.0 && new_policy > 0.0,
        "both policies judged some"
    );
    assert_eq!(
        old_policy + new_policy,
        sent as f64,
        "every SYN by one policy or the other"
    );
    assert_eq!(torn, 0.0, "no SYN judged by half of each");
    assert!(
        lab.delivers_from_allowed(),
        "the allowlisted client delivers after the promote"
    );
    assert!(
        !lab.delivers_from_other(),
        "the promoted policy denies the other client"
    );
    let (_, status_text, _) = daemon.cli(&["status"]);
    assert!(
        status_text.contains(&candidate.display().to_string()),
        "{status_text}"
    );
    assert_eq!(shadow_status(&daemon)["config"], serde_json::Value::Null);

    // Load one more and drop it: the maps hold what they held without it.
    let lists_live = entries(&pins, "LISTS_V4");
    let (code, _, err) = daemon.cli(&["shadow", "load", "--config", &live.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(entries(&pins, "LISTS_V4") > lists_live);
    send_syns(&lab, LIVE_DENIED, 2);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(shadow_status(&daemon)["newly_dropped"], 2);
    let (code, out, err) = daemon.cli(&["shadow", "drop"]);
    assert_eq!(code, 0, "{err}");
    assert_mentions(&out, &["dropped the shadow policy"]);
    assert_eq!(entries(&pins, "LISTS_V4"), lists_live);
    assert_eq!(entries(&pins, "SHADOW_SOURCES"), 0);
    assert_eq!(entries(&pins, "SHADOW_BUCKETS"), 0);
    assert_eq!(
        metric(&daemon.scrape(), "port25_shadow_loaded", &[]),
        Some(0.0)
    );
    let (code, _, err) = daemon.cli(&["shadow", "drop"]);
    assert!(
        code == 1 && err.contains("no shadow policy is loaded"),
        "{err}"
    );

    // Each step is in the history, with who, across a restart.
    daemon.stop();
    let daemon = lab.start(&candidate, "after-restart.log");
    assert_eq!(
        shadow_status(&daemon)["config"],
        serde_json::Value::Null,
        "a restart drops a shadow loaded by hand"
    );
    let (code, history, err) = output(
        Command::new(Daemon::binary())
            .args(["history", "--state-dir"])
            .arg(lab.work.join("state")),
    );
    assert_eq!(code, 0, "{err}");
    assert_mentions(
        &history,
        &[
            "shadow load by uid 0 (root)",
            "shadow promote by uid 0 (root)",
            "shadow drop by uid 0 (root)",
        ],
    );
    drop(sink);
}

fn require_bpftool() {
    port25_testkit::lab::require_tools(&["bpftool"]);
}

#[test]
fn a_shadow_named_in_the_config_is_loaded_at_start_kept_by_reloads_and_goes_with_the_key() {
    let lab = Lab::new("shadowcfg");
    let candidate = lab.work.join("candidate.toml");
    fs::write(
        &candidate,
        format!(
            "interfaces = [\"gw0\", \"gw1\"]\npolicy = \"drop\"\n[allow]\ncidrs = [\"{ALLOWED_V4}/32\"]\n\
             [metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
    let live = lab.config(&format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\", \"198.19.9.0/24\"]\n[shadow]\nconfig = \"candidate.toml\""
    ));
    let mut daemon = lab.start(&live, "daemon.log");
    let status = shadow_status(&daemon);
    assert_eq!(
        status["config"],
        candidate.display().to_string(),
        "{status:#}"
    );
    send_syns(&lab, LIVE_DENIED, 4);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(shadow_status(&daemon)["newly_dropped"], 4);
    // A reload that leaves the candidate as it is keeps its counts.
    daemon.hup();
    daemon.wait_for_log("reload by SIGHUP", Duration::from_secs(10));
    assert_eq!(shadow_status(&daemon)["newly_dropped"], 4);
    // Without the key, the next reload drops it.
    lab.config(&format!(
        "[allow]\ncidrs = [\"{ALLOWED_V4}/32\", \"198.19.9.0/24\"]"
    ));
    daemon.hup();
    poll(Duration::from_secs(10), || {
        (shadow_status(&daemon)["config"] == serde_json::Value::Null).then_some(())
    })
    .unwrap_or_else(|| panic!("the shadow stays without its key:\n{}", daemon.log()));
    daemon.assert_logged("shadow drop by SIGHUP");
}
