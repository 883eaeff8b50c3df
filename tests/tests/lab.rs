//! End-to-end lab: a mail gateway namespace running smtp-sink on ports 25 and 587 and port25d
//! (policy drop) on both of its links, and two client namespaces, one allowlisted and one not.
//!
//! ```text
//!   allowed  cl0 198.18.0.10/24  2001:db8:25::10/64 ── gw0 198.18.0.1/24  2001:db8:25::1/64 ┐
//!                                                                                          gw (port25d on gw0, gw1;
//!   other    cl0 198.18.1.20/24  2001:db8:26::20/64 ── gw1 198.18.1.1/24  2001:db8:26::1/64 ┘  smtp-sink :25 [::]:25 :587)
//! ```
//!
//! The packet counters are checked against an independent count: tcpdump on each client's veth,
//! egress, `tcp dst port 25`. XDP on the gateway end of a veth sees exactly the frames the client
//! end sends, so the two counts must be equal, packet for packet and byte for byte.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use port25_testkit::lab::{
    ALLOWED_V4, ALLOWED_V6, Capture, CaptureSummary, Daemon, Delivery, GW_A_V4, GW_A_V6, GW_B_V4,
    GW_B_V6, Gateway, METRICS, OTHER_V4, OTHER_V6, SMTP_LAB_TOOLS, SmtpSink, WorkDir, ip, metric,
    metric_sum, poll, require_tools, send_mail,
};

const MESSAGES: usize = 3;

const PACKETS: &str = "port25_packets_total";
const BYTES: &str = "port25_bytes_total";
const RELOADS: &str = "port25_config_reloads_total";

/// A policy-drop config protecting port 25 on both gateway links, allowing `allow`.
fn write_config(path: &Path, allow: &[&str]) {
    let cidrs: Vec<String> = allow.iter().map(|cidr| format!("\"{cidr}\"")).collect();
    let text = format!(
        r#"interfaces = ["gw0", "gw1"]
policy = "drop"
ports = [25]
mode = "enforce"

[allow]
cidrs = [{}]
files = []

[deny]
cidrs = []

[metrics]
listen = "{METRICS}"
"#,
        cidrs.join(", ")
    );
    fs::write(path, text).expect("writing the config");
}

fn packets(text: &str, iface: &str, verdict: &str, reason: &str) -> f64 {
    let labels = [("iface", iface), ("verdict", verdict), ("reason", reason)];
    metric(text, PACKETS, &labels)
        .unwrap_or_else(|| panic!("no series {PACKETS}{labels:?} in:\n{text}"))
}

fn bytes(text: &str, iface: &str, verdict: &str, reason: &str) -> f64 {
    let labels = [("iface", iface), ("verdict", verdict), ("reason", reason)];
    metric(text, BYTES, &labels)
        .unwrap_or_else(|| panic!("no series {BYTES}{labels:?} in:\n{text}"))
}

fn reloads(text: &str, result: &str) -> f64 {
    metric(text, RELOADS, &[("result", result)])
        .unwrap_or_else(|| panic!("no series {RELOADS}{{result={result:?}}} in:\n{text}"))
}

fn allow_entries(text: &str) -> f64 {
    metric(text, "port25_list_entries", &[("list", "allow")])
        .unwrap_or_else(|| panic!("no series port25_list_entries{{list=\"allow\"}} in:\n{text}"))
}

fn as_count(value: u64) -> f64 {
    value as f64
}

fn assert_delivered(what: &str, delivery: &Delivery) {
    assert!(
        delivery.delivered,
        "{what}: swaks failed after {:?}:\n{}",
        delivery.elapsed, delivery.transcript
    );
}

fn assert_refused(what: &str, delivery: &Delivery) {
    assert!(
        !delivery.delivered,
        "{what}: the message was delivered but should have been dropped:\n{}",
        delivery.transcript
    );
    assert!(
        delivery.elapsed < Duration::from_secs(10),
        "{what}: swaks took {:?} to give up",
        delivery.elapsed
    );
    assert!(
        delivery.transcript.contains("Error connecting") || delivery.transcript.contains("Timeout"),
        "{what}: swaks should fail to connect (SYNs dropped), but says:\n{}",
        delivery.transcript
    );
}

/// Waits (up to 5 s) until the reload counter with `result` reaches `expected`; the metrics then.
fn wait_for_reloads(daemon: &Daemon<'_>, result: &str, expected: f64) -> String {
    poll(Duration::from_secs(5), || {
        let text = daemon.scrape();
        (reloads(&text, result) >= expected).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "{RELOADS}{{result={result:?}}} did not reach {expected} after SIGHUP; log:\n{}",
            daemon.log()
        )
    })
}

#[test]
fn smtp_gateway_allowlist_counters_and_reload() {
    port25_testkit::require_root();
    require_tools(SMTP_LAB_TOOLS);
    Daemon::binary(); // fail early, with the build hint, if it is missing
    let started = Instant::now();

    // ---- the lab -------------------------------------------------------------------------
    let work = WorkDir::new("lab");
    let lab = Gateway::allowed_and_other("lab", &[]);
    let (gw, allowed, other) = (&lab.gw, &lab.clients[0], &lab.clients[1]);
    let listen = |addr: &str| addr.parse::<SocketAddr>().expect("a socket address");
    let smtp_v4 = SmtpSink::start(gw, listen("0.0.0.0:25"), &work);
    let smtp_v6 = SmtpSink::start(gw, listen("[::]:25"), &work);
    let submission = SmtpSink::start(gw, listen("0.0.0.0:587"), &work);

    let config = work.join("port25.toml");
    write_config(
        &config,
        &[&format!("{ALLOWED_V4}/32"), &format!("{ALLOWED_V6}/128")],
    );
    let mut daemon = Daemon::start(
        gw,
        &config,
        METRICS.parse().expect("a socket address"),
        &work.join("port25d.log"),
    );
    let pid = daemon.pid();

    let text = daemon.scrape();
    for iface in ["gw0", "gw1"] {
        assert_eq!(
            metric_sum(&text, "port25_attached", &[("iface", iface)]),
            1.0,
            "port25d should report itself attached to {iface}:\n{text}"
        );
    }
    let attached: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("port25_attached{"))
        .collect();
    println!("port25d (pid {pid}) started: {attached:?}");
    assert_eq!(allow_entries(&text), 2.0);
    assert_eq!(reloads(&text, "success"), 0.0);
    assert_eq!(reloads(&text, "failure"), 0.0);
    assert_eq!(
        metric_sum(&text, PACKETS, &[]),
        0.0,
        "no traffic yet:\n{text}"
    );

    // The independent count: what each client puts on its wire towards port 25.
    let allowed_capture = Capture::start(allowed, "cl0", "tcp dst port 25", &work);
    let other_capture = Capture::start(other, "cl0", "tcp dst port 25", &work);

    // ---- 1. the allowlisted client delivers on 25, IPv4 and IPv6 -------------------------
    for (source, server) in [(ALLOWED_V4, GW_A_V4), (ALLOWED_V6, GW_A_V6)] {
        for n in 1..=MESSAGES {
            let delivery = send_mail(allowed, ip(source), ip(server), 25);
            assert_delivered(
                &format!("allowlisted {source} -> {server}:25 #{n}"),
                &delivery,
            );
        }
    }
    assert_eq!(
        smtp_v4.wait_for_messages(ip(ALLOWED_V4), MESSAGES),
        MESSAGES
    );
    assert_eq!(
        smtp_v6.wait_for_messages(ip(ALLOWED_V6), MESSAGES),
        MESSAGES
    );

    // ---- 2. the other client cannot connect to 25 (both families at once: each waits 3 s) --
    let (refused_v4, refused_v6) = thread::scope(|s| {
        let v4 = s.spawn(|| send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 25));
        let v6 = s.spawn(|| send_mail(other, ip(OTHER_V6), ip(GW_B_V6), 25));
        (
            v4.join().expect("swaks thread"),
            v6.join().expect("swaks thread"),
        )
    });
    assert_refused("other client over IPv4 to 25", &refused_v4);
    assert_refused("other client over IPv6 to 25", &refused_v6);
    assert_eq!(smtp_v4.messages_from(ip(OTHER_V4)), 0);
    assert_eq!(smtp_v6.messages_from(ip(OTHER_V6)), 0);

    // ---- 3. ... but delivers on 587, which port25d does not touch ---------------------------
    let delivery = send_mail(other, ip(OTHER_V4), ip(GW_B_V4), 587);
    assert_delivered("other client over IPv4 to 587", &delivery);
    assert_eq!(submission.wait_for_messages(ip(OTHER_V4), 1), 1);

    // ---- 4. the counters equal the packets the clients sent --------------------------------
    // Let the last FIN/ACK exchanges finish before the captures stop.
    thread::sleep(Duration::from_millis(500));
    let sent_allowed: CaptureSummary = allowed_capture.finish();
    let sent_other: CaptureSummary = other_capture.finish();
    let text = daemon.scrape();
    let passed = packets(&text, "gw0", "pass", "allowlisted");
    let dropped = packets(&text, "gw1", "drop", "not_allowlisted");
    println!(
        "allowlisted client: sent {} packets ({} bytes, {} SYNs) to port 25 for {} messages; \
         port25d: pass/allowlisted on gw0 = {passed} packets, {} bytes",
        sent_allowed.packets,
        sent_allowed.bytes,
        sent_allowed.syns,
        2 * MESSAGES,
        bytes(&text, "gw0", "pass", "allowlisted"),
    );
    println!(
        "other client: sent {} packets ({} bytes, {} SYNs) to port 25 (2 refused connections, \
         {:?} and {:?}); port25d: drop/not_allowlisted on gw1 = {dropped} packets, {} bytes",
        sent_other.packets,
        sent_other.bytes,
        sent_other.syns,
        refused_v4.elapsed,
        refused_v6.elapsed,
        bytes(&text, "gw1", "drop", "not_allowlisted"),
    );
    assert_eq!(
        sent_allowed.syns,
        as_count_u64(2 * MESSAGES),
        "one SYN per message"
    );
    assert!(passed > 0.0, "nothing counted as passed:\n{text}");
    assert_eq!(
        passed,
        as_count(sent_allowed.packets),
        "pass/allowlisted on gw0 vs the allowlisted client's packets to port 25:\n{text}"
    );
    assert_eq!(
        bytes(&text, "gw0", "pass", "allowlisted"),
        as_count(sent_allowed.bytes),
        "bytes of pass/allowlisted on gw0 vs the allowlisted client's bytes to port 25:\n{text}"
    );
    assert!(
        sent_other.syns >= 2,
        "the other client should have tried to connect"
    );
    assert_eq!(
        sent_other.syns, sent_other.packets,
        "the other client never got past SYN"
    );
    assert_eq!(
        dropped,
        as_count(sent_other.packets),
        "drop/not_allowlisted on gw1 vs the other client's SYNs to port 25:\n{text}"
    );
    assert_eq!(
        bytes(&text, "gw1", "drop", "not_allowlisted"),
        as_count(sent_other.bytes),
        "bytes of drop/not_allowlisted on gw1 vs the other client's bytes to port 25:\n{text}"
    );
    // Nothing else was counted: no series besides these two moved, so the 587 session (and the
    // gateway's own replies, which XDP never sees on ingress) left the counters alone.
    assert_eq!(
        metric_sum(&text, PACKETS, &[]),
        as_count(sent_allowed.packets + sent_other.packets),
        "packets counted beyond the clients' packets to port 25:\n{text}"
    );

    // ---- 5. SIGHUP with the other client allowlisted too -----------------------------------
    write_config(
        &config,
        &[
            &format!("{ALLOWED_V4}/32"),
            &format!("{ALLOWED_V6}/128"),
            &format!("{OTHER_V4}/32"),
            &format!("{OTHER_V6}/128"),
        ],
    );
    daemon.hup();
    let text = wait_for_reloads(&daemon, "success", 1.0);
    assert_eq!(reloads(&text, "success"), 1.0);
    assert_eq!(reloads(&text, "failure"), 0.0);
    assert_eq!(allow_entries(&text), 4.0);
    for (source, server, sink) in [(OTHER_V4, GW_B_V4, &smtp_v4), (OTHER_V6, GW_B_V6, &smtp_v6)] {
        let delivery = send_mail(other, ip(source), ip(server), 25);
        assert_delivered(
            &format!("other {source} -> {server}:25 after reload"),
            &delivery,
        );
        assert_eq!(sink.wait_for_messages(ip(source), 1), 1);
    }
    assert!(daemon.is_running(), "port25d died:\n{}", daemon.log());
    assert_eq!(daemon.pid(), pid, "the same process");
    let text = daemon.scrape();
    let other_passed = packets(&text, "gw1", "pass", "allowlisted");
    println!("after reload: pass/allowlisted on gw1 = {other_passed} packets");
    assert!(other_passed > 0.0, "{text}");
    assert_eq!(packets(&text, "gw1", "drop", "not_allowlisted"), dropped);

    // ---- 6. an invalid config on SIGHUP is rejected, the policy stays ----------------------
    write_config(&config, &[&format!("{ALLOWED_V4}/32"), "198.18.0.300/32"]);
    daemon.hup();
    let text = wait_for_reloads(&daemon, "failure", 1.0);
    assert_eq!(reloads(&text, "failure"), 1.0);
    assert_eq!(reloads(&text, "success"), 1.0);
    assert_eq!(allow_entries(&text), 4.0, "the previous lists stay live");
    for (ns, source, server, sink) in [
        (&allowed, ALLOWED_V4, GW_A_V4, &smtp_v4),
        (&allowed, ALLOWED_V6, GW_A_V6, &smtp_v6),
        (&other, OTHER_V4, GW_B_V4, &smtp_v4),
        (&other, OTHER_V6, GW_B_V6, &smtp_v6),
    ] {
        let before = sink.messages_from(ip(source));
        let delivery = send_mail(ns, ip(source), ip(server), 25);
        assert_delivered(
            &format!("{source} -> {server}:25 after the rejected reload"),
            &delivery,
        );
        assert_eq!(sink.wait_for_messages(ip(source), before + 1), before + 1);
    }
    assert!(daemon.is_running(), "port25d died:\n{}", daemon.log());
    assert_eq!(daemon.pid(), pid, "the same process");
    let log = daemon.log();
    let rejection = log
        .lines()
        .find(|line| line.contains("reload rejected"))
        .unwrap_or_else(|| panic!("no \"reload rejected\" in the log:\n{log}"));
    println!("port25d on the bad config: {rejection}");
    assert!(
        rejection.contains("198.18.0.300"),
        "the rejection should name the bad entry: {rejection}"
    );

    // ---- SIGTERM: clean exit, XDP detached -------------------------------------------------
    let status = daemon.stop();
    assert!(
        status.success(),
        "port25d exited with {status} on SIGTERM; log:\n{log}"
    );
    for iface in ["gw0", "gw1"] {
        let link = gw.ip(&["link", "show", "dev", iface]);
        assert!(
            !link.contains("xdp"),
            "XDP still attached to {iface} after port25d stopped:\n{link}"
        );
    }

    println!(
        "smtp-sink received: port 25 IPv4 {:?}, IPv6 {:?}, port 587 {:?}",
        smtp_v4.messages(),
        smtp_v6.messages(),
        submission.messages()
    );
    println!("lab test took {:?}", started.elapsed());
}

fn as_count_u64(n: usize) -> u64 {
    u64::try_from(n).expect("a small count")
}
