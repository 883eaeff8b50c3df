//! `port25d status`: what the running daemon is doing, or, when none answers, what the pins show
//! (a killed daemon leaves the filter enforcing).

use std::{fmt::Write as _, path::Path};

use super::output::{out, outln};

use serde::Serialize;

use crate::{
    control::{self, Endpoint, Probe},
    datapath::Counters,
    model::EgressMode,
    pins::PinDir,
    proto::{CounterStatus, CrowdsecStatus, EgressStatus, Status, counter_rows},
    text::counted,
};

/// Exit code of `status` when no daemon answers.
pub(super) const NOT_RUNNING: u8 = 3;

/// `status --json`, one schema whether a daemon answers or not: `running`, the pinned links and
/// the counters always; the daemon's own fields (version, pid, interfaces, policy, …) when it runs.
#[derive(Serialize)]
struct Report<'a> {
    running: bool,
    pinned_links: Vec<String>,
    /// The counters from the pins, when no daemon reports its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<&'a [CounterStatus]>,
    #[serde(flatten)]
    daemon: Option<&'a Status>,
}

fn pinned_links(pin_dir: &Path) -> Vec<String> {
    PinDir::existing(pin_dir)
        .all_links()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// Prints the status; returns the exit code (0 running, 3 not running).
pub(super) fn status(daemon: &Endpoint, pin_dir: &Path, json: bool) -> anyhow::Result<u8> {
    let socket = &daemon.socket;
    match control::probe(socket) {
        Probe::Listening => {}
        Probe::RootOnly => anyhow::bail!(
            "the control socket {} is root-only: run this as root",
            socket.display()
        ),
        Probe::Absent => return not_running(socket, pin_dir, json),
    }
    let status = control::status(daemon)?;
    if json {
        let report = Report {
            running: true,
            pinned_links: pinned_links(Path::new(&status.pin_dir)),
            counters: None,
            daemon: Some(&status),
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", render(&status));
    }
    Ok(0)
}

/// What the pins show when nothing answers on the socket: a killed daemon's filter, or none; a
/// live daemon on another socket is named, not taken for a dead one.
fn not_running(socket: &Path, pin_dir: &Path, json: bool) -> anyhow::Result<u8> {
    if let Some(owner) = PinDir::existing(pin_dir).owner() {
        let ask = owner.control_socket.as_ref().map_or_else(
            || "its control socket could not be told".to_owned(),
            |other| format!("ask it with --control-socket {}", other.display()),
        );
        anyhow::bail!(
            "nothing answers on {}, but {owner} is running the filter pinned in {}: {ask}",
            socket.display(),
            pin_dir.display()
        );
    }
    let links = pinned_links(pin_dir);
    let counters = Counters::open_pinned(&PinDir::existing(pin_dir))
        .ok()
        .and_then(|counters| counters.read().ok())
        // Not the daemon's view: the interfaces may live in another network namespace, so they
        // are named by index only.
        .map(|totals| counter_rows(&totals, |ifindex| format!("ifindex {ifindex}")))
        .unwrap_or_default();
    if json {
        let report = Report {
            running: false,
            pinned_links: links,
            counters: Some(&counters),
            daemon: None,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "port25d is not running (nothing answers on {}).",
            socket.display()
        );
        if links.is_empty() {
            outln!(
                "No filter is pinned in {}: nothing is attached.",
                pin_dir.display()
            );
        } else {
            outln!(
                "The filter is still attached and enforcing its last policy (pinned in {}): {}",
                pin_dir.display(),
                links.join(", ")
            );
            outln!("Start port25d to take it over, or `port25d detach` to remove it.");
        }
        if !counters.is_empty() {
            out!("{}", render_counters(&counters));
        }
    }
    Ok(NOT_RUNNING)
}

/// The human form of a status.
pub(super) fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "port25d {}, pid {}, up {}, config {}",
        status.version,
        status.pid,
        humantime::format_duration(std::time::Duration::from_secs(status.uptime_secs)),
        status.config
    );
    for iface in &status.interfaces {
        let _ = writeln!(
            out,
            "  {:<14}{} XDP{}{}{}",
            iface.iface,
            iface.xdp_mode,
            if iface.in_dispatcher {
                format!(
                    " in libxdp's dispatcher (run priority {})",
                    crate::datapath::LIBXDP_RUN_PRIO
                )
            } else {
                String::new()
            },
            match (iface.synacks_watched, iface.synack_watcher_pinned) {
                (true, true) => ", SYN-ACKs watched (pinned TCX link)",
                (true, false) => {
                    ", SYN-ACKs watched (tc filter: no TCX before Linux 6.6, so not pinned; each \
                     start replaces it)"
                }
                (false, _) => ", SYN-ACKs not watched (no handshake verification)",
            },
            if iface.adopted {
                ", taken over from a previous daemon"
            } else {
                ""
            }
        );
    }
    let now = crate::clock::now_unix();
    if let Some((config, since)) = &status.shadow {
        let _ = writeln!(
            out,
            "  shadow policy {config}, judged for {} beside the live one (`port25d shadow status`)",
            humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(*since)))
        );
    }
    for lost in &status.lost {
        let what = match &lost.iface {
            Some(iface) => format!("{iface}: XDP filter"),
            None => "egress guard".to_owned(),
        };
        let next = if status.reattach {
            match &lost.held_by {
                Some(held) => format!("{held} holds it; port25 attaches again once it is gone"),
                None => "attaching again".to_owned(),
            }
        } else {
            "reattach = false: it stays so until port25d restarts".to_owned()
        };
        let _ = writeln!(
            out,
            "  DETACHED {what} taken away {} s ago, NOT filtering: {next}",
            now.saturating_sub(lost.since)
        );
    }
    let ports: Vec<String> = status.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "policy {}, mode {}{}, ports {}, on exit {}",
        status.policy,
        status.mode,
        if status.monitor_from_command_line {
            " (from `run --monitor`, whatever the config's mode)"
        } else {
            ""
        },
        ports.join(", "),
        status.on_exit
    );
    let _ = writeln!(
        out,
        "pins in {}: {}",
        status.pin_dir,
        if status.pins_persistent {
            "on the host's bpffs, the filter outlives the daemon"
        } else {
            "NOT on the host's bpffs, the filter goes with the daemon (mount bpffs on the host, \
             or --pin-dir on one it shares)"
        }
    );
    for list in &status.lists {
        let crowdsec = if list.crowdsec > 0 {
            format!(", {} from CrowdSec", list.crowdsec)
        } else {
            String::new()
        };
        // An entry both in the config and added at run time (or banned by CrowdSec) is one
        // entry in the kernel: said, so that the parts add up.
        let parts = list.from_config + list.runtime + list.crowdsec;
        let shared = match parts.saturating_sub(list.total) {
            0 => String::new(),
            n => format!("; {n} of those listed twice"),
        };
        let _ = writeln!(
            out,
            "{} list: {} ({} from the config, {} runtime{crowdsec}{shared})",
            list.list,
            counted(list.total, "entry", "entries"),
            list.from_config,
            list.runtime
        );
    }
    let _ = writeln!(
        out,
        "reloads: {} ok, {} failed; policy generation {}; the rate limiter tracks {}",
        status.reloads_ok,
        status.reloads_failed,
        status.generation,
        counted(status.tracked_sources, "source prefix", "source prefixes")
    );
    if let Some(err) = &status.last_reload_error {
        let _ = writeln!(
            out,
            "  the last reload was REJECTED, the running policy stays: {err}"
        );
    }
    out.push_str(&render_counters(&status.counters));
    render_egress(&mut out, &status.egress);
    render_crowdsec(&mut out, status.crowdsec.as_ref());
    out
}

fn render_crowdsec(out: &mut String, crowdsec: Option<&CrowdsecStatus>) {
    let Some(cs) = crowdsec else {
        out.push_str("crowdsec: off\n");
        return;
    };
    let now = crate::clock::now_unix();
    let ago = |at: Option<u64>| {
        at.map_or_else(
            || "never".to_owned(),
            |at| format!("{} s ago", now.saturating_sub(at)),
        )
    };
    let state = match (&cs.last_error, cs.last_success) {
        (None, Some(_)) => "reachable".to_owned(),
        (None, None) => "not polled yet".to_owned(),
        (Some(err), _) => format!(
            "{} for {} polls, the bans held stay enforced: {err}",
            if cs.last_answer_refused {
                "ANSWERS REFUSED"
            } else {
                "UNREACHABLE"
            },
            cs.failures_in_a_row
        ),
    };
    let _ = writeln!(out, "crowdsec: LAPI {} {state}", cs.lapi_url);
    let _ = writeln!(
        out,
        "  last poll {}, last success {}; {} polls ok, {} failed",
        ago(cs.last_poll),
        ago(cs.last_success),
        cs.polls_ok,
        cs.polls_failed
    );
    let held: usize = cs.decisions.iter().map(|d| d.count).sum();
    let by: Vec<String> = cs
        .decisions
        .iter()
        .map(|d| format!("{} {} {}", d.count, d.origin, d.family))
        .collect();
    let skipped: Vec<String> = cs
        .skipped
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(why, n)| format!("{n} by {why}"))
        .collect();
    let _ = writeln!(
        out,
        "  decisions held: {held} on {} prefixes{}; skipped: {}",
        cs.prefixes,
        if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        },
        if skipped.is_empty() {
            "none".to_owned()
        } else {
            skipped.join(", ")
        }
    );
    if cs.overridden_count > 0 {
        let shown: Vec<String> = cs.overridden.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  allowlist overrides {} decisions (allowlisted addresses inside them are not \
             dropped): {}{}",
            cs.overridden_count,
            shown.join(", "),
            if cs.overridden_count > shown.len() {
                ", …"
            } else {
                ""
            }
        );
    }
    match &cs.reporter {
        Some(machine) => {
            let _ = writeln!(
                out,
                "  reporter: as machine {machine}, {} alerts pushed, {} failed",
                cs.alerts_ok, cs.alerts_failed
            );
        }
        None => out.push_str("  reporter: off\n"),
    }
}

fn render_egress(out: &mut String, egress: &EgressStatus) {
    if egress.mode == EgressMode::Off {
        out.push_str("egress guard: off\n");
        return;
    }
    let ports: Vec<String> = egress.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "egress guard: {} mode, ports {}, {}",
        egress.mode,
        ports.join(", "),
        match &egress.cgroup {
            Some(cgroup) if egress.adopted => {
                format!("hooks on cgroup {cgroup} (taken over from a previous daemon)")
            }
            Some(cgroup) => format!("hooks on cgroup {cgroup}"),
            None => "hooks NOT attached".to_owned(),
        }
    );
    let or_none = |items: &[String]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(out, "  smart hosts: {}", or_none(&egress.smart_hosts));
    for host in &egress.smart_host_names {
        let addrs: Vec<String> = host.addrs.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "    {} resolves to {}", host.name, addrs.join(", "));
    }
    let _ = writeln!(out, "  allowed users: {}", or_none(&egress.allow_users));
    let _ = writeln!(out, "  allowed cgroups: {}", or_none(&egress.allow_cgroups));
    if !egress.forward_interfaces.is_empty() {
        let _ = writeln!(
            out,
            "  forwarded SYNs judged on: {}",
            egress.forward_interfaces.join(", ")
        );
    }
    for (counts, what) in [
        (&egress.connects, "connects"),
        (&egress.forwarded, "forwarded SYNs"),
    ] {
        for count in counts {
            let _ = writeln!(
                out,
                "  {:<12}{:<17}{:>10} {what}",
                count.verdict, count.reason, count.count
            );
        }
    }
    let _ = writeln!(
        out,
        "  events: {} kept (`port25d egress log`), {} lost",
        egress.events_kept, egress.events_lost
    );
}

fn render_counters(rows: &[CounterStatus]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no packets judged yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<14}{:<12}{:<17}{:>14}{:>16}",
        "IFACE", "VERDICT", "REASON", "PACKETS", "BYTES"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<14}{:<12}{:<17}{:>14}{:>16}",
            row.iface, row.verdict, row.reason, row.packets, row.bytes
        );
    }
    out
}
