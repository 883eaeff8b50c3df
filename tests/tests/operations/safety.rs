//! Operator safety: one daemon per pin directory, no half-started states, clients that never
//! hang, output that never panics, and messages that say what is true to non-root users.

use std::{
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use port25_testkit::lab::{Daemon, SmtpSink, XdpPass, poll, xdp_program_ids};

use super::Lab;

/// `port25d ARGS` from this test, bounded by `timeout` (a hang is exit 124): exit code, stdout,
/// stderr.
fn port25d(args: &[&OsStr]) -> (i32, String, String) {
    output(
        Command::new("timeout")
            .arg("60")
            .arg(Daemon::binary())
            .args(args)
            .env("NO_COLOR", "1"),
    )
}

pub(super) fn output(command: &mut Command) -> (i32, String, String) {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `port25d run` in the gateway's namespace with its own state and control socket (`tag`), on
/// `pin_dir`, with `extra` arguments: a start expected to fail, bounded. Exit code and stderr.
fn failed_start(
    lab: &Lab,
    config: &Path,
    pin_dir: &Path,
    tag: &str,
    extra: &[&str],
) -> (i32, String) {
    let (state, socket) = (
        lab.work.join(format!("{tag}-state")),
        lab.work.join(format!("{tag}.sock")),
    );
    let out = lab
        .gw()
        .command("timeout")
        .arg("60")
        .arg(Daemon::binary())
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("--state-dir")
        .arg(&state)
        .arg("--control-socket")
        .arg(&socket)
        .args(extra)
        .output()
        .unwrap();
    assert!(!socket.exists(), "{tag}: the control socket stays behind");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What is pinned under `dir`, recursively (empty when `dir` is gone).
fn pins_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                found.extend(pins_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_second_daemon_on_the_same_pins_is_refused_and_names_the_first() {
    let lab = Lab::new("owner");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "first.log");
    let (_, added, _) = daemon.cli(&["allow", "add", "198.18.1.20"]);
    assert!(
        lab.delivers_from_other(),
        "the runtime allow applies: {added}"
    );

    // Another control socket, state directory and metrics port; the same pins.
    let (code, stderr) = failed_start(
        &lab,
        &cfg,
        &lab.bpf.pin_dir(),
        "second",
        &["--metrics-listen", "127.0.0.1:9726"],
    );
    println!("the second daemon: exit {code}: {stderr}");
    let first_socket = daemon.control_socket().display().to_string();
    assert!(
        code == 1
            && stderr.contains(&format!("belong to port25d pid {}", daemon.pid()))
            && stderr.contains(&first_socket),
        "the second start does not name the first daemon: exit {code}\n{stderr}"
    );
    // With pins of its own, on the same interfaces: the interface is the first daemon's.
    let other_pins = lab.bpf.pin_dir().with_file_name("port25-second");
    let (code, stderr) = failed_start(
        &lab,
        &cfg,
        &other_pins,
        "third",
        &["--metrics-listen", "127.0.0.1:9727"],
    );
    println!("a second daemon with pins of its own: exit {code}: {stderr}");
    assert!(
        code == 1
            && stderr.contains(&format!("It is the filter of port25d pid {}", daemon.pid()))
            && !stderr.contains("xdp off"),
        "the other start does not name the first daemon: exit {code}\n{stderr}"
    );
    assert!(
        pins_under(&other_pins).is_empty(),
        "{:?}",
        pins_under(&other_pins)
    );
    // The first one goes on as it was: its runtime entry still applies, and it answers.
    assert!(
        lab.delivers_from_other(),
        "the first daemon's runtime allow was lost"
    );
    assert!(lab.delivers_from_allowed());
    let (code, status, _) = daemon.cli(&["status"]);
    assert_eq!(code, 0, "{status}");
    // The counts add up: an entry in the config and added at run time is one entry.
    daemon.cli(&["allow", "add", "198.18.0.10"]);
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains(
            "allow list: 2 entries (1 from the config, 2 runtime; 1 of those listed twice)"
        ) && status.contains("deny list: 0 entries (0 from the config, 0 runtime)"),
        "{status}"
    );
}

#[test]
fn detach_and_status_on_the_wrong_socket_name_the_live_daemon_and_touch_nothing() {
    let lab = Lab::new("wrongsock");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "daemon.log");
    let pins = lab.bpf.pin_dir();
    let wrong = lab.work.join("wrong.sock");
    let programs = xdp_program_ids(lab.gw(), "gw0");
    let args = |command: &'static str| -> Vec<&OsStr> {
        vec![
            OsStr::new(command),
            OsStr::new("--pin-dir"),
            pins.as_os_str(),
            OsStr::new("--control-socket"),
            wrong.as_os_str(),
        ]
    };
    let named = format!(
        "port25d pid {} (control socket {})",
        daemon.pid(),
        daemon.control_socket().display()
    );
    let (code, stdout, stderr) = port25d(&args("detach"));
    println!("detach on the wrong socket: exit {code}: {stderr}");
    assert!(
        code == 1 && stderr.contains(&named) && stdout.is_empty(),
        "detach did not refuse naming {named}: exit {code}\n{stdout}{stderr}"
    );
    let (code, _, stderr) = port25d(&args("status"));
    println!("status on the wrong socket: exit {code}: {stderr}");
    assert!(
        code == 1 && stderr.contains(&named) && stderr.contains("ask it with --control-socket"),
        "status did not name the live daemon: exit {code}\n{stderr}"
    );
    // Nothing moved: same program, same pins, still enforcing.
    assert_eq!(xdp_program_ids(lab.gw(), "gw0"), programs);
    assert!(!pins_under(&pins.join("links")).is_empty());
    assert!(!lab.delivers_from_other() && lab.delivers_from_allowed());

    // Forced, it stops that daemon and removes the filter.
    let mut forced = args("detach");
    forced.push(OsStr::new("--force"));
    let (code, stdout, stderr) = port25d(&forced);
    println!("detach --force: exit {code}: {stdout}{stderr}");
    assert!(
        code == 0
            && stderr.contains("--force: stopping")
            && stdout.contains(&format!("port25d pid {} stopped", daemon.pid())),
        "detach --force: exit {code}\n{stdout}{stderr}"
    );
    assert!(
        pins_under(&pins).is_empty(),
        "pins left: {:?}",
        pins_under(&pins)
    );
    assert!(
        xdp_program_ids(lab.gw(), "gw0").is_empty(),
        "gw0 still filtered"
    );
    // Its lock goes as its process exits, which then still has to finish (a slow TCG guest
    // showed it running just after): exited within seconds, not necessarily at once.
    let mut daemon = daemon;
    let exited = poll(std::time::Duration::from_secs(5), || {
        (!daemon.is_running()).then_some(())
    });
    assert!(exited.is_some(), "the daemon still runs");
}

/// A start that failed left no program on gw0 and no pin under `pins`.
fn assert_nothing_left(lab: &Lab, pins: &Path) {
    assert!(
        xdp_program_ids(lab.gw(), "gw0").is_empty(),
        "gw0 left attached"
    );
    let left = pins_under(pins);
    assert!(left.is_empty(), "pins left: {left:?}");
}

#[test]
fn a_start_that_fails_leaves_nothing_attached_or_pinned() {
    let lab = Lab::new("failstart");
    let cfg = lab.allowing_one();
    let pins = lab.bpf.pin_dir();

    // The metrics port is taken: refused before anything touches the kernel.
    let metrics = port25_testkit::lab::METRICS.parse().unwrap();
    let squatter = SmtpSink::start(lab.gw(), metrics, &lab.work);
    let (code, stderr) = failed_start(&lab, &cfg, &pins, "port", &[]);
    println!("metrics port taken: exit {code}: {stderr}");
    assert!(
        code == 1 && stderr.contains("cannot listen for metrics"),
        "{stderr}"
    );
    assert_nothing_left(&lab, &pins);
    drop(squatter);

    // gw1 is busy: gw0 was attached first, and goes again with the maps.
    let busy = XdpPass::attach(lab.gw(), "gw1");
    let (code, stderr) = failed_start(&lab, &cfg, &pins, "busy", &[]);
    println!("gw1 busy: exit {code}: {stderr}");
    assert!(
        code == 1 && stderr.contains("another XDP program holds the interface"),
        "{stderr}"
    );
    assert_nothing_left(&lab, &pins);
    let (code, status, _) = port25d(&[
        OsStr::new("status"),
        OsStr::new("--pin-dir"),
        pins.as_os_str(),
        OsStr::new("--control-socket"),
        lab.work.join("busy.sock").as_os_str(),
    ]);
    assert!(
        code == 3 && status.contains("No filter is pinned"),
        "{status}"
    );
    drop(busy);
}

#[test]
fn clients_give_up_on_a_stopped_daemon_and_say_so() {
    let lab = Lab::new("stopped");
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "daemon.log");
    let pid = daemon.pid().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let socket = daemon.control_socket();
    let asks: [&[&str]; 2] = [&["status"], &["deny", "add", "198.18.9.9"]];
    let mut said = Vec::new();
    for ask in asks {
        let mut args: Vec<&OsStr> = ask.iter().map(OsStr::new).collect();
        args.extend([
            OsStr::new("--timeout"),
            OsStr::new("1"),
            OsStr::new("--control-socket"),
            socket.as_os_str(),
        ]);
        said.push((ask, port25d(&args)));
    }
    signal("-CONT");
    for (ask, (code, _, stderr)) in said {
        println!("{ask:?} on a stopped daemon: exit {code}: {stderr}");
        // 124 would be `timeout` killing a client that hung.
        assert!(
            code == 1 && stderr.contains("did not answer") && stderr.contains("within 1 s"),
            "{ask:?}: exit {code}\n{stderr}"
        );
    }
    // Resumed, it answers again (and carries out what it had queued).
    let (code, _, stderr) = daemon.cli(&["status"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error() {
    let lab = Lab::new("stdout");
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "daemon.log");
    let socket = daemon.control_socket().display().to_string();
    // check-config runs here, in this namespace: a config of its interfaces.
    let config = lab.work.join("lo.toml");
    fs::write(&config, "interfaces = [\"lo\"]\npolicy = \"drop\"\n").unwrap();
    let config = config.display().to_string();
    let binary = Daemon::binary().display().to_string();
    let commands = [
        format!("{binary} status --control-socket {socket}"),
        format!("{binary} deny list --control-socket {socket}"),
        format!("{binary} check-config --config {config}"),
    ];
    // top's JSON, for scripts.
    let (code, stdout, stderr) = port25d(&[
        OsStr::new("top"),
        OsStr::new("--once"),
        OsStr::new("--json"),
        OsStr::new("--pin-dir"),
        lab.bpf.pin_dir().as_os_str(),
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: exit {code} {stdout}{stderr}"));
    assert!(
        json["tracked"].is_u64() && json["rows"].is_array(),
        "{stdout}"
    );
    for command in &commands {
        // The reader is gone before port25d writes: its exit code, from bash's PIPESTATUS.
        let (_, stdout, stderr) = output(Command::new("bash").arg("-c").arg(format!(
            "set -o pipefail; {command} | true; echo \"exit ${{PIPESTATUS[0]}}\""
        )));
        assert!(
            stdout.trim() == "exit 0" && !stderr.contains("panicked") && stderr.is_empty(),
            "{command} into a closed pipe: {stdout}{stderr}"
        );
        let (code, _, stderr) = output(
            Command::new("bash")
                .arg("-c")
                .arg(format!("{command} > /dev/full"))
                .stderr(Stdio::piped()),
        );
        println!("{command} > /dev/full: exit {code}: {stderr}");
        assert!(
            code == 1
                && stderr.contains("writing to standard output: No space left on device")
                && !stderr.contains("panicked"),
            "{command} > /dev/full: exit {code}\n{stderr}"
        );
    }
}

#[test]
fn non_root_users_are_told_the_socket_is_root_only_and_nothing_is_touched() {
    let lab = Lab::new("nonroot");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "daemon.log");
    // A copy nobody may run (the build tree may be out of its reach), in the work directory
    // (0755, as the control socket's directory here; the socket itself is 0600).
    let binary = lab.work.join("port25d");
    fs::copy(Daemon::binary(), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let programs = xdp_program_ids(lab.gw(), "gw0");
    let as_nobody = |args: &[&str]| {
        output(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&binary)
                .args(args)
                .arg("--control-socket")
                .arg(daemon.control_socket()),
        )
    };
    let (code, stdout, stderr) = as_nobody(&["status"]);
    println!("status as nobody: exit {code}: {stderr}");
    assert!(
        code == 1
            && stderr.contains("root-only: run this as root")
            && !stdout.contains("not running"),
        "status as nobody: exit {code}\n{stdout}{stderr}"
    );
    let pins = lab.bpf.pin_dir().display().to_string();
    let (code, stdout, stderr) = as_nobody(&["detach", "--pin-dir", &pins]);
    println!("detach as nobody: exit {code}: {stderr}");
    assert!(
        code == 1 && stderr.contains("run it as root") && stdout.is_empty(),
        "detach as nobody: exit {code}\n{stdout}{stderr}"
    );
    assert_eq!(xdp_program_ids(lab.gw(), "gw0"), programs);
    assert!(!lab.delivers_from_other() && lab.delivers_from_allowed());
}

#[test]
fn a_ban_asked_while_the_daemon_restarts_waits_and_is_carried_out() {
    let lab = Lab::new("queued");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let daemon = lab.start(&cfg, "first.log");
    let socket = daemon.control_socket().to_path_buf();
    daemon.kill();
    // What fail2ban's action runs while nothing answers.
    let state = lab.work.join("state");
    let (code, stdout, stderr) = port25d(&[
        OsStr::new("deny"),
        OsStr::new("add"),
        OsStr::new("198.18.0.10"),
        OsStr::new("--ttl"),
        OsStr::new("1h"),
        OsStr::new("--control-socket"),
        socket.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
    ]);
    println!("deny add with no daemon: exit {code}: {stdout}{stderr}");
    assert!(
        code == 0 && stdout.contains("waits in"),
        "exit {code}\n{stdout}{stderr}"
    );
    let daemon = lab.start(&cfg, "second.log");
    daemon.wait_for_log("queued change", std::time::Duration::from_secs(20));
    // A runtime deny beats the configured allow: the allowed client is refused now.
    assert!(
        !lab.delivers_from_allowed(),
        "the queued ban was not carried out"
    );
    let (_, list, _) = daemon.cli(&["deny", "list"]);
    assert!(
        list.contains("198.18.0.10/32") && list.contains("expires in 59m"),
        "{list}"
    );
}

#[test]
fn monitor_from_the_command_line_is_said_where_the_mode_is_shown() {
    let lab = Lab::new("monitorflag");
    let _sink = lab.sink();
    let cfg = lab.allowing_one();
    let (pins, state, socket) = (
        lab.bpf.pin_dir(),
        lab.work.join("state"),
        lab.work.join("control.sock"),
    );
    let daemon = Daemon::start_with_args(
        lab.gw(),
        &cfg,
        port25_testkit::lab::METRICS.parse().unwrap(),
        &lab.work.join("daemon.log"),
        &[
            OsStr::new("--monitor"),
            OsStr::new("--pin-dir"),
            pins.as_os_str(),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            OsStr::new("--control-socket"),
            socket.as_os_str(),
        ],
    );
    daemon.assert_logged("--monitor on the command line overrides mode = \"enforce\"");
    let (_, status, _) = daemon.cli(&["status"]);
    assert!(
        status.contains("mode monitor (from `run --monitor`, whatever the config's mode)"),
        "{status}"
    );
    // And it is true: nothing is dropped.
    assert!(
        lab.delivers_from_other(),
        "monitor mode dropped a connection"
    );
}
