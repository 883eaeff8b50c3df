//! The nftables table `inet port25`, through the `nft` command: SYNs not tracked (both families)
//! unless their source is allowlisted, IPv4's SYNPROXY and the drop of what stays invalid. One
//! transaction replaces it whole, another the allowlisted sources.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use super::{Exempt, Handoff, NetfilterError};

const TABLE: &str = "port25";
/// The sets of allowlisted sources, by family.
const ALLOW4: &str = "allow4";
const ALLOW6: &str = "allow6";

/// The table as nft reads it.
pub(super) fn table(handoff: &Handoff) -> String {
    let Handoff {
        interfaces,
        ports,
        synproxy: s,
    } = handoff;
    let interfaces = interfaces
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Without synproxy.ipv6, IPv6 is left to the host as under policy ratelimit. The input chain
    // comes before the host's own filter chains, which may drop invalid packets first. IPv6's
    // SYNPROXY is ip6tables' (see ip6tables.rs): nftables' checks IPv6 checksums as IPv4.
    let only = if s.ipv6 { "" } else { "meta nfproto ipv4 " };
    let on = format!("iifname {{ {interfaces} }} tcp dport {{ {ports} }}");
    let syn = format!("{on} tcp flags syn / fin,syn,rst,ack");
    // An allowlisted source's SYN passed port25's XDP program: tracked, it goes to the MTA as
    // under the other policies, without SYNPROXY's second of latency (README).
    let allow6 = if s.ipv6 {
        format!("\n    {syn} ip6 saddr @{ALLOW6} counter accept")
    } else {
        String::new()
    };
    let synproxy = format!(
        "synproxy mss {} wscale {} timestamp sack-perm",
        s.mss4, s.wscale
    );
    format!(
        r#"table inet {TABLE} {{
  set {ALLOW4} {{
    type ipv4_addr; flags interval;
  }}
  set {ALLOW6} {{
    type ipv6_addr; flags interval;
  }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    {syn} ip saddr @{ALLOW4} counter accept{allow6}
    {only}{syn} notrack
  }}
  chain input {{
    type filter hook input priority filter - 1; policy accept;
    meta nfproto ipv4 {on} ct state invalid,untracked {synproxy}
    meta nfproto ipv4 {on} ct state invalid drop
  }}
}}
"#
    )
}

/// Installs (or replaces) `table` with `comment`, its sets holding `exempt`.
pub(super) fn install(table: &str, comment: &str, exempt: &Exempt) -> Result<(), NetfilterError> {
    let table = table.replacen(
        &format!("table inet {TABLE} {{\n"),
        &format!("table inet {TABLE} {{\n  comment \"{comment}\"\n"),
        1,
    );
    // `add` then `delete` then the table: one transaction that replaces it whole, whether or
    // not it was there.
    run(&format!(
        "add table inet {TABLE}\ndelete table inet {TABLE}\n{table}{}",
        elements(exempt)
    ))
}

/// Replaces what the installed table's sets hold with `exempt`, in one transaction.
pub(super) fn refill(exempt: &Exempt) -> Result<(), NetfilterError> {
    run(&format!(
        "flush set inet {TABLE} {ALLOW4}\nflush set inet {TABLE} {ALLOW6}\n{}",
        elements(exempt)
    ))
}

/// The `add element` commands that put `exempt` in the sets (none for an empty family: nft
/// refuses an empty element list).
pub(super) fn elements(exempt: &Exempt) -> String {
    let mut script = String::new();
    for (set, nets) in [
        (
            ALLOW4,
            exempt
                .v4
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ),
        (ALLOW6, exempt.v6.iter().map(ToString::to_string).collect()),
    ] {
        if !nets.is_empty() {
            let _ = writeln!(
                script,
                "add element inet {TABLE} {set} {{ {} }}",
                nets.join(", ")
            );
        }
    }
    script
}

pub(super) fn delete() -> Result<(), NetfilterError> {
    run(&format!("delete table inet {TABLE}\n"))
}

/// The comment of the installed table, `None` when there is no such table (or no nft).
pub(super) fn installed_comment() -> Option<String> {
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

/// Runs `nft -f -` on `script`.
fn run(script: &str) -> Result<(), NetfilterError> {
    super::feed(
        Command::new("nft").args(["-f", "-"]),
        script,
        NetfilterError::NoNft,
        NetfilterError::Refused,
    )
}
