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
    let grown = (ctx.data_end() - ctx.data()).saturating_sub(FRAME_MIN);
    // SAFETY: the context is the program's own; the helper checks the new start.
    if grown != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, (grown & 63) as i32) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    if !write_fresh_syn(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the slot holds an XDP program or nothing.
    let _ = unsafe { MEASURED.tail_call(&ctx, 0) };
    xdp_action::XDP_DROP
}

/// Writes the template into the frame's first FRAME_MIN bytes, its source address's low 16 bits
/// random; the IP and TCP checksums (the TCP one covers the addresses through its pseudo-header)
/// are updated incrementally (RFC 1624), so that a stack or a filter that checks them accepts
/// the SYN as it would a real one. False when the frame is shorter or there is no template.
#[inline(always)]
fn write_fresh_syn(ctx: &XdpContext) -> bool {
    let Some(frame) = frame_of(ctx, FRAME_MIN) else {
        return false;
    };
    let Some(template) = FLOOD_TEMPLATE.get(0) else {
        return false;
    };
    // SAFETY: the first FRAME_MIN bytes are in the frame (frame_of checked them); the template is
    // the map's value, as long.
    unsafe { *(frame as *mut [u8; FRAME_MIN]) = *template };
    // SAFETY: a helper without arguments.
    let new = unsafe { bpf_get_prandom_u32() } as u16;
    // SAFETY: every offset below is inside the first FRAME_MIN bytes, which frame_of checked.
    unsafe {
        let old = read16(frame.add(IP_OFF + 14));
        write16(frame.add(IP_OFF + 14), new);
        let ip_sum = read16(frame.add(IP_OFF + 10));
        write16(frame.add(IP_OFF + 10), csum_replace(ip_sum, old, new));
        let tcp_sum = read16(frame.add(TCP_OFF + 16));
        write16(frame.add(TCP_OFF + 16), csum_replace(tcp_sum, old, new));
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
