//! Lists, ports and every encapsulation the parser walks: VLAN tags, IPv4 options and AH, IPv6 extension headers, wrong versions.

use super::*;

#[test]
fn ipv4_lists_ports_and_encapsulations() {
    let datapath = load(POLICY);
    let rows = vec![
        row(
            "allowlisted SYN",
            tcp(ALLOWED4, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "denylisted SYN",
            tcp(DENIED4, 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "deny beats a shorter allow",
            tcp("198.18.2.70", 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "allow /24 outside the deny /26",
            tcp("198.18.2.10", 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "not allowlisted SYN",
            tcp(OTHER4, 25).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "not allowlisted ACK",
            tcp(OTHER4, 25).flags(TCP_ACK).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "second protected port",
            tcp(OTHER4, 2525).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "submission 587 untouched",
            tcp(OTHER4, 587).build(),
            XDP_PASS,
            None,
        ),
        row(
            "smtps 465 untouched",
            tcp(DENIED4, 465).build(),
            XDP_PASS,
            None,
        ),
        row("http 80 untouched", tcp(OTHER4, 80).build(), XDP_PASS, None),
        row(
            "UDP to 25 untouched",
            udp(OTHER4, 25).build(),
            XDP_PASS,
            None,
        ),
        row("ICMP untouched", icmp(OTHER4).build(), XDP_PASS, None),
        row("ARP untouched", arp(), XDP_PASS, None),
        row(
            "802.1Q allowlisted",
            tcp(ALLOWED4, 25).vlan(ETH_P_8021Q).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "802.1Q not allowlisted",
            tcp(OTHER4, 25).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q not allowlisted",
            tcp(OTHER4, 25).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q denylisted",
            tcp(DENIED4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "double-tagged 587 untouched",
            tcp(OTHER4, 587)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            None,
        ),
        row(
            "IPv4 options 4 bytes",
            tcp(OTHER4, 25).ipv4_options(4).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv4 options 40 bytes (IHL 15)",
            tcp(OTHER4, 25).ipv4_options(40).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "IPv4 options, allowlisted",
            tcp(ALLOWED4, 25).ipv4_options(40).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "IPv4 options 40 bytes, 587",
            tcp(OTHER4, 587).ipv4_options(40).build(),
            XDP_PASS,
            None,
        ),
        row(
            "first fragment judged",
            tcp(OTHER4, 25).fragment(0, true).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "non-first fragment passes",
            tcp(OTHER4, 25).fragment(3, false).build(),
            XDP_PASS,
            None,
        ),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IPv4 rows checked");
}

#[test]
fn ipv6_lists_and_extension_headers() {
    let datapath = load(POLICY);
    let rows = vec![
        row(
            "allowlisted SYN",
            tcp(ALLOWED6, 25).build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "denylisted SYN",
            tcp(DENIED6, 25).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "not allowlisted SYN",
            tcp(OTHER6, 25).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row("587 untouched", tcp(OTHER6, 587).build(), XDP_PASS, None),
        row(
            "UDP to 25 untouched",
            udp(OTHER6, 25).build(),
            XDP_PASS,
            None,
        ),
        row("ICMPv6 untouched", icmp(OTHER6).build(), XDP_PASS, None),
        row(
            "802.1Q not allowlisted",
            tcp(OTHER6, 25).vlan(ETH_P_8021Q).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "802.1ad+802.1Q allowlisted",
            tcp(ALLOWED6, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "hop-by-hop",
            tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "routing",
            tcp(OTHER6, 25).ext(EXT_ROUTING).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "destination options",
            tcp(DENIED6, 25).ext(EXT_DEST_OPTS).build(),
            XDP_DROP,
            dropped(Reason::Denylisted),
        ),
        row(
            "hop-by-hop, routing, dest opts, allowlisted",
            tcp(ALLOWED6, 25)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .ext(EXT_DEST_OPTS)
                .build(),
            XDP_PASS,
            passed(Reason::Allowlisted),
        ),
        row(
            "hop-by-hop, routing, dest opts, 587",
            tcp(OTHER6, 587)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .ext(EXT_DEST_OPTS)
                .build(),
            XDP_PASS,
            None,
        ),
        row(
            "first fragment judged",
            tcp(OTHER6, 25).fragment(0, true).build(),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "non-first fragment passes",
            tcp(OTHER6, 25).fragment(5, true).build(),
            XDP_PASS,
            None,
        ),
        row(
            "8 extension headers: judged",
            ext_chain(OTHER6, 8),
            XDP_DROP,
            dropped(Reason::NotAllowlisted),
        ),
        row(
            "9 extension headers: malformed",
            ext_chain(OTHER6, 9),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
        row(
            "9 extension headers, allowlisted: still malformed",
            ext_chain(ALLOWED6, 9),
            XDP_DROP,
            dropped(Reason::Malformed),
        ),
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
fn with_ipv4_ah(frame: Vec<u8>) -> Vec<u8> {
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
            row(
                "IPv4 AH, not allowlisted",
                with_ipv4_ah(tcp(OTHER4, 25).build()),
                XDP_DROP,
                dropped(Reason::NotAllowlisted),
            ),
            row(
                "IPv4 AH, allowlisted",
                with_ipv4_ah(tcp(ALLOWED4, 25).build()),
                XDP_PASS,
                passed(Reason::Allowlisted),
            ),
            row(
                "IPv4 AH, 587",
                with_ipv4_ah(tcp(OTHER4, 587).build()),
                XDP_PASS,
                None,
            ),
            row(
                "IPv4 AH cut before TCP",
                with_ipv4_ah(tcp(OTHER4, 25).build())[..40].to_vec(),
                XDP_DROP,
                dropped(Reason::Malformed),
            ),
            row(
                "version 6 behind the IPv4 ethertype: the stack's to drop",
                v6_in_v4,
                XDP_PASS,
                None,
            ),
            row(
                "broken IPv4 header carrying UDP",
                broken_udp,
                XDP_PASS,
                None,
            ),
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
        &[row(
            "three VLAN tags",
            tcp(OTHER4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .vlan(ETH_P_8021Q)
                .build(),
            XDP_PASS,
            None,
        )],
    );
}
