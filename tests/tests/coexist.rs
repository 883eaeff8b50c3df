//! Sharing the interface with other XDP programs: a port25d that cannot attach names the program
//! that holds the interface and leaves it alone; one whose link is taken away says so and
//! attaches again.
//!
//! ```text
//!   client cl0 198.18.0.10 ── gw0 198.18.0.1   gw (port25d, or xdp-filter first)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{process::Command, time::Duration};

use port25_testkit::{
    lab::{
        Client, Daemon, Gateway, METRICS, WorkDir, metric, poll, require_tools, tool,
        xdp_program_ids,
    },
    require_root,
};

fn lab(tag: &str) -> (WorkDir, Gateway) {
    require_root();
    require_tools(&["ip", "curl", "bpftool", "xdp-filter", "xdp-loader"]);
    (
        WorkDir::new(&format!("coexist-{tag}")),
        Gateway::new(tag, &[Client::new("client", 0, 10)]),
    )
}

/// The id of the XDP link whose program is `program` (`bpftool link list`: "N: xdp  prog P").
fn xdp_link_of(program: u32) -> u32 {
    let out = Command::new(tool("bpftool"))
        .args(["link", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [id, "xdp", "prog", prog, ..] if prog == program.to_string() => {
                    id.trim_end_matches(':').parse().ok()
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no XDP link of program {program} in:\n{text}"))
}

/// What another tool can do to port25: `bpftool link detach id LINK`.
fn detach_link(link: u32) {
    let detach = Command::new(tool("bpftool"))
        .args(["link", "detach", "id", &link.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&detach.stderr);
    assert!(detach.status.success(), "bpftool link detach: {stderr}");
}

#[test]
fn another_xdp_program_on_the_interface_is_named_and_left_alone() {
    let (work, net) = lab("cx-held");
    // xdp-filter (libxdp) wants a bpffs for its pins: one in the command's own mount namespace.
    let loaded = net
        .gw
        .command(tool("sh"))
        .args([
            "-c",
            "mount -t bpf bpf /sys/fs/bpf && exec xdp-filter load gw0 --mode skb",
        ])
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "xdp-filter load: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let before = xdp_program_ids(&net.gw, "gw0");
    assert_eq!(before.len(), 1, "xdp-filter's program is attached");

    let out = net
        .gw
        .command(Daemon::binary())
        .args(["run", "--iface", "gw0", "--metrics-listen", METRICS])
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--control-socket")
        .arg(work.join("control.sock"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "port25d must refuse:\n{stderr}");
    let named = format!(
        "gw0: another XDP program holds the interface: program {}",
        before[0]
    );
    for needle in [
        named.as_str(),
        "\"xdpfilt_",
        "in skb mode",
        "xdp-loader unload gw0 --all",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in:\n{stderr}");
    }
    assert_eq!(
        xdp_program_ids(&net.gw, "gw0"),
        before,
        "the other program is untouched"
    );
}

#[test]
fn a_link_taken_away_is_reported_and_attached_again() {
    let (work, net) = lab("cx-taken");
    let config = work.join("port25.toml");
    let write = |reattach: bool| {
        std::fs::write(
            &config,
            format!(
                "interfaces = [\"gw0\"]\nreattach = {reattach}\n[metrics]\nlisten = \"{METRICS}\"\n"
            ),
        )
        .unwrap();
    };
    write(false);
    let mut daemon = Daemon::start_in(&net.gw, &config, &work, "port25d.log", None);
    let attached = |daemon: &Daemon| {
        let labels = [("iface", "gw0"), ("xdp_mode", "native")];
        metric(&daemon.scrape(), "port25_attached", &labels)
    };
    let detached = |text: &str| {
        metric(
            text,
            "port25_detached_total",
            &[("hook", "xdp"), ("iface", "gw0")],
        )
    };
    assert_eq!(
        detached(&daemon.scrape()),
        Some(0.0),
        "exported from the start"
    );
    let program = xdp_program_ids(&net.gw, "gw0");
    assert_eq!(program.len(), 1);
    let link = xdp_link_of(program[0]);

    // Taken away, reattach = false: said, counted, and it stays so.
    detach_link(link);
    assert!(
        xdp_program_ids(&net.gw, "gw0").is_empty(),
        "bpftool detached it"
    );
    let seen = poll(Duration::from_secs(15), || {
        (detached(&daemon.scrape()) == Some(1.0)).then_some(())
    });
    assert!(
        seen.is_some(),
        "the loss is counted within the check interval:\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("gw0: port25's XDP filter was detached by someone else")
    );
    assert_eq!(attached(&daemon), Some(0.0));
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("DETACHED gw0: XDP filter taken away"),
        "{status}"
    );
    assert!(status.contains("reattach = false"), "{status}");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        xdp_program_ids(&net.gw, "gw0").is_empty(),
        "reattach = false leaves it"
    );

    // reattach = true: attached again at the next look.
    write(true);
    daemon.hup();
    let back = poll(Duration::from_secs(15), || {
        (!xdp_program_ids(&net.gw, "gw0").is_empty()).then_some(())
    });
    assert!(back.is_some(), "attached again:\n{}", daemon.log());
    assert_eq!(attached(&daemon), Some(1.0));
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(!status.contains("DETACHED"), "{status}");

    // Taken away again, reattach = true: back within the check interval.
    let link = xdp_link_of(xdp_program_ids(&net.gw, "gw0")[0]);
    detach_link(link);
    let again = poll(Duration::from_secs(15), || {
        (detached(&daemon.scrape()) == Some(2.0) && !xdp_program_ids(&net.gw, "gw0").is_empty())
            .then_some(())
    });
    assert!(again.is_some(), "{}", daemon.log());
    assert!(daemon.log().contains("gw0: XDP filter attached again"));
}
