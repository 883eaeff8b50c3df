//! Phase 1: a SYN flood from one address with hping3.

use super::*;

/// `N packets transmitted` from hping3's statistics.
pub(super) fn hping_transmitted(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|line| line.split_once(" packets transmitted"))
        .and_then(|(n, _)| n.trim().parse().ok())
}

/// Stops the flood (SIGINT to `timeout`, which forwards it to hping3: it prints its statistics and
/// exits) and waits for it; true if it was still running, i.e. it was not cut short by its bounds.
pub(super) fn stop_hping(child: &mut Child) -> bool {
    let running = matches!(child.try_wait(), Ok(None));
    if running {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(libc::pid_t::try_from(child.id()).unwrap(), libc::SIGINT) };
    }
    let exited = poll(Duration::from_secs(5), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    running
}
