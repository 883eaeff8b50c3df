//! The Internet checksums of the SYN and the SYN-ACK, with `bpf_csum_diff`.

use aya_ebpf::helpers::bpf_csum_diff;

use super::{IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, SYNACK_TCP_LEN};

/// Fills in the SYN-ACK's IPv4 header checksum and its TCP checksum (both fields zero).
///
/// # Safety
/// `[iph, iph + IP_LEN + SYNACK_TCP_LEN)` lies inside the frame.
#[inline(always)]
pub(super) unsafe fn write_checksums<const IP_LEN: usize>(iph: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        if IP_LEN == IPV4_HLEN {
            *((iph + 10) as *mut u16) = !ipv4_header_sum(iph);
        }
        *((iph + IP_LEN + 16) as *mut u16) = !tcp_sum::<IP_LEN, SYNACK_TCP_LEN>(iph);
    }
}

/// The folded ones' complement sum of the IPv4 header at `iph`: 0xffff when its checksum is right.
///
/// # Safety
/// The 20 bytes at `iph` lie inside the frame.
#[inline(always)]
pub(super) unsafe fn ipv4_header_sum(iph: usize) -> u16 {
    // SAFETY: the caller's promise.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            iph as *mut u32,
            IPV4_HLEN as u32,
            0,
        )
    };
    fold(sum)
}

/// The folded ones' complement sum of the `TCP_LEN`-byte TCP segment after the IP header at `iph`
/// and of its pseudo-header: 0xffff when its checksum is right. The length is a constant, as the
/// helper wants it.
///
/// # Safety
/// `[iph, iph + IP_LEN + TCP_LEN)` lies inside the frame.
#[inline(always)]
pub(super) unsafe fn tcp_sum<const IP_LEN: usize, const TCP_LEN: usize>(iph: usize) -> u16 {
    // SAFETY: the caller's promise.
    let sum = unsafe {
        let pseudo = pseudo_header_sum::<IP_LEN>(iph, TCP_LEN);
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            (iph + IP_LEN) as *mut u32,
            TCP_LEN as u32,
            pseudo,
        )
    };
    fold(sum)
}

/// The ones' complement sum of the TCP pseudo-header (RFC 9293 § 3.1, RFC 8200 § 8.1), unfolded,
/// in the byte order `bpf_csum_diff` reads words in: the addresses' words as they lie in the
/// frame, and the length and protocol as the words the pseudo-header would hold. Added up here
/// rather than by the helper over a copy, whose zeroing costs the BPF target a byte loop.
///
/// # Safety
/// The IP header at `iph` lies inside the frame.
#[inline(always)]
unsafe fn pseudo_header_sum<const IP_LEN: usize>(iph: usize, tcp_len: usize) -> u32 {
    let word = |at: usize| {
        // SAFETY: the caller's promise; every word read is inside the IP header.
        u64::from(unsafe { (at as *const u32).read_unaligned() })
    };
    let sum = if IP_LEN == IPV6_HLEN {
        let mut addresses = 0;
        for i in 0..8 {
            addresses += word(iph + 8 + 4 * i);
        }
        // The 32-bit length, then three zero bytes and the protocol, both big-endian.
        addresses + u64::from((tcp_len as u32).to_be()) + u64::from(u32::from(IPPROTO_TCP) << 24)
    } else {
        // A zero byte, the protocol, the 16-bit length.
        let length = tcp_len as u32;
        word(iph + 12)
            + word(iph + 16)
            + u64::from(u32::from(IPPROTO_TCP) << 8 | (length >> 8) << 16 | (length & 0xff) << 24)
    };
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    ((sum & 0xffff_ffff) + (sum >> 32)) as u32
}

/// Folds a 32-bit ones' complement sum (as `bpf_csum_diff` returns it) to 16 bits, in the byte
/// order the words were read in.
#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut sum = sum as u64 & 0xffff_ffff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
