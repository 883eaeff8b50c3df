//! Policy synproxy (docs/ARCHITECTURE.md, § SYN cookies): a SYN from a source in no list is
//! answered here, without state, by a SYN-ACK whose sequence number is a SYN cookie, sent back out
//! of the interface it came in on (XDP_TX). Only a client that received the SYN-ACK can send the
//! ACK that carries the cookie back, so a spoofed flood never gets further; a valid ACK passes to
//! the stack, where netfilter's SYNPROXY (which checks the same cookies) opens the connection to
//! the MTA. The SYN-ACK's options follow the kernel's own SYN cookies: window scale and SACK are
//! kept in the low bits of the timestamp, so the client's ACK brings them back.
//!
//! The filter hands a SYN over by a tail call into `port25_synproxy`, with the headers' offsets in
//! `HANDOVER`: verified as a program of its own, the answer is checked once, not once for every
//! path the parser can take.

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    helpers::{
        bpf_ktime_get_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use port25_common::{FlowKey, HANDSHAKE_CAPACITY, Reason, Settings};

mod checksum;
mod synack;

use self::{
    checksum::{ipv4_header_sum, tcp_sum, write_checksums},
    synack::{read_client_options, write_synack},
};
use crate::{
    handshake::{acknowledges_syn_ack, flow_key},
    parse::{Addr, Segment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, opaque},
    ratelimit,
};

#[map]
static SYNPROXY_PROGRAM: ProgramArray = ProgramArray::pinned(1, 0);
#[map]
static COOKIE_FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::pinned(HANDSHAKE_CAPACITY, 0);
/// Pinned like the program slot, so that a filter and a synproxy program of two daemons (during a
/// restart) still share it.
#[map]
static HANDOVER: PerCpuArray<Handover> = PerCpuArray::pinned(1, 0);

/// What the filter tells the synproxy program about the SYN, and what the options walk found.
/// A map value rather than registers: the verifier cannot know the values there, so every path
/// into the answer is one state to check.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Handover {
    /// Where the IP header starts, and 1 when it is IPv6.
    ip_offset: u32,
    v6: u32,
    /// The client's window scale, [`NO_WSCALE`] when it sent none; 1 when it permits SACK and
    /// when it sent a timestamp, that timestamp as it was on the wire.
    wscale: u32,
    sack: u32,
    timestamp: u32,
    tsval: [u8; 4],
    /// The options walk's position in the TCP header.
    at: u32,
}

const NO_WSCALE: u32 = 0xf;
/// The largest window scale (RFC 7323).
const MAX_WSCALE: u8 = 14;
/// Low bits of the SYN-ACK's timestamp that carry the client's options (the kernel's TSBITS).
const TS_OPTION_BITS: u32 = 6;
const TS_SACK: u32 = 1 << 4;

const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
/// The SYN-ACK's TCP header: 20 bytes and 20 of options (MSS, SACK and timestamps, window scale,
/// NOPs where the client asked for none).
const SYNACK_TCP_LEN: usize = 40;
/// Option bytes walked at most (a TCP header holds 40).
const OPTION_STEPS: usize = 40;

const IPPROTO_TCP: u8 = 6;

/// What the synproxy program did with a segment.
pub(crate) enum Answer {
    /// A SYN-ACK with a cookie goes back (XDP_TX).
    Sent,
    /// Dropped, for this reason: a bad checksum, the SYN-ACK budget spent, an ACK without a valid
    /// cookie (in monitor mode: passed, counted as it would have been dropped).
    Dropped(Reason),
    /// Passed to the stack, for this reason: a segment of a flow whose cookie was valid, the ACK
    /// that brought it, (`SynCookie`) in monitor mode a SYN it would have answered, or
    /// (`Admitted`) a SYN it does not answer (with data, or a frame the driver cannot grow),
    /// which netfilter's SYNPROXY answers.
    Passed(Reason),
}

/// Tail-calls the synproxy program for a segment that TCP follows the fixed IP header of; returns
/// only when it is not handed over (another header layout, or no program in the slot), and then
/// netfilter's SYNPROXY answers or checks it.
#[inline(always)]
pub(crate) fn hand_over(ctx: &XdpContext, segment: &Segment) {
    if !segment.plain {
        return;
    }
    let Some(handover) = HANDOVER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value of the scratch map; XDP runs with preemption off.
    unsafe {
        (*handover).ip_offset = segment.ip_offset as u32;
        (*handover).v6 = matches!(segment.addrs.source, Addr::V6(_)) as u32;
        SYNPROXY_PROGRAM.tail_call(ctx, 0);
    }
}

/// The synproxy program's work on the segment the filter handed over: a pure SYN is answered,
/// anything else judged by its flow and its cookie.
#[inline(always)]
pub(crate) fn answer(ctx: &XdpContext, settings: &Settings) -> Answer {
    let Some(handover) = HANDOVER.get_ptr_mut(0) else {
        return Answer::Passed(Reason::Admitted);
    };
    // SAFETY: this CPU's value of the scratch map, which the filter wrote before the tail call.
    // Read from a map, the offset is a value the verifier knows only the bounds of: one state
    // whatever the parser's path was.
    let (ip, v6) = unsafe { ((*handover).ip_offset as usize & 31, (*handover).v6 != 0) };
    // One copy per family, so that every header offset is a constant to the verifier.
    if v6 {
        answer_in::<IPV6_HLEN>(ctx, settings, handover, ip)
    } else {
        answer_in::<IPV4_HLEN>(ctx, settings, handover, ip)
    }
}

/// [`answer`] for the family whose IP header is `IP_LEN` bytes long, at `ip` in the frame.
#[inline(always)]
fn answer_in<const IP_LEN: usize>(
    ctx: &XdpContext,
    settings: &Settings,
    handover: *mut Handover,
    ip: usize,
) -> Answer {
    let iph = ctx.data() + ip;
    if iph + IP_LEN + TCP_HLEN > ctx.data_end() {
        return Answer::Passed(Reason::Admitted);
    }
    // SAFETY: the fixed headers were just checked to lie inside the frame.
    let flags = unsafe { *((iph + IP_LEN + 13) as *const u8) };
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        answer_syn::<IP_LEN>(ctx, settings, handover, ip)
    } else {
        judge_segment::<IP_LEN>(ctx, settings, iph, flags)
    }
}

/// A segment other than a SYN: a known flow's passes; an ACK of no known flow passes when it
/// carries a valid cookie (its flow is known from then on, its source verified) and is dropped
/// otherwise. In monitor mode the stack answered the SYN, so the ACK that completes its handshake
/// (the SYN-ACK watcher's record) stands for a valid cookie.
#[inline(always)]
fn judge_segment<const IP_LEN: usize>(
    ctx: &XdpContext,
    settings: &Settings,
    iph: usize,
    flags: u8,
) -> Answer {
    let th = iph + IP_LEN;
    if th + TCP_HLEN > ctx.data_end() {
        return Answer::Passed(Reason::Admitted);
    }
    // SAFETY: both fixed headers were just checked to lie inside the frame.
    let (client, server, client_port, server_port) = unsafe {
        let (client, server) = if IP_LEN == IPV6_HLEN {
            (
                Addr::V6(*((iph + 8) as *const [u8; 16])),
                Addr::V6(*((iph + 24) as *const [u8; 16])),
            )
        } else {
            (
                Addr::V4(*((iph + 12) as *const [u8; 4])),
                Addr::V4(*((iph + 16) as *const [u8; 4])),
            )
        };
        (client, server, be16(th), be16(th + 2))
    };
    let key = flow_key(&client, &server, client_port, server_port);
    // SAFETY: the value is a plain u64 read while the program runs.
    if unsafe { COOKIE_FLOWS.get(&key) }.is_some() {
        return Answer::Passed(Reason::Admitted);
    }
    let plain_ack = flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) == TCP_ACK;
    // SAFETY: both headers lie inside the frame (checked above).
    let valid = plain_ack
        && (unsafe {
            if IP_LEN == IPV6_HLEN {
                bpf_tcp_raw_check_syncookie_ipv6(iph as *mut ipv6hdr, th as *mut tcphdr)
            } else {
                bpf_tcp_raw_check_syncookie_ipv4(iph as *mut iphdr, th as *mut tcphdr)
            }
        } == 0
            // SAFETY: the TCP header lies inside the frame (checked above).
            || (settings.monitor != 0 && acknowledges_syn_ack(&key, unsafe { be32(th + 8) })));
    if !valid {
        return Answer::Dropped(Reason::CookieInvalid);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = COOKIE_FLOWS.insert(&key, &now, 0);
    ratelimit::handshake_completed(settings, &client);
    Answer::Passed(Reason::CookieValid)
}

/// A pure SYN, answered in place with a SYN-ACK carrying a cookie.
#[inline(always)]
fn answer_syn<const IP_LEN: usize>(
    ctx: &XdpContext,
    settings: &Settings,
    handover: *mut Handover,
    ip: usize,
) -> Answer {
    let Some(tcp_len) = syn_header_length::<IP_LEN>(ctx, ip) else {
        return Answer::Passed(Reason::Admitted);
    };
    // The checks and the cookie read the whole TCP header, whose length the verifier must see as
    // a constant: one copy for each length a header can have.
    let checked = match tcp_len {
        20 => check_syn::<IP_LEN, 20>(ctx, ip),
        24 => check_syn::<IP_LEN, 24>(ctx, ip),
        28 => check_syn::<IP_LEN, 28>(ctx, ip),
        32 => check_syn::<IP_LEN, 32>(ctx, ip),
        36 => check_syn::<IP_LEN, 36>(ctx, ip),
        40 => check_syn::<IP_LEN, 40>(ctx, ip),
        44 => check_syn::<IP_LEN, 44>(ctx, ip),
        48 => check_syn::<IP_LEN, 48>(ctx, ip),
        52 => check_syn::<IP_LEN, 52>(ctx, ip),
        56 => check_syn::<IP_LEN, 56>(ctx, ip),
        60 => check_syn::<IP_LEN, 60>(ctx, ip),
        _ => Err(Answer::Passed(Reason::Admitted)),
    };
    let cookie = match checked {
        Ok(cookie) => cookie,
        Err(answer) => return answer,
    };
    let th = ctx.data() + ip + IP_LEN;
    // SAFETY: the walk checks every read against the frame's end; `handover` is this CPU's value.
    unsafe { read_client_options(handover, th, ctx.data_end(), tcp_len) };
    // One clock read for the budget and the SYN-ACK's timestamp.
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !ratelimit::synack_token(settings, now) {
        return Answer::Dropped(Reason::SynackBudget);
    }
    // Monitor mode: the SYN passed every check enforce mode makes, and the stack answers it.
    if settings.monitor != 0 {
        return Answer::Passed(Reason::SynCookie);
    }
    if !make_room::<IP_LEN>(ctx, ip, tcp_len) {
        return Answer::Passed(Reason::Admitted);
    }
    let frame = ctx.data();
    let iph = frame + ip;
    if frame + 12 > ctx.data_end() || iph + IP_LEN + SYNACK_TCP_LEN > ctx.data_end() {
        return Answer::Passed(Reason::Admitted);
    }
    // SAFETY: the Ethernet addresses and [iph, iph + IP_LEN + SYNACK_TCP_LEN) were just checked
    // to lie inside the frame.
    unsafe { write_synack::<IP_LEN>(settings, handover, frame, iph, cookie, now) };
    // The SYN-ACK's length exactly: the stack and the wire see no bytes past it.
    if !resize(ctx, ip + IP_LEN + SYNACK_TCP_LEN) {
        return Answer::Dropped(Reason::Malformed);
    }
    let iph = ctx.data() + ip;
    if iph + IP_LEN + SYNACK_TCP_LEN > ctx.data_end() {
        return Answer::Dropped(Reason::Malformed);
    }
    // SAFETY: the headers were just checked to lie inside the frame.
    unsafe { write_checksums::<IP_LEN>(iph) };
    Answer::Sent
}

/// Verifies the checksums of a SYN whose TCP header is `TCP_LEN` bytes long and returns its cookie;
/// a bad checksum drops it.
#[inline(always)]
fn check_syn<const IP_LEN: usize, const TCP_LEN: usize>(
    ctx: &XdpContext,
    ip: usize,
) -> Result<u32, Answer> {
    let iph = ctx.data() + ip;
    let th = iph + IP_LEN;
    if th + TCP_LEN > ctx.data_end() {
        return Err(Answer::Passed(Reason::Admitted));
    }
    // SAFETY: [iph, th + TCP_LEN) was just checked to lie inside the frame.
    unsafe {
        if (IP_LEN == IPV4_HLEN && ipv4_header_sum(iph) != 0xffff)
            || tcp_sum::<IP_LEN, TCP_LEN>(iph) != 0xffff
        {
            return Err(Answer::Dropped(Reason::Malformed));
        }
        let cookie = if IP_LEN == IPV6_HLEN {
            bpf_tcp_raw_gen_syncookie_ipv6(iph as *mut ipv6hdr, th as *mut tcphdr, TCP_LEN as u32)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv4(iph as *mut iphdr, th as *mut tcphdr, TCP_LEN as u32)
        };
        if cookie < 0 {
            return Err(Answer::Passed(Reason::Admitted));
        }
        Ok(cookie as u32)
    }
}

/// Makes the frame long enough for the SYN-ACK's 40-byte TCP header when the SYN's is shorter:
/// grown at the front (drivers keep XDP_PACKET_HEADROOM there; room at the end is not promised,
/// and veth has none for a frame from a packet socket), the headers moved along. A longer SYN is
/// cut to size once the SYN-ACK is written.
#[inline(always)]
fn make_room<const IP_LEN: usize>(ctx: &XdpContext, ip: usize, tcp_len: usize) -> bool {
    if tcp_len >= SYNACK_TCP_LEN {
        return true;
    }
    let delta = (SYNACK_TCP_LEN - tcp_len) & 31;
    // SAFETY: the context is the program's own; the helper checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(delta as i32)) } != 0 {
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let from = start + delta;
    // The link layer header (Ethernet and up to two VLAN tags), then IP and TCP's fixed part,
    // each a block of a constant size.
    let link = match ip {
        14 => move_block::<14>(start, from, end),
        18 => move_block::<18>(start, from, end),
        22 => move_block::<22>(start, from, end),
        _ => false,
    };
    link && move_block::<IP_LEN>(start + ip, from + ip, end)
        && move_block::<TCP_HLEN>(start + ip + IP_LEN, from + ip + IP_LEN, end)
}

/// Copies `N` bytes (an even number) from `from` down to `to` (below it) in the frame ending at
/// `end`, front to back. Volatile two-byte moves: the compiler would otherwise call memmove, a
/// function of its own where the verifier no longer knows the packet's bounds.
#[inline(always)]
fn move_block<const N: usize>(to: usize, from: usize, end: usize) -> bool {
    // Opaque: the compiler would drop the check of `to` as implied by the one of `from` (it lies
    // above), and the verifier needs to see both.
    let to = opaque(to);
    if from + N > end || to + N > end {
        return false;
    }
    for i in 0..N / 2 {
        // SAFETY: both blocks were just checked to lie inside the frame.
        unsafe {
            let word = core::ptr::read_volatile((from + 2 * i) as *const [u8; 2]);
            core::ptr::write_volatile((to + 2 * i) as *mut [u8; 2], word);
        }
    }
    true
}

/// The SYN's TCP header length, when the packet ends with it (a SYN with data is left to the
/// stack, which accepts no data before the handshake completes anyway).
#[inline(always)]
fn syn_header_length<const IP_LEN: usize>(ctx: &XdpContext, ip: usize) -> Option<usize> {
    let iph = ctx.data() + ip;
    if iph + IP_LEN + TCP_HLEN > ctx.data_end() {
        return None;
    }
    // SAFETY: the fixed headers were just checked to lie inside the frame.
    let (declared, tcp_len) = unsafe {
        let declared = if IP_LEN == IPV6_HLEN {
            // The payload length: what follows the fixed header.
            be16(iph + 4) as usize + IP_LEN
        } else {
            be16(iph + 2) as usize
        };
        let tcp_len = ((*((iph + IP_LEN + 12) as *const u8) >> 4) as usize) * 4;
        (declared, tcp_len)
    };
    (tcp_len >= TCP_HLEN && declared == IP_LEN + tcp_len).then_some(tcp_len)
}

/// Makes the frame end `length` bytes from its start.
#[inline(always)]
fn resize(ctx: &XdpContext, length: usize) -> bool {
    let delta = length as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the context is the program's own; the helper checks the new size.
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0
}

/// Reads a big-endian u16.
///
/// # Safety
/// Two readable bytes at `at`.
#[inline(always)]
unsafe fn be16(at: usize) -> u16 {
    // SAFETY: the caller's promise.
    let bytes = unsafe { *(at as *const [u8; 2]) };
    u16::from_be_bytes(bytes)
}

/// Reads a big-endian u32.
///
/// # Safety
/// Four readable bytes at `at`.
#[inline(always)]
unsafe fn be32(at: usize) -> u32 {
    // SAFETY: the caller's promise.
    let bytes = unsafe { *(at as *const [u8; 4]) };
    u32::from_be_bytes(bytes)
}
