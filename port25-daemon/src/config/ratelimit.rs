//! `[ratelimit]`: the token buckets of policies `ratelimit` and `synproxy` (docs/ARCHITECTURE.md,
//! § Decision).

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::source::Source;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    syn_rate: Option<Spanned<i64>>,
    syn_burst: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    global_syn_rate: Option<Spanned<i64>>,
    global_syn_burst: Option<Spanned<i64>>,
    tracked_sources: Option<Spanned<i64>>,
    verified_ttl: Option<Spanned<i64>>,
}

/// Token bucket settings for policy `ratelimit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub syn_rate: u32,
    pub syn_burst: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub global_syn_rate: u32,
    pub global_syn_burst: u32,
    pub tracked_sources: u32,
    /// Seconds a source prefix stays verified after one of its clients completes a handshake
    /// (proving its address is not spoofed): verified prefixes skip the global bucket. 0: off.
    pub verified_ttl: u32,
}

impl RateLimit {
    /// The most new connections one prefix's bucket admits in `secs` seconds: a full burst, then
    /// the rate.
    pub fn admitted_within(&self, secs: u32) -> u32 {
        let most = u64::from(self.syn_burst) + u64::from(self.syn_rate) * u64::from(secs);
        u32::try_from(most).unwrap_or(u32::MAX)
    }
}

impl Source<'_> {
    pub(super) fn ratelimit(&self, r: &RawRateLimit) -> Result<RateLimit, ConfigError> {
        Ok(RateLimit {
            syn_rate: self.ranged(&r.syn_rate, "ratelimit.syn_rate", 20, 1..=1_000_000)?,
            syn_burst: self.ranged(&r.syn_burst, "ratelimit.syn_burst", 40, 1..=1_000_000)?,
            ipv4_prefix: self.ranged(&r.ipv4_prefix, "ratelimit.ipv4_prefix", 32, 1..=32)? as u8,
            ipv6_prefix: self.ranged(&r.ipv6_prefix, "ratelimit.ipv6_prefix", 64, 1..=128)? as u8,
            global_syn_rate: self.ranged(
                &r.global_syn_rate,
                "ratelimit.global_syn_rate",
                2000,
                1..=10_000_000,
            )?,
            global_syn_burst: self.ranged(
                &r.global_syn_burst,
                "ratelimit.global_syn_burst",
                4000,
                1..=10_000_000,
            )?,
            tracked_sources: self.ranged(
                &r.tracked_sources,
                "ratelimit.tracked_sources",
                65536,
                1024..=16_777_216,
            )?,
            verified_ttl: self.ranged(
                &r.verified_ttl,
                "ratelimit.verified_ttl",
                600,
                0..=86_400,
            )?,
        })
    }
}
