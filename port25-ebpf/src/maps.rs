//! The maps the daemon fills, and the small accessors the datapath uses on them. Every map, with
//! its writer and reader: docs/ARCHITECTURE.md, § Maps.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, bpf_fib_lookup},
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
    },
};
use port25_common::{
    BlockKey, COUNTER_CAPACITY, COUNTER_SLOTS, Counter, CounterKey, GENERATION_BITS, IF_BUCKETS,
    LIST_CAPACITY, LISTS_CAPACITY, PORT_WORDS, Reason, SLOTS, Settings, V4Key, V6Key, Verdict,
    counter_slot, egress, port_bit, prefilter, prefilter_v6,
};

use crate::parse::Addr;

#[map]
static ACTIVE: Array<u32> = Array::pinned(1, 0);
#[map]
static SETTINGS: Array<Settings> = Array::pinned(SLOTS, 0);
#[map]
static PORTS: Array<u32> = Array::pinned(SLOTS * PORT_WORDS, 0);
#[map]
static LISTS_V4: LpmTrie<V4Key, u32> = LpmTrie::pinned(LISTS_CAPACITY, 0);
#[map]
static LISTS_V6: LpmTrie<V6Key, u32> = LpmTrie::pinned(LISTS_CAPACITY, 0);
#[map]
static PREFILTER_V4: Array<u64> = Array::pinned(SLOTS * prefilter::WORDS, 0);
/// Allocated as the daemon writes blocks: memory for the /16s that need one only.
#[map]
static BLOCKS_V4: HashMap<BlockKey, [u64; prefilter::BLOCK_WORDS]> =
    HashMap::pinned(prefilter::BLOCK_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static PREFILTER_V6: Array<u64> = Array::pinned(SLOTS * prefilter_v6::WORDS, 0);
#[map]
static LISTS_V6_32_TO_47: LpmTrie<V6Key, u32> = LpmTrie::pinned(LIST_CAPACITY, 0);
#[map]
static LISTS_V6_UNDER_32: LpmTrie<V6Key, u32> = LpmTrie::pinned(LIST_CAPACITY, 0);
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(IF_BUCKETS * COUNTER_SLOTS, 0);
#[map]
static COUNTER_OWNERS: Array<u32> = Array::pinned(IF_BUCKETS, 0);
#[map]
static COUNTERS_SPILL: PerCpuHashMap<CounterKey, Counter> =
    PerCpuHashMap::pinned(COUNTER_CAPACITY, 0);

#[map]
static EGRESS: Array<egress::EgressSettings> = Array::pinned(SLOTS, 0);
#[map]
static SMART_V4: LpmTrie<V4Key, u32> = LpmTrie::pinned(LIST_CAPACITY, 0);
#[map]
static SMART_V6: LpmTrie<V6Key, u32> = LpmTrie::pinned(LIST_CAPACITY, 0);
#[map]
static EGRESS_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(egress::COUNTER_SLOTS, 0);
#[map]
pub(crate) static EGRESS_EVENTS: RingBuf = RingBuf::pinned(egress::EVENTS_BYTES, 0);
#[map]
pub(crate) static EGRESS_EVENT_LIMIT: LruHashMap<egress::EventKey, egress::EventState> =
    LruHashMap::pinned(egress::EVENT_LIMIT_CAPACITY, 0);
#[map]
static EGRESS_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);
#[map]
static EGRESS_FORWARDED: PerCpuArray<u64> = PerCpuArray::pinned(egress::COUNTER_SLOTS, 0);
/// The forward guard's route lookup, off the stack (`forward.rs`); scratch, so not pinned.
#[map]
static FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn active_generation() -> Result<u32, ()> {
    ACTIVE.get(0).copied().ok_or(())
}

/// By reference, not copied: the slot of a live generation is not written while it is live, and a
/// retired one only after the grace period (docs/ARCHITECTURE.md, § Generations).
#[inline(always)]
pub(crate) fn settings(generation: u32) -> Result<&'static Settings, ()> {
    SETTINGS.get(generation % SLOTS).ok_or(())
}

#[inline(always)]
pub(crate) fn port_protected(generation: u32, port: u16) -> Result<bool, ()> {
    let (word, mask) = port_bit(port);
    let bits = PORTS
        .get((generation % SLOTS) * PORT_WORDS + word)
        .copied()
        .ok_or(())?;
    Ok(bits & mask != 0)
}

/// Which lists cover the source ([`port25_common::listed`] bits). An IPv4 source is answered by
/// its /16's nibble, else by its /24's nibble in that /16's block, and only under a /24 that holds a
/// longer entry by the trie: a flood from random sources never walks it, whatever the lists hold.
/// An IPv6 source is answered by the trie of its entries of /48 and longer where its /48's bit
/// says one may lie there and one covers it, else the same way by the trie of /32 to /47, else by
/// the trie of the entries shorter than /32 (docs/ARCHITECTURE.md, § Lists).
#[inline(always)]
pub(crate) fn lists_of(generation: u32, source: &Addr) -> u32 {
    match *source {
        Addr::V4(addr) => {
            let top16 = u32::from(u16::from_be_bytes([addr[0], addr[1]]));
            let (word, shift) = prefilter::place(top16);
            // An unreadable word or block (never: the daemon writes a block before the nibble
            // that points at it) asks the trie.
            let nibble = PREFILTER_V4
                .get((generation % SLOTS) * prefilter::WORDS + word)
                .map_or(prefilter::DEEPER, |&bits| (bits >> shift) & 0xf);
            if nibble & prefilter::DEEPER == 0 {
                return (nibble & prefilter::LISTED) as u32;
            }
            let key = BlockKey { generation, top16 };
            let (word, shift) = prefilter::place(u32::from(addr[2]));
            // SAFETY: a map value read while the program runs.
            let nibble = unsafe { BLOCKS_V4.get(&key) }
                .and_then(|block| block.get(word as usize))
                .map_or(prefilter::DEEPER, |&bits| (bits >> shift) & 0xf);
            if nibble & prefilter::DEEPER == 0 {
                return (nibble & prefilter::LISTED) as u32;
            }
            value(&LISTS_V4, 32, V4Key { generation, addr })
        }
        Addr::V6(addr) => {
            let base = (generation % SLOTS) * prefilter_v6::WORDS;
            // An unreadable word (never) asks the deeper trie.
            let set = |level| {
                let (word, mask) = prefilter_v6::place(&addr, level);
                PREFILTER_V6
                    .get(base + word)
                    .is_none_or(|&bits| bits & mask != 0)
            };
            // One lookup per map, not one of a map picked at run time: the verifier inlines a
            // lookup only where a single map reaches it (else an indirect call, ~10 ns more).
            let key = V6Key { generation, addr };
            if set(0)
                && let Some(bits) = longest(&LISTS_V6, 128, key)
            {
                return bits;
            }
            if set(1)
                && let Some(bits) = longest(&LISTS_V6_32_TO_47, 128, key)
            {
                return bits;
            }
            value(&LISTS_V6_UNDER_32, 128, key)
        }
    }
}

/// Whether the destination is one of the egress guard's smart hosts.
#[inline(always)]
pub(crate) fn smart_host(generation: u32, dest: &Addr) -> bool {
    match *dest {
        Addr::V4(addr) => value(&SMART_V4, 32, V4Key { generation, addr }) != 0,
        Addr::V6(addr) => value(&SMART_V6, 128, V6Key { generation, addr }) != 0,
    }
}

/// The value of the longest prefix of the full-length address in `data`, 0 when none (the daemon
/// writes no 0: a list entry has a list's bit, a smart host 1).
#[inline(always)]
fn value<K>(trie: &LpmTrie<K, u32>, address_bits: u32, data: K) -> u32 {
    longest(trie, address_bits, data).unwrap_or(0)
}

/// The value of the longest prefix of the full-length address in `data`, if one is there.
#[inline(always)]
fn longest<K>(trie: &LpmTrie<K, u32>, address_bits: u32, data: K) -> Option<u32> {
    trie.get(&Key::new(GENERATION_BITS + address_bits, data))
        .copied()
}

/// Adds one packet of `bytes` to this CPU's counter for the interface, verdict and reason: in the
/// interface's own bucket of `COUNTERS` (two array reads), else in `COUNTERS_SPILL`.
#[inline(always)]
pub(crate) fn count(ifindex: u32, verdict: Verdict, reason: Reason, bytes: u64) {
    let slot = counter_slot(verdict, reason);
    let bucket = ifindex % IF_BUCKETS;
    if COUNTER_OWNERS
        .get(bucket)
        .is_some_and(|&owner| owner == ifindex)
        && let Some(counter) = COUNTERS.get_ptr_mut(bucket * COUNTER_SLOTS + slot)
    {
        // SAFETY: per-CPU value of this CPU; XDP runs with preemption off.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
        return;
    }
    let key = CounterKey { ifindex, slot };
    for _ in 0..2 {
        if let Some(counter) = COUNTERS_SPILL.get_ptr_mut(key) {
            // SAFETY: per-CPU value of this CPU; XDP runs with preemption off.
            unsafe {
                (*counter).packets += 1;
                (*counter).bytes += bytes;
            }
            return;
        }
        // First packet of this kind on this interface. If another CPU inserts the same key first,
        // the insert fails and the second pass finds this CPU's zeroed copy.
        let first = Counter { packets: 1, bytes };
        if COUNTERS_SPILL
            .insert(key, first, BPF_NOEXIST as u64)
            .is_ok()
        {
            return;
        }
    }
}

#[inline(always)]
pub(crate) fn egress_settings(generation: u32) -> Result<&'static egress::EgressSettings, ()> {
    // By reference: the settings are larger than the BPF stack allows to copy.
    EGRESS.get(generation % SLOTS).ok_or(())
}

/// Counts one outbound connect (per CPU; the daemon sums).
#[inline(always)]
pub(crate) fn count_connect(verdict: egress::Verdict, reason: egress::Reason) {
    add_one(&EGRESS_COUNTERS, egress::counter_slot(verdict, reason));
}

/// This CPU's route-lookup scratch space.
#[inline(always)]
pub(crate) fn fib_scratch() -> Option<*mut bpf_fib_lookup> {
    FIB_SCRATCH.get_ptr_mut(0)
}

/// Counts one forwarded SYN to a guarded port.
#[inline(always)]
pub(crate) fn count_forwarded(verdict: egress::Verdict, reason: egress::Reason) {
    add_one(&EGRESS_FORWARDED, egress::counter_slot(verdict, reason));
}

/// Counts an event the ring buffer had no room for.
#[inline(always)]
pub(crate) fn count_lost_event() {
    add_one(&EGRESS_EVENTS_LOST, 0);
}

#[inline(always)]
pub(crate) fn add_one(array: &PerCpuArray<u64>, index: u32) {
    if let Some(count) = array.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe { *count += 1 };
    }
}
