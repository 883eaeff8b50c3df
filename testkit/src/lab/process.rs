//! Small process and naming helpers.

use super::*;

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

/// What the SMTP labs run: namespaces and sockets (iproute2), the server and the client, the
/// metrics scrape, the capture, and bounded commands.
pub const SMTP_LAB_TOOLS: &[&str] = &[
    "ip",
    "smtp-sink",
    "swaks",
    "curl",
    "tcpdump",
    "ss",
    "timeout",
];

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

/// Runs a command to completion and returns its stdout; fails the test, naming the command, its
/// exit status and stderr, if it does not succeed.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    run(cmd).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs a command to completion; its stdout, or a description of the failure.
pub(super) fn run(cmd: &mut Command) -> Result<String, String> {
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
pub(super) fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Stops a child: `signal`, a bounded wait, then SIGKILL. Its exit status (None if it could not be
/// reaped, which only happens when waitpid itself fails).
pub(super) fn stop_child(child: &mut Child, signal: libc::c_int) -> Option<ExitStatus> {
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

pub(super) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|err| format!("<cannot read {}: {err}>", path.display()))
}

/// Starts `command` (what it is: `what`) with stdin closed and stdout and stderr in `log`, and
/// waits up to `limit` for `ready`. If it exits first, or is not ready in time, it is killed and the
/// test fails with its log.
pub(super) fn start_logged(
    command: &mut Command,
    what: &str,
    log: &Path,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Child {
    let file =
        File::create(log).unwrap_or_else(|err| panic!("cannot create {}: {err}", log.display()));
    let err = file
        .try_clone()
        .unwrap_or_else(|err| panic!("cannot clone the handle of {}: {err}", log.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {what}: {err}"));
    let outcome = poll(limit, || match child.try_wait() {
        Ok(Some(status)) => Some(Err(format!("exited ({status})"))),
        _ => ready().then_some(Ok(())),
    });
    let failure = match outcome {
        Some(Ok(())) => return child,
        Some(Err(exited)) => exited,
        None => format!("was not ready within {limit:?}"),
    };
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} {failure}; its output:\n{}", read_lossy(log));
}

/// Whether the running kernel is at least `major.minor` (some attach paths depend on it: TCX, for
/// the SYN-ACK watcher's pinned link, is 6.6).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("a kernel release");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (major, minor)
}

/// The SYN-ACK watcher's pins on `ifaces` where the kernel pins it (a TCX link, 6.6+): before
/// that it is a tc filter, with no pin.
pub fn tc_synack_pins(ifaces: &[&str]) -> Vec<String> {
    if kernel_at_least(6, 6) {
        ifaces.iter().map(|i| format!("tc-synack-{i}")).collect()
    } else {
        Vec::new()
    }
}

/// Resident memory of a process, in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("cannot read /proc/{pid}/status: {err}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}
