//! The systemd unit: systemd-analyze verify and security, and port25d under exactly its capabilities and system-call filter.

use port25_testkit::lab::Netns;

use super::*;

/// The packaged unit with its binary path pointed at the packaged binary (systemd-analyze
/// checks that ExecStart='s program exists), in a scratch directory; returns its path.
fn unit_copy(dir: &Path) -> PathBuf {
    let built = built();
    let unit = fs::read_to_string(built.path("/lib/systemd/system/port25d.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/port25d run --config /etc/port25/port25.toml"));
    let bin = built.path("/usr/sbin/port25d");
    let copy = dir.join("port25d.service");
    fs::write(
        &copy,
        unit.replace("/usr/sbin/port25d", bin.to_str().unwrap()),
    )
    .unwrap();
    copy
}

#[test]
fn unit_passes_systemd_analyze_verify_without_warnings() {
    let analyze = tool("systemd-analyze", "systemd");
    tool("man", "man-db");
    let dir = scratch("verify");
    let unit = unit_copy(&dir);
    // Documentation=man:port25d(8) is checked with man(1): point it at the packaged page.
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", built().path("/usr/share/man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify {}: {}\n{stderr}",
        unit.display(),
        out.status
    );
}

#[test]
fn unit_security_exposure_stays_low() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = scratch("security");
    let unit = unit_copy(&dir);
    // PID 1 need not be systemd: --offline rates the file itself.
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let text = stdout(&out);
    println!("{text}");
    let overall = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for port25d.service:")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let score: f64 = overall
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {overall:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: a hardening line of port25d.service was weakened:\n{text}"
    );
    // Every failed check is one of the accepted ones (a deleted hardening line shows up here
    // even when the rounded score does not move).
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('✗'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let unexpected: Vec<&&str> = failed
        .iter()
        .filter(|f| !ACCEPTED_EXPOSURES.iter().any(|(a, _)| a == *f))
        .collect();
    assert!(
        unexpected.is_empty(),
        "port25d.service fails hardening checks it passed before: {unexpected:?}\n{text}"
    );
    assert!(
        text.lines().filter(|l| l.starts_with('✓')).count() > 50,
        "systemd-analyze security rated too few checks:\n{text}"
    );
}

/// The values of every `Key=` line of the unit, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .collect()
}

/// The system calls a SystemCallFilter= list allows, expanded with systemd-analyze's groups.
fn allowed_syscalls(filters: &[String]) -> BTreeSet<String> {
    let dump = stdout(&run(
        Command::new(tool("systemd-analyze", "systemd")).arg("syscall-filter")
    ));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in dump.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            groups.entry(line.trim().to_owned()).or_default();
        } else if line.starts_with('#') {
            current = None;
        } else if let Some(group) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.get_mut(group).unwrap().push(item.to_owned());
            }
        }
    }
    fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        if item.starts_with('@') {
            let members = groups
                .get(item)
                .unwrap_or_else(|| panic!("systemd-analyze knows no group {item}"));
            for member in members {
                expand(member, groups, out);
            }
        } else {
            out.insert(item.to_owned());
        }
    }
    // The first line makes it an allow list; later lines add, or remove with "~" (in order).
    assert!(
        !filters.is_empty() && !filters[0].starts_with('~'),
        "{filters:?}"
    );
    let mut allowed = BTreeSet::new();
    for filter in filters {
        let (remove, items) = match filter.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, filter.as_str()),
        };
        for item in items.split_whitespace() {
            let mut set = BTreeSet::new();
            expand(item, &groups, &mut set);
            if remove {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
    }
    allowed
}

/// A namespace with a veth pair `p25a`/`p25b` inside it, for port25d to attach to.
fn netns_with_veth() -> Netns {
    let ns = Netns::new("pkg");
    ns.ip(&[
        "link", "add", "p25a", "type", "veth", "peer", "name", "p25b",
    ]);
    for dev in ["lo", "p25a", "p25b"] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    ns
}

/// The daemon's /metrics in `ns`, if it answers.
fn scrape(ns: &Netns) -> Option<String> {
    let out = ns
        .command(tool("curl", "curl"))
        .args(["-sf", "--max-time", "2", "http://127.0.0.1:9725/metrics"])
        .output()
        .ok()?;
    out.status.success().then(|| stdout(&out))
}

/// port25d run inside `ns`, started as systemd would with the unit's privileges: uid 0 with a
/// bounding set of `caps` only, no inheritable capabilities, no_new_privs. bpffs is mounted first
/// (systemd does that at boot; `ip netns exec` gives the command a fresh /sys without it).
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(
        ns: &Netns,
        caps: &[String],
        config: &Path,
        strace: Option<&Path>,
        log: &Path,
    ) -> Self {
        let bounding: Vec<String> = caps
            .iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        let mut cmd = ns.command("sh");
        cmd.args(["-c", "mount -t bpf bpf /sys/fs/bpf && exec \"$@\"", "sh"])
            .arg(tool("setpriv", "util-linux"))
            .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
            .args(["--inh-caps=-all", "--no-new-privs"]);
        if let Some(out) = strace {
            cmd.arg(tool("strace", "strace"))
                .args(["-f", "-qq", "-c", "-S", "name", "-o"])
                .arg(out);
        }
        cmd.arg(built().path("/usr/sbin/port25d"))
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(fs::File::create(log).unwrap())
            .stderr(fs::File::create(log.with_extension("err")).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
        Self {
            child,
            stderr: log.with_extension("err"),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The pid of port25d itself (under strace it is strace's only child).
    fn pid(&self, traced: bool) -> i32 {
        let pid = self.child.id();
        if !traced {
            return pid as i32;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            if let Some(child) = children.split_whitespace().next() {
                return child.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "strace started no port25d");
            sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, pid: i32, sig: &str) {
        run(Command::new("kill").args(["-s", sig, &pid.to_string()]));
    }

    /// Waits up to `secs` for the process to exit; its status, if it did.
    fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // A port25d under strace outlives a killed strace: kill it first (it is the only
            // child of the child; without strace the child is port25d).
            let pid = self.child.id();
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            for child in children.split_whitespace() {
                let _ = Command::new("kill").args(["-s", "KILL", child]).output();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls /metrics until `pred` holds; panics with the daemon's log when it exits or times out.
fn wait_metrics(
    ns: &Netns,
    daemon: &mut Daemon,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(text) = scrape(ns).filter(|t| pred(t)) {
            return text;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("port25d exited ({status}) before {what}:\n{}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within 60 s:\n{}",
            daemon.log()
        );
        sleep(Duration::from_millis(200));
    }
}

/// The unit's privileges and system-call filter, tried on the real daemon under policy synproxy
/// (IPv6 on): with exactly CapabilityBoundingSet= it loads, attaches, installs its netfilter rules,
/// serves metrics, reloads and stops cleanly, it and its children making only system calls
/// SystemCallFilter= allows; without any one of those capabilities it fails.
#[test]
fn unit_capabilities_and_syscall_filter_fit_the_daemon() {
    assert!(
        is_root(),
        "this test needs root: it attaches XDP in a network namespace (run `cargo xtask test`)"
    );
    tool("curl", "curl");
    let built = built();
    let unit = fs::read_to_string(built.path("/lib/systemd/system/port25d.service")).unwrap();
    let caps: Vec<String> = unit_values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(!caps.is_empty(), "the unit sets no CapabilityBoundingSet=");
    let filters = unit_values(&unit, "SystemCallFilter");
    let allowed = allowed_syscalls(&filters);
    assert!(
        allowed.contains("bpf") && !allowed.contains("mount"),
        "{filters:?}"
    );

    let dir = scratch("caps");
    // The packaged config, attached to the namespace's veth.
    let config = dir.join("port25.toml");
    let shipped = fs::read_to_string(built.path("/etc/port25/port25.toml")).unwrap();
    assert!(shipped.contains("\ninterfaces = []\n"));
    // With the CrowdSec bouncer on, polling a LAPI that refuses connections: its HTTP client
    // runs under the filter too, and its metrics are exported.
    let key = dir.join("bouncer.key");
    fs::write(&key, "a-key-no-lapi-knows\n").unwrap();
    let edited = shipped
        .replace("\ninterfaces = []\n", "\ninterfaces = [\"p25a\"]\n")
        .replace(
            "\nlapi_url = \"\"\n",
            "\nlapi_url = \"http://127.0.0.1:9\"\n",
        )
        .replace(
            "\nbouncer_key_file = \"\"\n",
            &format!("\nbouncer_key_file = \"{}\"\n", key.display()),
        )
        .replace("\nupdate_frequency = 10\n", "\nupdate_frequency = 1\n")
        // The policy that needs the most: nft and ip6tables-legacy-restore run as its children,
        // with its capabilities, under its system-call filter.
        .replace("\npolicy = \"ratelimit\"\n", "\npolicy = \"synproxy\"\n");
    assert!(edited.contains("127.0.0.1:9") && edited.contains("bouncer.key"));
    assert!(edited.contains("\npolicy = \"synproxy\"\n"));
    fs::write(&config, edited).unwrap();
    let ns = netns_with_veth();

    let trace = dir.join("strace.txt");
    let mut daemon = Daemon::start(&ns, &caps, &config, Some(&trace), &dir.join("run.log"));
    let metrics = wait_metrics(&ns, &mut daemon, "the filter attached to p25a", |m| {
        m.lines()
            .any(|l| l.starts_with("port25_attached{iface=\"p25a\"") && l.ends_with(" 1"))
    });
    // Every metric the dashboard and the rules use is one the daemon exports: a sample of it,
    // or its HELP line (a top-K gauge has no sample before the first drop).
    for metric in METRICS {
        assert!(
            metrics.lines().any(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            }) || metrics.contains(&format!("# HELP {metric} ")),
            "port25d does not export {metric}:\n{metrics}"
        );
    }
    let installed = |what: &str, args: &[&str]| {
        let out = ns.command(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success() && stdout(&out).contains(what),
            "policy synproxy's {what} is not installed:\n{}\n{}",
            stdout(&out),
            daemon.log()
        );
    };
    installed(
        "table inet port25",
        &["nft", "list", "table", "inet", "port25"],
    );
    installed(":PORT25 ", &["ip6tables-legacy-save", "-t", "mangle"]);
    let pid = daemon.pid(true);
    daemon.signal(pid, "HUP");
    wait_metrics(&ns, &mut daemon, "a successful reload", |m| {
        m.lines().any(|l| {
            l.starts_with("port25_config_reloads_total{result=\"success\"}") && l.ends_with(" 1")
        })
    });
    daemon.signal(pid, "TERM");
    let status = daemon
        .wait_exit(30)
        .expect("port25d did not stop within 30 s of SIGTERM");
    assert!(
        status.success(),
        "port25d stopped with {status}:\n{}",
        daemon.log()
    );

    let summary = fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<String> = summary
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|f| f.parse::<f64>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .filter(|s| s != "total")
        .collect();
    assert!(used.contains("bpf"), "strace saw no bpf():\n{summary}");
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "port25d makes system calls the unit's SystemCallFilter= refuses: {refused:?}\n{summary}"
    );

    // Minimal: without any one capability, port25d cannot load or attach.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let mut daemon = Daemon::start(
            &ns,
            &fewer,
            &config,
            None,
            &dir.join(format!("{missing}.log")),
        );
        let status = daemon.wait_exit(60);
        let attached = scrape(&ns).is_some_and(|m| m.contains("port25_attached{"));
        assert!(
            matches!(status, Some(s) if !s.success()) && !attached,
            "port25d ran without {missing} ({status:?}): drop it from CapabilityBoundingSet=\n{}",
            daemon.log()
        );
    }
}
