//! The egress guard's cgroup connect hooks: a TCP connect to a guarded port is refused unless its
//! destination is a smart host or the process is allowed (its uid, or a cgroup it is in or below).
//! docs/ARCHITECTURE.md, § Egress.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_ns,
        },
    },
    programs::SockAddrContext,
};
use port25_common::egress::{
    EVENT_INTERVAL_NS, EgressSettings, Event, EventKey, EventState, MAX_CGROUPS, MAX_PORTS,
    MAX_USERS, MODE_ENFORCE, MODE_OFF, Reason, Verdict,
};

use crate::{
    maps::{self, EGRESS_EVENT_LIMIT, EGRESS_EVENTS},
    parse::Addr,
};

/// Return values of a cgroup sock_addr program.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;

/// A connect's destination.
pub(crate) struct Destination {
    pub addr: Addr,
    pub port: u16,
}

/// Reads the destination of an IPv4 connect, or `None` when it is not TCP.
#[inline(always)]
pub(crate) fn destination4(ctx: &SockAddrContext) -> Option<Destination> {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands a valid bpf_sock_addr; each field is read whole, at a constant
    // offset, as the verifier requires of this context.
    let (kind, ip, port) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*sa).type_),
            core::ptr::read_volatile(&raw const (*sa).user_ip4),
            core::ptr::read_volatile(&raw const (*sa).user_port),
        )
    };
    (kind == SOCK_STREAM).then(|| Destination {
        addr: Addr::V4(ip.to_ne_bytes()),
        port: u16::from_be(port as u16),
    })
}

/// Reads the destination of an IPv6 connect (IPv4-mapped addresses as IPv4), or `None` when it is
/// not TCP.
#[inline(always)]
pub(crate) fn destination6(ctx: &SockAddrContext) -> Option<Destination> {
    let sa = ctx.sock_addr;
    // SAFETY: as in `destination4`; `user_ip6` is read one word at a time.
    let (kind, words, port) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*sa).type_),
            [
                core::ptr::read_volatile(&raw const (*sa).user_ip6[0]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[1]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[2]),
                core::ptr::read_volatile(&raw const (*sa).user_ip6[3]),
            ],
            core::ptr::read_volatile(&raw const (*sa).user_port),
        )
    };
    if kind != SOCK_STREAM {
        return None;
    }
    let port = u16::from_be(port as u16);
    if words[0] == 0 && words[1] == 0 && words[2] == u32::to_be(0x0000_ffff) {
        return Some(Destination {
            addr: Addr::V4(words[3].to_ne_bytes()),
            port,
        });
    }
    let mut addr = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(Destination {
        addr: Addr::V6(addr),
        port,
    })
}

/// The hook's answer for a TCP connect to `dest`.
#[inline(always)]
pub(crate) fn judge(dest: Option<Destination>) -> i32 {
    let Some(dest) = dest else {
        return ALLOW;
    };
    let Ok(generation) = maps::active_generation() else {
        return ALLOW;
    };
    let Ok(settings) = maps::egress_settings(generation) else {
        return ALLOW;
    };
    if settings.mode == MODE_OFF || !guarded(settings, dest.port) {
        return ALLOW;
    }
    let reason = if maps::smart_host(generation, &dest.addr) {
        Reason::SmartHost
    } else if allowed_user(settings) {
        Reason::AllowedUser
    } else if allowed_cgroup(settings) {
        Reason::AllowedCgroup
    } else {
        Reason::NotAllowed
    };
    let verdict = match (reason, settings.mode) {
        (Reason::NotAllowed, MODE_ENFORCE) => Verdict::Deny,
        (Reason::NotAllowed, _) => Verdict::WouldDeny,
        _ => Verdict::Allow,
    };
    maps::count_connect(verdict, reason);
    if verdict == Verdict::Allow {
        return ALLOW;
    }
    report(&dest, verdict);
    if verdict == Verdict::Deny {
        REFUSE
    } else {
        ALLOW
    }
}

/// Whether `port` is one of the guarded ones.
#[inline(always)]
pub(crate) fn guarded(settings: &EgressSettings, port: u16) -> bool {
    let count = settings.port_count as usize;
    (0..MAX_PORTS).any(|i| i < count && settings.ports[i] == port)
}

#[inline(always)]
fn allowed_user(settings: &EgressSettings) -> bool {
    let uid = bpf_get_current_uid_gid() as u32;
    let count = settings.user_count as usize;
    (0..MAX_USERS).any(|i| i < count && settings.users[i] == uid)
}

/// Whether the process's cgroup is one of the allowed ones or below one.
#[inline(always)]
fn allowed_cgroup(settings: &EgressSettings) -> bool {
    let count = settings.cgroup_count as usize;
    for i in 0..MAX_CGROUPS {
        if i >= count {
            break;
        }
        // SAFETY: a helper without pointer arguments; 0 when the process is not that deep.
        let ancestor =
            unsafe { bpf_get_current_ancestor_cgroup_id(settings.cgroup_levels[i] as i32) };
        if ancestor != 0 && ancestor == settings.cgroup_ids[i] {
            return true;
        }
    }
    false
}

/// Sends the event for a refused connect, at most one per (process, destination) a second: the
/// rest are counted into the next one.
#[inline(always)]
fn report(dest: &Destination, verdict: Verdict) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut key = EventKey {
        tgid: (pid_tgid >> 32) as u32,
        port: u32::from(dest.port),
        addr: [0; 16],
    };
    let family = match dest.addr {
        Addr::V4(a) => {
            key.addr[..4].copy_from_slice(&a);
            4
        }
        Addr::V6(a) => {
            key.addr = a;
            6
        }
    };
    let suppressed = match EGRESS_EVENT_LIMIT.get_ptr_mut(&key) {
        // SAFETY: a map value pointer, valid while the program runs; races between CPUs only blur
        // the suppressed count.
        Some(state) => unsafe {
            if now.wrapping_sub((*state).last_ns) < EVENT_INTERVAL_NS {
                (*state).suppressed += 1;
                return;
            }
            let suppressed = (*state).suppressed;
            (*state).last_ns = now;
            (*state).suppressed = 0;
            suppressed
        },
        None => {
            let state = EventState {
                last_ns: now,
                suppressed: 0,
                _pad: 0,
            };
            let _ = EGRESS_EVENT_LIMIT.insert(&key, &state, 0);
            0
        }
    };
    let Some(mut entry) = EGRESS_EVENTS.reserve::<Event>(0) else {
        maps::count_lost_event();
        return;
    };
    entry.write(Event {
        time_ns: now,
        pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        addr: key.addr,
        family,
        port: key.port,
        verdict: verdict as u32,
        suppressed,
    });
    entry.submit(0);
}
