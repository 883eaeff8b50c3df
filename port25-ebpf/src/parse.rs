//! Header walking: from an XDP frame to "TCP from this source to that port", or to why not.
//!
//! Every read is bounds-checked against `data_end` (the verifier insists, and attackers send short
//! frames) and against the end of the IP packet that the IP header itself declares (IPv4 total
//! length, IPv6 payload length): bytes past it, Ethernet padding or a trailer, are not packet data,
//! and the kernel trims them before TCP sees the packet. A packet that declares more bytes than the
//! frame holds is one the kernel drops as truncated. The rules are docs/ARCHITECTURE.md, § Parsing
//! (and § Decision, steps 1 and 5).

use port25_common::MAX_IPV6_EXT_HEADERS;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;

// IPv6 extension headers we walk through.
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AUTH: u8 = 51;
/// IPv4 carries AH as protocol 51 too.
const IPPROTO_AH: u8 = NH_AUTH;
const NH_DEST_OPTS: u8 = 60;

/// TCP flag bits (byte 13 of the header).
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// An address, in network byte order.
#[derive(Clone, Copy)]
pub(crate) enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The addresses of a packet.
#[derive(Clone, Copy)]
pub(crate) struct Addrs {
    pub source: Addr,
    pub dest: Addr,
}

/// A TCP segment whose ports could be read.
pub(crate) struct Segment {
    pub addrs: Addrs,
    pub sport: u16,
    pub dport: u16,
    /// Flags, sequence and acknowledgment numbers; zero when `intact` is false.
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// False when the fixed TCP header (flags, data offset) is cut short or claims fewer than
    /// 20 bytes, or when the IP header declares more bytes than the frame holds: fatal only if
    /// the port turns out to be protected.
    pub intact: bool,
    /// Where the IP header starts in the frame (policy synproxy rewrites it in place). Only
    /// stored for the synproxy program, never branched on: a constant of each parse path that the
    /// verifier had to tell apart would multiply the states it checks.
    pub ip_offset: usize,
    /// Whether TCP follows the fixed IP header directly: no IPv4 options, IPv6 extension headers
    /// or AH. Only such segments are answered or checked in XDP by policy synproxy; the others
    /// are left to netfilter's SYNPROXY.
    pub plain: bool,
}

/// What the parser made of a frame.
pub(crate) enum Parsed {
    /// Not TCP (or a non-first fragment, which carries no ports): not ours to judge.
    Other,
    /// Claims to be IP/TCP but cannot be read far enough to decide.
    Malformed,
    Tcp(Segment),
}

/// Bounds-checked view of the frame.
struct Frame {
    start: usize,
    end: usize,
    /// Offset (from `start`) where the packet data ends, once the IP header has said so; until
    /// then no bound but the frame's.
    limit: usize,
}

impl Frame {
    fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            limit: usize::MAX,
        }
    }

    /// Pointer to `N` readable bytes at `offset`, if the packet holds them.
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<&[u8; N]> {
        if offset + N > self.limit {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: [at, at + N) was just checked to lie inside the frame.
        Some(unsafe { &*(at as *const [u8; N]) })
    }

    /// The packet ends at `packet_end` (an offset the IP header gave). Returns false when that is
    /// past the end of the frame: the packet was cut short, and the kernel will drop it.
    #[inline(always)]
    fn end_packet_at(&mut self, packet_end: usize) -> bool {
        if packet_end > self.end - self.start {
            return false;
        }
        self.limit = opaque(packet_end);
        true
    }

    #[inline(always)]
    fn u16_be(&self, offset: usize) -> Option<u16> {
        self.bytes::<2>(offset).map(|b| u16::from_be_bytes(*b))
    }
}

/// `value`, hidden from the optimiser. Knowing `limit <= end - start`, LLVM would prove every
/// `offset + N <= limit` check enough and drop the check against `end`, which the verifier needs
/// to see (it refuses the program without it).
#[inline(always)]
pub(crate) fn opaque(value: usize) -> usize {
    let slot = value;
    // SAFETY: a volatile read of a local, initialised value.
    unsafe { core::ptr::read_volatile(&slot) }
}

/// Parses the frame in `[start, end)`: an XDP or TC context's data pointers.
#[inline(always)]
pub(crate) fn parse(start: usize, end: usize) -> Parsed {
    let mut frame = Frame::new(start, end);
    // Ethernet and up to two VLAN tags (802.1ad outer, 802.1Q inner). A frame too short to name its
    // payload claims nothing: pass.
    let Some(mut ethertype) = frame.u16_be(12) else {
        return Parsed::Other;
    };
    let mut offset = ETH_HLEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(inner) = frame.u16_be(offset + 2) else {
            return Parsed::Other;
        };
        ethertype = inner;
        offset += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(&mut frame, offset),
        ETH_P_IPV6 => parse_ipv6(&mut frame, offset),
        _ => Parsed::Other,
    }
}

#[inline(always)]
fn parse_ipv4(frame: &mut Frame, offset: usize) -> Parsed {
    // The first 10 bytes say whether this can be TCP at all: version, total length, fragment
    // offset, protocol.
    let Some(&head) = frame.bytes::<10>(offset) else {
        return Parsed::Malformed;
    };
    // The stack drops a wrong version itself; a non-first fragment has no TCP header (its first
    // fragment was judged); other protocols are not ours.
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    let protocol = head[9];
    if head[0] >> 4 != 4
        || fragment_offset != 0
        || (protocol != IPPROTO_TCP && protocol != IPPROTO_AH)
    {
        return Parsed::Other;
    }
    // It claims TCP (perhaps behind AH): from here, what cannot be read is malformed. Nothing
    // past the total length is read; a total length shorter than the header leaves it unreadable.
    let total_length = u16::from_be_bytes([head[2], head[3]]) as usize;
    let whole = frame.end_packet_at(offset + total_length);
    let Some(header) = frame.bytes::<20>(offset) else {
        return Parsed::Malformed;
    };
    let ihl = (header[0] & 0x0f) as usize * 4;
    if ihl < 20 || frame.bytes::<1>(offset + ihl - 1).is_none() {
        return Parsed::Malformed;
    }
    let addrs = Addrs {
        source: Addr::V4([header[12], header[13], header[14], header[15]]),
        dest: Addr::V4([header[16], header[17], header[18], header[19]]),
    };
    let ip_offset = offset;
    let mut offset = offset + ihl;
    if protocol == IPPROTO_AH {
        // IPsec transport mode: one authentication header, then (perhaps) TCP.
        let Some(ah) = frame.bytes::<2>(offset) else {
            return Parsed::Malformed;
        };
        if ah[0] != IPPROTO_TCP {
            return Parsed::Other;
        }
        offset += (ah[1] as usize + 2) * 4;
    }
    let plain = ihl == 20 && protocol == IPPROTO_TCP;
    parse_tcp(frame, offset, (ip_offset, plain), addrs, whole)
}

#[inline(always)]
fn parse_ipv6(frame: &mut Frame, offset: usize) -> Parsed {
    // Version, payload length and next header come first: enough to tell a cut-short header that
    // cannot be TCP.
    let Some(&head) = frame.bytes::<7>(offset) else {
        return Parsed::Malformed;
    };
    if head[0] >> 4 != 6 {
        // The stack drops a wrong version itself.
        return Parsed::Other;
    }
    // Nothing past the payload is read. A payload length of 0 before a hop-by-hop header is a
    // jumbogram's (RFC 2675): its length is in an option, so only the frame bounds it.
    let payload_length = u16::from_be_bytes([head[4], head[5]]) as usize;
    let whole = (payload_length == 0 && head[6] == NH_HOP_BY_HOP)
        || frame.end_packet_at(offset + IPV6_HLEN + payload_length);
    let Some(header) = frame.bytes::<IPV6_HLEN>(offset) else {
        return if is_walked_ext(head[6]) || head[6] == IPPROTO_TCP {
            Parsed::Malformed
        } else {
            Parsed::Other
        };
    };
    let mut source = [0u8; 16];
    source.copy_from_slice(&header[8..24]);
    let mut dest = [0u8; 16];
    dest.copy_from_slice(&header[24..40]);
    let addrs = Addrs {
        source: Addr::V6(source),
        dest: Addr::V6(dest),
    };
    let mut next = header[6];
    let ip_offset = offset;
    let plain = next == IPPROTO_TCP;
    let mut offset = offset + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                let Some(ext) = frame.bytes::<2>(offset) else {
                    return Parsed::Malformed;
                };
                next = ext[0];
                (ext[1] as usize + 1) * 8
            }
            NH_AUTH => {
                let Some(ext) = frame.bytes::<2>(offset) else {
                    return Parsed::Malformed;
                };
                next = ext[0];
                (ext[1] as usize + 2) * 4
            }
            NH_FRAGMENT => {
                let Some(ext) = frame.bytes::<8>(offset) else {
                    return Parsed::Malformed;
                };
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Parsed::Other;
                }
                next = ext[0];
                8
            }
            IPPROTO_TCP => return parse_tcp(frame, offset, (ip_offset, plain), addrs, whole),
            _ => return Parsed::Other,
        };
        offset += len;
    }
    // Still TCP after the last header we walk? Then judge it; a longer chain is malformed.
    if next == IPPROTO_TCP {
        return parse_tcp(frame, offset, (ip_offset, plain), addrs, whole);
    }
    if is_walked_ext(next) {
        Parsed::Malformed
    } else {
        Parsed::Other
    }
}

/// The IPv6 extension headers the walk goes through.
#[inline(always)]
fn is_walked_ext(next: u8) -> bool {
    matches!(
        next,
        NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_AUTH | NH_FRAGMENT
    )
}

/// The TCP segment at `offset`, in the IP packet at `ip_offset` (`plain`: right after its fixed
/// header); `whole` is false when the IP header declared more bytes than the frame holds.
#[inline(always)]
fn parse_tcp(
    frame: &Frame,
    offset: usize,
    (ip_offset, plain): (usize, bool),
    addrs: Addrs,
    whole: bool,
) -> Parsed {
    let Some(ports) = frame.bytes::<4>(offset) else {
        return Parsed::Malformed;
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let segment = match frame.bytes::<TCP_HLEN>(offset) {
        Some(tcp) => Segment {
            addrs,
            sport,
            dport,
            flags: tcp[13],
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            intact: whole && tcp[12] >> 4 >= 5,
            ip_offset,
            plain,
        },
        None => Segment {
            addrs,
            sport,
            dport,
            flags: 0,
            seq: 0,
            ack: 0,
            intact: false,
            ip_offset,
            plain,
        },
    };
    Parsed::Tcp(segment)
}
