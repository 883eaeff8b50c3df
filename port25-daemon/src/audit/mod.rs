//! `port25d audit`: what on this host listens on, or is connected to, the SMTP ports (25, 465,
//! 587), which process holds each socket, whether the filter is attached on every interface a
//! listener can be reached through, then the mail server itself (what it offers a client, whether
//! it relays for an outsider, whether its configuration agrees with port25's), and a verdict per
//! finding saying what to do. docs/ARCHITECTURE.md, § Audit.
//!
//! The judging is pure ([`judge`], `mail.rs`); `gather.rs` reads its inputs from the
//! running system: `/proc/net/tcp{,6}` and `/proc/PID/fd` (this network namespace's sockets, every
//! process of this PID namespace), `/etc/passwd`, `getifaddrs`, the filter's whereabouts from
//! the running daemon (control socket) or, when none answers, from the pins it left, and the mail
//! server through `smtp.rs` (as a client), `outsider.rs` (the relay probe's namespace) and
//! `mta.rs` (postconf, exim -bP).

mod gather;
mod judge;
mod mail;
pub(crate) mod model;
mod mta;
mod outsider;
pub(crate) mod procnet;
mod render;
mod smtp;

pub(crate) use self::gather::MailChecks;

use crate::cli::output::{out, outln};
use std::path::Path;

use self::gather::{read_filter, read_host, read_mail};
use self::judge::judge;
use self::render::render;
use crate::control::Endpoint;

/// Exit code when a finding needs action (OPEN RELAY, NOT PROTECTED or CHECK). Errors exit 1.
pub(crate) const NEEDS_ACTION: u8 = 2;

/// Runs the audit and prints it; returns the exit code (0: nothing needs action,
/// [`NEEDS_ACTION`]: something does).
pub(crate) fn audit(
    daemon: &Endpoint,
    pin_dir: &Path,
    checks: &MailChecks,
    json: bool,
) -> anyhow::Result<u8> {
    let host = read_host()?;
    let filter = read_filter(daemon, pin_dir);
    let mail = read_mail(&host, &filter, daemon, checks);
    let report = judge(&host, &filter, mail);
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
