//! `port25d audit` on a real namespace, run inside it as an operator would on a gateway: before the
//! filter (port 25 NOT PROTECTED, exit 2), with port25d attached (exit 0, 587 open by design), with
//! a script sending mail out (CHECK, exit 2), and after the daemon was killed (the pinned filter
//! still protects, exit 0). `mail.rs`: the mail server's checks against a real Postfix.
//!
//! ```text
//!   gw   gw0 198.18.2.1/24 2001:db8:27::1/64 ──── peer  cl0 198.18.2.2/24 2001:db8:27::2/64
//!        smtp-sink 0.0.0.0:25, [::]:25, 0.0.0.0:587,         smtp-sink 198.18.2.2:25
//!        127.0.0.1:465; port25d on gw0 (phase 2 on)
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod mail;

use std::{
    ffi::OsStr,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use port25_testkit::{
    lab::{BpfFs, Client, Daemon, Gateway, Netns, SmtpSink, WorkDir, poll, require_tools, tool},
    require_root,
};

/// `port25d audit`'s exit code when a finding needs action.
const NEEDS_ACTION: i32 = 2;

/// Where this test's port25d keeps its things, and so where `audit` looks.
struct Places {
    pin_dir: PathBuf,
    socket: PathBuf,
}

impl Places {
    /// `port25d run`'s arguments that put its pins and control socket here.
    fn daemon_args<'a>(&'a self, state_dir: &'a Path) -> [&'a OsStr; 6] {
        [
            "--pin-dir".as_ref(),
            self.pin_dir.as_os_str(),
            "--state-dir".as_ref(),
            state_dir.as_os_str(),
            "--control-socket".as_ref(),
            self.socket.as_os_str(),
        ]
    }
}

/// What one `port25d audit` run printed.
struct Audit {
    code: i32,
    out: String,
    err: String,
}

impl Audit {
    /// `port25d audit --filter-only [--json]` inside `ns`: the sockets and the filter, without
    /// talking to the mail server (smtp-sink here, which takes anything).
    fn run(ns: &Netns, places: &Places, json: bool) -> Self {
        Self::run_with(ns, places, json, &["--filter-only".as_ref()])
    }

    /// `port25d audit [--json] ARGS` inside `ns`.
    fn run_with(ns: &Netns, places: &Places, json: bool, args: &[&OsStr]) -> Self {
        let label = if json { " --json" } else { "" };
        Self::finish(&mut Self::command(ns, places, json, args), label)
    }

    /// Like [`Audit::run_with`], from inside `cgroup` (where an egress guard may judge it).
    fn run_in_cgroup(ns: &Netns, places: &Places, cgroup: &Path, args: &[&OsStr]) -> Self {
        let audit = Self::command(ns, places, false, args);
        let mut cmd = Command::new(tool("sh"));
        cmd.args(["-c", "echo 0 > \"$0/cgroup.procs\" && exec \"$@\""])
            .arg(cgroup)
            .arg(audit.get_program())
            .args(audit.get_args())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        Self::finish(&mut cmd, &format!(" in {}", cgroup.display()))
    }

    fn command(ns: &Netns, places: &Places, json: bool, args: &[&OsStr]) -> Command {
        let mut cmd = ns.command(Daemon::binary());
        cmd.arg("audit")
            .args(args)
            .arg("--pin-dir")
            .arg(&places.pin_dir)
            .arg("--control-socket")
            .arg(&places.socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if json {
            cmd.arg("--json");
        }
        cmd
    }

    fn finish(cmd: &mut Command, label: &str) -> Self {
        let out = cmd.output().unwrap();
        let audit = Self {
            code: out.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        println!("---- port25d audit{label} ----\n{}", audit.out);
        audit
    }

    /// The verdict under the finding whose headline starts with `headline`.
    fn verdict(&self, headline: &str) -> &str {
        let mut lines = self.out.lines().map(str::trim);
        lines
            .by_ref()
            .find(|line| line.starts_with(headline))
            .unwrap_or_else(|| panic!("no finding {headline:?} in:\n{}", self.out));
        lines
            .find(|line| {
                ["ok", "OPEN RELAY", "NOT PROTECTED", "CHECK", "info"]
                    .iter()
                    .any(|level| line.starts_with(level))
            })
            .unwrap_or_else(|| panic!("no verdict under {headline:?} in:\n{}", self.out))
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "port25d audit exited {} (expected {code}); stdout:\n{}\nstderr:\n{}",
            self.code, self.out, self.err
        );
    }
}

/// A process that stops (SIGKILL) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(path: &Path) {
    std::fs::write(
        path,
        "interfaces = [\"gw0\"]\nports = [25]\npolicy = \"ratelimit\"\nmode = \"enforce\"\n",
    )
    .unwrap();
}

#[test]
fn audit_finds_listeners_owners_the_filter_and_outbound_smtp() {
    require_root();
    require_tools(&["ip", "smtp-sink", "ss", "curl", "perl"]);
    Daemon::binary(); // fail early, with the build hint, if it is missing
    let started = Instant::now();

    let work = WorkDir::new("audit");
    let lab = Gateway::new("audit", &[Client::new("peer", 2, 2)]);
    let (gw, peer) = (&lab.gw, &lab.clients[0]);
    let bpffs = BpfFs::mount("audit");
    let places = Places {
        pin_dir: bpffs.pin_dir(),
        socket: work.join("control.sock"),
    };
    let listen = |addr: &str| addr.parse::<SocketAddr>().unwrap();
    let _smtp_v4 = SmtpSink::start(gw, listen("0.0.0.0:25"), &work);
    let _smtp_v6 = SmtpSink::start(gw, listen("[::]:25"), &work);
    let _submission = SmtpSink::start(gw, listen("0.0.0.0:587"), &work);
    let _local = SmtpSink::start(gw, listen("127.0.0.1:465"), &work);
    let _remote_mx = SmtpSink::start(peer, listen("198.18.2.2:25"), &work);

    // ---- 1. no filter: port 25 is reachable on gw0 and nothing protects it -------------------
    let audit = Audit::run(gw, &places, false);
    audit.assert_code(NEEDS_ACTION);
    assert!(
        audit
            .out
            .contains("listening on 0.0.0.0:25: smtp-sink (pid "),
        "smtp-sink should be named as the owner:\n{}",
        audit.out
    );
    let unprotected = "NOT PROTECTED: no port25 filter is attached: run port25d on gw0 (interfaces = [\"gw0\"]) or bind the MTA to a filtered address";
    assert_eq!(audit.verdict("listening on 0.0.0.0:25:"), unprotected);
    assert_eq!(audit.verdict("listening on [::]:25:"), unprotected);
    assert_eq!(
        audit.verdict("listening on 0.0.0.0:587:"),
        "ok if it requires AUTH (submission): port25 leaves it open by design; add 587 to `ports` to filter it"
    );
    assert_eq!(
        audit.verdict("listening on 127.0.0.1:465:"),
        "ok: local only (loopback), not reachable from the network"
    );
    assert!(
        audit
            .out
            .contains("2 findings need action (2 NOT PROTECTED, 0 CHECK)"),
        "{}",
        audit.out
    );
    let json = Audit::run(gw, &places, true);
    json.assert_code(NEEDS_ACTION);
    for expected in [
        "\"level\": \"not_protected\"",
        "\"comm\": \"smtp-sink\"",
        "\"unfiltered_on\": [\n        \"gw0\"\n      ]",
        "\"source\": \"nothing\"",
        "\"needs_action\": true",
    ] {
        assert!(
            json.out.contains(expected),
            "no {expected} in:\n{}",
            json.out
        );
    }

    // ---- 2. port25d attached to gw0: 25 is filtered, 587 still open by design ----------------
    let config = work.join("port25.toml");
    write_config(&config);
    let state_dir = work.join("state");
    let daemon = Daemon::start_with_args(
        gw,
        &config,
        listen("127.0.0.1:9725"),
        &work.join("port25d.log"),
        &places.daemon_args(&state_dir),
    );
    let audit = Audit::run(gw, &places, false);
    audit.assert_code(0);
    assert!(
        audit.out.contains(&format!(
            "filter: port25d (pid {}) answers on",
            daemon.pid()
        )),
        "{}",
        audit.out
    );
    for listener in ["listening on 0.0.0.0:25:", "listening on [::]:25:"] {
        let verdict = audit.verdict(listener);
        assert!(
            verdict.starts_with("ok: filtered on gw0 (") && verdict.ends_with(" XDP)"),
            "{listener} {verdict}"
        );
    }
    assert!(
        audit
            .verdict("listening on 0.0.0.0:587:")
            .starts_with("ok if it requires AUTH (submission)"),
        "{}",
        audit.out
    );
    assert!(audit.out.contains("nothing needs action"), "{}", audit.out);
    let json = Audit::run(gw, &places, true);
    json.assert_code(0);
    assert!(json.out.contains("\"source\": \"daemon\""), "{}", json.out);

    // ---- 3. a script on the gateway talks SMTP to another host: CHECK, naming it --------------
    let script = Running(
        gw.command(tool("perl"))
            .args([
                "-MIO::Socket::INET",
                "-e",
                "my $smtp = IO::Socket::INET->new(PeerAddr => '198.18.2.2', PeerPort => 25, Timeout => 5) or die \"connect: $!\"; sleep 60",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = script.0.id(); // `ip netns exec` execs perl: this is perl's pid
    let headline = format!("to port 25: perl (pid {pid}, ");
    let audit = poll(Duration::from_secs(5), || {
        let audit = Audit::run(gw, &places, false);
        audit.out.contains(&headline).then_some(audit)
    })
    .unwrap_or_else(|| panic!("audit never showed perl's connection to port 25"));
    audit.assert_code(NEEDS_ACTION);
    assert_eq!(
        audit.verdict(&headline),
        format!(
            "CHECK: outbound SMTP from perl (pid {pid}): spam bot or a script? allow outbound 25 only to the smart host"
        )
    );
    assert!(audit.out.contains("198.18.2.2:25"), "{}", audit.out);
    drop(script);

    // ---- 4. port25d killed: the pinned filter still protects, and audit says so --------------
    daemon.kill();
    let audit = Audit::run(gw, &places, false);
    audit.assert_code(0);
    assert!(
        audit.out.contains("no port25d answers on") && audit.out.contains("pinned in"),
        "{}",
        audit.out
    );
    let verdict = audit.verdict("listening on 0.0.0.0:25:");
    assert!(
        verdict.starts_with("ok: filtered on gw0 (")
            && verdict
                .ends_with("port25d is not running: the pinned filter enforces its last policy"),
        "{verdict}"
    );

    // Leave nothing attached: `port25d detach` removes the pins the killed daemon left.
    Daemon::detach_pins(&places.pin_dir, &places.socket);
    println!("audit lab done in {:?}", started.elapsed());
}
