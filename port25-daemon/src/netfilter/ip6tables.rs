//! IPv6's SYNPROXY, in ip6tables' legacy tables (x_tables), the only SYNPROXY of the kernel that
//! checks an IPv6 checksum as IPv6: nftables' (`nft_synproxy_do_eval`) calls `nf_ip_checksum`
//! for both families and drops every IPv6 segment a NIC has not verified. iptables-nft would
//! translate the rule into that same nftables expression, hence the legacy tools.
//!
//! A chain of port25's own, `PORT25` in table mangle, jumped to first from INPUT: mangle's INPUT
//! hook (priority -150) comes after conntrack and before any filter chain (0), nftables' or
//! iptables', which may drop invalid segments first. Written with `ip6tables-legacy-restore
//! --noflush`: one commit per change, nothing else of the host's tables touched.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use super::{Handoff, NetfilterError};

const CHAIN: &str = "PORT25";
const JUMP: &str = "-A INPUT -j PORT25";
/// The legacy tables in use in this network namespace, one name a line (/proc/self/net: the unit's
/// ProtectProc= leaves it where it hides other processes).
const TABLES: &str = "/proc/self/net/ip6_tables_names";
/// What one `multiport` match takes.
const MULTIPORT_MAX: usize = 15;

/// The chain's rules as ip6tables-restore reads them.
pub(super) fn chain(handoff: &Handoff) -> String {
    let s = &handoff.synproxy;
    let mut rules = String::new();
    for interface in handoff.interfaces {
        for ports in handoff.ports.chunks(MULTIPORT_MAX) {
            let ports = ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let matches = format!("-i {interface} -p tcp -m multiport --dports {ports}");
            let _ = writeln!(
                rules,
                "-A {CHAIN} {matches} -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY \
                 --sack-perm --timestamp --wscale {} --mss {}",
                s.wscale, s.mss6
            );
            let _ = writeln!(
                rules,
                "-A {CHAIN} {matches} -m conntrack --ctstate INVALID -j DROP"
            );
        }
    }
    rules
}

/// Puts `chain` in place of what the chain held, and the jump to it if there is none.
pub(super) fn install(chain: &str) -> Result<(), NetfilterError> {
    let jumps = installed().unwrap_or(0);
    let mut script = format!("*mangle\n:{CHAIN} - [0:0]\n{chain}");
    if jumps == 0 {
        let _ = writeln!(script, "-I INPUT 1 -j {CHAIN}");
    }
    script.push_str("COMMIT\n");
    restore(&script)
}

/// Removes the chain and the jumps to it, if there are any.
pub(super) fn remove() -> Result<bool, NetfilterError> {
    let Some(jumps) = installed() else {
        return Ok(false);
    };
    let mut script = String::from("*mangle\n");
    for _ in 0..jumps {
        let _ = writeln!(script, "-D INPUT -j {CHAIN}");
    }
    let _ = write!(script, "-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n");
    restore(&script).map(|()| true)
}

/// The number of jumps to the chain when the chain exists, `None` when it does not. Looks at the
/// table only if it is in use: listing it would create it.
fn installed() -> Option<usize> {
    let tables = std::fs::read_to_string(TABLES).ok()?;
    if !tables.lines().any(|name| name == "mangle") {
        return None;
    }
    let output = Command::new("ip6tables-legacy-save")
        .args(["-t", "mangle"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let listing = String::from_utf8_lossy(&output.stdout);
    parse_listing(&listing)
}

fn parse_listing(listing: &str) -> Option<usize> {
    let declared = format!(":{CHAIN} ");
    if !listing.lines().any(|line| line.starts_with(&declared)) {
        return None;
    }
    Some(listing.lines().filter(|line| line.trim() == JUMP).count())
}

/// Runs `ip6tables-legacy-restore --noflush` on `script`, waiting up to 5 s for iptables' lock
/// while another iptables command holds it.
fn restore(script: &str) -> Result<(), NetfilterError> {
    super::feed(
        Command::new("ip6tables-legacy-restore").args(["--wait", "5", "--noflush"]),
        script,
        NetfilterError::NoIp6tables,
        NetfilterError::Ip6tablesRefused,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_tells_the_chain_and_its_jumps() {
        let listing = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:PORT25 - [0:0]\n\
                       -A INPUT -j PORT25\n-A PORT25 -i gw0 -p tcp -j DROP\nCOMMIT\n";
        assert_eq!(parse_listing(listing), Some(1));
        assert_eq!(
            parse_listing(&listing.replace("-A INPUT -j PORT25\n", "")),
            Some(0)
        );
        assert_eq!(
            parse_listing("*mangle\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            None
        );
        assert_eq!(
            parse_listing("*mangle\n:PORT25X - [0:0]\nCOMMIT\n"),
            None,
            "another chain's name"
        );
    }
}
