//! The port25 XDP program: decides, per packet, whether TCP traffic to a protected port may pass.
//! The decision table is in DESIGN.md; header walking is in `parse`, policy state in `maps`.
#![no_std]
#![no_main]
// Atomic compare-and-swap: the BPF target has no `AtomicU64::compare_exchange` (no atomic-cas in
// its spec), though the kernel has BPF_CMPXCHG since 5.12. Builds use RUSTC_BOOTSTRAP already.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod parse;
mod ratelimit;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use port25_common::{Reason, Settings, Verdict, policy};

use crate::parse::{Parsed, Source, TCP_ACK, TCP_SYN};

#[xdp]
pub fn port25(ctx: XdpContext) -> u32 {
    match try_port25(&ctx) {
        Ok(action) => action,
        // Only a missing map slot gets here, which the daemon never leaves: fail safe and visible.
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

fn try_port25(ctx: &XdpContext) -> Result<u32, ()> {
    let parsed = parse::parse(ctx);
    if let Parsed::Other = parsed {
        return Ok(xdp_action::XDP_PASS);
    }
    // One read of the generation per packet: everything below sees one consistent policy.
    let generation = maps::active_generation()?;
    let settings = maps::settings(generation)?;
    let reason = match parsed {
        Parsed::Other => return Ok(xdp_action::XDP_PASS),
        Parsed::Malformed => Reason::Malformed,
        Parsed::Tcp {
            source,
            dport,
            flags,
            header_ok,
        } => {
            if !maps::port_protected(generation, dport)? {
                return Ok(xdp_action::XDP_PASS);
            }
            if header_ok {
                decide(generation, &settings, source, flags)
            } else {
                Reason::Malformed
            }
        }
    };
    let verdict = if !reason.drops() {
        Verdict::Pass
    } else if settings.monitor != 0 {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    maps::count(
        ifindex,
        verdict,
        reason,
        (ctx.data_end() - ctx.data()) as u64,
    );
    if reason.drops() {
        debug!(
            ctx,
            "{} port 25 packet on ifindex {}",
            reason.label(),
            ifindex
        );
    }
    Ok(match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
    })
}

/// Steps 2-4 of the decision table for a readable TCP segment to a protected port.
#[inline(always)]
fn decide(generation: u32, settings: &Settings, source: Source, flags: u8) -> Reason {
    if maps::listed(maps::List::Deny, generation, &source) {
        return Reason::Denylisted;
    }
    if maps::listed(maps::List::Allow, generation, &source) {
        return Reason::Allowlisted;
    }
    match settings.policy {
        policy::RATELIMIT => {
            // Only a new connection attempt spends a token; segments of connections already
            // admitted (and the rest of the handshake) pass.
            let new_connection = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            if !new_connection || ratelimit::admit(settings, &source) {
                Reason::Admitted
            } else {
                Reason::RateLimited
            }
        }
        _ => Reason::NotAllowlisted,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
