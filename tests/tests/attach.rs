//! Attaching as an operator meets it: XDP modes and what port25d says when one is refused, and the
//! XDP program's own log lines arriving in the daemon's log.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use port25_daemon::testing::{Config, Datapath, DispatcherConfig, SlotConfig};

use port25_testkit::{
    frames,
    lab::{
        BpfFs, Client, Daemon, Gateway, Netns, WorkDir, kernel_at_least, metric, poll,
        require_tools, tool,
    },
    require_root,
};

/// A work directory and a namespace holding a bridge, `d0`: a device without native XDP, so the
/// driver refuses native mode and generic (skb) XDP works.
fn bridge_lab(tag: &str) -> (WorkDir, Netns) {
    require_root();
    require_tools(&["ip", "curl"]);
    (WorkDir::new(tag), namespace_with_bridge(tag))
}

fn namespace_with_bridge(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "d0", "type", "bridge"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns
}

fn write_config(work: &WorkDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = work.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `port25d run ARGS` to completion inside `ns`, with state and control socket of its own in
/// `work`; returns (exit code, stderr).
fn port25d(ns: &Netns, work: &WorkDir, args: &[&str]) -> (i32, String) {
    let out = ns
        .command(Daemon::binary())
        .args(args)
        .arg("--control-socket")
        .arg(work.join("run.sock"))
        .arg("--state-dir")
        .arg(work.join("run-state"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `port25d run ARGS --xdp-mode native` on the bridge `d0`: it must fail, saying the kernel refused
/// native mode there; returns its stderr.
fn native_is_refused(ns: &Netns, work: &WorkDir, args: &[&str]) -> String {
    let mut argv = vec!["run", "--xdp-mode", "native"];
    argv.extend_from_slice(args);
    let (code, stderr) = port25d(ns, work, &argv);
    assert_eq!(code, 1, "native on a bridge must fail:\n{stderr}");
    assert!(
        stderr.contains("d0: the kernel refused XDP in native mode"),
        "{stderr}"
    );
    stderr
}

#[test]
fn refused_native_mode_says_what_to_try_and_auto_falls_back() {
    let (work, ns) = bridge_lab("attach");
    let config = write_config(&work, "drop.toml", "policy = \"drop\"\n");
    let config = config.to_str().unwrap();

    let stderr = native_is_refused(&ns, &work, &["--config", config, "--iface", "d0"]);
    assert!(stderr.contains("try --xdp-mode skb"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, stderr) = port25d(
        &ns,
        &work,
        &["run", "--config", config, "--iface", "p25nosuch0"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("\"p25nosuch0\" does not exist"), "{stderr}");

    // auto: native is refused, generic (skb) is used, and the metrics say which.
    let auto = write_config(
        &work,
        "auto.toml",
        "policy = \"drop\"\ninterfaces = [\"d0\"]\nxdp_mode = \"auto\"\n",
    );
    let daemon = Daemon::start(
        &ns,
        &auto,
        "127.0.0.1:9725".parse().unwrap(),
        &work.join("auto.log"),
    );
    let text = daemon.scrape();
    assert_eq!(
        metric(
            &text,
            "port25_attached",
            &[("iface", "d0"), ("xdp_mode", "skb")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        daemon.log().contains("falling back to skb"),
        "{}",
        daemon.log()
    );
    let link = ns.ip(&["link", "show", "d0"]);
    assert!(link.contains("xdpgeneric"), "{link}");
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let link = ns.ip(&["link", "show", "d0"]);
    assert!(
        !link.contains("xdp"),
        "still attached after SIGTERM: {link}"
    );
}

#[test]
fn kernel_log_lines_reach_the_daemon_log() {
    require_root();
    require_tools(&["ip", "curl"]);
    let work = WorkDir::new("klog");
    let lab = Gateway::new("klog", &[Client::new("cl", 40, 10)]);
    let (gw, client) = (&lab.gw, &lab.clients[0]);
    let config = write_config(
        &work,
        "drop.toml",
        "policy = \"drop\"\ninterfaces = [\"gw0\"]\n[deny]\ncidrs = [\"198.18.40.10/32\"]\n",
    );
    let log = work.join("port25d.log");
    // Debug for the XDP program's own target ("port25"): the daemon then lets the kernel emit it.
    let mut child = gw
        .command(Daemon::binary())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:9725",
        ])
        .arg("--control-socket")
        .arg(work.join("klog.sock"))
        .arg("--state-dir")
        .arg(work.join("klog-state"))
        .env("NO_COLOR", "1")
        .env("PORT25_LOG", "info,port25=debug")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let attached = poll(Duration::from_secs(20), || {
        read_log().contains("attached to gw0").then_some(())
    });
    assert!(
        attached.is_some(),
        "port25d did not attach:\n{}",
        read_log()
    );

    // One SYN from the denylisted client: curl gives up quickly, the XDP program drops and logs it.
    let _ = client
        .command(tool("curl"))
        .args([
            "--silent",
            "--max-time",
            "2",
            "--connect-timeout",
            "1",
            "telnet://198.18.40.1:25",
        ])
        .output();
    let logged = poll(Duration::from_secs(10), || {
        read_log()
            .contains("denylisted packet to a protected port on ifindex")
            .then_some(())
    });
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        logged.is_some(),
        "the XDP program's log line did not reach the daemon log:\n{}",
        read_log()
    );
    assert!(status.success(), "{status}\n{}", read_log());
}

#[test]
fn a_refused_mode_switch_puts_the_old_mode_back() {
    let (work, ns) = bridge_lab("switch");
    let bpf = BpfFs::mount("switch");
    let config = write_config(
        &work,
        "keep.toml",
        "policy = \"drop\"\non_exit = \"keep\"\ninterfaces = [\"d0\"]\n",
    );
    let pin_dir = bpf.pin_dir();
    let config = config.to_str().unwrap();
    let pins = pin_dir.to_str().unwrap();
    let daemon = Daemon::start_with_args(
        &ns,
        std::path::Path::new(config),
        "127.0.0.1:9725".parse().unwrap(),
        &work.join("skb.log"),
        &[
            "--xdp-mode".as_ref(),
            "skb".as_ref(),
            "--pin-dir".as_ref(),
            pins.as_ref(),
        ],
    );
    assert!(daemon.stop().success());
    assert!(ns.ip(&["link", "show", "d0"]).contains("xdpgeneric"));

    let stderr = native_is_refused(&ns, &work, &["--config", config, "--pin-dir", pins]);
    assert!(
        stderr.contains("d0: re-attached in skb mode after"),
        "{stderr}"
    );
    let link = ns.ip(&["link", "show", "d0"]);
    assert!(
        link.contains("xdpgeneric"),
        "still filtered in skb mode: {link}"
    );
    assert!(
        pin_dir.join("links/xdp-skb-d0").exists(),
        "the skb link is pinned again, so it outlives the failed start"
    );
}

/// The SYN-ACK watcher is a pinned TCX link from Linux 6.6, a tc filter before (which cannot be
/// pinned): either way a killed daemon and its restarts leave exactly one on the interface, status
/// says which kind it is, and a stop removes it.
#[test]
fn one_egress_watcher_however_often_the_daemon_is_killed() {
    require_root();
    require_tools(&["ip", "curl", "tc"]);
    let work = WorkDir::new("watcher");
    let bpf = BpfFs::mount("watcher");
    let lab = Gateway::new("watcher", &[Client::new("cl", 41, 10)]);
    let gw = &lab.gw;
    let config = write_config(&work, "port25.toml", "interfaces = [\"gw0\"]\n");
    let pins = bpf.pin_dir();
    let start = || {
        Daemon::start_with_args(
            gw,
            &config,
            "127.0.0.1:9725".parse().unwrap(),
            &work.join("port25d.log"),
            &[std::ffi::OsStr::new("--pin-dir"), pins.as_os_str()],
        )
    };
    // A TCX link is pinned (and taken over at each start); a tc filter shows in `tc filter`.
    let watchers = || {
        let out = gw
            .command(tool("tc"))
            .args(["filter", "show", "dev", "gw0", "egress"])
            .output()
            .unwrap();
        let filters = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.contains("port25_synack"))
            .count();
        filters + usize::from(pins.join("links/tc-synack-gw0").exists())
    };
    for _ in 0..2 {
        start().kill();
    }
    let daemon = start();
    assert_eq!(
        watchers(),
        1,
        "one SYN-ACK watcher after two SIGKILLs and restarts"
    );
    let tcx = kernel_at_least(6, 6);
    let (_, status, _) = daemon.cli(&["status"]);
    let said = if tcx {
        "SYN-ACKs watched (pinned TCX link)"
    } else {
        "SYN-ACKs watched (tc filter"
    };
    assert!(status.contains(said), "{status}");
    assert!(daemon.stop().success());
    assert_eq!(watchers(), 0, "stopping removes it");
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Debian's libxdp dispatcher (libxdp1, with xdp-tools): the object xdp-loader builds its
/// dispatchers from. `cargo xtask vm` copies it into its guests.
const LIBXDP_DISPATCHER: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o";

/// Joining a libxdp dispatcher, first steps: the filter, loaded as an extension
/// (BPF_PROG_TYPE_EXT) of the dispatcher's first slot and attached there, passes the verifier and
/// judges packets that go through the dispatcher. On Debian's kernels (`cargo xtask vm`) it must.
/// A kernel that refuses extension programs as such (EPERM before any verification, as the CI
/// host's 6.18 does; libxdp's own compatibility check fails there the same way and falls back to
/// one program without a dispatcher) must at least not reject port25's code: a verifier rejection
/// (a log, EACCES or EINVAL) fails here everywhere.
#[test]
fn the_filter_joins_a_libxdp_dispatcher() {
    require_root();
    let object = std::fs::read(LIBXDP_DISPATCHER)
        .unwrap_or_else(|err| panic!("{LIBXDP_DISPATCHER}: {err} (libxdp1, via xdp-tools)"));
    // One program in slot 0, chain-calling on XDP_PASS, as xdp-loader writes it before loading.
    let conf = DispatcherConfig::new(&[SlotConfig {
        run_prio: 50,
        chain_call_actions: 1 << XDP_PASS,
        program_flags: 0,
    }]);
    let mut dispatcher = aya::EbpfLoader::new()
        .override_global("conf", &conf, true)
        .load(&object)
        .expect("the dispatcher object loads");
    let program: &mut aya::programs::Xdp = dispatcher
        .program_mut("xdp_dispatcher")
        .expect("the dispatcher program")
        .try_into()
        .unwrap();
    program.load().expect("the verifier accepts the dispatcher");
    let dispatcher_fd = program.fd().unwrap().try_clone().unwrap();
    let config = Config::parse(
        "policy = \"drop\"\n[allow]\ncidrs = [\"198.18.1.0/24\"]\n",
        std::path::Path::new("component.toml"),
    )
    .unwrap();
    let mut datapath = Datapath::load_private(1024).unwrap();
    datapath
        .apply_policy(&config, config.allow.clone(), config.deny.clone())
        .unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    match datapath.put_in_slot(dispatcher_fd, "prog0") {
        Ok(()) => {
            // Through the dispatcher: port25 decides, and the dispatcher returns its verdict.
            let run = |frame: &[u8]| {
                let result = aya::programs::TestRun::test_run(
                    &*program,
                    aya::programs::TestRunOptions {
                        data_in: Some(frame),
                        ..Default::default()
                    },
                )
                .expect("BPF_PROG_TEST_RUN on the dispatcher");
                result.return_value
            };
            assert_eq!(
                run(&frames::tcp("198.18.1.7", 25).build()),
                XDP_PASS,
                "allowlisted"
            );
            assert_eq!(
                run(&frames::tcp("198.18.9.9", 25).build()),
                XDP_DROP,
                "not allowlisted"
            );
            assert_eq!(
                run(&frames::udp("198.18.9.9", 25).build()),
                XDP_PASS,
                "not TCP"
            );
            println!("kernel {release}: port25 filters as the dispatcher's prog0");
        }
        Err(err) => {
            let text = format!("{err:?}");
            let debian = release.contains("-cloud-") || release.contains("+deb");
            assert!(
                !debian,
                "Debian's kernel {release} must take the component: {text}"
            );
            assert!(
                text.contains("Operation not permitted") && text.contains("verifier_log:  }"),
                "refused by the verifier, not as an extension program as such: {text}"
            );
            println!(
                "kernel {release}: extension programs refused before verification (EPERM); not port25's code"
            );
        }
    }
}
