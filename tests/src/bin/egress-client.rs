//! The egress tests' small client, for what swaks cannot do: connect from a given cgroup, network
//! namespace and uid, by TCP, TCP Fast Open, UDP or an IPv4-mapped IPv6 address, once or in a
//! loop (`--tail-after-ms MS`: one more attempt that long after the loop). It prints one line,
//! `pid=N ok=N refused=N failed=N elapsed_ms=N first_error=...` (elapsed: the loop's), and exits 0
//! when it could try at all.
//!
//! ```text
//! egress-client [--cgroup DIR] [--netns NAME] [--uid N] [--count N] [--tail-after-ms MS]
//!               tcp|tfo|udp|mapped ADDR PORT
//! ```

use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

fn main() {
    if let Err(err) = run() {
        eprintln!("egress-client: {err}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut cgroup, mut netns, mut uid, mut count, mut tail) = (None, None, None, 1u32, None);
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--cgroup" => cgroup = Some(value()?),
            "--netns" => netns = Some(value()?),
            "--uid" => uid = Some(number(&value()?)?),
            "--count" => count = number(&value()?)?,
            "--tail-after-ms" => tail = Some(Duration::from_millis(number(&value()?)?)),
            _ => rest.push(arg),
        }
    }
    let [kind, addr, port] = <[String; 3]>::try_from(rest)
        .map_err(|_| "usage: egress-client [options] tcp|tfo|udp|mapped ADDR PORT".to_owned())?;
    let addr: IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let port: u16 = port.parse().map_err(|e| format!("{port}: {e}"))?;
    // Join the cgroup first (as root), then the namespace, then drop to the uid.
    if let Some(cgroup) = cgroup {
        std::fs::write(
            format!("{cgroup}/cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("joining {cgroup}: {e}"))?;
    }
    if let Some(netns) = netns {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).map_err(|e| e.to_string())?;
        // SAFETY: a valid namespace fd; this process has one thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "setns {netns}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(uid) = uid {
        // SAFETY: plain syscalls.
        if unsafe { libc::setgid(uid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
            return Err(format!("setuid {uid}: {}", std::io::Error::last_os_error()));
        }
    }
    let (mut ok, mut refused, mut failed, mut first_error) = (0, 0, 0, None);
    let started = std::time::Instant::now();
    let mut elapsed = Duration::ZERO;
    for i in 0..count + u32::from(tail.is_some()) {
        if i == count
            && let Some(tail) = tail
        {
            elapsed = started.elapsed();
            std::thread::sleep(tail);
        }
        match attempt(&kind, addr, port) {
            Ok(()) => ok += 1,
            Err(err) => {
                if err.raw_os_error() == Some(libc::EPERM) {
                    refused += 1;
                } else {
                    failed += 1;
                }
                first_error.get_or_insert(err.to_string());
            }
        }
    }
    if tail.is_none() {
        elapsed = started.elapsed();
    }
    println!(
        "pid={} ok={ok} refused={refused} failed={failed} elapsed_ms={} first_error={}",
        std::process::id(),
        elapsed.as_millis(),
        first_error.unwrap_or_default()
    );
    Ok(())
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

fn attempt(kind: &str, addr: IpAddr, port: u16) -> std::io::Result<()> {
    let timeout = Duration::from_secs(2);
    match kind {
        "tcp" => TcpStream::connect_timeout(&SocketAddr::new(addr, port), timeout).map(drop),
        "mapped" => {
            let IpAddr::V4(v4) = addr else {
                return Err(std::io::Error::other("mapped needs an IPv4 address"));
            };
            let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port);
            TcpStream::connect_timeout(&mapped, timeout).map(drop)
        }
        "udp" => {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(std::io::Error::other)?;
            let socket = UdpSocket::bind(local)?;
            socket.connect(SocketAddr::new(addr, port))?;
            socket.send(b"x").map(drop)
        }
        "tfo" => fast_open(addr, port),
        other => Err(std::io::Error::other(format!("unknown kind {other}"))),
    }
}

/// TCP Fast Open: the connect happens inside `sendto(MSG_FASTOPEN)`, with data, not in connect().
fn fast_open(addr: IpAddr, port: u16) -> std::io::Result<()> {
    let IpAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("tfo: IPv4 only"));
    };
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.octets()),
        },
        sin_zero: [0; 8],
    };
    let data = b"EHLO tfo.example.org\r\n";
    // SAFETY: valid buffer and address of the sizes given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            std::ptr::from_ref(&sin).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
