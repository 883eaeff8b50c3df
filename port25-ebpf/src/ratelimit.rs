//! Token buckets for policies `ratelimit` and `synproxy`, as GCRA (the "virtual scheduling" form
//! of a token bucket): each bucket is one u64, its theoretical arrival time (TAT), updated with
//! compare-and-swap so that several CPUs admitting SYNs of one source never spend the same token
//! twice.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, LruHashMap},
};
use port25_common::{DEFAULT_TRACKED_SOURCES, Settings, SourceKey, SourceState};

use crate::{
    handshake::{bytes_of, widen},
    parse::Addr,
};

#[map]
static SOURCES: LruHashMap<SourceKey, SourceState> = LruHashMap::pinned(DEFAULT_TRACKED_SOURCES, 0);
#[map]
static GLOBAL: Array<u64> = Array::pinned(1, 0);
#[map]
static VERIFIED: LruHashMap<SourceKey, u64> = LruHashMap::pinned(DEFAULT_TRACKED_SOURCES, 0);
#[map]
static SYNACK_BUDGET: Array<u64> = Array::pinned(1, 0);
/// A shadow policy's own buckets (docs/ARCHITECTURE.md, § Shadow policy).
#[map]
static SHADOW_BUCKETS: LruHashMap<SourceKey, SourceState> =
    LruHashMap::pinned(DEFAULT_TRACKED_SOURCES, 0);
#[map]
static SHADOW_GLOBAL: Array<u64> = Array::pinned(1, 0);

/// The buckets a policy spends from: the live policy's, or a shadow's own, so that judging by a
/// candidate's rate limits never spends a token of the live ones.
pub(crate) struct Tables {
    sources: &'static LruHashMap<SourceKey, SourceState>,
    global: &'static Array<u64>,
}

pub(crate) const LIVE: Tables = Tables {
    sources: &SOURCES,
    global: &GLOBAL,
};

pub(crate) const SHADOW: Tables = Tables {
    sources: &SHADOW_BUCKETS,
    global: &SHADOW_GLOBAL,
};

/// Which buckets a new connection spends a token of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buckets {
    /// Policy ratelimit: its prefix's, then the global one (unless the prefix is verified).
    PrefixAndGlobal,
    /// Policy synproxy: its prefix's only. The SYN is answered, not passed, so the bucket only
    /// limits the SYN-ACKs one prefix can draw (backscatter).
    PrefixOnly,
}

/// Compare-and-swap attempts before a contended bucket counts as empty: only a flood from one
/// prefix on every CPU at once gets there.
const CAS_ATTEMPTS: usize = 4;

/// One SYN in this many from a prefix not tracked yet inserts it into `SOURCES`
/// (docs/ARCHITECTURE.md, § A spoofed flood's cost).
const UNTRACKED_SAMPLE: u32 = 16;

/// Spends a token of the source's prefix bucket, then (`Buckets::PrefixAndGlobal`) one of the
/// global bucket. The source bucket comes first so that one flooding prefix exhausts only its own
/// bucket, not everyone's; a prefix verified by a completed handshake skips the global bucket,
/// which a spoofed flood drains. While that bucket is spent, the SYN of an unverified prefix is
/// dropped before its own bucket is looked at, and so spends none of it.
#[inline(always)]
pub(crate) fn admit(
    tables: &Tables,
    settings: &Settings,
    source: &Addr,
    buckets: Buckets,
    seen: &mut Seen,
) -> bool {
    let now = seen.now();
    let key = source_key(settings, source);
    // `VERIFIED` is read only where it decides: for a SYN its own bucket admits, or one the spent
    // global cap would drop.
    let verified = |seen: &mut Seen| settings.verified_ttl_ns != 0 && seen.verified(&key);
    let shared = |seen: &mut Seen| {
        buckets == Buckets::PrefixOnly
            || verified(seen)
            || spend_shared(
                tables.global,
                now,
                settings.global_interval_ns,
                settings.global_tolerance_ns,
            )
    };
    // Policy ratelimit while the global cap is spent, as a spoofed flood keeps it: only a
    // verified prefix can pass, whatever its own bucket holds, so any other SYN is dropped
    // without reading `SOURCES` (a lookup that misses the cache under a flood of new sources).
    if buckets == Buckets::PrefixAndGlobal
        && spent(tables.global, now, settings.global_tolerance_ns)
        && !verified(seen)
    {
        count_sampled_drop(tables, &key, now);
        return false;
    }
    // SAFETY: `state` points into a map value, valid for this program run.
    let own_token = |state: *mut SourceState| unsafe {
        gcra(
            &raw mut (*state).tat,
            now,
            settings.syn_interval_ns,
            settings.syn_tolerance_ns,
        )
    };
    if let Some(state) = tables.sources.get_ptr_mut(key) {
        let admitted = own_token(state) && shared(seen);
        count_syn(state, admitted);
        return admitted;
    }
    // A prefix not seen lately has a full bucket, so its own token is there. Inserting it is the
    // costliest step here (an LRU hash that a random-source flood would churn), so it is inserted
    // for a SYN the global cap admits (their number is bounded by the cap) and else for one SYN in
    // UNTRACKED_SAMPLE: a spoofed flood, whose sources are new at every SYN, costs a lookup, while
    // a source that keeps sending is tracked after a few SYNs.
    let admitted = shared(seen);
    let track = admitted && buckets == Buckets::PrefixAndGlobal
        // SAFETY: a helper without arguments.
        || unsafe { bpf_get_prandom_u32() } % UNTRACKED_SAMPLE == 0;
    if !track {
        return admitted;
    }
    let fresh = SourceState {
        tat: now + settings.syn_interval_ns,
        admitted: admitted as u64,
        dropped: !admitted as u64,
        completed: 0,
    };
    if tables
        .sources
        .insert(key, fresh, BPF_NOEXIST as u64)
        .is_ok()
    {
        return admitted;
    }
    // Another CPU inserted it first: this SYN queues behind that one in the shared bucket.
    let Some(state) = tables.sources.get_ptr_mut(key) else {
        return false;
    };
    let admitted = admitted && own_token(state);
    count_syn(state, admitted);
    admitted
}

/// What the bucket steps of one packet read once, whichever policy asks (the live one, a
/// shadow's): the clock, and whether the source's prefix is verified. Plain integers: an
/// `Option` here reaches the object's BTF as a union the kernel refuses.
#[derive(Default)]
pub(crate) struct Seen {
    /// ns; 0 until read.
    now: u64,
    /// The prefix `verified` was read for (family << 32 | length; 0: none yet), and the answer.
    verified_for: u64,
    verified: bool,
}

impl Seen {
    #[inline(always)]
    pub(crate) fn now(&mut self) -> u64 {
        if self.now == 0 {
            // SAFETY: a helper without arguments.
            self.now = unsafe { bpf_ktime_get_ns() };
        }
        self.now
    }

    /// A shadow's prefix lengths may differ from the live policy's: the answer is kept for one.
    #[inline(always)]
    fn verified(&mut self, key: &SourceKey) -> bool {
        let prefix = (u64::from(key.family) << 32) | u64::from(key.prefix_len);
        if self.verified_for != prefix {
            let now = self.now();
            // SAFETY: the value is a plain u64 read while the program runs.
            self.verified = unsafe { VERIFIED.get(key) }.is_some_and(|&until| until > now);
            self.verified_for = prefix;
        }
        self.verified
    }
}

/// Counts a SYN of a tracked prefix, admitted or refused.
#[inline(always)]
fn count_syn(state: *mut SourceState, admitted: bool) {
    // SAFETY: `state` points into a map value; these counters are only ever updated atomically.
    unsafe {
        let counter = if admitted {
            &raw mut (*state).admitted
        } else {
            &raw mut (*state).dropped
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
    }
}

/// A SYN dropped while the global cap is spent, counted in its prefix's entry for one SYN in
/// UNTRACKED_SAMPLE, as that many: `top` and the reporter see a source that keeps sending (its
/// drops estimated), and a spoofed flood costs one lookup in UNTRACKED_SAMPLE SYNs.
#[inline(always)]
fn count_sampled_drop(tables: &Tables, key: &SourceKey, now: u64) {
    // SAFETY: a helper without arguments.
    if unsafe { bpf_get_prandom_u32() } % UNTRACKED_SAMPLE != 0 {
        return;
    }
    let weight = u64::from(UNTRACKED_SAMPLE);
    match tables.sources.get_ptr_mut(key) {
        // SAFETY: a pointer into the map value; its counters are only ever updated atomically.
        Some(state) => unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*state).dropped, weight);
        },
        None => {
            // Its bucket full: the dropped SYN spent none of it.
            let fresh = SourceState {
                tat: now,
                admitted: 0,
                dropped: weight,
                completed: 0,
            };
            let _ = tables.sources.insert(key, fresh, BPF_NOEXIST as u64);
        }
    }
}

/// A client of the source's prefix completed a handshake: counted in its bucket's entry (the
/// reporter's evidence) and the prefix verified for the configured time.
#[inline(always)]
pub(crate) fn handshake_completed(settings: &Settings, source: &Addr) {
    let key = source_key(settings, source);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match SOURCES.get_ptr_mut(key) {
        // SAFETY: a pointer into the map value; its counters are only ever updated atomically.
        Some(state) => unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*state).completed, 1);
        },
        // Its SYN was not sampled into `SOURCES` (policy synproxy): a handshake is proof no
        // spoofer can forge, so tracking it from here cannot be churned by a flood.
        None => {
            let tracked = SourceState {
                tat: now,
                admitted: 1,
                dropped: 0,
                completed: 1,
            };
            let _ = SOURCES.insert(key, tracked, BPF_NOEXIST as u64);
        }
    }
    if settings.verified_ttl_ns == 0 {
        return;
    }
    let until = now + settings.verified_ttl_ns;
    let _ = VERIFIED.insert(key, until, 0);
}

/// Spends a token of the SYN-ACK budget (policy synproxy): false when the budget is spent.
#[inline(always)]
pub(crate) fn synack_token(settings: &Settings, now: u64) -> bool {
    spend_shared(
        &SYNACK_BUDGET,
        now,
        settings.synack_interval_ns,
        settings.synack_tolerance_ns,
    )
}

/// A GCRA step on a bucket all CPUs share, the one value of `bucket` (the global cap, the SYN-ACK
/// budget): false when it is empty.
#[inline(always)]
fn spend_shared(bucket: &Array<u64>, now: u64, interval: u64, tolerance: u64) -> bool {
    match bucket.get_ptr_mut(0) {
        // SAFETY: a pointer into the bucket's map value.
        Some(tat) => unsafe { gcra(tat, now, interval, tolerance) },
        None => false,
    }
}

/// Whether the shared `bucket` is empty now, without spending from it.
#[inline(always)]
fn spent(bucket: &Array<u64>, now: u64, tolerance: u64) -> bool {
    match bucket.get(0) {
        Some(&tat) => tat > now && tat - now > tolerance,
        None => true,
    }
}

/// One GCRA step: admit if the TAT is at most `tolerance` ahead of now, and push it one interval.
#[inline(always)]
unsafe fn gcra(tat: *mut u64, now: u64, interval: u64, tolerance: u64) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        // A plain (volatile) load: a torn or stale value only makes the compare-and-swap fail.
        // SAFETY: the caller passes a pointer into a map value.
        let old = unsafe { tat.read_volatile() };
        let start = if old > now { old } else { now };
        if start - now > tolerance {
            return false;
        }
        // SAFETY: as above.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                tat,
                old,
                start + interval,
            )
        };
        if swapped {
            return true;
        }
    }
    false
}

#[inline(always)]
pub(crate) fn source_key(settings: &Settings, source: &Addr) -> SourceKey {
    // Masked word by word, without a zeroed byte array (a byte-loop `memset` on the BPF target).
    let mask = |bits: u32| {
        if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits.min(32))
        }
    };
    match *source {
        Addr::V4(addr) => {
            let prefix = settings.ipv4_prefix.min(32);
            let masked = u32::from_be_bytes(addr) & mask(prefix);
            SourceKey {
                addr: widen(masked.to_be_bytes()),
                family: 4,
                prefix_len: prefix,
            }
        }
        Addr::V6(addr) => {
            let prefix = settings.ipv6_prefix.min(128);
            let mut words = [0u32; 4];
            for (i, word) in words.iter_mut().enumerate() {
                let at = 4 * i;
                let bytes = [addr[at], addr[at + 1], addr[at + 2], addr[at + 3]];
                let bits = prefix.saturating_sub(32 * i as u32);
                *word = (u32::from_be_bytes(bytes) & mask(bits)).to_be();
            }
            SourceKey {
                addr: bytes_of(words),
                family: 6,
                prefix_len: prefix,
            }
        }
    }
}
