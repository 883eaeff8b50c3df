//! The egress guard, end to end: port25d's cgroup connect hooks on a child cgroup of the test's
//! own, real swaks clients joining it, smtp-sink servers on a smart-host address and on another.
//!
//! ```text
//!   client ns  cl0 198.18.0.10 ── gw0 198.18.0.1 (smart host), 198.18.0.3 (not): smtp-sink :25, :587
//!                                     2001:db8:25::1 (smart host), 2001:db8:25::3 (not)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{ffi::OsStr, fs, net::SocketAddr, time::Duration};

use port25_testkit::{
    lab::{
        BpfFs, Cgroup, Client, Daemon, Gateway, METRICS, SMTP_LAB_TOOLS, SmtpSink, WorkDir, ip,
        poll, require_tools, send_mail, send_mail_in,
    },
    require_root,
};

const CLIENT_V4: &str = "198.18.0.10";
const CLIENT_V6: &str = "2001:db8:25::10";
const SMART_V4: &str = "198.18.0.1";
const SMART_V6: &str = "2001:db8:25::1";
const OTHER_V4: &str = "198.18.0.3";
const OTHER_V6: &str = "2001:db8:25::3";

#[test]
fn only_smart_hosts_and_allowed_processes_get_outbound_smtp() {
    require_root();
    require_tools(SMTP_LAB_TOOLS);
    let work = WorkDir::new("egress");
    let bpf = BpfFs::mount("egress");
    let cgroup = Cgroup::new("egress");
    let allowed = cgroup.child("mta.service");
    let lab = Gateway::new("egress", &[Client::new("cl", 0, 10)]);
    let (gw, client) = (&lab.gw, &lab.clients[0]);
    gw.ip(&["addr", "add", &format!("{OTHER_V4}/24"), "dev", "gw0"]);
    gw.ip(&[
        "addr",
        "add",
        &format!("{OTHER_V6}/64"),
        "dev",
        "gw0",
        "nodad",
    ]);
    let listen = |addr: &str| addr.parse::<SocketAddr>().unwrap();
    let _smtp4 = SmtpSink::start(gw, listen("0.0.0.0:25"), &work);
    let _smtp6 = SmtpSink::start(gw, listen("[::]:25"), &work);
    let _submission = SmtpSink::start(gw, listen("0.0.0.0:587"), &work);

    let config = work.join("port25.toml");
    let relative = allowed
        .strip_prefix(cgroup.path().parent().unwrap())
        .unwrap()
        .display()
        .to_string();
    fs::write(
        &config,
        format!(
            "interfaces = []\n[metrics]\nlisten = \"{METRICS}\"\n[egress]\nmode = \"enforce\"\n\
             ports = [25]\nsmart_hosts = [\"{SMART_V4}\", \"{SMART_V6}/128\"]\n\
             allow_cgroups = [\"{relative}\"]\ncgroup = \"{}\"\n",
            cgroup.path().display()
        ),
    )
    .unwrap();
    let pins = bpf.pin_dir();
    let daemon = Daemon::start_with_host_mounts(
        gw,
        &config,
        METRICS.parse().unwrap(),
        &work.join("port25d.log"),
        &[OsStr::new("--pin-dir"), pins.as_os_str()],
    );
    let guarded =
        |server: &str, port| send_mail_in(cgroup.path(), client, ip(CLIENT_V4), ip(server), port);

    // From the guarded cgroup: the smart host yes, anything else on port 25 no (EPERM).
    let to_smart = guarded(SMART_V4, 25);
    assert!(
        to_smart.delivered,
        "to the smart host: {}",
        to_smart.transcript
    );
    let to_other = guarded(OTHER_V4, 25);
    assert!(
        !to_other.delivered,
        "to another host: {}",
        to_other.transcript
    );
    assert!(
        to_other.transcript.contains("Operation not permitted"),
        "refused with EPERM: {}",
        to_other.transcript
    );
    let v6 = |server: &str| send_mail_in(cgroup.path(), client, ip(CLIENT_V6), ip(server), 25);
    assert!(v6(SMART_V6).delivered, "IPv6 smart host");
    let refused6 = v6(OTHER_V6);
    assert!(
        !refused6.delivered && refused6.transcript.contains("Operation not permitted"),
        "IPv6 other host: {}",
        refused6.transcript
    );
    // Other ports are never touched; neither are processes outside the cgroup.
    assert!(
        guarded(OTHER_V4, 587).delivered,
        "submission port untouched"
    );
    let outside = send_mail(client, ip(CLIENT_V4), ip(OTHER_V4), 25);
    assert!(
        outside.delivered,
        "outside the cgroup: {}",
        outside.transcript
    );

    // A process in an allowed cgroup (or below it) may connect anywhere.
    let from_mta = send_mail_in(&allowed, client, ip(CLIENT_V4), ip(OTHER_V4), 25);
    assert!(
        from_mta.delivered,
        "allowed cgroup: {}",
        from_mta.transcript
    );

    // The refused client is named in the daemon's log.
    let named = poll(Duration::from_secs(5), || {
        let log = daemon.log();
        log.contains(&format!(
            "egress: refused outbound connect to {OTHER_V4}:25: swaks (pid"
        ))
        .then_some(log)
    });
    let log = named.unwrap_or_else(|| panic!("no egress event in the log:\n{}", daemon.log()));
    assert!(
        log.contains(&format!(
            "cgroup /{}",
            cgroup.path().file_name().unwrap().to_string_lossy()
        )),
        "the event names the cgroup: {log}"
    );
    assert!(
        log.contains(&format!("refused outbound connect to [{OTHER_V6}]:25")),
        "{log}"
    );
    drop(daemon);
}
