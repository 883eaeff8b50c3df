//! `port25d status`: what the running daemon is doing, or, when none answers, what the pins show
//! (a killed daemon leaves the filter enforcing).

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    control::{self, Request, Response},
    datapath::{Totals, open_pinned_counters, read_totals},
    model::{Mode, OnExit, Policy, XdpMode},
    pins::PinDir,
};

/// What `status` reports; also the control socket's answer to a status request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: Policy,
    pub mode: Mode,
    pub ports: Vec<u16>,
    pub on_exit: OnExit,
    pub pin_dir: String,
    /// Whether the pins outlive the daemon: false when their bpffs is private to its mount
    /// namespace, and a crash removes the filter.
    pub pins_persistent: bool,
    pub lists: Vec<ListStatus>,
    pub generation: u32,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub tracked_sources: usize,
    pub counters: Vec<CounterStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: XdpMode,
    pub egress_watched: bool,
    pub adopted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListStatus {
    pub list: String,
    pub from_config: usize,
    pub runtime: usize,
    pub total: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CounterStatus {
    pub iface: String,
    pub verdict: String,
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Counter rows from summed totals; `name` names an interface index.
pub fn counter_rows(totals: &Totals, name: impl Fn(u32) -> String) -> Vec<CounterStatus> {
    totals
        .iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|((ifindex, verdict, reason), c)| CounterStatus {
            iface: name(*ifindex),
            verdict: verdict.label().to_owned(),
            reason: reason.label().to_owned(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect()
}

/// Exit code of `status` when no daemon answers.
pub const NOT_RUNNING: u8 = 3;

/// Prints the status; returns the exit code (0 running, 3 not running).
pub fn status(socket: &Path, pin_dir: &Path, json: bool) -> anyhow::Result<u8> {
    if control::is_running(socket) {
        let Response::Status(status) = control::request(socket, &Request::Status)? else {
            anyhow::bail!("port25d answered something else than its status");
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", render(&status));
        }
        return Ok(0);
    }
    let pins = PinDir::existing(pin_dir);
    let links: Vec<String> = pins.all_links().into_iter().map(|(name, _)| name).collect();
    let counters = open_pinned_counters(&pins)
        .ok()
        .and_then(|map| read_totals(&map).ok())
        // Not the daemon's view: the interfaces may live in another network namespace, so they
        // are named by index only.
        .map(|totals| counter_rows(&totals, |ifindex| format!("ifindex {ifindex}")))
        .unwrap_or_default();
    if json {
        let value = serde_json::json!({
            "running": false,
            "pinned_links": links,
            "counters": counters,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "port25d is not running (nothing answers on {}).",
            socket.display()
        );
        if links.is_empty() {
            println!(
                "No filter is pinned in {}: nothing is attached.",
                pin_dir.display()
            );
        } else {
            println!(
                "The filter is still attached and enforcing its last policy (pinned in {}): {}",
                pin_dir.display(),
                links.join(", ")
            );
            println!("Start port25d to take it over, or `port25d detach` to remove it.");
        }
        if !counters.is_empty() {
            print!("{}", render_counters(&counters));
        }
    }
    Ok(NOT_RUNNING)
}

/// The human form of a status.
pub fn render(status: &Status) -> String {
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
            "  {:<14}{} XDP{}{}",
            iface.iface,
            iface.xdp_mode,
            if iface.egress_watched {
                ", egress watched"
            } else {
                ", egress not watched"
            },
            if iface.adopted {
                ", taken over from a previous daemon"
            } else {
                ""
            }
        );
    }
    let ports: Vec<String> = status.ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "policy {}, mode {}, ports {}, on exit {}",
        status.policy,
        status.mode,
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
        let _ = writeln!(
            out,
            "{} list: {} entries ({} from the config, {} runtime)",
            list.list, list.total, list.from_config, list.runtime
        );
    }
    let _ = writeln!(
        out,
        "reloads: {} ok, {} failed; policy generation {}; {} rate-limited prefixes tracked",
        status.reloads_ok, status.reloads_failed, status.generation, status.tracked_sources
    );
    out.push_str(&render_counters(&status.counters));
    out
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
