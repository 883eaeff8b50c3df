//! What policy synproxy needs of the host's netfilter (docs/ARCHITECTURE.md, § SYN cookies): the
//! ACK that proves a cookie port25's XDP program sent reaches the stack, where netfilter's
//! SYNPROXY (the same cookies) opens the connection to the MTA and splices the two. port25d
//! installs an nftables table of its own, `inet port25`, through the `nft` command (one
//! transaction: the table is replaced whole), and removes it on detach:
//! - raw prerouting: SYNs to the protected ports on the filtered interfaces are not tracked (a SYN
//!   that reaches the stack is answered by SYNPROXY itself, not by the listener);
//! - input: untracked and invalid segments to those ports go to SYNPROXY, the remaining invalid
//!   ones are dropped.
//!
//! and sets `net.netfilter.nf_conntrack_tcp_loose` to 0 (an ACK of no known connection is invalid,
//! not picked up), recording the earlier value in the table's comment to restore it on removal.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::model::{Mode, Policy};

const TABLE: &str = "port25";
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
        "cannot set {LOOSE} to 0 ({source}); set net.netfilter.nf_conntrack_tcp_loose = 0 in \
         /etc/sysctl.d/ (after nf_conntrack is loaded) or run port25d where /proc/sys is writable"
    )]
    Loose {
        #[source]
        source: std::io::Error,
    },
}

/// The table policy synproxy needs for `config`, as nft reads it; `None` when it needs none (another
/// policy, monitor mode, or no interfaces).
pub(crate) fn ruleset(config: &Config) -> Option<String> {
    if config.policy != Policy::Synproxy || config.mode != Mode::Enforce {
        return None;
    }
    if config.interfaces.is_empty() {
        return None;
    }
    let join = |items: Vec<String>| items.join(", ");
    let interfaces = join(
        config
            .interfaces
            .iter()
            .map(|name| format!("\"{name}\""))
            .collect(),
    );
    let ports = join(config.ports.iter().map(u16::to_string).collect());
    let s = &config.synproxy;
    // Without synproxy.ipv6, IPv6 is left to the host as under policy ratelimit.
    let only = if s.ipv6 { "" } else { "meta nfproto ipv4 " };
    let mut rules = String::new();
    let _ = writeln!(rules, "table inet {TABLE} {{");
    let _ = writeln!(rules, "  chain prerouting {{");
    let _ = writeln!(
        rules,
        "    type filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(
        rules,
        "    {only}iifname {{ {interfaces} }} tcp dport {{ {ports} }} tcp flags syn / fin,syn,rst,ack \
         notrack"
    );
    let _ = writeln!(rules, "  }}");
    let _ = writeln!(rules, "  chain input {{");
    // Before the host's own filter chains, which may drop invalid packets first.
    let _ = writeln!(
        rules,
        "    type filter hook input priority filter - 1; policy accept;"
    );
    let families: &[(&str, u16)] = if s.ipv6 {
        &[("ipv4", s.mss4), ("ipv6", s.mss6)]
    } else {
        &[("ipv4", s.mss4)]
    };
    for &(family, mss) in families {
        let _ = writeln!(
            rules,
            "    meta nfproto {family} iifname {{ {interfaces} }} tcp dport {{ {ports} }} ct state \
             invalid,untracked synproxy mss {mss} wscale {} timestamp sack-perm",
            s.wscale
        );
    }
    let _ = writeln!(
        rules,
        "    {only}iifname {{ {interfaces} }} tcp dport {{ {ports} }} ct state invalid drop"
    );
    let _ = writeln!(rules, "  }}");
    let _ = writeln!(rules, "}}");
    Some(rules)
}

/// Installs (or replaces) the table for `config` and sets `nf_conntrack_tcp_loose` to 0: true; or
/// removes the table when `config` needs none: false. Nothing is changed when nft refuses the
/// table.
pub(crate) fn apply(config: &Config) -> Result<bool, NetfilterError> {
    let Some(rules) = ruleset(config) else {
        return remove().map(|()| false);
    };
    // The earlier value: from the table port25 installed before, else from the host now.
    let was = installed_comment()
        .and_then(|comment| loose_recorded(&comment))
        .or_else(read_loose);
    let comment = match was {
        Some(value) => format!("port25d: {LOOSE_WAS}{value}"),
        None => "port25d".to_owned(),
    };
    let table = rules.replacen(
        &format!("table inet {TABLE} {{\n"),
        &format!("table inet {TABLE} {{\n  comment \"{comment}\"\n"),
        1,
    );
    // `add` then `delete` then the table: one transaction that replaces it whole, whether or
    // not it was there.
    nft(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\n{table}"
    ))?;
    // nf_conntrack is loaded now (the table's ct expressions need it), so the sysctl exists.
    if read_loose() != Some(0)
        && let Err(source) = std::fs::write(LOOSE, "0")
    {
        // Half a set-up is none: the table goes again, and the caller refuses the policy.
        if let Err(err) = nft(&format!("delete table inet {TABLE}\n")) {
            tracing::warn!("removing the table again: {err}");
        }
        return Err(NetfilterError::Loose { source });
    }
    Ok(true)
}

/// Removes port25's table, if there is one, and restores `nf_conntrack_tcp_loose`.
pub(crate) fn remove() -> Result<(), NetfilterError> {
    let Some(comment) = installed_comment() else {
        return Ok(());
    };
    nft(&format!("delete table inet {TABLE}\n"))?;
    if let Some(value) = loose_recorded(&comment)
        && value != 0
        && let Err(err) = std::fs::write(LOOSE, value.to_string())
    {
        tracing::warn!("cannot restore {LOOSE} to {value}: {err}");
    }
    tracing::info!("removed the nftables table inet {TABLE}");
    Ok(())
}

/// The comment of the installed table, `None` when there is no such table (or no nft).
fn installed_comment() -> Option<String> {
    let output = Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    let comment = listing
        .lines()
        .find_map(|line| line.trim().strip_prefix("comment \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or("");
    Some(comment.to_owned())
}

fn loose_recorded(comment: &str) -> Option<u32> {
    let (_, value) = comment.split_once(LOOSE_WAS)?;
    value.trim().parse().ok()
}

fn read_loose() -> Option<u32> {
    std::fs::read_to_string(LOOSE).ok()?.trim().parse().ok()
}

/// Runs `nft -f -` on `script`.
fn nft(script: &str) -> Result<(), NetfilterError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetfilterError::NoNft)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NetfilterError::NoNft)?;
    }
    let output = child.wait_with_output().map_err(NetfilterError::NoNft)?;
    if !output.status.success() {
        return Err(NetfilterError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("t.toml")).expect("the test config parses")
    }

    #[test]
    fn only_an_enforcing_synproxy_policy_on_interfaces_needs_a_table() {
        let base = "interfaces = [\"gw0\"]\nports = [25, 2525]\n";
        assert!(ruleset(&config(&format!("{base}policy = \"ratelimit\"\n"))).is_none());
        assert!(
            ruleset(&config(&format!(
                "{base}policy = \"synproxy\"\nmode = \"monitor\"\n"
            )))
            .is_none()
        );
        assert!(ruleset(&config("policy = \"synproxy\"\n")).is_none());
        let rules = ruleset(&config(&format!(
            "{base}policy = \"synproxy\"\n[synproxy]\nmss4 = 1400\nwscale = 9\n"
        )))
        .expect("a table");
        assert!(rules.contains(
            "meta nfproto ipv4 iifname { \"gw0\" } tcp dport { 25, 2525 } tcp flags syn / \
             fin,syn,rst,ack notrack"
        ));
        assert!(rules.contains("meta nfproto ipv4 iifname"));
        assert!(rules.contains("synproxy mss 1400 wscale 9 timestamp sack-perm"));
        assert!(
            !rules.contains("nfproto ipv6"),
            "IPv6 is left alone without synproxy.ipv6:\n{rules}"
        );
        assert!(rules.contains(
            "meta nfproto ipv4 iifname { \"gw0\" } tcp dport { 25, 2525 } ct state invalid drop"
        ));
        let both = ruleset(&config(&format!(
            "{base}policy = \"synproxy\"\n[synproxy]\nipv6 = true\n"
        )))
        .expect("a table");
        assert!(both.contains("meta nfproto ipv6 iifname { \"gw0\" } tcp dport { 25, 2525 } ct state invalid,untracked synproxy mss 1440 wscale 7"));
        assert!(both.contains("    iifname { \"gw0\" } tcp dport { 25, 2525 } tcp flags syn"));
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
