//! The reference's corner cases, pinned with crafted bytes (no root needed).

use super::*;

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0x25, 0x01, 0x02, 0, 0, 0, 0, 0x10];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// An IPv6 header from 2001:db8:3::1 whose next header is `next`, then `rest` (the payload length
/// says so).
fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(ETH_IPV6);
    let payload = u16::try_from(rest.len()).unwrap().to_be_bytes();
    frame.extend_from_slice(&[0x60, 0, 0, 0, payload[0], payload[1], next, 64]);
    frame.extend_from_slice(&"2001:db8:3::1".parse::<Ipv6Addr>().unwrap().octets());
    frame.extend_from_slice(&"2001:db8:25::1".parse::<Ipv6Addr>().unwrap().octets());
    frame.extend_from_slice(rest);
    frame
}

/// A 20-byte TCP header to `dport` with this data offset and SYN.
fn tcp_header(dport: u16, data_offset: u8) -> Vec<u8> {
    let mut tcp = 40000u16.to_be_bytes().to_vec();
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&[
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        data_offset << 4,
        0x02,
        0xff,
        0xff,
        0,
        0,
        0,
        0,
    ]);
    tcp
}

fn judged(source: &str, dport: u16) -> Parsed {
    Parsed::Tcp {
        source: source.parse().unwrap(),
        dport,
        flags: Some(0x02),
    }
}

#[test]
fn reference_corner_cases() {
    let v6 = "2001:db8:3::1";
    let cat = |parts: &[&[u8]]| parts.concat();
    // RFC 8200 fragment header: offset in the top 13 bits of bytes 2-3, M in the lowest bit. A
    // first fragment with M set is judged; offset 1 is a non-first fragment.
    let first = [TCP, 0, 0x00, 0x01, 0, 0, 0, 7];
    let second = [TCP, 0, 0x00, 0x08, 0, 0, 0, 7];
    let frame = ipv6(FRAGMENT, &cat(&[&first, &tcp_header(25, 5)]));
    assert_eq!(reference::parse(&frame), judged(v6, 25));
    let frame = ipv6(FRAGMENT, &cat(&[&second, &tcp_header(25, 5)]));
    assert_eq!(reference::parse(&frame), Parsed::Other);
    // An AH with payload length 0 is 8 bytes ((0 + 2) * 4), though etherparse calls it invalid.
    let frame = ipv6(
        AUTH,
        &cat(&[&[TCP, 0, 0, 0, 0, 0, 0, 1], &tcp_header(25, 5)]),
    );
    assert_eq!(reference::parse(&frame), judged(v6, 25));
    // A hop-by-hop header of 16 bytes cut after 10: only what follows it decides.
    let cut = [UDP, 1, 1, 4, 0, 0, 0, 0, 0, 0];
    assert_eq!(reference::parse(&ipv6(HOP_BY_HOP, &cut)), Parsed::Other);
    let cut = [TCP, 1, 1, 4, 0, 0, 0, 0, 0, 0];
    assert_eq!(reference::parse(&ipv6(HOP_BY_HOP, &cut)), Parsed::Malformed);
    // Nine extension headers: malformed even if the ninth is a non-first fragment.
    let mut chain = Vec::new();
    for _ in 0..8 {
        chain.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
    }
    let last = chain.len() - 8;
    chain[last] = FRAGMENT;
    chain.extend_from_slice(&second);
    assert_eq!(
        reference::parse(&ipv6(DEST_OPTS, &chain)),
        Parsed::Malformed
    );
    // TCP options cut short do not matter; a data offset below 5 does.
    let frame = ipv6(TCP, &tcp_header(25, 15));
    assert_eq!(reference::parse(&frame), judged(v6, 25));
    let frame = ipv6(TCP, &tcp_header(25, 4));
    let bad_offset = Parsed::Tcp {
        source: v6.parse().unwrap(),
        dport: 25,
        flags: None,
    };
    assert_eq!(reference::parse(&frame), bad_offset);
    // A version that does not match the ethertype is the stack's to drop: not ours.
    let mut frame = ethernet(ETH_IPV4);
    frame.extend_from_slice(&[
        0x65, 0, 0, 40, 0, 0, 0, 0, 64, TCP, 0, 0, 198, 18, 3, 3, 198, 18, 0, 1,
    ]);
    frame.extend_from_slice(&tcp_header(25, 5));
    assert_eq!(reference::parse(&frame), Parsed::Other);
    frame[14] = 0x45;
    assert_eq!(reference::parse(&frame), judged("198.18.3.3", 25));
    // An IHL below 5 is malformed when the protocol is TCP, and not ours when it is not.
    frame[14] = 0x44;
    assert_eq!(reference::parse(&frame), Parsed::Malformed);
    frame[23] = UDP;
    assert_eq!(reference::parse(&frame), Parsed::Other);
    // IPv4 AH (IPsec transport mode) is walked to the TCP header behind it.
    let mut frame = ethernet(ETH_IPV4);
    frame.extend_from_slice(&[
        0x45, 0, 0, 52, 0, 0, 0, 0, 64, AUTH, 0, 0, 198, 18, 3, 3, 198, 18, 0, 1,
    ]);
    frame.extend_from_slice(&[TCP, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    frame.extend_from_slice(&tcp_header(25, 5));
    assert_eq!(reference::parse(&frame), judged("198.18.3.3", 25));
    // The IP length bounds what is read: a first fragment of 2 TCP bytes, padded to 60 bytes, has
    // no ports (the padding is not packet data); a total length past the frame is a packet cut
    // short; a trailer after a true length changes nothing.
    let mut frame = ethernet(ETH_IPV4);
    frame.extend_from_slice(&[
        0x45, 0, 0, 22, 0, 0, 0x20, 0, 64, TCP, 0, 0, 198, 18, 3, 3, 198, 18, 0, 1, 0x9c, 0x40,
    ]);
    frame.resize(60, 0);
    assert_eq!(reference::parse(&frame), Parsed::Malformed);
    let mut frame = ethernet(ETH_IPV4);
    frame.extend_from_slice(&[
        0x45, 0, 0, 41, 0, 0, 0, 0, 64, TCP, 0, 0, 198, 18, 3, 3, 198, 18, 0, 1,
    ]);
    frame.extend_from_slice(&tcp_header(25, 5));
    let cut_short = Parsed::Tcp {
        source: "198.18.3.3".parse().unwrap(),
        dport: 25,
        flags: None,
    };
    assert_eq!(reference::parse(&frame), cut_short);
    frame[17] = 40;
    frame.extend_from_slice(&[0xee; 24]);
    assert_eq!(reference::parse(&frame), judged("198.18.3.3", 25));
    // IPv6: a payload length of 0 before TCP leaves no TCP header; before hop-by-hop it is a
    // jumbogram's, and the frame alone bounds the packet.
    let mut frame = ipv6(TCP, &tcp_header(25, 5));
    frame[18..20].copy_from_slice(&[0, 0]);
    assert_eq!(reference::parse(&frame), Parsed::Malformed);
    let mut frame = ipv6(
        HOP_BY_HOP,
        &cat(&[&[TCP, 0, 1, 4, 0, 0, 0, 0], &tcp_header(25, 5)]),
    );
    frame[18..20].copy_from_slice(&[0, 0]);
    assert_eq!(reference::parse(&frame), judged(v6, 25));
}
