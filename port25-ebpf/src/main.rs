//! The port25 programs: the XDP ingress filter decides, per packet, whether TCP traffic to a
//! protected port may pass; the cgroup connect hooks guard outbound SMTP (`egress`), and on a
//! router's LAN side the XDP program guards forwarded SMTP too (`forward`).
//! The decision table is docs/ARCHITECTURE.md, § Decision; header walking is in `parse`, policy
//! state in `maps`.
#![no_std]
#![no_main]
// Atomic compare-and-swap: the BPF target has no `AtomicU64::compare_exchange` (no atomic-cas in
// its spec), though the kernel has BPF_CMPXCHG since 5.12. Builds use RUSTC_BOOTSTRAP already.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod egress;
mod forward;
mod handshake;
mod maps;
mod parse;
mod ratelimit;
mod shadow;
mod synproxy;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use port25_common::{Reason, Settings, Verdict, listed};

use crate::{
    parse::{Addr, Parsed, Segment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    ratelimit::{Buckets, Seen},
    synproxy::Answer,
};

#[xdp]
fn port25(ctx: XdpContext) -> u32 {
    filter!(ctx, Entry::Exclusive)
}

/// The same filter as a component of libxdp's dispatcher: an extension program
/// (BPF_PROG_TYPE_EXT) that replaces one of the dispatcher's `progN` slots, so that port25 runs
/// beside other XDP programs on one interface. docs/ARCHITECTURE.md, § Beside other XDP programs.
#[unsafe(no_mangle)]
#[unsafe(link_section = "freplace/prog0")]
pub fn port25_component(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    filter!(ctx, Entry::Component)
}

/// Which of the two entry points runs the filter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Attached to the interface alone.
    Exclusive,
    /// In a slot of libxdp's dispatcher.
    Component,
}

/// Both entry points' whole body, inlined into each (a program cannot call into another section).
/// A macro, so that each gets aya-log's closure of its own: one closure shared by two programs
/// would stay a subprogram, and Linux 6.1 refuses the call chain that adds to the 472-byte frame
/// (docs/ARCHITECTURE.md, § Kernels).
macro_rules! filter {
    ($ctx:expr, $entry:expr) => {
        match try_port25(&$ctx, $entry) {
            Ok((action, dropped)) => {
                if let Some((reason, ifindex)) = dropped {
                    debug!(
                        &$ctx,
                        "{} packet to a protected port on ifindex {}",
                        reason.label(),
                        ifindex
                    );
                }
                action
            }
            // Only a missing map slot gets here, which the daemon never leaves: fail safe and
            // visible.
            Err(()) => xdp_action::XDP_ABORTED,
        }
    };
}
use filter;

// Inlined into each entry point: as a subprogram of its own its 472-byte frame plus the entry's
// exceeds the 512 bytes Linux 6.1 allows for a call chain (docs/ARCHITECTURE.md, § Kernels).
#[inline(always)]
/// The XDP action, and the reason and interface of a packet dropped (for the debug log).
fn try_port25(ctx: &XdpContext, entry: Entry) -> Result<(u32, Option<(Reason, u32)>), ()> {
    let parsed = parse::parse(ctx.data(), ctx.data_end());
    if let Parsed::Other = parsed {
        return Ok((xdp_action::XDP_PASS, None));
    }
    // One read of the generation per packet: everything below sees one consistent policy.
    let generation = maps::active_generation()?;
    let settings = maps::settings(generation)?;
    if settings.forward_guard != 0
        && let Some(action) =
            forward::judge(ctx, generation, ctx.ingress_ifindex() as u32, &parsed)?
    {
        return Ok((action, None));
    }
    let reason = match parsed {
        Parsed::Other => return Ok((xdp_action::XDP_PASS, None)),
        Parsed::Malformed => Reason::Malformed,
        Parsed::Tcp(segment) => {
            // A new connection attempt is judged by a shadow policy too, when one is loaded
            // (docs/ARCHITECTURE.md, § Shadow policy): counted, never enforced.
            let shadow = if segment.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                shadow::generation()
            } else {
                0
            };
            let mut seen = Seen::default();
            if !maps::port_protected(generation, segment.dport)? {
                if shadow != 0 {
                    shadow::compare(shadow, settings, None, &segment, &mut seen);
                }
                return Ok((xdp_action::XDP_PASS, None));
            }
            let decision = if segment.intact {
                decide(generation, settings, &segment, &mut seen)
            } else {
                Decision::Judged(Reason::Malformed)
            };
            if shadow != 0 {
                shadow::compare(
                    shadow,
                    settings,
                    Some(decision.reason()),
                    &segment,
                    &mut seen,
                );
            }
            match decision {
                Decision::Judged(reason) => reason,
                Decision::HandOver => {
                    // The config refuses policy synproxy with libxdp's dispatcher, so its
                    // component carries no tail call; were it reached, netfilter's SYNPROXY
                    // would answer alone. In monitor mode the synproxy program judges as in
                    // enforce mode and only counts.
                    if entry == Entry::Exclusive {
                        synproxy::hand_over(ctx, &segment);
                    }
                    // Not handed over: netfilter's SYNPROXY answers the SYN or checks the
                    // cookie (the stack itself in monitor mode).
                    Reason::Admitted
                }
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
    let action = match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop | Verdict::Answered => xdp_action::XDP_PASS,
    };
    Ok((action, reason.drops().then_some((reason, ifindex))))
}

/// What the filter does with a readable segment to a protected port.
#[derive(Clone, Copy)]
enum Decision {
    Judged(Reason),
    /// Policy synproxy: the synproxy program answers the SYN with a cookie, or checks the ACK's.
    HandOver,
}

impl Decision {
    /// The reason a shadow policy's verdict is compared with (only SYNs are): a SYN handed over
    /// is answered with a cookie while the SYN-ACK budget lasts.
    #[inline(always)]
    fn reason(self) -> Reason {
        match self {
            Decision::Judged(reason) => reason,
            Decision::HandOver => Reason::SynCookie,
        }
    }
}

/// Steps 2-4 of the decision table for a readable TCP segment to a protected port.
#[inline(always)]
fn decide(generation: u32, settings: &Settings, segment: &Segment, seen: &mut Seen) -> Decision {
    let source = &segment.addrs.source;
    if let Some(reason) = listed_reason(generation, source) {
        return Decision::Judged(reason);
    }
    let flags = segment.flags;
    let syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    match effective_policy(settings, source) {
        Settings::POLICY_RATELIMIT => {
            // Only a new connection attempt spends a token; segments of connections already
            // admitted (and the rest of the handshake) pass.
            if syn {
                return Decision::Judged(syn_reason(&ratelimit::LIVE, settings, source, seen));
            }
            // A plain ACK may complete a handshake the gateway answered: proof of a real source.
            if flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) == TCP_ACK
                && settings.verified_ttl_ns != 0
                && handshake::completes_handshake(segment)
            {
                ratelimit::handshake_completed(settings, source);
            }
            Decision::Judged(Reason::Admitted)
        }
        Settings::POLICY_SYNPROXY => match syn {
            true => match syn_reason(&ratelimit::LIVE, settings, source, seen) {
                Reason::SynCookie => Decision::HandOver,
                refused => Decision::Judged(refused),
            },
            false => Decision::HandOver,
        },
        // Settings::POLICY_DROP, and any other value: an unknown policy fails closed.
        _ => Decision::Judged(Reason::NotAllowlisted),
    }
}

/// Steps 2 and 3: the deny list, then the allow list; `None` when neither covers the source.
#[inline(always)]
fn listed_reason(generation: u32, source: &Addr) -> Option<Reason> {
    let lists = maps::lists_of(generation, source);
    if lists & listed::DENY != 0 {
        Some(Reason::Denylisted)
    } else if lists & listed::ALLOW != 0 {
        Some(Reason::Allowlisted)
    } else {
        None
    }
}

/// The policy that judges `source`: IPv6 is answered with cookies only where the operator turned
/// it on (synproxy.ipv6), else rate-limited.
#[inline(always)]
fn effective_policy(settings: &Settings, source: &Addr) -> u32 {
    match (settings.policy, source) {
        (Settings::POLICY_SYNPROXY, Addr::V6(_)) if settings.synproxy_ipv6 == 0 => {
            Settings::POLICY_RATELIMIT
        }
        (policy, _) => policy,
    }
}

/// Step 4 for a new connection attempt from a source no list covers, spending from `tables`'
/// buckets: `admitted` or `rate_limited` (ratelimit), `syn_cookie` (to be answered) or
/// `rate_limited` (synproxy), `not_allowlisted` (drop, and any unknown policy).
#[inline(always)]
fn syn_reason(
    tables: &ratelimit::Tables,
    settings: &Settings,
    source: &Addr,
    seen: &mut Seen,
) -> Reason {
    match effective_policy(settings, source) {
        Settings::POLICY_RATELIMIT => {
            if ratelimit::admit(tables, settings, source, Buckets::PrefixAndGlobal, seen) {
                Reason::Admitted
            } else {
                Reason::RateLimited
            }
        }
        Settings::POLICY_SYNPROXY => {
            if ratelimit::admit(tables, settings, source, Buckets::PrefixOnly, seen) {
                Reason::SynCookie
            } else {
                Reason::RateLimited
            }
        }
        _ => Reason::NotAllowlisted,
    }
}

/// Policy synproxy: answers the SYN the filter hands over by a tail call (`synproxy::hand_over`)
/// with a SYN cookie, checks the cookie of the ACK that follows, and counts what it did. In
/// monitor mode it answers nothing and passes everything, counting what enforce mode would do.
#[xdp]
fn port25_synproxy(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let Ok(settings) = maps::active_generation().and_then(maps::settings) else {
        return xdp_action::XDP_ABORTED;
    };
    let (action, verdict, reason) = match synproxy::answer(&ctx, settings) {
        Answer::Sent => (xdp_action::XDP_TX, Verdict::Answered, Reason::SynCookie),
        Answer::Dropped(reason) if settings.monitor != 0 => {
            (xdp_action::XDP_PASS, Verdict::WouldDrop, reason)
        }
        Answer::Dropped(reason) => (xdp_action::XDP_DROP, Verdict::Drop, reason),
        Answer::Passed(reason) => (xdp_action::XDP_PASS, Verdict::Pass, reason),
    };
    maps::count(ctx.ingress_ifindex() as u32, verdict, reason, bytes);
    action
}

/// The SYN-ACK watcher (TC, on egress): notes the gateway's SYN-ACKs from protected ports, for
/// the handshake proof.
#[classifier]
fn port25_synack(ctx: TcContext) -> i32 {
    let _ = try_watch_synack(&ctx);
    // Egress is only watched, never filtered.
    TC_ACT_OK
}

fn try_watch_synack(ctx: &TcContext) -> Result<(), ()> {
    let Parsed::Tcp(segment) = parse::parse(ctx.data(), ctx.data_end()) else {
        return Ok(());
    };
    if !segment.intact || segment.flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK {
        return Ok(());
    }
    let generation = maps::active_generation()?;
    let settings = maps::settings(generation)?;
    if matches!(
        settings.policy,
        Settings::POLICY_RATELIMIT | Settings::POLICY_SYNPROXY
    ) && settings.verified_ttl_ns != 0
        && maps::port_protected(generation, segment.sport)?
    {
        handshake::record_syn_ack(&segment);
    }
    Ok(())
}

/// The egress guard on IPv4 connects (docs/ARCHITECTURE.md, § Egress).
#[cgroup_sock_addr(connect4)]
fn port25_connect4(ctx: SockAddrContext) -> i32 {
    egress::judge(egress::destination4(&ctx))
}

/// The egress guard on IPv6 connects, IPv4-mapped destinations judged as IPv4.
#[cgroup_sock_addr(connect6)]
fn port25_connect6(ctx: SockAddrContext) -> i32 {
    egress::judge(egress::destination6(&ctx))
}

port25_common::ebpf_epilogue!();
