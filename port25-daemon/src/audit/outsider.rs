//! The relay probe's vantage point: a network namespace of its own, joined to this host by a veth
//! pair, whose only address is one the mail server has no reason to trust.
//!
//! `198.19.255.252/30` (RFC 2544's benchmarking range, never routed on the Internet): the host's
//! end of the veth is `.253`, the probe's `.254`. The probe's namespace has that link, loopback
//! and a default route to the host's end, and it connects only to the listeners' own addresses,
//! which the host delivers locally: nothing it sends is forwarded, and the replies go back over
//! the veth by its connected route. The namespace is made by `unshare` on a thread of its own and
//! has no name: when that thread ends (or the process is killed) the kernel removes it, and the
//! veth pair with it, so an interrupted audit leaves nothing behind.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
};

use ipnet::Ipv4Net;

use crate::users::is_root;

/// The link between the host and the probe's namespace.
pub(crate) const PROBE_LINK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 19, 255, 252), 30);
/// The host's end of the link: where the probe reaches a listener on a wildcard address.
pub(crate) const HOST_END: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 253);
/// The probe's source address.
pub(crate) const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

/// Runs `work` on a thread inside a fresh network namespace joined to this one as described
/// above, with the probe's source address; removes it all before returning. `in_use`: the
/// addresses this host already has, which must not overlap the link. `Err`: why the probe cannot
/// run here, in words for the report.
pub(crate) fn from_outside<T: Send>(
    in_use: &[IpAddr],
    work: impl FnOnce(IpAddr) -> T + Send,
) -> Result<T, String> {
    if !is_root() {
        return Err("not running as root: a network namespace cannot be made".to_owned());
    }
    if let Some(taken) = in_use.iter().find(|ip| match ip {
        IpAddr::V4(v4) => PROBE_LINK.contains(v4),
        IpAddr::V6(_) => false,
    }) {
        return Err(format!(
            "{taken} is already an address of this host, and the probe's link {PROBE_LINK} needs it"
        ));
    }
    let host_ns = std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|err| format!("cannot open this network namespace: {err}"))?;
    let host_end = format!("p25audit{}", std::process::id() % 10_000_000);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare with CLONE_NEWNET only changes this thread's network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "cannot make a network namespace: {}",
                        io::Error::last_os_error()
                    ));
                }
                let link = PROBE_LINK.prefix_len();
                let pid = std::process::id().to_string();
                ip(&[
                    "link", "add", "probe0", "type", "veth", "peer", "name", &host_end,
                ])?;
                let joined = (|| {
                    // The host's end, moved into this host's namespace and addressed there.
                    ip(&["link", "set", &host_end, "netns", &pid])?;
                    let host_addr = format!("{HOST_END}/{link}");
                    ip_in(&host_ns, &["addr", "add", &host_addr, "dev", &host_end])?;
                    ip_in(&host_ns, &["link", "set", &host_end, "up"])?;
                    let probe_addr = format!("{PROBE_SOURCE}/{link}");
                    ip(&["addr", "add", &probe_addr, "dev", "probe0"])?;
                    ip(&["link", "set", "probe0", "up"])?;
                    ip(&["link", "set", "lo", "up"])?;
                    ip(&["route", "add", "default", "via", &HOST_END.to_string()])
                })();
                let done = joined.map(|()| work(IpAddr::V4(PROBE_SOURCE)));
                // The kernel removes the namespace, and the pair, some time after the thread
                // ends; deleting an end now removes both before the audit returns.
                let _ = ip(&["link", "del", "probe0"]);
                done
            })
            .join()
            .map_err(|_| "the probe's thread failed".to_owned())?
    })
}

/// `ip ARGS` in the calling thread's network namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args), args)
}

/// `ip ARGS` in the network namespace `ns`.
fn ip_in(ns: &OwnedFd, args: &[&str]) -> Result<(), String> {
    let fd = ns.as_raw_fd();
    let mut command = Command::new("ip");
    command.args(args);
    // SAFETY: between fork and exec the child only makes the setns system call, which is
    // async-signal-safe, on a descriptor the parent keeps open.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    run(&mut command, args)
}

fn run(command: &mut Command, args: &[&str]) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `ip` (iproute2): {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
