//! `[synproxy]`: the SYN cookies of policy synproxy (docs/ARCHITECTURE.md, § SYN cookies).

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, source::Source};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSynproxy {
    synack_rate: Option<Spanned<i64>>,
    synack_burst: Option<Spanned<i64>>,
    mss4: Option<Spanned<i64>>,
    mss6: Option<Spanned<i64>>,
    wscale: Option<Spanned<i64>>,
    ttl: Option<Spanned<i64>>,
    ipv6: Option<bool>,
}

/// What the SYN-ACKs say and how many go out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synproxy {
    /// The budget of SYN-ACKs a second, all sources together (the uplink's share for them), and
    /// its burst.
    pub synack_rate: u32,
    pub synack_burst: u32,
    /// The MSS offered to IPv4 and IPv6 clients: the host's (interface MTU less the headers).
    pub mss4: u16,
    pub mss6: u16,
    /// The window scale offered, the host's (net.ipv4.tcp_rmem's largest buffer decides it).
    pub wscale: u8,
    /// TTL (IPv6: hop limit) of the SYN-ACKs.
    pub ttl: u8,
    /// Whether IPv6 SYNs are answered with cookies too (on by default); off, IPv6 is rate-limited
    /// as under policy ratelimit, and the host needs no ip6tables (docs/ARCHITECTURE.md, § SYN
    /// cookies: IPv6's SYNPROXY is ip6tables' legacy one).
    pub ipv6: bool,
}

impl Source<'_> {
    pub(super) fn synproxy(&self, raw: &RawSynproxy) -> Result<Synproxy, ConfigError> {
        Ok(Synproxy {
            synack_rate: self.ranged(
                &raw.synack_rate,
                "synproxy.synack_rate",
                20_000,
                1..=10_000_000,
            )?,
            synack_burst: self.ranged(
                &raw.synack_burst,
                "synproxy.synack_burst",
                5_000,
                1..=10_000_000,
            )?,
            mss4: self.ranged(&raw.mss4, "synproxy.mss4", 1460, 536..=9000)? as u16,
            mss6: self.ranged(&raw.mss6, "synproxy.mss6", 1440, 1220..=9000)? as u16,
            wscale: self.ranged(&raw.wscale, "synproxy.wscale", 7, 0..=14)? as u8,
            ttl: self.ranged(&raw.ttl, "synproxy.ttl", 64, 1..=255)? as u8,
            ipv6: raw.ipv6.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::model::Policy;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("port25.toml"))
    }

    #[test]
    fn synproxy_parses_with_defaults_and_bounds() {
        let config = parse("policy = \"synproxy\"\n").expect("parses");
        assert_eq!(config.policy, Policy::Synproxy);
        let s = &config.synproxy;
        assert_eq!(
            (
                s.synack_rate,
                s.synack_burst,
                s.mss4,
                s.mss6,
                s.wscale,
                s.ttl,
                s.ipv6
            ),
            (20_000, 5_000, 1460, 1440, 7, 64, true)
        );
        let err = parse("[synproxy]\nwscale = 15\n").expect_err("out of range");
        assert_eq!(err.location.line, Some(2));
        assert!(err.reason.contains("synproxy.wscale"), "{err}");
        assert!(parse("[synproxy]\nmss4 = 100\n").is_err());
        assert!(
            parse("[synproxy]\nmtu = 1500\n").is_err(),
            "unknown keys refused"
        );
    }

    #[test]
    fn synproxy_refuses_libxdp_with_the_fix() {
        let err = parse("policy = \"synproxy\"\nxdp_coexist = \"libxdp\"\n").expect_err("refused");
        assert!(
            err.reason.contains("set xdp_coexist = \"exclusive\""),
            "{err}"
        );
    }
}
