//! One guest: QEMU with the kernel and the initramfs, its serial console read line by line for the
//! init's result lines and for the kernel's own alarms, bounded in time, powered off at the end.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What the init prints (see `init_script`).
pub(crate) const START: &str = "P25VM-START ";
pub(crate) const RESULT: &str = "P25VM-RESULT ";
pub(crate) const DONE: &str = "P25VM-DONE";

/// Lines from the kernel that mean the run is not to be trusted, whatever the tests said.
const ALARMS: &[&str] = &[
    "Kernel panic",
    "BUG:",
    "Oops",
    "soft lockup",
    "hard LOCKUP",
    "general protection fault",
    "Call Trace:",
];

/// How to run the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Accel {
    /// KVM where /dev/kvm opens and the CPU says it can (vmx or svm), TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    /// `auto` decided for this machine. /dev/kvm alone is not enough: on these machines it exists
    /// while the CPU flags say no nested virtualisation, and guests then crash or hang.
    pub(crate) fn resolve(self) -> Accel {
        match self {
            Accel::Auto => {
                let opens = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok();
                let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
                let capable = flags
                    .lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
                if opens && capable {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
            other => other,
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // Never `-cpu host` under TCG.
            Accel::Tcg | Accel::Auto => &["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// What one guest run said.
#[derive(Default)]
pub(crate) struct Run {
    /// (test binary, exit code) in the order they ran.
    pub(crate) results: Vec<(String, i32)>,
    /// Tests that started and never reported (the guest died or timed out in them).
    pub(crate) unfinished: Option<String>,
    /// Failed tests, as libtest names them ("test NAME ... FAILED"), with their binary.
    pub(crate) failed_tests: Vec<(String, String)>,
    pub(crate) alarms: Vec<String>,
    pub(crate) finished: bool,
    pub(crate) elapsed: Duration,
}

/// Boots `kernel` with `initrd`, copies the console to `log`, and gives the boot and then each test
/// binary at most `limit`: a bound per binary, not per guest, so that adding a suite or a slower
/// emulator does not make a healthy run time out while a hung test is still caught.
pub(crate) fn boot(
    kernel: &Path,
    initrd: &Path,
    accel: Accel,
    limit: Duration,
    log: &Path,
) -> Result<Run> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        // No network device: the tests make their own namespaces and veths inside the guest, and
        // nothing of theirs can leave it (nor is a NIC option ROM loaded).
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-m",
            "2048",
            "-smp",
            "2",
        ])
        .args(accel.args())
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (Debian's qemu-system-x86)")?;
    let stdout = child.stdout.take().context("qemu's console")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut file = std::fs::File::create(log)?;
    let mut run = Run::default();
    let mut deadline = started + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(file, "{line}");
                if observe(&mut run, &line) == Seen::Start {
                    deadline = Instant::now() + limit;
                }
            }
            // The console closed: qemu is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = writeln!(file, "xtask: a test binary took more than {limit:?}");
                let _ = child.kill();
                break;
            }
        }
    }
    let _ = child.wait();
    run.elapsed = started.elapsed();
    Ok(run)
}

/// Whether a console line started a test binary.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Start,
    Other,
}

fn observe(run: &mut Run, line: &str) -> Seen {
    let line = line.trim_end_matches('\r');
    if let Some(name) = line.strip_prefix(START) {
        run.unfinished = Some(name.to_owned());
        return Seen::Start;
    } else if let Some(rest) = line.strip_prefix(RESULT) {
        let mut words = rest.split_whitespace();
        if let (Some(name), Some(code)) = (words.next(), words.next()) {
            run.results
                .push((name.to_owned(), code.parse().unwrap_or(-1)));
            run.unfinished = None;
        }
    } else if let Some(test) = line
        .strip_prefix("test ")
        .and_then(|rest| rest.strip_suffix(" ... FAILED"))
    {
        let binary = run.unfinished.clone().unwrap_or_default();
        run.failed_tests.push((binary, test.to_owned()));
    } else if line.contains(DONE) {
        run.finished = true;
    } else if ALARMS.iter().any(|alarm| line.contains(alarm)) {
        run.alarms.push(line.to_owned());
    }
    Seen::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_tells_results_failed_tests_and_alarms() {
        let mut run = Run::default();
        for line in [
            "P25VM-START canary\r",
            "test vm_canary ... FAILED",
            "test policy::x ... ok",
            "P25VM-RESULT canary 101",
            "P25VM-START attach",
            "[   12.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s!",
        ] {
            let seen = observe(&mut run, line);
            assert_eq!(seen == Seen::Start, line.starts_with(START), "{line}");
        }
        assert_eq!(run.results, vec![("canary".to_owned(), 101)]);
        assert_eq!(
            run.failed_tests,
            vec![("canary".to_owned(), "vm_canary".to_owned())]
        );
        assert_eq!(run.unfinished.as_deref(), Some("attach"));
        assert_eq!(run.alarms.len(), 1);
        assert!(!run.finished);
        observe(&mut run, "P25VM-DONE");
        assert!(run.finished);
    }
}
