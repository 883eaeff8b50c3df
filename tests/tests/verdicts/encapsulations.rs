//! Lists, ports and every encapsulation the parser walks: VLAN tags, IPv4 options and AH, IPv6 extension headers, wrong versions.

use super::*;

#[test]
fn ipv4_lists_ports_and_encapsulations() {
    let datapath = load(POLICY);
    #[rustfmt::skip]
    let rows = vec![
        passes("allowlisted SYN", tcp(ALLOWED4, 25), Allowlisted),
        drops("denylisted SYN", tcp(DENIED4, 25), Denylisted),
        drops("deny beats a shorter allow", tcp("198.18.2.70", 25), Denylisted),
        passes("allow /24 outside the deny /26", tcp("198.18.2.10", 25), Allowlisted),
        drops("not allowlisted SYN", tcp(OTHER4, 25), NotAllowlisted),
        drops("not allowlisted ACK", tcp(OTHER4, 25).flags(TCP_ACK), NotAllowlisted),
        drops("second protected port", tcp(OTHER4, 2525), NotAllowlisted),
        untouched("submission 587 untouched", tcp(OTHER4, 587)),
        untouched("smtps 465 untouched", tcp(DENIED4, 465)),
        untouched("http 80 untouched", tcp(OTHER4, 80)),
        untouched("UDP to 25 untouched", udp(OTHER4, 25)),
        untouched("ICMP untouched", icmp(OTHER4)),
        untouched("ARP untouched", arp()),
        passes("802.1Q allowlisted", tcp(ALLOWED4, 25).vlan(ETH_P_8021Q), Allowlisted),
        drops("802.1Q not allowlisted", tcp(OTHER4, 25).vlan(ETH_P_8021Q), NotAllowlisted),
        drops("802.1ad+802.1Q not allowlisted", tcp(OTHER4, 25).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q), NotAllowlisted),
        drops("802.1ad+802.1Q denylisted", tcp(DENIED4, 25).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q), Denylisted),
        untouched("double-tagged 587 untouched", tcp(OTHER4, 587).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q)),
        drops("IPv4 options 4 bytes", tcp(OTHER4, 25).ipv4_options(4), NotAllowlisted),
        drops("IPv4 options 40 bytes (IHL 15)", tcp(OTHER4, 25).ipv4_options(40), NotAllowlisted),
        passes("IPv4 options, allowlisted", tcp(ALLOWED4, 25).ipv4_options(40), Allowlisted),
        untouched("IPv4 options 40 bytes, 587", tcp(OTHER4, 587).ipv4_options(40)),
        drops("first fragment judged", tcp(OTHER4, 25).fragment(0, true), NotAllowlisted),
        untouched("non-first fragment passes", tcp(OTHER4, 25).fragment(3, false)),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IPv4 rows checked");
}

#[test]
fn ipv6_lists_and_extension_headers() {
    let datapath = load(POLICY);
    #[rustfmt::skip]
    let rows = vec![
        passes("allowlisted SYN", tcp(ALLOWED6, 25), Allowlisted),
        drops("denylisted SYN", tcp(DENIED6, 25), Denylisted),
        drops("not allowlisted SYN", tcp(OTHER6, 25), NotAllowlisted),
        untouched("587 untouched", tcp(OTHER6, 587)),
        untouched("UDP to 25 untouched", udp(OTHER6, 25)),
        untouched("ICMPv6 untouched", icmp(OTHER6)),
        drops("802.1Q not allowlisted", tcp(OTHER6, 25).vlan(ETH_P_8021Q), NotAllowlisted),
        passes("802.1ad+802.1Q allowlisted", tcp(ALLOWED6, 25).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q), Allowlisted),
        drops("hop-by-hop", tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP), NotAllowlisted),
        drops("routing", tcp(OTHER6, 25).ext(EXT_ROUTING), NotAllowlisted),
        drops("destination options", tcp(DENIED6, 25).ext(EXT_DEST_OPTS), Denylisted),
        passes("hop-by-hop, routing, dest opts, allowlisted", tcp(ALLOWED6, 25).ext(EXT_HOP_BY_HOP).ext(EXT_ROUTING).ext(EXT_DEST_OPTS), Allowlisted),
        untouched("hop-by-hop, routing, dest opts, 587", tcp(OTHER6, 587).ext(EXT_HOP_BY_HOP).ext(EXT_ROUTING).ext(EXT_DEST_OPTS)),
        drops("first fragment judged", tcp(OTHER6, 25).fragment(0, true), NotAllowlisted),
        untouched("non-first fragment passes", tcp(OTHER6, 25).fragment(5, true)),
        drops("8 extension headers: judged", ext_chain(OTHER6, 8), NotAllowlisted),
        drops("9 extension headers: malformed", ext_chain(OTHER6, 9), Malformed),
        drops("9 extension headers, allowlisted: still malformed", ext_chain(ALLOWED6, 9), Malformed),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IPv6 rows checked");
}

fn ext_chain(src: &str, headers: usize) -> Vec<u8> {
    let mut frame = tcp(src, 25);
    for _ in 0..headers {
        frame = frame.ext(EXT_DEST_OPTS);
    }
    frame.build()
}

/// The frame with an IPv4 authentication header (IPsec transport mode) between IP and TCP.
fn with_ipv4_ah(frame: impl Into<Vec<u8>>) -> Vec<u8> {
    let frame: Vec<u8> = frame.into();
    const IP: usize = 14;
    let mut out = frame[..IP + 20].to_vec();
    out[IP + 9] = 51;
    let total = u16::from_be_bytes([out[IP + 2], out[IP + 3]]) + 12;
    out[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    // Next header TCP, length 1 ((1 + 2) * 4 = 12 bytes), reserved, SPI, sequence number.
    out.extend_from_slice(&[6, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&frame[IP + 20..]);
    out
}

#[test]
fn ipv4_ah_and_wrong_versions() {
    let datapath = load(POLICY);
    let mut v6_in_v4 = tcp(OTHER4, 25).build();
    v6_in_v4[14] = 0x65;
    let mut broken_udp = udp(OTHER4, 25).build();
    broken_udp[14] = 0x44; // IHL 4: broken, but plainly not TCP
    check(
        &datapath,
        &[
            drops(
                "IPv4 AH, not allowlisted",
                with_ipv4_ah(tcp(OTHER4, 25)),
                NotAllowlisted,
            ),
            passes(
                "IPv4 AH, allowlisted",
                with_ipv4_ah(tcp(ALLOWED4, 25)),
                Allowlisted,
            ),
            untouched("IPv4 AH, 587", with_ipv4_ah(tcp(OTHER4, 587))),
            drops(
                "IPv4 AH cut before TCP",
                with_ipv4_ah(tcp(OTHER4, 25))[..40].to_vec(),
                Malformed,
            ),
            untouched(
                "version 6 behind the IPv4 ethertype: the stack's to drop",
                v6_in_v4,
            ),
            untouched("broken IPv4 header carrying UDP", broken_udp),
        ],
    );
}

#[test]
fn more_than_two_vlan_tags_are_not_looked_into() {
    // Documented limit: the datapath reads two tags (802.1ad + 802.1Q). A third is an ethertype it
    // does not know, so the frame passes untouched; hosts that stack deeper attach to the inner
    // VLAN device instead.
    let datapath = load(POLICY);
    check(
        &datapath,
        &[untouched(
            "three VLAN tags",
            tcp(OTHER4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .vlan(ETH_P_8021Q),
        )],
    );
}
