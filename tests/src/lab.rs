//! Network-namespace labs for the end-to-end tests: namespaces joined by veth pairs, the real
//! `port25d` attached in one of them, `smtp-sink` servers, `swaks` clients and `tcpdump` captures.
//!
//! Everything that lives longer than a call is a guard whose `Drop` cleans up, also when the test
//! panics: namespaces are deleted (with the veths and any process left inside), processes are stopped
//! (SIGTERM, then SIGKILL after a bounded wait), the work directory is removed (kept, and named on
//! stderr, when the test failed). Guards that run inside a namespace borrow its [`Netns`], so the
//! compiler makes sure the namespace outlives them.
//!
//! Helpers panic with a diagnostic (the daemon's log, the command's stderr) instead of returning
//! errors: they are for tests, where a panic is the failure report.

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::{Ipv4Net, Ipv6Net};

/// How often the `poll` loops look again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long a stopped process gets between SIGTERM (or SIGINT) and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Small process and naming helpers
// ---------------------------------------------------------------------------------------------

/// Full path of a program the labs run, looked up on PATH and in the sbin directories (smtp-sink
/// lives in /usr/sbin, which is not on every user's PATH). Panics when it is missing: a lab test
/// never skips.
pub fn tool(name: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (or not on PATH): run `cargo xtask setup`")
        })
}

/// Panics, naming the first missing one, unless every program is installed.
pub fn require_tools(names: &[&str]) {
    for name in names {
        tool(name);
    }
}

/// `p25t-<pid>-<tag>`: unique per test process, recognisable in `ip netns list` after a crash.
pub fn unique_name(tag: &str) -> String {
    format!("p25t-{}-{tag}", std::process::id())
}

/// Calls `probe` until it returns `Some` or `limit` has passed (then `None`).
pub fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Runs a command to completion; its stdout, or a description of the failure.
fn run(cmd: &mut Command) -> Result<String, String> {
    let described = format!("{cmd:?}");
    match cmd.stdin(Stdio::null()).output() {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(output) => Err(format!(
            "{described} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Err(format!("{described} could not start: {err}")),
    }
}

/// Sends `signal` to `pid`; false if there is no such process.
fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Stops a child: `signal`, a bounded wait, then SIGKILL. Its exit status (None if it could not be
/// reaped, which only happens when waitpid itself fails).
fn stop_child(child: &mut Child, signal: libc::c_int) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    send_signal(child.id(), signal);
    let exited = poll(STOP_GRACE, || child.try_wait().ok().flatten());
    if exited.is_some() {
        return exited;
    }
    eprintln!(
        "lab: process {} ignored signal {signal} for {STOP_GRACE:?}: killing it",
        child.id()
    );
    let _ = child.kill();
    child.wait().ok()
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|err| format!("<cannot read {}: {err}>", path.display()))
}

/// A file for a child's stdout and stderr together.
fn output_file(path: &Path) -> (Stdio, Stdio) {
    let file =
        File::create(path).unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
    let err = file
        .try_clone()
        .unwrap_or_else(|err| panic!("cannot clone the handle of {}: {err}", path.display()));
    (Stdio::from(file), Stdio::from(err))
}

// ---------------------------------------------------------------------------------------------
// Work directory
// ---------------------------------------------------------------------------------------------

/// A per-test directory for configs, logs, captures and mail dumps. Removed on drop, unless the test
/// is failing: then it is kept and its path printed, for the post-mortem.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(tag: &str) -> Self {
        let path = env::temp_dir().join(unique_name(tag));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        // smtp-sink drops to `nobody` before it writes its dumps: it must be able to reach them.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "lab: keeping {} (logs, configs, captures) for diagnostics",
                self.path.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("lab: warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces and veth pairs
// ---------------------------------------------------------------------------------------------

/// A network namespace made with `ip netns add`, loopback up. Dropping it stops whatever still runs
/// inside and deletes it, which deletes its veths (and so their peers) too.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `p25t-<pid>-<tag>`, deleting first a stale namespace of that name.
    pub fn new(tag: &str) -> Self {
        let name = unique_name(tag);
        delete_netns(&name);
        if let Err(err) = run(Command::new(tool("ip")).args(["netns", "add", &name])) {
            panic!("cannot create network namespace {name}: {err}");
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add the program's arguments, then spawn or run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n NAME ARGS...`, panicking with ip's error.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new(tool("ip")).args(["-n", &self.name]).args(args))
            .unwrap_or_else(|err| panic!("in namespace {}: {err}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Stops every process still in the namespace (a namespace with processes outlives `ip netns del`,
/// and so would its addresses), then deletes it. Best effort: warns and goes on.
fn delete_netns(name: &str) {
    if !netns_exists(name) {
        return;
    }
    let pids = || -> Vec<u32> {
        run(Command::new(tool("ip")).args(["netns", "pids", name]))
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let left = pids();
        if left.is_empty() {
            break;
        }
        for pid in &left {
            eprintln!("lab: stopping process {pid} left in {name} (signal {signal})");
            send_signal(*pid, signal);
        }
        poll(Duration::from_secs(3), || pids().is_empty().then_some(()));
    }
    if let Err(err) = run(Command::new(tool("ip")).args(["netns", "del", name])) {
        eprintln!("lab: warning: cannot delete namespace {name}: {err}");
    }
}

/// One end of a veth pair: its namespace, its interface name there and its addresses (with prefix
/// length). Only documentation ranges: 198.18.0.0/15 and 2001:db8::/32.
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    pub v4: Ipv4Net,
    pub v6: Ipv6Net,
}

impl<'a> VethEnd<'a> {
    /// `VethEnd::new(&gw, "gw0", "198.18.0.1/24", "2001:db8:25::1/64")`
    pub fn new(ns: &'a Netns, ifname: &'a str, v4: &str, v6: &str) -> Self {
        let v4: Ipv4Net = v4
            .parse()
            .unwrap_or_else(|err| panic!("bad IPv4 address {v4}: {err}"));
        let v6: Ipv6Net = v6
            .parse()
            .unwrap_or_else(|err| panic!("bad IPv6 address {v6}: {err}"));
        let lab_v4: Ipv4Net = "198.18.0.0/15".parse().expect("a valid CIDR");
        let lab_v6: Ipv6Net = "2001:db8::/32".parse().expect("a valid CIDR");
        assert!(
            lab_v4.contains(&v4) && lab_v6.contains(&v6),
            "lab addresses must stay in 198.18.0.0/15 and 2001:db8::/32, not {v4} / {v6}"
        );
        Self { ns, ifname, v4, v6 }
    }
}

/// Joins two namespaces by a veth pair: addresses assigned (IPv6 without duplicate address
/// detection, so it is usable at once), both links up.
pub fn veth(a: &VethEnd<'_>, b: &VethEnd<'_>) {
    a.ns.ip(&[
        "link",
        "add",
        a.ifname,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
    ]);
    for end in [a, b] {
        let (v4, v6) = (end.v4.to_string(), end.v6.to_string());
        end.ns.ip(&["addr", "add", &v4, "dev", end.ifname]);
        end.ns.ip(&["addr", "add", &v6, "dev", end.ifname, "nodad"]);
        end.ns.ip(&["link", "set", end.ifname, "up"]);
    }
}

// ---------------------------------------------------------------------------------------------
// port25d
// ---------------------------------------------------------------------------------------------

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
    /// or does not answer within 20 s.
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
        let (stdout, stderr) = output_file(log);
        let child = ns
            .command(Self::binary())
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(extra)
            .args(&defaults)
            .env("NO_COLOR", "1") // a log file, not a terminal (port25d also checks)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start port25d: {err}"));
        let mut daemon = Self {
            ns,
            child: Some(child),
            log: log.to_path_buf(),
            metrics,
            control_socket,
        };
        let ready = poll(Duration::from_secs(20), || {
            if let Some(status) = daemon.exit_status() {
                panic!(
                    "port25d exited ({status}) before its metrics endpoint answered; its log:\n{}",
                    daemon.log()
                );
            }
            daemon.try_scrape().ok()
        });
        if ready.is_none() {
            panic!(
                "port25d's metrics endpoint http://{metrics}/metrics did not answer within 20 s; its log:\n{}",
                daemon.log()
            );
        }
        daemon
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
        run(self
            .ns
            .command(tool("curl"))
            .args(["--silent", "--show-error", "--fail", "--max-time", "3"])
            .args(["--noproxy", "*"])
            .arg(format!("http://{}/metrics", self.metrics)))
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
        let target = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: every pointer is a valid NUL-terminated string; data may be NULL.
        let ret = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            let err = std::io::Error::last_os_error();
            let _ = fs::remove_dir_all(&root);
            panic!(
                "cannot mount a BPF filesystem at {}: {err}",
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

// ---------------------------------------------------------------------------------------------
// Crafted frames on the wire: threads inside a namespace, AF_PACKET sockets, link details
// ---------------------------------------------------------------------------------------------

impl Netns {
    /// Spawns a scoped thread that moves itself into this namespace (`setns`, which changes only
    /// the calling thread's network namespace) and then runs `f` there: sockets `f` opens belong
    /// to the namespace.
    pub fn spawn_inside<'scope, 'env, T, F>(
        &self,
        scope: &'scope thread::Scope<'scope, 'env>,
        f: F,
    ) -> thread::ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        use std::os::fd::AsRawFd as _;
        let path = Path::new("/run/netns").join(&self.name);
        scope.spawn(move || {
            let file = File::open(&path)
                .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
            // SAFETY: setns on a valid namespace file descriptor; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "cannot enter {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            drop(file);
            f()
        })
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.ip(&["link", "show", "dev", ifname]);
        let text = out
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no link/ether address for {ifname} in:\n{out}"));
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            *byte = parts
                .next()
                .and_then(|part| u8::from_str_radix(part, 16).ok())
                .unwrap_or_else(|| panic!("bad MAC address {text} of {ifname}"));
        }
        mac
    }

    /// A counter of `/sys/class/net/IFNAME/statistics/` in this namespace (`tx_dropped`, ...).
    pub fn link_counter(&self, ifname: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
        run(self.command(tool("cat")).arg(&path))
            .unwrap_or_else(|err| panic!("in namespace {}: {err}", self.name))
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("{path} in {}: {err}", self.name))
    }
}

/// An AF_PACKET raw socket that puts whole Ethernet frames on one interface of the calling
/// thread's network namespace (see [`Netns::spawn_inside`]). It receives nothing (protocol 0).
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    pub fn bind(ifname: &str) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_ifindex = libc::c_int::try_from(ifindex).map_err(std::io::Error::other)?;
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one frame (destination MAC first) as it is.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the buffer is valid for its length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(std::io::Error::other(format!(
                "short send: {n} of {} bytes",
                frame.len()
            ))),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// A sample of the Prometheus/OpenMetrics text format: name, labels (unescaped), value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// Parses one line; `None` for comments, blank lines and what it cannot read.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    // The value: a quoted string with \" \\ \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The value of the series `name` whose labels are exactly `labels` (in any order).
///
/// `metric(text, "port25_packets_total", &[("iface", "gw0"), ("verdict", "pass"), ("reason", "allowlisted")])`
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    wanted.sort_unstable();
    text.lines()
        .filter_map(parse_sample)
        .find(|(sample, have, _)| {
            let mut have: Vec<(&str, &str)> =
                have.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            have.sort_unstable();
            *sample == name && have == wanted
        })
        .map(|(_, _, value)| value)
}

/// Every series `name`: its labels (unescaped) and value, in the order of the text.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(sample, _, _)| *sample == name)
        .map(|(_, labels, value)| (labels, value))
        .collect()
}

/// The sum of every series `name` whose labels include all of `labels` (0 if there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(sample, have, _)| {
            *sample == name
                && labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// SMTP: smtp-sink servers and swaks clients
// ---------------------------------------------------------------------------------------------

/// An `smtp-sink` listening on one address in a namespace, dumping every message it accepts to a
/// file, so the test can count what arrived and from whom.
pub struct SmtpSink<'a> {
    ns: &'a Netns,
    child: Option<Child>,
    listen: SocketAddr,
    dump: PathBuf,
    output: PathBuf,
}

impl<'a> SmtpSink<'a> {
    /// Starts it on `listen` (`0.0.0.0:25` is every IPv4 address, `[::]:25` every IPv6 one) and
    /// returns once it listens.
    pub fn start(ns: &'a Netns, listen: SocketAddr, work: &WorkDir) -> Self {
        let tag = format!("{}-{}", listen.ip(), listen.port()).replace(':', "_");
        // smtp-sink runs as nobody: its dump directory must be writable by everyone.
        let dir = work.join("sinks");
        fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)))
            .unwrap_or_else(|err| panic!("cannot prepare {}: {err}", dir.display()));
        let dump = dir.join(format!("{tag}.mbox"));
        let output = work.join(format!("smtp-sink-{tag}.log"));
        let (stdout, stderr) = output_file(&output);
        let child = ns
            .command(tool("smtp-sink"))
            .args(["-u", "nobody", "-c", "-D"])
            .arg(&dump)
            .arg(format!("inet:{listen}"))
            .arg("100")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start smtp-sink: {err}"));
        let mut sink = Self {
            ns,
            child: Some(child),
            listen,
            dump,
            output,
        };
        let listening = poll(Duration::from_secs(5), || {
            if let Some(Ok(Some(status))) = sink.child.as_mut().map(Child::try_wait) {
                panic!(
                    "smtp-sink on {listen} exited ({status}): {}",
                    read_lossy(&sink.output)
                );
            }
            sink.is_listening().then_some(())
        });
        if listening.is_none() {
            panic!(
                "smtp-sink does not listen on {listen} after 5 s: {}",
                read_lossy(&sink.output)
            );
        }
        sink
    }

    fn is_listening(&self) -> bool {
        let Ok(out) = run(self.ns.command(tool("ss")).arg("-Hltn")) else {
            return false;
        };
        out.lines().any(|line| {
            line.split_whitespace()
                .nth(3)
                .and_then(|local| local.parse::<SocketAddr>().ok())
                == Some(self.listen)
        })
    }

    /// The client address of every message received so far.
    pub fn messages(&self) -> Vec<IpAddr> {
        let Ok(text) = fs::read_to_string(&self.dump) else {
            return Vec::new(); // no message yet
        };
        text.lines()
            .filter_map(|line| line.strip_prefix("X-Client-Addr: "))
            .filter_map(|addr| addr.trim().trim_start_matches("ipv6:").parse().ok())
            .collect()
    }

    /// How many messages came from `client`.
    pub fn messages_from(&self, client: IpAddr) -> usize {
        self.messages().iter().filter(|&&a| a == client).count()
    }

    /// Waits (up to 5 s) until `expected` messages from `client` have been written out, and returns
    /// how many there are then. smtp-sink writes a message once its transaction ends, which may be a
    /// moment after the client saw "250".
    pub fn wait_for_messages(&self, client: IpAddr, expected: usize) -> usize {
        poll(Duration::from_secs(5), || {
            let got = self.messages_from(client);
            (got >= expected).then_some(got)
        })
        .unwrap_or_else(|| self.messages_from(client))
    }
}

impl Drop for SmtpSink<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM);
        }
    }
}

/// What one swaks run did.
#[derive(Debug)]
pub struct Delivery {
    /// swaks exited 0: the whole SMTP transaction succeeded.
    pub delivered: bool,
    pub elapsed: Duration,
    /// swaks' transcript (stdout and stderr), for failure messages.
    pub transcript: String,
}

/// Sends one message with swaks from `source` (an address of `ns`) to `server:port`. Bounded: swaks
/// gives up on a silent peer after 3 s (`--timeout`), and `timeout` kills it after 15 s whatever
/// happens.
pub fn send_mail(ns: &Netns, source: IpAddr, server: IpAddr, port: u16) -> Delivery {
    let started = Instant::now();
    let output = Command::new(tool("timeout"))
        .args(["--kill-after=2", "15"])
        .arg(tool("ip"))
        .args(["netns", "exec", ns.name()])
        .arg(tool("swaks"))
        .args(["--server", &server.to_string(), "--port", &port.to_string()])
        .args(["--local-interface", &source.to_string()])
        .args(["--from", "a@example.org", "--to", "b@example.net"])
        .args(["--helo", "client.example.org", "--timeout", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run swaks: {err}"));
    Delivery {
        delivered: output.status.success(),
        elapsed: started.elapsed(),
        transcript: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// tcpdump captures: the independent count of what a client sent
// ---------------------------------------------------------------------------------------------

/// A `tcpdump` writing what an interface sends (egress only) to a pcap file.
pub struct Capture<'a> {
    ns: &'a Netns,
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

/// What a capture holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub packets: u64,
    /// Sum of the frames' lengths on the wire (Ethernet header included, no FCS).
    pub bytes: u64,
    /// TCP segments with SYN set and ACK clear: connection attempts.
    pub syns: u64,
}

impl<'a> Capture<'a> {
    /// Starts capturing the packets `iface` in `ns` sends that match the pcap `filter`; returns once
    /// tcpdump is capturing.
    pub fn start(ns: &'a Netns, iface: &str, filter: &str, work: &WorkDir) -> Self {
        let tag = format!("{}-{iface}", ns.name());
        // Immediate mode, as start_directed explains: a buffered capture can miss its last packets.
        Self::start_directed(ns, iface, "out", filter, work, &tag)
    }

    /// Like [`Capture::start`], for the packets `iface` receives (`direction` "in") or sends ("out"),
    /// writing `<tag>.pcap` in the work directory. On the interface XDP is attached to, "in" sees
    /// only what XDP passed: AF_PACKET taps run after the XDP program.
    ///
    /// In immediate mode: libpcap hands each packet over as it arrives, instead of a buffer block
    /// at a time (up to a second late). Without it, packets of the last moment before [`finish`]
    /// can still sit in the ring when tcpdump stops, uncounted and unreported as dropped. Headers
    /// only (snap length 128; lengths on the wire stay exact) and an 8 MiB kernel buffer, so that
    /// a flood of small packets fits while tcpdump waits for a busy CPU.
    ///
    /// [`finish`]: Capture::finish
    pub fn start_directed(
        ns: &'a Netns,
        iface: &str,
        direction: &str,
        filter: &str,
        work: &WorkDir,
        tag: &str,
    ) -> Self {
        Self::launch(
            ns,
            iface,
            &[
                "-Q",
                direction,
                "--immediate-mode",
                "-s",
                "128",
                "-B",
                "8192",
            ],
            filter,
            work,
            tag,
        )
    }

    fn launch(
        ns: &'a Netns,
        iface: &str,
        options: &[&str],
        filter: &str,
        work: &WorkDir,
        tag: &str,
    ) -> Self {
        let file = work.join(format!("{tag}.pcap"));
        let log = work.join(format!("tcpdump-{tag}.log"));
        let (stdout, stderr) = output_file(&log);
        let child = ns
            .command(tool("tcpdump"))
            .args(["-i", iface, "-n", "-U"])
            .args(options)
            .args(["-Z", "root", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start tcpdump: {err}"));
        let mut capture = Self {
            ns,
            child: Some(child),
            file,
            log,
        };
        let listening = poll(Duration::from_secs(5), || {
            if let Some(Ok(Some(status))) = capture.child.as_mut().map(Child::try_wait) {
                panic!(
                    "tcpdump on {iface} in {} exited ({status}): {}",
                    capture.ns.name(),
                    read_lossy(&capture.log)
                );
            }
            read_lossy(&capture.log)
                .contains("listening on")
                .then_some(())
        });
        if listening.is_none() {
            panic!(
                "tcpdump on {iface} did not start within 5 s: {}",
                read_lossy(&capture.log)
            );
        }
        capture
    }

    /// Stops tcpdump (SIGINT: it flushes its file) and counts what it captured. Panics if the kernel
    /// dropped packets before tcpdump saw them: the count would not be a count.
    pub fn finish(self) -> CaptureSummary {
        let (data, file) = self.stop_and_read();
        summarize_pcap(&data).unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()))
    }

    /// Like [`Capture::finish`], with the capture time of every SYN (SYN set, ACK clear) too, in
    /// the order captured (pcap timestamps: wall-clock time since the epoch).
    pub fn finish_with_syn_times(self) -> (CaptureSummary, Vec<Duration>) {
        let (data, file) = self.stop_and_read();
        let summary = summarize_pcap(&data)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        let times = pcap_syn_times(&data)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        (summary, times)
    }

    /// Stops tcpdump, checks it lost nothing, and returns the pcap file's bytes.
    fn stop_and_read(mut self) -> (Vec<u8>, PathBuf) {
        let mut child = self.child.take().expect("a capture is finished once");
        stop_child(&mut child, libc::SIGINT);
        let log = read_lossy(&self.log);
        let dropped = log
            .lines()
            .find_map(|line| line.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "tcpdump lost packets (or did not report): {log}"
        );
        let data = fs::read(&self.file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", self.file.display()));
        (data, self.file.clone())
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGINT);
        }
    }
}

/// Counts the frames of a classic pcap file (Ethernet link type, any byte order or time resolution).
pub fn summarize_pcap(data: &[u8]) -> Result<CaptureSummary, String> {
    let mut summary = CaptureSummary::default();
    for record in pcap_records(data)? {
        summary.packets += 1;
        summary.bytes += u64::from(record.on_wire);
        if is_syn(record.frame) {
            summary.syns += 1;
        }
    }
    Ok(summary)
}

/// The capture time of every SYN (SYN set, ACK clear) of a classic pcap file, in file order.
pub fn pcap_syn_times(data: &[u8]) -> Result<Vec<Duration>, String> {
    Ok(pcap_records(data)?
        .into_iter()
        .filter(|record| is_syn(record.frame))
        .map(|record| record.time)
        .collect())
}

/// A TCP segment with SYN set and ACK clear: a connection attempt.
fn is_syn(frame: &[u8]) -> bool {
    matches!(
        etherparse::SlicedPacket::from_ethernet(frame),
        Ok(etherparse::SlicedPacket {
            transport: Some(etherparse::TransportSlice::Tcp(tcp)),
            ..
        }) if tcp.syn() && !tcp.ack()
    )
}

/// One frame of a pcap file.
struct PcapRecord<'a> {
    /// Capture time since the epoch.
    time: Duration,
    /// Length on the wire (the frame may have been cut to the snap length).
    on_wire: u32,
    frame: &'a [u8],
}

/// The records of a classic pcap file (Ethernet link type, any byte order or time resolution).
fn pcap_records(data: &[u8]) -> Result<Vec<PcapRecord<'_>>, String> {
    let header = data.get(..24).ok_or("shorter than a pcap header")?;
    let magic: [u8; 4] = header[..4].try_into().map_err(|_| "no magic")?;
    let (little, nanos) = match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        _ => match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            other => return Err(format!("not a pcap file (magic {other:#x})")),
        },
    };
    let word = |bytes: &[u8]| -> u32 {
        let bytes: [u8; 4] = bytes.try_into().unwrap_or_default();
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let link_type = word(&header[20..24]);
    if link_type != 1 {
        return Err(format!("link type {link_type}, expected Ethernet (1)"));
    }
    let mut records = Vec::new();
    let mut rest = &data[24..];
    while !rest.is_empty() {
        let record = rest.get(..16).ok_or("truncated record header")?;
        let seconds = u64::from(word(&record[..4]));
        let fraction = u64::from(word(&record[4..8]));
        let captured = usize::try_from(word(&record[8..12])).map_err(|e| e.to_string())?;
        let on_wire = word(&record[12..16]);
        let frame = rest
            .get(16..16 + captured)
            .ok_or("truncated record (tcpdump stopped mid-write?)")?;
        let time = Duration::from_secs(seconds)
            + if nanos {
                Duration::from_nanos(fraction)
            } else {
                Duration::from_micros(fraction)
            };
        records.push(PcapRecord {
            time,
            on_wire,
            frame,
        });
        rest = &rest[16 + captured..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP port25_packets TCP packets
# TYPE port25_packets counter
port25_packets_total{iface="gw0",verdict="pass",reason="allowlisted"} 17
port25_packets_total{iface="gw0",verdict="drop",reason="not_allowlisted"} 3
port25_packets_total{iface="gw1",verdict="drop",reason="not_allowlisted"} 4
port25_config_reloads_total{result="success"} 1
port25_list_entries{list="a\"b,c"} 2
port25_build_info 1
# EOF
"#;

    #[test]
    fn metric_matches_name_and_exact_labels() {
        let pass = [
            ("reason", "allowlisted"),
            ("iface", "gw0"),
            ("verdict", "pass"),
        ];
        assert_eq!(metric(TEXT, "port25_packets_total", &pass), Some(17.0));
        assert_eq!(metric(TEXT, "port25_packets", &pass), None);
        assert_eq!(
            metric(TEXT, "port25_packets_total", &[("iface", "gw0")]),
            None
        );
        assert_eq!(
            metric(
                TEXT,
                "port25_config_reloads_total",
                &[("result", "success")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(TEXT, "port25_list_entries", &[("list", "a\"b,c")]),
            Some(2.0)
        );
        assert_eq!(metric(TEXT, "port25_build_info", &[]), Some(1.0));
    }

    #[test]
    fn metric_sum_adds_matching_series() {
        assert_eq!(metric_sum(TEXT, "port25_packets_total", &[]), 24.0);
        assert_eq!(
            metric_sum(TEXT, "port25_packets_total", &[("verdict", "drop")]),
            7.0
        );
        assert_eq!(metric_sum(TEXT, "nope", &[]), 0.0);
    }

    #[test]
    fn pcap_summary_counts_frames() {
        let mut pcap = Vec::new();
        for word in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65535, 1] {
            pcap.extend_from_slice(&word.to_le_bytes());
        }
        let frame = [0u8; 60];
        for _ in 0..2 {
            for word in [0u32, 0, 60, 60] {
                pcap.extend_from_slice(&word.to_le_bytes());
            }
            pcap.extend_from_slice(&frame);
        }
        let summary = summarize_pcap(&pcap).expect("a valid pcap");
        assert_eq!(
            summary,
            CaptureSummary {
                packets: 2,
                bytes: 120,
                syns: 0
            }
        );
    }
}
