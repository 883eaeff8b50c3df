//! Proof that a source address is real: the gateway's SYN-ACK carries a random sequence number,
//! and only a client that received it can acknowledge it. The SYN-ACK watcher (TC, on egress) notes each SYN-ACK
//! the gateway sends from a protected port; the XDP program checks the client's ACK against it and,
//! on a match, marks the client's prefix verified. Spoofed floods never get verified.

use aya_ebpf::{macros::map, maps::LruHashMap};
use port25_common::{FlowKey, HANDSHAKE_CAPACITY};

use crate::parse::{Addr, Segment};

#[map]
static HANDSHAKES: LruHashMap<FlowKey, u32> = LruHashMap::pinned(HANDSHAKE_CAPACITY, 0);

/// Egress: the gateway answered a SYN on a protected port; remember what the ACK must say.
#[inline(always)]
pub(crate) fn record_syn_ack(segment: &Segment) {
    // Outgoing: the client is the destination.
    let key = flow_key(
        &segment.addrs.dest,
        &segment.addrs.source,
        segment.dport,
        segment.sport,
    );
    let expected_ack = segment.seq.wrapping_add(1);
    let _ = HANDSHAKES.insert(key, expected_ack, 0);
}

/// Ingress: does this ACK complete a handshake the gateway answered? Consumes the record.
#[inline(always)]
pub(crate) fn completes_handshake(segment: &Segment) -> bool {
    let key = flow_key(
        &segment.addrs.source,
        &segment.addrs.dest,
        segment.sport,
        segment.dport,
    );
    acknowledges_syn_ack(&key, segment.ack)
}

/// Does `ack` acknowledge the SYN-ACK the gateway sent on the connection `key`? Consumes the
/// record when it does.
#[inline(always)]
pub(crate) fn acknowledges_syn_ack(key: &FlowKey, ack: u32) -> bool {
    // SAFETY: the value is a plain u32 read while the program runs.
    let Some(&expected) = (unsafe { HANDSHAKES.get(key) }) else {
        return false;
    };
    if expected != ack {
        return false;
    }
    let _ = HANDSHAKES.remove(key);
    true
}

/// The key of one connection, from the client's side.
#[inline(always)]
pub(crate) fn flow_key(
    client: &Addr,
    server: &Addr,
    client_port: u16,
    server_port: u16,
) -> FlowKey {
    let (client, server, family) = match (*client, *server) {
        (Addr::V4(c), Addr::V4(s)) => (widen(c), widen(s), 4),
        (Addr::V6(c), Addr::V6(s)) => (c, s, 6),
        _ => (widen([0; 4]), widen([0; 4]), 0),
    };
    FlowKey {
        client,
        server,
        client_port,
        server_port,
        family,
    }
}

/// An IPv4 address in the first 4 bytes of 16, the rest zero: built from words, because a zeroed
/// byte array costs the BPF target a call to a byte-loop `memset`.
#[inline(always)]
pub(crate) fn widen(addr: [u8; 4]) -> [u8; 16] {
    bytes_of([u32::from_ne_bytes(addr), 0, 0, 0])
}

/// Four words as the 16 bytes they lie in, without going through a zeroed byte array.
#[inline(always)]
pub(crate) fn bytes_of(words: [u32; 4]) -> [u8; 16] {
    // SAFETY: 16 bytes either way, and any bytes are a valid [u8; 16].
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) }
}
