//! Crafted frames on the wire: threads inside a namespace, AF_PACKET sockets, link details.

use super::*;

impl Netns {
    /// Spawns a scoped thread that moves itself into this namespace (`setns`, which changes only
    /// the calling thread's network namespace) and then runs `f` there: sockets `f` opens belong
    /// to the namespace.
    pub fn spawn_inside<'scope, 'env, T, F>(
        &self,
        scope: &'scope thread::Scope<'scope, 'env>,
        f: F,
    ) -> thread::ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        use std::os::fd::AsRawFd as _;
        let path = Path::new("/run/netns").join(self.name());
        scope.spawn(move || {
            let file = File::open(&path)
                .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
            // SAFETY: setns on a valid namespace file descriptor; affects only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "cannot enter {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            drop(file);
            f()
        })
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.ip(&["link", "show", "dev", ifname]);
        let text = out
            .split_whitespace()
            .skip_while(|word| *word != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no link/ether address for {ifname} in:\n{out}"));
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            *byte = parts
                .next()
                .and_then(|part| u8::from_str_radix(part, 16).ok())
                .unwrap_or_else(|| panic!("bad MAC address {text} of {ifname}"));
        }
        mac
    }

    /// A counter of `/sys/class/net/IFNAME/statistics/` in this namespace (`tx_dropped`, ...).
    pub fn link_counter(&self, ifname: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
        run(self.command(tool("cat")).arg(&path))
            .unwrap_or_else(|err| panic!("in namespace {}: {err}", self.name()))
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("{path} in {}: {err}", self.name()))
    }
}

/// The index of interface `name` in the calling thread's network namespace (see
/// [`Netns::spawn_inside`]).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let text = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated name.
    match unsafe { libc::if_nametoindex(text.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// An AF_PACKET raw socket that puts whole Ethernet frames on one interface of the calling
/// thread's network namespace (see [`Netns::spawn_inside`]). It receives nothing (protocol 0).
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    pub fn bind(ifname: &str) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd as _, FromRawFd as _};
        let ifindex = ifindex(ifname)?;
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_ifindex = libc::c_int::try_from(ifindex).map_err(std::io::Error::other)?;
        // SAFETY: `addr` is a valid sockaddr_ll of the given size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one frame (destination MAC first) as it is.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the buffer is valid for its length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(std::io::Error::other(format!(
                "short send: {n} of {} bytes",
                frame.len()
            ))),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }

    /// Sends frames with one `sendmmsg` call: how many went out, in order. An error only when
    /// the first could not go (the kernel reports a later one's by stopping there).
    pub fn send_many(&self, frames: &[&[u8]]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value (no address, no
                // control data).
                let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
                message.msg_hdr.msg_iov = iovec;
                message.msg_hdr.msg_iovlen = 1;
                message
            })
            .collect();
        let count = libc::c_uint::try_from(messages.len()).map_err(std::io::Error::other)?;
        // SAFETY: every message points at one iovec, each valid for its frame's length; the
        // kernel only reads them (and writes msg_len), and all outlive the call.
        let sent = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), count, 0) };
        usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())
    }
}
