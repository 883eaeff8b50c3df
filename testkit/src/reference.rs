//! An independent reference for the datapath's decision, for the differential fuzz test
//! (`tests/tests/fuzz.rs`): plain Rust on etherparse's header types, written from the decision table
//! in README.md ("What the datapath decides") and docs/ARCHITECTURE.md (§ Decision, § Parsing), not
//! from the kernel's offsets.
//!
//! Where etherparse checks more than the datapath does, the datapath's documented semantics win and
//! the reference falls back to reading the few raw bytes the datapath needs. Each such choice is
//! marked `KERNEL SEMANTICS:` below. In short, the datapath bounds every read by the end of the
//! frame and by the end of the packet that the IP header declares (IPv4 total length, IPv6 payload
//! length: bytes past it are padding or a trailer, which the kernel trims), and treats a declared
//! length that the frame does not hold as a packet cut short (`malformed` if it is TCP to a
//! protected port); it ignores checksums, the IP version nibble, IPv4 and TCP option contents, and
//! an IPv6 extension header's body that it never needs to read.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2Header, IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice,
    Ipv6FragmentHeaderSlice, Ipv6Header, Ipv6RawExtHeaderSlice, SingleVlanHeader, TcpHeaderSlice,
    err,
};
use ipnet::IpNet;
use port25_common::{Reason, Verdict};

/// XDP actions, as BPF_PROG_TEST_RUN returns them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// The frame, rewritten, goes back out of the interface it came in on (policy synproxy's SYN-ACK).
pub const XDP_TX: u32 = 3;

/// README: "IPv6 with up to 8 extension headers"; a 9th is `malformed`.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
/// README: "Ethernet with up to two VLAN tags".
pub const MAX_VLAN_TAGS: usize = 2;

/// TCP flag bits (RFC 9293).
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the policy does with sources in neither list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefPolicyKind {
    /// `policy = "drop"`: `not_allowlisted`.
    Drop,
    /// `policy = "ratelimit"` with buckets far larger than the test can empty (see
    /// [`RefPolicy::to_toml`]): every new connection finds a token, so every segment from a source in
    /// neither list is `admitted`. The buckets' arithmetic is covered by `verdicts.rs`; here only the
    /// path through the decision is.
    RatelimitAmple,
}

/// The policy the reference decides by; [`RefPolicy::to_toml`] renders the same policy for
/// `port25d`, so the kernel and the reference are given one source of truth.
#[derive(Clone, Debug)]
pub struct RefPolicy {
    pub ports: Vec<u16>,
    pub monitor: bool,
    pub kind: RefPolicyKind,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// What the reference parser made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not TCP, not IP, or a non-first fragment: never judged, never counted.
    Other,
    /// Claims to be IP (and possibly TCP) but cannot be read far enough to decide.
    Malformed,
    /// A TCP segment whose destination port could be read. `flags` is `None` when the fixed TCP
    /// header (data offset, flags) is cut short or its data offset is below 5, or when the IP
    /// header declares more bytes than the frame holds: `malformed` if the port is protected,
    /// untouched otherwise.
    Tcp {
        source: IpAddr,
        dport: u16,
        flags: Option<u8>,
    },
}

impl RefPolicy {
    /// The policy as a `port25d` config file.
    pub fn to_toml(&self) -> String {
        let list = |nets: &[IpNet]| {
            nets.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ports = self
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let (policy, ratelimit) = match self.kind {
            RefPolicyKind::Drop => ("drop", String::new()),
            // The largest buckets the config accepts: a million tokens per source prefix,
            // refilled at a million a second, and ten million globally at ten million a second.
            // A run's SYNs are far fewer and spread over seconds, so no SYN is ever refused.
            RefPolicyKind::RatelimitAmple => (
                "ratelimit",
                "[ratelimit]\nsyn_rate = 1000000\nsyn_burst = 1000000\n\
                 global_syn_rate = 10000000\nglobal_syn_burst = 10000000\n"
                    .to_owned(),
            ),
        };
        let mode = if self.monitor { "monitor" } else { "enforce" };
        format!(
            "policy = \"{policy}\"\nmode = \"{mode}\"\nports = [{ports}]\n\
             [allow]\ncidrs = [{}]\n[deny]\ncidrs = [{}]\n{ratelimit}",
            list(&self.allow),
            list(&self.deny),
        )
    }

    pub fn protects(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Steps 2-4 of the decision table for a readable TCP segment to a protected port. Lists match
    /// when any entry contains the source (so the longest match is among them): deny first.
    ///
    /// The TCP flags do not matter to either policy modelled here: under `ratelimit` only a new
    /// connection attempt (SYN without ACK) spends a token, and an ample bucket always has one.
    pub fn judge(&self, source: IpAddr) -> Reason {
        if self.deny.iter().any(|net| net.contains(&source)) {
            return Reason::Denylisted;
        }
        if self.allow.iter().any(|net| net.contains(&source)) {
            return Reason::Allowlisted;
        }
        match self.kind {
            RefPolicyKind::Drop => Reason::NotAllowlisted,
            RefPolicyKind::RatelimitAmple => Reason::Admitted,
        }
    }

    /// The XDP action and the counter a reason moves under this policy's mode.
    pub fn outcome(&self, reason: Reason) -> (u32, Option<(Verdict, Reason)>) {
        // Written out rather than taken from `Reason::drops`, which the kernel shares.
        let drops = !matches!(reason, Reason::Allowlisted | Reason::Admitted);
        if !drops {
            (XDP_PASS, Some((Verdict::Pass, reason)))
        } else if self.monitor {
            (XDP_PASS, Some((Verdict::WouldDrop, reason)))
        } else {
            (XDP_DROP, Some((Verdict::Drop, reason)))
        }
    }

    /// The decision for an already parsed frame.
    pub fn decide_parsed(&self, parsed: Parsed) -> (u32, Option<(Verdict, Reason)>) {
        match parsed {
            Parsed::Other => (XDP_PASS, None),
            Parsed::Malformed => self.outcome(Reason::Malformed),
            Parsed::Tcp { dport, .. } if !self.protects(dport) => (XDP_PASS, None),
            Parsed::Tcp { flags: None, .. } => self.outcome(Reason::Malformed),
            Parsed::Tcp {
                source,
                flags: Some(_),
                ..
            } => self.outcome(self.judge(source)),
        }
    }
}

/// The datapath's decision for `frame`: the XDP action, and the (verdict, reason) counter it moves
/// by one packet and `frame.len()` bytes (`None`: no counter moves).
pub fn decide(frame: &[u8], policy: &RefPolicy) -> (u32, Option<(Verdict, Reason)>) {
    policy.decide_parsed(parse(frame))
}

/// Walks Ethernet, VLAN tags, IPv4 or IPv6 (with extension headers) to TCP.
pub fn parse(frame: &[u8]) -> Parsed {
    // A frame too short to name its payload claims nothing (BPF_PROG_TEST_RUN never passes one).
    let Ok((ethernet, mut rest)) = Ethernet2Header::from_slice(frame) else {
        return Parsed::Other;
    };
    let mut ether_type = ethernet.ether_type;
    // Up to two tags, each either 802.1Q or 802.1ad in either position. A third tag leaves a VLAN
    // ethertype in place, which is not IP: untouched, like any other non-IP frame (README: "up to
    // two VLAN tags"). A tag cut short hides what it carries: untouched too.
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != EtherType::VLAN_TAGGED_FRAME && ether_type != EtherType::PROVIDER_BRIDGING
        {
            break;
        }
        let Ok((vlan, inner)) = SingleVlanHeader::from_slice(rest) else {
            return Parsed::Other;
        };
        ether_type = vlan.ether_type;
        rest = inner;
    }
    match ether_type {
        EtherType::IPV4 => parse_ipv4(rest),
        EtherType::IPV6 => parse_ipv6(rest),
        _ => Parsed::Other,
    }
}

fn parse_ipv4(ip: &[u8]) -> Parsed {
    // KERNEL SEMANTICS: the first 10 bytes (version, fragment offset, protocol) decide whether the
    // packet can be TCP at all; without them nothing can be told: `malformed`. A wrong version
    // (which the stack drops itself), a non-first fragment (no ports; its first fragment was
    // judged) or a protocol other than TCP or AH is simply not ours, even with a broken header.
    let [
        version_ihl,
        _,
        total_hi,
        total_lo,
        _,
        _,
        frag_hi,
        frag_lo,
        _,
        protocol,
        ..,
    ] = *ip
    else {
        return Parsed::Malformed;
    };
    let fragment_offset = u16::from_be_bytes([frag_hi, frag_lo]) & 0x1fff;
    if version_ihl >> 4 != 4
        || fragment_offset != 0
        || (protocol != IpNumber::TCP.0 && protocol != IpNumber::AUTHENTICATION_HEADER.0)
    {
        return Parsed::Other;
    }
    // It claims TCP (perhaps behind AH): a header cut short (fixed part or options) or an IHL
    // below 5 cannot be read to a decision: `malformed`.
    //
    // The packet is what the total length says: what follows is padding. A total length the
    // frame does not hold makes the segment `malformed` if its port is protected.
    //
    // KERNEL SEMANTICS: only the header itself (IHL * 4 bytes) must be within the packet
    // (Ipv4HeaderSlice checks nothing else; Ipv4Slice would also want the total length to cover
    // it, which the bound below does); the header checksum is ignored and option bytes are never
    // interpreted.
    let (ip, whole) = declared_packet(ip, usize::from(u16::from_be_bytes([total_hi, total_lo])));
    let Ok(header) = Ipv4HeaderSlice::from_slice(ip) else {
        return Parsed::Malformed;
    };
    let source = IpAddr::V4(header.source_addr());
    let rest = &ip[header.slice().len()..];
    if header.protocol() == IpNumber::AUTHENTICATION_HEADER {
        // IPsec transport mode: one AH, then TCP or not ours.
        let (next, after) = match IpAuthHeaderSlice::from_slice(rest) {
            Ok(auth) => (auth.next_header().0, &rest[auth.slice().len()..]),
            // KERNEL SEMANTICS: as for IPv6, only the next-header and length bytes are read: a
            // length of 0 is an 8-byte header, and a body cut short matters only when TCP must
            // be read after it (then the TCP header is missing: `malformed`).
            Err(_) => {
                let [next, length, ..] = *rest else {
                    return Parsed::Malformed;
                };
                let after = rest.get((usize::from(length) + 2) * 4..).unwrap_or(&[]);
                (next, after)
            }
        };
        if next != IpNumber::TCP.0 {
            return Parsed::Other;
        }
        return parse_tcp(after, source, whole);
    }
    parse_tcp(rest, source, whole)
}

/// The first `declared` bytes of `ip` (the packet the IP header declares; the rest is padding or
/// a trailer), and whether the frame holds all of them.
fn declared_packet(ip: &[u8], declared: usize) -> (&[u8], bool) {
    match ip.get(..declared) {
        Some(packet) => (packet, true),
        None => (ip, false),
    }
}

/// One step of the IPv6 extension header walk.
enum Step<'a> {
    /// Done: the verdict of the walk.
    Done(Parsed),
    /// Another header follows, `next`, at the start of the slice.
    Next(u8, &'a [u8]),
}

/// What follows an extension header whose body runs past the end of the frame.
///
/// KERNEL SEMANTICS: the datapath reads only the next-header and length bytes of a hop-by-hop,
/// routing, destination options or authentication header and jumps over its body unread, so a
/// body that is cut short only matters if something after it must be read: TCP (for the ports) or
/// another extension header (to walk on) is then `malformed`, any other protocol is simply not
/// TCP. etherparse's slices insist on the whole header being present.
fn past_end(next: u8) -> Parsed {
    if next == IpNumber::TCP.0 || is_walked_ext(next) {
        Parsed::Malformed
    } else {
        Parsed::Other
    }
}

/// The extension headers the datapath walks through (README: hop-by-hop, routing, fragment,
/// destination options, AH). Others (ESP, mobility, HIP, shim6, no next header) end the walk:
/// not TCP.
fn is_walked_ext(next: u8) -> bool {
    [
        IpNumber::IPV6_HEADER_HOP_BY_HOP,
        IpNumber::IPV6_ROUTE_HEADER,
        IpNumber::IPV6_FRAGMENTATION_HEADER,
        IpNumber::IPV6_DESTINATION_OPTIONS,
        IpNumber::AUTHENTICATION_HEADER,
    ]
    .contains(&IpNumber(next))
}

/// Skips a header by its raw next-header and length bytes, `len_of(length byte)` long: the
/// datapath's reading where etherparse refuses a header (see [`past_end`]).
fn skip_raw(rest: &[u8], len_of: fn(u8) -> usize) -> Step<'_> {
    let [next, length, ..] = *rest else {
        // Not even the next-header and length bytes: the chain cannot be followed.
        return Step::Done(Parsed::Malformed);
    };
    match rest.get(len_of(length)..) {
        Some(after) => Step::Next(next, after),
        None => Step::Done(past_end(next)),
    }
}

fn parse_ipv6(ip: &[u8]) -> Parsed {
    // KERNEL SEMANTICS: version and next header (the first 7 bytes) come first. Without them
    // nothing can be told (`malformed`); a wrong version is the stack's to drop (not ours).
    let [version, _, _, _, payload_hi, payload_lo, first_next, ..] = *ip else {
        return Parsed::Malformed;
    };
    if version >> 4 != 6 {
        return Parsed::Other;
    }
    // The packet is the 40-byte header and the payload length after it; a payload length the
    // frame does not hold makes the segment `malformed` if its port is protected. RFC 2675: a
    // payload length of 0 before a hop-by-hop header is a jumbogram's, whose length is in an
    // option; the frame alone bounds it.
    let payload = usize::from(u16::from_be_bytes([payload_hi, payload_lo]));
    let (ip, whole) = if payload == 0 && first_next == IpNumber::IPV6_HEADER_HOP_BY_HOP.0 {
        (ip, true)
    } else {
        declared_packet(ip, Ipv6Header::LEN + payload)
    };
    // KERNEL SEMANTICS: only the 40 bytes of the header must be there. Cut short, the header
    // matters only if it leads to TCP or an extension header.
    let Ok((header, _)) = Ipv6Header::from_slice(ip) else {
        return past_end(first_next);
    };
    let source = IpAddr::V6(Ipv6Addr::from(header.source));
    let mut next = header.next_header.0;
    let mut rest = &ip[Ipv6Header::LEN..];
    let mut walked = 0;
    loop {
        if next == IpNumber::TCP.0 {
            return parse_tcp(rest, source, whole);
        }
        if !is_walked_ext(next) {
            return Parsed::Other;
        }
        // README: more than 8 extension headers is `malformed`, whatever the 9th would say (it is
        // not read, so not even a non-first fragment header there saves the packet).
        if walked == MAX_IPV6_EXT_HEADERS {
            return Parsed::Malformed;
        }
        walked += 1;
        let step = match IpNumber(next) {
            // Needs etherparse >= 0.20: 0.19 decoded the offset and the M flag from the wrong
            // bits (JulianSchmid/etherparse#150), so a first fragment with M set looked like a
            // non-first one. `fuzz.rs` pins the RFC 8200 layout with crafted bytes.
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                match Ipv6FragmentHeaderSlice::from_slice(rest) {
                    // All 8 bytes must be there to know whether this is the first fragment.
                    Err(_) => Step::Done(Parsed::Malformed),
                    // A non-first fragment carries no ports: its first fragment was judged.
                    Ok(fragment) if fragment.fragment_offset().value() != 0 => {
                        Step::Done(Parsed::Other)
                    }
                    Ok(fragment) => {
                        Step::Next(fragment.next_header().0, &rest[fragment.slice().len()..])
                    }
                }
            }
            IpNumber::AUTHENTICATION_HEADER => match IpAuthHeaderSlice::from_slice(rest) {
                Ok(auth) => Step::Next(auth.next_header().0, &rest[auth.slice().len()..]),
                // KERNEL SEMANTICS: a payload length of 0 is an 8-byte header by RFC 4302's
                // formula ((len + 2) * 4); etherparse calls it an error (an AH is at least 12
                // bytes). A header cut short is handled like the others' (`past_end`).
                Err(_) => skip_raw(rest, |length| (usize::from(length) + 2) * 4),
            },
            // Hop-by-hop, routing, destination options: length in 8-octet units, less one.
            _ => match Ipv6RawExtHeaderSlice::from_slice(rest) {
                Ok(ext) => Step::Next(ext.next_header().0, &rest[ext.slice().len()..]),
                Err(_) => skip_raw(rest, |length| (usize::from(length) + 1) * 8),
            },
        };
        match step {
            Step::Done(parsed) => return parsed,
            Step::Next(following, after) => {
                next = following;
                rest = after;
            }
        }
    }
}

/// The segment at the start of `tcp`; `whole` is false when the IP header declared more bytes than
/// the frame holds.
fn parse_tcp(tcp: &[u8], source: IpAddr, whole: bool) -> Parsed {
    // The ports are the first 4 bytes (RFC 9293); without them nothing can be decided.
    let [_, _, dport_hi, dport_lo, ..] = *tcp else {
        return Parsed::Malformed;
    };
    let dport = u16::from_be_bytes([dport_hi, dport_lo]);
    let flags = match TcpHeaderSlice::from_slice(tcp) {
        Ok(header) => {
            let mut flags = 0;
            if header.syn() {
                flags |= TCP_SYN;
            }
            if header.ack() {
                flags |= TCP_ACK;
            }
            Some(flags)
        }
        // Data offset below 5: the header is not a TCP header.
        Err(err::tcp::HeaderSliceError::Content(_)) => None,
        // KERNEL SEMANTICS: the datapath needs the fixed 20 bytes (for the flags) and never reads
        // TCP options, so options cut short by the end of the frame do not matter; etherparse
        // wants the whole data-offset's worth of header. Fewer than 20 bytes: `malformed`.
        Err(err::tcp::HeaderSliceError::Len(_)) => match tcp.get(13) {
            Some(&flags) if tcp.len() >= 20 => Some(flags & (TCP_SYN | TCP_ACK)),
            _ => None,
        },
    };
    Parsed::Tcp {
        source,
        dport,
        flags: flags.filter(|_| whole),
    }
}
