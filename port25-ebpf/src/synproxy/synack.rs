//! The SYN-ACK (docs/ARCHITECTURE.md, § SYN cookies): what the client's SYN offered, and the
//! reply written over it.

use aya_ebpf::helpers::bpf_ktime_get_ns;
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
) {
    let v6 = IP_LEN == IPV6_HLEN;
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
        let ethernet = &mut *(frame as *mut [u8; 12]);
        let mut source = [0u8; 6];
        source.copy_from_slice(&ethernet[6..12]);
        ethernet.copy_within(0..6, 6);
        ethernet[..6].copy_from_slice(&source);
        let th = iph + IP_LEN;
        let tcp = *(th as *const [u8; TCP_HLEN]);
        let client_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);

        // IP: addresses swapped, length of the SYN-ACK, the configured TTL.
        let ttl = settings.synproxy_ttl as u8;
        if v6 {
            let header = &mut *(iph as *mut [u8; IPV6_HLEN]);
            let mut source = [0u8; 16];
            source.copy_from_slice(&header[8..24]);
            header.copy_within(24..40, 8);
            header[24..40].copy_from_slice(&source);
            header[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            header[4..6].copy_from_slice(&(SYNACK_TCP_LEN as u16).to_be_bytes());
            header[6] = IPPROTO_TCP;
            header[7] = ttl;
        } else {
            let header = &mut *(iph as *mut [u8; IPV4_HLEN]);
            let mut source = [0u8; 4];
            source.copy_from_slice(&header[12..16]);
            header.copy_within(16..20, 12);
            header[16..20].copy_from_slice(&source);
            let total = (IPV4_HLEN + SYNACK_TCP_LEN) as u16;
            // Version and header length, no ToS, the length, no id, don't fragment.
            header[..10].copy_from_slice(&[
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0x40,
                0,
                ttl,
                IPPROTO_TCP,
            ]);
            header[10..12].copy_from_slice(&[0, 0]);
        }

        // TCP: ports swapped, the cookie as sequence number, the SYN acknowledged; window 0 as
        // netfilter's SYNPROXY sends it (the window is opened once the connection is handed over).
        let mss = if v6 {
            settings.synproxy_mss6
        } else {
            settings.synproxy_mss4
        } as u16;
        let mut synack = [0u8; SYNACK_TCP_LEN];
        synack[0..2].copy_from_slice(&tcp[2..4]);
        synack[2..4].copy_from_slice(&tcp[0..2]);
        synack[4..8].copy_from_slice(&cookie.to_be_bytes());
        synack[8..12].copy_from_slice(&client_seq.wrapping_add(1).to_be_bytes());
        synack[12] = ((SYNACK_TCP_LEN / 4) as u8) << 4;
        synack[13] = TCP_SYN | TCP_ACK;
        synack[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        // Without a timestamp the cookie cannot carry SACK or window scale: only the MSS is
        // offered, as the kernel does.
        let mut options = [1u8; 16];
        if timestamp != 0 {
            if sack != 0 {
                options[..2].copy_from_slice(&[4, 2]);
            }
            options[2..4].copy_from_slice(&[8, 10]);
            options[4..8].copy_from_slice(&cookie_timestamp(wscale, sack).to_be_bytes());
            options[8..12].copy_from_slice(&client_tsval);
            if wscale != NO_WSCALE {
                options[13..16].copy_from_slice(&[3, 3, settings.synproxy_wscale as u8]);
            }
        }
        synack[24..40].copy_from_slice(&options);
        *(th as *mut [u8; SYNACK_TCP_LEN]) = synack;
    }
}

/// The SYN-ACK's timestamp: now in milliseconds, its low bits replaced by the client's window scale
/// and SACK permission, and never ahead of now (the kernel's `cookie_init_timestamp`).
#[inline(always)]
fn cookie_timestamp(wscale: u32, sack: u32) -> u32 {
    // SAFETY: a helper without arguments.
    let now = (unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32;
    let options = wscale | if sack != 0 { TS_SACK } else { 0 };
    let stamp = (now >> TS_OPTION_BITS << TS_OPTION_BITS) | options;
    if stamp > now {
        stamp.wrapping_sub(1 << TS_OPTION_BITS)
    } else {
        stamp
    }
}
