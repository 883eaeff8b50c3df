//! The frame generator: well-formed frames the generator knows the verdict of, the same mutated
//! or cut at a header boundary, and garbage, each with the story of how it was built.

use super::*;

/// Where the interesting fields of a generated frame are, for targeted mutations.
#[derive(Clone, Debug, Default)]
pub(super) struct Marks {
    /// Offsets where one header ends and the next begins, and where key fields end.
    boundaries: Vec<usize>,
    /// Offsets of ethertype fields (Ethernet, then each VLAN tag).
    ethertypes: Vec<usize>,
    /// Offset of the IPv4 header (its version/IHL byte).
    ipv4: Option<usize>,
    /// Offsets of the IPv4 protocol, IPv6 next-header and extension next-header bytes.
    next_headers: Vec<usize>,
    /// Offsets of IPv6 extension header length bytes.
    ext_lengths: Vec<usize>,
    /// Offsets of 2-byte fragment fields (IPv4 flags+offset, IPv6 fragment header offset+M).
    fragments: Vec<usize>,
    /// Offset of the TCP (or other layer-4) header.
    l4: Option<usize>,
    tcp: bool,
    /// End of the last header.
    headers_end: usize,
}

/// How a frame came about, for the statistics and for mismatch reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Origin {
    /// Built to be well formed; the generator knows what it should parse to.
    WellFormed,
    /// A well-formed frame after 1-3 random mutations.
    Mutated,
    /// A well-formed frame cut at one of its header boundaries (or one byte either side).
    Truncated,
    /// Random bytes, sometimes on an IP skeleton.
    Garbage,
}

pub(super) struct Case {
    pub(super) frame: Vec<u8>,
    pub(super) origin: Origin,
    /// What the generator built, for well-formed frames.
    pub(super) intent: Option<Parsed>,
    /// How it was built or mutated.
    pub(super) story: String,
}

pub(super) struct Gen<'a> {
    pub(super) rng: &'a mut Rng,
    pub(super) policy: &'a RefPolicy,
}

impl Gen<'_> {
    /// A destination port: mostly ones that matter.
    fn dport(&mut self) -> u16 {
        match self.rng.below(100) {
            0..40 => self.rng.pick(&self.policy.ports),
            40..70 => self.rng.pick(&[25, 2525, 587, 465]),
            70..80 => self
                .rng
                .pick(&[0, 1, 24, 26, 31, 32, 33, 2524, 2526, 65534, 65535]),
            _ => self.rng.u16(),
        }
    }

    /// The policy's list entries of one address family.
    fn listed<N>(&self, family: fn(&IpNet) -> Option<N>) -> Vec<N> {
        (self.policy.allow.iter().chain(&self.policy.deny))
            .filter_map(family)
            .collect()
    }

    fn v4_source(&mut self) -> Ipv4Addr {
        let listed = self.listed(|n| if let IpNet::V4(n) = n { Some(*n) } else { None });
        let bits = match self.rng.below(100) {
            0..40 => {
                let net = self.rng.pick(&listed);
                u32::from(net.network()) | (self.rng.next_u64() as u32 & u32::from(net.hostmask()))
            }
            40..60 => {
                let net = self.rng.pick(&listed);
                let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
                self.rng
                    .pick(&[first, last, first.wrapping_sub(1), last.wrapping_add(1)])
            }
            60..90 => 0xc612_0000 | (self.rng.next_u64() as u32 & 0x0001_ffff), // 198.18.0.0/15
            _ => self.rng.next_u64() as u32,
        };
        Ipv4Addr::from(bits)
    }

    fn v6_source(&mut self) -> Ipv6Addr {
        let listed = self.listed(|n| if let IpNet::V6(n) = n { Some(*n) } else { None });
        let random = u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64());
        let bits = match self.rng.below(100) {
            0..40 => {
                let net = self.rng.pick(&listed);
                u128::from(net.network()) | (random & u128::from(net.hostmask()))
            }
            40..60 => {
                let net = self.rng.pick(&listed);
                let (first, last) = (u128::from(net.network()), u128::from(net.broadcast()));
                self.rng
                    .pick(&[first, last, first.wrapping_sub(1), last.wrapping_add(1)])
            }
            // 2001:db8::/32
            60..88 => 0x2001_0db8 << 96 | (random & ((1 << 96) - 1)),
            // IPv4-mapped: an IPv6 source never matches an IPv4 list entry.
            88..94 => u128::from(self.v4_source().to_ipv6_mapped()),
            _ => random,
        };
        Ipv6Addr::from(bits)
    }

    /// A layer-4 header and payload: (protocol, bytes, TCP dport and SYN/ACK flags).
    fn l4(&mut self, v6: bool) -> (u8, Vec<u8>, Option<(u16, u8)>) {
        let rng = &mut *self.rng;
        match rng.below(100) {
            0..70 => {
                let dport = self.dport();
                let rng = &mut *self.rng;
                let options = if rng.chance(60) {
                    0
                } else {
                    4 * rng.range(1, 10)
                };
                let flags = match rng.below(100) {
                    0..30 => 0x02,
                    30..45 => 0x10,
                    45..55 => 0x12,
                    _ => rng.byte(),
                };
                let mut tcp = Vec::with_capacity(20 + options);
                tcp.extend_from_slice(&rng.u16().to_be_bytes());
                tcp.extend_from_slice(&dport.to_be_bytes());
                tcp.extend(rng.bytes(8)); // sequence and acknowledgment numbers
                // Data offset, then reserved bits and NS at random (nobody may read them).
                tcp.push((((20 + options) / 4) as u8) << 4 | (rng.byte() & 0x0f));
                tcp.push(flags);
                tcp.extend(rng.bytes(6 + options)); // window, checksum, urgent, options
                let payload = rng.below(33);
                tcp.extend(rng.bytes(payload));
                (TCP, tcp, Some((dport, flags & 0x12)))
            }
            70..82 => {
                let dport = self.dport();
                let rng = &mut *self.rng;
                let payload = rng.below(33);
                let mut udp = rng.u16().to_be_bytes().to_vec();
                udp.extend_from_slice(&dport.to_be_bytes());
                udp.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
                udp.extend(rng.bytes(2 + payload));
                (UDP, udp, None)
            }
            82..92 => {
                let protocol = if v6 { 58 } else { 1 };
                let len = 8 + rng.below(33);
                (protocol, rng.bytes(len), None)
            }
            _ => {
                // Anything but TCP and the extension headers the datapath walks: ESP, no next
                // header, IP-in-IP, GRE, SCTP, UDP-Lite, mobility, HIP, shim6, experimental...
                let protocol = loop {
                    let p = if rng.chance(50) {
                        rng.pick(&[2, 4, 41, 47, 50, 59, 132, 135, 136, 139, 140, 253, 254, 255])
                    } else {
                        rng.byte()
                    };
                    if p != TCP && !EXT_KINDS.contains(&p) {
                        break p;
                    }
                };
                let len = rng.below(41);
                (protocol, rng.bytes(len), None)
            }
        }
    }

    /// Ethernet header and 0-3 VLAN tags ending in `ethertype`; returns the tags' TPIDs.
    fn link(&mut self, frame: &mut Vec<u8>, marks: &mut Marks, ethertype: u16) -> Vec<u16> {
        let tags = match self.rng.below(100) {
            0..55 => 0,
            55..75 => 1,
            75..95 => 2,
            _ => 3,
        };
        let tpids: Vec<u16> = (0..tags)
            .map(|_| {
                if self.rng.chance(97) {
                    self.rng.pick(&[ETH_8021Q, ETH_8021AD])
                } else {
                    0x9100 // the old QinQ TPID: not a tag the datapath (or README) knows
                }
            })
            .collect();
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0x25, 0x01]);
        frame.extend(self.rng.bytes(6));
        let mut types = tpids.clone();
        types.push(ethertype);
        marks.ethertypes.push(12);
        frame.extend_from_slice(&types[0].to_be_bytes());
        marks.boundaries.extend([12, 13, 14]);
        for inner in &types[1..] {
            frame.extend_from_slice(&self.rng.u16().to_be_bytes()); // PCP, DEI, VLAN id
            marks.ethertypes.push(frame.len());
            frame.extend_from_slice(&inner.to_be_bytes());
            marks.boundaries.extend([frame.len() - 1, frame.len()]);
        }
        tpids
    }

    /// A well-formed frame and what it should parse to (`None`: its IP length lies, and the
    /// generator leaves the verdict to the reference).
    fn well_formed(&mut self) -> (Vec<u8>, Marks, Option<Parsed>, String) {
        let mut frame = Vec::with_capacity(256);
        let mut marks = Marks::default();
        let family = self.rng.below(100);
        let ethertype = match family {
            0..45 => ETH_IPV4,
            45..90 => ETH_IPV6,
            _ => self
                .rng
                .pick(&[0x0806, 0x8847, 0x88cc, 0x0842, 0x05dc, 0x9000]),
        };
        let tpids = self.link(&mut frame, &mut marks, ethertype);
        let mut story = format!("tags {tpids:04x?}, ");
        // Three tags, or a tag the datapath does not know, hide the payload: untouched.
        let hidden = tpids.len() > 2 || tpids.iter().take(2).any(|&t| t == 0x9100);
        let intent = match ethertype {
            ETH_IPV4 | ETH_IPV6 => {
                let (intent, built) = if ethertype == ETH_IPV4 {
                    self.ipv4(&mut frame, &mut marks)
                } else {
                    self.ipv6(&mut frame, &mut marks)
                };
                story.push_str(&built);
                intent
            }
            _ => {
                let len = self.rng.range(28, 60);
                frame.extend(self.rng.bytes(len));
                let _ = write!(story, "ethertype {ethertype:#06x}");
                marks.headers_end = frame.len();
                Some(Parsed::Other)
            }
        };
        // Ethernet padding or a trailer after a packet whose IP length is true: no IP length
        // covers it, so it changes nothing.
        if intent.is_some() && self.rng.chance(20) {
            let len = self.rng.range(1, 40);
            frame.extend(self.rng.bytes(len));
            let _ = write!(story, ", {len}-byte trailer");
        }
        let intent = if hidden { Some(Parsed::Other) } else { intent };
        (frame, marks, intent, story)
    }

    /// Appends the layer-4 header and marks its fields.
    fn push_l4(frame: &mut Vec<u8>, marks: &mut Marks, l4: &[u8], tcp: bool) {
        let at = frame.len();
        frame.extend_from_slice(l4);
        marks.l4 = Some(at);
        marks.tcp = tcp;
        marks.boundaries.extend([at + 2, at + 3, at + 4]);
        if tcp {
            let header = usize::from(l4[12] >> 4) * 4;
            marks
                .boundaries
                .extend([at + 13, at + 14, at + 19, at + 20, at + header]);
            marks.headers_end = at + header;
        } else {
            marks.headers_end = at + 8.min(l4.len());
        }
    }

    /// Returns what it should parse to (see `well_formed`) and how it was built.
    fn ipv4(&mut self, frame: &mut Vec<u8>, marks: &mut Marks) -> (Option<Parsed>, String) {
        let start = frame.len();
        let options = if self.rng.chance(50) {
            0
        } else {
            4 * self.rng.range(1, 10)
        };
        let ihl = 5 + options / 4;
        let (protocol, l4, tcp) = self.l4(false);
        let rng = &mut *self.rng;
        let offset: u16 = if rng.chance(80) {
            0
        } else {
            rng.range(1, 0x1fff) as u16
        };
        // Flags: reserved (rarely), don't fragment, more fragments.
        let flags = (u16::from(rng.chance(5)) << 15)
            | (u16::from(rng.chance(50)) << 14)
            | (u16::from(rng.chance(30)) << 13);
        let true_total = (ihl * 4 + l4.len()) as u16;
        let total = if rng.chance(90) {
            true_total
        } else {
            rng.u16()
        };
        let source = self.v4_source();
        let rng = &mut *self.rng;
        frame.push(0x40 | ihl as u8);
        frame.push(rng.byte());
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&rng.u16().to_be_bytes());
        marks.fragments.push(frame.len());
        frame.extend_from_slice(&(flags | offset).to_be_bytes());
        frame.push(rng.byte()); // TTL
        marks.next_headers.push(frame.len());
        frame.push(protocol);
        frame.extend_from_slice(&rng.u16().to_be_bytes()); // checksum: nobody checks it
        frame.extend_from_slice(&source.octets());
        frame.extend_from_slice(&[198, 18, 0, 25]);
        frame.extend(rng.bytes(options));
        marks.ipv4 = Some(start);
        marks
            .boundaries
            .extend([start + 1, start + 9, start + 10, start + 19, start + 20]);
        marks
            .boundaries
            .extend([start + ihl * 4 - 1, start + ihl * 4]);
        Self::push_l4(frame, marks, &l4, tcp.is_some());
        let story = format!(
            "IPv4 from {source}, IHL {ihl}, total length {total} (true: {true_total}), fragment \
             offset {offset}, protocol {protocol}, {tcp:?}"
        );
        let intent = match tcp {
            _ if offset != 0 => Some(Parsed::Other),
            None => Some(Parsed::Other),
            Some(_) if total != true_total => None,
            Some((dport, flags)) => Some(Parsed::Tcp {
                source: IpAddr::V4(source),
                dport,
                flags: Some(flags),
            }),
        };
        (intent, story)
    }

    /// Returns what it should parse to (see `well_formed`) and how it was built.
    fn ipv6(&mut self, frame: &mut Vec<u8>, marks: &mut Marks) -> (Option<Parsed>, String) {
        let start = frame.len();
        let count = match self.rng.below(100) {
            0..40 => 0,
            40..75 => self.rng.range(1, 3),
            75..90 => self.rng.range(4, 8),
            _ => self.rng.range(9, 10),
        };
        let kinds: Vec<u8> = (0..count).map(|_| self.rng.pick(&EXT_KINDS)).collect();
        let (protocol, l4, tcp) = self.l4(true);
        let source = self.v6_source();
        let rng = &mut *self.rng;
        // The extension headers, each with its next-header byte pointing at the following one.
        let mut chain = Vec::new();
        let mut non_first_fragment_at = None;
        let mut ext_story = Vec::new();
        for (i, &kind) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(protocol);
            let at = chain.len();
            match kind {
                FRAGMENT => {
                    let offset: u16 = if rng.chance(75) {
                        0
                    } else {
                        rng.range(1, 0x1fff) as u16
                    };
                    if offset != 0 && non_first_fragment_at.is_none() {
                        non_first_fragment_at = Some(i);
                    }
                    let field = offset << 3 | (rng.u16() & 0x7);
                    chain.extend_from_slice(&[next, rng.byte()]);
                    chain.extend_from_slice(&field.to_be_bytes());
                    chain.extend(rng.bytes(4));
                    marks.fragments.push(start + 40 + at + 2);
                    ext_story.push(format!("frag(off {offset})"));
                }
                AUTH => {
                    let length = rng.range(1, 8) as u8;
                    chain.extend_from_slice(&[next, length]);
                    chain.extend(rng.bytes((usize::from(length) + 2) * 4 - 2));
                    marks.ext_lengths.push(start + 40 + at + 1);
                    ext_story.push(format!("AH({length})"));
                }
                _ => {
                    let length = if rng.chance(90) {
                        rng.below(4) as u8
                    } else {
                        rng.range(4, 31) as u8
                    };
                    chain.extend_from_slice(&[next, length]);
                    chain.extend(rng.bytes((usize::from(length) + 1) * 8 - 2));
                    marks.ext_lengths.push(start + 40 + at + 1);
                    ext_story.push(format!("{kind}({length})"));
                }
            }
            marks.next_headers.push(start + 40 + at);
            let end = start + 40 + chain.len();
            marks
                .boundaries
                .extend([start + 40 + at + 1, start + 40 + at + 2, end - 1, end]);
        }
        let true_payload = (chain.len() + l4.len()) as u16;
        let payload = if rng.chance(90) {
            true_payload
        } else {
            rng.u16()
        };
        let first = kinds.first().copied().unwrap_or(protocol);
        frame.push(0x60 | (rng.byte() & 0x0f));
        frame.extend(rng.bytes(3)); // traffic class, flow label
        frame.extend_from_slice(&payload.to_be_bytes());
        marks.next_headers.push(frame.len());
        frame.push(first);
        frame.push(rng.byte()); // hop limit
        frame.extend_from_slice(&source.octets());
        frame.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ]);
        frame.extend_from_slice(&chain);
        marks
            .boundaries
            .extend([start + 6, start + 7, start + 39, start + 40]);
        Self::push_l4(frame, marks, &l4, tcp.is_some());
        let story = format!(
            "IPv6 from {source}, payload length {payload} (true: {true_payload}), extension \
             headers [{}], protocol {protocol}, {tcp:?}",
            ext_story.join(" ")
        );
        // A payload length that lies may cut the chain anywhere: the reference alone judges it.
        if payload != true_payload {
            return (None, story);
        }
        // README: a non-first fragment among the first 8 headers passes; a 9th header is
        // malformed; otherwise TCP is judged and anything else passes.
        let intent = match (non_first_fragment_at, tcp) {
            (Some(i), _) if i < reference::MAX_IPV6_EXT_HEADERS => Parsed::Other,
            _ if count > reference::MAX_IPV6_EXT_HEADERS => Parsed::Malformed,
            (_, Some((dport, flags))) => Parsed::Tcp {
                source: IpAddr::V6(source),
                dport,
                flags: Some(flags),
            },
            (_, None) => Parsed::Other,
        };
        (Some(intent), story)
    }

    /// 1-3 mutations of a well-formed frame, each aimed at a field the datapath reads (or at
    /// nothing in particular).
    fn mutate(&mut self, frame: &mut Vec<u8>, marks: &Marks) -> String {
        let mut story = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            let rng = &mut *self.rng;
            let in_frame = |offsets: &[usize], len: usize| -> Vec<usize> {
                offsets.iter().copied().filter(|&o| o < len).collect()
            };
            let headers = marks.headers_end.clamp(14, frame.len().max(14));
            match rng.below(13) {
                0 if !marks.boundaries.is_empty() => {
                    let cut = rng.pick(&marks.boundaries) as isize + rng.range(0, 4) as isize - 2;
                    let cut = (cut.max(14) as usize).min(frame.len());
                    frame.truncate(cut);
                    story.push(format!("cut at {cut}"));
                }
                1 => {
                    let cut = rng.range(14, frame.len());
                    frame.truncate(cut);
                    story.push(format!("cut at {cut}"));
                }
                2 => {
                    let at = rng.below(headers.min(frame.len()));
                    let bit = rng.below(8);
                    frame[at] ^= 1 << bit;
                    story.push(format!("flip bit {bit} of byte {at}"));
                }
                3 => {
                    let at = rng.below(headers.min(frame.len()));
                    frame[at] = rng.byte();
                    story.push(format!("byte {at} = {:#04x}", frame[at]));
                }
                4 => {
                    let fields = in_frame(&marks.ethertypes, frame.len().saturating_sub(1));
                    if let Some(&at) = fields.get(rng.below(fields.len().max(1))) {
                        let value = if rng.chance(85) {
                            rng.pick(&[ETH_IPV4, ETH_IPV6, ETH_8021Q, ETH_8021AD, 0x9100, 0x0806])
                        } else {
                            rng.u16()
                        };
                        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
                        story.push(format!("ethertype at {at} = {value:#06x}"));
                    }
                }
                5 => {
                    if let Some(at) = marks.ipv4.filter(|&at| at < frame.len()) {
                        frame[at] = if rng.chance(70) {
                            (frame[at] & 0xf0) | rng.range(0, 15) as u8
                        } else {
                            rng.byte()
                        };
                        story.push(format!("IPv4 version/IHL = {:#04x}", frame[at]));
                    }
                }
                6 => {
                    let fields = in_frame(&marks.fragments, frame.len().saturating_sub(1));
                    if let Some(&at) = fields.get(rng.below(fields.len().max(1))) {
                        let v6 = marks.ipv4.is_none();
                        let random = rng.u16() & 0x1fff;
                        let offset: u16 = rng.pick(&[0, 1, 0x1fff, random]);
                        let value = if v6 {
                            offset << 3 | (rng.u16() & 7)
                        } else {
                            (rng.u16() & 0xe000) | offset
                        };
                        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
                        story.push(format!("fragment field at {at} = {value:#06x}"));
                    }
                }
                7 => {
                    let fields = in_frame(&marks.next_headers, frame.len());
                    if let Some(&at) = fields.get(rng.below(fields.len().max(1))) {
                        frame[at] = if rng.chance(85) {
                            rng.pick(&[0, 43, 44, 51, 60, 6, 17, 58, 59, 50, 135])
                        } else {
                            rng.byte()
                        };
                        story.push(format!("next header at {at} = {}", frame[at]));
                    }
                }
                8 => {
                    let fields = in_frame(&marks.ext_lengths, frame.len());
                    if let Some(&at) = fields.get(rng.below(fields.len().max(1))) {
                        frame[at] = if rng.chance(70) {
                            rng.range(0, 4) as u8
                        } else {
                            rng.byte()
                        };
                        story.push(format!("extension length at {at} = {}", frame[at]));
                    }
                }
                9 => {
                    if let Some(at) = marks.l4.map(|l4| l4 + 12).filter(|&at| at < frame.len()) {
                        frame[at] = (rng.range(0, 15) as u8) << 4 | (frame[at] & 0x0f);
                        story.push(format!("TCP data offset = {}", frame[at] >> 4));
                    }
                }
                10 => {
                    if let Some(at) = marks.l4.map(|l4| l4 + 2).filter(|&at| at + 1 < frame.len()) {
                        let port = self.dport();
                        frame[at..at + 2].copy_from_slice(&port.to_be_bytes());
                        story.push(format!("dport = {port}"));
                    }
                }
                11 => {
                    let len = rng.range(1, 64);
                    frame.extend(rng.bytes(len));
                    story.push(format!("{len} bytes appended"));
                }
                _ => {
                    let at = rng.range(12, headers.min(frame.len()));
                    if rng.chance(50) {
                        let len = rng.range(1, 8).min(frame.len() - at);
                        frame.drain(at..at + len);
                        story.push(format!("{len} bytes removed at {at}"));
                    } else {
                        let len = rng.range(1, 8);
                        let bytes = rng.bytes(len);
                        frame.splice(at..at, bytes);
                        story.push(format!("{len} bytes inserted at {at}"));
                    }
                }
            }
            if frame.len() < 14 {
                frame.resize(14, 0);
            }
        }
        story.join(", ")
    }

    /// Random bytes, half of them on a skeleton that leads the parser deep.
    fn garbage(&mut self) -> (Vec<u8>, String) {
        let len = self.rng.range(14, 160);
        let mut frame = self.rng.bytes(len);
        let skeleton = self.rng.below(4);
        let mut at = 12;
        if skeleton == 3 && len >= 18 {
            frame[12..14].copy_from_slice(&self.rng.pick(&[ETH_8021Q, ETH_8021AD]).to_be_bytes());
            at = 16;
        }
        match skeleton {
            0 => {}
            1 | 3 if self.rng.chance(50) => {
                frame[at..at + 2].copy_from_slice(&ETH_IPV4.to_be_bytes());
                let ip = at + 2;
                if ip < len {
                    frame[ip] = 0x40 | self.rng.range(4, 15) as u8;
                    let ihl = usize::from(frame[ip] & 0x0f) * 4;
                    if ip + 9 < len {
                        frame[ip + 9] = TCP;
                    }
                    if ip + 7 < len && self.rng.chance(80) {
                        frame[ip + 6] &= 0xe0;
                        frame[ip + 7] = 0;
                    }
                    let dport = self.dport();
                    if ip + ihl + 3 < len {
                        frame[ip + ihl + 2..ip + ihl + 4].copy_from_slice(&dport.to_be_bytes());
                    }
                }
            }
            _ => {
                frame[at..at + 2].copy_from_slice(&ETH_IPV6.to_be_bytes());
                let ip = at + 2;
                if ip + 6 < len {
                    frame[ip + 6] = self
                        .rng
                        .pick(&[HOP_BY_HOP, ROUTING, FRAGMENT, AUTH, DEST_OPTS, TCP]);
                }
            }
        }
        (frame, format!("garbage, skeleton {skeleton}"))
    }

    /// The next case: one frame, or a well-formed frame cut at each of its boundaries.
    pub(super) fn cases(&mut self) -> Vec<Case> {
        let kind = self.rng.below(100);
        if kind < 10 {
            let (frame, story) = self.garbage();
            return vec![Case {
                frame,
                origin: Origin::Garbage,
                intent: None,
                story,
            }];
        }
        let (mut frame, marks, intent, story) = self.well_formed();
        match kind {
            10 => {
                let mut cuts: Vec<usize> = (marks.boundaries.iter())
                    .flat_map(|&b| [b.saturating_sub(1), b, b + 1])
                    .filter(|&cut| (14..frame.len()).contains(&cut))
                    .collect();
                cuts.sort_unstable();
                cuts.dedup();
                cuts.into_iter()
                    .map(|cut| Case {
                        frame: frame[..cut].to_vec(),
                        origin: Origin::Truncated,
                        intent: None,
                        story: format!("{story}; cut at {cut}"),
                    })
                    .collect()
            }
            11..50 => {
                let mutations = self.mutate(&mut frame, &marks);
                vec![Case {
                    frame,
                    origin: Origin::Mutated,
                    intent: None,
                    story: format!("{story}; {mutations}"),
                }]
            }
            _ => vec![Case {
                frame,
                origin: Origin::WellFormed,
                intent,
                story,
            }],
        }
    }
}
