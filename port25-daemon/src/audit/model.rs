//! What the audit reasons about: the host (sockets, their processes, interfaces), where the filter
//! is, and the findings with their level and verdict. Gathered by `gather.rs`, judged by
//! `judge.rs`, rendered by `render.rs`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::mta::{MtaConfig, MtaKind};
use super::procnet::Socket;
use super::smtp::{Offer, RelayAnswer};
use crate::model::{EgressMode, Policy, XdpMode};

/// The SMTP ports the audit looks at: relay (25), submission over TLS (465), submission (587).
pub(crate) const SMTP_PORTS: [u16; 3] = [25, 465, 587];

/// Ports port25d protects when nothing says otherwise (its default config).
pub(crate) const DEFAULT_PORTS: [u16; 1] = [25];

/// Programs that are mail transfer agents (by `comm`, or the name of their executable).
const MTA_NAMES: &[&str] = &[
    "exim",
    "exim4",
    "sendmail",
    "sm-mta",
    "smtpd",
    "opensmtpd",
    "qmail-remote",
    "qmail-rspawn",
    "qmail-send",
    "courieresmtp",
    "courieresmtpd",
    "nullmailer-send",
    "msmtp",
    "ssmtp",
    "dma",
    "haraka",
    "maddy",
    "chasquid",
    "stalwart-mail",
];

/// Postfix's daemons: generic names, so only when the executable is Postfix's (or unknown).
const POSTFIX_NAMES: &[&str] = &["master", "smtp", "lmtp", "qmgr"];

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Process {
    pub pid: u32,
    /// `/proc/PID/comm`: the name, at most 15 bytes.
    pub comm: String,
    /// Where `/proc/PID/exe` points, if it could be read.
    pub exe: Option<String>,
}

impl Process {
    /// Whether this looks like a mail transfer agent (Postfix, Exim, Sendmail, OpenSMTPD, ...).
    pub(crate) fn is_mta(&self) -> bool {
        let exe_name = self.exe.as_deref().map(|exe| {
            let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
            exe.rsplit('/').next().unwrap_or(exe)
        });
        if MTA_NAMES.contains(&self.comm.as_str())
            || exe_name.is_some_and(|n| MTA_NAMES.contains(&n))
        {
            return true;
        }
        POSTFIX_NAMES.contains(&self.comm.as_str())
            && self
                .exe
                .as_deref()
                .is_none_or(|exe| exe.contains("postfix"))
    }
}

/// A network interface and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interface {
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// What the audit saw on the host.
#[derive(Clone, Debug, Default)]
pub(crate) struct Host {
    /// Rows of `/proc/net/tcp` and `/proc/net/tcp6`.
    pub sockets: Vec<Socket>,
    /// Processes by socket inode, lowest pid first.
    pub owners: HashMap<u64, Vec<Process>>,
    /// User names by uid.
    pub users: HashMap<u32, String>,
    pub interfaces: Vec<Interface>,
    /// Why a socket may have no known process (said with every such finding).
    pub unknown_owner_hint: String,
}

impl Host {
    /// Sockets listening on an SMTP port.
    pub(super) fn listeners(&self) -> impl Iterator<Item = &Socket> {
        self.sockets.iter().filter(|s| {
            s.state == super::procnet::TcpState::LISTEN && SMTP_PORTS.contains(&s.local.port())
        })
    }
}

/// Where the view of the filter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ViewSource {
    /// The running daemon answered on its control socket.
    Daemon,
    /// No daemon answered; the links (and policy) pinned in the pin directory.
    Pins,
    /// Neither: nothing attached, ports assumed to be the default.
    Nothing,
}

/// An interface the filter is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Attached {
    pub iface: String,
    pub xdp_mode: XdpMode,
}

/// Where port25 filters, and what.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FilterView {
    pub source: ViewSource,
    pub control_socket: String,
    pub pin_dir: String,
    pub daemon_pid: Option<u32>,
    pub attached: Vec<Attached>,
    /// The protected ports (of the SMTP ports, when read from pins).
    pub ports: Vec<u16>,
    /// Where `ports` came from; `nothing`: the default, assumed.
    pub ports_from: ViewSource,
    /// Monitor mode: would-be drops are counted, nothing is dropped.
    pub monitor: bool,
    /// The inbound policy for sources no list decides (known from the running daemon only).
    pub policy: Option<Policy>,
    /// What went wrong while finding out (an unreachable daemon, unreadable pins).
    pub notes: Vec<String>,
    /// The egress guard.
    pub egress: EgressView,
}

/// The egress guard as the audit sees it: from the running daemon, or the links it pinned.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct EgressView {
    /// `off` also when nothing says otherwise.
    pub mode: EgressMode,
    /// Where its hooks are attached (`None`: nowhere, or not known from the pins).
    pub cgroup: Option<String>,
    /// Whether that cgroup is the cgroup2 root: every process on the host is guarded.
    pub whole_host: bool,
    /// No daemon runs but its hooks are pinned (still refusing).
    pub pinned: bool,
    /// Processes the guard refused (in monitor mode: would have), from the daemon's kept events.
    pub refused: Vec<Refused>,
    /// The guarded destination ports, smart hosts (CIDRs), users (`name (uid)`) and cgroups
    /// allowed anywhere: from the running daemon (empty from the pins).
    pub ports: Vec<u16>,
    pub smart_hosts: Vec<String>,
    pub allow_users: Vec<String>,
    pub allow_cgroups: Vec<String>,
}

/// A process the egress guard refused, as its kept events tell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Refused {
    pub comm: String,
    pub user: String,
    pub cgroup: String,
    /// Refused connects, those the kernel did not report one by one included.
    pub connects: u64,
    /// A few of the destinations.
    pub destinations: Vec<String>,
}

impl FilterView {
    /// Nothing attached, default ports.
    pub(crate) fn nothing(control_socket: &str, pin_dir: &str) -> Self {
        Self {
            source: ViewSource::Nothing,
            control_socket: control_socket.to_owned(),
            pin_dir: pin_dir.to_owned(),
            daemon_pid: None,
            attached: Vec::new(),
            ports: DEFAULT_PORTS.to_vec(),
            ports_from: ViewSource::Nothing,
            monitor: false,
            policy: None,
            notes: Vec::new(),
            egress: EgressView::default(),
        }
    }

    pub(super) fn mode_of(&self, iface: &str) -> Option<XdpMode> {
        self.attached
            .iter()
            .find(|a| a.iface == iface)
            .map(|a| a.xdp_mode)
    }
}

/// How urgent a finding is. Ordered from most to least urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Level {
    /// The mail server relays for strangers: act first.
    OpenRelay,
    /// An SMTP listener reachable where no filter is attached: act.
    NotProtected,
    /// Something to look at (outbound SMTP from a process that is not an MTA): act.
    Check,
    Ok,
    /// For the record; nothing to do.
    Info,
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A socket listening on an SMTP port.
    Listener,
    /// No socket listens on any SMTP port.
    NoListener,
    /// Connections from this host to a remote SMTP port.
    Outbound,
    /// Sessions of clients with this host's SMTP ports.
    Inbound,
    /// Something about the filter itself.
    Filter,
    /// The egress guard, and what it refused.
    Egress,
    /// What a listener offers a mail client: STARTTLS, AUTH, TLS on 465.
    Submission,
    /// Whether the mail server relays for an outsider.
    Relay,
    /// The MTA's configuration against port25's policy.
    Mta,
}

/// Who holds a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Owner {
    /// Lowest pid first (a forking server's parent, usually).
    pub processes: Vec<Process>,
    pub uid: u32,
    pub user: Option<String>,
    /// Why no process is named; `None` when one is.
    pub unknown: Option<String>,
}

impl Owner {
    /// "smtp-sink (pid 42, /usr/sbin/smtp-sink, user nobody)", "2 processes: ...", or what is
    /// known when no process is.
    pub(crate) fn describe(&self) -> String {
        let user = self
            .user
            .clone()
            .unwrap_or_else(|| format!("uid {}", self.uid));
        let Some(first) = self.processes.first() else {
            return format!(
                "owner unknown ({user}; {})",
                self.unknown.as_deref().unwrap_or("no process holds it")
            );
        };
        let exe = first
            .exe
            .as_deref()
            .map(|exe| format!(", {exe}"))
            .unwrap_or_default();
        let mut text = format!("{} (pid {}{exe}, user {user})", first.comm, first.pid);
        if self.processes.len() > 1 {
            let rest: Vec<String> = self.processes[1..]
                .iter()
                .map(|p| format!("{} (pid {})", p.comm, p.pid))
                .collect();
            let _ = write!(text, ", shared with {}", rest.join(", "));
        }
        text
    }

    /// The process the verdict names: "perl (pid 77)".
    pub(super) fn short(&self) -> String {
        self.processes.first().map_or_else(
            || "an unknown process".to_owned(),
            |p| format!("{} (pid {})", p.comm, p.pid),
        )
    }
}

/// What the operator should do about a finding. Its words are written at the edge (`render.rs`);
/// `--json` carries the same sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Advice {
    /// No SMTP listener; `filter_ready`: a filter is attached anyway.
    NothingToProtect { filter_ready: bool },
    /// The listener is on loopback only.
    LocalOnly,
    /// A wildcard listener, and no interface but loopback is up.
    NoInterfaceUp,
    /// The listener's address is on no interface that is up.
    NotReachable(IpAddr),
    /// Port 25 listens but is not among the protected `ports`.
    PortLeftOut { ports: Vec<u16> },
    /// A submission port (465, 587) left open, as by default.
    SubmissionOpen { port: u16 },
    /// Filtered on every interface it can be reached on.
    Filtered {
        on: Vec<Attached>,
        monitor: bool,
        /// No daemon runs; the pinned filter holds its last policy.
        pinned_only: bool,
    },
    /// Reachable where no filter is attached. `missing`: those interfaces; `interfaces`: what the
    /// config's `interfaces` should say; `none_attached`: the filter is attached nowhere.
    AttachTo {
        missing: Vec<String>,
        interfaces: Vec<String>,
        none_attached: bool,
    },
    /// Outbound connections already closed: no process to name.
    SenderGone,
    /// Mail handed to a server on this host.
    LocalHandoff,
    /// The MTA delivering to port 25 itself.
    MtaDelivering,
    /// The MTA relaying through a submission port.
    MtaRelaying,
    /// Outbound port 25 from something that is not an MTA.
    SmtpFromNonMta { process: String },
    /// A mail client submitting on an authenticated port.
    Submits { process: String, port: u16 },
    /// Clients in session with this host's server.
    InboundSessions,
    /// The filter is attached to an interface this network namespace does not have.
    AuditElsewhere,
    /// No egress guard: any process may send SMTP anywhere.
    EgressOff,
    /// The egress guard is on; `whole_host`: on the cgroup2 root.
    EgressGuards {
        mode: EgressMode,
        cgroup: String,
        whole_host: bool,
        pinned_only: bool,
    },
    /// The egress guard is configured but its hooks are not attached.
    EgressDetached { mode: EgressMode },
    /// A process the guard refused (or would have, in monitor mode).
    EgressRefused {
        process: String,
        connects: u64,
        monitor: bool,
    },
    /// A listener that does not speak SMTP to a client (no greeting, a refused connect).
    NotSmtp { port: u16, error: String },
    /// 465 without TLS from the first byte.
    NoImplicitTls { error: String },
    /// 587 without STARTTLS.
    NoStartTls { port: u16 },
    /// STARTTLS offered, but no TLS session came of it.
    StartTlsBroken { port: u16, error: String },
    /// AUTH offered before STARTTLS: passwords in clear.
    AuthBeforeStartTls { port: u16, mechanisms: Vec<String> },
    /// AUTH not offered in clear, but taken when asked.
    AuthTakenInClear { port: u16, reply: String },
    /// A submission port that offers no AUTH even over TLS.
    NoAuthOverTls { port: u16 },
    /// A submission port as it should be.
    SubmissionSound {
        port: u16,
        mechanisms: Vec<String>,
        implicit_tls: bool,
    },
    /// Port 25 offers no AUTH in clear; `starttls`: it offers STARTTLS.
    RelayPortSound { starttls: bool },
    /// Port 25 is closed to clients (policy drop) and no submission port listens.
    NowhereToSubmit,
    /// The relay probe's RCPT to an outside domain was accepted.
    OpenRelay { source: IpAddr, reply: String },
    /// The relay probe was accepted, but the MTA's own relay networks hold its address.
    ProbeTrusted { source: IpAddr, network: String },
    /// The relay probe was refused.
    RelayRefused { source: IpAddr, reply: String },
    /// The relay probe could not tell.
    RelayUnknown { reason: String },
    /// The relay probe did not run.
    RelayProbeSkipped { why: String },
    /// This host refused the audit's own connect to `port` (EPERM).
    AuditRefusedHere { port: u16 },
    /// The MTA's configuration that was read (`summary`: what it says, in short).
    MtaRead { read_with: String, summary: String },
    /// Neither Postfix's nor Exim's configuration tool is here.
    NoMtaConfig,
    /// The egress guard refuses the MTA's smart host.
    RelayhostRefused {
        mta: MtaKind,
        relayhost: String,
        addrs: Vec<IpAddr>,
        port: u16,
        enforce: bool,
    },
    /// The smart host is one of the guard's.
    RelayhostAllowed { relayhost: String },
    /// The smart host's name does not resolve.
    RelayhostUnresolved { relayhost: String, error: String },
    /// A smart host is set but outbound SMTP is not guarded.
    GuardOffWithRelayhost { mta: MtaKind, addrs: Vec<IpAddr> },
    /// The MTA delivers to MX hosts itself, and the guard allows neither its user nor its cgroup.
    DirectDeliveryRefused {
        mta: MtaKind,
        user: String,
        enforce: bool,
    },
    /// The MTA delivers to MX hosts itself, as an allowed user or cgroup.
    DirectDeliveryAllowed { user: String },
    /// The MTA relays for every address.
    RelaysForAnyone {
        mta: MtaKind,
        network: String,
        file: String,
    },
    /// The MTA relays for a public range.
    RelaysForPublicRange {
        mta: MtaKind,
        network: String,
        file: String,
    },
    /// The inbound policy drops an address the MTA receives mail from.
    DropsMtaPeer { addr: IpAddr, role: String },
}

impl Advice {
    /// How urgent it is.
    pub(crate) fn level(&self) -> Level {
        match self {
            Self::OpenRelay { .. } | Self::RelaysForAnyone { .. } => Level::OpenRelay,
            Self::NotSmtp { .. }
            | Self::NoImplicitTls { .. }
            | Self::NoStartTls { .. }
            | Self::StartTlsBroken { .. }
            | Self::AuthBeforeStartTls { .. }
            | Self::AuthTakenInClear { .. }
            | Self::NoAuthOverTls { .. }
            | Self::NowhereToSubmit
            | Self::ProbeTrusted { .. }
            | Self::RelayhostRefused { .. }
            | Self::RelayhostUnresolved { .. }
            | Self::GuardOffWithRelayhost { .. }
            | Self::DirectDeliveryRefused { .. }
            | Self::RelaysForPublicRange { .. }
            | Self::DropsMtaPeer { .. } => Level::Check,
            Self::SubmissionSound { .. }
            | Self::RelayPortSound { .. }
            | Self::RelayRefused { .. }
            | Self::RelayhostAllowed { .. }
            | Self::DirectDeliveryAllowed { .. } => Level::Ok,
            Self::RelayUnknown { .. }
            | Self::RelayProbeSkipped { .. }
            | Self::AuditRefusedHere { .. }
            | Self::MtaRead { .. }
            | Self::NoMtaConfig => Level::Info,
            Self::PortLeftOut { .. } | Self::AttachTo { .. } | Self::EgressDetached { .. } => {
                Level::NotProtected
            }
            Self::SmtpFromNonMta { .. } | Self::EgressRefused { .. } => Level::Check,
            Self::EgressGuards { .. } => Level::Ok,
            Self::EgressOff => Level::Info,
            Self::NothingToProtect { .. }
            | Self::LocalOnly
            | Self::NoInterfaceUp
            | Self::NotReachable(_)
            | Self::SubmissionOpen { .. }
            | Self::Filtered { .. }
            | Self::LocalHandoff
            | Self::MtaDelivering
            | Self::MtaRelaying => Level::Ok,
            Self::SenderGone
            | Self::Submits { .. }
            | Self::InboundSessions
            | Self::AuditElsewhere => Level::Info,
        }
    }
}

impl Serialize for Advice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One thing the audit found, with what to do about it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Finding {
    /// `verdict.level()`, set by [`Finding::new`]; a field for `--json` readers and sorting.
    pub level: Level,
    pub kind: Kind,
    pub port: Option<u16>,
    /// The listening address (listeners).
    pub address: Option<SocketAddr>,
    pub owner: Option<Owner>,
    /// Interfaces a listener can be reached on (not loopback).
    pub reachable_on: Vec<String>,
    pub filtered_on: Vec<String>,
    pub unfiltered_on: Vec<String>,
    /// Connections (outbound, inbound).
    pub connections: usize,
    /// Remote ends (outbound) or client addresses (inbound), at most a few.
    pub peers: Vec<String>,
    /// What was found, in one line.
    pub what: String,
    /// What the operator should do; its text starts with "NOT PROTECTED", "CHECK", "ok" or
    /// "info".
    pub verdict: Advice,
}

impl Finding {
    pub(super) fn new(kind: Kind, what: String, verdict: Advice) -> Self {
        Self {
            level: verdict.level(),
            kind,
            port: None,
            address: None,
            owner: None,
            reachable_on: Vec::new(),
            filtered_on: Vec::new(),
            unfiltered_on: Vec::new(),
            connections: 0,
            peers: Vec::new(),
            what,
            verdict,
        }
    }
}

/// Counts by level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Summary {
    pub needs_action: bool,
    pub open_relay: usize,
    pub not_protected: usize,
    pub check: usize,
    pub ok: usize,
    pub info: usize,
}

impl Summary {
    pub(super) fn of(findings: &[Finding]) -> Self {
        let mut summary = Self::default();
        for finding in findings {
            match finding.level {
                Level::OpenRelay => summary.open_relay += 1,
                Level::NotProtected => summary.not_protected += 1,
                Level::Check => summary.check += 1,
                Level::Ok => summary.ok += 1,
                Level::Info => summary.info += 1,
            }
        }
        summary.needs_action = summary.open_relay + summary.not_protected + summary.check > 0;
        summary
    }

    /// "2 findings need action (1 NOT PROTECTED, 1 CHECK); 3 ok, 1 info", with "N OPEN RELAY"
    /// first when there is one.
    pub(crate) fn line(&self) -> String {
        let rest = format!("{} ok, {} info", self.ok, self.info);
        if self.needs_action {
            let total = self.open_relay + self.not_protected + self.check;
            let open_relay = if self.open_relay > 0 {
                format!("{} OPEN RELAY, ", self.open_relay)
            } else {
                String::new()
            };
            format!(
                "{total} finding{} need{} action ({open_relay}{} NOT PROTECTED, {} CHECK); {rest}",
                if total == 1 { "" } else { "s" },
                if total == 1 { "s" } else { "" },
                self.not_protected,
                self.check
            )
        } else {
            format!("nothing needs action: {rest}")
        }
    }
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub smtp_ports: Vec<u16>,
    /// Interfaces that are up, loopback left out.
    pub interfaces: Vec<String>,
    pub filter: FilterView,
    /// What the mail server said and its configuration holds.
    pub mail: MailView,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

/// The mail server as a client, an outsider and its configuration show it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct MailView {
    /// Whether it was looked at (not with `--filter-only`).
    pub looked: bool,
    /// What each SMTP listener offered a client on this host.
    pub offers: Vec<Looked>,
    pub relay_probe: RelayProbe,
    /// The MTA's configuration; `None` when neither Postfix's nor Exim's tool is here.
    pub mta: Option<MtaConfig>,
    /// How the live inbound policy judges a SYN to port 25 from each address the MTA receives
    /// mail from (its smart hosts, its content filter): the verdict of `port25d why`.
    pub inbound_verdicts: Vec<InboundVerdict>,
}

/// One listener's offer.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Looked {
    pub port: u16,
    /// The listening address.
    pub listener: SocketAddr,
    /// Where the audit connected (loopback for a wildcard listener).
    pub target: SocketAddr,
    pub offer: Offer,
}

/// The open-relay probe's outcome.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "ran", rename_all = "snake_case")]
pub(crate) enum RelayProbe {
    /// It did not run, and why.
    No { why: String },
    /// It asked each port-25 listener.
    Yes {
        source: IpAddr,
        tries: Vec<RelayTry>,
    },
}

impl Default for RelayProbe {
    fn default() -> Self {
        Self::No {
            why: "not asked".to_owned(),
        }
    }
}

/// One listener asked to relay.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RelayTry {
    pub listener: SocketAddr,
    /// Where the probe connected (the host's end of its link for a wildcard listener).
    pub target: SocketAddr,
    pub answer: RelayAnswer,
}

/// The live policy's verdict for an address the MTA receives mail from.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct InboundVerdict {
    pub addr: IpAddr,
    /// "the relayhost [198.18.5.5]:25", "the content filter".
    pub role: String,
    /// `port25d why`'s verdict: `pass`, `drop`, `would_drop`, ...
    pub verdict: String,
}
