//! Names of the BPF maps, so the daemon and tests never spell them twice.

/// Declares each map name as a constant spelled like the map, so the two cannot drift apart.
macro_rules! map_names {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $($(#[$doc])* pub const $name: &str = stringify!($name);)*
    };
}

map_names! {
    /// `Array<u32>` of one element: the live policy generation (see [`crate::Settings`]).
    ACTIVE,
    /// `Array<Settings>` with one slot per generation parity.
    SETTINGS,
    /// `Array<u32>`: bitmap of protected destination ports, [`crate::PORT_WORDS`] words per
    /// slot.
    PORTS,
    /// `LpmTrie<V4Key, u32>` / `LpmTrie<V6Key, u32>`: the allow and deny lists in one trie
    /// per family (IPv6: its entries of /48 and longer; the others in [`LISTS_V6_32_TO_47`] and
    /// [`LISTS_V6_UNDER_32`]), keyed by generation and prefix; the value is the
    /// [`crate::listed`] bits of the entry and of every shorter entry covering it, so the
    /// longest match alone answers (docs/ARCHITECTURE.md § Lists).
    LISTS_V4,
    LISTS_V6,
    /// `Array<u64>`: per slot, 4 bits for each IPv4 /16 ([`crate::prefilter`]): most packets
    /// are answered here, without walking the trie.
    PREFILTER_V4,
    /// `HashMap<BlockKey, [u64; 16]>`: for each /16 whose nibble says `DEEPER`, 4 bits for
    /// each of its /24s, the same way: `DEEPER` there sends the packet to the trie.
    BLOCKS_V4,
    /// `Array<u64>`: per slot, a bit for each hash of an IPv6 /48 and of an IPv6 /32, which
    /// say which IPv6 trie answers a source ([`crate::prefilter_v6`]).
    PREFILTER_V6,
    /// `LpmTrie<V6Key, u32>`: the IPv6 entries of /32 to /47, and those shorter than /32, with
    /// their bits as in `LISTS_V6`: they answer where `PREFILTER_V6`'s bits send the source.
    LISTS_V6_32_TO_47,
    LISTS_V6_UNDER_32,
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
    /// `Array<u32>` of one element: the shadow generation, judged beside the live one and never
    /// enforced (0: no shadow). docs/ARCHITECTURE.md, § Shadow policy.
    SHADOW,
    /// `PerCpuArray<u64>` of [`crate::shadow::PAIRS`]: new connection attempts by (live reason,
    /// the shadow's reason).
    SHADOW_COUNTERS,
    /// `LruHashMap<SourceKey, DifferingSource>`: source prefixes the shadow judges otherwise
    /// (newly dropped or newly passed), a bounded sample for its top-K.
    SHADOW_SOURCES,
    /// `LruHashMap<SourceKey, SourceState>` and `Array<u64>`: the shadow's own token buckets, so
    /// that judging by its rate limits never spends the live ones.
    SHADOW_BUCKETS,
    SHADOW_GLOBAL,
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
