//! The rate limiter's per-prefix table, read from userspace: who is being dropped, for
//! `port25d top` and the bounded top-K metric.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use port25_common::{Settings, SourceKey, SourceState, maps};

use crate::pins::PinDir;

/// The `SOURCES` LRU map (aya's HashMap reads LRU hash maps too).
pub type SourceMap = HashMap<MapData, SourceKey, SourceState>;
/// The `VERIFIED` LRU map: prefix -> verified until (ns, CLOCK_MONOTONIC).
pub type VerifiedMap = HashMap<MapData, SourceKey, u64>;

/// The rate limiter's tables, as userspace reads them.
pub struct SourceTables {
    pub sources: SourceMap,
    pub verified: VerifiedMap,
    /// The global bucket's TAT (ns, CLOCK_MONOTONIC).
    pub global: Array<MapData, u64>,
    /// A shadow policy's own buckets, and its global one (§ Shadow policy).
    pub shadow: SourceMap,
    pub shadow_global: Array<MapData, u64>,
}

/// Whose buckets to read: the live policy's or the shadow's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buckets {
    Live,
    Shadow,
}

/// Where one source's buckets stand now, as `why` tells it (ns, CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketState {
    /// The source's prefix: its bucket's key.
    pub prefix: IpNet,
    /// Its bucket's TAT; `None`: not tracked, so full.
    pub tat: Option<u64>,
    /// Verified by a completed handshake until then; `None`: not verified.
    pub verified_until: Option<u64>,
    pub global_tat: u64,
    pub now: u64,
}

/// Tokens a GCRA bucket holds at `now` (the kernel's `ratelimit::gcra` admits while the TAT is at
/// most `tolerance` ahead): 0 when spent, the burst when full.
pub fn tokens(tat: u64, now: u64, interval: u64, tolerance: u64) -> u64 {
    let ahead = tat.saturating_sub(now);
    if ahead > tolerance {
        0
    } else {
        (tolerance - ahead) / interval.max(1) + 1
    }
}

/// One tracked source prefix and what its bucket did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedSource {
    pub source: IpNet,
    pub admitted: u64,
    pub dropped: u64,
    /// Handshakes its clients completed since it was first tracked.
    pub completed: u64,
    /// A client of this prefix completed a handshake lately (so it is not spoofed).
    pub verified: bool,
}

impl SourceTables {
    /// Opens the tables a daemon pinned.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapError> {
        let open = |name: &str| -> Result<Map, MapError> {
            Map::from_map_data(MapData::from_pin(pins.map(name))?)
        };
        Ok(Self {
            sources: SourceMap::try_from(open(maps::SOURCES)?)?,
            verified: VerifiedMap::try_from(open(maps::VERIFIED)?)?,
            global: Array::try_from(open(maps::GLOBAL)?)?,
            shadow: SourceMap::try_from(open(maps::SHADOW_BUCKETS)?)?,
            shadow_global: Array::try_from(open(maps::SHADOW_GLOBAL)?)?,
        })
    }

    /// The buckets of `source`'s prefix (`/ipv4_prefix` or `/ipv6_prefix` of `settings`, as the
    /// kernel keys them) and the global one.
    /// A prefix's verification (a completed handshake) is the source's, whichever policy reads it.
    pub fn bucket(&self, source: IpAddr, settings: &Settings, whose: Buckets) -> BucketState {
        let now = monotonic_ns();
        let (prefix, key) = key_of(source, settings);
        let (sources, global) = match whose {
            Buckets::Live => (&self.sources, &self.global),
            Buckets::Shadow => (&self.shadow, &self.shadow_global),
        };
        BucketState {
            prefix,
            tat: sources.get(&key, 0).ok().map(|state| state.tat),
            verified_until: self.verified.get(&key, 0).ok().filter(|&until| until > now),
            global_tat: global.get(&0, 0).unwrap_or(0),
            now,
        }
    }

    /// Every tracked prefix. The kernel keeps updating the maps meanwhile; an entry evicted during
    /// the walk is simply skipped.
    pub fn read_all(&self) -> Vec<TrackedSource> {
        let now = monotonic_ns();
        self.sources
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, state)| {
                Some(TrackedSource {
                    source: prefix_of(&key)?,
                    admitted: state.admitted,
                    dropped: state.dropped,
                    completed: state.completed,
                    verified: self.verified.get(&key, 0).is_ok_and(|until| until > now),
                })
            })
            .collect()
    }
}

/// The `k` prefixes with the most dropped SYNs (none with zero), most first.
pub fn top(mut all: Vec<TrackedSource>, k: usize) -> Vec<TrackedSource> {
    all.retain(|o| o.dropped > 0);
    all.sort_by(|a, b| {
        b.dropped
            .cmp(&a.dropped)
            .then(b.admitted.cmp(&a.admitted))
            .then(a.source.cmp(&b.source))
    });
    all.truncate(k);
    all
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The prefix of `source` the kernel keys its bucket by (`ratelimit::source_key`), and that key.
fn key_of(source: IpAddr, settings: &Settings) -> (IpNet, SourceKey) {
    let (prefix, family, len) = match source {
        IpAddr::V4(addr) => {
            let len = settings.ipv4_prefix.min(32) as u8;
            let net = Ipv4Net::new(addr, len)
                .map_or(IpNet::V4(Ipv4Net::from(addr)), |n| IpNet::V4(n.trunc()));
            (net, 4, len)
        }
        IpAddr::V6(addr) => {
            let len = settings.ipv6_prefix.min(128) as u8;
            let net = Ipv6Net::new(addr, len)
                .map_or(IpNet::V6(Ipv6Net::from(addr)), |n| IpNet::V6(n.trunc()));
            (net, 6, len)
        }
    };
    let mut addr = [0u8; 16];
    match prefix.network() {
        IpAddr::V4(network) => addr[..4].copy_from_slice(&network.octets()),
        IpAddr::V6(network) => addr = network.octets(),
    }
    let key = SourceKey {
        addr,
        family,
        prefix_len: u32::from(len),
    };
    (prefix, key)
}

pub(super) fn prefix_of(key: &SourceKey) -> Option<IpNet> {
    let len = u8::try_from(key.prefix_len).ok()?;
    match key.family {
        4 => {
            let addr = Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]);
            Ipv4Net::new(addr, len).ok().map(IpNet::V4)
        }
        6 => Ipv6Net::new(Ipv6Addr::from(key.addr), len)
            .ok()
            .map(IpNet::V6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(source: &str, admitted: u64, dropped: u64) -> TrackedSource {
        TrackedSource {
            source: source.parse().unwrap(),
            admitted,
            dropped,
            completed: 0,
            verified: false,
        }
    }

    #[test]
    fn top_orders_by_drops_and_keeps_k() {
        let all = vec![
            tracked("198.18.1.0/24", 5, 10),
            tracked("198.18.2.0/24", 5, 0),
            tracked("2001:db8::/48", 1, 500),
            tracked("198.18.3.0/24", 9, 10),
        ];
        let top = top(all, 2);
        assert_eq!(
            top,
            vec![
                tracked("2001:db8::/48", 1, 500),
                tracked("198.18.3.0/24", 9, 10)
            ]
        );
    }

    #[test]
    fn keys_become_prefixes() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[198, 18, 7, 0]);
        let key = SourceKey {
            addr,
            family: 4,
            prefix_len: 24,
        };
        assert_eq!(prefix_of(&key), Some("198.18.7.0/24".parse().unwrap()));
        let key = SourceKey {
            addr: "2001:db8:1::".parse::<Ipv6Addr>().unwrap().octets(),
            family: 6,
            prefix_len: 48,
        };
        assert_eq!(prefix_of(&key), Some("2001:db8:1::/48".parse().unwrap()));
    }
}
