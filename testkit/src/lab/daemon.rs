//! Port25d.

use super::*;

/// How long a start may take: the verifier takes seconds per program in a TCG guest, and a
/// start in libxdp mode verifies the filter twice (as XDP and as a dispatcher's component).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running `port25d run` inside a namespace, with its log in a file. Dropping it stops it
/// (SIGTERM, bounded wait, SIGKILL) and, when the test is failing, prints its log.
pub struct Daemon<'a> {
    ns: &'a Netns,
    child: Option<Child>,
    log: PathBuf,
    metrics: SocketAddr,
    control_socket: PathBuf,
}

impl<'a> Daemon<'a> {
    /// The binary under test: `$PORT25D`, else `<workspace>/target/debug/port25d`.
    pub fn binary() -> PathBuf {
        let path = env::var_os("PORT25D")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/port25d")
            });
        assert!(
            path.is_file(),
            "port25d not found at {}: build it with `cargo build -p port25-daemon` or run `cargo xtask test`",
            path.display()
        );
        path
    }

    /// Starts `port25d run --config CONFIG --metrics-listen METRICS` in `ns`, and returns once its
    /// metrics endpoint answers (so the filter is attached). Panics with the daemon's log if it exits
    /// or does not answer within [`START_LIMIT`].
    pub fn start(ns: &'a Netns, config: &Path, metrics: SocketAddr, log: &Path) -> Self {
        Self::start_with_args(ns, config, metrics, log, &[])
    }

    /// Like [`Daemon::start`], with more arguments for `port25d run` (e.g. `--pin-dir DIR`).
    /// Unless they say otherwise, the daemon keeps its state and control socket beside its log
    /// (tests run side by side), and pins in a bpffs of its own (`ip netns exec` gives it a
    /// fresh /sys, where it mounts one).
    pub fn start_with_args(
        ns: &'a Netns,
        config: &Path,
        metrics: SocketAddr,
        log: &Path,
        extra: &[&OsStr],
    ) -> Self {
        Self::launch(ns, ns.command(Self::binary()), config, metrics, log, extra)
    }

    /// Like [`Daemon::start`] on [`METRICS`], with its log `log` in `work` and its state directory
    /// and control socket there too (`state`, `control.sock`), so that a restart under another log
    /// name finds them; pins in `pin_dir` when given.
    pub fn start_in(
        ns: &'a Netns,
        config: &Path,
        work: &WorkDir,
        log: &str,
        pin_dir: Option<&Path>,
    ) -> Self {
        let (state, socket) = (work.join("state"), work.join("control.sock"));
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--state-dir"),
            state.as_os_str(),
            OsStr::new("--control-socket"),
            socket.as_os_str(),
        ];
        if let Some(pins) = pin_dir {
            args.extend([OsStr::new("--pin-dir"), pins.as_os_str()]);
        }
        let metrics = METRICS
            .parse()
            .unwrap_or_else(|err| panic!("{METRICS}: {err}"));
        Self::start_with_args(ns, config, metrics, &work.join(log), &args)
    }

    /// Like [`Daemon::start_in`], in `bpffs`'s mount namespace: its pins (and libxdp's) are
    /// shared with the programs the test runs there, and outlive the daemon.
    pub fn start_in_bpffs(
        ns: &'a Netns,
        bpffs: &SharedBpffs,
        config: &Path,
        work: &WorkDir,
        log: &str,
    ) -> Self {
        let (state, socket) = (work.join("state"), work.join("control.sock"));
        let args = [
            OsStr::new("--state-dir"),
            state.as_os_str(),
            OsStr::new("--control-socket"),
            socket.as_os_str(),
        ];
        let metrics = METRICS
            .parse()
            .unwrap_or_else(|err| panic!("{METRICS}: {err}"));
        let command = bpffs.command(ns, Self::binary());
        Self::launch(ns, command, config, metrics, &work.join(log), &args)
    }

    /// Like [`Daemon::start_with_args`], in `ns`'s network namespace only: it sees the host's
    /// mounts (its /sys, the cgroup2 mount), as a daemon on the host does. For the egress guard.
    /// With `hosts`, it runs in a mount namespace of its own where that file is /etc/hosts (how
    /// a test gives a smart host a name without touching the machine's resolver).
    pub fn start_with_host_mounts(
        ns: &'a Netns,
        hosts: Option<&Path>,
        config: &Path,
        metrics: SocketAddr,
        log: &Path,
        extra: &[&OsStr],
    ) -> Self {
        let mut command = match hosts {
            None => Command::new(tool("nsenter")),
            Some(hosts) => {
                // Each program execs the next: the pid is port25d's.
                let mut command = Command::new(tool("unshare"));
                command
                    .args(["--mount", "--propagation", "private", "--"])
                    .arg(tool("sh"))
                    .args(["-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\""])
                    .arg(hosts)
                    .arg(tool("nsenter"));
                command
            }
        };
        command
            .arg(format!("--net=/run/netns/{}", ns.name()))
            .arg(Self::binary());
        Self::launch(ns, command, config, metrics, log, extra)
    }

    fn launch(
        ns: &'a Netns,
        mut command: Command,
        config: &Path,
        metrics: SocketAddr,
        log: &Path,
        extra: &[&OsStr],
    ) -> Self {
        let given = |flag: &str| extra.iter().position(|a| *a == OsStr::new(flag));
        let control_socket = match given("--control-socket") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => log.with_extension("sock"),
        };
        let mut defaults: Vec<std::ffi::OsString> = Vec::new();
        if given("--control-socket").is_none() {
            defaults.push("--control-socket".into());
            defaults.push(control_socket.clone().into());
        }
        if given("--state-dir").is_none() {
            defaults.push("--state-dir".into());
            defaults.push(log.with_extension("state").into());
        }
        let child = start_logged(
            command
                .arg("run")
                .arg("--config")
                .arg(config)
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                .args(extra)
                .args(&defaults)
                .env("NO_COLOR", "1"), // a log file, not a terminal (port25d also checks)
            &format!("port25d (metrics on http://{metrics}/metrics)"),
            log,
            START_LIMIT,
            || scrape(ns, metrics).is_ok(),
        );
        Self {
            ns,
            child: Some(child),
            log: log.to_path_buf(),
            metrics,
            control_socket,
        }
    }

    /// `port25d detach` where no daemon runs: removes the pins in `pin_dir` (and with them the
    /// filter they hold); panics with its stderr if it fails.
    pub fn detach_pins(pin_dir: &Path, control_socket: &Path) {
        let out = Command::new(Self::binary())
            .arg("detach")
            .arg("--pin-dir")
            .arg(pin_dir)
            .arg("--control-socket")
            .arg(control_socket)
            .output()
            .unwrap_or_else(|err| panic!("cannot run port25d detach: {err}"));
        assert!(
            out.status.success(),
            "port25d detach: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Its control socket, for `port25d allow|deny|status --control-socket`.
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    /// Runs a `port25d` client command against this daemon (`--control-socket` added): exit
    /// code, stdout, stderr.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(Self::binary())
            .args(args)
            .arg("--control-socket")
            .arg(&self.control_socket)
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|err| panic!("cannot run port25d {args:?}: {err}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Kills it with SIGKILL, as the OOM killer or a crash would, and waits for it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's process id (`ip netns exec` execs it, so this is port25d itself).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// Fails, showing the log, unless it has logged `needle`.
    #[track_caller]
    pub fn assert_logged(&self, needle: &str) {
        let log = self.log();
        assert!(
            log.contains(needle),
            "{needle:?} missing from port25d's log:\n{log}"
        );
    }

    /// Waits up to `limit` for the log to show `needle`; fails, showing the log, if it does not.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        if poll(limit, || self.log().contains(needle).then_some(())).is_none() {
            panic!(
                "{needle:?} not in port25d's log within {limit:?}:\n{}",
                self.log()
            );
        }
    }

    /// Asks it to reload its config.
    pub fn hup(&mut self) {
        assert!(
            self.is_running(),
            "port25d is not running; its log:\n{}",
            self.log()
        );
        send_signal(self.pid(), libc::SIGHUP);
    }

    /// `GET /metrics` through curl in the daemon's namespace.
    pub fn try_scrape(&self) -> Result<String, String> {
        scrape(self.ns, self.metrics)
    }

    /// The metrics text; panics with the daemon's log if the endpoint does not answer.
    pub fn scrape(&self) -> String {
        self.try_scrape().unwrap_or_else(|err| {
            panic!(
                "scraping port25d's metrics failed: {err}; its log:\n{}",
                self.log()
            )
        })
    }

    /// Stops it with SIGTERM (SIGKILL after a bounded wait) and returns how it exited.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is only stopped once");
        stop_child(&mut child, libc::SIGTERM).expect("waiting for port25d failed")
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM);
        }
        if thread::panicking() {
            eprintln!(
                "---- port25d log ({}) ----\n{}\n---- end of port25d log ----",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A private BPF filesystem for one test's pins, mounted at `/run/p25t-<pid>-<tag>/bpf`; unmounted
/// (which removes the pins) and removed on drop.
///
/// Not under /sys/fs/bpf: `ip netns exec` remounts /sys for the command it runs, so a daemon started
/// that way and a `port25d top` run from the test would see two different /sys/fs/bpf. A mount
/// under /run is the same on both sides.
pub struct BpfFs {
    root: PathBuf,
    mount: PathBuf,
}

impl BpfFs {
    pub fn mount(tag: &str) -> Self {
        let root = Path::new("/run").join(unique_name(tag));
        let mount = root.join("bpf");
        fs::create_dir_all(&mount)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", mount.display()));
        let mounted = std::process::Command::new(tool("mount"))
            .args(["-t", "bpf", "bpf"])
            .arg(&mount)
            .status();
        if !mounted.as_ref().is_ok_and(|status| status.success()) {
            let _ = fs::remove_dir_all(&root);
            panic!(
                "cannot mount a BPF filesystem at {} (mount -t bpf: {mounted:?})",
                mount.display()
            );
        }
        Self { root, mount }
    }

    /// The directory to pass as `--pin-dir` to `port25d run` and `port25d top`.
    pub fn pin_dir(&self) -> PathBuf {
        self.mount.join("port25")
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "lab: warning: cannot unmount {}: {}",
                    self.mount.display(),
                    std::io::Error::last_os_error()
                );
                return;
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.root) {
            eprintln!("lab: warning: cannot remove {}: {err}", self.root.display());
        }
    }
}

/// One row of `port25d top`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopRow {
    /// The source prefix, as printed (`198.18.2.66/32`).
    pub source: String,
    pub dropped: u64,
    pub admitted: u64,
    pub verified: bool,
}

/// Runs `port25d top --pin-dir PIN_DIR --once -n COUNT [--all]` and returns its output and rows.
pub fn port25d_top(pin_dir: &Path, all: bool, count: usize) -> (String, Vec<TopRow>) {
    let mut cmd = Command::new(Daemon::binary());
    cmd.arg("top")
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("--once")
        .args(["-n", &count.to_string()])
        .env("NO_COLOR", "1");
    if all {
        cmd.arg("--all");
    }
    let text = run(&mut cmd).unwrap_or_else(|err| panic!("port25d top: {err}"));
    let rows = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [source, dropped, admitted, _rate, verified] = fields[..] else {
                return None;
            };
            Some(TopRow {
                source: source.to_owned(),
                dropped: dropped.parse().ok()?,
                admitted: admitted.parse().ok()?,
                verified: match verified {
                    "yes" => true,
                    "no" => false,
                    _ => return None,
                },
            })
        })
        .collect();
    (text, rows)
}

/// The metrics text of the endpoint at `metrics`, fetched from inside `ns`.
fn scrape(ns: &Netns, metrics: SocketAddr) -> Result<String, String> {
    run(ns
        .command(tool("curl"))
        .args(["--silent", "--show-error", "--fail", "--max-time", "3"])
        .args(["--noproxy", "*"])
        .arg(format!("http://{metrics}/metrics")))
}

/// The XDP program ids attached to `iface` in `ns` (the kernel's view, whatever the mode).
pub fn xdp_program_ids(ns: &Netns, iface: &str) -> Vec<u32> {
    // `ip link show` prints "prog/xdp id N" per program.
    let out = ns.ip(&["link", "show", iface]);
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
        .filter_map(|w| w[2].parse().ok())
        .collect()
}

/// The verdict (XDP action) the program attached to `iface` gives `frame`: BPF_PROG_TEST_RUN on
/// the live program, with the live maps (`bpftool prog run`).
pub fn live_xdp_verdict(ns: &Netns, iface: &str, frame: &[u8], work: &WorkDir) -> u32 {
    let ids = xdp_program_ids(ns, iface);
    let [id] = ids[..] else {
        panic!("expected one XDP program on {iface}, found {ids:?}");
    };
    let input = work.join(format!("frame-{iface}.bin"));
    fs::write(&input, frame).unwrap_or_else(|err| panic!("writing {}: {err}", input.display()));
    let out = run(Command::new(tool("bpftool"))
        .args(["prog", "run", "id", &id.to_string(), "data_in"])
        .arg(&input))
    .unwrap_or_else(|err| panic!("bpftool prog run: {err}"));
    out.lines()
        // "Return value: 2, duration: 8653ns"
        .find_map(|line| line.trim().strip_prefix("Return value: "))
        .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("bpftool prog run printed no return value: {out}"))
}
