//! A do-nothing XDP program for the client end of a veth: frames a gateway sends back with XDP_TX
//! (policy synproxy's SYN-ACKs) reach a veth peer only while the peer's NAPI runs, which an XDP
//! program of its own starts (GRO alone leaves them queued: measured on Linux 6.18). The kernel's
//! own xdp_synproxy selftest does the same.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::*;

/// `bpf_cmd` numbers and the XDP program and attach types, from linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `r0 = XDP_PASS; exit`, as two `struct bpf_insn`.
const PASS: [u64; 2] = [0x0000_0002_0000_00b7, 0x0000_0000_0000_0095];

/// The program attached through a BPF link: detached when this is dropped (or the namespace goes).
pub struct XdpPass {
    _link: OwnedFd,
}

impl XdpPass {
    /// Loads the program and links it to `ifname` in `ns`, in native mode. Both from a thread
    /// inside `ns`: the kernel reads the link's ifindex in the caller's namespace.
    pub fn attach(ns: &Netns, ifname: &str) -> Self {
        let link = thread::scope(|scope| {
            ns.spawn_inside(scope, || {
                let program = bpf(BPF_PROG_LOAD, &prog_load_attr())
                    .unwrap_or_else(|err| panic!("cannot load an XDP_PASS program: {err}"));
                let ifindex = ifindex(ifname)
                    .unwrap_or_else(|err| panic!("no {ifname} in {}: {err}", ns.name()));
                let attr = [program.as_raw_fd() as u32, ifindex, BPF_XDP, 0];
                bpf(BPF_LINK_CREATE, &attr).unwrap_or_else(|err| {
                    panic!("cannot attach XDP_PASS to {ifname} in {}: {err}", ns.name())
                })
            })
            .join()
            .expect("attaching XDP_PASS")
        });
        Self { _link: link }
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, as u32 words: type, insn_cnt, insns, license.
fn prog_load_attr() -> [u32; 8] {
    static LICENSE: &[u8] = b"GPL\0";
    let insns = PASS.as_ptr() as u64;
    let license = LICENSE.as_ptr() as u64;
    [
        BPF_PROG_TYPE_XDP,
        PASS.len() as u32,
        insns as u32,
        (insns >> 32) as u32,
        license as u32,
        (license >> 32) as u32,
        0,
        0,
    ]
}

/// The bpf() syscall on `attr`; its result is a new file descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a plain, initialised bpf_attr prefix of its own size, which the kernel
    // reads (and zero-extends) only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
