//! The fail2ban action, driven by a real fail2ban-server, and the documented jails.

use super::*;

/// A fail2ban-server on a scratch configuration, stopped on drop.
struct Fail2ban {
    client: PathBuf,
    conf: PathBuf,
}

impl Fail2ban {
    fn client(&self, args: &[&str]) -> Output {
        run(Command::new(&self.client)
            .arg("-c")
            .arg(&self.conf)
            .args(args))
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = Command::new(&self.client)
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
    }
}

/// The real fail2ban-server runs the action (its port25d replaced by a script that records its
/// arguments): bans for a jail's bantime and for ever (-1), IPv6, unbans, and a ban found by
/// Debian's postfix filter in a log line.
#[test]
fn fail2ban_action_bans_and_unbans_through_port25d() {
    let client = tool("fail2ban-client", "fail2ban");
    tool("fail2ban-server", "fail2ban");
    let action = fs::read_to_string(packaging().join("fail2ban/action.d/port25.conf")).unwrap();
    assert!(
        action.contains("\nport25d = /usr/sbin/port25d\n"),
        "the action's default binary path"
    );

    let dir = scratch("fail2ban");
    let conf = dir.join("conf");
    fs::create_dir_all(conf.join("action.d")).unwrap();
    fs::create_dir_all(conf.join("filter.d")).unwrap();
    fs::write(conf.join("action.d/port25.conf"), &action).unwrap();
    for filter in ["postfix.conf", "common.conf"] {
        fs::copy(
            Path::new("/etc/fail2ban/filter.d").join(filter),
            conf.join("filter.d").join(filter),
        )
        .unwrap_or_else(|e| {
            panic!("/etc/fail2ban/filter.d/{filter}: {e} (Debian package fail2ban)")
        });
    }
    let calls = dir.join("calls.log");
    let fake = dir.join("fake-port25d");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let mail_log = dir.join("mail.log");
    fs::write(&mail_log, "").unwrap();
    fs::write(
        conf.join("fail2ban.conf"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\nsyslogsocket = auto\n\
             socket = {d}/f2b.sock\npidfile = {d}/f2b.pid\ndbfile = :memory:\nallowipv6 = auto\n",
            d = dir.display()
        ),
    )
    .unwrap();
    fs::write(
        conf.join("jail.conf"),
        format!(
            "[DEFAULT]\nbackend = polling\nfilter = postfix\nmaxretry = 1\nfindtime = 10m\n\
             logpath = {log}\naction = port25[port25d={fake}]\n\n\
             [postfix]\nenabled = true\nbantime = 1h\n\n\
             [forever]\nenabled = true\nbantime = -1\n",
            log = mail_log.display(),
            fake = fake.display()
        ),
    )
    .unwrap();
    run(Command::new(&client).arg("-c").arg(&conf).arg("-t"));

    let f2b = Fail2ban {
        client: client.clone(),
        conf: conf.clone(),
    };
    f2b.client(&["-x", "start"]);
    f2b.client(&["set", "postfix", "banip", "198.18.0.5", "2001:db8::5"]);
    f2b.client(&["set", "forever", "banip", "198.18.0.6"]);
    f2b.client(&["set", "postfix", "unbanip", "198.18.0.5"]);
    // What Postfix logs for a relay attempt, stamped now (fail2ban ignores old lines): Debian's
    // postfix filter bans its client.
    let now = stdout(&run(Command::new("date").arg("+%b %e %H:%M:%S")));
    fs::write(
        &mail_log,
        format!(
            "{} gw postfix/smtpd[123]: NOQUEUE: reject: RCPT from unknown[198.18.0.9]: 554 5.7.1 \
             <x@example.org>: Relay access denied; from=<a@example.org> to=<x@example.org> \
             proto=ESMTP helo=<x>\n",
            now.trim()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected_ban = "deny add 198.18.0.9 --ttl=3600";
    while !fs::read_to_string(&calls)
        .unwrap_or_default()
        .contains(expected_ban)
    {
        assert!(
            Instant::now() < deadline,
            "fail2ban did not ban 198.18.0.9 from the log line within 30 s:\n{}",
            fs::read_to_string(dir.join("fail2ban.log")).unwrap_or_default()
        );
        sleep(Duration::from_millis(200));
    }
    drop(f2b); // stop: unbans what is still banned
    let calls = fs::read_to_string(&calls).unwrap();
    let lines: BTreeSet<&str> = calls.lines().collect();
    for expected in [
        "deny add 198.18.0.5 --ttl=3600",
        "deny add 2001:db8::5 --ttl=3600",
        "deny add 198.18.0.6 --ttl=-1",
        "deny del 198.18.0.5",
        expected_ban,
        "deny del 198.18.0.6",
        "deny del 2001:db8::5",
        "deny del 198.18.0.9",
    ] {
        assert!(
            lines.contains(expected),
            "port25d was not run as `{expected}`; calls:\n{calls}"
        );
    }
}

/// The jails the READMEs show parse with Debian's fail2ban configuration and this action.
#[test]
fn documented_fail2ban_jails_pass_the_configuration_test() {
    let client = tool("fail2ban-client", "fail2ban");
    let dir = scratch("fail2ban-docs");
    let conf = dir.join("fail2ban");
    run(Command::new("cp").arg("-r").arg("/etc/fail2ban").arg(&conf));
    // Debian enables an sshd jail whose log may not exist on a test machine; only ours matter.
    let _ = fs::remove_file(conf.join("jail.d/defaults-debian.conf"));
    fs::copy(
        packaging().join("fail2ban/action.d/port25.conf"),
        conf.join("action.d/port25.conf"),
    )
    .unwrap();
    for (i, readme) in ["fail2ban/README.md", "README.md"].iter().enumerate() {
        let text = fs::read_to_string(packaging().join(readme)).unwrap();
        let jails: Vec<&str> = text
            .split("```ini\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert!(!jails.is_empty(), "{readme} shows no jail");
        fs::write(
            conf.join(format!("jail.d/port25-{i}.local")),
            jails.join("\n"),
        )
        .unwrap();
        let out = run(Command::new(&client).arg("-c").arg(&conf).arg("-t"));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("OK")
                || stdout(&out).contains("OK: configuration test is successful"),
            "fail2ban-client -t with {readme}'s jails"
        );
        let dump = stdout(&run(Command::new(&client).arg("-c").arg(&conf).arg("-d")));
        assert!(
            dump.contains("deny add <ip> --ttl=<bantime>"),
            "{readme}: port25 action not used"
        );
        fs::remove_file(conf.join(format!("jail.d/port25-{i}.local"))).unwrap();
    }
}
