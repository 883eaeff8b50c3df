//! The config as serde reads it: every key the file may have, with the byte span of each value
//! that needs more checks than its type gives (ranges, CIDRs, paths); each section's own file
//! (`lists.rs`, `ratelimit.rs`, …) holds its raw table and checks it.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::model::{Mode, OnExit, Policy, XdpCoexist, XdpModeSetting};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) interfaces: Vec<Spanned<String>>,
    pub(super) xdp_mode: Option<XdpModeSetting>,
    pub(super) xdp_coexist: Option<XdpCoexist>,
    pub(super) ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) mode: Option<Mode>,
    pub(super) policy: Option<Policy>,
    pub(super) on_exit: Option<OnExit>,
    pub(super) reattach: Option<bool>,
    #[serde(default, deserialize_with = "table")]
    pub(super) allow: super::lists::RawList,
    #[serde(default, deserialize_with = "table")]
    pub(super) deny: super::lists::RawList,
    #[serde(default, deserialize_with = "table")]
    pub(super) ratelimit: super::ratelimit::RawRateLimit,
    #[serde(default, deserialize_with = "table")]
    pub(super) synproxy: super::synproxy::RawSynproxy,
    #[serde(default, deserialize_with = "table")]
    pub(super) metrics: super::metrics::RawMetrics,
    #[serde(default, deserialize_with = "table")]
    pub(super) egress: super::egress::RawEgress,
    #[serde(default, deserialize_with = "table")]
    pub(super) crowdsec: super::crowdsec::RawCrowdsec,
    #[serde(default, deserialize_with = "table")]
    pub(super) shadow: super::shadow::RawShadow,
}

/// Reads a struct from a TOML table only. Serde's derived structs also accept an array, filling
/// the fields in order, so `ratelimit = [5, 10]` would quietly mean syn_rate 5, syn_burst 10.
pub(super) fn table<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct TableOnly<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for TableOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(TableOnly(std::marker::PhantomData))
}
