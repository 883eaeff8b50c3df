//! The SYN-ACK (docs/ARCHITECTURE.md, § SYN cookies): what the client's SYN offered, and the
//! reply written over it.

use port25_common::Settings;

use super::{
    Handover, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, MAX_WSCALE, NO_WSCALE, OPTION_STEPS,
    SYNACK_TCP_LEN, TCP_HLEN, TS_OPTION_BITS, TS_SACK,
};
use crate::parse::{TCP_ACK, TCP_SYN, opaque};

/// Walks the SYN's options into `handover`: window scale, SACK permitted, timestamp (the MSS is
/// the cookie helper's to read). The position and the results live in the map value, not in
/// registers: the verifier knows nothing of a value read back from a map but its bounds, so each
/// step of the walk is one state to check rather than one per combination of options before it.
///
/// # Safety
/// `th` points into the frame, whose end is `end`.
#[inline(always)]
pub(super) unsafe fn read_client_options(
    handover: *mut Handover,
    th: usize,
    end: usize,
    tcp_len: usize,
) {
    // SAFETY (for the whole walk): `handover` points into this CPU's map value.
    unsafe {
        (*handover).wscale = NO_WSCALE;
        (*handover).sack = 0;
        (*handover).timestamp = 0;
        core::ptr::write_volatile(&raw mut (*handover).at, TCP_HLEN as u32);
    }
    for _ in 0..OPTION_STEPS {
        // SAFETY: as above.
        let at = unsafe { core::ptr::read_volatile(&raw const (*handover).at) } as usize;
        if at >= tcp_len {
            return;
        }
        // The mask bounds the position for the verifier; the walk stops at tcp_len <= 60 anyway.
        // Opaque, or the compiler drops the mask as implied by `at < tcp_len`, which verifiers
        // before Linux 6.18 cannot use (two variables compared).
        let option = th + (opaque(at) & 63);
        if option + 2 > end {
            return;
        }
        // SAFETY: [option, option + 2) was just checked.
        let (kind, length) = unsafe {
            (
                *(option as *const u8),
                *((option + 1) as *const u8) as usize,
            )
        };
        let step = match kind {
            // End of options.
            0 => return,
            // No operation: one byte.
            1 => 1,
            // Malformed: what was read so far stands.
            _ if length < 2 => return,
            _ => length,
        };
        // SAFETY: as above for `handover`; each option's bytes are checked before they are read.
        unsafe {
            match (kind, length) {
                (3, 3) if option + 3 <= end => {
                    let wscale = *((option + 2) as *const u8);
                    (*handover).wscale = u32::from(wscale.min(MAX_WSCALE));
                }
                (4, 2) => (*handover).sack = 1,
                (8, 10) if option + 10 <= end => {
                    (*handover).timestamp = 1;
                    (*handover).tsval = *((option + 2) as *const [u8; 4]);
                }
                _ => {}
            }
            core::ptr::write_volatile(&raw mut (*handover).at, (at + step) as u32);
        }
    }
}

/// Rewrites the SYN at `iph` into its SYN-ACK, checksums aside.
///
/// # Safety
/// `[iph, iph + IP_LEN + SYNACK_TCP_LEN)` and the Ethernet addresses at `frame` (its start) lie inside
/// the frame.
#[inline(always)]
pub(super) unsafe fn write_synack<const IP_LEN: usize>(
    settings: &Settings,
    handover: *mut Handover,
    frame: usize,
    iph: usize,
    cookie: u32,
    now: u64,
) {
    let v6 = IP_LEN == IPV6_HLEN;
    // Every field is written in place with word stores: a local array would be zeroed first,
    // which the BPF target does with a byte loop (a call to `memset`) costlier than the rest.
    // SAFETY: the caller's promise; `handover` points into this CPU's map value. A volatile read,
    // so that the compiler does not carry what the options walk wrote in registers instead: the
    // verifier would check the rest once for every combination of options.
    unsafe {
        let Handover {
            wscale,
            sack,
            timestamp,
            tsval: client_tsval,
            ..
        } = core::ptr::read_volatile(handover);
        // Ethernet: back to where it came from.
        let (to, from) = (read::<[u8; 6]>(frame), read::<[u8; 6]>(frame + 6));
        write(frame, from);
        write(frame + 6, to);
        let th = iph + IP_LEN;
        let (client_port, server_port) = (read::<u16>(th), read::<u16>(th + 2));
        let client_seq = u32::from_be(read::<u32>(th + 4));

        // IP: addresses swapped, length of the SYN-ACK, the configured TTL.
        let ttl = settings.synproxy_ttl as u8;
        if v6 {
            let (client, server) = (read::<[u64; 2]>(iph + 8), read::<[u64; 2]>(iph + 24));
            write(iph + 8, server);
            write(iph + 24, client);
            write(iph, [0x60u8, 0, 0, 0]);
            write(iph + 4, (SYNACK_TCP_LEN as u16).to_be());
            write(iph + 6, [IPPROTO_TCP, ttl]);
        } else {
            let (client, server) = (read::<u32>(iph + 12), read::<u32>(iph + 16));
            write(iph + 12, server);
            write(iph + 16, client);
            let total = ((IPV4_HLEN + SYNACK_TCP_LEN) as u16).to_be_bytes();
            // Version and header length, no ToS, the length, no id, don't fragment, then the TTL,
            // the protocol and a checksum to fill in.
            write(iph, [0x45u8, 0, total[0], total[1]]);
            write(iph + 4, [0u8, 0, 0x40, 0]);
            write(iph + 8, [ttl, IPPROTO_TCP, 0, 0]);
        }

        // TCP: ports swapped, the cookie as sequence number, the SYN acknowledged; window 0 as
        // netfilter's SYNPROXY sends it (the window is opened once the connection is handed over).
        let mss = if v6 {
            settings.synproxy_mss6
        } else {
            settings.synproxy_mss4
        } as u16;
        write(th, server_port);
        write(th + 2, client_port);
        write(th + 4, cookie.to_be());
        write(th + 8, client_seq.wrapping_add(1).to_be());
        write(
            th + 12,
            [((SYNACK_TCP_LEN / 4) as u8) << 4, TCP_SYN | TCP_ACK, 0, 0],
        );
        write(th + 16, 0u32);
        let mss = mss.to_be_bytes();
        write(th + 20, [2u8, 4, mss[0], mss[1]]);
        // Without a timestamp the cookie cannot carry SACK or window scale: only the MSS is
        // offered, as the kernel does. NOPs (1) fill what is not offered.
        const NOPS: [u8; 4] = [1, 1, 1, 1];
        if timestamp != 0 {
            let sack_permitted: [u8; 2] = if sack != 0 { [4, 2] } else { [1, 1] };
            write(th + 24, sack_permitted);
            write(th + 26, [8u8, 10]);
            write(th + 28, cookie_timestamp(now, wscale, sack).to_be());
            write(th + 32, client_tsval);
            if wscale != NO_WSCALE {
                write(th + 36, [1u8, 3, 3, settings.synproxy_wscale as u8]);
            } else {
                write(th + 36, NOPS);
            }
        } else {
            for at in [24, 28, 32, 36] {
                write(th + at, NOPS);
            }
        }
    }
}

/// Reads a `T` at `at`, in the frame's byte order.
///
/// # Safety
/// `size_of::<T>()` readable bytes at `at`.
#[inline(always)]
unsafe fn read<T>(at: usize) -> T {
    // SAFETY: the caller's promise.
    unsafe { (at as *const T).read_unaligned() }
}

/// Writes `value` at `at` as its bytes lie in memory. Give array literals their element type
/// (`[8u8, 10]`): an untyped integer literal is an i32, four bytes.
///
/// # Safety
/// `size_of::<T>()` writable bytes at `at`.
#[inline(always)]
unsafe fn write<T>(at: usize, value: T) {
    // SAFETY: the caller's promise.
    unsafe { (at as *mut T).write_unaligned(value) }
}

/// The SYN-ACK's timestamp: now in milliseconds, its low bits replaced by the client's window scale
/// and SACK permission, and never ahead of now (the kernel's `cookie_init_timestamp`).
#[inline(always)]
fn cookie_timestamp(now: u64, wscale: u32, sack: u32) -> u32 {
    let now = (now / 1_000_000) as u32;
    let options = wscale | if sack != 0 { TS_SACK } else { 0 };
    let stamp = (now >> TS_OPTION_BITS << TS_OPTION_BITS) | options;
    if stamp > now {
        stamp.wrapping_sub(1 << TS_OPTION_BITS)
    } else {
        stamp
    }
}
