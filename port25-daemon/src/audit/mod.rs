//! `port25d audit`: what on this host listens on, or is connected to, the SMTP ports (25, 465,
//! 587), which process holds each socket, whether the filter is attached on every interface a
//! listener can be reached through, and a verdict per finding saying what to do.
//!
//! The judging is pure ([`judge`]); `gather.rs` reads its inputs from the
//! running system: `/proc/net/tcp{,6}` and `/proc/PID/fd` (this network namespace's sockets, every
//! process of this PID namespace), `/etc/passwd`, `getifaddrs`, and the filter's whereabouts from
//! the running daemon (control socket) or, when none answers, from the pins it left.

mod gather;
mod judge;
pub(crate) mod model;
pub(crate) mod procnet;
mod render;

use crate::cli::output::{out, outln};
use std::path::Path;

use self::gather::{read_filter, read_host};
use self::judge::judge;
use self::render::render;
use crate::control::Endpoint;

/// Exit code when a finding needs action (NOT PROTECTED or CHECK). Errors exit 1.
pub(crate) const NEEDS_ACTION: u8 = 2;

/// Runs the audit and prints it; returns the exit code (0: nothing needs action,
/// [`NEEDS_ACTION`]: something does).
pub(crate) fn audit(daemon: &Endpoint, pin_dir: &Path, json: bool) -> anyhow::Result<u8> {
    let host = read_host()?;
    let filter = read_filter(daemon, pin_dir);
    let report = judge(&host, &filter);
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", render(&report));
    }
    Ok(if report.summary.needs_action {
        NEEDS_ACTION
    } else {
        0
    })
}
