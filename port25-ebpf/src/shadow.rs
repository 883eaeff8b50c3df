//! A shadow policy (docs/ARCHITECTURE.md, § Shadow policy): a candidate generation that judges
//! each new connection attempt beside the live policy, with buckets of its own. It is counted,
//! by (live reason, candidate reason), and the source prefixes whose verdict it would change are
//! sampled; it never decides a packet's fate.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use port25_common::{
    Reason, Settings, SourceKey,
    shadow::{self, DifferingSource},
};

use crate::{
    maps,
    parse::Segment,
    ratelimit::{self, Seen},
};

#[map]
static SHADOW: Array<u32> = Array::pinned(1, 0);
#[map]
static SHADOW_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(shadow::PAIRS, 0);
#[map]
static SHADOW_SOURCES: LruHashMap<SourceKey, DifferingSource> =
    LruHashMap::pinned(shadow::SOURCES_CAPACITY, 0);

/// The shadow generation; 0 when none is loaded.
#[inline(always)]
pub(crate) fn generation() -> u32 {
    SHADOW.get(0).copied().unwrap_or(0)
}

/// Judges a new connection attempt under the shadow generation `candidate` and counts it beside
/// the live policy's reason (`None`: the live policy does not protect its port).
#[inline(always)]
pub(crate) fn compare(
    candidate: u32,
    live: &Settings,
    reason: Option<Reason>,
    segment: &Segment,
    seen: &mut Seen,
) {
    let Ok(settings) = maps::settings(candidate) else {
        return;
    };
    let judged = judge(candidate, settings, segment, seen);
    let index = |reason: Option<Reason>| reason.map_or(shadow::NOT_JUDGED, |r| r as u32);
    let (live_index, candidate_index) = (index(reason), index(judged));
    maps::add_one(&SHADOW_COUNTERS, shadow::pair(live_index, candidate_index));
    let drops = |reason: Option<Reason>, settings: &Settings| {
        settings.monitor == 0 && reason.is_some_and(Reason::drops)
    };
    if drops(reason, live) != drops(judged, settings) {
        note_source(live, segment, live_index, candidate_index, seen.now());
    }
}

/// The candidate's reason for a SYN without ACK, as the live policy's `decide` would give it
/// under the candidate's generation, spending from the shadow's own buckets.
#[inline(always)]
fn judge(
    generation: u32,
    settings: &Settings,
    segment: &Segment,
    seen: &mut Seen,
) -> Option<Reason> {
    if !maps::port_protected(generation, segment.dport).unwrap_or(false) {
        return None;
    }
    if !segment.intact {
        return Some(Reason::Malformed);
    }
    let source = &segment.addrs.source;
    Some(
        crate::listed_reason(generation, source)
            .unwrap_or_else(|| crate::syn_reason(&ratelimit::SHADOW, settings, source, seen)),
    )
}

/// Notes a source prefix (the live policy's bucket prefix) whose verdict the candidate changes.
#[inline(always)]
fn note_source(
    live: &Settings,
    segment: &Segment,
    live_index: u32,
    candidate_index: u32,
    now: u64,
) {
    let key = ratelimit::source_key(live, &segment.addrs.source);
    match SHADOW_SOURCES.get_ptr_mut(&key) {
        // SAFETY: a pointer into the map value; the count is only ever updated atomically, the
        // rest is a last-seen note a racing CPU may overwrite.
        Some(seen) => unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*seen).packets, 1);
            (*seen).last_seen = now;
            (*seen).live = live_index;
            (*seen).candidate = candidate_index;
        },
        None => {
            let seen = DifferingSource {
                packets: 1,
                last_seen: now,
                live: live_index,
                candidate: candidate_index,
            };
            let _ = SHADOW_SOURCES.insert(&key, &seen, 0);
        }
    }
}
