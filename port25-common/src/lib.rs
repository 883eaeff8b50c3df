//! Types shared by the port25 XDP program and the `port25d` daemon.
//!
//! Everything here crosses the kernel/user boundary through BPF maps, so every type is `#[repr(C)]`,
//! `Copy`, and laid out without implicit padding (the verifier and `aya::Pod` both need that).
#![no_std]

pub mod maps;

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
pub const LAYOUT_VERSION: u32 = 8;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "port25";
/// Name of the SYN-ACK watcher: the TC program on the gateway's egress that records the
/// SYN-ACKs of protected ports, whose completing ACK verifies a source (not the egress guard).
pub const SYNACK_WATCHER_PROGRAM_NAME: &str = "port25_synack";
/// Its name before map layout 6: a tc filter an older port25d left (kernels before 6.6) goes by it.
pub const LEGACY_SYNACK_WATCHER_PROGRAM_NAME: &str = "port25_egress";
/// The same filter as a libxdp dispatcher's component (an extension of one of its slots).
pub const COMPONENT_PROGRAM_NAME: &str = "port25_component";
/// The program that answers a SYN with a SYN cookie (policy synproxy), tail-called by the filter.
pub const SYNPROXY_PROGRAM_NAME: &str = "port25_synproxy";
/// Handshakes awaiting their final ACK that the kernel side tracks.
pub const HANDSHAKE_CAPACITY: u32 = 65536;

/// Three settings/ports slots (generation % SLOTS): the live generation's, a shadow's
/// (docs/ARCHITECTURE.md, § Shadow policy), and the one being built beside them.
pub const SLOTS: u32 = 3;
/// Words of 32 bits in one slot of the port bitmap (65536 ports).
pub const PORT_WORDS: u32 = 65536 / 32;

/// Where `port`'s bit lies in one slot of the port bitmap ([`maps::PORTS`]): (word, mask).
pub const fn port_bit(port: u16) -> (u32, u32) {
    (port as u32 / 32, 1 << (port % 32))
}
/// Capacity of each CIDR list per address family. The tries are not preallocated, so only
/// inserted entries cost memory; the bound covers three generations of a large list (live, a
/// shadow, and the next during a swap).
pub const LIST_CAPACITY: u32 = 3 * 1_100_000;
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
    /// Aligns the u64 fields that follow.
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
    pub _pad_end: u32,
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
    /// Handshakes its clients completed (the ACK of the gateway's SYN-ACK, or a valid cookie):
    /// what a spoofer cannot forge, and so the only evidence the CrowdSec reporter acts on.
    pub completed: u64,
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

/// A shadow policy (docs/ARCHITECTURE.md, § Shadow policy): a candidate generation the XDP
/// program judges each new connection attempt by too, counting where its verdict and the live
/// one's differ, without enforcing it.
pub mod shadow {
    use crate::Reason;

    /// A side's reason index beyond [`Reason`]'s: the port is not protected under that policy.
    pub const NOT_JUDGED: u32 = Reason::ALL.len() as u32;
    /// Reasons a side can give: every [`Reason`], and [`NOT_JUDGED`].
    pub const SIDES: u32 = NOT_JUDGED + 1;
    /// Slots of [`crate::maps::SHADOW_COUNTERS`]: every (live, candidate) pair.
    pub const PAIRS: u32 = SIDES * SIDES;
    /// Source prefixes whose verdicts differ that [`crate::maps::SHADOW_SOURCES`] keeps (LRU).
    pub const SOURCES_CAPACITY: u32 = 4096;

    /// The counter slot of a (live, candidate) pair of reason indexes.
    pub const fn pair(live: u32, candidate: u32) -> u32 {
        live * SIDES + candidate
    }

    /// Value of [`crate::maps::SHADOW_SOURCES`]: a source prefix the candidate judges otherwise
    /// than the live policy, as last seen.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DifferingSource {
        /// SYNs judged otherwise (updated atomically).
        pub packets: u64,
        /// When last seen (ns, CLOCK_MONOTONIC).
        pub last_seen: u64,
        /// The live and the candidate's reason indexes, the last time.
        pub live: u32,
        pub candidate: u32,
    }
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
    /// Blocks [`crate::maps::BLOCKS_V4`] can hold: every /16, in three generations.
    pub const BLOCK_CAPACITY: u32 = 3 * 65536;

    /// The word and the shift of the nibble at `index` (a /16 in the slot, a /24 in a block).
    pub const fn place(index: u32) -> (u32, u32) {
        (index / PER_WORD, (index % PER_WORD) * BITS)
    }
}

/// [`maps::PREFILTER_V6`]: IPv6 has no dense level to index like IPv4's /16s, so per slot it keeps
/// one bit per hash of a prefix, at two levels, and the IPv6 entries lie in three tries by length.
/// A source's /48 bit is set when a /48 of that hash holds an entry of /48 or longer: then
/// [`maps::LISTS_V6`] (those entries) answers if one covers it. Else, its /32 bit set when a /32 of
/// that hash holds an entry of /32 to /47, [`maps::LISTS_V6_32_TO_47`] if one covers it. Else
/// [`maps::LISTS_V6_UNDER_32`]. Bits are not cleared by runtime removals (another prefix may share
/// one); a set bit only costs a lookup.
pub mod prefilter_v6 {
    /// The levels' prefix lengths, longest first.
    pub const LEVELS: [u8; 2] = [48, 32];
    /// Bits per level: 2^20, 128 KiB.
    const HASH_BITS: u32 = 20;
    const LEVEL_WORDS: u32 = (1 << HASH_BITS) / 64;
    /// Words per slot.
    pub const WORDS: u32 = LEVELS.len() as u32 * LEVEL_WORDS;

    /// The level whose bit an entry of `len` bits sets: the first it is as long as; `None`: it
    /// is shorter than every level (it only lies in the tries).
    pub fn level_of(len: u8) -> Option<usize> {
        LEVELS.iter().position(|&level| len >= level)
    }

    /// The word (in the slot) and the mask of the bit of `addr`'s prefix at `level`.
    #[inline(always)]
    pub fn place(addr: &[u8; 16], level: usize) -> (u32, u64) {
        let top = u64::from_be_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]);
        let prefix = top >> (64 - u32::from(LEVELS[level]));
        // Fibonacci hashing: the top bits of the product mix every bit of the prefix.
        let hash = (prefix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - HASH_BITS)) as u32;
        (level as u32 * LEVEL_WORDS + hash / 64, 1 << (hash % 64))
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

/// A `#[repr(u32)]` enum whose discriminants index the counters: the variants are numbered from 0
/// in the order written (no number is written, so none can break `ALL[v as usize] == v`), `ALL`
/// lists them in that order, and `label` names each in metrics and status.
macro_rules! counted_enum {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $label:literal,)*
    }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: [$name; [$($label),*].len()] = [$($name::$variant),*];

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
        Allowlisted => "allowlisted",
        Denylisted => "denylisted",
        NotAllowlisted => "not_allowlisted",
        RateLimited => "rate_limited",
        Admitted => "admitted",
        Malformed => "malformed",
        /// Policy synproxy: a SYN answered (or, in monitor mode, to be answered) with a cookie.
        SynCookie => "syn_cookie",
        /// Policy synproxy: an ACK whose cookie the kernel's check accepted.
        CookieValid => "cookie_valid",
        /// Policy synproxy: a segment of no known flow without a valid cookie.
        CookieInvalid => "cookie_invalid",
        /// Policy synproxy: a SYN not answered because the SYN-ACK budget was spent.
        SynackBudget => "synack_budget",
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
        Pass => "pass",
        Drop => "drop",
        /// Monitor mode: it would have been dropped, and was passed.
        WouldDrop => "would_drop",
        /// Policy synproxy: answered from XDP (a SYN-ACK sent back, XDP_TX).
        Answered => "answered",
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

pub mod egress;

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
    unsafe impl aya::Pod for super::shadow::DifferingSource {}
    unsafe impl aya::Pod for super::SourceState {}
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter slot of a (verdict, reason) pair and `slot_meaning` undo each other, for the
    /// ingress and the egress counters alike; each variant's discriminant is its place in `ALL`.
    #[test]
    fn counter_slots_round_trip() {
        for (i, v) in Verdict::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
            for r in Reason::ALL {
                assert_eq!(slot_meaning(counter_slot(v, r)), Some((v, r)));
            }
        }
        assert_eq!(slot_meaning(COUNTER_SLOTS), None);
        for (i, v) in egress::Verdict::ALL.into_iter().enumerate() {
            assert_eq!(v as usize, i);
            for r in egress::Reason::ALL {
                assert_eq!(
                    egress::slot_meaning(egress::counter_slot(v, r)),
                    Some((v, r))
                );
            }
        }
        assert_eq!(Reason::ALL.map(|r| r as usize), core::array::from_fn(|i| i));
    }
}
