//! Differential fuzz test: random and mutated frames through the loaded XDP program with
//! BPF_PROG_TEST_RUN, each compared with the independent reference decision in
//! `port25_testkit::reference` (etherparse, not the kernel code): the XDP action, and the one counter
//! (verdict, reason, packets, bytes) that must move, or that none moves.
//!
//! Deterministic for a seed: the default is fixed so CI is reproducible; `PORT25_FUZZ_SEED=N`
//! (decimal or 0x-hex) replays or explores another run, `PORT25_FUZZ_FRAMES=N` changes the count.
//! Run with `cargo test -p port25-tests --test fuzz -- --nocapture` (as root).
#![allow(clippy::unwrap_used, reason = "test code")]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Instant,
};

use ipnet::IpNet;
use port25_common::{Reason, Verdict};
use port25_daemon::testing::{Config, Datapath};
use port25_testkit::{
    reference::{self, Parsed, RefPolicy, RefPolicyKind, XDP_DROP, XDP_PASS},
    require_root,
    rng::Rng,
};

const DEFAULT_SEED: u64 = 0x0025_2525_f00d_5eed;
const DEFAULT_FRAMES: usize = 250_000;
/// The issue asks for at least this many frames in a default run.
const MIN_FRAMES: usize = 100_000;
/// Stop (and fail) after this many mismatches: the first few tell the story.
const MAX_MISMATCHES: usize = 5;

/// Protocol numbers and ethertypes the generator uses (its own constants, not the reference's).
const TCP: u8 = 6;
const UDP: u8 = 17;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const EXT_KINDS: [u8; 5] = [HOP_BY_HOP, ROUTING, FRAGMENT, AUTH, DEST_OPTS];
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_8021Q: u16 = 0x8100;
const ETH_8021AD: u16 = 0x88a8;

// ---- Policies ------------------------------------------------------------------------------------

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// One policy the program runs under for a share of the frames. All three are applied in turn to
/// the same loaded program, so the reloads between them are exercised too.
struct Phase {
    name: &'static str,
    percent: usize,
    policy: RefPolicy,
}

fn phases() -> Vec<Phase> {
    // Deny entries sit inside allow entries (deny wins whatever the prefix lengths), host routes
    // sit inside networks, and the networks' edges are where the generator aims.
    let allow = nets(&[
        "198.18.1.0/24",
        "198.18.2.0/24",
        "198.19.128.0/17",
        "198.18.9.9/32",
        "2001:db8:1::/48",
        "2001:db8:2::/48",
        "2001:db8:abcd:12::/64",
        "2001:db8::25/128",
    ]);
    let deny = nets(&[
        "198.18.2.64/26",
        "198.18.200.0/22",
        "198.18.1.99/32",
        "198.19.255.255/32",
        "2001:db8:2::/52",
        "2001:db8:dead::/48",
        "2001:db8:1::66/128",
    ]);
    vec![
        Phase {
            name: "enforce, policy drop",
            percent: 60,
            policy: RefPolicy {
                ports: vec![25, 2525],
                monitor: false,
                kind: RefPolicyKind::Drop,
                allow: allow.clone(),
                deny: deny.clone(),
            },
        },
        Phase {
            name: "monitor, policy drop",
            percent: 20,
            policy: RefPolicy {
                ports: vec![25, 465, 2525],
                monitor: true,
                kind: RefPolicyKind::Drop,
                allow,
                deny,
            },
        },
        Phase {
            // Ports at the edges of the kernel's port bitmap words, and other lists.
            name: "enforce, policy ratelimit (ample buckets)",
            percent: 20,
            policy: RefPolicy {
                ports: vec![1, 25, 31, 32, 587, 2525, 65535],
                monitor: false,
                kind: RefPolicyKind::RatelimitAmple,
                allow: nets(&["198.18.0.0/16", "2001:db8:1::/48", "2001:db8:2:3::7/128"]),
                deny: nets(&["198.18.2.64/26", "2001:db8:1:2::/64", "198.19.0.0/16"]),
            },
        },
    ]
}

// ---- Frame generation ----------------------------------------------------------------------------

/// Where the interesting fields of a generated frame are, for targeted mutations.
#[derive(Clone, Debug, Default)]
struct Marks {
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
enum Origin {
    /// Built to be well formed; the generator knows what it should parse to.
    WellFormed,
    /// A well-formed frame after 1-3 random mutations.
    Mutated,
    /// A well-formed frame cut at one of its header boundaries (or one byte either side).
    Truncated,
    /// Random bytes, sometimes on an IP skeleton.
    Garbage,
}

struct Case {
    frame: Vec<u8>,
    origin: Origin,
    /// What the generator built, for well-formed frames.
    intent: Option<Parsed>,
    /// How it was built or mutated.
    story: String,
}

struct Gen<'a> {
    rng: &'a mut Rng,
    policy: &'a RefPolicy,
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

    fn v4_source(&mut self) -> Ipv4Addr {
        let listed: Vec<_> = (self.policy.allow.iter().chain(&self.policy.deny))
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            })
            .collect();
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
        let listed: Vec<_> = (self.policy.allow.iter().chain(&self.policy.deny))
            .filter_map(|n| match n {
                IpNet::V6(n) => Some(*n),
                IpNet::V4(_) => None,
            })
            .collect();
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
            ETH_IPV4 => self.ipv4(&mut frame, &mut marks, &mut story),
            ETH_IPV6 => self.ipv6(&mut frame, &mut marks, &mut story),
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

    fn tcp_marks(marks: &mut Marks, at: usize, l4: &[u8], tcp: bool) {
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

    fn ipv4(
        &mut self,
        frame: &mut Vec<u8>,
        marks: &mut Marks,
        story: &mut String,
    ) -> Option<Parsed> {
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
        let at = frame.len();
        frame.extend_from_slice(&l4);
        Self::tcp_marks(marks, at, &l4, tcp.is_some());
        let _ = write!(
            story,
            "IPv4 from {source}, IHL {ihl}, total length {total} (true: {true_total}), fragment \
             offset {offset}, protocol {protocol}, {tcp:?}"
        );
        match tcp {
            _ if offset != 0 => Some(Parsed::Other),
            None => Some(Parsed::Other),
            Some(_) if total != true_total => None,
            Some((dport, flags)) => Some(Parsed::Tcp {
                source: IpAddr::V4(source),
                dport,
                flags: Some(flags),
            }),
        }
    }

    fn ipv6(
        &mut self,
        frame: &mut Vec<u8>,
        marks: &mut Marks,
        story: &mut String,
    ) -> Option<Parsed> {
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
        let at = frame.len();
        frame.extend_from_slice(&l4);
        Self::tcp_marks(marks, at, &l4, tcp.is_some());
        let _ = write!(
            story,
            "IPv6 from {source}, payload length {payload} (true: {true_payload}), extension \
             headers [{}], protocol {protocol}, {tcp:?}",
            ext_story.join(" ")
        );
        // A payload length that lies may cut the chain anywhere: the reference alone judges it.
        if payload != true_payload {
            return None;
        }
        // README: a non-first fragment among the first 8 headers passes; a 9th header is
        // malformed; otherwise TCP is judged and anything else passes.
        Some(match (non_first_fragment_at, tcp) {
            (Some(i), _) if i < reference::MAX_IPV6_EXT_HEADERS => Parsed::Other,
            _ if count > reference::MAX_IPV6_EXT_HEADERS => Parsed::Malformed,
            (_, Some((dport, flags))) => Parsed::Tcp {
                source: IpAddr::V6(source),
                dport,
                flags: Some(flags),
            },
            (_, None) => Parsed::Other,
        })
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
    fn cases(&mut self) -> Vec<Case> {
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

// ---- Running frames through the kernel -----------------------------------------------------------

type Outcome = (u32, Option<(Verdict, Reason)>);
/// Counter deltas: (verdict, reason) -> (packets, bytes).
type Moved = BTreeMap<(Verdict, Reason), (u64, u64)>;

/// Counters summed over CPUs and interfaces.
fn counters(datapath: &Datapath) -> Moved {
    let mut sums = Moved::new();
    for ((_, verdict, reason), counter) in datapath.totals().unwrap() {
        let sum = sums.entry((verdict, reason)).or_default();
        sum.0 += counter.packets;
        sum.1 += counter.bytes;
    }
    sums
}

fn delta(before: &Moved, after: &Moved) -> Moved {
    after
        .iter()
        .filter_map(|(key, &(packets, bytes))| {
            let (p0, b0) = before.get(key).copied().unwrap_or_default();
            (packets != p0 || bytes != b0).then(|| (*key, (packets - p0, bytes - b0)))
        })
        .collect()
}

fn hex(frame: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in frame.chunks(16).enumerate() {
        let bytes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "    {:04x}  {}", i * 16, bytes.join(" "));
    }
    out
}

fn class(outcome: &Outcome) -> String {
    let action = match outcome.0 {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        _ => "XDP_?",
    };
    match outcome.1 {
        Some((verdict, reason)) => format!("{action} {}/{}", verdict.label(), reason.label()),
        None => format!("{action} (not counted)"),
    }
}

#[derive(Default)]
struct Tally {
    frames: usize,
    by_origin: BTreeMap<Origin, usize>,
    by_class: BTreeMap<String, usize>,
    mismatches: Vec<String>,
}

#[test]
fn kernel_matches_reference_on_random_and_mutated_frames() {
    require_root();
    let env_number = |name: &str| -> Option<u64> {
        let text = std::env::var(name).ok()?;
        let text = text.trim().replace('_', "");
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        Some(parsed.unwrap_or_else(|_| panic!("{name}={text}: not a number")))
    };
    let seed = env_number("PORT25_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_number("PORT25_FUZZ_FRAMES").map_or(DEFAULT_FRAMES, |n| n as usize);
    println!("fuzz: seed {seed:#x} (replay with PORT25_FUZZ_SEED={seed:#x}), {frames} frames");

    let phases = phases();
    let config_of = |policy: &RefPolicy| {
        let text = policy.to_toml();
        Config::parse(&text, Path::new("fuzz.toml"))
            .unwrap_or_else(|e| panic!("fuzz policy does not parse: {e}\n{text}"))
    };
    let mut datapath =
        Datapath::load_private(config_of(&phases[0].policy).ratelimit.tracked_sources)
            .expect("XDP program loads");
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let started = Instant::now();

    'phases: for (p, phase) in phases.iter().enumerate() {
        let config = config_of(&phase.policy);
        datapath
            .apply_policy(&config, &config.allow, &config.deny)
            .expect("policy applies");
        let quota = if p + 1 == phases.len() {
            frames - tally.frames
        } else {
            frames * phase.percent / 100
        };
        let phase_started = Instant::now();
        let mut done = 0;
        let mut last = counters(&datapath);
        while done < quota {
            let cases = Gen {
                rng: &mut rng,
                policy: &phase.policy,
            }
            .cases();
            for case in cases {
                let frame = &case.frame;
                let expected = reference::decide(frame, &phase.policy);
                // What the reference saw, for the generator's cross-check and for reports.
                let parsed = reference::parse(frame);
                let action = datapath.test_run(frame).unwrap_or_else(|e| {
                    panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e}", frame.len())
                });
                let now = counters(&datapath);
                let moved = delta(&last, &now);
                last = now;
                let want: Moved = expected
                    .1
                    .iter()
                    .map(|&key| (key, (1, frame.len() as u64)))
                    .collect();
                let index = tally.frames;
                tally.frames += 1;
                done += 1;
                *tally.by_origin.entry(case.origin).or_default() += 1;
                *tally.by_class.entry(class(&expected)).or_default() += 1;
                let generator_disagrees = case.intent.is_some_and(|intent| intent != parsed);
                if action != expected.0 || moved != want || generator_disagrees {
                    let what = if generator_disagrees {
                        "REFERENCE DISAGREES WITH THE GENERATOR"
                    } else {
                        "KERNEL DISAGREES WITH THE REFERENCE"
                    };
                    tally.mismatches.push(format!(
                        "{what}: frame #{index} ({:?}, phase \"{}\", seed {seed:#x}), {} bytes\n  \
                         built: {}\n  generator expects: {:?}\n  reference parses: {parsed:?}\n  \
                         reference: action {} counter {:?}\n  kernel:    action {action} counters moved {moved:?}\n{}",
                        case.origin,
                        phase.name,
                        frame.len(),
                        case.story,
                        case.intent,
                        expected.0,
                        want,
                        hex(frame),
                    ));
                    if tally.mismatches.len() >= MAX_MISMATCHES {
                        break 'phases;
                    }
                }
                if done >= quota {
                    break;
                }
            }
        }
        println!(
            "fuzz: phase \"{}\": {done} frames in {:.1?}",
            phase.name,
            phase_started.elapsed()
        );
    }

    let elapsed = started.elapsed();
    println!(
        "fuzz: {} frames tried in {elapsed:.1?}, {} mismatches",
        tally.frames,
        tally.mismatches.len()
    );
    for (origin, n) in &tally.by_origin {
        println!("  {n:>8}  {origin:?}");
    }
    println!("fuzz: reference verdicts:");
    for (class, n) in &tally.by_class {
        println!("  {n:>8}  {class}");
    }
    assert!(
        tally.mismatches.is_empty(),
        "{} mismatch(es) (stopped after {MAX_MISMATCHES}):\n\n{}",
        tally.mismatches.len(),
        tally.mismatches.join("\n")
    );
    if frames >= MIN_FRAMES {
        assert!(tally.frames >= MIN_FRAMES);
        // The generator must reach every verdict the phases can produce, or the run proves little.
        for (verdict, reason) in [
            (Verdict::Pass, Reason::Allowlisted),
            (Verdict::Drop, Reason::Denylisted),
            (Verdict::Drop, Reason::NotAllowlisted),
            (Verdict::Drop, Reason::Malformed),
            (Verdict::WouldDrop, Reason::Denylisted),
            (Verdict::WouldDrop, Reason::NotAllowlisted),
            (Verdict::WouldDrop, Reason::Malformed),
            (Verdict::Pass, Reason::Admitted),
        ] {
            let action = if verdict == Verdict::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            let n = tally
                .by_class
                .get(&class(&(action, Some((verdict, reason)))))
                .copied()
                .unwrap_or(0);
            assert!(
                n >= 100,
                "only {n} frames reached {}/{}",
                verdict.label(),
                reason.label()
            );
        }
    }
}

// ---- The reference's corner cases, pinned with crafted bytes (no root needed) ------------------

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
