//! What policy synproxy needs of the host's netfilter (docs/ARCHITECTURE.md, § SYN cookies): the
//! ACK that proves a cookie port25's XDP program sent reaches the stack, where netfilter's
//! SYNPROXY (the same cookies) opens the connection to the MTA and splices the two. port25d
//! installs, and removes on detach:
//! - an nftables table of its own, `inet port25` ([`nft`]): in raw prerouting, SYNs to the
//!   protected ports on the filtered interfaces are not tracked (a SYN that reaches the stack is
//!   answered by SYNPROXY itself, not by the listener), except those from the allow list, which
//!   the table's sets hold ([`Exempt`]); in input, untracked and invalid IPv4 segments to those
//!   ports go to SYNPROXY, the remaining invalid ones are dropped;
//! - with `synproxy.ipv6`, the same for IPv6 in a chain of ip6tables' legacy table mangle
//!   ([`ip6tables`]: the one SYNPROXY that checks IPv6 checksums right);
//!
//! and sets `net.netfilter.nf_conntrack_tcp_loose` to 0 (an ACK of no known connection is invalid,
//! not picked up), recording the earlier value in the table's comment to restore it on removal.

mod ip6tables;
mod nft;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{CidrSet, Config, Synproxy};
use crate::model::{Mode, Policy};

const LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";
/// How the table's comment records the earlier `nf_conntrack_tcp_loose`.
const LOOSE_WAS: &str = "nf_conntrack_tcp_loose was ";

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetfilterError {
    #[error("cannot run nft ({0}): policy synproxy needs nftables (Debian: apt install nftables)")]
    NoNft(#[source] std::io::Error),
    #[error("nft refused port25's table: {0}")]
    Refused(String),
    #[error(
        "cannot run ip6tables-legacy-restore ({0}): IPv6 under policy synproxy needs iptables' \
         legacy tools (Debian: apt install iptables), or set [synproxy] ipv6 = false"
    )]
    NoIp6tables(#[source] std::io::Error),
    #[error(
        "ip6tables-legacy-restore refused port25's chain: {0} (the kernel needs ip6_tables and \
         ip6t_SYNPROXY; or set [synproxy] ipv6 = false)"
    )]
    Ip6tablesRefused(String),
    #[error(
        "cannot set {LOOSE} to 0 ({source}); set net.netfilter.nf_conntrack_tcp_loose = 0 in \
         /etc/sysctl.d/ (after nf_conntrack is loaded) or run port25d where /proc/sys is writable"
    )]
    Loose {
        #[source]
        source: std::io::Error,
    },
}

/// The most prefixes of one family the allow sets take: nft loads 65,536 in about a second and
/// 500,000 in eleven (measured), on every change of the allow list. Beyond it that family's
/// allowlisted peers go through SYNPROXY like everyone else, as they did before the sets.
const EXEMPT_MAX: usize = 65_536;

/// The allowlisted sources whose SYNs the table leaves tracked, so that the MTA answers them as
/// under the other policies (no SYNPROXY, no cookie, none of its second of latency: README):
/// the allow list aggregated, each family within [`EXEMPT_MAX`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Exempt {
    pub(crate) v4: Vec<Ipv4Net>,
    pub(crate) v6: Vec<Ipv6Net>,
    /// The families left out, with their number of prefixes.
    pub(crate) too_many: Vec<(&'static str, usize)>,
}

impl Exempt {
    /// The exempt sources of `allow`; IPv6 only when SYNPROXY handles IPv6 (`ipv6`).
    pub(crate) fn of(allow: &CidrSet, ipv6: bool) -> Self {
        let mut exempt = Exempt {
            v4: Ipv4Net::aggregate(&allow.v4),
            v6: if ipv6 {
                Ipv6Net::aggregate(&allow.v6)
            } else {
                Vec::new()
            },
            too_many: Vec::new(),
        };
        if exempt.v4.len() > EXEMPT_MAX {
            exempt.too_many.push(("IPv4", exempt.v4.len()));
            exempt.v4.clear();
        }
        if exempt.v6.len() > EXEMPT_MAX {
            exempt.too_many.push(("IPv6", exempt.v6.len()));
            exempt.v6.clear();
        }
        exempt
    }

    /// What the sets hold, for the log.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!(
            "{} IPv4 and {} IPv6 allowlisted prefixes skip SYNPROXY",
            self.v4.len(),
            self.v6.len()
        );
        for (family, count) in &self.too_many {
            text.push_str(&format!(
                "; the allow list's {count} {family} prefixes (aggregated) are more than the \
                 {EXEMPT_MAX} the table takes: its {family} peers go through SYNPROXY"
            ));
        }
        text
    }
}

/// What the rules are made of.
struct Handoff<'a> {
    interfaces: &'a [String],
    ports: &'a [u16],
    synproxy: &'a Synproxy,
}

/// The rules policy synproxy needs, as their tools read them.
#[derive(Debug)]
pub(crate) struct Rules {
    /// The nftables table, for `nft -f`.
    pub(crate) nft: String,
    /// With `synproxy.ipv6`: the rules of ip6tables' chain `PORT25` in table mangle, for
    /// `ip6tables-legacy-restore`.
    pub(crate) ip6tables: Option<String>,
}

/// Whether `config` needs netfilter's rules: an enforcing policy synproxy on some interface.
pub(crate) fn needed(config: &Config) -> bool {
    config.policy == Policy::Synproxy
        && config.mode == Mode::Enforce
        && !config.interfaces.is_empty()
}

/// The rules policy synproxy needs for `config`; `None` when it needs none (another policy,
/// monitor mode, or no interfaces).
pub(crate) fn ruleset(config: &Config) -> Option<Rules> {
    if !needed(config) {
        return None;
    }
    let handoff = Handoff {
        interfaces: &config.interfaces,
        ports: &config.ports,
        synproxy: &config.synproxy,
    };
    Some(Rules {
        nft: nft::table(&handoff),
        ip6tables: config.synproxy.ipv6.then(|| ip6tables::chain(&handoff)),
    })
}

/// Installs (or replaces) the rules for `config`, exempting the sources of `allow` (the effective
/// allow list), and sets `nf_conntrack_tcp_loose` to 0: what the table exempts; or removes them
/// when `config` needs none: `None`. Nothing is left changed when a part is refused.
pub(crate) fn apply(config: &Config, allow: &CidrSet) -> Result<Option<Exempt>, NetfilterError> {
    let Some(rules) = ruleset(config) else {
        return remove().map(|()| None);
    };
    let exempt = Exempt::of(allow, config.synproxy.ipv6);
    // The earlier value: from the table port25 installed before, else from the host now.
    let was = nft::installed_comment()
        .and_then(|comment| loose_recorded(&comment))
        .or_else(read_loose);
    let comment = match was {
        Some(value) => format!("port25d: {LOOSE_WAS}{value}"),
        None => "port25d".to_owned(),
    };
    nft::install(&rules.nft, &comment, &exempt)?;
    // Half a set-up is none: on a refusal the table goes again, and the caller refuses the policy.
    let rest = match &rules.ip6tables {
        Some(chain) => ip6tables::install(chain),
        None => ip6tables::remove().map(|_| ()),
    }
    .and_then(|()| {
        // nf_conntrack is loaded now (the table's ct expressions need it), so the sysctl exists.
        if read_loose() == Some(0) {
            return Ok(());
        }
        std::fs::write(LOOSE, "0").map_err(|source| NetfilterError::Loose { source })
    });
    if let Err(err) = rest {
        if rules.ip6tables.is_some()
            && let Err(undo) = ip6tables::remove()
        {
            tracing::warn!("removing the ip6tables chain again: {undo}");
        }
        if let Err(undo) = nft::delete() {
            tracing::warn!("removing the table again: {undo}");
        }
        return Err(err);
    }
    Ok(Some(exempt))
}

/// After a change of the allow list, where `config` has the table ([`needed`]): its sets take
/// `allow`.
pub(crate) fn refill(config: &Config, allow: &CidrSet) -> Result<Exempt, NetfilterError> {
    let exempt = Exempt::of(allow, config.synproxy.ipv6);
    nft::refill(&exempt)?;
    Ok(exempt)
}

/// Removes port25's table and chain, if they are there, and restores `nf_conntrack_tcp_loose`.
pub(crate) fn remove() -> Result<(), NetfilterError> {
    let chain = ip6tables::remove();
    if let Ok(true) = chain {
        tracing::info!("removed the ip6tables chain PORT25 of table mangle");
    }
    let Some(comment) = nft::installed_comment() else {
        return chain.map(|_| ());
    };
    nft::delete()?;
    if let Some(value) = loose_recorded(&comment)
        && value != 0
        && let Err(err) = std::fs::write(LOOSE, value.to_string())
    {
        tracing::warn!("cannot restore {LOOSE} to {value}: {err}");
    }
    tracing::info!("removed the nftables table inet port25");
    chain.map(|_| ())
}

fn loose_recorded(comment: &str) -> Option<u32> {
    let (_, value) = comment.split_once(LOOSE_WAS)?;
    value.trim().parse().ok()
}

fn read_loose() -> Option<u32> {
    std::fs::read_to_string(LOOSE).ok()?.trim().parse().ok()
}

/// Runs `command` with `script` on its standard input; `cannot_run` names the error when it
/// cannot be run, `refused` when it refuses the script (with what it said).
fn feed(
    command: &mut Command,
    script: &str,
    cannot_run: fn(std::io::Error) -> NetfilterError,
    refused: fn(String) -> NetfilterError,
) -> Result<(), NetfilterError> {
    let output = output_with_input(command, script).map_err(cannot_run)?;
    if !output.status.success() {
        return Err(refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// What `command` printed and how it exited, with `script` on its standard input.
fn output_with_input(command: &mut Command, script: &str) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("t.toml")).expect("the test config parses")
    }

    #[test]
    fn only_an_enforcing_synproxy_policy_on_interfaces_needs_rules() {
        let base = "interfaces = [\"gw0\"]\nports = [25, 2525]\n";
        assert!(ruleset(&config(&format!("{base}policy = \"ratelimit\"\n"))).is_none());
        assert!(
            ruleset(&config(&format!(
                "{base}policy = \"synproxy\"\nmode = \"monitor\"\n"
            )))
            .is_none()
        );
        assert!(ruleset(&config("policy = \"synproxy\"\n")).is_none());
        let v4 = ruleset(&config(&format!(
            "{base}policy = \"synproxy\"\n[synproxy]\nipv6 = false\nmss4 = 1400\nwscale = 9\n"
        )))
        .expect("rules");
        assert!(v4.nft.contains(
            "meta nfproto ipv4 iifname { \"gw0\" } tcp dport { 25, 2525 } tcp flags syn / \
             fin,syn,rst,ack notrack"
        ));
        assert!(v4.nft.contains(
            "iifname { \"gw0\" } tcp dport { 25, 2525 } tcp flags syn / fin,syn,rst,ack ip \
             saddr @allow4 counter accept\n"
        ));
        assert!(
            v4.nft
                .contains("synproxy mss 1400 wscale 9 timestamp sack-perm")
        );
        assert!(
            !v4.nft.contains("nfproto ipv6") && !v4.nft.contains("@allow6"),
            "IPv6 is left alone without synproxy.ipv6:\n{}",
            v4.nft
        );
        assert!(v4.nft.contains(
            "meta nfproto ipv4 iifname { \"gw0\" } tcp dport { 25, 2525 } ct state invalid drop"
        ));
        assert!(v4.ip6tables.is_none());
        let both = ruleset(&config(&format!("{base}policy = \"synproxy\"\n"))).expect("rules");
        assert!(
            both.nft
                .contains("    iifname { \"gw0\" } tcp dport { 25, 2525 } tcp flags syn")
        );
        assert!(both.nft.contains("ip6 saddr @allow6 counter accept"));
        let (allowed, notrack) = (
            both.nft.find("@allow4").expect("the IPv4 exemption"),
            both.nft.find("notrack").expect("the notrack rule"),
        );
        assert!(
            allowed < notrack,
            "allowlisted sources are exempt before the rest is untracked:\n{}",
            both.nft
        );
        assert_eq!(
            both.nft.matches("synproxy mss").count(),
            1,
            "nftables' SYNPROXY for IPv4 only:\n{}",
            both.nft
        );
        assert_eq!(
            both.ip6tables.as_deref(),
            Some(
                "-A PORT25 -i gw0 -p tcp -m multiport --dports 25,2525 -m conntrack --ctstate \
                 INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1440\n\
                 -A PORT25 -i gw0 -p tcp -m multiport --dports 25,2525 -m conntrack --ctstate \
                 INVALID -j DROP\n"
            )
        );
    }

    #[test]
    fn multiport_takes_fifteen_ports_a_rule() {
        let ports: Vec<String> = (1..=16).map(|p| (p + 2000).to_string()).collect();
        let rules = ruleset(&config(&format!(
            "interfaces = [\"gw0\", \"gw1\"]\nports = [{}]\npolicy = \"synproxy\"\n",
            ports.join(", ")
        )))
        .expect("rules");
        let chain = rules.ip6tables.expect("IPv6 is on by default");
        assert_eq!(chain.lines().count(), 2 * 2 * 2, "{chain}");
        assert!(chain.contains("-i gw1 -p tcp -m multiport --dports 2016 -m conntrack"));
    }

    #[test]
    fn the_sets_take_the_allow_list_aggregated_and_within_bounds() {
        let allow = CidrSet::new(
            [
                "198.18.0.0/25",
                "198.18.0.128/25",
                "198.18.0.7/32",
                "2001:db8::/48",
            ]
            .map(|net| net.parse().expect("a network")),
        );
        let exempt = Exempt::of(&allow, true);
        assert_eq!(exempt.v4, vec!["198.18.0.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(exempt.v6, vec!["2001:db8::/48".parse::<Ipv6Net>().unwrap()]);
        assert!(exempt.too_many.is_empty());
        assert_eq!(
            nft::elements(&exempt),
            "add element inet port25 allow4 { 198.18.0.0/24 }\n\
             add element inet port25 allow6 { 2001:db8::/48 }\n"
        );
        assert!(
            Exempt::of(&allow, false).v6.is_empty(),
            "without synproxy.ipv6 IPv6 is never untracked: nothing to exempt"
        );
        assert_eq!(nft::elements(&Exempt::default()), "", "nft refuses `{{ }}`");

        // Every other /32 of a /15: nothing to aggregate, one prefix more than the bound.
        let many =
            CidrSet::new((0..=EXEMPT_MAX as u32).map(|n| {
                ipnet::IpNet::V4(Ipv4Net::new((0xc612_0000 + 2 * n).into(), 32).unwrap())
            }));
        let exempt = Exempt::of(&many, true);
        assert!(exempt.v4.is_empty());
        assert_eq!(exempt.too_many, vec![("IPv4", EXEMPT_MAX + 1)]);
        assert!(
            exempt.describe().contains(
                "the allow list's 65537 IPv4 prefixes (aggregated) are more than the 65536 the \
                 table takes: its IPv4 peers go through SYNPROXY"
            ),
            "{}",
            exempt.describe()
        );
    }

    #[test]
    fn the_comment_records_the_earlier_loose_setting() {
        assert_eq!(
            loose_recorded("port25d: nf_conntrack_tcp_loose was 1"),
            Some(1)
        );
        assert_eq!(loose_recorded("port25d"), None);
    }
}
