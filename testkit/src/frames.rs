//! Crafted Ethernet frames for BPF_PROG_TEST_RUN: every header the datapath walks, each knob an
//! attacker could turn (VLAN tags, IPv4 options and fragments, IPv6 extension headers, truncation).
//! Checksums are left zero: XDP runs before anything verifies them. Frames that a real stack must
//! accept (the flood labs' spoofed SYNs) get them with [`fix_ipv4_tcp_checksums`].

use std::net::IpAddr;

pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const TCP_SYN: u8 = 0x02;
/// Destination of every crafted IPv6 frame.
const GATEWAY_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 1);
pub const TCP_ACK: u8 = 0x10;

/// Sources of the verdict tables (tests and bench): in their policies' allow list, in their deny
/// list, and in no list, per family.
pub const ALLOWED4: &str = "198.18.1.10";
pub const DENIED4: &str = "198.18.2.66";
pub const OTHER4: &str = "198.18.3.3";
pub const ALLOWED6: &str = "2001:db8:1::10";
pub const DENIED6: &str = "2001:db8:2::66";
pub const OTHER6: &str = "2001:db8:3::3";

/// IPv6 extension header kinds (next-header numbers).
pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_DEST_OPTS: u8 = 60;

#[derive(Clone, Debug)]
enum L4 {
    Tcp { dport: u16, flags: u8 },
    Udp { dport: u16 },
    Icmp,
}

/// A frame under construction. Start with [`tcp`], [`udp`] or [`icmp`], refine, then [`Self::build`].
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    src: IpAddr,
    /// None: the gateway (198.18.0.1 or 2001:db8:25::1).
    dst: Option<IpAddr>,
    sport: u16,
    seq: u32,
    ack: u32,
    vlans: Vec<u16>,
    ipv4_options: Vec<u8>,
    /// (fragment offset in 8-byte units, more fragments)
    fragment: Option<(u16, bool)>,
    ipv6_ext: Vec<u8>,
    l4: L4,
    /// Overrides the IPv4 total length or the IPv6 payload length (a length that lies).
    ip_length: Option<u16>,
    /// Bytes appended after the packet: Ethernet padding or a trailer, which no IP length covers.
    padding: usize,
    truncate_to: Option<usize>,
    /// TCP options (padded to a multiple of 4 with End-of-list).
    tcp_options: Vec<u8>,
    /// Real IPv4 and TCP checksums rather than zeros (an untagged frame without IP options).
    checksummed: bool,
}

/// A TCP SYN from `src` to destination port `dport`.
pub fn tcp(src: &str, dport: u16) -> FrameBuilder {
    FrameBuilder::new(
        src,
        L4::Tcp {
            dport,
            flags: TCP_SYN,
        },
    )
}

pub fn udp(src: &str, dport: u16) -> FrameBuilder {
    FrameBuilder::new(src, L4::Udp { dport })
}

pub fn icmp(src: &str) -> FrameBuilder {
    FrameBuilder::new(src, L4::Icmp)
}

/// An ARP request: not IP at all.
pub fn arp() -> Vec<u8> {
    let mut frame = ethernet(0x0806);
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10, 198, 18, 0, 10]);
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 1]);
    frame
}

/// A frame wherever bytes are wanted: `drops("…", tcp(OTHER4, 25), …)` in the verdict tables.
impl From<FrameBuilder> for Vec<u8> {
    fn from(builder: FrameBuilder) -> Self {
        builder.build()
    }
}

impl FrameBuilder {
    fn new(src: &str, l4: L4) -> Self {
        Self {
            src: src.parse().expect("test source address"),
            dst: None,
            sport: 40000,
            seq: 1,
            ack: 0,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            fragment: None,
            ipv6_ext: Vec::new(),
            l4,
            ip_length: None,
            padding: 0,
            truncate_to: None,
            tcp_options: Vec::new(),
            checksummed: false,
        }
    }

    /// Sends to `dst` instead of the gateway (same family as the source).
    pub fn to(mut self, dst: &str) -> Self {
        self.dst = Some(dst.parse().expect("test destination address"));
        self
    }

    pub fn sport(mut self, sport: u16) -> Self {
        self.sport = sport;
        self
    }

    /// TCP sequence and acknowledgment numbers.
    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Self {
        self.seq = seq;
        self.ack = ack;
        self
    }

    /// TCP options, as on the wire (padded to a multiple of 4 bytes).
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        self.tcp_options = options.to_vec();
        self.tcp_options.resize(options.len().div_ceil(4) * 4, 0);
        self
    }

    /// With correct IPv4 header and TCP checksums, as a receiving stack wants them.
    pub fn checksummed(mut self) -> Self {
        self.checksummed = true;
        self
    }

    /// Adds a VLAN tag with this TPID (outermost first).
    pub fn vlan(mut self, tpid: u16) -> Self {
        self.vlans.push(tpid);
        self
    }

    pub fn flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { dport, .. } = self.l4 {
            self.l4 = L4::Tcp { dport, flags };
        }
        self
    }

    /// IPv4 options of `len` bytes (a multiple of 4, at most 40): NOPs ending in End-of-list.
    pub fn ipv4_options(mut self, len: usize) -> Self {
        assert!(len.is_multiple_of(4) && len <= 40);
        self.ipv4_options = vec![1; len];
        if let Some(last) = self.ipv4_options.last_mut() {
            *last = 0;
        }
        self
    }

    /// Marks the packet a fragment: IPv4 header fields, or an IPv6 fragment header appended to the
    /// extension chain.
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Self {
        if self.src.is_ipv6() {
            let field = (offset_units << 3) | u16::from(more);
            self.ipv6_ext.push(EXT_FRAGMENT);
            self.ipv6_ext.extend_from_slice(&[0, 0]); // next header + reserved, patched in build
            self.ipv6_ext.extend_from_slice(&field.to_be_bytes());
            self.ipv6_ext.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            self.fragment = Some((offset_units, more));
        }
        self
    }

    /// Appends an IPv6 extension header (hop-by-hop, routing or destination options) of 8 bytes.
    pub fn ext(mut self, kind: u8) -> Self {
        assert!(matches!(kind, EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS));
        self.ipv6_ext.push(kind);
        // next header (patched), hdr ext len 0 (= 8 bytes), then 6 bytes: PadN / routing fields.
        self.ipv6_ext.extend_from_slice(&[0, 0]);
        if kind == EXT_ROUTING {
            self.ipv6_ext.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // type 0, segments left 0
        } else {
            self.ipv6_ext.extend_from_slice(&[1, 4, 0, 0, 0, 0]); // PadN of 4
        }
        self
    }

    /// Writes `len` into the IPv4 total length (or IPv6 payload length) field instead of the true
    /// length.
    pub fn ip_length(mut self, len: u16) -> Self {
        self.ip_length = Some(len);
        self
    }

    /// Appends zero bytes after the packet until the frame is `len` bytes long, as Ethernet pads
    /// short frames to 60 bytes.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.padding = len.saturating_sub(self.build().len());
        self
    }

    /// Appends `len` zero bytes after the packet: a trailer some devices add.
    pub fn trailer(mut self, len: usize) -> Self {
        self.padding += len;
        self
    }

    /// Cuts the frame to its first `len` bytes.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate_to = Some(len);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let protocol = match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp => {
                if self.src.is_ipv6() {
                    58
                } else {
                    1
                }
            }
        };
        let mut frame = match self.src {
            IpAddr::V4(src) => {
                let mut frame = self.link(0x0800);
                let ihl = (20 + self.ipv4_options.len()) / 4;
                let total = self.ip_length.unwrap_or((ihl * 4 + l4.len()) as u16);
                let (offset, more) = self.fragment.unwrap_or((0, false));
                let frag = (u16::from(more) << 13) | offset;
                frame.push(0x40 | ihl as u8);
                frame.push(0);
                frame.extend_from_slice(&total.to_be_bytes());
                frame.extend_from_slice(&[0x12, 0x34]);
                frame.extend_from_slice(&frag.to_be_bytes());
                frame.extend_from_slice(&[64, protocol, 0, 0]);
                frame.extend_from_slice(&src.octets());
                match self.dst {
                    Some(IpAddr::V4(dst)) => frame.extend_from_slice(&dst.octets()),
                    _ => frame.extend_from_slice(&[198, 18, 0, 1]),
                }
                frame.extend_from_slice(&self.ipv4_options);
                frame
            }
            IpAddr::V6(src) => {
                let mut frame = self.link(0x86dd);
                let ext = self.chained_ext(protocol);
                let payload = self.ip_length.unwrap_or((ext.len() + l4.len()) as u16);
                let first = if self.ipv6_ext.is_empty() {
                    protocol
                } else {
                    self.ipv6_ext[0]
                };
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&payload.to_be_bytes());
                frame.extend_from_slice(&[first, 64]);
                frame.extend_from_slice(&src.octets());
                match self.dst {
                    Some(IpAddr::V6(dst)) => frame.extend_from_slice(&dst.octets()),
                    _ => frame.extend_from_slice(&GATEWAY_V6.octets()),
                }
                frame.extend_from_slice(&ext);
                frame
            }
        };
        frame.extend_from_slice(&l4);
        if self.checksummed {
            fix_tcp_checksums(&mut frame);
        }
        frame.resize(frame.len() + self.padding, 0);
        if let Some(len) = self.truncate_to {
            frame.truncate(len);
        }
        frame
    }

    /// The extension headers with each one's next-header field pointing at the following one.
    fn chained_ext(&self, protocol: u8) -> Vec<u8> {
        // ipv6_ext holds, per header, its kind byte followed by its 8 bytes; rebuild the chain.
        let mut headers: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut rest = &self.ipv6_ext[..];
        while !rest.is_empty() {
            headers.push((rest[0], rest[1..9].to_vec()));
            rest = &rest[9..];
        }
        let mut out = Vec::new();
        for (i, (_, body)) in headers.iter().enumerate() {
            let next = headers.get(i + 1).map_or(protocol, |(kind, _)| *kind);
            let mut body = body.clone();
            body[0] = next;
            out.extend_from_slice(&body);
        }
        out
    }

    fn link(&self, ethertype: u16) -> Vec<u8> {
        let mut frame = ethernet(self.vlans.first().copied().unwrap_or(ethertype));
        for (i, _) in self.vlans.iter().enumerate() {
            let inner = self.vlans.get(i + 1).copied().unwrap_or(ethertype);
            frame.extend_from_slice(&(100 + i as u16).to_be_bytes()); // VLAN id
            frame.extend_from_slice(&inner.to_be_bytes());
        }
        frame
    }

    fn l4_bytes(&self) -> Vec<u8> {
        match self.l4 {
            L4::Tcp { dport, flags } => {
                let mut tcp = Vec::with_capacity(20);
                tcp.extend_from_slice(&self.sport.to_be_bytes());
                tcp.extend_from_slice(&dport.to_be_bytes());
                tcp.extend_from_slice(&self.seq.to_be_bytes());
                tcp.extend_from_slice(&self.ack.to_be_bytes());
                let offset = ((20 + self.tcp_options.len()) / 4) as u8;
                tcp.extend_from_slice(&[offset << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
                tcp.extend_from_slice(&self.tcp_options);
                tcp
            }
            L4::Udp { dport } => {
                let mut udp = Vec::with_capacity(8);
                udp.extend_from_slice(&40000u16.to_be_bytes());
                udp.extend_from_slice(&dport.to_be_bytes());
                udp.extend_from_slice(&[0, 8, 0, 0]);
                udp
            }
            L4::Icmp => vec![8, 0, 0, 0, 0, 1, 0, 1],
        }
    }
}

/// Ethernet header to the gateway with this ethertype.
fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x10];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// The Internet checksum (RFC 1071) over `chunks`, each a run of big-endian 16-bit words (an odd
/// last byte padded with zero).
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Offsets in an untagged Ethernet + IPv4 (no options) + TCP frame.
pub const IPV4_AT: usize = 14;
pub const TCP_AFTER_IPV4_AT: usize = IPV4_AT + 20;
/// Where TCP starts in an untagged Ethernet + IPv6 frame without extension headers.
pub const TCP_AFTER_IPV6_AT: usize = IPV4_AT + 40;

/// Sets the IPv4 header checksum (for IPv4) and the TCP checksum (over its pseudo-header) of an
/// untagged Ethernet + IPv4 (no options) or IPv6 (no extension headers) + TCP frame, so that a
/// receiving stack takes it for real.
pub fn fix_tcp_checksums(frame: &mut [u8]) {
    let ip = IPV4_AT;
    let v6 = frame[12..14] == [0x86, 0xdd];
    let tcp = if v6 {
        TCP_AFTER_IPV6_AT
    } else {
        TCP_AFTER_IPV4_AT
    };
    if !v6 {
        frame[ip + 10..ip + 12].fill(0);
        let ip_sum = checksum(&[&frame[ip..tcp]]);
        frame[ip + 10..ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    }
    frame[tcp + 16..tcp + 18].fill(0);
    let tcp_sum = checksum(&[&pseudo_header(frame), &frame[tcp..]]);
    frame[tcp + 16..tcp + 18].copy_from_slice(&tcp_sum.to_be_bytes());
}

/// The TCP pseudo-header (RFC 9293 § 3.1, RFC 8200 § 8.1) of a frame as [`fix_tcp_checksums`]
/// takes it: with its checksum, the one's complement sum of it and the segment is zero.
pub fn pseudo_header(frame: &[u8]) -> Vec<u8> {
    let ip = IPV4_AT;
    if frame[12..14] == [0x86, 0xdd] {
        let length = (frame.len() - TCP_AFTER_IPV6_AT) as u32;
        let mut pseudo = frame[ip + 8..ip + 40].to_vec();
        pseudo.extend_from_slice(&length.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        pseudo
    } else {
        let length = u16::try_from(frame.len() - TCP_AFTER_IPV4_AT).expect("a short segment");
        let mut pseudo = frame[ip + 12..ip + 20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&length.to_be_bytes());
        pseudo
    }
}

/// Rewrites an untagged SYN frame's MACs, source address (of the frame's family), source port and
/// sequence number, and fixes the checksums: one more connection attempt of a spoofed flood, which
/// the gateway's stack takes for real.
pub fn respoof_syn(
    frame: &mut [u8],
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    src: impl Into<std::net::IpAddr>,
    rng: &mut crate::rng::Rng,
) {
    let ip = IPV4_AT;
    frame[..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    let tcp = match src.into() {
        std::net::IpAddr::V4(src) => {
            frame[ip + 12..ip + 16].copy_from_slice(&src.octets());
            TCP_AFTER_IPV4_AT
        }
        std::net::IpAddr::V6(src) => {
            frame[ip + 8..ip + 24].copy_from_slice(&src.octets());
            TCP_AFTER_IPV6_AT
        }
    };
    let r = rng.next_u64();
    let sport = 1024 + (r % 64_000) as u16;
    frame[tcp..tcp + 2].copy_from_slice(&sport.to_be_bytes());
    frame[tcp + 4..tcp + 8].copy_from_slice(&((r >> 32) as u32).to_be_bytes());
    fix_tcp_checksums(frame);
}
