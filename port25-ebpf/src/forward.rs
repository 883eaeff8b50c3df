//! The egress guard for routed traffic: on `forward_interfaces` (the LAN side of a router), a
//! SYN to a guarded port that the kernel will forward (not one for this host) is dropped unless
//! its destination is a smart host. No process is known here: only the counters say it happened.
//! docs/ARCHITECTURE.md, § Egress.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
};
use port25_common::egress::{EgressSettings, MAX_FORWARD, MODE_ENFORCE, Reason, Verdict};

use crate::{
    egress::guarded,
    maps,
    parse::{Addr, Parsed, Segment, TCP_ACK, TCP_SYN},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;

/// What the forward guard makes of a packet arriving on `ifindex`: `Some(action)` when the XDP
/// program is done with it (on a forward-only interface, always), `None` when the ingress filter
/// judges it as usual.
#[inline(always)]
pub(crate) fn judge(
    ctx: &XdpContext,
    generation: u32,
    ifindex: u32,
    parsed: &Parsed,
) -> Result<Option<u32>, ()> {
    let settings = maps::egress_settings(generation)?;
    let Some(slot) = forward_slot(settings, ifindex) else {
        return Ok(None);
    };
    let rest = if settings.forward_only & (1 << slot) != 0 {
        Some(xdp_action::XDP_PASS)
    } else {
        None
    };
    let Parsed::Tcp(segment) = parsed else {
        return Ok(rest);
    };
    if !segment.intact
        || segment.flags & (TCP_SYN | TCP_ACK) != TCP_SYN
        || !guarded(settings, segment.dport)
        || !forwarded(ctx, ifindex, segment)
    {
        return Ok(rest);
    }
    if maps::smart_host(generation, &segment.addrs.dest) {
        maps::count_forwarded(Verdict::Allow, Reason::SmartHost);
        return Ok(rest);
    }
    if settings.mode == MODE_ENFORCE {
        maps::count_forwarded(Verdict::Deny, Reason::NotAllowed);
        Ok(Some(xdp_action::XDP_DROP))
    } else {
        maps::count_forwarded(Verdict::WouldDeny, Reason::NotAllowed);
        Ok(rest)
    }
}

#[inline(always)]
fn forward_slot(settings: &EgressSettings, ifindex: u32) -> Option<usize> {
    let count = settings.forward_count as usize;
    (0..MAX_FORWARD).find(|&i| i < count && settings.forward_ifindexes[i] == ifindex)
}

/// Whether the kernel's routing table sends this segment on to another host (rather than
/// delivering it here, or nowhere).
#[inline(always)]
fn forwarded(ctx: &XdpContext, ifindex: u32, segment: &Segment) -> bool {
    // In a per-CPU map, not on the stack: 64 more bytes there would take the program past the
    // 512 bytes that Linux 6.1's verifier allows for a program and its calls together.
    let Some(params) = maps::fib_scratch() else {
        return false;
    };
    // SAFETY: a per-CPU map value of this CPU, written whole here before the helper reads it.
    let params = unsafe { &mut *params };
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
    *params = unsafe { core::mem::zeroed() };
    params.l4_protocol = IPPROTO_TCP;
    params.sport = segment.sport.to_be();
    params.dport = segment.dport.to_be();
    params.ifindex = ifindex;
    match (segment.addrs.source, segment.addrs.dest) {
        (Addr::V4(source), Addr::V4(dest)) => {
            params.family = AF_INET;
            params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(source);
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dest);
        }
        (Addr::V6(source), Addr::V6(dest)) => {
            params.family = AF_INET6;
            params.__bindgen_anon_3.ipv6_src = words(source);
            params.__bindgen_anon_4.ipv6_dst = words(dest);
        }
        _ => return false,
    }
    // SAFETY: `params` is a valid bpf_fib_lookup of the size given, in a map value.
    let ret = unsafe {
        fib_lookup(
            ctx.ctx.cast(),
            params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) || ret == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH)
}

#[inline(always)]
fn words(addr: [u8; 16]) -> [u32; 4] {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}
