//! A fleet of two gateways sharing one LAPI: a host that floods A with connections it completes is
//! reported by A and dropped by B; raw SYNs spoofing an innocent sender, far beyond the threshold,
//! report nothing, and that sender still delivers to B.
//!
//! ```text
//!   attacker 198.18.0.66 ── gw0 ┐                              ┌ gw0 ── attacker 198.18.0.66
//!   client   198.18.1.20 ── gw1 ┤ A ── mgmt ── LAPI ── mgmt ── B ┤ gw1 ── client 198.18.1.20
//!                          (198.18.250.0/30)   (198.18.251.0/30)
//! ```

use std::{
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::*;

const ATTACKER: &str = "198.18.0.66";
/// The fleet's reporter: 100 completed handshakes within 30 s (the bucket, 40 then 20 a second,
/// admits at most 640 in that time).
const REPORT_AFTER: u32 = 100;

/// hping3 from `ns`: a SYN every `interval_us` to port 25 of `target`, for at most `secs`, from
/// `spoofed` when given.
fn hping(
    ns: &Netns,
    target: &str,
    spoofed: Option<&str>,
    (interval_us, count, secs): (u32, u32, u32),
    log: &std::path::Path,
) -> Child {
    let file = fs::File::create(log).unwrap();
    let mut cmd = ns.command(tool("timeout"));
    cmd.args(["-s", "INT", "-k", "2", &secs.to_string()])
        .arg(tool("hping3"))
        .args([
            "-q",
            "-S",
            "-p",
            "25",
            "-i",
            &format!("u{interval_us}"),
            "-c",
            &count.to_string(),
        ]);
    if let Some(source) = spoofed {
        cmd.args(["-a", source]);
    }
    cmd.arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap()
}

fn stop(children: Vec<Child>) {
    for mut child in children {
        // SIGINT to `timeout`, which passes it on to hping3 (a SIGKILL would orphan hping3).
        // SAFETY: kill(2) on the pid of a child not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let _ = child.wait();
    }
}

/// Two gateways, their sinks and daemons, and the LAPI between them.
struct Fleet {
    work: WorkDir,
    gateways: [Gateway; 2],
    mgmt: Netns,
}

impl Fleet {
    fn new() -> Self {
        require_root();
        require_tools(&[
            "ip",
            "swaks",
            "smtp-sink",
            "ss",
            "hping3",
            "timeout",
            "crowdsec",
            "cscli",
        ]);
        let clients = [Client::new("attacker", 0, 66), Client::new("client", 1, 20)];
        let fleet = Self {
            work: WorkDir::new("crowdsec-fleet"),
            gateways: [
                Gateway::new("fleet-a", &clients),
                Gateway::new("fleet-b", &clients),
            ],
            mgmt: Netns::new("fleet-lapi"),
        };
        for (i, gateway) in fleet.gateways.iter().enumerate() {
            let name = format!("to-gw{i}");
            veth(
                &VethEnd::new(
                    &fleet.mgmt,
                    &name,
                    &format!("198.18.{}.1/30", 250 + i),
                    &format!("2001:db8:{}::1/64", 250 + i),
                ),
                &VethEnd::new(
                    &gateway.gw,
                    "mgmt",
                    &format!("198.18.{}.2/30", 250 + i),
                    &format!("2001:db8:{}::2/64", 250 + i),
                ),
            );
        }
        fleet
    }

    /// Each gateway's config, with its bouncer key and watcher credentials.
    fn configs(&self, lapi: &Lapi) -> Vec<PathBuf> {
        let mut configs = Vec::new();
        for (i, name) in ["gw-a", "gw-b"].into_iter().enumerate() {
            let key = lapi.add_bouncer(&format!("port25d-{name}"));
            let password = format!("fleet-password-{name}");
            lapi.add_machine(&format!("port25d-{name}"), &password);
            let (key_file, password_file) = (
                self.work.join(format!("{name}.key")),
                self.work.join(format!("{name}.pw")),
            );
            fs::write(&key_file, key).unwrap();
            fs::write(&password_file, password).unwrap();
            let config = self.work.join(format!("{name}.toml"));
            fs::write(
                &config,
                format!(
                    "interfaces = [\"gw0\", \"gw1\"]\n[ratelimit]\nsyn_rate = 20\nsyn_burst = 40\n\
                     [metrics]\nlisten = \"{METRICS}\"\n[crowdsec]\nlapi_url = \"{}\"\n\
                     bouncer_key_file = \"{}\"\nupdate_frequency = 2\nmachine_id = \"port25d-{name}\"\n\
                     machine_password_file = \"{}\"\nreport_after = {REPORT_AFTER}\nreport_window = 30\n\
                     report_ban = \"1h\"\n",
                    lapi.url(format!("198.18.{}.1", 250 + i).parse().unwrap()),
                    key_file.display(),
                    password_file.display()
                ),
            )
            .unwrap();
            configs.push(config);
        }
        configs
    }
}

fn alerts(daemon: &Daemon, result: &str) -> f64 {
    metric(
        &daemon.scrape(),
        "port25_crowdsec_alerts_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

fn packets(daemon: &Daemon, reason: &str) -> f64 {
    metric_sum(
        &daemon.scrape(),
        "port25_packets_total",
        &[("verdict", "drop"), ("reason", reason)],
    )
}

/// Real connections from `ns` to `target`:25, opened and closed by `threads` threads until `done`
/// or `limit` (each thread at most `per_thread`); how many completed.
fn connection_flood(
    ns: &Netns,
    target: &str,
    threads: usize,
    per_thread: u64,
    limit: Duration,
    done: &AtomicBool,
) -> u64 {
    let target: SocketAddr = format!("{target}:25").parse().unwrap();
    let completed = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            ns.spawn_inside(scope, || {
                for _ in 0..per_thread {
                    if done.load(Ordering::SeqCst) || started.elapsed() > limit {
                        return;
                    }
                    // A SYN its bucket refuses is retried by the kernel after a second: give up
                    // sooner and open the next one.
                    if TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok() {
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    completed.into_inner()
}

#[test]
fn a_flood_of_real_connections_is_banned_fleet_wide_and_spoofed_syns_never_are() {
    let fleet = Fleet::new();
    let lapi = Lapi::start(
        &fleet.mgmt,
        &fleet.work,
        "lapi",
        "0.0.0.0:8080".parse().unwrap(),
    );
    let configs = fleet.configs(&lapi);
    let mut sinks = Vec::new();
    let mut daemons = Vec::new();
    for ((gateway, config), name) in fleet.gateways.iter().zip(&configs).zip(["gw-a", "gw-b"]) {
        sinks.push(SmtpSink::start(
            &gateway.gw,
            "0.0.0.0:25".parse().unwrap(),
            &fleet.work,
        ));
        daemons.push(Daemon::start(
            &gateway.gw,
            config,
            METRICS.parse().unwrap(),
            &fleet.work.join(format!("{name}.log")),
        ));
    }
    let (a, b) = (&fleet.gateways[0], &fleet.gateways[1]);
    let victim = &b.clients[1];
    assert!(send_mail(victim, ip(OTHER_V4), ip(GW_B_V4), 25).delivered);

    // 1. Spoofed: 4,000 raw SYNs at A naming the client 198.18.1.20 (40 times report_after).
    // A's SYN-ACKs reach the real client, which never asked and resets them: no handshake.
    let spoofed = hping(
        &a.clients[0],
        GW_A_V4,
        Some(OTHER_V4),
        (1_000, 4_000, 10),
        &fleet.work.join("hping-spoofed.log"),
    );
    let limited = poll(Duration::from_secs(15), || {
        let n = packets(&daemons[0], "rate_limited");
        // All but what the bucket admits in the flood's 4 s (40, then 20 a second).
        (n >= 3_500.0).then_some(n)
    });
    stop(vec![spoofed]);
    let limited = limited.expect("A rate-limits the spoofed SYNs");
    // Three looks of the reporter (every 2 s) after the flood.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        (
            alerts(&daemons[0], "success"),
            alerts(&daemons[0], "failure")
        ),
        (0.0, 0.0),
        "{limited} spoofed SYNs rate-limited must report nothing; A's log:\n{}",
        daemons[0].log()
    );
    let decisions = lapi.cscli(&["decisions", "list", "-o", "raw"]);
    assert!(
        !decisions.contains(OTHER_V4),
        "no decision on the spoofed sender:\n{decisions}"
    );
    assert!(
        send_mail(victim, ip(OTHER_V4), ip(GW_B_V4), 25).delivered,
        "the sender a spoofer named still delivers to B"
    );
    println!(
        "spoofed: {limited} SYNs naming {OTHER_V4} rate-limited at A, 0 alerts, no decision; it delivers to B"
    );

    // 2. Real: the attacker opens connections at A as fast as it can, far past its bucket. At B
    // it sends 4 SYNs a second, within its bucket: admitted until banned.
    // (Each gateway's gw0 is 198.18.0.1.)
    let probe = hping(
        &b.clients[0],
        GW_A_V4,
        None,
        (250_000, 160, 40),
        &fleet.work.join("hping-b.log"),
    );
    let done = AtomicBool::new(false);
    let flood_started = Instant::now();
    let (completed, first_drop_at_b) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            connection_flood(
                &a.clients[0],
                GW_A_V4,
                4,
                5_000,
                Duration::from_secs(30),
                &done,
            )
        });
        let first_drop = poll(Duration::from_secs(30), || {
            (packets(&daemons[1], "denylisted") > 0.0).then(|| flood_started.elapsed())
        });
        done.store(true, Ordering::SeqCst);
        (flood.join().unwrap(), first_drop)
    });
    stop(vec![probe]);
    let first_drop_at_b = first_drop_at_b.unwrap_or_else(|| {
        panic!(
            "B never dropped {ATTACKER} ({completed} connections completed at A); A's log:\n{}\nB's log:\n{}\nthe LAPI's log:\n{}",
            daemons[0].log(),
            daemons[1].log(),
            lapi.log()
        )
    });
    assert!(
        completed >= u64::from(REPORT_AFTER),
        "{completed} connections completed"
    );
    assert!(
        alerts(&daemons[0], "success") >= 1.0,
        "A reported the flood"
    );
    assert_eq!(
        held(&daemons[1], "crowdsec", "ipv4"),
        1.0,
        "B holds the alert's ban"
    );
    let (_, listed, _) = daemons[1].cli(&["deny", "list"]);
    assert!(
        listed.contains(&format!("{ATTACKER}/32")) && listed.contains("port25/syn-flood"),
        "{listed}"
    );
    // B's other clients still deliver.
    for _ in 0..3 {
        assert!(send_mail(victim, ip(OTHER_V4), ip(GW_B_V4), 25).delivered);
    }
    let decisions = lapi.cscli(&["decisions", "list", "-o", "raw"]);
    assert_eq!(
        decisions.lines().filter(|l| l.contains(ATTACKER)).count(),
        1,
        "one alert for the prefix within the window:\n{decisions}"
    );
    assert!(!decisions.contains(OTHER_V4), "{decisions}");
    println!(
        "fleet: first connection of the flood at A -> first drop at B: {:.2} s ({completed} connections completed at A; A looks every 2 s, B polls every 2 s)",
        first_drop_at_b.as_secs_f64()
    );
    let (log_a, log_b) = (daemons[0].log(), daemons[1].log());
    for line in log_a
        .lines()
        .filter(|l| l.contains("reported"))
        .chain(log_b.lines().filter(|l| l.contains("decisions added")))
    {
        println!("  {line}");
    }
    drop(sinks);
}
