//! Frames cut short, at named points and at every byte, and IP lengths that lie either way.

use super::*;

#[test]
fn truncated_frames() {
    let datapath = load(POLICY);
    // Offsets: Ethernet 14, IPv4 20 (34), TCP ports end at 38, TCP header at 54; IPv6 header ends at 54.
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, as drivers never pass them up.
    #[rustfmt::skip]
    let rows = vec![
        drops("Ethernet header only, IPv4 ethertype", tcp(OTHER4, 25).truncate(14), Malformed),
        untouched("Ethernet header only, ARP ethertype", arp()[..14].to_vec()),
        untouched("VLAN tag cut", tcp(OTHER4, 25).vlan(ETH_P_8021Q).truncate(16)),
        drops("IPv4 header cut", tcp(OTHER4, 25).truncate(30), Malformed),
        drops("IPv4 options cut", tcp(OTHER4, 25).ipv4_options(40).truncate(50), Malformed),
        drops("TCP ports cut", tcp(OTHER4, 25).truncate(36), Malformed),
        drops("first fragment too short for ports", tcp(OTHER4, 25).fragment(0, true).truncate(36), Malformed),
        drops("TCP header cut after ports, port 25", tcp(OTHER4, 25).truncate(40), Malformed),
        drops("TCP header cut after ports, allowlisted", tcp(ALLOWED4, 25).truncate(40), Malformed),
        untouched("TCP header cut after ports, port 587", tcp(OTHER4, 587).truncate(40)),
        untouched("UDP cut", udp(OTHER4, 25).truncate(36)),
        drops("IPv6 header cut", tcp(OTHER6, 25).truncate(40), Malformed),
        drops("IPv6 extension header cut", tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).truncate(58), Malformed),
        drops("IPv6 TCP ports cut", tcp(OTHER6, 25).truncate(56), Malformed),
        drops("IPv6 TCP header cut, port 25", tcp(OTHER6, 25).truncate(60), Malformed),
    ];
    let n = check(&datapath, &rows);
    println!("{n} truncation rows checked");
}

/// Bytes past the length the IP header declares (Ethernet padding, trailers) are not packet data,
/// as the kernel trims them; a declared length the frame does not hold is a truncated packet.
#[test]
fn ip_lengths_bound_what_is_read() {
    let datapath = load(POLICY);
    // A SYN is 54 bytes (IPv4) or 74 (IPv6); IPv4 header 20 bytes, IPv6 payload = TCP's 20.
    #[rustfmt::skip]
    let rows = vec![
        drops("IPv4 SYN padded to 60 bytes", tcp(OTHER4, 25).pad_to(60), NotAllowlisted),
        passes("IPv4 SYN, allowlisted, 24-byte trailer", tcp(ALLOWED4, 25).trailer(24), Allowlisted),
        drops("IPv4 first fragment of 2 TCP bytes, padded to 60: the ports are padding", tcp(ALLOWED4, 25).fragment(0, true).ip_length(22).pad_to(60), Malformed),
        drops("IPv4 total length ends after the ports, padded: TCP header cut", tcp(ALLOWED4, 25).ip_length(28).pad_to(60), Malformed),
        untouched("IPv4 total length ends after the ports, port 587: untouched", tcp(OTHER4, 587).ip_length(28).pad_to(60)),
        drops("IPv4 total length shorter than the IP header", tcp(ALLOWED4, 25).ip_length(19).pad_to(60), Malformed),
        drops("IPv4 total length 0", tcp(ALLOWED4, 25).ip_length(0), Malformed),
        drops("IPv4 total length shorter than the IP options", tcp(ALLOWED4, 25).ipv4_options(8).ip_length(24).trailer(40), Malformed),
        drops("IPv4 total length 1 byte past the frame, allowlisted", tcp(ALLOWED4, 25).ip_length(41), Malformed),
        untouched("IPv4 total length 1000 past a 54-byte frame, port 587: untouched", tcp(OTHER4, 587).ip_length(1054)),
        untouched("UDP whose IPv4 total length lies: not TCP, untouched", udp(OTHER4, 25).ip_length(500)),
        drops("IPv6 SYN, 16-byte trailer", tcp(OTHER6, 25).trailer(16), NotAllowlisted),
        passes("IPv6 SYN, allowlisted, payload length exact", tcp(ALLOWED6, 25), Allowlisted),
        drops("IPv6 payload length 2, padded: the ports are padding", tcp(ALLOWED6, 25).ip_length(2).pad_to(80), Malformed),
        drops("IPv6 payload length ends inside the extension header", tcp(ALLOWED6, 25).ext(EXT_DEST_OPTS).ip_length(4).trailer(8), Malformed),
        drops("IPv6 payload length 0 before TCP", tcp(ALLOWED6, 25).ip_length(0), Malformed),
        drops("IPv6 payload length 0 before hop-by-hop: a jumbogram, bounded by the frame", tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).ip_length(0), NotAllowlisted),
        drops("IPv6 payload length 1 past the frame, allowlisted", tcp(ALLOWED6, 25).ip_length(21), Malformed),
        untouched("IPv6 payload length past the frame, port 587: untouched", tcp(OTHER6, 587).ip_length(900)),
    ];
    let n = check(&datapath, &rows);
    println!("{n} IP length rows checked");
}

/// Cuts each frame at every length from the Ethernet header to its full size: below the IP header
/// the frame claims nothing (pass, uncounted); from there until the whole TCP header is readable
/// it is TCP to a protected port that cannot be read to a decision (malformed); whole, it is judged.
#[test]
fn truncation_at_every_byte() {
    let datapath = load(POLICY);
    // (name, frame, where the IP header starts, verdict of the whole frame)
    let cases = [
        ("IPv4", tcp(OTHER4, 25), 14, dropped(Reason::NotAllowlisted)),
        (
            "IPv4, 802.1ad+802.1Q, 40 bytes of options",
            tcp(ALLOWED4, 25)
                .vlan(ETH_P_8021AD)
                .vlan(ETH_P_8021Q)
                .ipv4_options(40),
            22,
            passed(Reason::Allowlisted),
        ),
        (
            "IPv6, hop-by-hop, routing, fragment (first), destination options",
            tcp(DENIED6, 25)
                .ext(EXT_HOP_BY_HOP)
                .ext(EXT_ROUTING)
                .fragment(0, true)
                .ext(EXT_DEST_OPTS),
            14,
            dropped(Reason::Denylisted),
        ),
        (
            "IPv6, 802.1Q",
            tcp(OTHER6, 2525).vlan(ETH_P_8021Q),
            18,
            dropped(Reason::NotAllowlisted),
        ),
    ];
    let mut checked = 0;
    for (name, builder, ip_start, whole) in cases {
        let full = builder.build();
        let rows: Vec<Row> = (14..=full.len())
            .map(|len| {
                let frame = full[..len].to_vec();
                let (action, counted) = if len < ip_start {
                    (XDP_PASS, None)
                } else if len < full.len() {
                    (XDP_DROP, dropped(Reason::Malformed))
                } else {
                    let action = match whole {
                        Some((Verdict::Pass, _)) => XDP_PASS,
                        _ => XDP_DROP,
                    };
                    (action, whole)
                };
                row(name, frame, action, counted)
            })
            .collect();
        checked += check(&datapath, &rows);
    }
    println!("{checked} truncation points checked");
}
