//! The egress guard: which outbound connects to guarded ports the cgroup hooks refuse
//! (docs/ARCHITECTURE.md, § Egress).

/// Names of the cgroup connect programs in the object file.
pub const CONNECT4_PROGRAM: &str = "port25_connect4";
pub const CONNECT6_PROGRAM: &str = "port25_connect6";

/// `EgressSettings::mode`.
pub const MODE_OFF: u32 = 0;
pub const MODE_MONITOR: u32 = 1;
pub const MODE_ENFORCE: u32 = 2;

/// Guarded ports, allowed uids, allowed cgroups and forward interfaces one generation can hold.
pub const MAX_PORTS: usize = 16;
pub const MAX_USERS: usize = 16;
pub const MAX_CGROUPS: usize = 16;
pub const MAX_FORWARD: usize = 8;

/// Ring buffer size: room for a burst of events between two reads by the daemon.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// (process, destination) pairs whose last event time the kernel keeps.
pub const EVENT_LIMIT_CAPACITY: u32 = 16384;
/// At most one event per (process, destination) in this time; the rest are counted.
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// The egress policy of one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressSettings {
    pub mode: u32,
    pub port_count: u32,
    pub ports: [u16; MAX_PORTS],
    pub user_count: u32,
    pub users: [u32; MAX_USERS],
    pub cgroup_count: u32,
    /// Depth of each allowed cgroup below the cgroup2 root (the root is level 0).
    pub cgroup_levels: [u32; MAX_CGROUPS],
    /// Its id: the inode number of its directory.
    pub cgroup_ids: [u64; MAX_CGROUPS],
    /// Interfaces (LAN side) where the XDP program drops forwarded SYNs to guarded ports
    /// unless to a smart host.
    pub forward_count: u32,
    /// Bit i set: `forward_ifindexes[i]` is not an ingress-protected interface, so the XDP
    /// program judges nothing else there.
    pub forward_only: u32,
    pub forward_ifindexes: [u32; MAX_FORWARD],
}

impl EgressSettings {
    pub const OFF: Self = Self {
        mode: MODE_OFF,
        port_count: 0,
        ports: [0; MAX_PORTS],
        user_count: 0,
        users: [0; MAX_USERS],
        cgroup_count: 0,
        cgroup_levels: [0; MAX_CGROUPS],
        cgroup_ids: [0; MAX_CGROUPS],
        forward_count: 0,
        forward_only: 0,
        forward_ifindexes: [0; MAX_FORWARD],
    };
}

counted_enum! {
    /// What the hook did with a connect.
    Verdict {
        Allow => "allow",
        Deny => "deny",
        /// Monitor mode: it would have been refused, and was let through.
        WouldDeny => "would_deny",
    }
}

counted_enum! {
    /// Why.
    Reason {
        SmartHost => "smart_host",
        AllowedUser => "allowed_user",
        AllowedCgroup => "allowed_cgroup",
        NotAllowed => "not_allowed",
    }
}

counter_slots!(Verdict, Reason);

/// A refused (or would-be refused) connect, as the hook saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC, ns.
    pub time_ns: u64,
    /// `bpf_get_current_pid_tgid`: thread id in the low half, process id in the high half.
    pub pid_tgid: u64,
    /// `bpf_get_current_uid_gid`: uid in the low half, gid in the high half.
    pub uid_gid: u64,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    /// IPv4 addresses in the first four bytes (IPv4-mapped IPv6 too).
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u32,
    pub port: u32,
    pub verdict: u32,
    /// Events of this (process, destination) the rate limit suppressed since the last one.
    pub suppressed: u32,
}

impl Event {
    /// Reads one event off the ring buffer's bytes; `None` when they are fewer than an event's.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: `Event` is repr(C), Copy, without padding, valid for any bytes; the length is
        // checked and read_unaligned makes no alignment assumption.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Key of `EGRESS_EVENT_LIMIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKey {
    pub tgid: u32,
    pub port: u32,
    pub addr: [u8; 16],
}

/// Value of `EGRESS_EVENT_LIMIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventState {
    pub last_ns: u64,
    pub suppressed: u32,
    pub _pad: u32,
}
