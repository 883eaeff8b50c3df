//! `port25d audit` checks the mail server: a real Postfix (a private instance of this test's own:
//! its own main.cf, master.cf, queue and log in the work directory), configured three ways, with
//! port25d on the gateway and its egress guard on a cgroup this test made.
//!
//! ```text
//!   gw   gw0 198.18.43.1/24 ──── peer  cl0 198.18.43.2/24
//!        Postfix on 0.0.0.0:25 (+ 587 submission: STARTTLS required, 465: TLS from the first
//!        byte; SASL by a stub)
//!        port25d on gw0; [egress] smart host 198.18.43.9; the relay probe's own namespace,
//!        198.19.255.254, joined to gw by a veth pair for the audit's duration
//! ```
//!
//! 1. Well configured (relayhost the guard's smart host, mynetworks loopback, AUTH only after
//!    STARTTLS): nothing needs action, exit 0; before port25d runs, the guard being off while a
//!    relayhost is set is a CHECK naming the `[egress]` lines.
//! 2. An open relay (`mynetworks = 0.0.0.0/0`, AUTH in clear, submission without TLS): OPEN RELAY
//!    twice (the probe, the configuration), CHECK on AUTH before STARTTLS (25, 587) and on 587
//!    without STARTTLS, exit 2; `--no-relay-probe` asks nothing.
//! 3. A relayhost the guard does not allow, policy drop, no submission service: three CHECKs.
//!
//! Every probe session ends after RCPT with RSET and QUIT (Postfix's own count of the session's
//! commands shows no DATA), the queue stays empty, and no probe interface is left behind, also by
//! an audit killed mid-probe.

use std::{ffi::OsStr, fs, time::Duration};

use port25_testkit::{
    lab::{
        BpfFs, Cgroup, Client, Daemon, Gateway, Postfix, PostfixSetup, WorkDir, poll, require_tools,
    },
    require_root,
};

use super::{Audit, NEEDS_ACTION, Places};

/// The smart host the egress guard allows, and one it does not.
const SMART_HOST: &str = "198.18.43.9";
const STRANGER: &str = "198.18.43.77";

/// The probe's source address: how Postfix's log names its sessions.
const PROBE_CLIENT: &str = "unknown[198.19.255.254]";

/// The headline of the relay probe's finding for the wildcard listener.
const RELAY_PROBE: &str = "port 25 (0.0.0.0:25), asked at 198.19.255.253:25 from 198.19.255.254";

fn well_configured() -> PostfixSetup {
    PostfixSetup {
        main_cf: format!(
            "mynetworks = 127.0.0.0/8\nsmtpd_tls_auth_only = yes\nrelayhost = [{SMART_HOST}]:25"
        ),
        submission: true,
        submission_tls: true,
    }
}

fn open_relay() -> PostfixSetup {
    PostfixSetup {
        main_cf: format!(
            "mynetworks = 0.0.0.0/0\nsmtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n\
             relayhost = [{SMART_HOST}]:25"
        ),
        submission: true,
        submission_tls: false,
    }
}

fn stranger_relayhost() -> PostfixSetup {
    PostfixSetup {
        main_cf: format!(
            "mynetworks = 127.0.0.0/8\nsmtpd_tls_auth_only = yes\nrelayhost = [{STRANGER}]:25"
        ),
        submission: false,
        submission_tls: false,
    }
}

/// port25.toml: the filter on gw0 with `policy`, the guard enforcing on `cgroup`.
fn write_config(work: &WorkDir, policy: &str, cgroup: &Cgroup) -> std::path::PathBuf {
    let path = work.join("port25.toml");
    fs::write(
        &path,
        format!(
            "interfaces = [\"gw0\"]\nports = [25]\npolicy = \"{policy}\"\nmode = \"enforce\"\n\
             [egress]\nmode = \"enforce\"\nports = [25]\nsmart_hosts = [\"{SMART_HOST}\"]\n\
             cgroup = \"{}\"\n",
            cgroup.path().display()
        ),
    )
    .unwrap();
    path
}

/// The probe's sessions in Postfix's log: each `disconnect` line with its command counts.
fn probe_sessions(postfix: &Postfix) -> Vec<String> {
    postfix
        .log()
        .lines()
        .filter(|line| line.contains(&format!("disconnect from {PROBE_CLIENT}")))
        .map(str::to_owned)
        .collect()
}

/// The probe asked RCPT, then RSET and QUIT, and never DATA; nothing is queued; its interface is
/// gone. `sessions`: how many probe sessions the log should hold by now.
fn assert_probe_left_nothing(gw: &port25_testkit::lab::Netns, postfix: &Postfix, sessions: usize) {
    let seen = probe_sessions(postfix);
    assert_eq!(seen.len(), sessions, "probe sessions: {seen:#?}");
    for session in &seen {
        assert!(
            session.contains(" rcpt=") && session.contains(" rset=1 quit=1"),
            "the probe should ask RCPT then RSET and QUIT: {session}"
        );
        assert!(
            !session.contains("data=") && !session.contains("bdat="),
            "the probe sent DATA: {session}"
        );
    }
    assert!(
        postfix.queued().is_empty(),
        "the probe left mail in the queue: {:?}",
        postfix.queued()
    );
    let links = gw.ip(&["-o", "link", "show"]);
    assert!(
        !links.contains("p25audit"),
        "the probe's veth is still there:\n{links}"
    );
}

#[test]
fn audit_checks_a_real_postfix_three_ways() {
    require_root();
    require_tools(&[
        "ip", "ss", "postfix", "postconf", "openssl", "chown", "setpriv",
    ]);
    Daemon::binary();
    let work = WorkDir::new("audit-mail");
    let lab = Gateway::new("amail", &[Client::new("peer", 43, 2)]);
    let gw = &lab.gw;
    let bpffs = BpfFs::mount("amail");
    let cgroup = Cgroup::new("amail");
    let places = Places {
        pin_dir: bpffs.pin_dir(),
        socket: work.join("control.sock"),
    };
    let postfix = Postfix::start(gw, &work, &well_configured());
    let config_dir = postfix.config_dir();
    let args: [&OsStr; 2] = ["--postfix-config".as_ref(), config_dir.as_os_str()];

    // ---- 0. before port25d: a relayhost while the guard is off ------------------------------
    let audit = Audit::run_with(gw, &places, false, &args);
    audit.assert_code(NEEDS_ACTION);
    let verdict = audit.verdict(&format!(
        "relayhost [{SMART_HOST}]:25 with the egress guard off"
    ));
    assert!(
        verdict.starts_with(
            "CHECK: Postfix sends through a smart host, but outbound port 25 stays open"
        ) && verdict.contains(&format!(
            "[egress] mode = \"enforce\", smart_hosts = [\"{SMART_HOST}\"]"
        )),
        "{verdict}"
    );
    assert_probe_left_nothing(gw, &postfix, 1);

    // ---- 1. well configured, port25d on gw0 with the guard enforcing: nothing to do --------
    let config = write_config(&work, "ratelimit", &cgroup);
    let state_dir = work.join("state");
    // On the host's mounts, as on a gateway: the guard needs the cgroup2 mount.
    let mut daemon = Daemon::start_with_host_mounts(
        gw,
        None,
        &config,
        "127.0.0.1:9743".parse().unwrap(),
        &work.join("port25d.log"),
        &places.daemon_args(&state_dir),
    );
    let audit = Audit::run_with(gw, &places, false, &args);
    audit.assert_code(0);
    assert_eq!(
        audit.verdict("port 587 (0.0.0.0:587), asked at 127.0.0.1:587"),
        "ok: port 587: STARTTLS, then AUTH PLAIN LOGIN; no AUTH in clear"
    );
    assert_eq!(
        audit.verdict("port 465 (0.0.0.0:465), asked at 127.0.0.1:465"),
        "ok: port 465: TLS from the first byte, then AUTH PLAIN LOGIN; no AUTH in clear"
    );
    assert_eq!(
        audit.verdict("port 25 (0.0.0.0:25), asked at 127.0.0.1:25"),
        "ok: port 25 offers no AUTH in clear"
    );
    let relay = audit.verdict(RELAY_PROBE);
    assert!(
        relay.starts_with("ok: refused to relay for 198.19.255.254 (")
            && relay.contains("Relay access denied"),
        "{relay}"
    );
    assert_eq!(
        audit.verdict(&format!("relayhost [{SMART_HOST}]:25")),
        format!("ok: [{SMART_HOST}]:25 is a smart host of the egress guard")
    );
    assert_probe_left_nothing(gw, &postfix, 2);
    // From inside the guarded cgroup, the guard refuses the audit's own connects to port 25: it
    // says so, asks nothing there, and still asks 587, which the guard leaves alone.
    let guarded = Audit::run_in_cgroup(gw, &places, cgroup.path(), &args);
    guarded.assert_code(0);
    let refused = "info: not asked: this host refused the audit's own connect to port 25 (EPERM): port25's egress guard judges the audit as any process";
    for headline in ["port 25 (0.0.0.0:25), asked at 127.0.0.1:25", RELAY_PROBE] {
        assert!(
            guarded.verdict(headline).starts_with(refused),
            "{headline}: {}",
            guarded.out
        );
    }
    assert!(
        guarded
            .verdict("port 587 (0.0.0.0:587), asked at 127.0.0.1:587")
            .starts_with("ok: port 587: STARTTLS"),
        "{}",
        guarded.out
    );
    assert_probe_left_nothing(gw, &postfix, 2);
    // Not root: no namespace can be made, and the audit says so instead of probing.
    let out = gw
        .command(port25_testkit::lab::tool("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(Daemon::binary())
        .arg("audit")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "info: open-relay probe not run: not running as root: a network namespace cannot be made"
        ),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_probe_left_nothing(gw, &postfix, 2);

    // ---- 2. an open relay, with AUTH in clear ------------------------------------------------
    postfix.reconfigure(&open_relay());
    let audit = Audit::run_with(gw, &places, false, &args);
    audit.assert_code(NEEDS_ACTION);
    let relay = audit.verdict(RELAY_PROBE);
    assert!(
        relay.starts_with("OPEN RELAY: it accepted mail from 198.19.255.254")
            && relay.contains("(250 2.1.5 Ok)"),
        "{relay}"
    );
    assert!(
        audit
            .verdict("mynetworks holds 0.0.0.0/0")
            .starts_with(&format!(
                "OPEN RELAY: mynetworks holds 0.0.0.0/0: every address may relay through it: remove it from mynetworks in {}/main.cf",
                config_dir.display()
            )),
        "{}",
        audit.out
    );
    assert_eq!(
        audit.verdict("port 25 (0.0.0.0:25), asked at 127.0.0.1:25"),
        "CHECK: port 25 offers AUTH PLAIN LOGIN before STARTTLS: a client may send its password in clear: Postfix: smtpd_tls_auth_only = yes in main.cf"
    );
    // Submission without TLS: AUTH in clear, and no STARTTLS to protect it.
    let submission = "port 587 (0.0.0.0:587), asked at 127.0.0.1:587";
    assert_eq!(
        audit.verdict(submission),
        "CHECK: port 587 offers AUTH PLAIN LOGIN before STARTTLS: a client may send its password in clear: Postfix: smtpd_tls_auth_only = yes in main.cf"
    );
    assert!(
        audit.out.contains(
            "CHECK: port 587 offers no STARTTLS: passwords would cross in clear: Postfix: `-o smtpd_tls_security_level=encrypt` on the submission service in master.cf"
        ),
        "{}",
        audit.out
    );
    // The sixth: the guard names the audit it refused in step 1, as it would any process.
    assert!(
        audit
            .out
            .contains("6 findings need action (2 OPEN RELAY, 0 NOT PROTECTED, 4 CHECK)")
            && audit.out.contains(
                "CHECK: port25d tried outbound SMTP to servers that are not smart hosts 2 times (refused)"
            ),
        "{}",
        audit.out
    );
    // The accepted RCPT was the last thing it asked: RSET, QUIT, nothing queued.
    assert_probe_left_nothing(gw, &postfix, 3);
    assert!(
        probe_sessions(&postfix)[2].contains("mail=1 rcpt=1 rset=1 quit=1"),
        "{:?}",
        probe_sessions(&postfix)
    );
    let json = Audit::run_with(gw, &places, true, &args);
    json.assert_code(NEEDS_ACTION);
    for expected in [
        "\"level\": \"open_relay\"",
        "\"answer\": \"accepted\"",
        "\"ran\": \"yes\"",
        "\"source\": \"198.19.255.254\"",
    ] {
        assert!(
            json.out.contains(expected),
            "no {expected} in:\n{}",
            json.out
        );
    }
    assert_probe_left_nothing(gw, &postfix, 4);
    // The operator's opt-out: no probe session, and the report says it was skipped.
    let mut no_probe = args.to_vec();
    no_probe.push("--no-relay-probe".as_ref());
    let audit = Audit::run_with(gw, &places, false, &no_probe);
    audit.assert_code(NEEDS_ACTION);
    assert_eq!(
        audit.verdict("open-relay probe: not run"),
        "info: open-relay probe skipped (--no-relay-probe)"
    );
    assert_probe_left_nothing(gw, &postfix, 4);

    // ---- 3. a relayhost the guard refuses, policy drop, no submission service ---------------
    postfix.reconfigure(&stranger_relayhost());
    write_config(&work, "drop", &cgroup);
    daemon.hup();
    daemon.wait_for_log("reload by SIGHUP", Duration::from_secs(10));
    let audit = Audit::run_with(gw, &places, false, &args);
    audit.assert_code(NEEDS_ACTION);
    let verdict = audit.verdict(&format!("relayhost [{STRANGER}]:25"));
    assert!(
        verdict.starts_with(&format!(
            "CHECK: [{STRANGER}]:25 ({STRANGER} port 25) is not among [egress] smart_hosts: the guard refuses its outbound mail"
        )) && verdict.contains(&format!("add \"{STRANGER}\" to [egress] smart_hosts in port25.toml")),
        "{verdict}"
    );
    assert_eq!(
        audit.verdict(&format!(
            "{STRANGER} (the smart host [{STRANGER}]:25) sending to port 25: drop"
        )),
        format!(
            "CHECK: the inbound policy is drop and no allow entry covers {STRANGER} (the smart host [{STRANGER}]:25): mail it sends to this host is dropped: add \"{STRANGER}\" to `allow` in port25.toml (or `port25d allow add {STRANGER}`)"
        )
    );
    assert!(
        audit
            .verdict(
                "port 25 is closed to clients (policy drop), and nothing listens on 587 or 465"
            )
            .starts_with("CHECK: where will your users submit mail?"),
        "{}",
        audit.out
    );
    assert_probe_left_nothing(gw, &postfix, 5);
    drop(daemon);
}

/// A killed audit leaves no probe link: the namespace has no name, so the kernel removes it (and
/// the veth pair with it) once the process is gone. A port-25 listener that never greets holds
/// the probe long enough to kill it mid-conversation.
#[test]
fn a_killed_audit_leaves_no_probe_link() {
    require_root();
    require_tools(&["ip"]);
    let work = WorkDir::new("audit-kill");
    let lab = Gateway::new("akill", &[Client::new("peer", 44, 2)]);
    let gw = &lab.gw;
    let places = Places {
        pin_dir: work.join("no-pins"),
        socket: work.join("no-daemon.sock"),
    };
    // Connections queue in the backlog and are never accepted: no greeting, ever.
    let _silent = std::thread::scope(|scope| {
        gw.spawn_inside(scope, || std::net::TcpListener::bind("0.0.0.0:25"))
            .join()
            .unwrap()
    })
    .unwrap();
    let mut audit = gw
        .command(Daemon::binary())
        .args(["audit", "--pin-dir"])
        .arg(&places.pin_dir)
        .arg("--control-socket")
        .arg(&places.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let probing = poll(Duration::from_secs(30), || {
        gw.ip(&["-o", "link", "show"])
            .contains("p25audit")
            .then_some(())
    });
    assert!(probing.is_some(), "the probe's link never appeared");
    audit.kill().unwrap();
    audit.wait().unwrap();
    let gone = poll(Duration::from_secs(10), || {
        (!gw.ip(&["-o", "link", "show"]).contains("p25audit")).then_some(())
    });
    assert!(
        gone.is_some(),
        "a killed audit left its probe link:\n{}",
        gw.ip(&["-o", "link", "show"])
    );
}
