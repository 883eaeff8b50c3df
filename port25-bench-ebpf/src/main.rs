//! Programs for `cargo xtask bench` only, built into an object of their own that the bench
//! embeds: a filter on a mail gateway must not carry a packet generator, so none of this is in
//! the object `port25d` embeds.
//!
//! `floor_pass` and `floor_drop` do nothing but return their action: what BPF_PROG_TEST_RUN costs
//! per packet before any filtering, the floor every filter is compared with. `floor_flood` is the
//! least a filter can do under the flood: it drops IPv4 TCP from the flood's spoofed /16 and counts
//! it, so that the receive path's own cost shows apart from any filter's. `flood_tx` is the SYN
//! flood generator: run with BPF_F_TEST_XDP_LIVE_FRAMES on a veth, it sends its frame out again
//! (XDP_TX), each time from another spoofed source, so that a per-source allowlist or hash is
//! exercised as a real spoofed flood would. `flood_relay` stands in for it where the kernel
//! refuses live frames: it passes a packet socket's frames on to the same veth with a redirect.
//! `fresh_syn` and `fresh_syn6` write a SYN from a new source at every test run and hand it to
//! port25's filter: the per-packet rows of a spoofed flood's SYNs; `fresh_handshake` and
//! `fresh_handshake6` alternate such a SYN and the ACK that completes its cookie handshake.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_head},
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

#[xdp]
fn floor_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
fn floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Ethernet (no VLAN), IPv4 without options, TCP: the generator's template, built by the bench.
const IP_OFF: usize = 14;
const TCP_OFF: usize = IP_OFF + 20;
const FRAME_MIN: usize = TCP_OFF + 20;

/// Frames `floor_flood` dropped, per CPU.
#[map]
static FLOOR_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
fn floor_flood(ctx: XdpContext) -> u32 {
    let Some(frame) = frame_of(&ctx, TCP_OFF) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: every offset below is inside the first TCP_OFF bytes, which frame_of checked.
    let spoofed = unsafe {
        read16(frame.add(12)) == 0x0800
            && *frame.add(IP_OFF + 9) == 6
            && *frame.add(IP_OFF + 12) == 198
            && *frame.add(IP_OFF + 13) == 19
    };
    if !spoofed {
        return xdp_action::XDP_PASS;
    }
    if let Some(count) = FLOOR_DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, written only by this CPU while the program runs.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

/// The generator's frame, which the bench writes before the run: `flood_tx` starts every frame
/// from it, since live frames come back to the run as the receiver left them (a receiver that
/// answers rewrites them into its SYN-ACK).
#[map]
static FLOOD_TEMPLATE: Array<[u8; FRAME_MIN]> = Array::with_max_entries(1, 0);

#[xdp]
fn flood_tx(ctx: XdpContext) -> u32 {
    if write_fresh_syn(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Where `fresh_syn` hands its frame: slot 0 holds the program measured (port25's filter).
#[map]
static MEASURED: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// For the bench's per-packet rows that need a new SYN at every repeat of a test run, which hands
/// each repeat the frame the last one left: the frame back to the template's length (a synproxy
/// answer grew it at the front) and bytes, from a random source, then the measured program (a
/// tail call). With no program in the slot it drops: what all that costs alone.
#[xdp]
fn fresh_syn(ctx: XdpContext) -> u32 {
    fresh_syn4_then_measure(&ctx)
}

#[inline(always)]
fn fresh_syn4_then_measure(ctx: &XdpContext) -> u32 {
    if shrink_to(ctx, FRAME_MIN) && write_fresh_syn(ctx) {
        measure(ctx)
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Ethernet (no VLAN), IPv6 without extension headers, TCP: `fresh_syn6`'s template.
const IP6_OFF: usize = 14;
const TCP6_OFF: usize = IP6_OFF + 40;
const FRAME6_MIN: usize = TCP6_OFF + 20;

/// `fresh_syn6`'s SYN, which the bench writes before the run.
#[map]
static FRESH_TEMPLATE6: Array<[u8; FRAME6_MIN]> = Array::with_max_entries(1, 0);

/// `fresh_syn` for IPv6: the template's source address gets 16 random bits in its /64's last
/// word (bytes 6 and 7), so that each SYN comes from another /64, the default bucket prefix.
#[xdp]
fn fresh_syn6(ctx: XdpContext) -> u32 {
    fresh_syn6_then_measure(&ctx)
}

#[inline(always)]
fn fresh_syn6_then_measure(ctx: &XdpContext) -> u32 {
    // IPv6 has no header checksum; the TCP one covers the source through its pseudo-header.
    if shrink_to(ctx, FRAME6_MIN)
        && write_fresh(ctx, &FRESH_TEMPLATE6, IP6_OFF + 8 + 6, None, TCP6_OFF + 16)
    {
        measure(ctx)
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Per run, alternately: a new SYN from a random source (as `fresh_syn`), which policy synproxy
/// answers with its SYN-ACK in place; then that SYN-ACK turned into the client's ACK, which brings
/// the cookie back: the valid-cookie path, from a new flow at every other run.
#[xdp]
fn fresh_handshake(ctx: XdpContext) -> u32 {
    if to_client_ack::<20>(&ctx) {
        return measure(&ctx);
    }
    fresh_syn4_then_measure(&ctx)
}

/// `fresh_handshake` for IPv6.
#[xdp]
fn fresh_handshake6(ctx: XdpContext) -> u32 {
    if to_client_ack::<40>(&ctx) {
        return measure(&ctx);
    }
    fresh_syn6_then_measure(&ctx)
}

/// The TCP header port25's SYN-ACK has: 20 bytes of options, MSS first (the SYN offered none).
const SYNACK_TCP_LEN: usize = 40;

/// When the frame is port25's SYN-ACK (after an IP header of `IP_LEN` bytes), rewrites it into
/// the ACK its client would send: addresses and ports swapped, the cookie acknowledged, the
/// options NOPs; the TCP checksum updated incrementally (the swaps leave both sums as they are).
#[inline(always)]
fn to_client_ack<const IP_LEN: usize>(ctx: &XdpContext) -> bool {
    let th = 14 + IP_LEN;
    let Some(frame) = frame_of(ctx, th + SYNACK_TCP_LEN) else {
        return false;
    };
    // SAFETY: every offset below is inside the first th + SYNACK_TCP_LEN bytes, which frame_of
    // checked.
    unsafe {
        if *frame.add(th + 13) != 0x12 {
            return false;
        }
        // Source and destination addresses, the last fields of either IP header; the ports.
        if IP_LEN == 40 {
            swap::<16>(frame, th - 32, th - 16);
        } else {
            swap::<4>(frame, th - 8, th - 4);
        }
        swap::<2>(frame, th, th + 2);
        let (cookie_hi, cookie_lo) = (read16(frame.add(th + 4)), read16(frame.add(th + 6)));
        let (ack_hi, ack_lo) = (read16(frame.add(th + 8)), read16(frame.add(th + 10)));
        let cookie = (u32::from(cookie_hi) << 16) | u32::from(cookie_lo);
        let acked = cookie.wrapping_add(1);
        let (new_hi, new_lo) = ((acked >> 16) as u16, acked as u16);
        write16(frame.add(th + 4), ack_hi);
        write16(frame.add(th + 6), ack_lo);
        write16(frame.add(th + 8), new_hi);
        write16(frame.add(th + 10), new_lo);
        let mut sum = read16(frame.add(th + 16));
        sum = csum_replace(sum, cookie_hi, new_hi);
        sum = csum_replace(sum, cookie_lo, new_lo);
        let flags = read16(frame.add(th + 12));
        let ack_only = (flags & 0xff00) | 0x10;
        write16(frame.add(th + 12), ack_only);
        sum = csum_replace(sum, flags, ack_only);
        for at in [th + 20, th + 22] {
            let option = read16(frame.add(at));
            write16(frame.add(at), 0x0101);
            sum = csum_replace(sum, option, 0x0101);
        }
        write16(frame.add(th + 16), sum);
    }
    true
}

/// Swaps the N bytes at `a` with those at `b`.
///
/// # Safety
/// Both runs lie inside the frame.
#[inline(always)]
unsafe fn swap<const N: usize>(frame: *mut u8, a: usize, b: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        let (first, second) = (
            *(frame.add(a) as *const [u8; N]),
            *(frame.add(b) as *const [u8; N]),
        );
        *(frame.add(a) as *mut [u8; N]) = second;
        *(frame.add(b) as *mut [u8; N]) = first;
    }
}

/// The frame back to `len` bytes where an answer grew it at the front (by less than 64).
#[inline(always)]
fn shrink_to(ctx: &XdpContext, len: usize) -> bool {
    let grown = (ctx.data_end() - ctx.data()).saturating_sub(len);
    // SAFETY: the context is the program's own; the helper checks the new start.
    grown == 0 || unsafe { bpf_xdp_adjust_head(ctx.ctx, (grown & 63) as i32) } == 0
}

/// Hands the frame to the measured program; XDP_DROP when the slot is empty (the floor rows).
#[inline(always)]
fn measure(ctx: &XdpContext) -> u32 {
    // SAFETY: the slot holds an XDP program or nothing.
    let _ = unsafe { MEASURED.tail_call(ctx, 0) };
    xdp_action::XDP_DROP
}

/// `flood_tx`'s and `fresh_syn`'s SYN: the template, its source address's low 16 bits random.
#[inline(always)]
fn write_fresh_syn(ctx: &XdpContext) -> bool {
    write_fresh(
        ctx,
        &FLOOD_TEMPLATE,
        IP_OFF + 14,
        Some(IP_OFF + 10),
        TCP_OFF + 16,
    )
}

/// Writes `template` into the frame's first LEN bytes with 16 random bits at `source_at` (in the
/// source address); the TCP checksum at `tcp_sum_at` (which covers the addresses through its
/// pseudo-header) and the IP header's at `ip_sum_at`, if any, are updated incrementally (RFC
/// 1624), so that a stack or a filter that checks them accepts the SYN as it would a real one.
/// False when the frame is shorter or there is no template.
#[inline(always)]
fn write_fresh<const LEN: usize>(
    ctx: &XdpContext,
    template: &Array<[u8; LEN]>,
    source_at: usize,
    ip_sum_at: Option<usize>,
    tcp_sum_at: usize,
) -> bool {
    let (Some(frame), Some(template)) = (frame_of(ctx, LEN), template.get(0)) else {
        return false;
    };
    // SAFETY: the first LEN bytes are in the frame (frame_of checked them); the template is the
    // map's value, as long.
    unsafe { *(frame as *mut [u8; LEN]) = *template };
    // SAFETY: a helper without arguments.
    let new = unsafe { bpf_get_prandom_u32() } as u16;
    // SAFETY: the callers' offsets lie inside the first LEN bytes, which frame_of checked.
    unsafe {
        let old = read16(frame.add(source_at));
        write16(frame.add(source_at), new);
        if let Some(at) = ip_sum_at {
            write16(frame.add(at), csum_replace(read16(frame.add(at)), old, new));
        }
        let at = tcp_sum_at;
        write16(frame.add(at), csum_replace(read16(frame.add(at)), old, new));
    }
    true
}

/// The frame's first byte, when it holds at least `len` bytes.
#[inline(always)]
fn frame_of(ctx: &XdpContext, len: usize) -> Option<*mut u8> {
    let (data, end) = (ctx.data(), ctx.data_end());
    (data + len <= end).then_some(data as *mut u8)
}

/// Where `flood_relay` sends frames: slot 0 holds the generator's veth toward the receiver.
#[map]
static RELAY_TO: DevMap = DevMap::with_max_entries(1, 0);

/// The packet-socket generator's relay, for kernels that refuse live frames: attached to the far
/// end of the socket's own veth, it redirects every frame to the veth toward the receiver, so
/// that the receiver gets XDP frames in its ring, as from `flood_tx`, not the socket's skbs.
#[xdp]
fn flood_relay(_ctx: XdpContext) -> u32 {
    // With flags 0, a slot without a device gives XDP_ABORTED.
    RELAY_TO.redirect(0, 0).unwrap_or_else(|action| action)
}

/// A big-endian 16-bit word at `p`.
#[inline(always)]
unsafe fn read16(p: *const u8) -> u16 {
    // SAFETY: the caller checked both bytes are in the packet.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
unsafe fn write16(p: *mut u8, value: u16) {
    let [hi, lo] = value.to_be_bytes();
    // SAFETY: the caller checked both bytes are in the packet.
    unsafe {
        *p = hi;
        *p.add(1) = lo;
    }
}

/// The checksum after one 16-bit word of what it covers went from `old` to `new`:
/// HC' = ~(~HC + ~m + m') in one's complement arithmetic.
#[inline(always)]
fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

port25_common::ebpf_epilogue!();
