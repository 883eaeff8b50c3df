//! What travels over the control socket, one JSON object per line each way: the requests, the
//! answers, and the status the daemon reports. Server (`control::serve`, `daemon/requests.rs`) and
//! client (`control::status`, `entries`, `command`) both use these; this module depends on the model alone.

use std::collections::BTreeMap;

use port25_common::{Counter, Reason, Verdict};
use serde::{Deserialize, Serialize};

use crate::model::{EgressMode, Hook, ListKind, Mode, OnExit, Policy, RuntimeEntry, XdpMode};

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
    /// The kept egress events numbered above `after` (0: all of them).
    EgressLog {
        after: u64,
    },
    /// Detach the filter, remove its pins, and exit.
    Detach,
    /// What the filter decides now for a SYN from `address` to `port`, and why.
    Why {
        address: String,
        port: u16,
    },
    /// Load the config file `config` (an absolute path) as the shadow policy.
    ShadowLoad {
        config: String,
    },
    ShadowStatus,
    /// Make the shadow policy the live one, as a reload to it.
    ShadowPromote,
    ShadowDrop,
}

impl Request {
    /// Whether carrying it out changes the policy (or removes it): root's alone.
    pub(crate) fn changes_policy(&self) -> bool {
        matches!(
            self,
            Request::Add { .. }
                | Request::Del { .. }
                | Request::Detach
                | Request::ShadowLoad { .. }
                | Request::ShadowPromote
                | Request::ShadowDrop
        )
    }
}

/// The request as a command line would say it: "allow add 198.18.0.0/24 (TTL 600 s)".
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Add {
                list,
                cidr,
                ttl_secs,
            } => {
                write!(f, "{} add {cidr:?}", list.as_str())?;
                match ttl_secs {
                    Some(ttl) => write!(f, " (TTL {ttl} s)"),
                    None => Ok(()),
                }
            }
            Request::Del { list, cidr } => write!(f, "{} del {cidr:?}", list.as_str()),
            Request::List { list } => write!(f, "{} list", list.as_str()),
            Request::Status => write!(f, "status"),
            Request::EgressLog { .. } => write!(f, "egress log"),
            Request::Detach => write!(f, "detach"),
            Request::Why { address, port } => write!(f, "why {address:?} --port {port}"),
            Request::ShadowLoad { config } => write!(f, "shadow load --config {config:?}"),
            Request::ShadowStatus => write!(f, "shadow status"),
            Request::ShadowPromote => write!(f, "shadow promote"),
            Request::ShadowDrop => write!(f, "shadow drop"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Response {
    Ok { message: String },
    Entries(ListReply),
    Status(Box<Status>),
    EgressLog { events: Vec<EgressEvent> },
    Why(Box<WhyReport>),
    Shadow(Box<ShadowStatus>),
    Error { message: String },
}

/// `port25d shadow status`: what the shadow policy would change, since it was loaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShadowStatus {
    /// The candidate's config file; `None`: no shadow is loaded (then the rest says nothing).
    pub config: Option<String>,
    /// Unix seconds.
    pub since: Option<u64>,
    pub generation: Option<u32>,
    /// The candidate's policy and mode, and the live ones.
    pub policy: Option<Policy>,
    pub mode: Option<Mode>,
    pub live_policy: Policy,
    pub live_mode: Mode,
    /// The candidate's list sizes (with the runtime entries and CrowdSec's bans).
    pub allow_entries: usize,
    pub deny_entries: usize,
    /// New connection attempts judged by both since `since`.
    pub judged: u64,
    /// Those the live policy passes and the candidate would drop, and the other way.
    pub newly_dropped: u64,
    pub newly_passed: u64,
    /// Every (live reason, candidate reason) pair seen, with its count and effect.
    pub pairs: Vec<ShadowPair>,
    /// The source prefixes it would newly drop, and newly pass, most SYNs first.
    pub top_newly_dropped: Vec<ShadowSource>,
    pub top_newly_passed: Vec<ShadowSource>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShadowPair {
    pub live: String,
    pub candidate: String,
    pub packets: u64,
    /// `newly_dropped`, `newly_passed` or `same` (the verdict stays; the reason may differ).
    pub effect: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ShadowSource {
    pub source: ipnet::IpNet,
    pub packets: u64,
    /// Unix seconds.
    pub last_seen: u64,
    pub live: String,
    pub candidate: String,
}

/// `port25d why`: what the filter decides now for a SYN from an address, and every fact it
/// decides on, each with where it comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WhyReport {
    pub address: std::net::IpAddr,
    pub port: u16,
    /// The port is protected on at least one interface: the filter judges the SYN.
    pub judged: bool,
    pub policy: Policy,
    pub mode: Mode,
    /// The reason the filter counts the SYN under (`port25_packets_total`'s `reason`); `None`
    /// when it is not judged.
    pub reason: Option<String>,
    /// `pass`, `drop`, `would_drop` (monitor mode), `answered` (a SYN cookie), or `not_judged`.
    pub verdict: String,
    /// Every list entry covering the address, in force or not.
    pub entries: Vec<WhyEntry>,
    /// The policy's step, for a source no list entry decides.
    pub bucket: Option<WhyBucket>,
    /// The decision, a sentence a step, in the order the filter takes them.
    pub steps: Vec<String>,
    /// What the shadow policy would decide, when one is loaded.
    #[serde(default)]
    pub shadow: Option<WhyShadow>,
    /// The address as a destination of this host's outbound SMTP.
    pub egress: WhyEgress,
}

/// The shadow policy's decision for the same SYN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WhyShadow {
    pub config: String,
    pub reason: Option<String>,
    pub verdict: String,
    pub steps: Vec<String>,
}

/// A list entry covering the address, and where it comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WhyEntry {
    pub list: ListKind,
    pub cidr: ipnet::IpNet,
    pub from: EntrySource,
    /// Whether the kernel enforces it for this address (a CrowdSec decision the allowlist
    /// overrides is held but not enforced).
    pub in_force: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EntrySource {
    /// The config file (`key` "deny.cidrs"), a list file ("deny.files") or a file of a watched
    /// directory ("deny.dirs"), at that line. `line` 0: the entry was loaded from the config,
    /// but the files as they read now no longer hold it (an edit not reloaded yet).
    Config {
        file: String,
        line: usize,
        key: String,
    },
    Runtime {
        /// Unix seconds.
        added: u64,
        expires: Option<u64>,
        added_by: Option<String>,
    },
    Crowdsec {
        id: i64,
        scenario: String,
        origin: String,
        /// Unix seconds.
        expires: u64,
    },
}

/// "deny.txt:3 (deny.files)", "runtime entry, expires in 59m 58s, added by uid 0 (root) pid 42
/// on the control socket", "CrowdSec decision 7: crowdsecurity/ssh-bf, origin crowdsec, expires in
/// 3h": what `why` says of an entry's source.
impl std::fmt::Display for EntrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expiry = |at| crate::clock::expiry(at, crate::clock::now_unix());
        match self {
            EntrySource::Config { file, line: 0, key } => {
                write!(f, "{key} of {file} (not in the files as they read now)")
            }
            EntrySource::Config { file, line, key } => write!(f, "{file}:{line} ({key})"),
            EntrySource::Runtime {
                expires, added_by, ..
            } => {
                write!(f, "runtime entry, {}", expiry(*expires))?;
                match added_by {
                    Some(by) => write!(f, ", added by {by}"),
                    None => Ok(()),
                }
            }
            EntrySource::Crowdsec {
                id,
                scenario,
                origin,
                expires,
            } => write!(
                f,
                "CrowdSec decision {id}: {scenario}, origin {origin}, {}",
                expiry(Some(*expires))
            ),
        }
    }
}

/// The rate limiter's buckets for the address's prefix, now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WhyBucket {
    pub prefix: ipnet::IpNet,
    /// SYNs its bucket would admit now, of `burst`.
    pub tokens: u64,
    pub burst: u32,
    /// A handshake from the prefix completed lately: it skips the global bucket this many more
    /// seconds.
    pub verified_for_secs: Option<u64>,
    /// The global bucket's tokens (policy ratelimit), of `global_burst`.
    pub global_tokens: Option<u64>,
    pub global_burst: u32,
}

/// The egress guard's view of the address as a destination.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WhyEgress {
    pub mode: EgressMode,
    pub ports: Vec<u16>,
    /// The smart-host entries covering it (CIDRs, addresses, names' addresses).
    pub smart_host: Vec<String>,
    /// The smart-host names that resolved to it last.
    pub names: Vec<String>,
    /// One sentence: who may connect to it.
    pub verdict: String,
}

/// `port25d allow|deny list`: the runtime entries, and how many the config brings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ListReply {
    pub list: ListKind,
    pub runtime: Vec<RuntimeEntry>,
    pub from_config: usize,
    /// The deny list's decisions from CrowdSec (empty for the allow list).
    #[serde(default)]
    pub crowdsec: Vec<CrowdsecEntry>,
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
    /// The mode is monitor because `run --monitor` says so, whatever the config's `mode`.
    #[serde(default)]
    pub monitor_from_command_line: bool,
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
    /// Why the last reload was rejected, while no reload has succeeded since.
    #[serde(default)]
    pub last_reload_error: Option<String>,
    pub tracked_sources: usize,
    pub counters: Vec<CounterStatus>,
    pub egress: EgressStatus,
    /// The CrowdSec bouncer; `None` when `[crowdsec]` is off.
    pub crowdsec: Option<CrowdsecStatus>,
    /// Hooks someone took away that are not attached again (yet).
    #[serde(default)]
    pub lost: Vec<LostStatus>,
    /// Whether port25d attaches again where a hook was taken away (config `reattach`).
    #[serde(default)]
    pub reattach: bool,
    /// The shadow policy's config file and since when (unix seconds) it is judged, when loaded.
    #[serde(default)]
    pub shadow: Option<(String, u64)>,
}

/// A hook of port25 that someone else detached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LostStatus {
    pub hook: Hook,
    /// The interface of an XDP hook.
    pub iface: Option<String>,
    /// Unix seconds.
    pub since: u64,
    /// What holds the interface now, when something does.
    pub held_by: Option<String>,
}

/// Where the CrowdSec bouncer (and reporter) stand: the status, and what the metrics export.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CrowdsecStatus {
    pub lapi_url: String,
    /// Unix seconds of the last poll, whatever its result, and of the last that succeeded.
    pub last_poll: Option<u64>,
    pub last_success: Option<u64>,
    /// Why the last poll failed, while the LAPI is unreachable; `None` once it answers.
    pub last_error: Option<String>,
    /// The last poll's error was the answer's (refused: too large, not JSON, wrong types, an
    /// error status), not the connection's.
    #[serde(default)]
    pub last_answer_refused: bool,
    pub failures_in_a_row: u32,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Decisions held, by origin and family.
    pub decisions: Vec<CrowdsecCount>,
    /// Prefixes they ban.
    pub prefixes: usize,
    /// Decisions of the stream not taken, by why (`decisions::Skip`'s labels).
    pub skipped: BTreeMap<String, u64>,
    /// Held decisions' prefixes the configured allowlist overrides (wholly or in part), at most
    /// [`CrowdsecStatus::OVERRIDDEN_SHOWN`] of them; how many there are.
    #[serde(default)]
    pub overridden: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub overridden_count: usize,
    /// The watcher name alerts are pushed as; `None`: no reporter.
    pub reporter: Option<String>,
    pub alerts_ok: u64,
    pub alerts_failed: u64,
}

impl CrowdsecStatus {
    pub(crate) const OVERRIDDEN_SHOWN: usize = 20;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CrowdsecCount {
    pub origin: String,
    pub family: String,
    pub count: usize,
}

/// A CrowdSec decision as `deny list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CrowdsecEntry {
    pub id: i64,
    pub cidr: ipnet::IpNet,
    pub origin: String,
    pub scenario: String,
    /// Unix seconds.
    pub expires: u64,
}

/// The egress guard's part of the status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EgressStatus {
    pub mode: EgressMode,
    /// The cgroup the hooks are attached to; `None` when they are not.
    pub cgroup: Option<String>,
    /// Whether the hooks' pinned links were taken over from a previous daemon.
    pub adopted: bool,
    pub ports: Vec<u16>,
    /// Smart hosts as the kernel holds them (CIDRs, addresses, names resolved).
    pub smart_hosts: Vec<String>,
    /// Smart hosts given by name, with the addresses they resolved to last.
    pub smart_host_names: Vec<SmartHostStatus>,
    pub allow_users: Vec<String>,
    pub allow_cgroups: Vec<String>,
    /// Forwarded SYNs are judged on these interfaces too (XDP).
    pub forward_interfaces: Vec<String>,
    /// Connects to guarded ports, by verdict and reason.
    pub connects: Vec<EgressCount>,
    /// Forwarded SYNs to guarded ports, by verdict and reason.
    pub forwarded: Vec<EgressCount>,
    pub events_lost: u64,
    pub events_kept: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SmartHostStatus {
    pub name: String,
    pub addrs: Vec<std::net::IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EgressCount {
    pub verdict: String,
    pub reason: String,
    pub count: u64,
}

/// A refused (or, in monitor mode, would-be refused) outbound connect, with what /proc still knew
/// of the process when the daemon read the event: `egress log` shows these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EgressEvent {
    /// Numbered from 1 in the order the daemon read them.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub pid: u32,
    pub uid: u32,
    pub user: Option<String>,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    /// The cgroup path (so the systemd unit), or `id N` once the process has gone.
    pub cgroup: String,
    pub dest: std::net::IpAddr,
    pub port: u16,
    /// "deny" or "would_deny".
    pub verdict: String,
    /// Connects of this process to this destination not reported since its previous event.
    pub suppressed: u32,
}

impl EgressEvent {
    /// "refused outbound connect to 198.18.0.3:25: swaks (pid 42, uid 0 root, /usr/bin/perl
    /// "swaks --to …", cgroup /system.slice/cron.service)": the log line and `egress log`.
    pub(crate) fn describe(&self) -> String {
        let what = if self.verdict == "deny" {
            "refused"
        } else {
            "would refuse (monitor mode)"
        };
        let dest = std::net::SocketAddr::new(self.dest, self.port);
        let user = self
            .user
            .as_ref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        let exe = self
            .exe
            .as_ref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default();
        let cmdline = self
            .cmdline
            .as_ref()
            .map(|c| format!(" {c:?}"))
            .unwrap_or_default();
        let suppressed = match self.suppressed {
            0 => String::new(),
            n => format!("; {n} more from it since the last event"),
        };
        format!(
            "{what} outbound connect to {dest}: {} (pid {}, uid {}{user}{exe}{cmdline}, cgroup {}){suppressed}",
            self.comm, self.pid, self.uid, self.cgroup
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InterfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: XdpMode,
    /// The SYN-ACK watcher is on its egress (JSON: the name it has had since the first release).
    #[serde(rename = "egress_watched")]
    pub synacks_watched: bool,
    /// Through a pinned TCX link (Linux 6.6+), rather than a tc filter each start replaces.
    #[serde(rename = "egress_pinned")]
    pub synack_watcher_pinned: bool,
    pub adopted: bool,
    /// A component of libxdp's dispatcher there (`xdp_coexist = "libxdp"`).
    #[serde(default)]
    pub in_dispatcher: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ListStatus {
    pub list: String,
    pub from_config: usize,
    pub runtime: usize,
    /// Prefixes banned by CrowdSec decisions (deny only).
    #[serde(default)]
    pub crowdsec: usize,
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
