//! `cargo xtask build` and `cargo xtask run`: build port25d, then run it in a lab or on this host.

use std::env;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::{self, Lab};
use crate::packages::Scope;
use crate::setup;
use crate::util;

/// How long port25d gets to stop after SIGTERM (or Ctrl-C) before xtask kills it.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// `cargo build -p port25-daemon`; returns the path of port25d.
pub(crate) fn build(release: bool) -> Result<PathBuf> {
    setup::ensure_build_tools()?;
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "port25-daemon"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR"))
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let bin = util::workspace_root()
        .join(target_dir)
        .join(if release { "release" } else { "debug" })
        .join("port25d");
    if !util::is_executable(&bin) {
        bail!("cargo build succeeded but {} is not there", bin.display());
    }
    Ok(bin)
}

/// `cargo xtask run`: with no daemon args, in a throw-away lab; with them, on this host.
pub(crate) fn run(release: bool, seconds: Option<u64>, daemon_args: &[String]) -> Result<ExitCode> {
    let lab_mode = daemon_args.is_empty();
    if lab_mode && !util::is_root() {
        bail!(
            "cargo xtask run (without daemon arguments) needs root: it creates network namespaces \
             and attaches an XDP program; run it with sudo, or pass `-- --iface IF ...` to run \
             port25d on this host"
        );
    }
    if lab_mode {
        setup::ensure(Scope::Lab)?;
    }
    let bin = build(release)?;
    install_signal_handlers();

    if !lab_mode {
        let mut cmd = Command::new(&bin);
        cmd.arg("run").args(daemon_args);
        return supervise(&mut cmd, seconds);
    }

    let lab = Lab::create()?;
    if let Some(sig) = signalled() {
        bail!("interrupted by signal {sig} while creating the lab");
    }
    // Printed in the order they work in: mail flows, then a deny entry stops it.
    println!(
        "metrics: ip netns exec {gw} curl -s http://127.0.0.1:9725/metrics\n\
         status:  {bin} status --control-socket {socket} --pin-dir {pins}\n\
         top:     {bin} top --once --pin-dir {pins}\n\
         try:     ip netns exec {gw} smtp-sink -u nobody -c {gw4}:25 100 &   # servers behind the filter\n\
         \x20        ip netns exec {gw} smtp-sink -u nobody -c '[{gw6}]:25' 100 &   # (one per family)\n\
         \x20        ip netns exec {cl} swaks --server {gw4} --from a@example.org --to b@example.net\n\
         \x20        ip netns exec {cl} swaks --server {gw6} --from a@example.org --to b@example.net\n\
         deny:    {bin} deny add {cl4} --ttl 10m --control-socket {socket}   # then swaks is refused\n\
         stop:    Ctrl-C (the lab is deleted on exit)",
        gw = lab::GW_NS,
        cl = lab::CLIENT_NS,
        gw4 = lab::GW_V4,
        gw6 = lab::GW_V6,
        cl4 = lab::CLIENT_V4,
        bin = bin.display(),
        pins = lab::PIN_DIR,
        socket = lab::CONTROL_SOCKET,
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab::GW_NS]).arg(&bin).args([
        "run",
        "--iface",
        lab::GW_IF,
        "--pin-dir",
        lab::PIN_DIR,
        "--control-socket",
        lab::CONTROL_SOCKET,
        "--state-dir",
        lab::STATE_DIR,
    ]);
    let code = supervise(&mut cmd, seconds);
    drop(lab);
    code
}

/// The pid of the running daemon, for the signal handler (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The last signal xtask received (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    // SIGINT from the terminal reaches the daemon by itself (same process group); SIGTERM and
    // SIGHUP sent to xtask alone are passed on as SIGTERM so the daemon stops and the lab goes.
    if pid > 0 && sig != libc::SIGINT {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// xtask outlives the daemon on Ctrl-C, SIGTERM and SIGHUP, so that it can clean up after it.
/// (Caught signals are reset to their defaults in the child at exec.)
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: on_signal only touches atomics and calls kill, which are async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn signalled() -> Option<i32> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

fn send(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the daemon in the foreground and waits for it: stops it after `seconds` if given, kills it
/// if it does not stop within `STOP_GRACE` of being asked to, and returns its exit status.
fn supervise(cmd: &mut Command, seconds: Option<u64>) -> Result<ExitCode> {
    eprintln!("+ {}", util::display(cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", util::display(cmd)))?;
    CHILD.store(
        libc::pid_t::try_from(child.id()).unwrap_or(0),
        Ordering::SeqCst,
    );
    if signalled().is_some_and(|sig| sig != libc::SIGINT) {
        send(&child, libc::SIGTERM);
    }
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut stop_asked: Option<Instant> = None;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().context("cannot wait for port25d")? {
            break status;
        }
        let now = Instant::now();
        if stop_asked.is_none() {
            if let Some(sig) = signalled() {
                println!("xtask: got signal {sig}; waiting for port25d to stop");
                stop_asked = Some(now);
            } else if deadline.is_some_and(|d| now >= d) {
                println!(
                    "xtask: {} s elapsed: stopping port25d with SIGTERM",
                    seconds.unwrap_or_default()
                );
                send(&child, libc::SIGTERM);
                stop_asked = Some(now);
            }
        } else if stop_asked.is_some_and(|t| now.duration_since(t) > STOP_GRACE) {
            println!(
                "xtask: port25d did not stop within {} s: killing it",
                STOP_GRACE.as_secs()
            );
            send(&child, libc::SIGKILL);
            let status = child.wait().context("cannot wait for port25d")?;
            CHILD.store(0, Ordering::SeqCst);
            bail!(
                "port25d did not stop within {} s ({status})",
                STOP_GRACE.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    CHILD.store(0, Ordering::SeqCst);
    let ran = started.elapsed().as_secs_f64();
    println!("xtask: port25d exited after {ran:.1} s: {status}");
    // The signal handler passes a stop on to the daemon itself, which may exit before the loop
    // above has seen the signal: that is a stop that was asked for too.
    if let Some(s) = seconds
        && stop_asked.is_none()
        && signalled().is_none()
    {
        bail!("port25d exited after {ran:.1} s, before the {s} s of --seconds were up ({status})");
    }
    Ok(exit_code(status))
}

/// The exit code to pass on: the child's own, or 128 + signal like a shell.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_stops_the_child_with_sigterm() {
        let code = supervise(Command::new("sleep").arg("30"), Some(1)).unwrap();
        // sleep dies of SIGTERM: 128 + 15, as a shell reports it.
        assert_eq!(code, ExitCode::from(143));
    }

    #[test]
    fn exiting_before_seconds_is_an_error() {
        let err = supervise(&mut Command::new("true"), Some(30)).unwrap_err();
        assert!(err.to_string().contains("before the 30 s"), "{err}");
    }

    #[test]
    fn exit_code_is_passed_on() {
        let code = supervise(Command::new("sh").args(["-c", "exit 3"]), None).unwrap();
        assert_eq!(code, ExitCode::from(3));
    }
}
