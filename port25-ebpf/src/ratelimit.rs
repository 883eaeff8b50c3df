//! Token buckets for policies `ratelimit` and `synproxy`, as GCRA (the "virtual scheduling" form
//! of a token bucket): each bucket is one u64, its theoretical arrival time (TAT), updated with
//! compare-and-swap so that several CPUs admitting SYNs of one source never spend the same token
//! twice.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LruHashMap},
};
use port25_common::{DEFAULT_TRACKED_SOURCES, Settings, SourceKey, SourceState};

use crate::parse::Addr;

#[map]
static SOURCES: LruHashMap<SourceKey, SourceState> = LruHashMap::pinned(DEFAULT_TRACKED_SOURCES, 0);
#[map]
static GLOBAL: Array<u64> = Array::pinned(1, 0);
#[map]
static VERIFIED: LruHashMap<SourceKey, u64> = LruHashMap::pinned(DEFAULT_TRACKED_SOURCES, 0);
#[map]
static SYNACK_BUDGET: Array<u64> = Array::pinned(1, 0);

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

/// Spends a token of the source's prefix bucket, then (`Buckets::PrefixAndGlobal`) one of the
/// global bucket. The source bucket comes first so that one flooding prefix exhausts only its own
/// bucket, not everyone's; a prefix verified by a completed handshake skips the global bucket,
/// which a spoofed flood drains.
#[inline(always)]
pub(crate) fn admit(settings: &Settings, source: &Addr, buckets: Buckets) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = source_key(settings, source);
    let bucket = |state: *mut SourceState| {
        // SAFETY: `state` points into a map value, valid for this program run.
        unsafe {
            gcra(
                &raw mut (*state).tat,
                now,
                settings.syn_interval_ns,
                settings.syn_tolerance_ns,
            )
        }
    };
    let (state, own_token) = match SOURCES.get_ptr_mut(key) {
        Some(state) => (state, bucket(state)),
        None => {
            // A prefix not seen lately starts with a full bucket, less this SYN's token. If another
            // CPU inserted it first, this SYN queues behind that one in the shared bucket.
            let fresh = SourceState {
                tat: now + settings.syn_interval_ns,
                admitted: 0,
                dropped: 0,
                completed: 0,
            };
            let inserted = SOURCES.insert(key, fresh, BPF_NOEXIST as u64).is_ok();
            let Some(state) = SOURCES.get_ptr_mut(key) else {
                return false;
            };
            (state, inserted || bucket(state))
        }
    };
    // `VERIFIED` is read only for a SYN its own bucket admits: a flooding prefix whose bucket is
    // empty costs one lookup, not two.
    let verified = || {
        settings.verified_ttl_ns != 0
            // SAFETY: the value is a plain u64 read while the program runs.
            && unsafe { VERIFIED.get(key) }.is_some_and(|&until| until > now)
    };
    let admitted = own_token
        && (buckets == Buckets::PrefixOnly
            || verified()
            || spend_shared(
                &GLOBAL,
                now,
                settings.global_interval_ns,
                settings.global_tolerance_ns,
            ));
    // SAFETY: as above; these counters are only ever updated atomically.
    unsafe {
        let counter = if admitted {
            &raw mut (*state).admitted
        } else {
            &raw mut (*state).dropped
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
    }
    admitted
}

/// A client of the source's prefix completed a handshake: counted in its bucket's entry (the
/// reporter's evidence) and the prefix verified for the configured time.
#[inline(always)]
pub(crate) fn handshake_completed(settings: &Settings, source: &Addr) {
    let key = source_key(settings, source);
    if let Some(state) = SOURCES.get_ptr_mut(key) {
        // SAFETY: a pointer into the map value; its counters are only ever updated atomically.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*state).completed, 1);
        }
    }
    if settings.verified_ttl_ns == 0 {
        return;
    }
    // SAFETY: a helper without arguments.
    let until = unsafe { bpf_ktime_get_ns() } + settings.verified_ttl_ns;
    let _ = VERIFIED.insert(key, until, 0);
}

/// Spends a token of the SYN-ACK budget (policy synproxy): false when the budget is spent.
#[inline(always)]
pub(crate) fn synack_token(settings: &Settings) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
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
fn source_key(settings: &Settings, source: &Addr) -> SourceKey {
    let mut key = SourceKey {
        addr: [0; 16],
        family: 0,
        prefix_len: 0,
    };
    match *source {
        Addr::V4(addr) => {
            let prefix = settings.ipv4_prefix.min(32);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let masked = u32::from_be_bytes(addr) & mask;
            key.addr[..4].copy_from_slice(&masked.to_be_bytes());
            key.family = 4;
            key.prefix_len = prefix;
        }
        Addr::V6(addr) => {
            let prefix = settings.ipv6_prefix.min(128);
            for (i, byte) in addr.iter().enumerate() {
                let bits = prefix.saturating_sub(i as u32 * 8).min(8);
                let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
                key.addr[i] = byte & mask;
            }
            key.family = 6;
            key.prefix_len = prefix;
        }
    }
    key
}
