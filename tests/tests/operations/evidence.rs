//! Evidence before and after each change: `port25d why` agrees with the reason the live program
//! counts for real SYNs, and `port25d history` names every change of the policy and who made it,
//! across a restart.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use port25_testkit::{
    assert_mentions, frames,
    lab::{Daemon, GW_A_V4, GW_A_V6, METRICS, PacketSocket, metric_sum, poll},
};

use super::{Lab, safety::output};

/// The counted packets of `iface`, by reason.
fn counted(daemon: &Daemon, iface: &str) -> BTreeMap<String, f64> {
    let text = daemon.scrape();
    [
        "allowlisted",
        "denylisted",
        "not_allowlisted",
        "rate_limited",
        "admitted",
        "malformed",
        "syn_cookie",
    ]
    .into_iter()
    .map(|reason| {
        let n = metric_sum(
            &text,
            "port25_packets_total",
            &[("iface", iface), ("reason", reason)],
        );
        (reason.to_owned(), n)
    })
    .collect()
}

/// Sends one SYN from `source` to `port` of the gateway out of the allowed client's cl0 (so into
/// gw0's XDP program), and returns the reason the program counted it under; `None` when nothing
/// was counted within half a second (a port that is not protected).
fn counted_reason(lab: &Lab, daemon: &Daemon, source: &str, port: u16) -> Option<String> {
    let before = counted(daemon, "gw0");
    let gateway = if source.contains(':') {
        GW_A_V6
    } else {
        GW_A_V4
    };
    let frame = frames::tcp(source, port).to(gateway).build();
    thread::scope(|scope| {
        lab.allowed()
            .spawn_inside(scope, || PacketSocket::bind("cl0")?.send(&frame))
            .join()
            .unwrap()
    })
    .unwrap_or_else(|err| panic!("sending a SYN from {source}: {err}"));
    let limit = Duration::from_millis(if port == 25 { 5000 } else { 500 });
    poll(limit, || {
        let after = counted(daemon, "gw0");
        let moved: Vec<_> = after
            .iter()
            .filter(|(reason, n)| **n > before[*reason])
            .map(|(reason, n)| (reason.clone(), n - before[reason]))
            .collect();
        match moved[..] {
            [] => None,
            [(ref reason, n)] => {
                assert_eq!(n, 1.0, "one SYN from {source} counted {n} times");
                Some(reason.clone())
            }
            _ => panic!("one SYN from {source} moved {moved:?}"),
        }
    })
}

/// `port25d why --json SOURCE --port PORT`, parsed.
fn why(daemon: &Daemon, source: &str, port: u16) -> serde_json::Value {
    let (code, out, err) = daemon.cli(&["why", "--json", source, "--port", &port.to_string()]);
    assert_eq!(code, 0, "why {source}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("why --json {source}: {e}: {out}"))
}

#[test]
fn why_names_each_entry_with_its_source_and_agrees_with_the_counted_reason_of_real_syns() {
    let lab = Lab::new("why");
    fs::write(
        lab.work.join("deny.txt"),
        "# a feed\n198.19.9.0/24\n198.19.2.0/24 ; listed\n",
    )
    .unwrap();
    let cfg = lab.work.join("port25.toml");
    fs::write(
        &cfg,
        format!(
            "interfaces = [\"gw0\", \"gw1\"]\npolicy = \"ratelimit\"\n\
             [allow]\ncidrs = [\"198.19.1.0/24\", \"198.19.5.0/24\"]\n\
             [deny]\nfiles = [\"deny.txt\"]\n\
             [ratelimit]\nsyn_rate = 1\nsyn_burst = 2\n\
             [metrics]\nlisten = \"{METRICS}\"\n"
        ),
    )
    .unwrap();
    let daemon = lab.start(&cfg, "daemon.log");
    for (list, cidr, ttl) in [
        ("deny", "198.19.3.0/24", Some("1h")),
        ("allow", "198.19.4.4", None),
        ("deny", "198.19.5.5", None),
    ] {
        let mut args = vec![list, "add", cidr];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let (code, _, err) = daemon.cli(&args);
        assert_eq!(code, 0, "{list} add {cidr}: {err}");
    }

    // Each kind of entry, none, IPv6, and a port the filter does not judge.
    let cases = [
        ("198.19.1.7", 25, "allowlisted"),
        ("198.19.2.9", 25, "denylisted"),
        ("198.19.3.3", 25, "denylisted"),
        ("198.19.4.4", 25, "allowlisted"),
        ("198.19.5.5", 25, "denylisted"),
        ("198.19.5.6", 25, "allowlisted"),
        ("198.19.6.6", 25, "admitted"),
        ("2001:db8:99::1", 25, "admitted"),
    ];
    for (source, port, expected) in cases {
        let said = why(&daemon, source, port);
        let reason = said["reason"].as_str().unwrap_or("none").to_owned();
        assert_eq!(reason, expected, "why {source}: {said:#}");
        let counted = counted_reason(&lab, &daemon, source, port);
        assert_eq!(
            counted.as_deref(),
            Some(reason.as_str()),
            "why {source} said {reason}; the live program counted {counted:?}"
        );
    }
    let said = why(&daemon, "198.19.6.6", 587);
    assert_eq!(said["verdict"], "not_judged", "{said:#}");
    assert_eq!(counted_reason(&lab, &daemon, "198.19.6.6", 587), None);

    // The bucket as the kernel holds it: burst 2, one token a second. A burst of three SYNs from
    // a fresh source: two admitted, the third dropped, and `why` reads the bucket they left, as
    // many tokens as have come back since (none for the first second), whatever the machine's
    // speed.
    let burst = "198.19.8.8";
    let before = counted(&daemon, "gw0");
    let frame = frames::tcp(burst, 25).to(GW_A_V4).build();
    let sent = thread::scope(|scope| {
        lab.allowed()
            .spawn_inside(scope, || {
                let socket = PacketSocket::bind("cl0")?;
                (0..3).try_for_each(|_| socket.send(&frame))?;
                Ok::<_, std::io::Error>(Instant::now())
            })
            .join()
            .unwrap()
    })
    .unwrap();
    let asked = sent.elapsed();
    let said = why(&daemon, burst, 25);
    let answered = sent.elapsed();
    let moved = |reason: &str| {
        poll(Duration::from_secs(5), || {
            let n = counted(&daemon, "gw0")[reason] - before[reason];
            (n > 0.0).then_some(n)
        })
    };
    assert_eq!(moved("admitted"), Some(2.0));
    assert_eq!(moved("rate_limited"), Some(1.0));
    // Tokens back by then: one a second since the first SYN (its TAT two seconds ahead).
    let back = |elapsed: Duration| elapsed.as_secs().min(2);
    let tokens = said["bucket"]["tokens"].as_u64().unwrap();
    assert!(
        (back(asked)..=back(answered)).contains(&tokens),
        "why read {tokens} tokens between {asked:?} and {answered:?} after the burst: {said:#}"
    );
    let expected = if tokens == 0 {
        "rate_limited"
    } else {
        "admitted"
    };
    assert_eq!(said["reason"], expected, "{said:#}");

    // Where each fact comes from, in words.
    let text = |source: &str| {
        let (code, out, err) = daemon.cli(&["why", source]);
        assert_eq!(code, 0, "{err}");
        println!("port25d why {source}:\n{out}");
        out
    };
    let deny_file = lab.work.join("deny.txt").display().to_string();
    assert_mentions(
        &text("198.19.2.9"),
        &["DROP (denylisted)", &format!("{deny_file}:3 (deny.files)")],
    );
    let config = cfg.display().to_string();
    assert_mentions(
        &text("198.19.5.5"),
        &[
            "deny beats allow",
            "runtime entry, no expiry, added by uid 0 (root) pid",
            &format!("{config}:"),
            "(allow.cidrs)",
        ],
    );
    assert_mentions(&text("198.19.3.3"), &["runtime entry, expires in 59m"]);
    assert_mentions(
        &text("198.19.7.7"),
        &["PASS (admitted)", "bucket holds 2 of 2 tokens"],
    );
    let (code, _, err) = daemon.cli(&["why", "not-an-address"]);
    assert!(
        code == 1 && err.contains("is not an address"),
        "exit {code}: {err}"
    );
}

#[test]
fn history_names_each_change_and_who_made_it_across_a_restart() {
    let lab = Lab::new("history");
    let cfg = lab.allowing_one();
    let mut daemon = lab.start(&cfg, "first.log");
    let state = lab.work.join("state");
    let history = || {
        let (code, out, err) = output(
            Command::new(Daemon::binary())
                .args(["history", "--json", "--state-dir"])
                .arg(&state),
        );
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect::<Vec<_>>()
    };

    // A reload that adds a deny entry.
    lab.config("[allow]\ncidrs = [\"198.18.0.10/32\"]\n[deny]\ncidrs = [\"198.19.66.0/24\"]");
    daemon.hup();
    daemon.wait_for_log("reload by SIGHUP", Duration::from_secs(10));
    // Root adds an entry.
    let (code, _, err) = daemon.cli(&["allow", "add", "198.19.7.0/24", "--ttl", "1h"]);
    assert_eq!(code, 0, "{err}");
    // A non-root user cannot reach the socket (0600): the client says so, the daemon sees
    // nothing.
    let binary = lab.work.join("port25d");
    fs::copy(Daemon::binary(), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |caps: &[&str], cidr: &str| {
        output(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(caps)
                .arg(&binary)
                .args(["allow", "add", cidr, "--control-socket"])
                .arg(daemon.control_socket()),
        )
    };
    let (code, _, err) = as_nobody(&[], "198.19.8.0/24");
    assert!(
        code == 1 && err.contains("root-only: run this as root"),
        "exit {code}: {err}"
    );
    // One that can (CAP_DAC_OVERRIDE) is refused by the daemon, which logs who it was.
    let (code, _, err) = as_nobody(
        &["--inh-caps=+dac_override", "--ambient-caps=+dac_override"],
        "198.19.9.0/24",
    );
    assert!(
        code == 1 && err.contains("needs root (uid 0); you are uid 65534"),
        "exit {code}: {err}"
    );
    daemon.assert_logged("refused on the control socket, uid 65534");
    daemon.assert_logged("allow add \"198.19.9.0/24\"");
    daemon.stop();
    let daemon = lab.start(&cfg, "second.log");
    daemon.wait_for_log("start by port25d starting", Duration::from_secs(10));

    let changes = history();
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["start", "reload", "allow add", "stop", "start"],
        "{changes:#?}"
    );
    let reload = &changes[1];
    assert_eq!(reload["by"]["kind"], "signal");
    assert_eq!(reload["by"]["signal"], "SIGHUP");
    assert!(
        reload["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("198.19.66.0/24")),
        "{reload:#}"
    );
    let added = &changes[2];
    assert_eq!(added["by"]["kind"], "control");
    assert_eq!(added["by"]["uid"], 0);
    assert!(added["by"]["pid"].as_i64().unwrap() > 0, "{added:#}");
    assert!(
        added["summary"].as_str().unwrap().contains("198.19.7.0/24"),
        "{added:#}"
    );
    assert_eq!(changes[3]["by"]["signal"], "SIGTERM");
    // The refused request changed nothing, and is not a change.
    assert!(!format!("{changes:?}").contains("198.19.9.0"));
    // The same lines in the log (the journal, under systemd).
    daemon.assert_logged("start by port25d starting");
    let first = fs::read_to_string(lab.work.join("first.log")).unwrap();
    assert!(
        first.contains("allow add by uid 0 (root) pid"),
        "first log:\n{first}"
    );

    // The table, and --since.
    let (code, out, err) = output(
        Command::new(Daemon::binary())
            .args(["history", "--since", "1h", "--state-dir"])
            .arg(&state),
    );
    assert_eq!(code, 0, "{err}");
    assert_mentions(
        &out,
        &[
            "reload by SIGHUP",
            "allow add by uid 0 (root) pid",
            "stop by SIGTERM",
        ],
    );
    let (code, out, _) = output(
        Command::new(Daemon::binary())
            .args(["history", "--since", "2099-01-01", "--state-dir"])
            .arg(&state),
    );
    assert!(code == 0 && out.is_empty(), "exit {code}: {out}");
}
