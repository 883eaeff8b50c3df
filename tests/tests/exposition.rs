//! What `/metrics` answers each kind of scraper: the Prometheus text format 0.0.4 to one that does
//! not ask for OpenMetrics (curl, promtool, many agents), clean by `promtool check metrics`;
//! OpenMetrics to one that asks; and a real Prometheus scrapes it.
//!
//! ```text
//!   client cl0 198.18.0.10 ── gw0 198.18.0.1   gw (port25d; Prometheus scraping it)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use port25_testkit::{
    lab::{
        Client, Daemon, Gateway, METRICS, PrometheusServer, WorkDir, poll, require_tools, run_ok,
        tool,
    },
    require_root,
};

/// `curl -i` of the metrics endpoint inside the gateway, with `accept` as the Accept header:
/// the Content-Type and the body.
fn fetch(net: &Gateway, accept: Option<&str>) -> (String, String) {
    let mut curl = net.gw.command(tool("curl"));
    curl.args(["--silent", "--show-error", "--fail", "--max-time", "3"])
        .args(["--noproxy", "*", "--include"]);
    if let Some(accept) = accept {
        curl.args(["--header", &format!("Accept: {accept}")]);
    }
    let text = run_ok(curl.arg(format!("http://{METRICS}/metrics")));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap();
    (content_type, body.to_owned())
}

#[test]
fn each_scraper_gets_the_format_it_reads() {
    require_root();
    require_tools(&["ip", "curl", "promtool", "prometheus"]);
    let work = WorkDir::new("exposition");
    let net = Gateway::new("expo", &[Client::new("client", 0, 10)]);
    let config = work.join("port25.toml");
    std::fs::write(&config, "interfaces = [\"gw0\"]\n").unwrap();
    let daemon = Daemon::start_in(&net.gw, &config, &work, "port25d.log", None);

    // No Accept header: text format 0.0.4, which promtool's linter takes without a remark.
    let (content_type, text) = fetch(&net, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE port25_packets_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE port25_build_info gauge"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    // Every family the daemon exports is in README's metrics table.
    let readme = include_str!("../../README.md");
    for family in text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
    {
        assert!(
            readme.contains(&format!("| `{family}`")) || readme.contains(&format!(", `{family}`")),
            "{family} is not in README's metrics table"
        );
    }
    let mut check = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && remarks.trim().is_empty(),
        "promtool check metrics: {remarks}"
    );

    // Asked for OpenMetrics: OpenMetrics.
    let (content_type, text) = fetch(
        &net,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.contains("# TYPE port25_packets counter"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    // A real Prometheus (which asks for OpenMetrics first) scrapes it, counters and info alike.
    let prometheus = PrometheusServer::start(&net.gw, METRICS, &work);
    let scraped = poll(Duration::from_secs(30), || {
        let up = prometheus.query("up{job=\"port25\"}");
        let packets = prometheus.query("count(port25_packets_total)");
        let build = prometheus.query("port25_build_info");
        (up.contains("\"1\"]") && packets.contains("\"result\":[{") && build.contains("version"))
            .then_some(())
    });
    assert!(
        scraped.is_some(),
        "Prometheus scraped port25d: up {}, packets {}",
        prometheus.query("up"),
        prometheus.query("count(port25_packets_total)"),
    );
    drop(prometheus);
    drop(daemon);
}
