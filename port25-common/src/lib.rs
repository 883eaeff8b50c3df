//! Types shared by the port25 XDP program and the `port25d` daemon.
//!
//! Everything here crosses the kernel/user boundary through BPF maps, so every type is `#[repr(C)]`,
//! `Copy`, and laid out without implicit padding (the verifier and `aya::Pod` both need that).
#![no_std]

/// Declares each map name as a constant spelled like the map, so the two cannot drift apart.
macro_rules! map_names {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $($(#[$doc])* pub const $name: &str = stringify!($name);)*
    };
}

/// Names of the BPF maps, so the daemon and tests never spell them twice.
pub mod maps {
    map_names! {
        /// `Array<u32>` of one element: the live policy generation (see [`crate::Settings`]).
        ACTIVE,
        /// `Array<Settings>` with one slot per generation parity.
        SETTINGS,
        /// `Array<u32>`: bitmap of protected destination ports, [`crate::PORT_WORDS`] words per
        /// slot.
        PORTS,
        /// `LpmTrie<V4Key, u32>` / `LpmTrie<V6Key, u32>`: the allow and deny lists in one trie
        /// per family, keyed by generation and prefix; the value is the [`crate::listed`] bits of
        /// the entry and of every shorter entry covering it, so the longest match alone answers
        /// (docs/ARCHITECTURE.md § Lists).
        LISTS_V4,
        LISTS_V6,
        /// `Array<u64>`: per slot, 4 bits for each IPv4 /16 ([`crate::prefilter`]): most packets
        /// are answered here, without walking the trie.
        PREFILTER_V4,
        /// `HashMap<BlockKey, [u64; 16]>`: for each /16 whose nibble says `DEEPER`, 4 bits for
        /// each of its /24s, the same way: `DEEPER` there sends the packet to the trie.
        BLOCKS_V4,
        /// `PerCpuArray<Counter>` of [`crate::IF_BUCKETS`] × [`crate::COUNTER_SLOTS`]: the
        /// counters of the interface that owns each bucket ([`COUNTER_OWNERS`]).
        COUNTERS,
        /// `Array<u32>` of [`crate::IF_BUCKETS`]: the ifindex whose packets bucket
        /// `ifindex % IF_BUCKETS` counts (0: none). The daemon claims the bucket of an interface
        /// it attaches to when it is free.
        COUNTER_OWNERS,
        /// `PerCpuHashMap<CounterKey, Counter>`: the counters of interfaces whose bucket another
        /// interface owns, or that own none (a test run's loopback).
        COUNTERS_SPILL,
        /// `LruHashMap<SourceKey, SourceState>`: one token bucket per source prefix (policy
        /// ratelimit).
        SOURCES,
        /// `LruHashMap<SourceKey, u64>`: source prefixes proven real by a completed handshake,
        /// with until when (ns, CLOCK_MONOTONIC). Apart from `SOURCES`, so a spoofed flood
        /// churning that table cannot evict them: only a completed handshake writes here.
        VERIFIED,
        /// `Array<u64>` of one element: the global bucket's theoretical arrival time.
        GLOBAL,
        /// `LruHashMap<FlowKey, u32>`: handshakes the gateway answered (SYN-ACK sent), with the
        /// acknowledgment number that proves the client saw the SYN-ACK.
        HANDSHAKES,
        /// `Array<EgressSettings>`, one slot per generation parity: the egress guard's policy.
        EGRESS,
        /// `LpmTrie<V4Key, u32>` / `LpmTrie<V6Key, u32>`: the smart hosts, keyed like the lists.
        SMART_V4,
        SMART_V6,
        /// `PerCpuArray<u64>`: outbound connects by [`crate::egress::counter_slot`].
        EGRESS_COUNTERS,
        /// `RingBuf` of [`crate::egress::Event`]: refused (or would-be refused) connects.
        EGRESS_EVENTS,
        /// `LruHashMap<EventKey, EventState>`: when each (process, destination) last had an event.
        EGRESS_EVENT_LIMIT,
        /// `PerCpuArray<u64>` of one element: events the ring buffer had no room for.
        EGRESS_EVENTS_LOST,
        /// `PerCpuArray<u64>`: forwarded SYNs to guarded ports, by [`crate::egress::counter_slot`].
        EGRESS_FORWARDED,
        /// `Array<u64>` of one element: the SYN-ACK budget's theoretical arrival time (policy
        /// synproxy), a bucket like [`GLOBAL`].
        SYNACK_BUDGET,
        /// `LruHashMap<FlowKey, u64>`: connections whose ACK carried a valid SYN cookie (policy
        /// synproxy), with when the cookie was checked (ns, CLOCK_MONOTONIC): their later
        /// segments pass without a check.
        COOKIE_FLOWS,
        /// `ProgramArray` of one slot: the program that answers SYNs with a cookie, tail-called by
        /// the filter (docs/ARCHITECTURE.md, § SYN cookies).
        SYNPROXY_PROGRAM,
        /// `PerCpuArray` of one scratch value: the SYN's header offsets, from the filter to the
        /// synproxy program it tail-calls, and the client's options that program reads.
        HANDOVER,
    }
}

/// What every port25 eBPF object carries at its root: the panic handler (`no_std`, and the
/// verifier rejects any path that could reach it) and the licence, "Dual MIT/GPL", which the
/// GPL-only helpers require.
#[macro_export]
macro_rules! ebpf_epilogue {
    () => {
        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }

        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}

/// Version of the map layout (names, key and value types, generation scheme). Pinned maps live in a
/// directory named after it, so a daemon never adopts maps whose layout it does not know; bump it
/// whenever a map's key, value or meaning changes.
pub const LAYOUT_VERSION: u32 = 5;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "port25";
/// Name of the TC egress program that watches the gateway's SYN-ACKs.
pub const EGRESS_PROGRAM_NAME: &str = "port25_egress";
/// The same filter as a libxdp dispatcher's component (an extension of one of its slots).
pub const COMPONENT_PROGRAM_NAME: &str = "port25_component";
/// The program that answers a SYN with a SYN cookie (policy synproxy), tail-called by the filter.
pub const SYNPROXY_PROGRAM_NAME: &str = "port25_synproxy";
/// Handshakes awaiting their final ACK that the kernel side tracks.
pub const HANDSHAKE_CAPACITY: u32 = 65536;

/// Two settings/ports slots: the live generation's and the one being built beside it.
pub const SLOTS: u32 = 2;
/// Words of 32 bits in one slot of the port bitmap (65536 ports).
pub const PORT_WORDS: u32 = 65536 / 32;

/// Where `port`'s bit lies in one slot of the port bitmap ([`maps::PORTS`]): (word, mask).
pub const fn port_bit(port: u16) -> (u32, u32) {
    (port as u32 / 32, 1 << (port % 32))
}
/// Capacity of each CIDR list per address family. The tries are not preallocated, so only
/// inserted entries cost memory; the bound covers two generations of a large list during a swap.
pub const LIST_CAPACITY: u32 = 2 * 1_100_000;
/// Capacity of [`maps::LISTS_V4`] and [`maps::LISTS_V6`]: both lists in one trie.
pub const LISTS_CAPACITY: u32 = 2 * LIST_CAPACITY;
/// Default capacity of [`maps::SOURCES`]; the daemon sets `tracked_sources` at load time.
pub const DEFAULT_TRACKED_SOURCES: u32 = 65536;
/// Interfaces times counter slots the spill counter map can hold.
pub const COUNTER_CAPACITY: u32 = 64 * COUNTER_SLOTS;
/// Counter buckets of [`maps::COUNTERS`]: an interface counts there, by array index, when its
/// ifindex modulo this is a bucket no other attached interface took first.
pub const IF_BUCKETS: u32 = 64;
/// IPv6 extension headers walked before a packet is judged `malformed`.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Datapath settings of one generation. The program reads [`maps::ACTIVE`] once per packet and then
/// only this generation's slot, lists and ports, so a reload can never be seen half-applied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// 1: count would-be drops and pass everything (monitor mode); 0: enforce.
    pub monitor: u32,
    /// [`Settings::POLICY_DROP`], [`Settings::POLICY_RATELIMIT`] or [`Settings::POLICY_SYNPROXY`].
    pub policy: u32,
    /// Source prefix lengths that share one bucket.
    pub ipv4_prefix: u32,
    pub ipv6_prefix: u32,
    /// 1 when the egress guard judges forwarded SYNs on some interfaces
    /// ([`egress::EgressSettings::forward_ifindexes`]); 0 spares every other packet the look.
    pub forward_guard: u32,
    pub _pad: u32,
    /// Per-source bucket as GCRA: nanoseconds between tokens, and how far ahead of now the
    /// theoretical arrival time may run ((burst - 1) * interval) before a SYN is refused.
    pub syn_interval_ns: u64,
    pub syn_tolerance_ns: u64,
    /// The global bucket, the same way.
    pub global_interval_ns: u64,
    pub global_tolerance_ns: u64,
    /// How long a source prefix that completed a handshake (so its address is not spoofed) skips
    /// the global bucket; 0 turns that off.
    pub verified_ttl_ns: u64,
    /// Policy synproxy: the SYN-ACK budget as GCRA, like the buckets above.
    pub synack_interval_ns: u64,
    pub synack_tolerance_ns: u64,
    /// Policy synproxy: the MSS the SYN-ACK offers per family, its window scale and the IP TTL
    /// (hop limit) it is sent with. The MSS and window scale match netfilter SYNPROXY's.
    pub synproxy_mss4: u32,
    pub synproxy_mss6: u32,
    pub synproxy_wscale: u32,
    pub synproxy_ttl: u32,
    /// Policy synproxy: 1 when IPv6 SYNs are answered too; 0: IPv6 is judged as under
    /// [`Settings::POLICY_RATELIMIT`].
    pub synproxy_ipv6: u32,
    /// Keeps the struct a multiple of 8 bytes, as the kernel side reads it.
    pub _padding: u32,
}

impl Settings {
    /// `policy`: drop every source that is not allowlisted.
    pub const POLICY_DROP: u32 = 0;
    /// `policy`: rate-limit new connections from sources that are not allowlisted.
    pub const POLICY_RATELIMIT: u32 = 1;
    /// `policy`: answer new connections from other sources with a SYN cookie, admit those whose
    /// ACK carries a valid one.
    pub const POLICY_SYNPROXY: u32 = 2;

    /// GCRA parameters of a bucket refilling `rate` tokens a second and holding `burst`.
    pub const fn gcra(rate: u32, burst: u32) -> (u64, u64) {
        let rate = if rate == 0 { 1 } else { rate as u64 };
        let burst = if burst == 0 { 1 } else { burst as u64 };
        let interval = 1_000_000_000 / rate;
        (interval, (burst - 1) * interval)
    }
}

/// Key of [`maps::SOURCES`]: a source address masked to its prefix. The prefix length is part of
/// the key so a reload that changes it never mixes buckets of two sizes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Network byte order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
}

/// Value of [`maps::SOURCES`], shared by all CPUs and updated with atomics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// GCRA theoretical arrival time (ns, CLOCK_MONOTONIC).
    pub tat: u64,
    /// New connections admitted.
    pub admitted: u64,
    /// New connections refused (`rate_limited`).
    pub dropped: u64,
}

/// Key of [`maps::HANDSHAKES`]: one TCP connection, from the client's side.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Network byte order; IPv4 uses the first 4 bytes of each.
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    /// 4 or 6.
    pub family: u32,
}

/// The value of a [`maps::LISTS_V4`] / [`maps::LISTS_V6`] entry: which lists cover it.
pub mod listed {
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
}

/// [`maps::PREFILTER_V4`]: for each IPv4 /16, the [`listed`] bits of the longest entry of /16 or
/// shorter covering it, and whether an entry longer than /16 lies inside it (then its block in
/// [`maps::BLOCKS_V4`] answers, a nibble per /24 the same way). 16 nibbles make one u64 word.
pub mod prefilter {
    /// An entry longer than the nibble's prefix lies inside: ask the next level (a /16's block of
    /// /24 nibbles in [`crate::maps::BLOCKS_V4`]; for a /24, the trie).
    pub const DEEPER: u64 = 4;
    /// The [`crate::listed`] bits of a nibble.
    pub const LISTED: u64 = 3;
    pub const BITS: u32 = 4;
    pub const PER_WORD: u32 = 64 / BITS;
    /// Words per slot: 65536 /16s.
    pub const WORDS: u32 = 65536 / PER_WORD;
    /// Words of a block: 256 /24s.
    pub const BLOCK_WORDS: usize = 256 / PER_WORD as usize;
    /// Blocks [`crate::maps::BLOCKS_V4`] can hold: every /16, in two generations.
    pub const BLOCK_CAPACITY: u32 = 2 * 65536;

    /// The word and the shift of the nibble at `index` (a /16 in the slot, a /24 in a block).
    pub const fn place(index: u32) -> (u32, u32) {
        (index / PER_WORD, (index % PER_WORD) * BITS)
    }
}

/// Key of [`maps::BLOCKS_V4`]: a /16 of one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub generation: u32,
    /// The /16: the address's top 16 bits.
    pub top16: u32,
}

/// Key of the IPv4 list tries: the generation is part of the prefix, so two generations of a list
/// live side by side in one trie and a lookup only ever sees its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V4Key {
    pub generation: u32,
    /// Address in network byte order.
    pub addr: [u8; 4],
}

/// Key of the IPv6 list tries, like [`V4Key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V6Key {
    pub generation: u32,
    pub addr: [u8; 16],
}

/// Bits of the generation field in an LPM prefix length.
pub const GENERATION_BITS: u32 = 32;

/// A `#[repr(u32)]` enum whose discriminants index the counters: `ALL` in that order, and the
/// label of each variant in metrics and status.
macro_rules! counted_enum {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal,)*
    }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            pub const ALL: [$name; [$($value),*].len()] = [$($name::$variant),*];

            /// Label value in metrics.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

/// The counter slots of every (verdict, reason) pair of two counted enums, declared where it is
/// invoked: `COUNTER_SLOTS` (per interface, for the ingress counters), `counter_slot` and its
/// inverse `slot_meaning`.
macro_rules! counter_slots {
    ($verdict:ident, $reason:ident) => {
        /// Reasons per verdict.
        const REASONS: u32 = $reason::ALL.len() as u32;

        /// Counter slots: every (verdict, reason) pair.
        pub const COUNTER_SLOTS: u32 = $verdict::ALL.len() as u32 * REASONS;

        /// Counter slot of a (verdict, reason) pair.
        pub const fn counter_slot(verdict: $verdict, reason: $reason) -> u32 {
            verdict as u32 * REASONS + reason as u32
        }

        /// The (verdict, reason) pair of a counter slot; the inverse of [`counter_slot`].
        pub const fn slot_meaning(slot: u32) -> Option<($verdict, $reason)> {
            if slot >= COUNTER_SLOTS {
                return None;
            }
            Some((
                $verdict::ALL[(slot / REASONS) as usize],
                $reason::ALL[(slot % REASONS) as usize],
            ))
        }
    };
}

counted_enum! {
    /// Why the datapath reached its verdict. The order is the counter index.
    Reason {
        Allowlisted = 0 => "allowlisted",
        Denylisted = 1 => "denylisted",
        NotAllowlisted = 2 => "not_allowlisted",
        RateLimited = 3 => "rate_limited",
        Admitted = 4 => "admitted",
        Malformed = 5 => "malformed",
        /// Policy synproxy: a SYN answered (or, in monitor mode, to be answered) with a cookie.
        SynCookie = 6 => "syn_cookie",
        /// Policy synproxy: an ACK whose cookie the kernel's check accepted.
        CookieValid = 7 => "cookie_valid",
        /// Policy synproxy: a segment of no known flow without a valid cookie.
        CookieInvalid = 8 => "cookie_invalid",
        /// Policy synproxy: a SYN not answered because the SYN-ACK budget was spent.
        SynackBudget = 9 => "synack_budget",
    }
}

impl Reason {
    /// Whether an enforcing datapath drops packets for this reason.
    pub const fn drops(self) -> bool {
        !matches!(
            self,
            Reason::Allowlisted | Reason::Admitted | Reason::SynCookie | Reason::CookieValid
        )
    }
}

counted_enum! {
    /// What happened to a packet.
    Verdict {
        Pass = 0 => "pass",
        Drop = 1 => "drop",
        /// Monitor mode: it would have been dropped, and was passed.
        WouldDrop = 2 => "would_drop",
        /// Policy synproxy: answered from XDP (a SYN-ACK sent back, XDP_TX).
        Answered = 3 => "answered",
    }
}

counter_slots!(Verdict, Reason);

/// Key of [`maps::COUNTERS_SPILL`]: one set of counters per ingress interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub ifindex: u32,
    pub slot: u32,
}

/// Per-CPU packet and byte counts; the daemon sums them over CPUs at scrape time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// The egress guard: which outbound connects to guarded ports the cgroup hooks refuse
/// (docs/ARCHITECTURE.md, § Egress).
pub mod egress {
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
            Allow = 0 => "allow",
            Deny = 1 => "deny",
            /// Monitor mode: it would have been refused, and was let through.
            WouldDeny = 2 => "would_deny",
        }
    }

    counted_enum! {
        /// Why.
        Reason {
            SmartHost = 0 => "smart_host",
            AllowedUser = 1 => "allowed_user",
            AllowedCgroup = 2 => "allowed_cgroup",
            NotAllowed = 3 => "not_allowed",
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
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes.
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::V4Key {}
    unsafe impl aya::Pod for super::V6Key {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::CounterKey {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::egress::EgressSettings {}
    unsafe impl aya::Pod for super::egress::Event {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceState {}
    unsafe impl aya::Pod for super::FlowKey {}
}
