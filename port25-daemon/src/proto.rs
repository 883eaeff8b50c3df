//! What travels over the control socket, one JSON object per line each way: the requests, the
//! answers, and the status the daemon reports. Server (`control::serve`, `daemon/requests.rs`) and
//! client (`control::status`, `entries`, `command`) both use these; this module depends on the model alone.

use std::collections::BTreeMap;

use port25_common::{Counter, Reason, Verdict};
use serde::{Deserialize, Serialize};

use crate::model::{ListKind, Mode, OnExit, Policy, RuntimeEntry, XdpMode};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Add {
        list: ListKind,
        cidr: String,
        ttl_secs: Option<u64>,
    },
    Del {
        list: ListKind,
        cidr: String,
    },
    List {
        list: ListKind,
    },
    Status,
    /// Detach the filter, remove its pins, and exit.
    Detach,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Response {
    Ok { message: String },
    Entries(ListReply),
    Status(Box<Status>),
    Error { message: String },
}

/// `port25d allow|deny list`: the runtime entries, and how many the config brings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ListReply {
    pub list: ListKind,
    pub runtime: Vec<RuntimeEntry>,
    pub from_config: usize,
    pub now: u64,
}

/// What `status` reports; also the control socket's answer to a status request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Status {
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
pub(crate) struct InterfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: XdpMode,
    pub egress_watched: bool,
    pub adopted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ListStatus {
    pub list: String,
    pub from_config: usize,
    pub runtime: usize,
    pub total: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CounterStatus {
    pub iface: String,
    pub verdict: String,
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Counter rows from summed totals; `name` names an interface index.
pub(crate) fn counter_rows(
    totals: &BTreeMap<(u32, Verdict, Reason), Counter>,
    name: impl Fn(u32) -> String,
) -> Vec<CounterStatus> {
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
