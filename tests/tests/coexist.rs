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

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use port25_testkit::{
    assert_mentions,
    lab::{
        Client, Daemon, Gateway, METRICS, SharedBpffs, WorkDir, metric, poll, require_tools,
        run_ok, tool, xdp_program_ids,
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

/// A `port25d run` keeping its state and control socket in `work`, logging without colours.
fn in_work<'c>(run: &'c mut Command, work: &WorkDir) -> &'c mut Command {
    run.arg("--state-dir")
        .arg(work.join("state"))
        .arg("--control-socket")
        .arg(work.join("control.sock"))
        .env("NO_COLOR", "1")
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
    run_ok(Command::new(tool("bpftool")).args(["link", "detach", "id", &link.to_string()]));
}

#[test]
fn another_xdp_program_on_the_interface_is_named_and_left_alone() {
    let (work, net) = lab("cx-held");
    // xdp-filter (libxdp) wants a bpffs for its pins: one in the command's own mount namespace.
    run_ok(net.gw.command(tool("sh")).args([
        "-c",
        "mount -t bpf bpf /sys/fs/bpf && exec xdp-filter load gw0 --mode skb",
    ]));
    let before = xdp_program_ids(&net.gw, "gw0");
    assert_eq!(before.len(), 1, "xdp-filter's program is attached");

    let mut run = net.gw.command(Daemon::binary());
    run.args(["run", "--iface", "gw0", "--metrics-listen", METRICS]);
    let out = in_work(&mut run, &work).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "port25d must refuse:\n{stderr}");
    let named = format!(
        "gw0: another XDP program holds the interface: program {}",
        before[0]
    );
    assert_mentions(
        &stderr,
        &[named.as_str(), "in skb mode", "xdp-loader unload gw0 --all"],
    );
    // libxdp puts its programs in a dispatcher where the kernel allows extension programs
    // (Debian's), and attaches xdp-filter's program alone where it does not (the CI host's).
    assert!(
        stderr.contains("\"xdpfilt_")
            || stderr.contains("\"xdp_dispatcher\" in skb mode (a libxdp dispatcher"),
        "xdp-filter's program or its dispatcher named in:\n{stderr}"
    );
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
    daemon.assert_logged("gw0: port25's XDP filter was detached by someone else");
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
    // The kernel holds the new link a moment before the daemon publishes it: wait for both.
    let back = poll(Duration::from_secs(15), || {
        (!xdp_program_ids(&net.gw, "gw0").is_empty() && attached(&daemon) == Some(1.0))
            .then_some(())
    });
    assert!(
        back.is_some(),
        "attached again, and exported so (port25_attached {:?}):\n{}",
        attached(&daemon),
        daemon.log()
    );
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
    daemon.assert_logged("gw0: XDP filter attached again");
}

/// How a TCP connection from the client to the gateway's `port` ends: `true` when the gateway's
/// stack answers (refused: nothing listens there), `false` when something on the way dropped the
/// SYN (no answer within the timeout).
fn reaches_stack(net: &Gateway, port: u16) -> bool {
    let out = net.clients[0]
        .command(tool("curl"))
        .args(["-s", "--connect-timeout", "2", "-m", "4"])
        .arg(format!("http://198.18.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    match out.status.code() {
        Some(7) => true,
        Some(28) => false,
        other => panic!(
            "curl to port {port} ended with {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs a libxdp tool (or port25d) in the shared bpffs and the gateway's network: its output,
/// asserting success.
fn run_in(bpffs: &SharedBpffs, net: &Gateway, program: &Path, args: &[&str]) -> String {
    let out = bpffs.command(&net.gw, program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {text}",
        program.display()
    );
    text
}

/// The programs `xdp-loader status` lists for gw0 (libxdp's own view of the dispatcher).
fn libxdp_status(bpffs: &SharedBpffs, net: &Gateway) -> String {
    run_in(bpffs, net, &tool("xdp-loader"), &["status", "gw0"])
}

/// After port25 left the dispatcher (`how`): port 25 reaches the stack, xdp-filter still drops
/// 2525, and libxdp lists xdp-filter's programs only.
#[track_caller]
fn assert_only_xdp_filter_left(bpffs: &SharedBpffs, net: &Gateway, how: &str) {
    assert!(reaches_stack(net, 25), "port25 still filters after {how}");
    assert!(
        !reaches_stack(net, 2525),
        "xdp-filter went with port25 ({how})"
    );
    let status = libxdp_status(bpffs, net);
    assert!(
        !status.contains("port25_componen") && status.contains("xdpfilt_"),
        "after {how}: {status}"
    );
}

/// xdp_coexist = "libxdp": port25 and xdp-filter in one libxdp dispatcher on one interface, each
/// doing its own job, each surviving what the other does (xdp-filter unloaded and loaded again,
/// port25d restarted, SIGKILLed, detached) and libxdp listing both. On a kernel that refuses
/// extension programs as such (the CI host's 6.18, where libxdp itself falls back to one
/// program), port25d must refuse clearly and leave the interface alone; Debian's kernels
/// (`cargo xtask vm`) must run it all.
#[test]
fn port25_and_xdp_filter_share_a_libxdp_dispatcher() {
    let (work, net) = lab("cx-libxdp");
    require_tools(&["unshare", "nsenter", "timeout", "curl"]);
    let bpffs = SharedBpffs::new();
    let config = work.join("port25.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"gw0\"]\nxdp_coexist = \"libxdp\"\npolicy = \"drop\"\non_exit = \
             \"keep\"\n[allow]\ncidrs = [\"198.18.77.0/24\"]\n[metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim().to_owned();
    let debian = release.contains("-cloud-") || release.contains("+deb");
    if !debian {
        // Killed after 15 s if it runs: then this kernel takes extension programs after all.
        let mut run = bpffs.command(&net.gw, tool("timeout"));
        run.args(["-s", "KILL", "15"])
            .arg(Daemon::binary())
            .args(["run", "--config"])
            .arg(&config);
        let probe = in_work(&mut run, &work).output().unwrap();
        let stderr = String::from_utf8_lossy(&probe.stderr);
        if probe.status.code() != Some(137) {
            assert_mentions(
                &stderr,
                &[
                    "gw0: cannot join libxdp's dispatcher (xdp_coexist = \"libxdp\")",
                    "Operation not permitted",
                    "This kernel refuses extension programs",
                    "xdp_coexist = \"exclusive\"",
                ],
            );
            assert!(
                xdp_program_ids(&net.gw, "gw0").is_empty(),
                "a refused join leaves the interface as it was"
            );
            eprintln!(
                "kernel {release} refuses extension programs (EPERM before verification): port25d \
                 refused xdp_coexist = \"libxdp\" clearly. The dispatcher itself is tested on \
                 Debian's kernels by `cargo xtask vm --tests coexist`"
            );
            return;
        }
    }

    let xdp_filter = tool("xdp-filter");
    run_in(&bpffs, &net, &xdp_filter, &["load", "gw0"]);
    run_in(&bpffs, &net, &xdp_filter, &["port", "2525"]);
    assert!(reaches_stack(&net, 25), "no port25 yet");
    assert!(!reaches_stack(&net, 2525), "xdp-filter's rule");

    // port25 joins xdp-filter's dispatcher, ahead of it.
    let daemon = Daemon::start_in_bpffs(&net.gw, &bpffs, &config, &work, "first.log");
    assert!(
        daemon.log().contains(
            "gw0: in libxdp's dispatcher in native mode (run priority 10), beside xdpfilt_"
        ),
        "{}",
        daemon.log()
    );
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("native XDP in libxdp's dispatcher (run priority 10)"),
        "{status}"
    );
    let status = libxdp_status(&bpffs, &net);
    for name in ["xdp_dispatcher", "port25_componen", "xdpfilt_"] {
        assert!(
            status.contains(name),
            "{name} in xdp-loader status:\n{status}"
        );
    }
    assert!(
        !reaches_stack(&net, 25),
        "port25 drops a SYN from a stranger"
    );
    assert!(
        !reaches_stack(&net, 2525),
        "xdp-filter still drops its port"
    );
    assert!(reaches_stack(&net, 8080), "the rest reaches the stack");
    let drops = metric(
        &daemon.scrape(),
        "port25_packets_total",
        &[
            ("iface", "gw0"),
            ("verdict", "drop"),
            ("reason", "not_allowlisted"),
        ],
    );
    assert!(
        drops.is_some_and(|n| n >= 1.0),
        "port25 counted it: {drops:?}"
    );

    // libxdp takes its program out and puts it back: port25 stays.
    run_in(&bpffs, &net, &xdp_filter, &["unload", "gw0"]);
    assert!(reaches_stack(&net, 2525), "xdp-filter is gone");
    assert!(!reaches_stack(&net, 25), "port25 keeps filtering");
    let status = libxdp_status(&bpffs, &net);
    assert!(
        status.contains("port25_componen") && !status.contains("xdpfilt_"),
        "{status}"
    );
    run_in(&bpffs, &net, &xdp_filter, &["load", "gw0"]);
    run_in(&bpffs, &net, &xdp_filter, &["port", "2525"]);
    assert!(!reaches_stack(&net, 2525) && !reaches_stack(&net, 25));

    // A restart (on_exit = "keep"): filtering throughout, one port25 component after.
    drop(daemon);
    assert!(
        !reaches_stack(&net, 25),
        "the component stays while port25d is down"
    );
    let daemon = Daemon::start_in_bpffs(&net.gw, &bpffs, &config, &work, "second.log");
    daemon.assert_logged("the previous daemon's component was replaced atomically");
    let status = libxdp_status(&bpffs, &net);
    assert_eq!(status.matches("port25_componen").count(), 1, "{status}");
    assert!(
        status.contains("xdpfilt_"),
        "a port25 restart keeps xdp-filter: {status}"
    );
    assert!(!reaches_stack(&net, 25) && !reaches_stack(&net, 2525));

    // libxdp removes everything: port25d notices and joins again (reattach = true).
    run_in(
        &bpffs,
        &net,
        &tool("xdp-loader"),
        &["unload", "gw0", "--all"],
    );
    daemon.wait_for_log("gw0: XDP filter attached again", Duration::from_secs(15));
    daemon.assert_logged("port25's XDP filter was detached by someone else");
    let detached = metric(
        &daemon.scrape(),
        "port25_detached_total",
        &[("hook", "xdp"), ("iface", "gw0")],
    );
    assert_eq!(detached, Some(1.0));
    assert!(!reaches_stack(&net, 25), "filtering again");
    assert!(reaches_stack(&net, 2525), "xdp-filter was unloaded");
    run_in(&bpffs, &net, &xdp_filter, &["load", "gw0"]);
    run_in(&bpffs, &net, &xdp_filter, &["port", "2525"]);

    // SIGKILL: both keep filtering.
    daemon.kill();
    assert!(
        !reaches_stack(&net, 25),
        "port25's component outlives a killed daemon"
    );
    assert!(!reaches_stack(&net, 2525), "and so does xdp-filter");
    assert!(reaches_stack(&net, 8080));
    let audit = bpffs
        .command(&net.gw, Daemon::binary())
        .args(["audit", "--filter-only", "--control-socket"])
        .arg(work.join("control.sock"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("gw0 (native XDP)"),
        "audit finds it in libxdp's pins:\n{audit}"
    );

    // `port25d detach` with no daemon: port25 out, xdp-filter left.
    let out = run_in(
        &bpffs,
        &net,
        &Daemon::binary(),
        &[
            "detach",
            "--control-socket",
            work.join("control.sock").to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("took port25 out of libxdp's dispatcher on gw0"),
        "{out}"
    );
    assert_only_xdp_filter_left(&bpffs, &net, "port25d detach");

    // on_exit = "detach": SIGTERM takes port25 out, and only port25.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("on_exit = \"keep\"", "on_exit = \"detach\""),
    )
    .unwrap();
    let daemon = Daemon::start_in_bpffs(&net.gw, &bpffs, &config, &work, "third.log");
    assert!(!reaches_stack(&net, 25));
    drop(daemon);
    assert_only_xdp_filter_left(&bpffs, &net, "SIGTERM with on_exit = \"detach\"");
}
